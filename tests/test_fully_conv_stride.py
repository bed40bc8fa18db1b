"""Finer score maps of the fully convolutional rewrite: the last pools at
both offsets (`keras_vgg.fully_convolutional(model, stride=16 | 8)`)."""

import re

import keras
import numpy as np
import pytest
from keras import ops

import keras_vgg
from keras_vgg import cost
from keras_vgg import fully_conv
from keras_vgg import runs
from tests.helpers import images
from tests.helpers import randomize


def pointwise_net(crop=64, classes=3):
    """Five 1x1-conv + 2x2-pool blocks and an FC head: no convolution mixes
    neighbouring pixels, so the fully convolutional net on a large image
    and the network on one of its windows compute the same numbers (with
    3x3 convs the borders differ: the window's are zero-padded)."""
    layers = [keras.Input((crop, crop, 3))]
    for i, width in enumerate((4, 6, 6, 8, 8)):
        layers += [keras.layers.Conv2D(width, 1, activation="relu",
                                       name=f"block{i + 1}_conv1"),
                   keras.layers.MaxPooling2D(name=f"block{i + 1}_pool")]
    layers += [keras.layers.Flatten(name="flatten"),
               keras.layers.Dense(12, activation="relu", name="fc1"),
               keras.layers.Dense(classes, name="predictions")]
    return randomize(keras.Sequential(layers, name="pointwise"), seed=4)


def tiny_vgg(crop=32, classes=4):
    return randomize(keras_vgg.VGG("A", input_shape=(crop, crop, 3),
                                   classes=classes, width_multiplier=0.125,
                                   classifier_activation=None), seed=5)


@pytest.fixture(scope="module")
def pointwise():
    return pointwise_net()


# Just below the 64x64 crop of `pointwise_net`, in height and in width, and
# below half of it (a last feature map shorter than fc1's 2x2 window).
TOO_SMALL = [(63, 69), (69, 63), (31, 64)]


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_images_smaller_than_the_crop_are_refused(pointwise, stride):
    fcn = keras_vgg.fully_convolutional(pointwise, average=True,
                                        stride=stride)
    # At the crop size in one direction (69 - 64 < 8: one window either
    # way), the average is the network on the crop, batch 3 stays 3.
    x = images(3, 69, seed=3)
    for at in (x[:, :64], x[:, :, :64]):
        out = ops.convert_to_numpy(fcn(at))
        assert out.shape == (3, 3)
        np.testing.assert_allclose(out, ops.convert_to_numpy(pointwise(
            at[:, :64, :64])), rtol=1e-5, atol=1e-6)
    # Once no window fits: a ValueError, never NaN scores nor a batch of
    # 6, 12 or 48.
    for rows, cols in TOO_SMALL:
        with pytest.raises(ValueError, match=rf"Image size {rows}x{cols} "
                           r"\(rows x columns\) is smaller than the smallest "
                           "input .* 64x64"):
            fcn(np.zeros((3, rows, cols, 3), "float32"))


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_sizes_known_only_at_run_time_are_checked_in_the_graph(pointwise,
                                                               stride):
    # Sizes unknown until run time exist in TensorFlow graphs alone (JAX
    # traces static shapes, torch runs eagerly).
    tf = pytest.importorskip(
        "tensorflow", reason="a graph over unknown sizes is TensorFlow's")
    fcn = keras_vgg.fully_convolutional(pointwise, average=True,
                                        stride=stride)
    any_size = tf.function(fcn, input_signature=[
        tf.TensorSpec((None, None, None, 3), "float32")])
    at = images(3, 69, seed=4)[:, :64]
    np.testing.assert_allclose(ops.convert_to_numpy(any_size(at)),
                               ops.convert_to_numpy(fcn(at)), rtol=1e-6)
    for rows, cols in TOO_SMALL:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"smallest input .* 64x64 .*\[64 64\]"):
            any_size(np.zeros((3, rows, cols, 3), "float32"))


