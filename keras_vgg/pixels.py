"""The images people have -> RGB uint8 pixels (H, W, 3), one rule each.

`keras_vgg.load_images` and `keras_vgg.EvalTransform` take files, encoded
bytes, PIL images and arrays.  Each kind is turned into 8-bit RGB here, by
rules chosen to agree with what TensorFlow's `tf.io.decode_image(...,
channels=3)` gives the training pipeline and the served SavedModel for the
same file:

- EXIF orientation (phone photos) is applied (`PIL.ImageOps.exif_transpose`).
- 16-bit levels become 8-bit by dropping the low byte (`value >> 8`, as
  libpng's strip-16 in TensorFlow's PNG decoder): 65535 -> 255, 32768 -> 128.
- Alpha is dropped, the colour kept as stored (RGBA, LA, PA, and P with a
  transparent palette entry), as `decode_image(channels=3)` drops it; no
  compositing over a background.
- Grayscale (2-D arrays, (H, W, 1), L, I;16) is repeated into R, G and B.
- Float arrays whose values all lie in [0, 1] (`matplotlib.pyplot.imread`
  of a PNG, `skimage`, `tf.image.convert_image_dtype`) are scaled by 255;
  other float arrays are taken as [0, 255].  Values outside [0, 255], NaN
  and infinity are refused.
- Other integer arrays must hold values in [0, 255].

A file larger than PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`,
raised to refusal at twice that by PIL) is refused; a JPEG that will be
shrunk is decoded at reduced size (`Image.draft`: 1/2, 1/4 or 1/8 scale,
never below the size it will be resized to), which bounds memory and time.
"""

from __future__ import annotations

import io

import numpy as np

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _pil():
    # Pillow is an optional dependency of keras_vgg (the `train` extra):
    # imported where a file is read, not when the package is.
    try:
        from PIL import Image
        from PIL import ImageOps
    except ImportError:
        return None, None
    return Image, ImageOps


def is_pil_image(item) -> bool:
    Image, _ = _pil()
    return Image is not None and isinstance(item, Image.Image)


def is_encoded(item) -> bool:
    return isinstance(item, (bytes, bytearray, memoryview))


def _from_pil(image, resized_size=None):
    """A PIL image -> uint8 (H, W, 3) by the module's rules; a JPEG that
    will be resized to `resized_size(h, w)` is decoded at reduced size."""
    _, ImageOps = _pil()
    if resized_size is not None and image.format == "JPEG":
        h, w = resized_size(image.size[1], image.size[0])
        # draft picks the largest DCT scale (1/2, 1/4, 1/8) that keeps both
        # sides >= (w, h), so the resize that follows still only shrinks,
        # as it would after a full decode; it does nothing when h, w are
        # not smaller than the image.
        image.draft("RGB", (w, h))
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        return to_rgb(np.asarray(image), "a PIL image of mode "
                      f"{image.mode!r}", sixteen_bit=image.mode != "F")
    if image.mode == "P" and "transparency" in image.info:
        # Through RGBA: PIL warns when a palette's transparency goes to RGB.
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def read(item, name, resized_size=None):
    """A path, encoded bytes or a PIL image -> uint8 (H, W, 3).

    Args:
        item: the image.
        name: how errors name it (the file, or the argument and index).
        resized_size: (height, width) -> the size the image will be
            resized to; a JPEG larger than that is decoded at reduced size.
    """
    Image, _ = _pil()
    if Image is None:
        raise ValueError(f"Reading {name} needs Pillow (pip install "
                         "pillow); or pass arrays.")
    if is_pil_image(item):
        # No draft: it would change the caller's image in place.
        return _from_pil(item)
    if is_encoded(item):
        if not len(item):
            raise ValueError(f"{name} is empty bytes, not an encoded image.")
        source = io.BytesIO(bytes(item))
    else:
        source = item
    try:
        with Image.open(source) as image:
            return _from_pil(image, resized_size)
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"Refusing {name}: {e} Raise PIL.Image.MAX_IMAGE_PIXELS to read "
            "it anyway.") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"Cannot read the image {name}: {e}") from e


def _check_range(x, name, low, high):
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite pixel values.")
    if x.size and (x.min() < low or x.max() > high):
        raise ValueError(
            f"{name} holds pixel values in [{x.min()}, {x.max()}]; expected "
            f"values in [{low}, {high}].")


def _levels(x, name, sixteen_bit):
    """Pixel values -> uint8 by the module's dtype rules."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or
                                   np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"{name} has dtype {x.dtype}; expected uint8, "
                        "uint16, another integer type or a float type.")
    if x.dtype == np.uint16 or (sixteen_bit and
                                np.issubdtype(x.dtype, np.integer)):
        _check_range(x, name, 0, 65535)
        return (x.astype(np.uint16) >> 8).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        _check_range(x, name, 0, 255)
        return x.astype(np.uint8)
    _check_range(x, name, 0.0, 255.0)
    if x.size and x.max() <= 1.0:
        x = x * 255.0
    return np.round(x).astype(np.uint8)


def to_rgb(array, name, sixteen_bit=False):
    """An array (H, W), (H, W, 1|2|3|4) -> uint8 (H, W, 3) by the module's
    rules; ValueError/TypeError naming `name` for what they refuse.

    `sixteen_bit`: integer values are 16-bit levels (PIL's "I" modes)."""
    x = np.asarray(array)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"{name} has shape {x.shape}; expected an RGB image (H, W, 3), "
            "grayscale (H, W) or (H, W, 1), or with alpha (H, W, 2|4).")
    if not x.shape[0] or not x.shape[1]:
        raise ValueError(f"{name} has shape {x.shape}: no pixels.")
    # Alpha dropped: the colour as stored (see the module docstring).
    x = x[..., :3] if x.shape[-1] == 4 else x[..., :1] if x.shape[-1] == 2 \
        else x
    x = _levels(x, name, sixteen_bit)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
