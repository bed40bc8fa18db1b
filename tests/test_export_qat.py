"""Quantisation-aware training export: the tf_keras bridge mirrors the
Keras 3 model exactly, and `--quantize=qat` runs end to end on the built-in
data (tfmot fine-tuning, int8 conversion, LiteRT verification)."""

import json

import keras
import numpy as np
import pytest
import tf_keras

import keras_vgg
from export import common
from export import litert
from export import tf_keras_bridge
from export import tflite
from keras_vgg import vgg
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


def _tiny(config="A", **kwargs):
    return keras_vgg.VGG(config, width_multiplier=0.125,
                         input_shape=(CROP, CROP, 3), classes=5, **kwargs)


@pytest.mark.parametrize("config,batch_norm", [("A", False), ("B", True)])
def test_bridge_matches_keras(config, batch_norm):
    keras.utils.set_random_seed(0)
    model = _tiny(config, batch_norm=batch_norm)
    if batch_norm:
        _randomize_bn(model)
    tf_keras_model = tf_keras_bridge.to_tf_keras(model)
    assert isinstance(tf_keras_model, tf_keras.Model)
    assert ([layer.name for layer in tf_keras_model.layers]
            == [layer.name for layer in model.layers])
    assert ([type(layer).__name__ for layer in tf_keras_model.layers[1:]]
            == [type(layer).__name__ for layer in model.layers[1:]])
    x = keras_vgg.preprocessing.apply(_pixels(4), "caffe")
    assert tf_keras_bridge.max_abs_difference(model, tf_keras_model,
                                              x) < 1e-5
    expected = np.asarray(model(x, training=False))
    # Non-trivial outputs, so that agreement means something.
    assert expected.std(axis=1).mean() > 1e-3

    # With the export's leading preprocessing conv: pixels in [0, 255].
    pixels = tf_keras_bridge.to_tf_keras(model, preprocessing="caffe",
                                         input_name="pixels")
    assert pixels.layers[0].name == "pixels"
    assert pixels.layers[1].name == "preprocessing"
    np.testing.assert_allclose(pixels(_pixels(4), training=False), expected,
                               atol=1e-5)

    # And back: a changed tf_keras copy gives its weights to the Keras model.
    other = _tiny(config, batch_norm=batch_norm)
    copied = tf_keras_bridge.copy_back(tf_keras_model, other)
    assert "block1_conv1" in copied and "predictions" in copied
    np.testing.assert_allclose(other(x, training=False), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["caffe", "torch"])
def test_bridge_mirrors_in_model_preprocessing(mode):
    """An in-model `Preprocessing` layer becomes the fixed 1x1 conv, with
    the same numbers as the Keras 3 layer; BN statistics come along."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((CROP, CROP, 3), name="pixels")
    x = keras_vgg.Preprocessing(mode, name="preprocessing")(inputs)
    x = vgg.features(x, "A", batch_norm=True,
                     width_multiplier=0.125)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=f"a_bn_{mode}")
    _randomize_bn(model)
    tf_keras_model = tf_keras_bridge.to_tf_keras(model)
    conv = tf_keras_model.get_layer("preprocessing")
    assert isinstance(conv, tf_keras.layers.Conv2D) and not conv.trainable
    pixels = _pixels(4, seed=2)
    assert tf_keras_bridge.max_abs_difference(model, tf_keras_model,
                                              pixels) < 1e-5
    with pytest.raises(ValueError, match="already holds its preprocessing"):
        tf_keras_bridge.to_tf_keras(model, preprocessing="caffe")


def test_bridge_mirrors_headless_features():
    keras.utils.set_random_seed(2)
    model = keras_vgg.VGG("A", include_top=False, width_multiplier=0.125,
                          input_shape=(CROP, CROP, 3), pooling="avg")
    tf_keras_model = tf_keras_bridge.to_tf_keras(model)
    x = keras_vgg.preprocessing.apply(_pixels(2), "caffe")
    assert tf_keras_bridge.max_abs_difference(model, tf_keras_model,
                                              x) < 1e-4


def test_bridge_refuses_what_it_cannot_mirror():
    lrn = _tiny("A-LRN")
    with pytest.raises(ValueError,
                       match="block1_lrn.*local response normalisation"):
        tf_keras_bridge.to_tf_keras(lrn)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 1, name="conv")(inputs)
    branched = keras.Model(inputs, keras.layers.Add(name="add")([inputs, x]))
    with pytest.raises(ValueError, match="plain chain"):
        tf_keras_bridge.to_tf_keras(branched)
    inputs = keras.Input((8, 8, 3))
    upsampled = keras.Model(
        inputs, keras.layers.UpSampling2D(name="up")(inputs))
    with pytest.raises(ValueError, match="'up'.*UpSampling2D"):
        tf_keras_bridge.to_tf_keras(upsampled)


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
    saved = json.load(open(litert.verification_path(output)))
    assert saved["quantize"] == "qat" and saved["images"] == 60
    # Observed: 0.967 (58 of 60 validation images; max |dp| 0.066) with
    # 5 steps; post-training int8 gives 1.0 on this tiny net.
    assert saved["top1_agreement"] >= 0.9
    assert report["top1_agreement"] == saved["top1_agreement"]
    lite = litert.LiteModel(model_path=output)
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
