import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vgg import preprocessing
from pipelines import augment


def _smooth(h, w, seed=0):
    """Gradients and a few soft blobs: JPEG keeps them nearly exact and
    resampling them at slightly shifted positions changes little."""
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    r = np.random.RandomState(seed)
    channels = []
    for _ in range(3):
        a, b, c = r.uniform(2, 6, 3)
        channels.append(127 + 60 * np.sin(a * ys + b * xs)
                        + 60 * np.cos(c * xs * ys * 4))
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def _encode(image, fmt="JPEG", **kw):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _example(encoded, label=3, boxes=None):
    boxes = np.zeros([0, 4]) if boxes is None else np.asarray(boxes)
    return {"encoded": tf.constant(encoded), "label": tf.constant(label,
                                                                  tf.int64),
            "bbox": tf.constant(boxes, tf.float32)}


def _windows(shapes, scale_min, scale_max, crop, seed=7):
    """Draws windows for many (h, w) at once, in one tf.data pass."""
    shapes = np.asarray(shapes, np.int32)
    ds = tf.data.Dataset.from_tensor_slices(shapes).enumerate().map(
        lambda i, hw: augment.sample_crop_window(
            hw[0], hw[1], scale_min, scale_max, crop,
            seed=augment.example_seed(seed, i))._asdict())
    batch = next(iter(ds.batch(len(shapes))))
    return {k: v.numpy() for k, v in batch.items()}


def test_rescaled_smallest_side_is_s_and_s_spans_the_range():
    r = np.random.RandomState(0)
    shapes = r.randint(150, 900, size=(2000, 2))
    w = _windows(shapes, 256, 512, 224)
    h_new, w_new = w["rescaled_height"], w["rescaled_width"]
    np.testing.assert_array_equal(np.minimum(h_new, w_new), w["scale"])
    # Isotropic: the aspect ratio is kept up to rounding the long side.
    long_side = np.where(shapes[:, 0] <= shapes[:, 1], w_new, h_new)
    expected = w["scale"] * shapes.max(1) / shapes.min(1)
    assert np.abs(long_side - expected).max() <= 0.5 + 1e-6
    # S uniform over [256, 512]: each quarter holds about a quarter.
    s = w["scale"]
    assert s.min() >= 256 and s.max() <= 512
    assert s.min() < 262 and s.max() > 506
    quarters = np.histogram(s, bins=[256, 320, 384, 448, 513])[0] / len(s)
    np.testing.assert_allclose(quarters, 0.25, atol=0.04)
    # The crop lies inside the rescaled image ...
    assert (w["offset_y"] >= 0).all() and (w["offset_x"] >= 0).all()
    assert (w["offset_y"] + 224 <= h_new).all()
    assert (w["offset_x"] + 224 <= w_new).all()
    # ... and so does its window in original pixels: the same square
    # (side crop * min(H, W) / S, corner offset * min(H, W) / S), rounded.
    ratio = shapes.min(1) / s
    np.testing.assert_allclose(w["window_size"], 224 * ratio, atol=0.5)
    for axis, name in ((0, "y"), (1, "x")):
        start = w[f"window_{name}"]
        assert (start >= 0).all()
        assert (start + w["window_size"] <= shapes[:, axis]).all()
        np.testing.assert_allclose(start, w[f"offset_{name}"] * ratio,
                                   atol=1.0)


def test_fixed_scale_and_bad_arguments():
    w = _windows([(300, 400), (500, 200)] * 20, 256, 256, 224)
    assert (w["scale"] == 256).all()
    assert set(w["rescaled_height"]) == {256, 640}
    with pytest.raises(ValueError, match="crop=300"):
        augment.sample_crop_window(400, 400, 256, 512, 300)
    with pytest.raises(ValueError, match="scale_max=200"):
        augment.sample_crop_window(400, 400, 256, 200, 224)
    with pytest.raises(ValueError, match="mode"):
        augment.train_map(_example(_encode(_smooth(40, 40))), 32, 32, 32,
                          preprocessing="bgr")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_train_map_output_shape_for_each_format(fmt):
    encoded = _encode(_smooth(90, 120), fmt)
    image, label = augment.train_map(_example(encoded), 64, 96, 56, seed=1)
    assert image.shape == (56, 56, 3) and image.dtype == tf.float32
    assert int(label) == 3


