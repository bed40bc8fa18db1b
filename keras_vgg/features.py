"""VGG as a backbone: multi-level feature maps and the per-layer table.

`feature_extractor` turns any keras_vgg network (or a configuration name
and weights) into a model that takes images of any size and returns a dict
of named feature maps, by stage or by layer name, like timm's
`features_only` / `feature_info` and keras-hub's pyramid outputs:

    stage        output of                    stride  channels (VGG16)
    "block1"     block 1 before its pool        1       64
    "block2"     block 2 before its pool        2      128
    ...
    "block5"     block 5 before its pool       16      512
    "block1_pool" ... "block5_pool"  after the pool: stride 2 ... 32

The extractor is made of copies of the given model's layers (same
configuration, same weights, same names) on a new input of any size: its
outputs are exactly those layers' outputs, and the given model is left as it
was (calling its own layers again would give them a second graph node, and
the chain walks of `fully_convolutional` and `count_macs` would then refuse
the model).

`layer_table` is what every VGG study shows: per layer, the output shape,
activation memory, parameters, multiply-accumulates and receptive field
(for VGG16 at 224: the first two convolutions hold most of the activation
memory, the first FC layer most of the parameters).

Example::

    fx = keras_vgg.feature_extractor("D", stages=["block3", "block4"],
                                     weights="imagenet")
    maps = fx(images)                    # {"block3": ..., "block4": ...}
    [f.stride for f in keras_vgg.feature_info(fx)]   # [4, 8]
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import layers as keras_layers

from keras_vgg import chain as chain_lib
from keras_vgg import checks
from keras_vgg import cost
from keras_vgg import layers as vgg_layers
from keras_vgg import vgg

NUM_BLOCKS = 5
STAGES = tuple([f"block{i}" for i in range(1, NUM_BLOCKS + 1)]
               + [f"block{i}_pool" for i in range(1, NUM_BLOCKS + 1)])
_BODY_END = "block5_pool"


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One output of a feature extractor.

    Attributes:
        name: its key in the output dict (a stage or a layer name).
        layer: the layer whose output it is.
        channels: feature channels.
        stride: input pixels per feature-map position (the reduction).
    """
    name: str
    layer: str
    channels: int
    stride: int


def _body(model):
    """The model's layers up to and including block5_pool, in order."""
    chain = chain_lib.layer_chain(model, "feature_extractor")
    names = [layer.name for layer in chain]
    if _BODY_END not in names:
        raise ValueError(f"Model {model.name!r} has no {_BODY_END!r} layer: "
                         "feature_extractor needs a keras_vgg network.")
    return chain[:names.index(_BODY_END) + 1]


def _stage_layers(body):
    """{stage: layer name}: "blockN" is the layer before blockN_pool."""
    names = [layer.name for layer in body]
    stages = {}
    for i in range(1, NUM_BLOCKS + 1):
        pool = names.index(f"block{i}_pool")
        stages[f"block{i}"] = names[pool - 1]
        stages[f"block{i}_pool"] = names[pool]
    return stages


def _as_list(value, argument):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise ValueError(f"`{argument}` must be a name or a list of names. "
                         f"Received: {argument}={value!r}") from None


def _requested(body, layers, stages):
    """[(output name, layer name)] in network order."""
    stage_layers = _stage_layers(body)
    layer_names = [layer.name for layer in body]
    wanted = []
    for stage in _as_list(stages, "stages"):
        if stage not in stage_layers:
            raise ValueError(f"Unknown stage {stage!r} in `stages`. Expected "
                             f"some of {list(STAGES)}.")
        wanted.append((stage, stage_layers[stage]))
    for name in _as_list(layers, "layers"):
        if name not in layer_names:
            raise ValueError(f"Unknown layer {name!r} in `layers`. Expected "
                             f"some of {layer_names}.")
        wanted.append((name, name))
    if not wanted:  # default: every block before its pool
        wanted = [(f"block{i}", stage_layers[f"block{i}"])
                  for i in range(1, NUM_BLOCKS + 1)]
    order = {name: i for i, name in enumerate(layer_names)}
    return sorted(dict(wanted).items(), key=lambda item: order[item[1]])


