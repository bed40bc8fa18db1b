"""TFLite export: float, fp16, dynamic-range and full-integer models against
the Keras model on the built-in dataset's validation images (LiteRT)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_vgg
from export import calibration
from export import litert
from export import tflite
from keras_vgg import layers as vgg_layers
from pipelines import sources
from pipelines import synthetic
from tests import tiny_run

Q, CROP = 36, 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("builtin"))
    synthetic.write_builtin(directory, num_train=80, num_val=60)
    return directory


@pytest.fixture(scope="module")
def source(data_dir):
    return tiny_run.trained_export_source(data_dir, q=Q, crop=CROP,
                                          name="tiny_tflite")


@pytest.fixture(scope="module")
def validation(data_dir):
    return calibration.calibration_images("builtin", "validation",
                                          data_dir, Q, CROP, 60)


def _export(source, data_dir, tmp_path, quantize, **kwargs):
    output = str(tmp_path / f"{quantize}.tflite")
    report = tflite.export_tflite(source, output, quantize,
                                  calibration_data="builtin",
                                  calibration_steps=80, data_dir=data_dir,
                                  verify_images=60, **kwargs)
    return output, report


@pytest.mark.parametrize("mode", ["caffe", "torch"])
def test_preprocessing_conv_is_exact(mode):
    x = np.random.RandomState(0).uniform(0, 255, (2, 5, 7, 3)).astype(
        np.float32)
    got = np.asarray(vgg_layers.preprocessing_conv(mode)(x))
    np.testing.assert_allclose(
        got, keras_vgg.preprocessing.apply(x, mode), atol=1e-5)


def test_float_matches_keras(source, data_dir, validation, tmp_path):
    output, report = _export(source, data_dir, tmp_path, "none")
    lite = litert.LiteModel(model_path=output)
    got = lite.predict(validation)
    expected = np.asarray(source.model(
        keras_vgg.preprocessing.apply(validation, "caffe")))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # Non-trivial predictions: several classes predicted, not uniform.
    assert len(set(expected.argmax(1))) >= 3
    assert expected.max() > 0.4
    assert report["top1_agreement"] == 1.0
    assert report["max_abs_prob_diff"] < 1e-4
    saved = json.load(open(litert.verification_path(output)))
    for key in ("size_bytes", "images", "top1_agreement",
                "max_abs_prob_diff", "latency_ms", "quantize"):
        assert key in saved
    assert saved["size_bytes"] == os.path.getsize(output)
    assert saved["images"] == 60 and saved["quantize"] == "none"
    # The classes of the images verified on: here the whole split.
    labels = [int(e["label"]) for e in sources.load_source(
        "builtin", "validation", data_dir=data_dir).dataset]
    assert saved["class_counts"] == {
        name: labels.count(i) for i, name in enumerate(
            synthetic.CLASS_NAMES)}
    assert litert.verification_path(output).endswith(
        "none.verification.json")


def test_fp16_close(source, data_dir, tmp_path):
    output, report = _export(source, data_dir, tmp_path, "fp16")
    assert report["max_abs_prob_diff"] < 5e-3
    assert report["top1_agreement"] >= 0.98


def test_dynamic_range(source, data_dir, tmp_path):
    _, float_report = _export(source, data_dir, tmp_path / "f", "none")
    _, report = _export(source, data_dir, tmp_path, "dynamic")
    assert report["top1_agreement"] >= 0.95
    assert report["size_bytes"] < 0.4 * float_report["size_bytes"]


def test_int8_full_integer_uint8_input(source, data_dir, tmp_path):
    output, report = _export(source, data_dir, tmp_path, "int8",
                             int8_io=True)
    assert report["top1_agreement"] >= 0.95
    lite = litert.LiteModel(model_path=output)
    assert lite.input["dtype"] == np.uint8
    assert lite.input["shape"].tolist() == [1, CROP, CROP, 3]


def test_dynamic_size(source, data_dir, validation, tmp_path):
    output, report = _export(source, data_dir, tmp_path, "none",
                             dynamic_size=True)
    assert report["input_size"] == Q and report["max_abs_prob_diff"] < 1e-4
    lite = litert.LiteModel(model_path=output)
    assert lite.input["shape_signature"].tolist() == [-1, -1, -1, 3]
    # At the crop size the dense model is the classifier itself.
    got = lite.predict(validation[:4])
    expected = np.asarray(source.model(
        keras_vgg.preprocessing.apply(validation[:4], "caffe")))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    _, int8 = _export(source, data_dir, tmp_path / "q", "int8",
                      dynamic_size=True)
    # What int8 must keep is the probabilities, within a few hundredths
    # (0.023-0.052 measured on an AVX2 machine).  The top-1 flips it causes
    # are near-ties of this tiny model: there 3 or 4 of the 60 images,
    # whose float top-1 margins are 0.004-0.021 (the median image's is
    # 0.14), so agreement is 0.93-0.95.
    assert int8["max_abs_prob_diff"] < 0.1
    assert int8["top1_agreement"] >= 0.9


def test_refuses_to_overwrite(source, data_dir, tmp_path):
    output = tmp_path / "x.tflite"
    output.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        tflite.export_tflite(source, str(output), "none")
    assert output.read_bytes() == b"keep"
    with pytest.raises(ValueError, match="--int8_io"):
        litert.convert(tflite.pixel_model(source), "dynamic", int8_io=True)


@pytest.mark.slow
def test_cli_dynamic_size_end_to_end(data_dir, tmp_path):
    """`--dynamic_size` through the command line: LiteRT verification runs
    at Q x Q (its default [1, 1, 1, 3] input failed XNNPack), and the file
    and its JSON are written."""
    run_dir, _ = tiny_run.write_run(str(tmp_path / "run"))
    output = str(tmp_path / "dyn.tflite")
    result = subprocess.run(
        [sys.executable, "-m", "export.tflite", f"--model={run_dir}",
         "--dynamic_size", f"--output={output}", "--calibration_data=builtin",
         f"--data_dir={data_dir}", "--verify_images=4"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(litert.verification_path(output)) as f:
        report = json.load(f)
    assert report["dynamic_size"] and report["input_size"] == 40
    assert report["max_abs_prob_diff"] < 1e-4
    lite = litert.LiteModel(model_path=output)
    assert lite.input["shape_signature"].tolist() == [-1, -1, -1, 3]
    assert lite.predict(tiny_run.pixels(45, 50)[None]).shape == (1, 4)


@pytest.mark.slow
def test_failed_verification_leaves_nothing(source, data_dir, tmp_path,
                                            monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("failed to prepare")

    monkeypatch.setattr(litert, "verify", fail)
    with pytest.raises(RuntimeError, match="failed to prepare"):
        _export(source, data_dir, tmp_path, "none")
    assert os.listdir(tmp_path) == []
    # An old file is kept when its replacement fails.
    output = tmp_path / "none.tflite"
    output.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        _export(source, data_dir, tmp_path, "none", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["none.tflite"]
    assert output.read_bytes() == b"old"


@pytest.mark.slow
def test_help_lists_every_flag():
    result = subprocess.run([sys.executable, "-m", "export.tflite", "--help"],
                            capture_output=True, text=True, timeout=120)
    for flag in ("--model", "--[no]overwrite", "--architecture", "--weights",
                 "--classifier", "--q:", "--quantize", "--output"):
        assert flag in result.stdout, flag
    assert "<none|fp16|dynamic|int8|qat>" in result.stdout
    assert "<A|A-LRN|B|C|D|E>" in result.stdout


def test_verification_images_come_from_every_class(tmp_path):
    for c, name in enumerate(("a", "b", "c")):
        os.makedirs(tmp_path / name)
        for i in range(4):
            _save_png(tmp_path / name / f"{i}.png", 40 * c + i)
    images, labels = calibration.labelled_images(
        f"folder:{tmp_path}", "train", scale=32, crop=32, count=3)
    assert sorted(labels.tolist()) == [0, 1, 2] and len(images) == 3
    images, counts = calibration.sampled_images(
        f"folder:{tmp_path}", "train", scale=32, crop=32, count=4)
    assert len(images) == 4 and sorted(counts) == ["a", "b", "c"]
    assert sorted(counts.values()) == [1, 1, 2]


def _save_png(path, seed):
    from PIL import Image
    pixels = np.random.RandomState(seed).randint(0, 255, (36, 36, 3))
    Image.fromarray(pixels.astype("uint8")).save(path)


@pytest.mark.slow
def test_dynamic_size_refuses_an_image_smaller_than_the_crop(tmp_path):
    """Keras's MinimumImageSize check survives the conversion: recorded in
    the file's metadata, applied by the LiteRT runner (a smaller image
    gave NaN)."""
    from export import common

    run_dir, _ = tiny_run.write_run(str(tmp_path / "run"))
    source = common.load_export_model(run_dir)
    output = str(tmp_path / "dyn.tflite")
    tflite.export_tflite(source, output, dynamic_size=True,
                         calibration_data=None)
    meta = litert.read_metadata(model_path=output)
    assert meta["minimum_image_size"]["minimum"] == [CROP, CROP]
    with open(output, "rb") as f:
        content = f.read()
    for lite in (litert.LiteModel(model_path=output),
                 litert.LiteModel(model_content=content)):
        with pytest.raises(ValueError, match=r"Image size 28x40 .* smaller "
                           r"than the smallest input .*, 32x32"):
            lite.predict(tiny_run.pixels(28, 40)[None])
        assert np.isfinite(lite.predict(tiny_run.pixels(32, 40)[None])).all()
    # A fixed-size model takes its crop only.
    fixed = str(tmp_path / "fixed.tflite")
    tflite.export_tflite(source, fixed, calibration_data=None)
    assert litert.read_metadata(model_path=fixed) == {}
    with pytest.raises(ValueError, match=r"Image size 36x36 .* not the input "
                       r"size of this model, 32x32"):
        litert.LiteModel(model_path=fixed).predict(
            tiny_run.pixels(36, 36)[None])
