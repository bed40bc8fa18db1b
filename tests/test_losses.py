"""keras_vgg.PerceptualLoss and StyleLoss against hand computations on a
tiny network; zero for an image with itself; finite, non-zero gradients;
ReLU outputs of the BN variants; float32 under a mixed policy; a model
compiled with either loss saved to `.keras` and loaded back."""

import json

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
    with pytest.raises(ValueError, match="`layers` is needed.*"
                       "network is configuration 'A'"):
        keras_vgg.PerceptualLoss(network)
    with pytest.raises(ValueError, match="input_range"):
        keras_vgg.PerceptualLoss(network, layers=["block1_conv1"],
                                 input_range=2)
    with pytest.raises(ValueError, match="layer 'conv9'"):
        keras_vgg.StyleLoss(network, layers=["conv9"])
    with pytest.raises(ValueError, match="layer_weights"):
        keras_vgg.StyleLoss(network, layer_weights=[1.0])


def _tiny(config, batch_norm=False, seed=3):
    model = keras_vgg.VGG(config, include_top=False, batch_norm=batch_norm,
                          input_shape=(None, None, 3), width_multiplier=0.125)
    return randomize(model, seed=seed)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("config", sorted(keras_vgg.CONFIGS))
def test_the_configuration_of_a_given_network_is_read_from_its_layers(
        config, batch_norm):
    if config == "A-LRN" and batch_norm:
        return  # the builder has no BN variant of A-LRN to tell apart
    model = keras_vgg.VGG(config, include_top=not batch_norm,
                          input_shape=(32, 32, 3), width_multiplier=0.125,
                          batch_norm=batch_norm, classes=3)
    assert losses._architecture(model) == config


def test_a_given_vgg16_or_vgg19_gets_the_default_content_layer():
    assert keras_vgg.PerceptualLoss(_tiny("D")).layer_names == (
        "block2_conv2",)
    assert keras_vgg.PerceptualLoss(_tiny("E")).layer_names == (
        "block4_conv2",)
    # The whole classifier, head included, is a VGG16 too.
    classifier = keras_vgg.VGG("D", input_shape=(32, 32, 3), classes=3,
                               width_multiplier=0.125)
    assert keras_vgg.PerceptualLoss(classifier).layer_names == (
        "block2_conv2",)


@pytest.mark.slow
def test_batch_norm_networks_compare_relu_outputs():
    bn = _tiny("D", batch_norm=True)
    loss = keras_vgg.PerceptualLoss(bn, reduction=None)
    a, b = _images(6), _images(7)
    got = np.asarray(loss._features(a)[0], dtype="float64")
    want = _layer(bn, "block2_conv2_relu", a)
    assert got.min() >= 0.0 and got.max() > 0.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(loss(a, b)),
        np.mean((want - _layer(bn, "block2_conv2_relu", b)) ** 2,
                axis=(1, 2, 3)), rtol=1e-4)
    style = keras_vgg.StyleLoss(bn)
    assert style.feature_layers == tuple(
        f"block{i}_conv1_relu" for i in range(1, 6))
    # Built by name, the same.
    named = keras_vgg.PerceptualLoss("D", weights=None, batch_norm=True)
    assert named.feature_layers == ("block2_conv2_relu",)


