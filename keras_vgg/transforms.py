"""The evaluation transform each weight set was measured with, and one call
that applies it to image files or arrays of any size.

A pretrained VGG16 scores several points under its published accuracy when
images are squashed to 224x224, resized with another filter, or
preprocessed for the other weight set.  Like torchvision's
`weights.transforms()` and timm's data config, every weight set here names
its transform: resize the shorter side to `resize` (aspect kept), take the
central `crop` x `crop` window, apply the weights' preprocessing.

    x = keras_vgg.load_images(["cat.jpg", "dog.png"], weights="imagenet")
    preds = keras_vgg.VGG16(weights="imagenet").predict(x)

Resizing is `keras.ops.image.resize` (bilinear, antialiased), so it runs on
any Keras backend.  The other side is rounded half to even and the crop
offset floored, as the training pipeline and the test protocols do; the
torchvision weights (`tv_in1k`) use torchvision's own rounding instead
(`rounding="torchvision"`): the long side truncated, `int(size * long /
short)`, and the crop offset `int(round((h - crop) / 2))`, as
`torchvision.transforms.functional` computes them.

Files, encoded bytes, PIL images and arrays of any dtype are turned into RGB
pixels by the rules of `keras_vgg.pixels` (EXIF orientation, 16-bit levels,
alpha, float ranges).
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from keras_vgg import checks
from keras_vgg import pixels
from keras_vgg import preprocessing
from keras_vgg import weights as weights_lib

# torchvision's IMAGENET1K_V1 transforms and keras.applications' usage:
# shorter side 256, central 224 crop (the paper's single-scale Q = 256 for
# S = 256), bilinear.
_RESIZE, _CROP = 256, 224
ROUNDINGS = ("half_even", "torchvision")


def rescaled_size(height: int, width: int, q: int) -> tuple[int, int]:
    """(H', W') with the smaller side `q` and the aspect ratio kept, the
    other side rounded half to even."""
    height, width, q = int(height), int(width), int(q)
    if height <= width:
        return q, int(np.round(width * q / height))
    return int(np.round(height * q / width)), q


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to `resize`, central `crop` window, then the
    `preprocessing` ("caffe", "torch" or "none").

    `rounding`: "half_even" (the long side rounded half to even, the crop
    offset floored: the test protocols) or "torchvision" (long side
    truncated, offset rounded: torchvision's `Resize` and `CenterCrop`).
    """
    resize: int = _RESIZE
    crop: int = _CROP
    interpolation: str = "bilinear"
    antialias: bool = True
    preprocessing: str = "caffe"
    rounding: str = "half_even"

    def __post_init__(self):
        preprocessing.check_mode(self.preprocessing)
        if not 1 <= self.crop <= self.resize:
            raise ValueError(f"EvalTransform needs 1 <= crop <= resize. "
                             f"Received: crop={self.crop}, "
                             f"resize={self.resize}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"Unknown `rounding`={self.rounding!r}. "
                             f"Expected one of {ROUNDINGS}.")

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') an image of (height, width) is resized to."""
        if self.rounding == "half_even":
            return rescaled_size(height, width, self.resize)
        # torchvision.transforms.functional._compute_resized_output_size.
        short, long = sorted((int(height), int(width)))
        new_long = int(self.resize * long / short)
        return ((self.resize, new_long) if height <= width
                else (new_long, self.resize))

    def crop_offsets(self, height: int, width: int) -> tuple[int, int]:
        """(top, left) of the central crop in an image of (height, width)."""
        if self.rounding == "half_even":
            return (height - self.crop) // 2, (width - self.crop) // 2
        # torchvision.transforms.functional.center_crop.
        return (int(round((height - self.crop) / 2.0)),
                int(round((width - self.crop) / 2.0)))

    def to_pixels(self, image, name="`image`") -> np.ndarray:
        """Any image `load_images` takes -> uint8 RGB (H, W, 3) (see
        `keras_vgg.pixels`); a JPEG is decoded at reduced size when it will
        be shrunk."""
        if isinstance(image, (str, os.PathLike)):
            return pixels.read(image, repr(os.fspath(image)),
                               self.resized_size)
        if pixels.is_encoded(image) or pixels.is_pil_image(image):
            return pixels.read(image, name, self.resized_size)
        if not (isinstance(image, np.ndarray) or hasattr(image, "__array__")):
            raise TypeError(
                f"{name} is a {type(image).__name__}; expected a path, "
                "encoded image bytes, a PIL image or an array.")
        return pixels.to_rgb(image, name)

    def __call__(self, image, name="`image`") -> np.ndarray:
        """One image (a path, encoded bytes, a PIL image, or an array:
        (H, W, 3) RGB, (H, W) grayscale; uint8, uint16 or float, see
        `keras_vgg.pixels`) -> the preprocessed (crop, crop, 3) float32
        array."""
        image = self.to_pixels(image, name)
        h, w = self.resized_size(image.shape[0], image.shape[1])
        x = keras.ops.image.resize(
            image.astype("float32")[None], (h, w),
            interpolation=self.interpolation, antialias=self.antialias)
        top, left = self.crop_offsets(h, w)
        x = x[:, top:top + self.crop, left:left + self.crop, :]
        x = preprocessing.apply(x, self.preprocessing)
        return np.asarray(keras.ops.convert_to_numpy(x)[0], "float32")


