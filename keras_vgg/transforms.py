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
any Keras backend; the other side is rounded half to even, as the training
pipeline and the test protocols round it.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from keras_vgg import checks
from keras_vgg import preprocessing
from keras_vgg import weights as weights_lib

# torchvision's IMAGENET1K_V1 transforms and keras.applications' usage:
# shorter side 256, central 224 crop (the paper's single-scale Q = 256 for
# S = 256), bilinear.
_RESIZE, _CROP = 256, 224


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
    `preprocessing` ("caffe", "torch" or "none")."""
    resize: int = _RESIZE
    crop: int = _CROP
    interpolation: str = "bilinear"
    antialias: bool = True
    preprocessing: str = "caffe"

    def __post_init__(self):
        preprocessing.check_mode(self.preprocessing)
        if not 1 <= self.crop <= self.resize:
            raise ValueError(f"EvalTransform needs 1 <= crop <= resize. "
                             f"Received: crop={self.crop}, "
                             f"resize={self.resize}")

    def __call__(self, image) -> np.ndarray:
        """One RGB image (H, W, 3), pixels in [0, 255] -> the
        preprocessed (crop, crop, 3) float32 array."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError("Expected an RGB image (H, W, 3). Received shape "
                             f"{image.shape}")
        h, w = rescaled_size(image.shape[0], image.shape[1], self.resize)
        x = keras.ops.image.resize(
            image.astype("float32")[None], (h, w),
            interpolation=self.interpolation, antialias=self.antialias)
        top, left = (h - self.crop) // 2, (w - self.crop) // 2
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
    resize, base, interpolation = ((sets[0].eval_resize, sets[0].eval_crop,
                                    sets[0].eval_interpolation) if sets
                                   else (_RESIZE, _CROP, "bilinear"))
    crop = int(crop or base)
    return EvalTransform(resize=int(round(resize * crop / base)), crop=crop,
                         interpolation=interpolation,
                         preprocessing=weights_lib.preprocessing_for(weights))


def _read(path):
    # Pillow is an optional dependency of keras_vgg (the `train` extra):
    # imported where a file is read, not when the package is.
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("Reading image files needs Pillow (pip install "
                         "pillow); or pass arrays.") from None
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"Cannot read the image {os.fspath(path)!r}: "
                         f"{e}") from e


def load_images(images, weights: str | None = "imagenet",
                transform: EvalTransform | None = None) -> np.ndarray:
    """Image files or arrays of any sizes -> one batch the network takes.

    Args:
        images: a path, an (H, W, 3) array, or a list of them (sizes may
            differ).
        weights: the weight set the model uses; picks the transform.
        transform: an `EvalTransform` instead of the weight set's.

    Returns:
        float32 (N, crop, crop, 3), preprocessed for the weights.
    """
    transform = transform or eval_transform(weights)
    if isinstance(images, (str, os.PathLike)) or (
            isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]
    out = [transform(_read(item) if isinstance(item, (str, os.PathLike))
                     else item) for item in images]
    if not out:
        raise ValueError("`images` is empty.")
    return np.stack(out)
