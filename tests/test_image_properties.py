"""Image loading and decoding over drawn inputs (hypothesis): sizes (1 pixel,
very elongated), modes, bit depths, EXIF orientations, formats and array
dtypes, for `keras_vgg.load_images` / `EvalTransform` and for the served
SavedModel's decode (`export.dense.DenseClassifier.decode`, run directly in
TensorFlow)."""

import io
import types

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from PIL import Image
from PIL import ImageOps

import keras_vgg
from export import dense
from keras_vgg import pixels

FAST = settings(max_examples=20, deadline=None)
# Small: the pixels as decoded (no resize) and a tiny resize + crop.
_NO_RESIZE = keras_vgg.EvalTransform(resize=512, crop=1, preprocessing="none")
_SMALL = keras_vgg.EvalTransform(resize=8, crop=6, preprocessing="none")

sizes = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    # Very elongated, 1 pixel on one side included.
    st.tuples(st.integers(1, 2), st.integers(20, 60)),
    st.tuples(st.integers(20, 60), st.integers(1, 2)))

# The modes each format writes (PIL's writers; JPEG has no alpha, palette
# or 16-bit; BMP no 16-bit).
_FORMAT_MODES = {"PNG": ("1", "L", "LA", "RGB", "RGBA", "P", "I;16"),
                 "JPEG": ("L", "RGB"),
                 "BMP": ("1", "L", "P", "RGB", "RGBA")}
format_modes = st.sampled_from(
    [(f, m) for f, modes in _FORMAT_MODES.items() for m in modes])


@st.composite
def pil_images(draw, mode=None):
    """A PIL image of a drawn size in `mode` (drawn when None)."""
    mode = mode or draw(st.sampled_from(
        ("1", "L", "LA", "RGB", "RGBA", "P", "I;16")))
    h, w = draw(sizes)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.RandomState(seed)
    if mode == "I;16":
        return Image.fromarray(rng.randint(0, 65536, (h, w)).astype(
            np.uint16))
    rgba = Image.fromarray(rng.randint(0, 256, (h, w, 4)).astype(np.uint8),
                           "RGBA")
    if mode == "P":
        image = rgba.convert("RGB").quantize(8)
        if draw(st.booleans()):
            image.info["transparency"] = 0
        return image
    return rgba.convert(mode)


