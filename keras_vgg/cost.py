"""Multiply-accumulates of a built Keras model at a given input size.

`keras_vgg.count_macs` (`keras_vgg.configs`) counts from Table 1 as data and
knows full-width VGGs only; `count_macs` here measures a built model: it
walks the layers of any sequential Keras model (narrow VGGs, BN variants, the
fully convolutional rewrite) and counts, from each layer's output shape at
the requested input size:

    Conv1D/2D/3D, DepthwiseConv2D   output positions x kernel x C_in/groups
                                    x filters
    Dense                           output rows x C_in x units

Biases, BN, pooling and activations are not counted (as in the paper's and
`keras_vgg.count_macs`' figures).  `count_graph_macs` walks a functional
model of any shape instead (branches, layers called more than once, the
pooling offsets of `keras_vgg.fully_convolutional(model, stride=16)`).

    count_macs(keras_vgg.VGG16(weights=None), (224, 224, 3))
    # 15_470_264_320, keras_vgg.count_macs("D")
"""

import keras
import numpy as np
from keras import layers

from keras_vgg import chain as chain_lib

_CONVS = (layers.Conv1D, layers.Conv2D, layers.Conv3D)


def layer_macs(layer, in_shape, out_shape):
    """MACs of one layer on the batch its input and output shapes describe
    (a batch axis of 1: one example; a layer after `keras_vgg.fully_conv.
    PoolingOffsets` sees each example four times)."""
    if isinstance(layer, layers.DepthwiseConv2D):
        positions = int(np.prod(out_shape[:-1]))
        return (positions * int(np.prod(layer.kernel_size))
                * int(out_shape[-1]))
    if isinstance(layer, _CONVS):
        positions = int(np.prod(out_shape[:-1]))
        groups = getattr(layer, "groups", 1) or 1
        return (positions * int(np.prod(layer.kernel_size))
                * int(in_shape[-1]) // groups * layer.filters)
    if isinstance(layer, layers.Dense):
        rows = int(np.prod(out_shape[:-1]))
        return rows * int(in_shape[-1]) * layer.units
    return 0


def _walk(model, shape):
    total = 0
    for layer in chain_lib.layer_chain(model, "count_macs"):
        if isinstance(layer, keras.Model):
            macs, out = _walk(layer, shape)
        else:
            out = tuple(layer.compute_output_shape(shape))
            macs = layer_macs(layer, shape, out)
        if isinstance(layer, layers.Dense):
            kernel_in = layer.kernel.shape[0]
            if shape[-1] != kernel_in:
                raise ValueError(
                    f"At this input size layer {layer.name!r} of "
                    f"{model.name!r} would get {shape[-1]} features; its "
                    f"kernel takes {kernel_in}.")
        total += macs
        shape = out
    return total, shape


def _example_shape(model, input_shape):
    """`input_shape` without a batch axis, checked against the model's."""
    rank = len(model.inputs[0].shape)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == rank:
        shape = shape[1:]
    if len(shape) != rank - 1:
        raise ValueError(f"input_shape={tuple(input_shape)} does not match "
                         f"the input rank {rank} of model {model.name!r}.")
    expected = tuple(model.inputs[0].shape[1:])
    for got, want in zip(shape, expected):
        if want is not None and got != want:
            raise ValueError(f"Model {model.name!r} takes inputs of shape "
                             f"{expected}; received input_shape={shape}.")
    return shape


def count_macs(model, input_shape):
    """Multiply-accumulates of one forward pass of `model` on one input.

    Args:
        model: a sequential Keras model (functional chain or Sequential).
        input_shape: the input's shape without the batch axis, e.g.
            (384, 512, 3); a leading batch axis is allowed and ignored
            (the count is per example).

    Returns:
        int MACs per example.

    Raises:
        ValueError: the model is not a chain, or `input_shape` does not fit
            it (a Flatten/Dense head at another size than it was built for).
    """
    shape = _example_shape(model, input_shape)
    total, _ = _walk(model, (1,) + shape)
    return total


def count_graph_macs(model, input_shape):
    """`count_macs` for a functional model of any shape: every call of a
    Conv/Dense layer in its graph, on the shapes it sees there (a model
    nested in it is counted by `count_macs`).  A `keras.Sequential` is
    counted by `count_macs`.

    Args:
        model: a single-input functional Keras model.
        input_shape: as `count_macs`.

    Returns:
        int MACs per example.
    """
    if isinstance(model, keras.Sequential):
        return count_macs(model, input_shape)
    shape = _example_shape(model, input_shape)
    total = 0

    def counted(operation):
        def call(*args, **kwargs):
            nonlocal total
            out = operation.compute_output_spec(*args, **kwargs)
            x = args[0]
            if isinstance(operation, keras.Model):
                total += x.shape[0] * count_macs(operation, x.shape)
            elif isinstance(operation, (layers.Dense,) + _CONVS):
                total += layer_macs(operation, x.shape, out.shape)
            return out
        return call

    # Keras' own symbolic walk of the graph, with a concrete input shape.
    model._run_through_graph(keras.KerasTensor((1,) + shape),
                             operation_fn=counted)
    return total
