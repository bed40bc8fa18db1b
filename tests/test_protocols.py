"""The test protocols of section 3.2 against hand-computed averages, with
the per-view probabilities computed by calling the model directly."""

import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from keras_vgg import preprocessing as vgg_preprocessing
from pipelines import protocols
from tests.tiny_run import CROP
from tests.tiny_run import pixels
from tests.tiny_run import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


@pytest.fixture(scope="module")
def fcn(model):
    return keras_vgg.fully_convolutional(model, average=True)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def run(model, views):
    """The model on raw RGB views (V, h, w, 3), caffe-preprocessed."""
    x = vgg_preprocessing.apply(np.asarray(views, np.float32), "caffe")
    return np.asarray(model(x, training=False))


def resized(image, q):
    h, w = protocols.rescaled_size(image.shape[0], image.shape[1], q)
    return tf.image.resize(image[None], [h, w], antialias=True)[0].numpy()


def test_rescaled_size_keeps_aspect_and_smallest_side():
    assert protocols.rescaled_size(300, 400, 256) == (256, 341)
    assert protocols.rescaled_size(400, 300, 256) == (341, 256)
    assert protocols.rescaled_size(50, 50, 32) == (32, 32)
    assert protocols.rescale(pixels(40, 60), 32).shape == (1, 32, 48, 3)


def test_dense_at_q_equals_crop_is_single_crop(model, fcn):
    # A square image rescaled to Q = crop: the central crop is the whole
    # image and the score map a single position.
    image = pixels(48, 48)
    single = protocols.single_crop(model, image, CROP)
    close(protocols.dense(fcn, image, CROP, flip=False), single)
    close(single, run(model, resized(image, CROP)[None]))
    assert single.shape == (1, 4)
    close(single.sum(), 1.0)


def test_single_crop_rescales_raw_pixels_then_preprocesses(model):
    image = pixels(45, 60, seed=1)
    r = resized(image, 40)                      # 40 x 53
    y0, x0 = (40 - CROP) // 2, (53 - CROP) // 2
    close(protocols.single_crop(model, image, 40),
          run(model, r[None, y0:y0 + CROP, x0:x0 + CROP]))
    # The same network with the preprocessing inside gets raw pixels.
    inside = keras_vgg.VGG("A", width_multiplier=0.125,
                           input_shape=(CROP, CROP, 3), classes=4,
                           dropout=0.0, include_preprocessing=True)
    inside.set_weights(model.get_weights())
    close(protocols.single_crop(inside, image, 40, preprocessing="none"),
          protocols.single_crop(model, image, 40))


def test_dense_flip_averages_image_and_mirror(model, fcn):
    image = pixels(40, 40, seed=2)
    r = resized(image, CROP)
    expected = (run(model, r[None]) + run(model, r[None, :, ::-1])) / 2
    close(protocols.dense(fcn, image, CROP), expected)
    # A larger image: the mean of the averaged-score softmax of both.
    image = pixels(41, 57, seed=3)
    r = resized(image, 48)
    x = vgg_preprocessing.apply(np.stack([r, r[:, ::-1]]), "caffe")
    both = np.asarray(fcn(x, training=False))
    close(protocols.dense(fcn, image, 48), both.mean(axis=0, keepdims=True))
    close(protocols.dense(fcn, image, 48, flip=False), both[:1])


def test_dense_batch_of_same_size_images_is_per_image(fcn):
    images = np.stack([pixels(36, 44, seed=s) for s in range(3)])
    batch = protocols.dense(fcn, images, 40)
    assert batch.shape == (3, 4)
    for i in range(3):
        close(batch[i:i + 1], protocols.dense(fcn, images[i], 40))


def test_crop_grid_is_a_regular_5x5_grid():
    corners = protocols.crop_grid(256, 320, 224)
    assert len(corners) == 25
    assert corners[0] == (0, 0) and corners[-1] == (256 - 224, 320 - 224)
    ys = sorted({y for y, _ in corners})
    xs = sorted({x for _, x in corners})
    assert ys == [0, 8, 16, 24, 32] and xs == [0, 24, 48, 72, 96]
    assert corners[:5] == [(0, x) for x in xs]          # row-major
    assert protocols.crop_grid(224, 224, 224) == [(0, 0)] * 25
    assert protocols.crop_grid(40, 41, 32, n=1) == [(4, 4)]
    # Uneven steps are rounded; every box is inside the image.
    for y, x in protocols.crop_grid(37, 250, 32):
        assert 0 <= y <= 5 and 0 <= x <= 218
    with pytest.raises(ValueError, match="larger"):
        protocols.crop_grid(30, 100, 32)


def test_multi_crop_averages_50_views(model):
    image = pixels(44, 52, seed=4)
    r = resized(image, 40)                      # 40 x 47
    crops = [r[y:y + CROP, x:x + CROP]
             for y, x in protocols.crop_grid(40, 47, CROP)]
    views = np.stack(crops + [c[:, ::-1] for c in crops])
    assert len(views) == 50
    close(protocols.multi_crop(model, image, 40),
          run(model, views).mean(0)[None])
    close(protocols.multi_crop(model, image, 40, flip=False),
          run(model, views[:25]).mean(0)[None])
    # Batching the views differently changes nothing.
    close(protocols.multi_crop(model, image, 40, batch_size=7),
          protocols.multi_crop(model, image, 40))


def test_multi_scale_combined_and_ensemble_are_averages(model, fcn):
    image = pixels(50, 42, seed=5)
    d = {q: protocols.dense(fcn, image, q) for q in (32, 40, 48)}
    close(protocols.multi_scale(lambda q: protocols.dense(fcn, image, q),
                                [32, 40, 48]),
          (d[32] + d[40] + d[48]) / 3)
    m = protocols.multi_crop(model, image, 40)
    close(protocols.combined(fcn, model, image, 40), (d[40] + m) / 2)
    other = tiny_model(1)
    other_fcn = keras_vgg.fully_convolutional(other, average=True)
    close(protocols.ensemble(lambda f: protocols.dense(f, image, 40),
                             [fcn, other_fcn]),
          (d[40] + protocols.dense(other_fcn, image, 40)) / 2)
    with pytest.raises(ValueError):
        protocols.multi_scale(lambda q: d[q], [])


def test_bad_inputs_raise_clear_errors(model, fcn):
    image = pixels(40, 40)
    with pytest.raises(ValueError, match="Q=30 is smaller than the crop"):
        protocols.single_crop(model, image, 30)
    with pytest.raises(ValueError, match="Q=30"):
        protocols.multi_crop(model, image, 30)
    with pytest.raises(ValueError, match="Q=30"):
        protocols.dense(fcn, image, 30)
    with pytest.raises(ValueError, match="fully_convolutional"):
        protocols.dense(model, image, 40)
    score_map = keras_vgg.fully_convolutional(model)
    with pytest.raises(ValueError, match="average=True"):
        protocols.dense(score_map, image, 40)
    with pytest.raises(ValueError, match="Flatten/Dense head"):
        protocols.single_crop(fcn, image, 40)
    with pytest.raises(ValueError, match="crop=24"):
        protocols.single_crop(model, image, 40, crop=24)
    with pytest.raises(ValueError, match="RGB"):
        protocols.dense(fcn, np.zeros((40, 40)), 40)
