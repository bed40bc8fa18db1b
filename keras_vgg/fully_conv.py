"""The FC -> conv rewrite of the paper's dense evaluation (section 3.2).

The first FC layer becomes a conv whose kernel covers the whole last feature
map at the training size (7x7 at 224), the other FC layers 1x1 convs; the
weights are the same numbers reshaped (Keras' Flatten is HWC, so a Dense
kernel of shape (7*7*512, 4096) reshapes to the conv kernel (7, 7, 512, 4096)
directly).  The result takes images of any size at least the classifier's
own input (its crop: 224x224 for a VGG; `MinimumImageSize` refuses smaller
ones) and outputs a class score map, one position per 32-pixel step of a 224
window.

A position equals the classifier on its window exactly only when no
convolution mixes neighbouring pixels (1x1 convolutions).  With 3x3 "same"
convolutions the window's border pixels see the image around the window where
the classifier on the cropped window sees zero padding: the paper's reason
why dense and multi-crop evaluation differ and complement each other.

Finer score maps (OverFeat's multiple pooling offsets, Sermanet et al. 2014,
which the paper mentions as not used): `stride=16` runs the last 2x2 max-pool
at both offsets {0, 1} in each direction, the rest of the network on each of
the four pooled maps, and interleaves the four score maps into one of twice
the resolution; `stride=8` does the same at the pool before it too (16
offsets).  Position (i, j) of a stride-s map is the window at (s*i, s*j).
The offsets travel on the batch axis (`PoolingOffsets`), so the convolutions
after the pool run once, on four times the batch.
"""

import keras
from keras import layers
from keras import ops

from keras_vgg import chain as chain_lib
from keras_vgg.layers import MinimumImageSize

_HEAD_LAYERS = (layers.Dense, layers.Dropout, layers.Activation)
_POOLS = (layers.MaxPooling2D, layers.AveragePooling2D)
# Five 2x2 max-pools: one score-map position per 32 input pixels.
STRIDE = 32
# The strides offered: the network's own, then its last one or two pools at
# both offsets (4 and 16 times the work after them); three would be 64 times.
MAX_OFFSET_POOLS = 2


@keras.saving.register_keras_serializable(package="keras_vgg")
class PoolingOffsets(layers.Layer):
    """A feature map at the four offsets of a 2x2-strided pool, on the
    batch axis: (N, H, W, C) -> (4N, H, W, C).

    Offset (dy, dx) (row-major, outermost on the batch axis: the first N are
    (0, 0), the input itself) is the map shifted up by dy and left by dx,
    filled with zeros at the far edge as a "same" convolution pads, so all
    four keep the input's size and share one batch.  The pool after it then
    pools the pairs (2k + dy, 2k + 1 + dy).
    """

    def call(self, x):
        views = []
        for dy in (0, 1):
            for dx in (0, 1):
                views.append(ops.pad(x[:, dy:, dx:, :],
                                     [[0, 0], [0, dy], [0, dx], [0, 0]]))
        return ops.concatenate(views, axis=0)

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        return (None if n is None else 4 * n,) + tuple(input_shape[1:])


