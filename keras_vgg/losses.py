"""Perceptual and style losses on a fixed VGG (Johnson et al. 2016, Gatys
et al. 2016), written on `keras.ops`: any Keras backend, differentiable with
respect to the images.

    loss = keras_vgg.PerceptualLoss()                 # VGG16, block2_conv2
    style = keras_vgg.StyleLoss(network="E")          # VGG19, Gram matrices
    model.compile(optimizer="adam", loss=loss)

Both take RGB images in [0, 255] (`input_range=255`, the default) or in
[0, 1] (`input_range=1`) and apply the weights' preprocessing inside; the VGG
is frozen (its weights never train) and computes in the loss's `dtype`
(float32 unless asked, whatever the global mixed-precision policy). A
layer's features are its ReLU output (in the BN variants: after BN and
ReLU). A model compiled with either loss saves to a `.keras` file with the
loss's VGG weights and loads back with `keras.models.load_model`.

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

import os
import re

import keras
from keras import ops

from keras_vgg import configs
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

_CONV_NAME = re.compile(r"block(\d+)_conv(\d+)")


def _architecture(model):
    """The Table 1 configuration name ("A".."E") of a keras_vgg network,
    from its conv layers' names and kernel sizes (any width, BN or not);
    None for a network that matches none."""
    convs, lrn = [], False
    for layer in model.layers:
        match = _CONV_NAME.fullmatch(layer.name)
        if match and isinstance(layer, keras.layers.Conv2D):
            convs.append((int(match[1]), int(match[2]),
                          int(layer.kernel_size[0])))
        lrn = lrn or layer.name == "block1_lrn"
    for name, cfg in configs.CONFIGS.items():
        if cfg.lrn == lrn and convs == [c[:3] for c in cfg.convs]:
            return name
    return None


def _has_batch_norm(model):
    return any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in model.layers)


def _network(network, weights, batch_norm):
    """(the VGG, its preprocessing mode, its Table 1 configuration name or
    None, the entries of the loss's config that rebuild it)."""
    if isinstance(network, keras.Model):
        # The model's architecture goes into the config; its weights are
        # the extractor's, which a `.keras` file saves (see `get_config`).
        config = {"network": keras.saving.serialize_keras_object(network),
                  "weights": None, "batch_norm": _has_batch_norm(network)}
        return (network, vgg_layers.input_preprocessing(network) or "caffe",
                _architecture(network), config)
    model = vgg.VGG(network, include_top=False, weights=weights,
                    batch_norm=batch_norm, input_shape=(None, None, 3))
    name = configs.get_config(network).name
    config = {"network": name,
              "weights": os.fspath(weights) if weights is not None else None,
              "batch_norm": bool(batch_norm)}
    return model, weights_lib.preprocessing_for(weights), name, config


class _VGGLoss(keras.losses.Loss):
    """What both losses share: the frozen extractor, the input scaling and
    the configuration that rebuilds them."""

    default_name = None

    def __init__(self, network: str | keras.Model = "D",
                 layers: list[str] | None = None,
                 weights: str | None = "imagenet", batch_norm: bool = False,
                 input_range: int = 255,
                 layer_weights: list[float] | None = None,
                 preprocessing_mode: str | None = None,
                 name: str | None = None,
                 reduction: str = "sum_over_batch_size",
                 dtype: str | None = None):
        # dtype None is Keras's floatx (float32), not the global policy: a
        # loss keeps its precision under a mixed policy, and so must the
        # frozen VGG (bfloat16 features of near-identical images differ by
        # their rounding, not by the images).
        super().__init__(name=name or self.default_name, reduction=reduction,
                         dtype=dtype)
        if input_range not in (1, 255):
            raise ValueError("`input_range` must be 255 (pixels in [0, 255]) "
                             f"or 1 (in [0, 1]). Received: input_range="
                             f"{input_range!r}")
        model, mode, architecture, self._network_config = _network(
            network, weights, batch_norm)
        self.layer_names = tuple(layers) if layers else self._default_layers(
            architecture)
        if layer_weights is None:
            layer_weights = [1.0] * len(self.layer_names)
        if len(layer_weights) != len(self.layer_names):
            raise ValueError(
                f"`layer_weights` has {len(layer_weights)} values for "
                f"{len(self.layer_names)} layers {list(self.layer_names)}.")
        self.layer_weights = [float(w) for w in layer_weights]
        self.feature_layers = _relu_outputs(model, self.layer_names)
        # The extractor is an attribute of the loss, and so of a compiled
        # model's loss: `model.save` writes its weights into the `.keras`
        # file and `load_model` reads them back over the VGG that
        # `from_config` rebuilt, so a reloaded loss has the same weights
        # even when they were random (`weights=None`) or a given model's.
        self.extractor = features.feature_extractor(
            model, layers=list(dict.fromkeys(self.feature_layers)),
            dtype=self._dtype_policy.name)
        self.extractor.trainable = False
        self.input_range = input_range
        self.scale = 255.0 / input_range
        self.preprocessing = preprocessing_mode or mode
        preprocessing.check_mode(self.preprocessing)

    def _default_layers(self, architecture):
        raise NotImplementedError

    def _features(self, images):
        x = ops.cast(images, self.dtype) * self.scale
        x = preprocessing.apply(x, self.preprocessing)
        out = self.extractor(x, training=False)
        # The distances are taken in float32 whatever the VGG computes in.
        return [ops.cast(out[name], "float32")
                for name in self.feature_layers]

    def get_config(self):
        """The arguments that rebuild this loss: the configuration name and
        weights, or the given model's serialised architecture.

        `from_config` alone builds the VGG again: the weight set or file is
        read again, `weights=None` and a given model get new random weights.
        A model compiled with the loss and saved to a `.keras` file also
        holds the extractor's weights, which `keras.models.load_model` puts
        back: the reloaded loss gives the same values.
        """
        config = super().get_config()
        config.update(
            self._network_config, layers=list(self.layer_names),
            input_range=self.input_range,
            layer_weights=list(self.layer_weights),
            preprocessing_mode=self.preprocessing,
            dtype=self._dtype_policy.name)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("network"), dict):
            config["network"] = keras.saving.deserialize_keras_object(
                config["network"])
        return cls(**config)


