"""One builder for the six VGG networks of Table 1 (and their BN variants).

Layer names are those of keras.applications (`block1_conv1` ... `block5_pool`,
`flatten`, `fc1`, `fc2`, `predictions`) for every configuration, so the
Oxford weight files load by name; A-LRN adds `block1_lrn`, the BN variants
`blockB_convC_bn` and `blockB_convC_relu`, the head `fc1_dropout` and
`fc2_dropout`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
from keras import layers

from keras_vgg import checks
from keras_vgg import configs
from keras_vgg import weights as weights_lib
from keras_vgg.layers import LocalResponseNormalization
from keras_vgg.layers import MinimumImageSize
from keras_vgg.layers import Preprocessing

DEFAULT_SIZE = 224
MIN_SIZE = 32
POOLING = (None, "avg", "max")


def _check_input_shape(input_shape, input_tensor, include_top, weight_set,
                       has_weights):
    if input_shape is None and input_tensor is not None:
        shape = tuple(input_tensor.shape)
        input_shape = shape[1:] if len(shape) == 4 else shape
    if input_shape is None:
        input_shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), rank 3. "
            f"Received: input_shape={input_shape}"
        )
    h, w, c = input_shape
    if c is None or c < 1:
        raise ValueError(
            "`input_shape` needs a known, positive number of channels "
            f"(channels last). Received: input_shape={input_shape}"
        )
    if has_weights and c != 3:
        raise ValueError(
            "Pretrained weights take 3 input channels. Received: "
            f"input_shape={input_shape}"
        )
    for side in (h, w):
        if side is not None and side < MIN_SIZE:
            raise ValueError(
                f"Input size must be at least {MIN_SIZE}x{MIN_SIZE}. "
                f"Received: input_shape={input_shape}"
            )
    if include_top:
        if h is None or w is None:
            raise ValueError(
                "`include_top=True` (the Flatten head) needs a fixed input "
                f"size. Received: input_shape={input_shape}. Use "
                "`include_top=False` or `keras_vgg.fully_convolutional` for "
                "images of any size."
            )
        if weight_set is not None and (h, w) != (DEFAULT_SIZE, DEFAULT_SIZE):
            raise ValueError(
                f"With `weights`={weight_set.name!r} and `include_top=True`, "
                f"`input_shape` must be ({DEFAULT_SIZE}, {DEFAULT_SIZE}, 3). "
                f"Received: input_shape={input_shape}"
            )
    return input_shape


def VGG(config: str | configs.VGGConfig, include_top: bool = True,
        weights: str | os.PathLike | None = None,
        input_tensor: keras.KerasTensor | None = None,
        input_shape: tuple[int | None, int | None, int] | None = None,
        pooling: str | None = None, classes: int = 1000,
        classifier_activation: str | Callable | None = "softmax",
        batch_norm: bool = False, dropout: float = 0.5,
        include_preprocessing: bool = False, name: str | None = None,
        width_multiplier: float = 1.0) -> keras.Model:
    """Builds a VGG network of the paper's Table 1.

    Args:
        config: "A", "A-LRN", "B", "C", "D" or "E".
        include_top: whether to include the FC-4096, FC-4096, FC-classes head.
        weights: None (Glorot-uniform kernels, zero biases), a weight set
            name ("imagenet": Oxford weights, D and E; "tv_in1k": torchvision
            weights, A, B, D, E and their BN variants) or the path of a
            `.h5`, `.weights.h5` or `.safetensors` file, loaded by layer name.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: optional (height, width, channels); default
            (224, 224, 3).  At least 32x32.
        pooling: with `include_top=False`: None (4-D feature map), "avg" or
            "max" (global pooling to a 2-D tensor).
        classes: number of classes of the head.
        classifier_activation: activation of the last layer; None for logits.
        batch_norm: conv -> BatchNormalization -> ReLU variants.
        dropout: dropout rate after fc1 and fc2 (0.5 in the paper).
        include_preprocessing: put the weights' preprocessing in the model,
            so that it takes RGB pixels in [0, 255].
        name: model name; default "vgg16" etc.
        width_multiplier: scales every conv width and the FC width (4096),
            for small experiments; 1.0 is the paper's network.  Pretrained
            weights need 1.0.

    Returns:
        A functional `keras.Model`.

    Raises:
        TypeError: `include_top`, `batch_norm` or `include_preprocessing`
            not a bool, `classes` not an int.
        ValueError: an argument out of range, or weights that do not fit.

    Example (downloads the ImageNet weights, so not a doctest)::

        model = keras_vgg.VGG("D", weights="imagenet")
        model.count_params()  # 138357544
    """
    cfg = configs.get_config(config)
    include_top = checks.check_bool(include_top, "include_top")
    batch_norm = checks.check_bool(batch_norm, "batch_norm")
    include_preprocessing = checks.check_bool(include_preprocessing,
                                              "include_preprocessing")
    if keras.backend.image_data_format() != "channels_last":
        raise ValueError(
            "keras_vgg builds channels_last models; "
            "keras.backend.image_data_format() is "
            f"{keras.backend.image_data_format()!r}."
        )
    weight_set = None
    if weights is not None:
        if isinstance(weights, str) and weights in weights_lib.WEIGHT_NAMES:
            weight_set = weights_lib.get_weight_set(weights, cfg.name,
                                                    batch_norm)
        elif not weights_lib.is_weight_file(weights):
            raise ValueError(
                "The `weights` argument should be None (random "
                f"initialization), one of {list(weights_lib.WEIGHT_NAMES)} or "
                f"the path to an existing weight file. Received: "
                f"weights={weights!r}"
            )
    if pooling not in POOLING:
        raise ValueError(
            f"`pooling` must be one of {POOLING}. Received: pooling={pooling!r}"
        )
    classes = checks.check_positive_int(classes, "classes")
    if weight_set is not None and include_top and classes != weight_set.classes:
        raise ValueError(
            f"With `weights`={weight_set.name!r} and `include_top=True`, "
            f"`classes` must be {weight_set.classes}. Received: "
            f"classes={classes}"
        )
    if include_top and weights is not None and classifier_activation not in (
            None, "softmax", keras.activations.softmax):
        raise ValueError(
            "With pretrained weights, `classifier_activation` must be None or "
            "'softmax'. Received: "
            f"classifier_activation={classifier_activation!r}"
        )
    if not (isinstance(width_multiplier, (int, float))
            and 0 < width_multiplier <= 4):
        raise ValueError("`width_multiplier` must be in (0, 4]. Received: "
                         f"width_multiplier={width_multiplier!r}")
    if weight_set is not None and width_multiplier != 1.0:
        raise ValueError(
            "Published `weights` need width_multiplier=1.0. Received: "
            f"width_multiplier={width_multiplier}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"`dropout` must be in [0, 1). Received: dropout={dropout}")
    input_shape = _check_input_shape(input_shape, input_tensor, include_top,
                                     weight_set, weights is not None)

    if input_tensor is None:
        img_input = layers.Input(shape=input_shape, name="input_layer")
    elif keras.backend.is_keras_tensor(input_tensor):
        img_input = input_tensor
    else:
        img_input = layers.Input(tensor=input_tensor, shape=input_shape)

    x = img_input
    if None in input_shape[:2]:
        # A size known only when called: checked then (a static size was
        # checked above).
        x = MinimumImageSize((MIN_SIZE, MIN_SIZE), reason="five 2x2 pools",
                             name="minimum_image_size")(x)
    if include_preprocessing:
        x = Preprocessing(weights_lib.preprocessing_for(weight_set or weights),
                          name="preprocessing")(x)
    x = features(x, cfg, batch_norm, width_multiplier)
    if include_top:
        units = _scaled(configs.FC_UNITS, width_multiplier)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(units, activation="relu", name="fc1")(x)
        x = layers.Dropout(dropout, name="fc1_dropout")(x)
        x = layers.Dense(units, activation="relu", name="fc2")(x)
        x = layers.Dropout(dropout, name="fc2_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    inputs = (keras.utils.get_source_inputs(input_tensor)
              if input_tensor is not None else img_input)
    if name is None:
        name = cfg.alias + ("_bn" if batch_norm else "")
    model = keras.Model(inputs, x, name=name)

    if weight_set is not None:
        weights_lib.load_named(model, weight_set, include_top)
    elif weights is not None:
        report = weights_lib.load_weights(model, weights,
                                          skip_head=not include_top)
        weights_lib.warn_missing(report, weights)
    return model


def _scaled(width, multiplier):
    return max(1, int(round(width * multiplier)))


def features(x, config, batch_norm=False, width_multiplier=1.0):
    """Applies the five conv blocks of `config` to tensor `x`."""
    cfg = configs.get_config(config)
    for block, index, kernel, filters in cfg.convs:
        prefix = f"block{block}_conv{index}"
        x = layers.Conv2D(_scaled(filters, width_multiplier), kernel,
                          padding="same",
                          activation=None if batch_norm else "relu",
                          name=prefix)(x)
        if batch_norm:
            # torch's defaults, so torchvision BN weights give its outputs.
            x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9,
                                          name=prefix + "_bn")(x)
            x = layers.ReLU(name=prefix + "_relu")(x)
        if cfg.lrn and block == 1 and index == 1:
            x = LocalResponseNormalization(name="block1_lrn")(x)
        if index == len(cfg.blocks[block - 1]):
            x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return x


def _named(config, doc_name):
    def builder(include_top: bool = True,
                weights: str | os.PathLike | None = None,
                input_tensor: keras.KerasTensor | None = None,
                input_shape: tuple[int | None, int | None, int] | None = None,
                pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | Callable | None = "softmax",
                batch_norm: bool = False, dropout: float = 0.5,
                include_preprocessing: bool = False, name: str | None = None,
                width_multiplier: float = 1.0) -> keras.Model:
        return VGG(config, include_top=include_top, weights=weights,
                   input_tensor=input_tensor, input_shape=input_shape,
                   pooling=pooling, classes=classes,
                   classifier_activation=classifier_activation,
                   batch_norm=batch_norm, dropout=dropout,
                   include_preprocessing=include_preprocessing, name=name,
                   width_multiplier=width_multiplier)

    builder.__name__ = doc_name
    builder.__qualname__ = doc_name
    builder.__doc__ = (
        f"VGG configuration {config} of Table 1; same arguments as "
        f"`keras_vgg.VGG` but `config`.\n\n    Example::\n\n        model = "
        f"keras_vgg.{doc_name}(weights=None)\n"
    )
    return builder


VGG11 = _named("A", "VGG11")
VGG11LRN = _named("A-LRN", "VGG11LRN")
VGG13 = _named("B", "VGG13")
VGG16C = _named("C", "VGG16C")
VGG16 = _named("D", "VGG16")
VGG19 = _named("E", "VGG19")
