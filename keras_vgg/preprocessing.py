"""Input preprocessing for each weight set.

Two conventions exist for VGG weights:

- "caffe": the Oxford weights (and `keras.applications.VGG16/VGG19`): RGB->BGR,
  then subtract the ImageNet mean pixel [103.939, 116.779, 123.68] (BGR), no
  scaling.  This is the paper's "subtract the mean RGB value".
- "torch": the torchvision weights (timm `*.tv_in1k`): scale to [0, 1],
  subtract (0.485, 0.456, 0.406), divide by (0.229, 0.224, 0.225).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import backend
from keras import ops

from keras_vgg import weights as weights_lib

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
MODES = ("caffe", "torch", "none")

# A numpy array or a tensor of the Keras backend.
Tensor = Any


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(
            f"Unknown preprocessing `mode`={mode!r}. Expected one of {MODES}."
        )
    return mode


def _channel_axis(x, data_format):
    data_format = data_format or backend.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}"
        )
    if len(x.shape) not in (3, 4):
        raise ValueError(
            "Expected an image (H, W, C) or a batch (N, H, W, C). Received "
            f"an input of shape {tuple(x.shape)}"
        )
    axis = -1 if data_format == "channels_last" else len(x.shape) - 3
    if x.shape[axis] != 3:
        raise ValueError(
            "Preprocessing expects 3 RGB channels on axis "
            f"{axis} ({data_format}). Received shape {tuple(x.shape)}"
        )
    return axis


def _broadcast(values, ndim, axis):
    shape = [1] * ndim
    shape[axis] = 3
    return np.asarray(values, "float32").reshape(shape)


def apply(x, mode, data_format=None):
    """Applies preprocessing `mode` to `x` (numpy array or backend tensor)."""
    check_mode(mode)
    is_numpy = isinstance(x, np.ndarray) or not hasattr(x, "shape")
    if is_numpy:
        x = np.asarray(x)
        x = x.astype("float32") if x.dtype != np.float64 else x
    else:
        if not backend.is_float_dtype(backend.standardize_dtype(x.dtype)):
            x = ops.cast(x, "float32")
    if mode == "none":
        return x
    axis = _channel_axis(x, data_format)
    ndim = len(x.shape)

    def const(values):
        c = _broadcast(values, ndim, axis)
        return c.astype(x.dtype) if is_numpy else ops.cast(c, x.dtype)

    if mode == "caffe":
        flipped = np.flip(x, axis=axis) if is_numpy else ops.flip(x, axis=axis)
        return flipped - const(CAFFE_MEAN_BGR)
    return (x / 255.0 - const(TORCH_MEAN)) / const(TORCH_STD)


def preprocess_input(x: Tensor, weights: str | None = "imagenet",
                     mode: str | None = None,
                     data_format: str | None = None) -> Tensor:
    """Preprocesses RGB images in [0, 255] for a VGG weight set.

    Args:
        x: numpy array or tensor, (H, W, 3) or (N, H, W, 3) (channels last).
        weights: the weight set the model was loaded with: "imagenet"
            (default, as keras.applications), "tv_in1k", or None.  Ignored
            when `mode` is given.
        mode: "caffe", "torch" or "none", overriding `weights`.
        data_format: "channels_last" (default) or "channels_first".

    Returns:
        A float array of the same shape (numpy in, numpy out).

    Example:
    >>> import keras_vgg
    >>> x = np.full((1, 224, 224, 3), 128.0)
    >>> keras_vgg.preprocess_input(x)[0, 0, 0].round(3)  # BGR, mean removed
    array([24.061, 11.221,  4.32 ])
    """
    if mode is None:
        mode = weights_lib.preprocessing_for(weights)
    return apply(x, mode, data_format)
