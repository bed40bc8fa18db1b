import keras
import numpy as np
import pytest
from keras import ops

import keras_vgg
from keras_vgg import fully_conv
from tests.helpers import images
from tests.helpers import randomize


def logits_model(config, size, batch_norm=False, classes=10):
    return randomize(keras_vgg.VGG(config, input_shape=(size, size, 3),
                                   batch_norm=batch_norm, classes=classes,
                                   classifier_activation=None))


def head_on_window(model, fmap, i, j, kh, kw):
    """The original Flatten/Dense head applied to one window of the last
    pool's feature map, computed with numpy."""
    x = fmap[:, i:i + kh, j:j + kw, :].reshape(fmap.shape[0], -1)
    for name in ("fc1", "fc2", "predictions"):
        kernel, bias = model.get_layer(name).get_weights()
        x = x @ kernel + bias
        if name != "predictions":
            x = np.maximum(x, 0)
    return x


@pytest.mark.slow
@pytest.mark.parametrize("config,batch_norm", [
    ("A", False), ("A-LRN", False), ("B", False), ("C", False), ("D", False),
    ("E", False), ("A", True), ("D", True)])
def test_every_config_small(config, batch_norm):
    # 64x64 input: the last pool is 2x2, fc1 becomes a 2x2 conv.
    model = logits_model(config, 64, batch_norm)
    fcn = keras_vgg.fully_convolutional(model)
    x = keras_vgg.preprocess_input(images(2, 64))
    ref = model.predict(x, verbose=0)
    out = fcn.predict(x, verbose=0)
    assert out.shape == (2, 1, 1, 10)
    np.testing.assert_allclose(out[:, 0, 0], ref, rtol=1e-5,
                               atol=1e-5 * np.abs(ref).max())
    # 128x128: a 4x4 last pool, so a 3x3 score map; each position is the
    # original head on the matching 2x2 window.
    big = keras_vgg.preprocess_input(images(1, 128, seed=1))
    body = keras.Model(model.inputs, model.get_layer("block5_pool").output)
    fmap = keras.Model(fcn.inputs, fcn.get_layer("block5_pool").output
                       ).predict(big, verbose=0)
    scores = fcn.predict(big, verbose=0)
    assert scores.shape == (1, 3, 3, 10)
    for i in range(3):
        for j in range(3):
            expected = head_on_window(model, fmap, i, j, 2, 2)
            np.testing.assert_allclose(scores[:, i, j], expected, rtol=1e-4,
                                       atol=1e-4 * np.abs(expected).max())
    # The copied body is the original body.
    np.testing.assert_allclose(
        body.predict(x, verbose=0),
        keras.Model(fcn.inputs, fcn.get_layer("block5_pool").output
                    ).predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def vgg16():
    return randomize(keras_vgg.VGG16(classifier_activation=None), seed=3)


@pytest.mark.slow
def test_vgg16_at_224_and_score_map_sizes(vgg16):
    fcn = keras_vgg.fully_convolutional(vgg16)
    x = keras_vgg.preprocess_input(images(1, 224))
    ref = vgg16.predict(x, verbose=0)
    out = fcn.predict(x, verbose=0)[:, 0, 0]
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    # The paper's score-map sizes: Q=256 -> 2x2, 384 -> 6x6, 512 -> 10x10.
    assert fcn.compute_output_shape((1, 256, 256, 3)) == (1, 2, 2, 1000)
    assert fcn.compute_output_shape((1, 384, 384, 3)) == (1, 6, 6, 1000)
    assert fcn.compute_output_shape((1, 512, 512, 3)) == (1, 10, 10, 1000)
    assert fcn.get_layer("fc1").kernel.shape == (7, 7, 512, 4096)


@pytest.mark.slow
def test_vgg16_window_equality_at_256(vgg16):
    fcn = keras_vgg.fully_convolutional(vgg16)
    x = keras_vgg.preprocess_input(images(1, 256, seed=2))
    fmap = keras.Model(fcn.inputs, fcn.get_layer("block5_pool").output
                       ).predict(x, verbose=0)
    scores = fcn.predict(x, verbose=0)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        expected = head_on_window(vgg16, fmap, i, j, 7, 7)
        np.testing.assert_allclose(scores[:, i, j], expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_average_is_softmax_of_mean_scores():
    model = randomize(keras_vgg.VGG11(input_shape=(64, 64, 3), classes=10))
    logits = keras_vgg.fully_convolutional(
        keras_vgg.VGG11(input_shape=(64, 64, 3), classes=10,
                        classifier_activation=None))
    logits.set_weights(keras_vgg.fully_convolutional(model).get_weights())
    dense = keras_vgg.fully_convolutional(model, average=True)
    x = keras_vgg.preprocess_input(images(2, 128))
    scores = logits.predict(x, verbose=0).mean(axis=(1, 2))
    expected = np.exp(scores - scores.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    out = dense.predict(x, verbose=0)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    # Per-position softmax when not averaging, as the original model.
    per_position = keras_vgg.fully_convolutional(model).predict(x, verbose=0)
    np.testing.assert_allclose(per_position.sum(-1), 1.0, rtol=1e-5)


def test_preprocessing_layer_is_kept():
    model = keras_vgg.VGG11(input_shape=(64, 64, 3), classes=3,
                            include_preprocessing=True)
    fcn = keras_vgg.fully_convolutional(model)
    # After the input's size check.
    assert [layer.name for layer in fcn.layers[1:3]] == [
        "minimum_image_size", "preprocessing"]
    x = images(1, 64)
    np.testing.assert_allclose(fcn.predict(x, verbose=0)[:, 0, 0],
                               model.predict(x, verbose=0), rtol=1e-5)


def test_refuses_model_without_head():
    with pytest.raises(ValueError, match="no Flatten/Dense head"):
        keras_vgg.fully_convolutional(keras_vgg.VGG11(include_top=False))


def test_refuses_non_chain_and_bad_head():
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(2, 3, name="a")(inp)
    b = keras.layers.Conv2D(2, 3, name="b")(inp)
    x = keras.layers.Flatten()(keras.layers.Add()([a, b]))
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="not fed by the layer before"):
        keras_vgg.fully_convolutional(model)
    x = keras.layers.Flatten()(inp)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="BatchNormalization"):
        keras_vgg.fully_convolutional(model)


def test_fully_convolutional_model_round_trips(tmp_path):
    fcn = keras_vgg.fully_convolutional(
        keras_vgg.VGG11LRN(input_shape=(32, 32, 3), classes=4), average=True)
    path = str(tmp_path / "fcn.keras")
    fcn.save(path)
    loaded = keras.saving.load_model(path)
    x = images(1, 96)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               fcn.predict(x, verbose=0), rtol=1e-6)


