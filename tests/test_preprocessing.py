import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vgg


def test_caffe_by_hand():
    x = np.array([[[[10.0, 20.0, 30.0]]]])
    out = keras_vgg.preprocess_input(x)
    np.testing.assert_allclose(
        out[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_torch_by_hand():
    x = np.array([[[51.0, 102.0, 153.0]]], "float32")
    out = keras_vgg.preprocess_input(x, weights="tv_in1k")
    expected = [(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224,
                (0.6 - 0.406) / 0.225]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_caffe_equals_keras_applications(rng):
    x = rng.uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    ref = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(keras_vgg.preprocess_input(x), ref, rtol=1e-6)


def test_tensor_in_tensor_out_and_input_untouched(rng):
    x = rng.uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    kept = x.copy()
    out = keras_vgg.preprocess_input(tf.constant(x), mode="torch")
    assert not isinstance(out, np.ndarray)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                               keras_vgg.preprocess_input(x, mode="torch"),
                               rtol=1e-6)
    np.testing.assert_array_equal(x, kept)


def test_channels_first(rng):
    x = rng.uniform(0, 255, (1, 3, 4, 4)).astype("float32")
    out = keras_vgg.preprocess_input(x, data_format="channels_first")
    ref = keras_vgg.preprocess_input(x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(out, ref.transpose(0, 3, 1, 2), rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "inception"}, "mode"),
    ({"weights": "laion"}, "weights"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_vgg.preprocess_input(np.zeros((1, 2, 2, 3)), **kwargs)


def test_wrong_channels():
    with pytest.raises(ValueError, match="3 RGB channels"):
        keras_vgg.preprocess_input(np.zeros((1, 2, 2, 4)))