@pytest.mark.parametrize("shape, scales", [
    ((300, 410), (256, 512)),   # downscaled and upscaled crops
    ((181, 150), (160, 200)),   # upscaled only
])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_fast_path_equals_decode_crop_resize(shape, scales, fmt):
    # Noise, not a smooth image: any misplaced or wrongly decoded pixel
    # would show.
    noise = np.random.RandomState(1).randint(0, 256, shape + (3,), np.uint8)
    encoded = _encode(noise, fmt)
    full = tf.io.decode_image(encoded, channels=3)
    for seed in range(5):
        w = augment.sample_crop_window(*shape, *scales, 128, seed=[5, seed])
        y, x, n = int(w.window_y), int(w.window_x), int(w.window_size)
        # decode_and_crop_jpeg of the window decodes the full decode's pixels
        pixels, window = augment.decode_window(
            tf.constant(encoded),
            lambda h, x: augment.sample_crop_window(
                h, x, *scales, 128, seed=[5, seed]))  # noqa: B023 (called now)
        np.testing.assert_array_equal(pixels, full[y:y + n, x:x + n])
        # ... so the output is decode -> crop -> resize, exactly.
        fast, _ = augment.train_map(_example(encoded), *scales, 128, "none",
                                    0.0, seed=[5, seed], flip=False)
        np.testing.assert_array_equal(
            fast, tf.image.resize(full[y:y + n, x:x + n], [128, 128]))


def test_fast_path_is_close_to_rescale_then_crop():
    # Rounding the window to whole pixels shifts the sampling grid by under
    # half an original pixel: on a smooth image, a small change.
    encoded = _encode(_smooth(300, 410), quality=95)
    for seed in range(4):
        w = augment.sample_crop_window(300, 410, 256, 512, 224,
                                       seed=[5, seed])
        fast, _ = augment.train_map(_example(encoded), 256, 512, 224, "none",
                                    0.0, seed=[5, seed], flip=False)
        slow = augment.reference_crop(encoded, w, 224)
        assert np.abs(fast - slow).mean() < 2.0


def _red_box_image(h=120, w=160, box=(30, 40, 90, 100)):
    image = np.full((h, w, 3), 255, np.uint8)
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = (255, 0, 0)
    return image, [(y0 / h, x0 / w, y1 / h, x1 / w)]


