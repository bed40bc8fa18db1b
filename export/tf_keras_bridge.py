"""A tf_keras (Keras 2) copy of a Keras 3 VGG classifier, for the tools that
take only Keras 2 models: tensorflow-model-optimization's quantisation-aware
training (`python -m export.tflite --quantize=qat`), pruning and clustering
(`export.compress`).

The copy is made from the Keras 3 model itself, layer by layer: each layer
of the (plain chain) functional model becomes the tf_keras layer of the same
class, built from its `get_config()` under the same name, and the weights
follow by name (`keras_vgg.weights.copy_layers`).  There is no second
description of the network here.  A `keras_vgg.layers.Preprocessing` layer,
or the `preprocessing` argument, becomes the fixed 1x1 convolution
`keras_vgg.layers.preprocessing_conv` (as in `export.tflite.pixel_model`),
so that the copy can take RGB pixels in [0, 255].

Not mirrored (ValueError): layers of other classes, A-LRN's local response
normalisation in particular (it has neither a tfmot quantisation rule nor an
int8 TFLite kernel), and models that are not a single chain of layers.

Example (a Keras 3 `model`, e.g. `keras_vgg.VGG("A")`):

    tf_keras_model = to_tf_keras(model, preprocessing="caffe")
    quantized = qat_model(tf_keras_model)
    copy_back(tf_keras_model, model)
"""

import inspect
import os

import numpy as np

from export import calibration
from keras_vgg import layers as vgg_layers
from keras_vgg import weights as weights_lib

PREPROCESSING = "preprocessing"

# The Keras 3 layer classes that have a tf_keras namesake with the same
# config and weights.
MIRRORED = ("Conv2D", "BatchNormalization", "ReLU", "Activation",
            "MaxPooling2D", "Flatten", "Dense", "Dropout",
            "GlobalAveragePooling2D", "GlobalMaxPooling2D")

# Config keys not carried over: initialisers (the weights are copied),
# regularisers and constraints (training-time extras of the Keras 3 model),
# and the dtype policy (the copy is float32, the graph tfmot quantises).
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def load_tf_keras():
    """The tf_keras module."""
    # tf_keras is an optional dependency, needed only for QAT and the
    # tfmot compressions (export.compress).
    import tf_keras

    return tf_keras


def _unsupported(layer, model):
    if isinstance(layer, vgg_layers.LocalResponseNormalization):
        return ValueError(
            f"Layer {layer.name!r} of model {model.name!r} is local response "
            "normalisation (A-LRN), which the tf_keras bridge does not "
            "mirror: tensorflow-model-optimization has no quantisation rule "
            "for it and TFLite no int8 LRN kernel. Use --quantize=int8 "
            "(post-training) for A-LRN, or a configuration without LRN.")
    return ValueError(
        f"Layer {layer.name!r} of model {model.name!r} is a "
        f"{type(layer).__name__}, which the tf_keras bridge does not mirror "
        f"(it mirrors {', '.join(MIRRORED)} and keras_vgg's "
        "Preprocessing).")


def _chain(model):
    """The layers of `model` after its InputLayer, checked to be a single
    chain (each layer takes the previous one's output)."""
    layers = list(model.layers)
    if (len(model.inputs) != 1 or len(model.outputs) != 1 or not layers
            or type(layers[0]).__name__ != "InputLayer"):
        raise ValueError(f"Model {model.name!r} is not a single-input, "
                         "single-output functional model; the tf_keras "
                         "bridge mirrors only a plain chain of layers.")
    for previous, layer in zip(layers, layers[1:]):
        if layer.input is not previous.output:
            raise ValueError(
                f"Model {model.name!r} is not a plain chain of layers "
                f"(layer {layer.name!r} does not take {previous.name!r}'s "
                "output); the tf_keras bridge mirrors only chains.")
    if layers[-1].output is not model.outputs[0]:
        raise ValueError(f"Model {model.name!r}: its output is not its last "
                         "layer's.")
    return layers[1:]


def mirror_layer(layer):
    """The tf_keras layer of the same class, name and config as the Keras 3
    `layer` (one of MIRRORED), unbuilt and without weights."""
    tf_keras_class = getattr(load_tf_keras().layers, type(layer).__name__)
    accepted = inspect.signature(tf_keras_class.__init__).parameters
    config = {key: value for key, value in layer.get_config().items()
              if (key in accepted or key in ("name", "trainable"))
              and not key.endswith(_DROPPED_SUFFIXES)}
    return tf_keras_class(**config)


def _mirror_conv(conv, x):
    """`x` through the tf_keras copy of the built Keras 3 conv `conv`,
    weights included (for the preprocessing conv, which has no namesake
    with weights in the Keras 3 model)."""
    copy = mirror_layer(conv)
    y = copy(x)
    copy.set_weights(conv.get_weights())
    return y