def _relu_outputs(model, names):
    """The layers whose outputs the loss compares: a conv's ReLU, which in
    the BN variants is the separate `<conv>_relu` layer after its BN (the
    conv itself gives pre-BN, pre-ReLU values)."""
    present = {layer.name for layer in model.layers}
    return tuple(f"{name}_relu" if f"{name}_relu" in present else name
                 for name in names)


@keras.saving.register_keras_serializable(package="keras_vgg")
class PerceptualLoss(_VGGLoss):
    """Feature reconstruction loss (Johnson et al. 2016).

    Args:
        network: a configuration name ("D": VGG16, "E": VGG19, ...) built
            with `weights`, or a keras_vgg network (its own weights; caffe
            preprocessing unless it holds a Preprocessing layer; its
            configuration is read from its layers).
        layers: layer names; default block2_conv2 for VGG16, block4_conv2
            for VGG19 (required for other networks). A conv's output is
            taken after its ReLU, in the BN variants after BN and ReLU.
        weights: with a configuration name: "imagenet", "tv_in1k", a file or
            None (random: for tests only).
        batch_norm: with a configuration name: the BN variant.
        input_range: 255 for pixels in [0, 255], 1 for [0, 1].
        layer_weights: one weight per layer (default 1 each).
        preprocessing_mode: override the preprocessing ("caffe", "torch",
            "none").
        name, reduction: as any `keras.losses.Loss`.
        dtype: the dtype policy of the loss and of its frozen VGG; default
            float32 (Keras's floatx), even under a mixed global policy.

    The loss is serialisable (registered as "keras_vgg>PerceptualLoss"): a
    model compiled with it saves to a `.keras` file, and
    `keras.models.load_model` (after `import keras_vgg`) restores it with
    the same VGG weights (see `get_config`).
    """

    default_name = "perceptual_loss"

    def _default_layers(self, architecture):
        if architecture not in CONTENT_LAYERS:
            found = (f"configuration {architecture!r}" if architecture
                     else "no Table 1 configuration")
            raise ValueError(
                "`layers` is needed: default content layers exist for "
                f"configurations {sorted(CONTENT_LAYERS)} only, and the "
                f"network is {found}.")
        return CONTENT_LAYERS[architecture]

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


@keras.saving.register_keras_serializable(package="keras_vgg")
class StyleLoss(_VGGLoss):
    """Style reconstruction loss (Gatys et al. 2016, as Johnson et al.):
    squared Frobenius distance of Gram matrices, summed over layers.

    Args: as `PerceptualLoss`; `layers` defaults to the first conv of every
    block (block1_conv1 ... block5_conv1).
    """

    default_name = "style_loss"

    def _default_layers(self, architecture):
        return STYLE_LAYERS

    def call(self, y_true, y_pred):
        total = 0.0
        for w, a, b in zip(self.layer_weights, self._features(y_true),
                           self._features(y_pred)):
            diff = gram_matrix(a) - gram_matrix(b)
            total = total + w * ops.sum(ops.square(diff), axis=(1, 2))
        return total