@keras.saving.register_keras_serializable(package="keras_vgg")
class Interleave(layers.Layer):
    """The inverse of `PoolingOffsets` after the pool: the (4N, h, w, C)
    maps of the four offsets -> one (N, 2h, 2w, C) map, where position
    (k, l) of offset (dy, dx) lands at (2k + dy, 2l + dx)."""

    def call(self, x):
        shape = ops.shape(x)
        n, h, w, c = shape[0] // 4, shape[1], shape[2], shape[3]
        # The batch size spelled out, not -1: a map with no position has no
        # elements, from which -1 would infer another batch size.
        x = ops.reshape(x, (2, 2, n, h, w, c))           # dy, dx, N, h, w, C
        x = ops.transpose(x, (2, 3, 0, 4, 1, 5))         # N, h, dy, w, dx, C
        return ops.reshape(x, (n, 2 * h, 2 * w, c))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape

        def times(value, k):
            return None if value is None else value * k

        return (None if n is None else n // 4, times(h, 2), times(w, 2), c)


@keras.saving.register_keras_serializable(package="keras_vgg")
class WindowsInImage(layers.Layer):
    """The positions of an interleaved score map whose window lies in the
    image: inputs [scores (N, H', W', C), image (N, H, W, ...)] -> scores
    [:, :rows, :cols] with rows = (H - window_rows) // stride + 1 (cols
    alike); `window` is (rows, cols) or one side of a square.

    The offset maps share one size (`PoolingOffsets`), so near the far edge
    an offset map holds a position whose window would stick out of the
    image; interleaved, those come last, and are cut here."""

    def __init__(self, window, stride, **kwargs):
        super().__init__(**kwargs)
        sides = window if isinstance(window, (tuple, list)) else (window,) * 2
        self.window = tuple(int(side) for side in sides)
        self.stride = int(stride)

    def _count(self, side, axis):
        if side is None:
            return None
        return (side - self.window[axis]) // self.stride + 1

    def call(self, inputs):
        scores, image = inputs
        shape = ops.shape(image)
        return scores[:, :self._count(shape[1], 0),
                      :self._count(shape[2], 1)]

    def compute_output_shape(self, input_shape):
        scores, image = input_shape
        return (scores[0], self._count(image[1], 0), self._count(image[2], 1),
                scores[3])

    def get_config(self):
        return {**super().get_config(), "window": list(self.window),
                "stride": self.stride}


@keras.saving.register_keras_serializable(package="keras_vgg")
class FullyConnectedConv2D(layers.Conv2D):
    """A former FC layer as a "valid", stride-1 Conv2D, computed as one
    matrix product of every window's features with the FC kernel.

    Why not the Conv2D kernel: oneDNN (TensorFlow on CPU) runs fc1's
    7x7x512 -> 4096 convolution about three times slower than the same
    multiply-accumulates as one matrix product (measured on 2 cores:
    (2, 12, 14, 512) in, 2.3 s against 0.84 s), and dense evaluation
    spends about a third of its time there.  The windows are gathered with
    slices (Keras' `ops.image.extract_patches` builds an identity kernel of
    (7*7*512)^2 values), in the kernel's (row, column, channel) order.  The
    weights, their shapes and the layer's config are Conv2D's.
    """

    def call(self, inputs):
        kh, kw = self.kernel_size
        shape = ops.shape(inputs)
        rows, cols = shape[1] - kh + 1, shape[2] - kw + 1
        if (kh, kw) == (1, 1):
            windows = inputs
        else:
            windows = ops.concatenate(
                [inputs[:, i:i + rows, j:j + cols, :]
                 for i in range(kh) for j in range(kw)], axis=-1)
        depth = kh * kw * shape[3]
        out = ops.matmul(ops.reshape(windows, (-1, depth)),
                         ops.reshape(self.kernel, (depth, self.filters)))
        if self.use_bias:
            out = out + self.bias
        out = ops.reshape(out, (shape[0], rows, cols, self.filters))
        return self.activation(out)


def _copy(layer):
    clone = layer.__class__.from_config(layer.get_config())
    return clone


def _split(model):
    """(body, head, the Flatten layer) of a classifier chain; ValueError
    when it has no Flatten/Dense head."""
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
    return body, head, chain[flatten_at[0]]


def _strides(body):
    """(the strides the body allows, best first: its own, then halved per
    pool run at both offsets; the positions of its strided layers)."""
    strided = [i for i, layer in enumerate(body)
               if chain_lib.layer_stride(layer) > 1]
    base = 1
    for i in strided:
        base *= chain_lib.layer_stride(body[i])
    usable = 0  # trailing 2x2-strided "valid" pools
    for i in reversed(strided):
        layer = body[i]
        if (usable == MAX_OFFSET_POOLS or not isinstance(layer, _POOLS)
                or tuple(layer.strides) != (2, 2)
                or layer.padding != "valid"):
            break
        usable += 1
    return tuple(base // 2 ** k for k in range(usable + 1)), strided


def score_map_strides(model):
    """The `stride`s `fully_convolutional(model, stride=...)` accepts for
    the classifier `model`, its own first: (32, 16, 8) for a VGG."""
    return _strides(_split(model)[0])[0]


def check_stride(model, stride, what="stride", name=None):
    """`stride` as an int when `model` allows it (`score_map_strides`), the
    model's own for None; ValueError naming `what` (a flag, an argument)
    and the model (`name`, default its Keras name) otherwise."""
    allowed = score_map_strides(model)
    if stride is None:
        return allowed[0]
    try:
        value = int(stride)
    except (TypeError, ValueError):
        value = None
    if isinstance(stride, bool) or value != stride or value not in allowed:
        why = (f"halved by running its last {len(allowed) - 1} 2x2-strided "
               "pool(s) at both offsets" if len(allowed) > 1 else
               "its last strided layer is no 2x2-strided 'valid' pool to run "
               "at both offsets")
        raise ValueError(
            f"{what}={stride!r} is not a score-map stride of model "
            f"{name or model.name!r}: it allows "
            f"{', '.join(map(str, allowed))} (its own stride {allowed[0]}, "
            f"{why}).")
    return value


def _image_input(model, input_shape, window):
    """(the new model's Input, the image after `MinimumImageSize`): of
    `input_shape` (rows and columns may be None), default any size with
    the source's channels; ValueError naming `input_shape` when it is not
    (rows, columns, those channels) or is too small for one window."""
    source = model.inputs[0]
    channels = source.shape[-1]
    # The classifier's own input size when it has one (a window always fits
    # in it), else the crop its head's window covers.
    minimum = tuple(side if side is not None else default
                    for side, default in zip(source.shape[1:3], window))
    shape = (None, None, channels) if input_shape is None else input_shape
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or shape[-1] != channels or any(
            side is not None and (isinstance(side, bool)
                                  or not isinstance(side, int) or side < 1)
            for side in shape[:2]):
        raise ValueError(
            f"input_shape={input_shape!r} is not (rows, columns, "
            f"{channels}) with rows and columns positive ints or None, for "
            f"the {channels}-channel input of model {model.name!r}.")
    check = MinimumImageSize(
        minimum, reason="the classifier's own input size: no window of the "
        "classifier fits in a smaller image", dtype=source.dtype,
        name="minimum_image_size")
    try:
        check.compute_output_shape((None,) + shape)
    except ValueError as error:
        raise ValueError(f"input_shape={input_shape!r}: {error}") from None
    inputs = keras.Input(shape=shape, name=source.name, dtype=source.dtype)
    return inputs, check(inputs)


def _head(x, head, flat_shape, average):
    """The Dense layers of `head` as `FullyConnectedConv2D`s (the first
    covering the (rows, cols, channels) `flat_shape` fed to Flatten), each
    in its Dense layer's dtype policy, on `x`; the last one's activation
    left out when `average`."""
    h, w, c = flat_shape
    dense = [layer for layer in head if isinstance(layer, layers.Dense)]
    for layer in head:
        if not isinstance(layer, layers.Dense):
            x = _copy(layer)(x)
            continue
        kernel, bias = layer.get_weights()
        first = layer is dense[0]
        size = (h, w) if first else (1, 1)
        cin = c if first else kernel.shape[0]
        conv = FullyConnectedConv2D(
            layer.units, size, padding="valid",
            activation=None if (layer is dense[-1] and average)
            else layer.activation,
            dtype=layer.dtype_policy, name=layer.name)
        x = conv(x)
        conv.set_weights([kernel.reshape(size + (cin, layer.units)), bias])
    return x


def fully_convolutional(model, average=False, name=None, stride=None,
                        input_shape=None):
    """Rewrites the Flatten/Dense head of `model` into convolutions.

    Args:
        model: a keras_vgg classifier (any configuration, BN or not) or any
            sequential model ending in Flatten followed by Dense layers.
        average: False: output the class score map `(N, H', W', classes)`,
            with the last layer's activation applied at every position.
            True: spatially average the pre-activation score map, then
            apply the activation: the paper's dense evaluation, output
            `(N, classes)`.
        name: name of the new model; default `<model.name>_fcn` (with
            `_s16`, `_s8` for the finer strides).
        stride: input pixels between neighbouring score-map positions:
            None or 32 (the network's own; a chain with fewer pools has
            another), 16 (its last pool at both offsets in each direction:
            4 times the work after that pool) or 8 (the last two pools: 16
            times after the fourth).  Position (i, j) is the
            crop-sized window at (stride * i, stride * j); the map holds
            every window that fits in the image.
        input_shape: (rows, columns, channels) of the new model's input,
            rows and columns None for any size (the default: any size,
            the source's channels).

    Returns:
        A new model with copied weights, taking inputs of any size at least
        the original input size (smaller ones raise ValueError, see
        `MinimumImageSize`).  Q=256 gives a 2x2 score map, 384 6x6
        (stride 16: 3x3 and 11x11).  Its layers keep the source's dtype
        policies (the FC convolutions their Dense layer's, the average and
        activation after it the output layer's), so a mixed precision
        model stays one.

        A position equals the original model on its window exactly only
        for 1x1 convolutions: with 3x3 "same" convolutions the window's
        border pixels see the image around it, where the original model on
        the cropped window sees zero padding (the paper's reason why dense
        and multi-crop evaluation differ).

    Raises:
        ValueError: the model has no Flatten->Dense head, or is not a
            chain, or `stride` is not one it allows (`score_map_strides`),
            or `input_shape` is malformed or smaller than the original
            input size.

    Example::

        fcn = keras_vgg.fully_convolutional(keras_vgg.VGG16())
        fcn(np.zeros((1, 384, 384, 3))).shape   # (1, 6, 6, 1000)
        fine = keras_vgg.fully_convolutional(keras_vgg.VGG16(), stride=16)
        fine(np.zeros((1, 384, 384, 3))).shape  # (1, 11, 11, 1000)
    """
    body, head, flatten = _split(model)
    if stride is None:
        stride = score_map_strides(model)[0]
    stride = check_stride(model, stride)
    allowed, strided = _strides(body)
    levels = allowed.index(stride)
    offset_at = set(strided[len(strided) - levels:])
    h, w, c = flatten.input.shape[1:]
    window = (allowed[0] * h, allowed[0] * w)  # the crop
    inputs, x = _image_input(model, input_shape, window)
    for i, layer in enumerate(body):
        if i in offset_at:
            x = PoolingOffsets(dtype=layer.dtype_policy.name,
                               name=f"{layer.name}_offsets")(x)
        clone = _copy(layer)
        x = clone(x)
        clone.set_weights(layer.get_weights())
    x = _head(x, head, (h, w, c), average)
    # The layers after the head compute as the source's output layer (in
    # float32 under a mixed policy, as Keras advises).  By name: the layers
    # without a get_config of their own serialise strings only.
    policy = head[-1].dtype_policy.name
    # Innermost offsets first: the last pool's were added last.
    for i in sorted(offset_at, reverse=True):
        x = Interleave(dtype=policy, name=f"{body[i].name}_interleave")(x)
    if offset_at:
        x = WindowsInImage(window, stride, dtype=policy,
                           name="windows_in_image")([x, inputs])
    last = [layer for layer in head if isinstance(layer, layers.Dense)][-1]
    if average:
        x = layers.GlobalAveragePooling2D(dtype=policy,
                                          name="score_average")(x)
        if last.activation is not keras.activations.linear:
            x = layers.Activation(last.activation, dtype=policy,
                                  name="probabilities")(x)
    suffix = "" if stride == allowed[0] else f"_s{stride}"
    return keras.Model(inputs, x, name=name or f"{model.name}_fcn{suffix}")