def _encoded(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _reference(data):
    """The PIL pipeline the rules in `keras_vgg.pixels` describe, written
    out: EXIF applied, 16-bit levels >> 8, alpha dropped, gray repeated."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode.startswith("I;16"):
        gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.stack([gray] * 3, -1)
    return np.asarray(image.convert("RGBA"))[..., :3]


@FAST
@given(format_modes, st.data())
def test_files_decode_as_the_pil_reference(format_mode, data):
    fmt, mode = format_mode
    encoded = _encoded(data.draw(pil_images(mode)), fmt)
    got = _NO_RESIZE.to_pixels(encoded)
    assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[-1] == 3
    # JPEG too is exact: the same decoder (no draft, nothing is shrunk).
    np.testing.assert_array_equal(got, _reference(encoded))


# EXIF orientation -> the displayed image, written out from the EXIF
# specification (0th IFD tag 0x0112) as numpy operations on the stored one.
_ORIENT = {
    1: lambda x: x,
    2: lambda x: x[:, ::-1],
    3: lambda x: x[::-1, ::-1],
    4: lambda x: x[::-1],
    5: lambda x: x.transpose(1, 0, 2),
    6: lambda x: np.rot90(x, -1),
    7: lambda x: x[::-1, ::-1].transpose(1, 0, 2),
    8: lambda x: np.rot90(x, 1),
}


@FAST
@given(sizes, st.integers(1, 8), st.sampled_from(["JPEG", "PNG"]),
       st.integers(0, 2**16))
def test_exif_orientation_is_applied(size, orientation, fmt, seed):
    # Random pixels: asymmetric, so a wrong flip or rotation shows.
    stored = np.random.RandomState(seed).randint(
        0, 256, size + (3,)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    encoded = _encoded(Image.fromarray(stored), fmt, exif=exif,
                       **({"quality": 95} if fmt == "JPEG" else {}))
    got = _NO_RESIZE.to_pixels(encoded)
    decoded = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    np.testing.assert_array_equal(got, _ORIENT[orientation](decoded))
    np.testing.assert_array_equal(got, _reference(encoded))


@FAST
@given(sizes, st.sampled_from(["uint8", "uint16", "float32", "float64",
                               "int64"]),
       st.booleans(), st.integers(0, 2**16))
def test_arrays_by_dtype(size, dtype, gray, seed):
    rng = np.random.RandomState(seed)
    shape = size if gray else size + (3,)
    levels = rng.randint(0, 256, shape).astype(np.uint8)
    if dtype == "uint16":
        # Any low byte: it is dropped.
        array = ((levels.astype(np.uint16) << 8) +
                 rng.randint(0, 256, shape).astype(np.uint16))
    elif dtype.startswith("float"):
        array = levels.astype(dtype) / 255.0  # matplotlib.imread's [0, 1]
    else:
        array = levels.astype(dtype)
    got = _NO_RESIZE.to_pixels(array)
    want = np.stack([levels] * 3, -1) if gray else levels
    np.testing.assert_array_equal(got, want)


@FAST
@given(st.one_of(
    format_modes.flatmap(lambda fm: pil_images(fm[1]).map(
        lambda image: _encoded(image, fm[0]))),
    pil_images()),
    st.sampled_from(["none", "caffe"]))
def test_transform_output_shape_dtype_and_range(image, mode):
    transform = keras_vgg.EvalTransform(resize=8, crop=6, preprocessing=mode)
    got = transform(image)
    assert got.shape == (6, 6, 3) and got.dtype == np.float32
    if mode == "caffe":
        got = (got + np.float32(keras_vgg.preprocessing.CAFFE_MEAN_BGR))[
            ..., ::-1]
    # Bilinear antialiased weights are non-negative and sum to 1.
    assert got.min() >= -1e-3 and got.max() <= 255 + 1e-3


# Sides in whole 8x8 blocks: a partial last block is decoded scaled as a
# whole one, which shifts the grid by a part of a block; negligible on a
# photograph's thousands of pixels, not on these few dozen.
@settings(max_examples=10, deadline=None)
@given(st.integers(2, 8).map(lambda n: 8 * n),
       st.integers(2, 8).map(lambda n: 8 * n), st.integers(0, 2**16))
def test_jpeg_drafted_at_reduced_size_is_close_to_full_decode(h, w, seed):
    rng = np.random.RandomState(seed)
    # Smooth colour ramps (at most 2 levels a pixel), as photographs mostly
    # are at this scale.
    yy, xx = np.mgrid[0:h, 0:w].astype("float64")
    a, b = rng.uniform(0, 2, (2, 3))
    image = np.clip(a * xx[..., None] + b * yy[..., None], 0, 255).astype(
        np.uint8)
    encoded = _encoded(Image.fromarray(image), "JPEG", quality=95)
    got = _SMALL(encoded)
    full = _SMALL(np.asarray(Image.open(io.BytesIO(encoded))))
    # The DCT-domain downscale (1/2 to 1/8) averages 2x2 to 8x8 blocks where
    # the antialiased bilinear resize uses a triangle of a similar width;
    # the two sample grids may differ by up to half an input pixel, which
    # on a ramp of 2 levels a pixel, plus JPEG's own rounding, stays within
    # a few levels out of 255.
    np.testing.assert_allclose(got, full, atol=4.0)


@FAST
@given(st.one_of(
    st.tuples(st.integers(1, 5), st.integers(1, 5),
              st.sampled_from([5, 6, 8])).map(np.zeros),
    st.integers(1, 5).map(lambda n: np.zeros((n,))),
    st.integers(1, 5).map(lambda n: np.zeros((n, n, 3, 1)))))
def test_arrays_of_other_shapes_are_refused(array):
    with pytest.raises(ValueError, match=r"`images\[0\]` has shape"):
        keras_vgg.load_images([array], transform=_SMALL)


@FAST
@given(st.floats(255.01, 1e30) | st.floats(-1e30, -0.01),
       st.sampled_from(["float32", "float64"]))
def test_floats_out_of_range_are_refused(value, dtype):
    array = np.full((3, 3, 3), 128, dtype)
    array[1, 1, 1] = value
    with pytest.raises(ValueError, match=r"expected values in \[0.0, 255.0\]"):
        _SMALL.to_pixels(array)


@FAST
@given(st.binary(max_size=64))
def test_bytes_that_are_no_image_are_refused(data):
    with pytest.raises(ValueError, match="`image`"):
        _SMALL(data)


# -- the served model's decode ----------------------------------------------

# `DenseClassifier.decode` reads only its size checks from the instance:
# limits wide enough for the drawn sizes (elongated ones included).
_LIMITS = types.SimpleNamespace(check_size=lambda size: dense.check_size(
    size, dense.MAX_PIXELS, 100.0))


def _serving_decode(encoded):
    return dense.DenseClassifier.decode(_LIMITS, tf.constant(encoded)).numpy()


# TensorFlow's BMP decoder refuses 1-bit images: left out here.
_SERVED_FORMAT_MODES = st.sampled_from(
    [(f, m) for f, modes in _FORMAT_MODES.items() for m in modes
     if (f, m) != ("BMP", "1")])


@FAST
@given(_SERVED_FORMAT_MODES, st.data())
def test_serving_decode_agrees_with_load_images(format_mode, data):
    fmt, mode = format_mode
    encoded = _encoded(data.draw(pil_images(mode)), fmt)
    got = _serving_decode(encoded)
    want = _NO_RESIZE.to_pixels(encoded)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.min() >= 0 and got.max() <= 255
    if fmt == "JPEG":
        # Two builds of libjpeg(-turbo), each with its own IDCT and chroma
        # upsampling rounding: they differ by a few levels, never more.
        np.testing.assert_allclose(got, want, atol=8)
    else:
        np.testing.assert_array_equal(got, want)


@FAST
@given(st.binary(max_size=64))
def test_serving_decode_refuses_bytes_that_are_no_image(data):
    with pytest.raises(tf.errors.InvalidArgumentError):
        _serving_decode(data)


def test_serving_decode_refuses_an_image_beyond_the_limits():
    tall = _encoded(Image.new("RGB", (1, 200)), "PNG")
    limits = types.SimpleNamespace(check_size=lambda size: dense.check_size(
        size, 10_000, 10.0))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="200x1 .* max_aspect_ratio=10"):
        dense.DenseClassifier.decode(limits, tf.constant(tall))
    assert pixels.read(tall, "tall").shape == (200, 1, 3)


def test_serving_decode_looks_up_a_bmp_palette():
    rgb = np.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype(
        np.uint8)
    encoded = _encoded(Image.fromarray(rgb).quantize(16), "BMP")
    np.testing.assert_array_equal(_serving_decode(encoded),
                                  _reference(encoded))