@pytest.fixture
def global_policy():
    """Sets the global dtype policy for a test; float32 again after it."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


# The layers fully_convolutional makes, and whose policy each takes.
NEW_LAYERS = {"block5_pool_offsets": "mixed_bfloat16",
              "block4_pool_offsets": "mixed_bfloat16",
              "block4_pool_interleave": "float32",
              "block5_pool_interleave": "float32",
              "windows_in_image": "float32", "score_average": "float32",
              "probabilities": "float32", "minimum_image_size": "float32"}


@pytest.mark.parametrize("average,stride", [(False, 32), (True, 8)])
def test_mixed_precision_model_stays_mixed(global_policy, average, stride):
    # As pipelines.trainer builds one: mixed_bfloat16, its output layer in
    # float32.
    global_policy("mixed_bfloat16")
    model = randomize(keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=3,
                                    width_multiplier=0.125), seed=7)
    model.get_layer("predictions").dtype_policy = "float32"
    global_policy("float32")
    fcn = keras_vgg.fully_convolutional(model, average=average,
                                        stride=stride)
    for layer in fcn.layers[1:]:
        if layer.name in NEW_LAYERS:
            expected = NEW_LAYERS[layer.name]
        else:
            expected = model.get_layer(layer.name).dtype_policy.name
        assert layer.dtype_policy.name == expected, layer.name
    for name in ("fc1", "fc2"):
        assert fcn.get_layer(name).compute_dtype == "bfloat16"
    assert isinstance(fcn.get_layer("fc1"), fully_conv.FullyConnectedConv2D)
    x = keras_vgg.preprocess_input(images(2, 32, seed=8))
    out = fcn(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    expected = ops.convert_to_numpy(model(x))
    if not average:
        out = out[:, 0, 0]
    # The same bfloat16 arithmetic as the source model's.
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=2e-3)


def test_float32_model_stays_float32_under_a_mixed_global_policy(
        global_policy):
    model = keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=3,
                          width_multiplier=0.125)
    global_policy("mixed_bfloat16")
    fcn = keras_vgg.fully_convolutional(model, average=True, stride=16)
    assert {layer.dtype_policy.name for layer in fcn.layers[1:]} == {
        "float32"}