def test_crop_boxes_hand_made_case():
    # A 50 x 50 window at (10, 40) of a 100 x 200 image.
    window = augment.CropWindow(
        scale=0, image_height=100, image_width=200, rescaled_height=0,
        rescaled_width=0, offset_y=0, offset_x=0, window_y=10, window_x=40,
        window_size=50)
    boxes = [(0.2, 0.1, 0.6, 0.3),    # y 20..60, x 20..60
             (0.1, 0.75, 0.4, 0.95)]  # x 150..190: outside the window
    moved = augment.crop_boxes(tf.constant(boxes), window)
    np.testing.assert_allclose(moved, [(0.2, 0.0, 1.0, 0.4)], atol=1e-6)
    flipped = augment.crop_boxes(tf.constant(boxes), window, flip=True)
    np.testing.assert_allclose(flipped, [(0.2, 0.6, 1.0, 1.0)], atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_box_follows_crop_and_flip(fmt):
    image, boxes = _red_box_image()
    encoded = _encode(image, fmt, **({"quality": 98} if fmt == "JPEG" else {}))
    flips = set()
    for seed in range(8):
        out, _, moved = augment.train_map_with_bbox(
            _example(encoded, boxes=boxes), 96, 96, 64, "none", 0.0,
            seed=[0, seed])
        flips.add(bool(augment.sample_flip([0, seed])))
        red = (out[..., 0] > 200) & (out[..., 1] < 60)
        if not red.numpy().any():
            assert moved.shape[0] == 0
            continue
        rows = np.flatnonzero(red.numpy().any(1))
        cols = np.flatnonzero(red.numpy().any(0))
        found = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / 64
        np.testing.assert_allclose(moved.numpy()[0], found, atol=2.5 / 64)
    assert flips == {True, False}


def test_flip_happens_half_the_time_and_mirrors_the_same_crop():
    flips = tf.data.Dataset.range(1000).map(
        lambda i: augment.sample_flip(augment.example_seed(3, i)))
    rate = np.mean(list(flips.batch(1000).as_numpy_iterator())[0])
    assert 0.45 < rate < 0.55
    example = _example(_encode(_smooth(100, 130)))
    seen = set()
    for seed in range(6):
        kwargs = dict(scale_min=64, scale_max=96, crop=48, seed=[3, seed])
        with_flip, _ = augment.train_map(example, flip=True, **kwargs)
        without, _ = augment.train_map(example, flip=False, **kwargs)
        flipped = bool(augment.sample_flip([3, seed]))
        seen.add(flipped)
        expected = tf.image.flip_left_right(without) if flipped else without
        np.testing.assert_array_equal(with_flip, expected)
    assert seen == {True, False}


def test_lighting_alpha_statistics():
    alphas = tf.data.Dataset.range(4000).map(
        lambda i: augment.sample_lighting_alpha(0.1,
                                                augment.example_seed(9, i)))
    a = next(iter(alphas.batch(4000))).numpy()
    assert np.abs(a.mean(0)).max() < 4 * 0.1 / np.sqrt(len(a))
    np.testing.assert_allclose(a.std(0), 0.1, rtol=0.06)
    corr = np.corrcoef(a.T)
    assert np.abs(corr - np.eye(3)).max() < 0.08


def test_lighting_shift_is_eigvec_times_alpha_eigval():
    encoded = _encode(_smooth(24, 24))
    eigval = np.array([0.2175, 0.0188, 0.0045])
    eigvec = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]])

    def shift(i):
        seed = augment.example_seed(4, i)
        example = _example(encoded)
        lit, _ = augment.train_map(example, 16, 24, 16, "none", 0.1, seed)
        plain, _ = augment.train_map(example, 16, 24, 16, "none", 0.0, seed)
        return lit - plain, augment.sample_lighting_alpha(0.1, seed)

    n = 400
    diffs, alphas = next(iter(
        tf.data.Dataset.range(n).map(shift).batch(n)))
    diffs, alphas = diffs.numpy(), alphas.numpy()
    # One RGB shift per image, the same at every pixel ...
    per_image = diffs.reshape(n, -1, 3)
    assert np.abs(per_image - per_image[:, :1]).max() < 1e-3
    shifts = per_image[:, 0]
    # ... equal to 255 * eigvec @ (alpha * eigval), computed independently.
    np.testing.assert_allclose(shifts, 255 * (alphas * eigval) @ eigvec.T,
                               atol=1e-3)
    # Its covariance is that of alpha ~ N(0, 0.1) pushed through the PCA.
    expected = 255**2 * eigvec @ np.diag((0.1 * eigval) ** 2) @ eigvec.T
    assert np.abs(shifts.mean(0)).max() < 4 * np.sqrt(expected[0, 0] / n)
    values, vectors = np.linalg.eigh(np.cov(shifts.T))
    np.testing.assert_allclose(values[-1], 255**2 * (0.1 * eigval[0]) ** 2,
                               rtol=0.2)
    assert abs(vectors[:, -1] @ eigvec[:, 0]) > 0.99


