"""Perceptual and style losses on a fixed VGG (Johnson et al. 2016, Gatys
et al. 2016), written on `keras.ops`: any Keras backend, differentiable with
respect to the images.

    loss = keras_vgg.PerceptualLoss()                 # VGG16, block2_conv2
    style = keras_vgg.StyleLoss(network="E")          # VGG19, Gram matrices
    model.compile(optimizer="adam", loss=loss)

Both take RGB images in [0, 255] (`input_range=255`, the default) or in
[0, 1] (`input_range=1`) and apply the weights' preprocessing inside; the VGG
is frozen (its weights never train).

- `PerceptualLoss` (feature reconstruction): for each layer j with feature
  maps of shape C x H x W, the mean over the C H W values of
  (phi_j(y_true) - phi_j(y_pred))^2, summed over layers (with
  `layer_weights`).
- `StyleLoss`: for each layer, the Gram matrix G = F F^T / (C H W) of the
  C x (H W) feature matrix F; the squared Frobenius norm of
  G(y_true) - G(y_pred), summed over layers.

Both return one value per image (a Keras `Loss` then reduces over the
batch).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vgg import features
from keras_vgg import layers as vgg_layers
from keras_vgg import preprocessing
from keras_vgg import vgg
from keras_vgg import weights as weights_lib

# The usual layer sets: Johnson et al.'s content layer (relu2_2 of VGG16;
# relu4_2 of VGG19 in Gatys et al.), and the first conv of every block for
# style (Gatys et al.).
CONTENT_LAYERS = {"D": ("block2_conv2",), "E": ("block4_conv2",)}
STYLE_LAYERS = tuple(f"block{i}_conv1" for i in range(1, 6))


def _network(network, weights, batch_norm):
    """(the VGG, its preprocessing mode, its configuration name or None)."""
    if isinstance(network, keras.Model):
        return network, vgg_layers.input_preprocessing(network) or "caffe", None
    model = vgg.VGG(network, include_top=False, weights=weights,
                    batch_norm=batch_norm, input_shape=(None, None, 3))
    return model, weights_lib.preprocessing_for(weights), network


class _VGGLoss(keras.losses.Loss):
    """What both losses share: the frozen extractor and the input scaling."""

    default_name = None

    def __init__(self, network: str | keras.Model = "D",
                 layers: list[str] | None = None,
                 weights: str | None = "imagenet", batch_norm: bool = False,
                 input_range: int = 255,
                 layer_weights: list[float] | None = None,
                 preprocessing_mode: str | None = None,
                 name: str | None = None,
                 reduction: str = "sum_over_batch_size"):
        super().__init__(name=name or self.default_name, reduction=reduction)
        if input_range not in (1, 255):
            raise ValueError("`input_range` must be 255 (pixels in [0, 255]) "
                             f"or 1 (in [0, 1]). Received: input_range="
                             f"{input_range!r}")
        model, mode, config = _network(network, weights, batch_norm)
        self.layer_names = tuple(layers) if layers else self._default_layers(
            config)
        if layer_weights is None:
            layer_weights = [1.0] * len(self.layer_names)
        if len(layer_weights) != len(self.layer_names):
            raise ValueError(
                f"`layer_weights` has {len(layer_weights)} values for "
                f"{len(self.layer_names)} layers {list(self.layer_names)}.")
        self.layer_weights = [float(w) for w in layer_weights]
        self.extractor = features.feature_extractor(model,
                                                    layers=self.layer_names)
        self.extractor.trainable = False
        self.scale = 255.0 / input_range
        self.preprocessing = preprocessing_mode or mode
        preprocessing.check_mode(self.preprocessing)

    def _default_layers(self, config):
        raise NotImplementedError

    def _features(self, images):
        x = ops.cast(images, "float32") * self.scale
        x = preprocessing.apply(x, self.preprocessing)
        out = self.extractor(x, training=False)
        return [ops.cast(out[name], "float32") for name in self.layer_names]

    def get_config(self):
        # The frozen network is rebuilt from its arguments, not serialised.
        raise NotImplementedError(
            f"{type(self).__name__} holds a VGG; build it again instead of "
            "serialising it.")


class PerceptualLoss(_VGGLoss):
    """Feature reconstruction loss (Johnson et al. 2016).

    Args:
        network: a configuration name ("D": VGG16, "E": VGG19, ...) built
            with `weights`, or a keras_vgg network (its own weights; caffe
            preprocessing unless it holds a Preprocessing layer).
        layers: layer names; default block2_conv2 for VGG16, block4_conv2
            for VGG19 (required for other networks).
        weights: with a configuration name: "imagenet", "tv_in1k", a file or
            None (random: for tests only).
        batch_norm: with a configuration name: the BN variant.
        input_range: 255 for pixels in [0, 255], 1 for [0, 1].
        layer_weights: one weight per layer (default 1 each).
        preprocessing_mode: override the preprocessing ("caffe", "torch",
            "none").
    """

    default_name = "perceptual_loss"

    def _default_layers(self, config):
        if config not in CONTENT_LAYERS:
            raise ValueError(
                "`layers` is needed: default content layers exist for "
                f"{sorted(CONTENT_LAYERS)} only. Received: network="
                f"{config!r}")
        return CONTENT_LAYERS[config]

    def call(self, y_true, y_pred):
        total = 0.0
        for w, a, b in zip(self.layer_weights, self._features(y_true),
                           self._features(y_pred)):
            total = total + w * ops.mean(ops.square(a - b), axis=(1, 2, 3))
        return total


def gram_matrix(feature_map):
    """(N, H, W, C) -> (N, C, C) Gram matrices F^T F / (C H W)."""
    shape = ops.shape(feature_map)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    flat = ops.reshape(feature_map, (n, -1, c))
    gram = ops.matmul(ops.transpose(flat, (0, 2, 1)), flat)
    return gram / ops.cast(c * h * w, gram.dtype)


class StyleLoss(_VGGLoss):
    """Style reconstruction loss (Gatys et al. 2016, as Johnson et al.):
    squared Frobenius distance of Gram matrices, summed over layers.

    Args: as `PerceptualLoss`; `layers` defaults to the first conv of every
    block (block1_conv1 ... block5_conv1).
    """

    default_name = "style_loss"

    def _default_layers(self, config):
        return STYLE_LAYERS

    def call(self, y_true, y_pred):
        total = 0.0
        for w, a, b in zip(self.layer_weights, self._features(y_true),
                           self._features(y_pred)):
            diff = gram_matrix(a) - gram_matrix(b)
            total = total + w * ops.sum(ops.square(diff), axis=(1, 2))
        return total
