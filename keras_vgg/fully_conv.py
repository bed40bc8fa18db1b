"""The FC -> conv rewrite of the paper's dense evaluation (section 3.2).

The first FC layer becomes a conv whose kernel covers the whole last feature
map at the training size (7x7 at 224), the other FC layers 1x1 convs; the
weights are the same numbers reshaped (Keras' Flatten is HWC, so a Dense
kernel of shape (7*7*512, 4096) reshapes to the conv kernel (7, 7, 512, 4096)
directly).  The result takes images of any size and outputs a class score
map, one position per 32-pixel step of a 224 window.
"""

import keras
from keras import layers

from keras_vgg import chain as chain_lib

_HEAD_LAYERS = (layers.Dense, layers.Dropout, layers.Activation)
# Five 2x2 max-pools: one score-map position per 32 input pixels.
STRIDE = 32


def _copy(layer):
    clone = layer.__class__.from_config(layer.get_config())
    return clone


def fully_convolutional(model, average=False, name=None):
    """Rewrites the Flatten/Dense head of `model` into convolutions.

    Args:
        model: a keras_vgg classifier (any configuration, BN or not) or any
            sequential model ending in Flatten followed by Dense layers.
        average: False: output the class score map `(N, H', W', classes)`,
            with the last layer's activation applied at every position (each
            position equals the original model on the matching 224x224
            window).  True: spatially average the pre-activation score map,
            then apply the activation: the paper's dense evaluation,
            output `(N, classes)`.
        name: name of the new model; default `<model.name>_fcn`.

    Returns:
        A new model with copied weights, taking inputs of any size at least
        the original input size.  Q=256 gives a 2x2 score map, 384 6x6.

    Raises:
        ValueError: the model has no Flatten->Dense head, or is not a chain.

    Example::

        fcn = keras_vgg.fully_convolutional(keras_vgg.VGG16())
        fcn(np.zeros((1, 384, 384, 3))).shape   # (1, 6, 6, 1000)
    """
    chain = chain_lib.layer_chain(model, "fully_convolutional")
    flatten_at = [i for i, layer in enumerate(chain)
                  if isinstance(layer, layers.Flatten)]
    if not flatten_at:
        raise ValueError(
            f"Model {model.name!r} has no Flatten/Dense head to rewrite "
            "(built with include_top=False?)."
        )
    body, head = chain[: flatten_at[0]], chain[flatten_at[0] + 1:]
    if not any(isinstance(layer, layers.Dense) for layer in head) or not all(
            isinstance(layer, _HEAD_LAYERS) for layer in head):
        kinds = [type(layer).__name__ for layer in head]
        raise ValueError(
            f"The head of model {model.name!r} after Flatten is {kinds}; "
            "fully_convolutional rewrites Dense, Dropout and Activation "
            "layers only."
        )
    h, w, c = chain[flatten_at[0]].input.shape[1:]
    source = model.inputs[0]
    inputs = keras.Input(shape=(None, None, source.shape[-1]),
                         name=source.name, dtype=source.dtype)
    x = inputs
    for layer in body:
        clone = _copy(layer)
        x = clone(x)
        clone.set_weights(layer.get_weights())

    dense = [layer for layer in head if isinstance(layer, layers.Dense)]
    first = True
    for layer in head:
        if not isinstance(layer, layers.Dense):
            x = _copy(layer)(x)
            continue
        kernel, bias = layer.get_weights()
        size = (h, w) if first else (1, 1)
        cin = c if first else kernel.shape[0]
        last = layer is dense[-1]
        activation = layer.activation
        conv = layers.Conv2D(
            layer.units, size, padding="valid",
            activation=None if (last and average) else activation,
            name=layer.name,
        )
        x = conv(x)
        conv.set_weights([kernel.reshape(size + (cin, layer.units)), bias])
        first = False
        if last and average:
            x = layers.GlobalAveragePooling2D(name="score_average")(x)
            if activation is not keras.activations.linear:
                x = layers.Activation(activation, name="probabilities")(x)
    return keras.Model(inputs, x, name=name or f"{model.name}_fcn")