def feature_extractor(model: keras.Model | str = "D",
                      layers: str | list[str] | None = None,
                      stages: str | list[str] | None = None,
                      weights: str | None = None, batch_norm: bool = False,
                      name: str | None = None,
                      dtype: str | None = None) -> keras.Model:
    """A model returning a dict of named feature maps of a VGG.

    Args:
        model: a keras_vgg network (classifier, localiser or headless, any
            width, BN or not), or a Table 1 configuration name ("A".."E")
            to build with `weights` and `batch_norm`.
        layers: layer names to return (`"block4_conv3"`, ...).
        stages: stages to return: "block1".."block5" (a block's output
            before its pool) or "block1_pool".."block5_pool" (after it).
        weights: with a configuration name: as `keras_vgg.VGG`.
        batch_norm: with a configuration name: the BN variant.
        name: the extractor's name.
        dtype: a dtype policy for the extractor's layers (e.g. "float32" for
            a model built under a mixed policy); default the model's own.

    With neither `layers` nor `stages`: the five blocks before their pools.

    Returns:
        A keras.Model taking (N, H, W, C) images of any size at least the
        stride of its deepest output (32 for block5; a smaller one raises
        ValueError, `keras_vgg.layers.MinimumImageSize`),
        C the model's input channels (3 for a configuration name), and
        returning {name: feature map}; `feature_info(extractor)` gives
        each output's channels and stride.

    Raises:
        TypeError: `model` neither a keras.Model nor a name, `batch_norm`
            not a bool.
        ValueError: an unknown layer or stage, or a model that is not a
            keras_vgg network; a configuration name or weights that
            `keras_vgg.VGG` refuses.
    """
    batch_norm = checks.check_bool(batch_norm, "batch_norm")
    if isinstance(model, str):
        model = vgg.VGG(model, include_top=False, weights=weights,
                        batch_norm=batch_norm, input_shape=(None, None, 3))
    elif not isinstance(model, keras.Model):
        raise TypeError("`model` must be a keras_vgg network (keras.Model) "
                        "or a configuration name such as 'D'. Received: "
                        f"model={model!r} ({type(model).__name__})")
    elif weights is not None or batch_norm:
        raise ValueError("`weights` and `batch_norm` go with a configuration "
                         "name; a given model keeps its own weights.")
    body = _body(model)
    # The copies keep the model's weights, so the new input keeps its
    # channel count (a 1-channel network's first kernel is 3x3x1).
    channels = model.inputs[0].shape[-1]
    wanted = _requested(body, layers, stages)
    by_layer = {}
    for out_name, layer_name in wanted:
        by_layer.setdefault(layer_name, []).append(out_name)
    last = wanted[-1][1]
    body = [layer for layer in body
            if not isinstance(layer, vgg_layers.MinimumImageSize)]
    body = body[:[layer.name for layer in body].index(last) + 1]
    inputs = keras.Input((None, None, channels), name="images")
    x, outputs = inputs, {}
    # The deepest output needs one position: an image of at least its
    # stride (a smaller one would give empty maps).
    stride = int(np.prod([chain_lib.layer_stride(layer) for layer in body]))
    if stride > 1:
        x = vgg_layers.MinimumImageSize(
            (stride, stride), reason=f"{last!r} has one position per "
            f"{stride} pixels", dtype=dtype, name="minimum_image_size")(x)
    for layer in body:
        config = layer.get_config()
        if dtype is not None:
            config["dtype"] = dtype
        copy = layer.__class__.from_config(config)
        x = copy(x)
        copy.set_weights(layer.get_weights())
        for out_name in by_layer.get(layer.name, ()):
            outputs[out_name] = x
    return keras.Model(inputs, outputs,
                       name=name or f"{model.name}_features")


def feature_info(extractor: keras.Model) -> list[FeatureInfo]:
    """Channels and stride of each output of a `feature_extractor`, in
    network order."""
    outputs = extractor.output
    if not isinstance(outputs, dict):
        raise ValueError(f"Model {extractor.name!r} is not a feature "
                         "extractor (its output is not a dict).")
    info, stride = [], 1
    for layer in extractor.layers[1:]:
        stride *= chain_lib.layer_stride(layer)
        info += [FeatureInfo(key, layer.name, int(tensor.shape[-1]), stride)
                 for key, tensor in outputs.items()
                 if tensor is layer.output]
    return info


# -- the per-layer table ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One row of `layer_table`.

    Attributes:
        name: the layer's name.
        output_shape: its output shape for one image (no batch axis).
        activation_bytes: the output's size in bytes for one image.
        params: the layer's parameter count.
        macs: multiply-accumulates for one image.
        receptive_field: input pixels one output position sees (one side);
            None for layers after Flatten (they see the whole input).
        stride: input pixels between neighbouring output positions.
    """
    name: str
    output_shape: tuple
    activation_bytes: int
    params: int
    macs: int
    receptive_field: int | None
    stride: int | None


def _window(layer):
    """(kernel, stride) of a layer that slides a window, else None."""
    if isinstance(layer, keras_layers.Conv2D):
        return int(layer.kernel_size[0]), int(layer.strides[0])
    if isinstance(layer, (keras_layers.MaxPooling2D,
                          keras_layers.AveragePooling2D)):
        return int(layer.pool_size[0]), int(layer.strides[0])
    return None


def layer_table(model: keras.Model | str = "D",
                input_shape: tuple[int, int, int] = (224, 224, 3),
                batch_norm: bool = False, include_top: bool = True,
                bytes_per_value: int = 4) -> list[LayerRow]:
    """Per layer: output shape, activation memory, parameters, MACs and
    receptive field, for one image.

    Args:
        model: a keras_vgg network, or a Table 1 configuration name built
            at `input_shape` (random weights; only shapes matter).
        input_shape: (height, width, 3); with a given model its own input
            size is used when it has one.
        batch_norm, include_top: with a configuration name.
        bytes_per_value: 4 for float32 activations, 2 for bfloat16.

    Returns:
        A list of `LayerRow`, in network order (the input layer first).
    """
    if isinstance(model, str):
        model = vgg.VGG(model, include_top=include_top,
                        batch_norm=batch_norm, input_shape=input_shape)
    fixed = tuple(model.inputs[0].shape[1:])
    shape = tuple(f if f is not None else s
                  for f, s in zip(fixed, input_shape))
    rows = [LayerRow("input", shape, int(np.prod(shape)) * bytes_per_value,
                     0, 0, 1, 1)]
    field, jump, flat = 1, 1, False
    current = (1,) + shape
    for layer in chain_lib.layer_chain(model, "layer_table"):
        out = tuple(layer.compute_output_shape(current))
        window = _window(layer)
        if window and not flat:
            kernel, step = window
            field += (kernel - 1) * jump
            jump *= step
        if isinstance(layer, keras_layers.Flatten):
            flat = True
        rows.append(LayerRow(
            layer.name, out[1:], int(np.prod(out[1:])) * bytes_per_value,
            int(layer.count_params()), cost.layer_macs(layer, current, out),
            None if flat else field, None if flat else jump))
        current = out
    return rows
