"""Low-rank FC layers: the truncated SVD of a VGG's fc1 and fc2.

Most of VGG16's 138 M parameters are in fc1 (25088 x 4096 = 103 M) and fc2
(4096 x 4096 = 17 M).  A Dense kernel W (in x out) with singular values
s_1 >= s_2 >= ... is replaced by its best rank-r approximation (Eckart-
Young: no rank-r matrix is closer in the Frobenius or the spectral norm),
stored as two Dense layers,

    W_r = U_r diag(s_r) V_r^T = (U_r sqrt(s_r)) (sqrt(s_r) V_r^T)
    fc1 -> fc1_u: in -> r, linear (zero bias)
           fc1_v: r -> out, fc1's bias and activation

with r (in + out) weights instead of in x out: at r = 256 VGG16's fc1 keeps
7.4 M of its 103 M.  The square roots split the scale evenly between the
two factors, so neither has a much wider range than the other (int8
quantises each with its own scales).  `fc1_u` keeps a (zero) bias so that
every Dense of the head has one: the FC -> conv rewrite
(`keras_vgg.fully_convolutional`) and the tf_keras bridge take the new model
as they take a VGG.

Pure numpy and Keras: any backend.

Example::

    small = low_rank_head(keras_vgg.VGG16(), rank=256)
    low_rank_ranks(small)   # {'fc1': 256, 'fc2': 256}
"""

import keras
import numpy as np

from keras_vgg import chain as chain_lib

# The FC layers the truncated SVD applies to by default: the predictions
# layer is small (4096 x classes) and its rank is at most the class count.
FC_LAYERS = ("fc1", "fc2")
# Names of the two factors of layer `name`.
U_SUFFIX, V_SUFFIX = "_u", "_v"


def truncated_svd(kernel, rank):
    """(a, b) with a @ b the best rank-`rank` approximation of the 2-D
    `kernel` (in x out): a = U_r sqrt(s_r) (in x r), b = sqrt(s_r) V_r^T
    (r x out), float32.  Computed in float64."""
    u, s, vt = np.linalg.svd(np.asarray(kernel, np.float64),
                             full_matrices=False)
    root = np.sqrt(s[:rank])
    return ((u[:, :rank] * root).astype(np.float32),
            (root[:, None] * vt[:rank]).astype(np.float32))


def rank_for_energy(singular_values, energy):
    """The smallest r whose first r singular values hold at least `energy`
    of sum(s^2) (the squared Frobenius norm)."""
    s2 = np.square(np.asarray(singular_values, np.float64))
    total = s2.sum()
    if total == 0:
        return 1
    kept = np.cumsum(s2) / total
    return int(min(len(s2), np.searchsorted(kept, energy - 1e-12) + 1))


def _check_arguments(rank, energy):
    if (rank is None) == (energy is None):
        raise ValueError("Give one of --fc_rank and --fc_energy.")
    if rank is not None and (isinstance(rank, bool)
                             or not isinstance(rank, (int, np.integer))
                             or rank < 1):
        raise ValueError(f"--fc_rank={rank!r}: expected an int >= 1.")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"--fc_energy={energy!r}: expected a fraction in "
                         "(0, 1].")


def _fc_layer(model, name):
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer {name!r} to factorise (a "
            "VGG without its FC head, or already low-rank?); --fc_rank / "
            "--fc_energy apply to fc1 and fc2.") from None
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(f"Layer {name!r} of model {model.name!r} is a "
                         f"{type(layer).__name__}, not Dense.")
    return layer


def low_rank_head(model, rank=None, energy=None, layers=FC_LAYERS):
    """A new model where each of `layers` (Dense) is its truncated SVD as
    two Dense layers (`<name>_u`, `<name>_v`; see the module doc).

    Args:
        model: a functional or sequential chain of layers (a keras_vgg
            classifier), with Dense layers named `layers`.
        rank: the rank r of every factorised layer, at most min(in, out)
            of each (at that rank the outputs are the model's, to rounding).
        energy: instead of `rank`: per layer, the smallest rank keeping
            this fraction of the sum of squared singular values.
        layers: the names of the Dense layers to factorise.

    Returns:
        The new model (same input, other layers copied with their weights);
        `low_rank_ranks(model)` gives the rank chosen for each layer.

    Raises:
        ValueError: naming `--fc_rank` / `--fc_energy` or the layer: both or
            neither given, a rank outside [1, min(in, out)], an energy
            outside (0, 1], a missing or non-Dense layer, a model that is
            not a chain.
    """
    _check_arguments(rank, energy)
    chain = chain_lib.layer_chain(model, "low_rank_head")
    factors = {}
    for name in layers:
        kernel, bias = _fc_layer(model, name).get_weights()
        limit = min(kernel.shape)
        if energy is not None:
            s = np.linalg.svd(kernel.astype(np.float64), compute_uv=False)
            r = rank_for_energy(s, energy)
        elif rank > limit:
            raise ValueError(
                f"--fc_rank={rank} is larger than layer {name!r} allows: "
                f"its kernel is {kernel.shape[0]} x {kernel.shape[1]}, of "
                f"rank at most {limit}.")
        else:
            r = int(rank)
        factors[name] = truncated_svd(kernel, r) + (bias,)
    source = model.inputs[0]
    inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype,
                         name=model.layers[0].name)
    x = inputs
    for layer in chain:
        if layer.name in factors:
            a, b, bias = factors[layer.name]
            first = keras.layers.Dense(a.shape[1],
                                       name=layer.name + U_SUFFIX)
            second = keras.layers.Dense(layer.units,
                                        activation=layer.activation,
                                        name=layer.name + V_SUFFIX)
            x = second(first(x))
            first.set_weights([a, np.zeros(a.shape[1], np.float32)])
            second.set_weights([b, bias])
        else:
            clone = layer.__class__.from_config(layer.get_config())
            x = clone(x)
            clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=model.name)


def low_rank_ranks(model):
    """{layer name: rank} of the layers `low_rank_head` factorised."""
    return {layer.name[:-len(U_SUFFIX)]: int(layer.units)
            for layer in model.layers
            if layer.name.endswith(U_SUFFIX) and isinstance(
                layer, keras.layers.Dense)}