def _in_model_preprocessing(layers):
    for layer in layers:
        if isinstance(layer, vgg_layers.Preprocessing):
            return layer.mode
    return "none"


def to_tf_keras(model, preprocessing=None, name=None, input_name=None):
    """The tf_keras copy of the Keras 3 functional model `model` (a chain of
    MIRRORED layers, e.g. a `keras_vgg.VGG` network without LRN), weights
    included; its outputs equal `model`'s.

    Args:
        model: the Keras 3 model.
        preprocessing: "caffe" / "torch": start with the fixed 1x1
            preprocessing conv named "preprocessing" (as
            `export.tflite.pixel_model` does for a model without its own
            preprocessing).  An in-model `Preprocessing` layer becomes that
            conv in any case.
        name: the copy's name; default `model.name + "_tf_keras"`.
        input_name: the input's name; default `model`'s.

    Raises:
        ValueError: a layer or a topology the bridge does not mirror, or
            `preprocessing` for a model that holds its own.
    """
    tf_keras = load_tf_keras()
    layers = _chain(model)
    own = _in_model_preprocessing(layers)
    if preprocessing not in (None, "none") and own != "none":
        raise ValueError(f"Model {model.name!r} already holds its "
                         f"preprocessing ({own!r}).")
    input_layer = model.layers[0]
    inputs = tf_keras.Input(shape=tuple(model.inputs[0].shape[1:]),
                            name=input_name or input_layer.name)
    x = inputs
    if preprocessing not in (None, "none"):
        x = _mirror_conv(
            vgg_layers.preprocessing_conv(preprocessing, PREPROCESSING), x)
    copied = []
    for layer in layers:
        if isinstance(layer, vgg_layers.Preprocessing):
            if layer.mode != "none":
                x = _mirror_conv(
                    vgg_layers.preprocessing_conv(layer.mode, layer.name), x)
        elif type(layer).__name__ in MIRRORED:
            x = mirror_layer(layer)(x)
            if layer.weights:
                copied.append(layer.name)
        else:
            raise _unsupported(layer, model)
    tf_keras_model = tf_keras.Model(inputs, x,
                                    name=name or f"{model.name}_tf_keras")
    if copied:
        weights_lib.copy_layers(model, tf_keras_model, copied,
                                what=f"Model {model.name!r}")
    return tf_keras_model


def pixel_copy(source):
    """The tf_keras copy of a classifier `keras_vgg.runs.Run`'s model that
    takes RGB pixels [0, 255] (input "pixels"): its preprocessing as the
    leading fixed conv, as `export.tflite.pixel_model` puts it."""
    preprocessing = (None if source.preprocessing == "none"
                     else source.preprocessing)
    return to_tf_keras(source.model, preprocessing=preprocessing,
                       input_name="pixels")


def copy_back(tf_keras_model, keras_model):
    """Copies the weights of a (plain, not quantisation-wrapped) tf_keras
    copy back into the Keras 3 model, by layer name.  Returns the names
    copied."""
    return weights_lib.copy_layers(tf_keras_model, keras_model,
                                   what=f"Model {tf_keras_model.name!r}")


# -- quantisation-aware training ---------------------------------------------

def load_tfmot():
    """The tensorflow_model_optimization module."""
    # tensorflow-model-optimization is an optional dependency, needed only
    # for QAT, pruning and clustering.  It sets TF_USE_LEGACY_KERAS=1 for
    # the whole process when imported; keep the environment as it was for
    # the rest of the program.
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot


def qat_model(tf_keras_model, learning_rate=1e-4, momentum=0.9):
    """`tfmot.quantization.keras.quantize_model` of the tf_keras copy,
    compiled for fine-tuning (SGD, sparse categorical cross-entropy)."""
    quantized = load_tfmot().quantization.keras.quantize_model(
        tf_keras_model)
    return compile_for_finetuning(quantized, learning_rate, momentum)


def compile_for_finetuning(tf_keras_model, learning_rate=1e-4,
                           momentum=0.9):
    """Compiles a tf_keras classifier (or its tfmot wrapping) for
    fine-tuning: SGD with momentum, sparse categorical cross-entropy on its
    probabilities (or logits, when its last layer has no softmax).
    Returns the model."""
    tf_keras = load_tf_keras()
    activation = getattr(tf_keras_model.layers[-1], "activation", None)
    if activation is None:  # a tfmot wrapper: the layer it wraps
        inner = getattr(tf_keras_model.layers[-1], "layer", None)
        activation = getattr(inner, "activation", None)
    from_logits = getattr(activation, "__name__", "") != "softmax"
    tf_keras_model.compile(
        optimizer=tf_keras.optimizers.SGD(learning_rate, momentum=momentum),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits),
        metrics=["accuracy"])
    return tf_keras_model