def _run_time_error():
    """What a size met only at run time raises: TensorFlow's check in the
    graph, or the ValueError (JAX retraces each shape, torch runs
    eagerly)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.errors.InvalidArgumentError
    return ValueError


def test_predict_checks_every_image_size(pointwise):
    # `predict` traces the first size statically (ValueError when traced),
    # then relaxes the sizes that changed to unknown (the graph's check).
    fcn = keras_vgg.fully_convolutional(pointwise, average=True, stride=16)
    x = images(3, 80, seed=5)
    assert fcn.predict(x[:, :64, :72], verbose=0).shape == (3, 3)
    assert fcn.predict(x[:, :72, :64], verbose=0).shape == (3, 3)
    with pytest.raises(_run_time_error(), match="smallest input .* 64x64"):
        fcn.predict(np.zeros((3, 63, 72, 3), "float32"), verbose=0)
    fresh = keras_vgg.fully_convolutional(pointwise, average=True, stride=8)
    with pytest.raises(ValueError, match="Image size 72x63 "):
        fresh.predict(np.zeros((3, 72, 63, 3), "float32"), verbose=0)


def test_a_fixed_size_is_checked_when_the_model_is_built(pointwise):
    for shape, stride in (((63, 64, 3), 32), ((64, 63, 3), 16),
                          ((None, 31, 3), 8)):
        size = "x".join("?" if s is None else str(s) for s in shape[:2])
        with pytest.raises(ValueError, match=re.escape(
                f"input_shape={shape!r}: Image size {size} (rows x columns) "
                "is smaller than the smallest input") + ".* 64x64"):
            keras_vgg.fully_convolutional(pointwise, stride=stride,
                                          input_shape=shape)
    for bad in ((64, 64), (64, 64, 4), (64.5, 64, 3), (0, 64, 3), "643",
                64):
        with pytest.raises(ValueError, match=re.escape(
                f"input_shape={bad!r} is not (rows, columns, 3)")):
            keras_vgg.fully_convolutional(pointwise, input_shape=bad)
    fixed = keras_vgg.fully_convolutional(pointwise, stride=16,
                                          input_shape=(None, 64, 3))
    assert fixed.input_shape == (None, None, 64, 3)
    x = images(2, 96, seed=6)[:, :, :64]
    free = keras_vgg.fully_convolutional(pointwise, stride=16)
    np.testing.assert_allclose(ops.convert_to_numpy(fixed(x)),
                               ops.convert_to_numpy(free(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="Image size 63x64 "):
        fixed(np.zeros((2, 63, 64, 3), "float32"))
    # A model of any size, called on a fixed-size Input or asked its
    # output shape: checked symbolically.
    any_size = keras_vgg.fully_convolutional(pointwise)
    with pytest.raises(ValueError, match="Image size 64x40 "):
        any_size(keras.Input((64, 40, 3)))
    with pytest.raises(ValueError, match="Image size 40x64 "):
        any_size.compute_output_shape((1, 40, 64, 3))


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_every_position_is_the_network_on_its_window(pointwise, stride):
    fcn = keras_vgg.fully_convolutional(pointwise, stride=stride)
    # 64 + 40 rows, 64 + 27 columns: neither a multiple of the stride.
    x = images(1, 104)[:, :, :91]
    scores = ops.convert_to_numpy(fcn(x))
    rows, cols = (104 - 64) // stride + 1, (91 - 64) // stride + 1
    assert scores.shape == (1, rows, cols, 3)
    windows = np.stack([x[0, stride * i:stride * i + 64,
                          stride * j:stride * j + 64]
                        for i in range(rows) for j in range(cols)])
    expected = ops.convert_to_numpy(pointwise(windows)).reshape(rows, cols, 3)
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_map_sizes_hold_every_window_that_fits(pointwise):
    for stride in (16, 8):
        fcn = keras_vgg.fully_convolutional(pointwise, stride=stride)
        for side in (64, 65, 64 + stride - 1, 64 + stride, 64 + 3 * stride):
            count = (side - 64) // stride + 1
            x = np.zeros((2, side, 64 + stride, 3), "float32")
            assert ops.convert_to_numpy(fcn(x)).shape == (2, count, 2, 3)
            assert fcn.compute_output_shape(x.shape) == (2, count, 2, 3)


def test_vgg_stride_16_is_the_head_on_both_pooling_offsets():
    # A narrow VGG (3x3 convs): stride 16 pools the last conv's map at
    # offsets {0, 1}^2 and runs the head on each (checked with numpy);
    # stride 8's even positions are stride 16, stride 16's stride 32.
    model = tiny_vgg()
    fcn32, fcn16, fcn8 = (keras_vgg.fully_convolutional(model, stride=s)
                          for s in (32, 16, 8))
    x = keras_vgg.preprocess_input(images(2, 96, seed=1))[:, :, :80]
    conv = keras.Model(fcn32.inputs,
                       fcn32.get_layer("block5_conv2").output)
    features = ops.convert_to_numpy(conv(x))
    s32, s16, s8 = (ops.convert_to_numpy(f(x)) for f in (fcn32, fcn16, fcn8))
    assert s16.shape == (2, 5, 4, 4) and s8.shape == (2, 9, 7, 4)
    fc1, fc2, out = (model.get_layer(n).get_weights()
                     for n in ("fc1", "fc2", "predictions"))
    for i in range(5):
        for j in range(4):
            window = features[:, i:i + 2, j:j + 2]      # one pool window
            pooled = window.max(axis=(1, 2))
            h = np.maximum(pooled @ fc1[0] + fc1[1], 0)
            h = np.maximum(h @ fc2[0] + fc2[1], 0)
            expected = h @ out[0] + out[1]
            np.testing.assert_allclose(s16[:, i, j], expected, rtol=1e-4,
                                       atol=1e-5)
    np.testing.assert_allclose(s16[:, ::2, ::2], s32, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s8[:, ::2, ::2], s16, rtol=1e-5, atol=1e-6)


def test_average_and_activation_follow_the_interleaved_map():
    model = randomize(keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=4,
                                    width_multiplier=0.125), seed=6)
    scores = keras_vgg.fully_convolutional(model, stride=8)
    dense = keras_vgg.fully_convolutional(model, average=True, stride=8)
    x = keras_vgg.preprocess_input(images(1, 72, seed=2))
    per_position = ops.convert_to_numpy(scores(x))
    assert per_position.shape == (1, 6, 6, 4)
    np.testing.assert_allclose(per_position.sum(-1), 1.0, rtol=1e-5)
    logits = ops.convert_to_numpy(keras.Model(
        dense.inputs, dense.get_layer("score_average").input)(x))
    assert logits.shape == (1, 6, 6, 4)
    mean = logits.mean(axis=(1, 2))
    expected = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
    np.testing.assert_allclose(ops.convert_to_numpy(dense(x)), expected,
                               rtol=1e-5)


def test_macs_count_every_offset(pointwise):
    # After an offset pool the network runs four times (sixteen times after
    # both of stride 8's) on maps of the stride-32 network's sizes.
    shape = (104, 91, 3)
    per_layer = {}
    fcn32 = keras_vgg.fully_convolutional(pointwise)
    current = (1,) + shape
    for layer in fcn32.layers[1:]:
        out = tuple(layer.compute_output_shape(current))
        per_layer[layer.name] = cost.layer_macs(layer, current, out)
        current = out
    assert cost.count_graph_macs(fcn32, shape) == sum(per_layer.values())
    assert cost.count_graph_macs(fcn32, shape) == cost.count_macs(fcn32,
                                                                  shape)
    head = ("fc1", "predictions")
    for stride, repeats in ((16, {n: 4 for n in head}),
                            (8, {"block5_conv1": 4,
                                 **{n: 16 for n in head}})):
        fcn = keras_vgg.fully_convolutional(pointwise, stride=stride)
        expected = sum(m * repeats.get(n, 1) for n, m in per_layer.items())
        assert cost.count_graph_macs(fcn, shape) == expected


def test_strides_offered_and_refused():
    model = tiny_vgg()
    assert fully_conv.score_map_strides(model) == (32, 16, 8)
    # None: the network's own stride.
    assert fully_conv.check_stride(model, None) == 32
    for bad in (4, 12, 64, "16", True, 32.5):
        with pytest.raises(ValueError, match=rf"--dense_stride={bad!r} is "
                           "not a score-map stride .* allows 32, 16, 8"):
            fully_conv.check_stride(model, bad, "--dense_stride")
    with pytest.raises(ValueError, match="stride=4 .* allows 32, 16, 8"):
        keras_vgg.fully_convolutional(model, stride=4)
    # A last pool that is not a 2x2-strided pool: no offsets to run.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(2, 1)(inputs))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(x)
    x = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    strided = keras.Model(inputs, x)
    assert fully_conv.score_map_strides(strided) == (4,)
    assert fully_conv.check_stride(strided, None) == 4
    with pytest.raises(ValueError, match="stride=2 .* allows 4 "):
        keras_vgg.fully_convolutional(strided, stride=2)


def test_strided_model_round_trips(tmp_path):
    fcn = keras_vgg.fully_convolutional(tiny_vgg(), average=True, stride=16)
    assert fcn.name == "vgg11_fcn_s16"
    path = str(tmp_path / "fcn16.keras")
    fcn.save(path)
    loaded = keras.saving.load_model(path)
    x = images(1, 80)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)),
                               ops.convert_to_numpy(fcn(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="Image size 31x31 .* 32x32"):
        loaded(images(1, 31))


def test_run_takes_the_networks_own_stride_by_default():
    # A chain with three pools has its own stride 8: a default of 32 would
    # refuse it.
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for _ in range(3):
        x = keras.layers.MaxPooling2D(2)(
            keras.layers.Conv2D(2, 3, padding="same")(x))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    run = runs.from_model(keras.Model(inputs, outputs), name="three_pools")
    assert fully_conv.score_map_strides(run.model)[0] == 8
    fcn = run.fully_convolutional(True)
    assert fcn is run.fully_convolutional(True, 8)
    assert fcn.output.shape[-1] == 3
    with pytest.raises(ValueError, match="--dense_stride=32 is not a "
                       "score-map stride of model 'three_pools'"):
        run.fully_convolutional(True, 32, "--dense_stride")
