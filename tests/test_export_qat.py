"""Quantisation-aware training export: the tf_keras bridge mirrors the
Keras 3 model exactly, and `--quantize=qat` runs end to end on the built-in
data (tfmot fine-tuning, int8 conversion, LiteRT verification)."""

import json

import keras
import numpy as np
import pytest

import keras_vgg
from export import common
from export import tf_keras_bridge
from export import tflite
from pipelines import synthetic
from tests import tiny_run

Q, CROP = 36, 32


def _pixels(n, seed=0):
    return np.random.RandomState(seed).uniform(
        0, 255, (n, CROP, CROP, 3)).astype(np.float32)


def _randomize_bn(model, seed=1):
    """Non-trivial BN statistics, so that a wrong copy would show."""
    r = np.random.RandomState(seed)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            shape = layer.get_weights()[0].shape
            layer.set_weights([r.uniform(0.5, 1.5, shape),
                               r.normal(0, 0.1, shape),
                               r.normal(0, 0.1, shape),
                               r.uniform(0.5, 1.5, shape)])


@pytest.mark.parametrize("config,batch_norm", [("A", False), ("B", True)])
def test_bridge_matches_keras(config, batch_norm):
    keras.utils.set_random_seed(0)
    model = keras_vgg.VGG(config, width_multiplier=0.125,
                          input_shape=(CROP, CROP, 3), classes=5,
                          batch_norm=batch_norm)
    if batch_norm:
        _randomize_bn(model)
    tk_model = tf_keras_bridge.to_tf_keras(
        model, config, batch_norm=batch_norm, width_multiplier=0.125,
        classes=5, input_shape=(CROP, CROP, 3))
    import tf_keras

    assert isinstance(tk_model, tf_keras.Model)
    names = {layer.name for layer in model.layers} - {"input_layer"}
    assert names <= {layer.name for layer in tk_model.layers}
    x = keras_vgg.preprocessing.apply(_pixels(4), "caffe")
    assert tf_keras_bridge.max_abs_difference(model, tk_model, x) < 1e-5

    # With the export's leading preprocessing conv: pixels in [0, 255].
    pixels = tf_keras_bridge.to_tf_keras(model, preprocessing="caffe")
    assert pixels.layers[1].name == "preprocessing"
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(pixels(_pixels(4), training=False), expected,
                               atol=1e-5)

    # And back: a changed tf_keras copy gives its weights to the Keras model.
    other = keras_vgg.VGG(config, width_multiplier=0.125,
                          input_shape=(CROP, CROP, 3), classes=5,
                          batch_norm=batch_norm)
    tf_keras_bridge.copy_back(tk_model, other)
    np.testing.assert_allclose(other(x, training=False), expected, atol=1e-5)


def test_bridge_refuses_what_it_cannot_mirror():
    lrn = keras_vgg.VGG("A-LRN", width_multiplier=0.125,
                        input_shape=(CROP, CROP, 3), classes=5)
    with pytest.raises(ValueError, match="local response normalisation"):
        tf_keras_bridge.to_tf_keras(lrn)
    model = keras_vgg.VGG("A", width_multiplier=0.125,
                          input_shape=(CROP, CROP, 3), classes=5)
    with pytest.raises(ValueError, match="batch_norm"):
        tf_keras_bridge.to_tf_keras(model, batch_norm=True)
    headless = keras_vgg.VGG("A", include_top=False, width_multiplier=0.125,
                             input_shape=(CROP, CROP, 3))
    with pytest.raises(ValueError, match="not a keras_vgg.VGG classifier"):
        tf_keras_bridge.to_tf_keras(headless)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("builtin"))
    synthetic.write_builtin(directory, num_train=80, num_val=60)
    return directory


@pytest.fixture(scope="module")
def source(data_dir):
    return tiny_run.trained_export_source(data_dir, q=Q, crop=CROP,
                                          name="tiny_qat")


def test_qat_end_to_end(source, data_dir, tmp_path):
    output = str(tmp_path / "qat.tflite")
    report = tflite.export_tflite(source, output, "qat",
                                  calibration_data="builtin",
                                  data_dir=data_dir, verify_images=60,
                                  qat_steps=5, int8_io=True)
    saved = json.load(open(tflite.verification_path(output)))
    assert saved["quantize"] == "qat" and saved["images"] == 60
    # Observed: 0.967 (58 of 60 validation images; max |dp| 0.066) with
    # 5 steps; post-training int8 gives 1.0 on this tiny net.
    assert saved["top1_agreement"] >= 0.9
    assert report["top1_agreement"] == saved["top1_agreement"]
    lite = tflite.LiteModel(model_path=output)
    assert lite.input["dtype"] == np.uint8
    assert lite.input["shape"].tolist() == [1, CROP, CROP, 3]
    # Full integer: the conv weights are int8 in the flatbuffer.
    types = {d["dtype"] for d in lite.interpreter.get_tensor_details()}
    assert np.int8 in types


def test_qat_refusals(source, data_dir, tmp_path):
    with pytest.raises(ValueError, match="dynamic_size"):
        tflite.export_tflite(source, str(tmp_path / "d.tflite"), "qat",
                             dynamic_size=True, data_dir=data_dir)
    with pytest.raises(ValueError, match="calibration_data"):
        tflite.export_tflite(source, str(tmp_path / "c.tflite"), "qat",
                             calibration_data=None)
    lrn = keras_vgg.VGG("A-LRN", width_multiplier=0.125,
                        input_shape=(CROP, CROP, 3), classes=5)
    with pytest.raises(ValueError, match="A-LRN"):
        tflite.export_tflite(common.load_export_model(lrn, q=Q),
                             str(tmp_path / "l.tflite"), "qat",
                             data_dir=data_dir)
