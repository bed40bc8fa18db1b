"""keras_vgg.load_images: the weight set's evaluation transform, the same
numbers as the single-crop test protocol (torchvision's own rounding for the
torchvision weights), on the images people have.  Invariants over drawn
images are in test_image_properties.py."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import JpegImagePlugin

import keras_vgg
from pipelines import protocols

# The pixels themselves: no resize (resize == crop == the image's side), no
# preprocessing.
_IDENTITY = keras_vgg.EvalTransform(resize=8, crop=8, preprocessing="none")


def _pixels(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(
        "uint8")


def test_files_and_arrays_of_any_size(tmp_path):
    weights, mode = "imagenet", "caffe"
    tall, wide = _pixels(300, 260, 1), _pixels(240, 400, 2)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    batch = keras_vgg.load_images([tall, str(tmp_path / "wide.png")],
                                  weights=weights)
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32
    for image, got in zip((tall, wide), batch):
        # The single-crop protocol at Q = 256: rescale, central crop, then
        # the weights' preprocessing.
        want = protocols.preprocess(protocols.central_crop(
            protocols.rescale(image, 256), 224), mode).numpy()[0]
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_transform_of_a_weight_set_and_errors(tmp_path):
    assert keras_vgg.eval_transform("imagenet") == keras_vgg.EvalTransform(
        resize=256, crop=224, preprocessing="caffe")
    assert keras_vgg.eval_transform("tv_in1k", crop=64).resize == 73
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        keras_vgg.load_images(str(tmp_path / "bad.jpg"))
    with pytest.raises(ValueError, match="RGB"):
        keras_vgg.load_images(np.zeros((10, 10, 5)))
    with pytest.raises(ValueError, match="weights"):
        keras_vgg.load_images(_pixels(10, 10), weights="nope")


# torchvision.transforms.functional, as written from knowledge of its source
# (torchvision is not installed here and its source could not be consulted):
# `_compute_resized_output_size` for an int size keeps the shorter side and
# truncates the other, `int(size * long / short)`; `center_crop` places the
# crop at `int(round((image_height - crop_height) / 2.0))` (Python's round,
# half to even), likewise for the width.
def _torchvision_resized_size(h, w, size):
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def _torchvision_crop_offsets(h, w, crop):
    return int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))


def test_tv_in1k_rounds_as_torchvision():
    transform = keras_vgg.eval_transform("tv_in1k")
    assert transform.rounding == "torchvision"
    # 240x400: 426.67 -> 426 (half to even would give 427); 426 - 224 = 202
    # and 427 - 224 = 203: round(101.5) = 102, where floor gives 101.
    for h, w in [(240, 400), (400, 240), (300, 260), (225, 511), (1, 9)]:
        size = transform.resized_size(h, w)
        assert size == _torchvision_resized_size(h, w, 256), (h, w)
        assert transform.crop_offsets(*size) == _torchvision_crop_offsets(
            *size, 224), (h, w)
    assert transform.crop_offsets(427, 256) == (102, 16)
    assert keras_vgg.eval_transform("imagenet").resized_size(240, 400) == (
        256, 427)


def test_tv_in1k_load_images_matches_the_torchvision_pipeline():
    image = _pixels(240, 403, 3)
    got = keras_vgg.load_images(image, weights="tv_in1k")[0]
    h, w = _torchvision_resized_size(240, 403, 256)
    assert (h, w) == (256, 429)  # 429.87: half to even would give 430
    top, left = _torchvision_crop_offsets(h, w, 224)
    x = tf.image.resize(image[None].astype("float32"), (h, w),
                        method="bilinear", antialias=True)
    x = x[:, top:top + 224, left:left + 224]
    want = protocols.preprocess(x, "torch").numpy()[0]
    np.testing.assert_allclose(got, want, atol=2e-3)


def _encoded(image, fmt="PNG", **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_of_a_phone_photo(tmp_path):
    stored = _pixels(6, 8, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display rotates 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    got = _IDENTITY.to_pixels(str(path))
    assert got.shape == (8, 6, 3)
    decoded = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(got, np.rot90(decoded, k=-1))


def test_sixteen_bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    levels = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    path = tmp_path / "depth.png"
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode == "I;16"
    want = np.repeat((levels >> 8).astype(np.uint8)[..., None], 3, -1)
    np.testing.assert_array_equal(_IDENTITY.to_pixels(str(path)), want)
    # The same levels as TensorFlow's decoder gives the pipeline and the
    # served model.
    np.testing.assert_array_equal(
        want, tf.io.decode_image(path.read_bytes(), channels=3).numpy())
    # The same as the 16-bit array itself.
    np.testing.assert_array_equal(_IDENTITY.to_pixels(levels), want)


def test_float_arrays_in_zero_one_are_scaled():
    image = _pixels(8, 8, 5)
    as_float = image.astype("float32") / 255.0  # matplotlib.imread of a PNG
    np.testing.assert_array_equal(_IDENTITY.to_pixels(as_float), image)
    np.testing.assert_array_equal(
        _IDENTITY.to_pixels(image.astype("float64")), image)
    np.testing.assert_allclose(keras_vgg.load_images(as_float),
                               keras_vgg.load_images(image), atol=1e-3)


def test_kinds_of_input_give_the_same_pixels(tmp_path):
    rgb = _pixels(8, 8, 6)
    gray = rgb[..., 0]
    pil = Image.fromarray(rgb)
    kinds = [pil, _encoded(pil), _encoded(pil, "BMP"),
             bytearray(_encoded(pil)), rgb.astype(np.int64),
             np.dstack([rgb, rgb[..., :1]]),  # RGBA array: alpha dropped
             Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA")]
    for kind in kinds:
        np.testing.assert_array_equal(_IDENTITY.to_pixels(kind), rgb)
    for kind in [gray, gray[..., None], Image.fromarray(gray),
                 Image.fromarray(np.dstack([gray, gray]), "LA")]:
        np.testing.assert_array_equal(_IDENTITY.to_pixels(kind),
                                      np.dstack([gray] * 3))
    batch = keras_vgg.load_images(pil, transform=_IDENTITY)
    assert batch.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(batch[0], rgb)
    np.testing.assert_array_equal(
        keras_vgg.load_images(_encoded(pil), transform=_IDENTITY), batch)


def test_palette_with_transparency_keeps_the_palette_colours():
    rgb = _pixels(8, 8, 7)
    paletted = Image.fromarray(rgb).quantize(16)
    paletted.info["transparency"] = 3
    data = _encoded(paletted)
    got = _IDENTITY.to_pixels(data)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))[..., :3]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        got, tf.io.decode_image(data, channels=3).numpy())


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path, monkeypatch):
    # Smooth content: what the DCT downscale and the antialiased resize
    # agree on; a photograph's fine detail differs a little more.
    yy, xx = np.mgrid[0:1200, 0:1600].astype("float32")
    image = np.stack([xx / 1600 * 255, yy / 1200 * 255,
                      (xx + yy) / 2800 * 255], -1).astype(np.uint8)
    path = tmp_path / "large.jpg"
    Image.fromarray(image).save(path, quality=95)
    decoded_sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    got = keras_vgg.load_images(str(path), weights=None)
    # 1200x1600 -> 256x341: 1/4 scale (300x400) is the smallest not below.
    assert decoded_sizes == [(400, 300)]
    full = keras_vgg.load_images(np.asarray(Image.open(path)), weights=None)
    np.testing.assert_allclose(got, full, atol=4.0)
    assert np.abs(got - full).mean() < 0.5


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((100, 300), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"bomb\.png.*30000 pixels"):
        keras_vgg.load_images(str(path))


@pytest.mark.parametrize("images,error,match", [
    (42, TypeError, "`images` is a int"),
    ([_pixels(8, 8), {"a": 1}], TypeError, r"`images\[1\]` is a dict"),
    (np.zeros((8, 8, 3), bool), TypeError, "dtype bool"),
    (np.zeros((8, 8, 5), np.uint8), ValueError, r"shape \(8, 8, 5\)"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "no pixels"),
    (b"", ValueError, "empty bytes"),
    (b"GIF89a garbage", ValueError, r"Cannot read the image `images\[0\]`"),
    (np.full((8, 8, 3), 300.0), ValueError, r"\[0.0, 255.0\]"),
    (np.full((8, 8, 3), -1), ValueError, r"\[0, 255\]"),
    (np.full((8, 8, 3), np.nan), ValueError, "NaN"),
])
def test_refused_inputs_name_the_problem(images, error, match):
    with pytest.raises(error, match=match):
        keras_vgg.load_images(images, transform=_IDENTITY)