def test_preprocessing_modes_call_keras_vgg():
    example = _example(_encode(_smooth(50, 50)))
    kwargs = dict(scale_min=40, scale_max=48, crop=32, pca_lighting_std=0.1,
                  seed=[1, 1])
    raw, _ = augment.train_map(example, preprocessing="none", **kwargs)
    for mode in ("caffe", "torch"):
        out, _ = augment.train_map(example, preprocessing=mode, **kwargs)
        np.testing.assert_allclose(
            out, preprocessing.apply(raw.numpy(), mode), atol=1e-4)


def test_eval_map_central_crop_and_whole_image():
    encoded = _encode(_smooth(200, 300), quality=95)
    image, label = augment.eval_map(_example(encoded), 128, 112, "none")
    assert image.shape == (112, 112, 3) and int(label) == 3
    window = augment.central_crop_window(200, 300, 128, 112)
    assert (int(window.rescaled_height), int(window.rescaled_width)) == (
        128, 192)
    assert (int(window.offset_y), int(window.offset_x)) == (8, 40)
    slow = augment.reference_crop(encoded, window, 112)
    assert np.abs(image - slow).mean() < 2.0
    whole, _ = augment.eval_map(_example(encoded), 128, None, "none")
    assert whole.shape == (128, 192, 3)
    boxes = [(0.0, 0.0, 1.0, 0.5)]
    _, _, moved = augment.eval_map(_example(encoded, boxes=boxes), 128, None,
                                   "none", with_bbox=True)
    np.testing.assert_allclose(moved, boxes)


def _examples_dataset(n=12):
    encoded = [_encode(_smooth(60 + 5 * i, 80, seed=i)) for i in range(n)]
    return tf.data.Dataset.from_tensor_slices({
        "encoded": encoded, "label": np.arange(n, dtype=np.int64),
        "bbox": np.zeros([n, 0, 4], np.float32)})