def calibrate_ranges(quantized, float_model, images, batch_size=16):
    """Sets the activation ranges of the `quantize_model` output
    `quantized` to the ranges the float tf_keras model `float_model` shows
    on `images`.

    tfmot starts every activation range at [-6, 6] and moves it by an EMA
    of decay 0.999, so a few hundred fine-tuning steps leave the ranges of
    a trained VGG (activations in the tens or hundreds) clipped; measured
    ranges make even a short fine-tuning (or none) close to the float
    model.  Returns {variable name: value set}.
    """
    tf_keras = load_tf_keras()
    wanted = {}  # float tensor key -> (kind, layer)
    for layer in quantized.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        original = float_model.get_layer(inner.name)
        for v in layer.non_trainable_weights:
            base = v.name.split("/")[-1].split(":")[0]
            if base in ("post_activation_min", "output_min"):
                wanted[("out", inner.name)] = original.output
            elif base == "pre_activation_min":
                wanted[("in", inner.name)] = original.input
    keys = list(wanted)
    probe = tf_keras.Model(float_model.inputs, [wanted[k] for k in keys])
    lo = {k: np.inf for k in keys}
    hi = {k: -np.inf for k in keys}
    images = np.asarray(images, np.float32)
    for start in range(0, len(images), batch_size):
        outs = probe(images[start:start + batch_size], training=False)
        if len(keys) == 1:
            outs = [outs]
        for k, out in zip(keys, outs):
            out = np.asarray(out)
            if k[0] == "in":  # a Dense / Conv pre-activation
                layer = float_model.get_layer(k[1])
                kernel, bias = layer.get_weights()[:2]
                if out.ndim != 2:
                    continue
                out = out @ kernel + bias
            lo[k] = min(lo[k], float(out.min()))
            hi[k] = max(hi[k], float(out.max()))
    assigned = {}

    def assign(var, value):
        var.assign(value)
        assigned[var.name] = value

    pixel_lo = min(0.0, float(images.min()))
    pixel_hi = max(float(images.max()), pixel_lo + 1e-3)
    for layer in quantized.layers:
        inner = getattr(layer, "layer", None)
        for v in layer.non_trainable_weights:
            base = v.name.split("/")[-1].split(":")[0]
            if inner is None:  # the QuantizeLayer of the input
                if base.endswith("_min"):
                    assign(v, pixel_lo)
                elif base.endswith("_max"):
                    assign(v, pixel_hi)
                continue
            for prefix, kind in (("post_activation", "out"),
                                 ("output", "out"),
                                 ("pre_activation", "in")):
                key = (kind, inner.name)
                if key not in lo or not np.isfinite(lo[key]):
                    continue
                low = min(0.0, lo[key])
                high = max(hi[key], low + 1e-3)
                if base == prefix + "_min":
                    assign(v, low)
                elif base == prefix + "_max":
                    assign(v, high)
    return assigned


def qat_pixel_model(source, calibration_data, data_dir=None, steps=20,
                    dynamic_size=False, batch_size=16, learning_rate=1e-4,
                    calibration_steps=100):
    """The quantisation-aware, fine-tuned tf_keras pixel model of an
    classifier `keras_vgg.runs.Run`: bridge, `quantize_model`, activation
    ranges measured on `calibration_steps` training images
    (`calibrate_ranges`), then `steps` SGD steps on training batches of
    `calibration_data`.  Convert it with `export.litert.convert(model,
    "qat")`."""
    if dynamic_size:
        raise ValueError("--quantize=qat does not support --dynamic_size "
                         "(the tf_keras bridge mirrors only the fixed-size "
                         "classifier); use --quantize=int8 for it.")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"--qat_steps={steps!r}: expected an int >= 0.")
    tf_keras_model = pixel_copy(source)
    quantized = qat_model(tf_keras_model, learning_rate=learning_rate)
    images = calibration.calibration_images(
        calibration_data, "train", data_dir, source.test_scale, source.crop,
        max(1, calibration_steps))
    calibrate_ranges(quantized, tf_keras_model, images, batch_size)
    if steps:
        # Labels matched to the model's classes by name.
        batches = calibration.training_batches(
            calibration_data, data_dir, source.test_scale, source.crop,
            batch_size, run=source)
        quantized.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    return quantized


def max_abs_difference(keras_model, tf_keras_model, images):
    """Largest |difference| between the two models' outputs on `images`."""
    expected = np.asarray(keras_model(images, training=False))
    got = np.asarray(tf_keras_model(images, training=False))
    return float(np.max(np.abs(expected - got)))
