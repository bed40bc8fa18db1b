"""Exporting a localiser with its classifier: the graph's box arithmetic
and greedy merge against their numpy twins, the SavedModel against
`pipelines.localize.dense_boxes`, the TFLite crop model against Keras."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from export import common
from export import dense
from export import litert
from export import localizer
from export import saved_model
from export import tflite
from export import tflite_localizer
from keras_vgg import boxes as box_lib
from pipelines import localize
from tests import tiny_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("export_loc")
    classifier, _ = tiny_run.write_run(str(base / "cls"))
    pcr, _ = tiny_run.write_localizer_run(str(base / "pcr"), "pcr")
    scr, _ = tiny_run.write_localizer_run(str(base / "scr"), "scr", seed=2)
    return {"cls": classifier, "pcr": pcr, "scr": scr, "base": base}


def test_window_corners_match_numpy():
    box_map = np.random.RandomState(0).uniform(0.1, 0.9, (3, 4, 4))
    expected = box_lib.window_corners(box_map[None], (160, 192), 64, 32)[0]
    got = box_lib.window_corners(tf.constant(box_map[None, :, :, None],
                                             tf.float32), (160, 192), 64, 32)
    np.testing.assert_allclose(got.numpy()[0, :, :, 0], expected, atol=1e-6)


def test_best_merged_box_hand_made():
    # Two groups: three boxes around (0, 0, 1, 1) and one far box whose
    # single score is higher than any one box of the first group but lower
    # than their sum.
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.9], [0.05, 0, 1, 1],
                      [2, 2, 3, 3]], np.float32)
    scores = np.array([0.3, 0.2, 0.1, 0.4], np.float32)
    box, score = localizer.best_merged_box(tf.constant(boxes),
                                           tf.constant(scores))
    expected = (boxes[:3] * scores[:3, None]).sum(0) / 0.6
    np.testing.assert_allclose(box.numpy(), expected, atol=1e-6)
    assert abs(float(score) - 0.6) < 1e-6
    ref_boxes, ref_scores = box_lib.greedy_merge(boxes, scores)
    np.testing.assert_allclose(box.numpy(), ref_boxes[0], atol=1e-6)


def test_best_merged_box_matches_greedy_merge_on_random_sets():
    rng = np.random.RandomState(1)
    for _ in range(20):
        m = rng.randint(1, 30)
        corner = rng.uniform(0, 0.6, (m, 2))
        size = rng.uniform(0.2, 0.4, (m, 2))
        boxes = np.concatenate([corner, corner + size], 1).astype("float32")
        scores = rng.uniform(0, 1, m).astype("float32")
        scores[rng.rand(m) < 0.2] = 0.0
        box, score = localizer.best_merged_box(tf.constant(boxes),
                                               tf.constant(scores))
        ref_boxes, ref_scores = box_lib.greedy_merge(boxes, scores)
        np.testing.assert_allclose(box.numpy(), ref_boxes[0], atol=1e-5)
        np.testing.assert_allclose(float(score), ref_scores[0], atol=1e-5)


def test_class_boxes_scr_and_pcr():
    corners = tf.reshape(tf.range(2 * 3 * 4 * 4, dtype=tf.float32),
                         [2, 3, 4, 4])  # N=2, M=3, U=4 classes
    indices = tf.constant([[2, 0], [1, 3]])
    pcr = localizer.class_boxes(corners, indices, "pcr").numpy()
    assert pcr.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(pcr[1, 0], corners.numpy()[1, :, 1])
    np.testing.assert_array_equal(pcr[0, 0], corners.numpy()[0, :, 2])
    scr = localizer.class_boxes(corners[:, :, :1], indices, "scr").numpy()
    np.testing.assert_array_equal(scr[0, 1], corners.numpy()[0, :, 0])


@pytest.fixture(scope="module")
def exported(runs):
    source = common.load_localizer_source(runs["pcr"], runs["cls"], q=72)
    path = saved_model.export_saved_model(source, str(runs["base"] / "sm"),
                                          flip=True, top_k=3)
    return source, tf.saved_model.load(path)


@pytest.mark.slow
def test_saved_model_boxes_are_the_dense_protocol(runs, exported):
    source, served = exported
    image = tiny_run.pixels(80, 100, seed=3)
    out = served.signatures["predict_images"](images=tf.constant(image[None]))
    top = out["top_k_indices"].numpy()[0]
    assert out["boxes"].shape == (1, 3, 4)
    assert [s.decode() for s in out["top_k_labels"].numpy()[0]] == [
        tiny_run.CLASS_NAMES[i] for i in top]
    loc = keras_vgg.runs.load_localizer(runs["pcr"])
    fcn = keras_vgg.fully_convolutional(source.classifier.model)
    ref = localize.dense_boxes([loc], [fcn], image, [72], list(top),
                               flip=True)
    for rank, c in enumerate(top):
        np.testing.assert_allclose(out["boxes"].numpy()[0, rank],
                                   ref[c][0][0], atol=1e-5)
    # The probabilities: the classifier's dense evaluation on the same
    # centred windows (72x90 rescaled: 32-pixel windows at steps of 32
    # cover 64x64 of it, centred at (4, 13)).
    x = dense.rescale(tf.constant(image[None]), 72).numpy()
    assert x.shape[1:3] == (72, 90)
    top_, left, rows, cols = box_lib.centered_grid(72, 90, tiny_run.CROP, 32)
    assert (top_, left, rows, cols) == (4, 13, 64, 64)
    covered = keras_vgg.preprocessing.apply(
        x[:, 4:68, 13:77], "caffe")
    average = keras_vgg.fully_convolutional(source.classifier.model,
                                            average=True)
    expected = (np.asarray(average(covered)) + np.asarray(
        average(covered[:, :, ::-1]))) / 2
    np.testing.assert_allclose(out["probabilities"].numpy(), expected,
                               atol=1e-5)


@pytest.mark.slow
def test_saved_model_encoded_images(exported):
    _, served = exported
    image = np.round(tiny_run.pixels(50, 70, seed=4)).astype("uint8")
    png = tf.io.encode_png(image)
    by_bytes = served.signatures["serving_default"](
        images=tf.stack([png, png]))
    by_pixels = served.signatures["predict_images_uint8"](
        images=tf.constant(image[None]))
    assert by_bytes["boxes"].shape == (2, 3, 4)
    for key in ("boxes", "probabilities"):
        np.testing.assert_allclose(by_bytes[key].numpy()[1],
                                   by_pixels[key].numpy()[0], atol=1e-5)


def test_scr_saved_model_without_flip(runs):
    source = common.load_localizer_source(runs["scr"], runs["cls"])
    assert source.regression == "scr" and source.test_scale == 40
    predictor = localizer.DenseLocalizer(source, flip=False, top_k=2)
    image = tiny_run.pixels(64, 64, seed=5)
    out = predictor.predict_same_size(tf.constant(image[None]))
    loc = keras_vgg.runs.load_localizer(runs["scr"])
    fcn = keras_vgg.fully_convolutional(source.classifier.model)
    top = list(out["top_k_indices"].numpy()[0])
    ref = localize.dense_boxes([loc], [fcn], image, [40], top)
    for rank, c in enumerate(top):
        np.testing.assert_allclose(out["boxes"].numpy()[0, rank],
                                   ref[c][0][0], atol=1e-5)


def test_bad_sources(runs, tmp_path):
    with pytest.raises(ValueError, match="is a localiser.*--classifier"):
        common.load_export_model(runs["pcr"])
    with pytest.raises(ValueError, match="give --classifier"):
        common.load_localizer_source(runs["pcr"], None)
    with pytest.raises(ValueError, match="--classifier .* is a localiser"):
        common.load_localizer_source(runs["pcr"], runs["scr"])
    with pytest.raises(ValueError, match="--model: .*not a localiser"):
        common.load_localizer_source(runs["cls"], runs["cls"])
    other = keras_vgg.VGG("A", width_multiplier=0.125,
                          input_shape=(64, 64, 3), classes=4)
    with pytest.raises(ValueError, match="input window"):
        common.load_localizer_source(runs["pcr"], other)
    five = keras_vgg.VGG("A", width_multiplier=0.125,
                         input_shape=(32, 32, 3), classes=5)
    with pytest.raises(ValueError, match="PCR localiser of 4 classes"):
        common.load_localizer_source(runs["pcr"], five)
    source = common.load_localizer_source(runs["pcr"], runs["cls"])
    with pytest.raises(ValueError, match="--dynamic_size"):
        tflite.export_tflite(source, str(tmp_path / "a.tflite"),
                             dynamic_size=True)
    with pytest.raises(ValueError, match="qat"):
        tflite.export_tflite(source, str(tmp_path / "a.tflite"),
                             quantize="qat")
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_tflite_crop_model_boxes(runs, tmp_path):
    source = common.load_localizer_source(runs["pcr"], runs["cls"])
    output = str(tmp_path / "loc.tflite")
    report = tflite.export_tflite(source, output, calibration_data="builtin",
                                  verify_images=8, top_k=2,
                                  data_dir=str(tmp_path / "data"))
    assert report["top1_agreement"] == 1.0
    assert report["mean_box_iou"] > 0.999
    with open(litert.verification_path(output)) as f:
        saved = json.load(f)
    assert saved["regression"] == "pcr"
    # 8 verification images drawn from the 5 built-in classes alike.
    assert sorted(saved["class_counts"].values()) == [1, 1, 2, 2, 2]
    # The LiteRT boxes are the central-crop protocol's on a crop-sized
    # image (Q = crop: the crop is the image).
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=output).get_signature_runner()
    image = tiny_run.pixels(32, 32, seed=6)
    out = tflite_localizer.lite_outputs(runner, image,
                                 runner.get_input_details()["pixels"])
    assert sorted(out) == ["boxes", "probabilities", "top_k_indices",
                           "top_k_scores"]
    loc = keras_vgg.runs.load_localizer(runs["pcr"]).with_q(32)
    for rank, c in enumerate(out["top_k_indices"]):
        np.testing.assert_allclose(
            out["boxes"][rank], localize.center_crop_box(loc, image, int(c)),
            atol=1e-4)


@pytest.mark.slow
def test_cli_exports_a_localiser(runs, tmp_path):
    output = str(tmp_path / "sm")
    result = subprocess.run(
        [sys.executable, "-m", "export.saved_model", f"--model={runs['pcr']}",
         f"--classifier={runs['cls']}", f"--output={output}", "--top_k=2"],
        capture_output=True, text=True, cwd=os.path.dirname(
            os.path.dirname(os.path.abspath(__file__))), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "boxes" in result.stdout
    served = tf.saved_model.load(output)
    out = served.signatures["predict_images"](
        images=tf.constant(tiny_run.pixels(40, 40)[None]))
    assert out["boxes"].shape == (1, 2, 4)
