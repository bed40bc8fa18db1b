"""keras_vgg.PerceptualLoss and StyleLoss against hand computations on a
tiny network; zero for an image with itself; finite, non-zero gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from keras_vgg import losses
from keras_vgg import preprocessing
from tests.helpers import randomize


@pytest.fixture(scope="module")
def network():
    model = keras_vgg.VGG("A", include_top=False, input_shape=(None, None, 3),
                          width_multiplier=0.125)
    return randomize(model, seed=3)


def _images(seed, n=2, size=32):
    return np.random.RandomState(seed).uniform(0, 255, (n, size, size, 3))


def _layer(network, name, pixels):
    probe = keras.Model(network.inputs[0], network.get_layer(name).output)
    x = preprocessing.apply(pixels.astype("float32"), "caffe")
    return np.asarray(probe(x), dtype="float64")


def test_perceptual_loss_is_the_mean_squared_feature_difference(network):
    a, b = _images(0), _images(1)
    loss = keras_vgg.PerceptualLoss(network, layers=["block2_conv1",
                                                     "block3_conv2"],
                                    layer_weights=[1.0, 0.5],
                                    reduction=None)
    want = sum(w * np.mean((_layer(network, n, a) - _layer(network, n, b))
                           ** 2, axis=(1, 2, 3))
               for n, w in (("block2_conv1", 1.0), ("block3_conv2", 0.5)))
    np.testing.assert_allclose(np.asarray(loss(a, b)), want, rtol=1e-4)
    # [0, 1] inputs are scaled to pixels first.
    unit = keras_vgg.PerceptualLoss(network, layers=["block2_conv1",
                                                     "block3_conv2"],
                                    layer_weights=[1.0, 0.5], input_range=1,
                                    reduction=None)
    np.testing.assert_allclose(np.asarray(unit(a / 255, b / 255)), want,
                               rtol=1e-4)
    np.testing.assert_allclose(np.asarray(loss(a, a)), 0.0, atol=1e-6)


def test_style_loss_is_the_gram_distance(network):
    a, b = _images(2), _images(3, size=40)  # style images may differ in size
    loss = keras_vgg.StyleLoss(network, layers=["block1_conv1",
                                                 "block2_conv1"],
                               reduction=None)

    def gram(f):
        n, h, w, c = f.shape
        flat = f.reshape(n, h * w, c)
        return np.einsum("npc,npd->ncd", flat, flat) / (c * h * w)

    want = sum(np.sum((gram(_layer(network, n, a)) - gram(_layer(
        network, n, b))) ** 2, axis=(1, 2))
        for n in ("block1_conv1", "block2_conv1"))
    np.testing.assert_allclose(np.asarray(loss(a, b)), want, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(loss(b, b)), 0.0, atol=1e-8)


def test_gradient_with_respect_to_the_input(network):
    loss = keras_vgg.StyleLoss(network)
    content = keras_vgg.PerceptualLoss(network, layers=["block2_conv1"])
    target = tf.constant(_images(4), tf.float32)
    x = tf.Variable(_images(5), dtype=tf.float32)
    with tf.GradientTape() as tape:
        value = loss(target, x) + content(target, x)
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    # The network stays frozen.
    assert not loss.extractor.trainable_weights


def test_defaults_and_bad_arguments(network):
    assert losses.CONTENT_LAYERS["D"] == ("block2_conv2",)
    assert keras_vgg.StyleLoss(network).layer_names == tuple(
        f"block{i}_conv1" for i in range(1, 6))
    with pytest.raises(ValueError, match="`layers` is needed"):
        keras_vgg.PerceptualLoss(network)
    with pytest.raises(ValueError, match="input_range"):
        keras_vgg.PerceptualLoss(network, layers=["block1_conv1"],
                                 input_range=2)
    with pytest.raises(ValueError, match="layer 'conv9'"):
        keras_vgg.StyleLoss(network, layers=["conv9"])
    with pytest.raises(ValueError, match="layer_weights"):
        keras_vgg.StyleLoss(network, layer_weights=[1.0])
