import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from keras_vgg.layers import LocalResponseNormalization
from keras_vgg.layers import Preprocessing


def lrn_numpy(a, r=2, k=2.0, alpha=1e-4, beta=0.75):
    out = np.empty_like(a)
    c = a.shape[-1]
    for ch in range(c):
        lo, hi = max(0, ch - r), min(c, ch + r + 1)
        s = np.sum(a[..., lo:hi] ** 2, axis=-1)
        out[..., ch] = a[..., ch] / (k + alpha * s) ** beta
    return out


def test_lrn_matches_tensorflow_and_formula(rng):
    # Large activations so the alpha term matters (as after conv1 of A-LRN).
    a = rng.normal(0, 60, (2, 5, 4, 16)).astype("float32")
    ours = keras.ops.convert_to_numpy(LocalResponseNormalization()(a))
    ref = tf.nn.local_response_normalization(
        a, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours, lrn_numpy(a), rtol=1e-5, atol=1e-6)
    # The normalisation really changes the values (not an identity).
    assert np.abs(ours - a / 2 ** 0.75).max() > 0.1
    # The keras.ops path (other backends, bfloat16) gives the same numbers.
    portable = keras.ops.convert_to_numpy(
        LocalResponseNormalization().portable_call(tf.constant(a)))
    np.testing.assert_allclose(portable, lrn_numpy(a), rtol=1e-5, atol=1e-6)
    half = LocalResponseNormalization()(tf.constant(a, tf.bfloat16))
    np.testing.assert_allclose(tf.cast(half, tf.float32).numpy(), ours,
                               rtol=2e-2, atol=2e-2)


def test_lrn_other_radius_and_config_round_trip(rng):
    a = rng.normal(0, 30, (1, 3, 3, 7)).astype("float32")
    layer = LocalResponseNormalization(depth_radius=1, bias=1.0, alpha=1e-3,
                                       beta=0.5)
    clone = LocalResponseNormalization.from_config(layer.get_config())
    ref = tf.nn.local_response_normalization(a, 1, 1.0, 1e-3, 0.5).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(a)), ref,
                               rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"depth_radius": -1}, {"bias": 0}])
def test_lrn_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LocalResponseNormalization(**kwargs)


@pytest.mark.parametrize("mode", ["caffe", "torch", "none"])
def test_preprocessing_layer_equals_function(mode, rng):
    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(Preprocessing(mode)(x))
    np.testing.assert_allclose(out, keras_vgg.preprocess_input(x, mode=mode),
                               rtol=1e-6)


def test_preprocessing_layer_takes_uint8():
    x = np.full((1, 2, 2, 3), 200, "uint8")
    out = keras.ops.convert_to_numpy(Preprocessing("caffe")(x))
    np.testing.assert_allclose(out[0, 0, 0], [200 - 103.939, 200 - 116.779,
                                              200 - 123.68], rtol=1e-6)


def test_preprocessing_layer_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        Preprocessing("tf")