def eval_transform(weights: str | None = "imagenet",
                   crop: int | None = None) -> EvalTransform:
    """The evaluation transform a weight set carries (`WeightSet.eval_*`
    and its preprocessing); for a weight file or None, 256 / 224 bilinear
    with the file's preprocessing.  A `crop` other than the set's scales
    the resize with it (256 * crop / 224)."""
    if crop is not None:
        crop = checks.check_positive_int(crop, "crop")
    sets = [w for w in weights_lib.WEIGHT_SETS.values() if w.name == weights]
    resize, base, interpolation, rounding = (
        (sets[0].eval_resize, sets[0].eval_crop, sets[0].eval_interpolation,
         sets[0].eval_rounding) if sets
        else (_RESIZE, _CROP, "bilinear", "half_even"))
    crop = int(crop or base)
    return EvalTransform(resize=int(round(resize * crop / base)), crop=crop,
                         interpolation=interpolation,
                         preprocessing=weights_lib.preprocessing_for(weights),
                         rounding=rounding)


def _is_one_image(images):
    if isinstance(images, (str, os.PathLike)) or pixels.is_encoded(images) \
            or pixels.is_pil_image(images):
        return True
    return isinstance(images, np.ndarray) and images.ndim in (2, 3)


def load_images(images, weights: str | None = "imagenet",
                transform: EvalTransform | None = None) -> np.ndarray:
    """Images of any sizes and kinds -> one batch the network takes.

    Args:
        images: one image or a list of them (sizes and kinds may differ):
            a path, encoded bytes (JPEG, PNG, BMP, ...), a PIL image, or an
            array (H, W, 3) / (H, W) of uint8, uint16 or float; or an
            (N, H, W, 3) array.  EXIF orientation is applied, 16-bit levels
            become 8-bit (`>> 8`), alpha is dropped and float arrays in
            [0, 1] are scaled by 255: the rules of `keras_vgg.pixels`.
        weights: the weight set the model uses; picks the transform.
        transform: an `EvalTransform` instead of the weight set's.

    Returns:
        float32 (N, crop, crop, 3), preprocessed for the weights.

    Raises:
        ValueError, TypeError: naming the file or `images[i]` that is not
            an image, or whose shape, dtype or values are refused.
    """
    transform = transform or eval_transform(weights)
    if _is_one_image(images):
        images = [images]
    elif not isinstance(images, (list, tuple, np.ndarray)):
        raise TypeError(f"`images` is a {type(images).__name__}; expected "
                        "an image or a list of images.")
    out = [transform(item, f"`images[{i}]`") for i, item in enumerate(images)]
    if not out:
        raise ValueError("`images` is empty.")
    return np.stack(out)
