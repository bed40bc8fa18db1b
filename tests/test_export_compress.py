"""export.compress through `export.tflite`: pruning reaches its sparsity in
the exported weights, clustering leaves at most N values per layer, the
command line writes a file LiteRT runs with the compression in its
verification JSON, and what cannot apply is refused in one line."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import keras_vgg
from export import common
from export import compress
from export import litert
from export import tflite
from pipelines import synthetic
from tests import tiny_run

Q, CROP = 36, 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("builtin"))
    synthetic.write_builtin(directory, num_train=40, num_val=20)
    return directory


@pytest.fixture(scope="module")
def source():
    # fc1 64 x 512, fc2 512 x 512, predictions 512 x 4.
    return common.load_export_model(tiny_run.tiny_model(), q=Q)


def _kernels(path, layers):
    """{layer: kernel values as stored} of the Dense layers named `layers`
    in a .tflite file (their tensors are named ".../<layer>_1/MatMul")."""
    lite = litert.LiteModel(model_path=str(path))
    pattern = re.compile(rf"/({'|'.join(layers)})(_\d+)?/MatMul$")
    kernels = {}
    for detail in lite.interpreter.get_tensor_details():
        match = pattern.search(detail["name"])
        if match:
            kernels[match.group(1)] = lite.interpreter.get_tensor(
                detail["index"])
    return kernels


@pytest.mark.slow
def test_cli_writes_a_verified_compressed_file(data_dir, tmp_path):
    """SVD, pruning, clustering and fine-tuning at once, through the
    command line: the int8 file LiteRT runs holds the sparsity and at most
    N values per output channel, and its JSON says so."""
    run_dir, _ = tiny_run.write_run(str(tmp_path / "run"))
    output = str(tmp_path / "small.tflite")
    result = subprocess.run(
        [sys.executable, "-m", "export.tflite", f"--model={run_dir}",
         "--quantize=int8", "--fc_rank=16", "--prune=0.5", "--cluster=6",
         "--finetune_data=builtin", "--finetune_steps=2",
         f"--output={output}", f"--data_dir={data_dir}",
         "--calibration_steps=10", "--verify_images=8"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gzip_size_bytes" in result.stdout
    with open(litert.verification_path(output)) as f:
        report = json.load(f)
    assert report["fc_ranks"] == {"fc1": 16, "fc2": 16}
    assert report["prune"] == 0.5 and report["cluster"] == 6
    assert report["finetune_data"] == "builtin"
    assert report["finetune_steps"] == 2
    # Clustering maps a few more small weights to its zero centroid
    # (observed 0.524).
    assert 0.5 <= report["measured_sparsity"] < 0.6
    assert 2 <= report["max_unique_values"] <= 6
    assert report["images"] == 8 and 0 <= report["top1_agreement"] <= 1
    # fc1 64 x 512 and fc2 512 x 512 became 16 (64 + 512) + 16 (512 + 512)
    # weights (and 32 zero biases).
    assert (report["parameters"] - report["compressed_parameters"]
            == 64 * 512 + 512 * 512 - 16 * (64 + 512) - 16 * 1024 - 32)
    assert report["gzip_size_bytes"] < report["size_bytes"]
    assert report["sparse_encoding"] is False
    assert os.path.getsize(output) == report["size_bytes"]

    kernels = _kernels(output, ("fc1_u", "fc1_v", "fc2_u", "fc2_v",
                                "predictions"))
    assert len(kernels) == 5
    for name in ("fc1_u", "fc1_v", "fc2_u", "fc2_v"):
        values = kernels[name]
        assert values.dtype == np.int8
        assert 0.5 <= np.mean(values == 0) < 0.65, name
        # Per-channel int8 scales: at most N values in each output row.
        assert max(len(np.unique(row)) for row in values) <= 6, name
    # The output layer is neither pruned nor clustered.
    assert np.mean(kernels["predictions"] == 0) < 0.1
    assert len(np.unique(kernels["predictions"])) > 6
    lite = litert.LiteModel(model_path=output)
    assert lite.predict(tiny_run.pixels(CROP, CROP)[None]).shape == (1, 4)


@pytest.mark.slow
@pytest.mark.parametrize("flag, message", [
    ("--fc_rank=65", "--fc_rank=65 is larger than layer 'fc1'"),
])
def test_cli_bad_flags_are_one_error_line(tmp_path, flag, message):
    run_dir, _ = tiny_run.write_run(str(tmp_path / "run"))
    output = tmp_path / "x.tflite"
    result = subprocess.run(
        [sys.executable, "-m", "export.tflite", f"--model={run_dir}",
         flag, f"--output={output}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0]
    assert not output.exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(prune=0.0), "--prune=0.0"),
    (dict(prune=1.0), "--prune=1.0"),
    (dict(cluster=1), "--cluster=1: expected at least 2"),
    (dict(prune_convs=True), "--prune_convs needs --prune"),
    (dict(fc_rank=4, fc_energy=0.5), "not both"),
    (dict(finetune_data="builtin"), "--finetune_data fine-tunes"),
    (dict(prune=0.5, finetune_data="builtin", finetune_steps=0),
     "--finetune_steps=0"),
])
def test_settings_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress.Compression(**kwargs).check()


def test_models_refused(source, tmp_path):
    lrn = common.load_export_model(keras_vgg.VGG(
        "A-LRN", width_multiplier=0.125, input_shape=(CROP, CROP, 3),
        classes=5), q=Q)
    with pytest.raises(ValueError, match="A-LRN.*--fc_rank / --fc_energy"):
        tflite.export_tflite(lrn, str(tmp_path / "l.tflite"),
                             compression=compress.Compression(cluster=4))
    with pytest.raises(ValueError, match="--quantize=qat"):
        tflite.export_tflite(source, str(tmp_path / "q.tflite"), "qat",
                             compression=compress.Compression(prune=0.5))
    localizer = common.LocalizerSource(
        localizer=None, regression="scr", preprocessing="caffe",
        classifier=source)
    with pytest.raises(ValueError, match="localiser"):
        tflite.export_tflite(localizer, str(tmp_path / "loc.tflite"),
                             compression=compress.Compression(fc_rank=4))
    with pytest.raises(ValueError, match="Sparse weight encoding"):
        litert.convert(tflite.pixel_model(source), "dynamic", sparse=True)
