"""Layers Keras does not have: local response normalisation, the weights'
input preprocessing as a layer (and as a fixed 1x1 convolution), and the
smallest image a network takes.  They are
written on `keras.ops` so that the models run on every Keras backend
(TensorFlow, JAX, PyTorch); LRN uses TensorFlow's fused kernel when
TensorFlow is the backend."""

import keras
import numpy as np
from keras import ops

from keras_vgg import preprocessing


@keras.saving.register_keras_serializable(package="keras_vgg")
class MinimumImageSize(keras.layers.Layer):
    """The identity on images of at least `minimum` = (rows, cols) pixels;
    a ValueError naming both sizes, and `reason`, for a smaller one.

    A network's pools need a smallest image: below it a feature map is
    empty, so its average is NaN, a global max fails deep inside the
    backend, and the score map of `keras_vgg.fully_convolutional` (whose
    windows no longer fit) folds its offsets into the batch axis.

    Where the check runs: a static size (a fixed `input_shape`, a
    `keras.Input` of fixed size, eager calls, a JAX or TensorFlow trace of a
    fixed shape) raises ValueError when traced.  A size known only at run
    time exists on TensorFlow alone (a `tf.function` over unknown sizes, as
    `model.predict` retraces after a second image size): Keras has no
    portable run-time assertion, so there the check is TensorFlow's
    `assert_greater_equal` in the graph, an `InvalidArgumentError` with the
    same message.  JAX traces static shapes and torch runs eagerly, so the
    Python check covers them.
    """

    def __init__(self, minimum, reason="", **kwargs):
        super().__init__(**kwargs)
        self.minimum = tuple(int(side) for side in minimum)
        self.reason = str(reason)

    def _message(self, size):
        rows, cols = self.minimum
        return (f"Image size {size} (rows x columns) is smaller than the "
                f"smallest input of this network, {rows}x{cols}"
                + (f" ({self.reason})." if self.reason else "."))

    def _check_static(self, shape):
        sides = shape[1:3]
        if any(isinstance(side, int) and side < least
               for side, least in zip(sides, self.minimum)):
            size = "x".join(str(side) if isinstance(side, int) else "?"
                            for side in sides)
            raise ValueError(self._message(size))

    def call(self, images):
        shape = ops.shape(images)
        self._check_static(shape)
        if (keras.backend.backend() != "tensorflow"
                or all(isinstance(side, int) for side in shape[1:3])):
            return images
        # TensorFlow is the backend here, so importing it costs nothing.
        import tensorflow as tf

        check = tf.debugging.assert_greater_equal(
            tf.shape(images)[1:3], tf.constant(self.minimum, tf.int32),
            message=self._message("x below"))
        with tf.control_dependencies([check]):
            return tf.identity(images)

    def compute_output_shape(self, input_shape):
        self._check_static(input_shape)
        return input_shape

    def get_config(self):
        return {**super().get_config(), "minimum": list(self.minimum),
                "reason": self.reason}



