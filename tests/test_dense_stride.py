"""The dense protocols with a finer score map (`--dense_stride`) and the
dense protocol's fast path (one graph per network, the image and its flip
in one call, the FC head as matrix products) against straightforward
numpy computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from export import saved_model
from keras_vgg import cost
from keras_vgg import runs
from pipelines import entry
from pipelines import evaluate
from pipelines import localize
from pipelines import protocols
from tests.tiny_run import pixels
from tests.tiny_run import write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(str(tmp_path_factory.mktemp("runs") / "run"), seed=3)


def straightforward_dense(model, image, q, stride, flip=True):
    """Dense evaluation written out: eager calls of the body, one per view,
    the last pool at its offsets, the head and the averages in numpy."""
    fcn = keras_vgg.fully_convolutional(model)
    body = keras.Model(fcn.inputs, fcn.get_layer("block5_conv2").output)
    kernels = [model.get_layer(n).get_weights()
               for n in ("fc1", "fc2", "predictions")]
    x = tf.image.resize(image[None], protocols.rescaled_size(
        image.shape[0], image.shape[1], q), antialias=True)
    views = [x, x[:, :, ::-1]] if flip else [x]
    probabilities = []
    for view in views:
        features = np.asarray(body(keras_vgg.preprocess_input(
            np.asarray(view))))[0]
        rows = (view.shape[1] - 32) // stride + 1
        cols = (view.shape[2] - 32) // stride + 1
        step = stride // 16     # a position every `step` conv5 rows
        logits = []
        for i in range(rows):
            for j in range(cols):
                h = features[step * i:step * i + 2,
                             step * j:step * j + 2].max(axis=(0, 1))
                for k, (kernel, bias) in enumerate(kernels):
                    h = h @ kernel + bias
                    h = np.maximum(h, 0) if k < 2 else h
                logits.append(h)
        mean = np.mean(logits, axis=0)
        p = np.exp(mean - mean.max())
        probabilities.append(p / p.sum())
    return np.mean(probabilities, axis=0)


@pytest.mark.parametrize("stride", [32, 16])
def test_dense_is_the_straightforward_computation(run, stride):
    _, model = run
    fcn = keras_vgg.fully_convolutional(model, average=True, stride=stride)
    image = pixels(45, 70, seed=1)
    for q in (32, 48):
        fast = protocols.dense(fcn, image, q)[0]
        np.testing.assert_allclose(
            fast, straightforward_dense(model, image, q, stride), rtol=1e-4,
            atol=1e-6)


@pytest.mark.slow
def test_evaluate_dense_stride(run):
    directory, model = run
    images = [np.floor(pixels(36 + 7 * i, 60 - 5 * i, seed=i))
              for i in range(3)]
    dataset = tf.data.Dataset.from_tensor_slices({
        "encoded": [tf.io.encode_png(i.astype(np.uint8)).numpy()
                    for i in images],
        "label": np.array([0, 1, 2], np.int64),
        "bbox": np.zeros((3, 0, 4), np.float32)})
    result, = evaluate.evaluate(directory, dataset, "dense", scales=[40, 56],
                                dense_stride=16)
    assert result["dense_stride"] == 16
    probs = [np.mean([straightforward_dense(model, i, q, 16)
                      for q in (40, 56)], axis=0) for i in images]
    top1 = evaluate.topk_correct(probs, [0, 1, 2], 1)
    assert result["top1_error"] == pytest.approx(1 - top1.mean())
    fcn = keras_vgg.fully_convolutional(model, average=True, stride=16)
    macs = np.mean([sum(2 * cost.count_graph_macs(
        fcn, protocols.rescaled_size(i.shape[0], i.shape[1], q) + (3,))
        for q in (40, 56)) for i in images])
    assert result["gmacs_per_image"] * 1e9 == pytest.approx(macs)
    table = evaluate.format_results([result])
    assert "dense (stride 16)" in table


def test_an_unsupported_stride_is_one_error_naming_the_flag(run):
    directory, _ = run
    with pytest.raises(ValueError) as raised:
        evaluate.cli([f"--model={directory}", "--protocol=dense",
                      "--dense_stride=4"])
    line = entry.error_line(raised.value)
    assert line.startswith("error: --dense_stride=4 is not a score-map "
                           "stride of model") and "allows 32, 16, 8" in line
    assert "\n" not in line
    loaded = runs.load_classifier(directory)
    with pytest.raises(ValueError, match="--dense_stride=12"):
        loaded.fully_convolutional(True, 12, "--dense_stride")
    # One network per stride, made once.
    assert loaded.fully_convolutional(True, 16) is \
        loaded.fully_convolutional(True, 16)
    assert loaded.fully_convolutional(True, 16) is not loaded.fcn


@pytest.mark.slow
def test_dense_boxes_at_stride_16():
    # A localiser whose every window predicts the whole window: on a 64x64
    # image with 32-pixel windows, stride 16 gives 3x3 windows 16 apart
    # (overlapping by at most half: none merged).
    model = keras_vgg.VGGLocalizer("A", regression="scr", classes=3,
                                   input_shape=(32, 32, 3),
                                   width_multiplier=0.125)
    layer = model.get_layer("boxes")
    kernel, _ = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel),
                       np.array([.5, .5, 1., 1.], "float32")])
    loc = runs.from_model(model, name="const").with_q(32)
    clf = keras_vgg.fully_convolutional(
        keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=3,
                      width_multiplier=0.125), stride=16)
    image = np.zeros((64, 64, 3), "float32")
    boxes, scores = localize.dense_boxes([loc], [clf], image, [64], [0],
                                         stride=16)[0]
    expected = {(i / 4, j / 4, i / 4 + .5, j / 4 + .5)
                for i in range(3) for j in range(3)}
    assert {tuple(np.round(b, 6)) for b in boxes} == expected
    assert len(scores) == 9


@pytest.mark.slow
def test_saved_model_records_and_uses_its_stride(run, tmp_path):
    directory, model = run
    path = str(tmp_path / "sm16")
    saved_model.export_saved_model(directory, path, q=40, dense_stride=16)
    served = tf.saved_model.load(path)
    assert int(served.dense_stride.numpy()) == 16
    image = np.floor(pixels(45, 70, seed=2))
    out = served.signatures["predict_images"](images=tf.constant(image[None]))
    expected = protocols.dense(keras_vgg.fully_convolutional(
        model, average=True, stride=16), image, 40)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected,
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="--dense_stride=4 is not"):
        saved_model.export_saved_model(directory, str(tmp_path / "sm4"),
                                       dense_stride=4)