@pytest.fixture
def mixed_bfloat16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_a_mixed_precision_policy_leaves_the_loss_in_float32(network,
                                                            mixed_bfloat16):
    # The same tiny network, built under the mixed policy (bfloat16
    # compute, float32 weights: randomize gives it the same values).
    mixed = _tiny("A")
    assert mixed.get_layer("block2_conv1").compute_dtype == "bfloat16"
    a = _images(8)
    b = a + np.random.RandomState(9).normal(0, 1.0, a.shape)  # near a
    layers = ["block2_conv1", "block3_conv2"]
    want = keras_vgg.PerceptualLoss(network, layers=layers, reduction=None)
    got = keras_vgg.PerceptualLoss(mixed, layers=layers, reduction=None)
    assert got.dtype == "float32"
    assert all(layer.compute_dtype == "float32"
               for layer in got.extractor.layers if layer.weights)
    np.testing.assert_allclose(np.asarray(got(a, b)), np.asarray(want(a, b)),
                               rtol=1e-5)
    style = keras_vgg.StyleLoss(mixed, layers=layers, reduction=None)
    np.testing.assert_allclose(
        np.asarray(style(a, b)),
        np.asarray(keras_vgg.StyleLoss(network, layers=layers,
                                       reduction=None)(a, b)), rtol=1e-5)
    # Built by name under the policy: float32 as well.
    named = keras_vgg.PerceptualLoss("A", weights=None, layers=layers)
    assert all(layer.compute_dtype == "float32"
               for layer in named.extractor.layers if layer.weights)
    # A mixed loss is asked for by name.
    half = keras_vgg.PerceptualLoss(mixed, layers=layers,
                                    dtype="mixed_bfloat16")
    assert half.extractor.get_layer("block2_conv1").compute_dtype == (
        "bfloat16")
    assert half.get_config()["dtype"] == "mixed_bfloat16"


def _compiled(loss):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=loss)
    return model


def _as_json(config):
    # A config read back from a file has lists where the original had
    # tuples (kernel sizes, ...).
    return json.loads(json.dumps(config))


def _extractor_weights(loss):
    return [w.numpy() for w in loss.extractor.weights]


@pytest.mark.slow
@pytest.mark.parametrize("cls, layers", [
    (keras_vgg.PerceptualLoss, None),
    (keras_vgg.StyleLoss, ["block1_conv1", "block3_conv1"])])
def test_a_model_compiled_with_a_loss_of_a_given_network_saves_and_loads(
        tmp_path, cls, layers):
    bn = _tiny("D", batch_norm=True, seed=4)
    loss = cls(bn, layers=layers, layer_weights=[2.0] * 2 if layers else None,
               input_range=1)
    model = _compiled(loss)
    x, y = _images(10, n=4) / 255, _images(11, n=4) / 255
    before = model.evaluate(x, y, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    restored = loaded.loss
    assert type(restored) is cls
    assert _as_json(restored.get_config()) == _as_json(loss.get_config())
    assert restored.feature_layers == loss.feature_layers
    for got, want in zip(_extractor_weights(restored),
                         _extractor_weights(loss)):
        np.testing.assert_array_equal(got, want)
    assert loaded.evaluate(x, y, verbose=0) == before
    # The config alone holds the architecture, not the weights: rebuilt
    # from it, the network has new random weights (documented).
    again = cls.from_config(loss.get_config())
    assert again.feature_layers == loss.feature_layers
    assert not np.allclose(np.asarray(again(y, x)), np.asarray(loss(y, x)))


@pytest.mark.slow
@pytest.mark.parametrize("cls, layers", [
    (keras_vgg.PerceptualLoss, None),
    (keras_vgg.StyleLoss, ["block1_conv1", "block2_conv1"])])
def test_a_loss_built_by_name_saves_its_weights_with_the_model(
        tmp_path, cls, layers):
    loss = cls("D", weights=None, layers=layers)
    config = loss.get_config()
    assert config["network"] == "D" and config["weights"] is None
    assert config["dtype"] == "float32"
    model = _compiled(loss)
    x, y = _images(12, n=3), _images(13, n=3)
    before = model.evaluate(x, y, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.loss) is cls
    assert _as_json(loaded.loss.get_config()) == _as_json(config)
    # weights=None rebuilds random weights; the file's put back the loss's.
    for got, want in zip(_extractor_weights(loaded.loss),
                         _extractor_weights(loss)):
        np.testing.assert_array_equal(got, want)
    assert loaded.evaluate(x, y, verbose=0) == before


@pytest.mark.slow
def test_a_checkpoint_callback_saves_a_model_with_the_loss(tmp_path,
                                                           network):
    loss = keras_vgg.PerceptualLoss(network, layers=["block2_conv1"])
    model = _compiled(loss)
    path = str(tmp_path / "ckpt.keras")
    x, y = _images(14, n=2), _images(15, n=2)
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[keras.callbacks.ModelCheckpoint(path)])
    loaded = keras.models.load_model(path)
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(
        model.evaluate(x, y, verbose=0), rel=1e-6)
