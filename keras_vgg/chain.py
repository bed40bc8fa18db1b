"""The layers of a sequential Keras model, checked to form one chain.

Both walks over a VGG need it: the FC -> conv rewrite
(`keras_vgg.fully_convolutional`) copies the layers in order, and MAC
counting (`keras_vgg.cost.count_macs`) follows the shapes through them.
"""

import keras
from keras import layers


def layer_chain(model, needed_by):
    """The model's layers in order (without the InputLayer).

    Args:
        model: a keras.Sequential, or a functional model in which every
            layer is fed by the one before it (a VGG, its BN variants, a
            fully convolutional rewrite).
        needed_by: the caller's name, for the error messages.

    Raises:
        ValueError: the model has more than one input or output, or a layer
            is not fed by the layer before it (a branch, a skip connection,
            a shared layer).
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs; {needed_by} needs one of each.")
    chain = [layer for layer in model.layers
             if not isinstance(layer, layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return chain  # a chain by construction
    previous = model.inputs[0]
    for layer in chain:
        if len(layer._inbound_nodes) != 1 or layer.input is not previous:
            raise ValueError(
                f"Layer {layer.name!r} of model {model.name!r} is not fed by "
                f"the layer before it; {needed_by} only walks sequential "
                "(VGG-like) networks.")
        previous = layer.output
    return chain


def layer_stride(layer):
    """Input pixels per output position of `layer` (its largest stride; 1
    for a layer without strides)."""
    strides = getattr(layer, "strides", None)
    if strides is None:
        return 1
    return max(int(s) for s in (strides if isinstance(strides, (tuple, list))
                                else (strides,)))