@keras.saving.register_keras_serializable(package="keras_vgg")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (Krizhevsky et al., 2012).

    For channel `c` of activation `a`:

        b_c = a_c / (k + alpha * sum_{j=c-r}^{c+r} a_j ** 2) ** beta

    over the `n = 2r + 1` adjacent channels (clipped at the edges).  The
    defaults are AlexNet's constants, which VGG's A-LRN uses: n = 5 (r = 2),
    k = 2, alpha = 1e-4, beta = 0.75.

    Convention: `alpha` multiplies the plain sum, as in the AlexNet paper's
    formula and `tf.nn.local_response_normalization(depth_radius=2, bias=2,
    alpha=1e-4, beta=0.75)`.  Caffe's LRN layer divides alpha by n, so a Caffe
    `alpha` of 1e-4 corresponds to `alpha=2e-5` here.

    Keras ships no LRN layer, which is why this one exists.

    Example:
    >>> import numpy as np
    >>> lrn = LocalResponseNormalization()
    >>> tuple(lrn(np.ones((1, 2, 2, 8), "float32")).shape)
    (1, 2, 2, 8)
    """

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75,
                 **kwargs):
        super().__init__(**kwargs)
        if int(depth_radius) != depth_radius or depth_radius < 0:
            raise ValueError(
                "`depth_radius` must be a non-negative integer. "
                f"Received: depth_radius={depth_radius}"
            )
        if bias <= 0:
            raise ValueError(f"`bias` must be > 0. Received: bias={bias}")
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        if (keras.backend.backend() == "tensorflow"
                and keras.backend.standardize_dtype(inputs.dtype)
                in ("float32", "float16")):
            # TensorFlow's fused LRN kernel (same formula; forward and
            # backward 3.5x faster than the slices below on a 16x112x112x64
            # batch).  TF is the backend here, so importing it costs
            # nothing; every other backend and bfloat16 (no CPU kernel)
            # take the portable path.
            import tensorflow as tf

            return tf.nn.local_response_normalization(
                inputs, self.depth_radius, self.bias, self.alpha, self.beta)
        return self.portable_call(inputs)

    def portable_call(self, inputs):
        """The layer on `keras.ops` only (any backend)."""
        r = self.depth_radius
        channels = inputs.shape[-1]
        squared = ops.square(inputs)
        pad = [[0, 0]] * (len(inputs.shape) - 1) + [[r, r]]
        padded = ops.pad(squared, pad)
        # A sum of 2r + 1 shifted slices is exact, cheap for r = 2 and needs
        # no backend-specific windowed reduction over the channel axis.
        window = padded[..., 0:channels]
        for i in range(1, 2 * r + 1):
            window = window + padded[..., i:i + channels]
        scale = ops.power(self.bias + self.alpha * window, self.beta)
        return inputs / scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vgg")
class Preprocessing(keras.layers.Layer):
    """The preprocessing a weight set expects, inside the model.

    Takes RGB pixels in [0, 255] (any float or integer dtype) and applies
    `mode`: "caffe" (RGB->BGR, subtract the ImageNet BGR mean; the Oxford
    weights), "torch" (scale to [0, 1], subtract mean, divide by std; the
    torchvision weights) or "none".
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        preprocessing.check_mode(mode)
        self.mode = mode

    def call(self, inputs):
        return preprocessing.apply(inputs, self.mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config



def input_preprocessing(model):
    """The preprocessing a model applies itself: "none" when it holds a
    `Preprocessing` layer (it takes raw pixels), else None (the caller
    applies its weights' mode)."""
    if any(isinstance(layer, Preprocessing) for layer in model.layers):
        return "none"
    return None

def preprocessing_conv(mode, name="preprocessing"):
    """The weights' preprocessing `mode` ("caffe" or "torch") as a fixed,
    built 1x1 `keras.layers.Conv2D` (channel permutation and scale as the
    kernel, the mean as the bias): the same numbers as `Preprocessing`, but
    one op that an int8 converter quantises well (a ReverseV2 + Sub pair
    cost 30-40 % top-1 agreement in full-integer TFLite models of the tiny
    test network).

    Example:
    >>> conv = preprocessing_conv("caffe")
    >>> pixels = np.full((1, 2, 2, 3), 128.0, "float32")
    >>> np.allclose(conv(pixels), preprocessing.apply(pixels, "caffe"))
    True
    """
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    if mode == "caffe":
        for out in range(3):  # BGR output channel `out` is RGB 2 - out
            kernel[0, 0, 2 - out, out] = 1.0
        bias = -np.asarray(preprocessing.CAFFE_MEAN_BGR, np.float32)
    elif mode == "torch":
        std = np.asarray(preprocessing.TORCH_STD, np.float32)
        mean = np.asarray(preprocessing.TORCH_MEAN, np.float32)
        for channel in range(3):
            kernel[0, 0, channel, channel] = 1.0 / (255.0 * std[channel])
        bias = -mean / std
    else:
        raise ValueError(f"No preprocessing conv for mode {mode!r} (expected "
                         "'caffe' or 'torch').")
    conv = keras.layers.Conv2D(3, 1, name=name, trainable=False)
    conv.build((None, None, None, 3))
    conv.set_weights([kernel, bias])
    return conv