def test_make_dataset_is_deterministic_with_a_seed():
    source = _examples_dataset()

    def batches(seed):
        ds = augment.make_dataset(source, True, 4, scale=(40, 56), crop=32,
                                  seed=seed, deterministic=True,
                                  shuffle_buffer=12, repeat=True)
        return [b for b in ds.take(6).as_numpy_iterator()]  # two epochs

    a, b, c = batches(1), batches(1), batches(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    assert all(x.shape == (4, 32, 32, 3) for x, _ in a)
    # Every epoch is a permutation of the data with new crops.
    first = np.concatenate([y for _, y in a[:3]])
    second = np.concatenate([y for _, y in a[3:]])
    assert sorted(first) == sorted(second) == list(range(12))


def test_make_dataset_skips_and_counts_bad_images():
    good = _encode(_smooth(40, 50))
    encoded = [good, good[:200], b"not an image", b"", good,
               _encode(_smooth(40, 50), "PNG")[:60]]
    source = tf.data.Dataset.from_tensor_slices({
        "encoded": encoded, "label": np.arange(6, dtype=np.int64),
        "bbox": np.zeros([6, 0, 4], np.float32)})
    counter = augment.SkipCounter()
    ds = augment.make_dataset(source, False, 2, scale=32, crop=32,
                              skip_counter=counter, deterministic=True,
                              with_bbox=True)
    labels = [y for _, y, _ in ds.as_numpy_iterator()]
    np.testing.assert_array_equal(np.concatenate(labels), [0, 4])
    assert counter.count == 4
    assert ds.skip_counter is counter
    counter.reset()
    assert counter.count == 0


@pytest.mark.parametrize("deterministic", [True, False])
def test_map_skipping_errors_counts_every_failure(deterministic):
    good = _encode(_smooth(8, 8))
    # Failures first, in the middle, in a row and last (the end sentinel).
    encoded = [b"bad", good, b"", b"x", good, good, b"bad", good, b"y"]
    counter = augment.SkipCounter()
    ds = augment.map_skipping_errors(
        tf.data.Dataset.from_tensor_slices(encoded).enumerate(),
        lambda i, e: (i, tf.io.decode_jpeg(e)), counter,
        deterministic=deterministic)
    seen = []
    for index, _ in ds:
        seen.append((int(index), counter.count))
    assert sorted(i for i, _ in seen) == [1, 4, 5, 7]
    assert counter.count == 5
    if deterministic:
        # In order, nothing is counted before it has failed: the count only
        # grows, and covers at least the failures before each element read
        # (the pipeline may have counted a few more, running ahead).
        counts = [c for _, c in seen]
        assert counts == sorted(counts)
        failures_before = {1: 1, 4: 3, 5: 3, 7: 4}
        assert all(c >= failures_before[i] for i, c in seen)
    list(ds)  # a second pass adds its own
    assert counter.count == 10


def test_a_run_of_failures_stops_the_pipeline():
    good = _encode(_smooth(8, 8))
    ds = augment.map_skipping_errors(
        tf.data.Dataset.from_tensor_slices([good] + [b"bad"] * 5 + [good]),
        tf.io.decode_jpeg, augment.SkipCounter(), max_consecutive_failures=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="in a row"):
        list(ds)


def test_pipeline_built_inside_a_strategy_scope():
    # A tf.Variable made there would be mirrored and unusable in tf.data.
    good = _encode(_smooth(40, 50))
    source = tf.data.Dataset.from_tensor_slices({
        "encoded": [good, b"bad", good], "label": np.arange(3, dtype=np.int64),
        "bbox": np.zeros([3, 0, 4], np.float32)})
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        counter = augment.SkipCounter()
        ds = augment.make_dataset(source, True, 1, scale=32, crop=32, seed=0,
                                  skip_counter=counter)
    assert len(list(strategy.experimental_distribute_dataset(ds))) == 2
    assert counter.count == 1


def test_make_dataset_arguments():
    source = _examples_dataset(2)
    with pytest.raises(ValueError, match="batch_size"):
        augment.make_dataset(source, False, 4, scale=32, crop=None)
    with pytest.raises(ValueError, match="scale"):
        augment.make_dataset(source, False, 1, scale=(32, 64))
    with pytest.raises(ValueError, match="crop"):
        augment.make_dataset(source, True, 1, scale=32, crop=None)
    ds = augment.make_dataset(source, True, 2, scale=(32, 48), crop=32,
                              with_bbox=True)
    images, labels, boxes = next(iter(ds))
    assert images.shape == (2, 32, 32, 3) and boxes.shape[-1] == 4


def test_deferred_pixel_ops_give_the_same_bits_per_batch():
    # The trainer's pipeline leaves flip, lighting and preprocessing to its
    # step (`defer_pixel_ops`); applied there to the batch, they must give
    # exactly the images of the ready pipeline, boxes included.
    source = _examples_dataset()
    for mode, with_bbox in (("caffe", False), ("torch", True)):
        kwargs = dict(scale=(40, 56), crop=32, seed=5, deterministic=True,
                      shuffle_buffer=12, preprocessing=mode,
                      with_bbox=with_bbox)
        ready = list(augment.make_dataset(source, True, 4, **kwargs))
        deferred = list(augment.make_dataset(source, True, 4,
                                             defer_pixel_ops=True, **kwargs))
        assert len(ready) == len(deferred) == 3
        flips = set()
        for r, d in zip(ready, deferred):
            ops = d[-1]
            assert len(d) == len(r) + 1
            assert ops["flip"].shape == (4,) and ops["shift"].shape == (4, 3)
            flips |= set(ops["flip"].numpy().tolist())
            finished = augment.finish_pixels(d[0], ops["flip"], ops["shift"],
                                             mode)
            np.testing.assert_array_equal(finished, r[0])
            # The crops arrive unflipped and unlit: not yet the images.
            assert not np.array_equal(d[0], r[0])
            for a, b in zip(r[1:], d[1:-1]):
                np.testing.assert_array_equal(a, b)
        assert flips == {True, False}
    with pytest.raises(ValueError, match="defer_pixel_ops"):
        augment.make_dataset(source, False, 4, scale=32, crop=32,
                             defer_pixel_ops=True)
