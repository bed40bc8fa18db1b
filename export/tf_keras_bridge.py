"""A tf_keras (Keras 2) copy of a Keras 3 VGG classifier, for the tools that
take only Keras 2 models: tensorflow-model-optimization's quantisation-aware
training (`python -m export.tflite --quantize=qat`).

The copy is built from Table 1 (`keras_vgg.configs`, the same data that
`keras_vgg.vgg.VGG` reads) with the same layer names, then given the Keras 3
model's weights layer by layer, by name.  Like `export.tflite.pixel_model`
it can start with the weights' preprocessing as a fixed 1x1 convolution
named "preprocessing", so that it takes RGB pixels in [0, 255].

Not mirrored (ValueError): A-LRN (the LRN layer has neither a tfmot
quantisation rule nor an int8 TFLite kernel), models that are not a
`keras_vgg.VGG` classifier with its Flatten head, and the fully
convolutional (`--dynamic_size`) model.

Example:
>>> tk_model = to_tf_keras(model, "A", width_multiplier=0.125,
...                        classes=5, input_shape=(32, 32, 3))
>>> qat = qat_model(tk_model)
"""

import os

import numpy as np
import tensorflow as tf

from keras_vgg import configs
from keras_vgg import layers as vgg_layers

PREPROCESSING = "preprocessing"


def _tf_keras():
    import tf_keras

    return tf_keras


def _scaled(width, multiplier):
    # The same rule as keras_vgg.vgg._scaled.
    return max(1, int(round(width * multiplier)))


def _check_supported(cfg):
    if cfg.lrn:
        raise ValueError(
            f"Configuration {cfg.name!r} has local response normalisation "
            "(block1_lrn), which the tf_keras bridge does not mirror: "
            "tensorflow-model-optimization has no quantisation rule for it "
            "and TFLite no int8 LRN kernel. Use --quantize=int8 (post-"
            "training) for A-LRN, or a configuration without LRN.")


def _activation_name(activation):
    if activation is None:
        return None
    name = getattr(activation, "__name__", activation)
    if name in ("softmax", "linear"):
        return None if name == "linear" else "softmax"
    raise ValueError(f"The predictions layer's activation {name!r} is not "
                     "mirrored (softmax or none).")


def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def infer_architecture(model):
    """What `keras_vgg.VGG` was called with to build `model` (a Keras 3
    classifier with the Flatten head), read from its layers.

    Returns:
        dict: config, batch_norm, width_multiplier, classes, input_shape,
        dropout, classifier_activation, preprocessing (the mode of an
        in-model `keras_vgg.layers.Preprocessing` layer, else None).

    Raises:
        ValueError: not a VGG classifier the bridge can mirror.
    """
    convs = {layer.name: layer for layer in model.layers
             if layer.name.startswith("block") and "_conv" in layer.name
             and not layer.name.endswith(("_bn", "_relu"))}
    if "block1_conv1" not in convs or _layer(model, "fc1") is None:
        raise ValueError(
            f"Model {model.name!r} is not a keras_vgg.VGG classifier (no "
            "block1_conv1 / fc1 layers); the tf_keras bridge mirrors only "
            "those.")
    lrn = _layer(model, "block1_lrn") is not None
    config = None
    for cfg in configs.CONFIGS.values():
        names = {f"block{b}_conv{i}": k for b, i, k, _ in cfg.convs}
        if cfg.lrn == lrn and set(names) == set(convs) and all(
                tuple(convs[n].kernel_size) == (k, k)
                for n, k in names.items()):
            config = cfg
            break
    if config is None:
        raise ValueError(f"Model {model.name!r}: its conv layers match no "
                         "configuration of Table 1.")
    _check_supported(config)
    fc_units = int(model.get_layer("fc1").units)
    candidates = [fc_units / configs.FC_UNITS] + [
        convs[f"block{b}_conv{i}"].filters / f for b, i, _, f in config.convs]
    width = None
    for m in candidates:
        if _scaled(configs.FC_UNITS, m) == fc_units and all(
                _scaled(f, m) == convs[f"block{b}_conv{i}"].filters
                for b, i, _, f in config.convs):
            width = m
            break
    if width is None:
        raise ValueError(f"Model {model.name!r}: its layer widths match no "
                         "single width_multiplier.")
    dropout = _layer(model, "fc1_dropout")
    predictions = model.get_layer("predictions")
    preprocessing = None
    for layer in model.layers:
        if isinstance(layer, vgg_layers.Preprocessing):
            preprocessing = None if layer.mode == "none" else layer.mode
    return {
        "config": config.name,
        "batch_norm": _layer(model, "block1_conv1_bn") is not None,
        "width_multiplier": width,
        "classes": int(predictions.units),
        "input_shape": tuple(model.inputs[0].shape[1:]),
        "dropout": float(dropout.rate) if dropout is not None else 0.0,
        "classifier_activation": _activation_name(predictions.activation),
        "preprocessing": preprocessing,
    }


def build_tf_keras(config, batch_norm=False, width_multiplier=1.0,
                   classes=1000, input_shape=(224, 224, 3), dropout=0.5,
                   classifier_activation="softmax", preprocessing=None,
                   name=None, input_name="pixels"):
    """The tf_keras VGG classifier of `config` (random weights), layer names
    as `keras_vgg.VGG`'s; with `preprocessing` ("caffe"/"torch") a leading
    fixed 1x1 conv "preprocessing" (`export.tflite.preprocessing_conv`'s
    weights), so that it takes pixels in [0, 255]."""
    tk = _tf_keras()
    L = tk.layers
    cfg = configs.get_config(config)
    _check_supported(cfg)
    inputs = L.Input(shape=tuple(input_shape), name=input_name)
    x = inputs
    if preprocessing not in (None, "none"):
        from export.tflite import preprocessing_conv

        kernel, bias = preprocessing_conv(preprocessing).get_weights()
        conv = L.Conv2D(3, 1, name=PREPROCESSING, trainable=False)
        x = conv(x)
        conv.set_weights([kernel, bias])
    for block, index, kernel, filters in cfg.convs:
        prefix = f"block{block}_conv{index}"
        x = L.Conv2D(_scaled(filters, width_multiplier), kernel,
                     padding="same",
                     activation=None if batch_norm else "relu",
                     name=prefix)(x)
        if batch_norm:
            x = L.BatchNormalization(epsilon=1e-5, momentum=0.9,
                                     name=prefix + "_bn")(x)
            x = L.ReLU(name=prefix + "_relu")(x)
        if index == len(cfg.blocks[block - 1]):
            x = L.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    units = _scaled(configs.FC_UNITS, width_multiplier)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(units, activation="relu", name="fc1")(x)
    x = L.Dropout(dropout, name="fc1_dropout")(x)
    x = L.Dense(units, activation="relu", name="fc2")(x)
    x = L.Dropout(dropout, name="fc2_dropout")(x)
    x = L.Dense(classes, activation=classifier_activation,
                name="predictions")(x)
    if name is None:
        name = cfg.alias + ("_bn" if batch_norm else "") + "_tf_keras"
    return tk.Model(inputs, x, name=name)


def _copy_weights(src, dst, skip=()):
    """Copies weights from `src` to `dst` layer by layer, by name, for every
    weighted layer of `dst` (but `skip`); the shapes must agree.  Returns
    the names copied."""
    copied = []
    for layer in dst.layers:
        target = layer.get_weights()
        if not target or layer.name in skip:
            continue
        other = _layer(src, layer.name)
        if other is None:
            raise ValueError(f"Layer {layer.name!r} has no namesake in model "
                             f"{src.name!r}.")
        values = other.get_weights()
        if [w.shape for w in values] != [w.shape for w in target]:
            raise ValueError(
                f"Layer {layer.name!r}: weight shapes "
                f"{[w.shape for w in values]} do not match "
                f"{[w.shape for w in target]}.")
        layer.set_weights(values)
        copied.append(layer.name)
    return copied


def to_tf_keras(model, config=None, batch_norm=None, width_multiplier=None,
                classes=None, input_shape=None, preprocessing=None,
                name=None):
    """The tf_keras copy of the Keras 3 VGG classifier `model`, weights
    included.

    Args:
        model: a Keras 3 `keras_vgg.VGG` classifier (Flatten head).
        config, batch_norm, width_multiplier, classes, input_shape: what
            `model` was built with; None: read from the model (and checked
            against it either way, through the weight shapes).
        preprocessing: "caffe" / "torch": start with the fixed 1x1
            preprocessing conv (as `export.tflite.pixel_model` does for a
            model without its own preprocessing); None: from an in-model
            `Preprocessing` layer, if any.

    Raises:
        ValueError: an architecture the bridge does not mirror (A-LRN, not a
            VGG classifier) or arguments that disagree with `model`.
    """
    arch = infer_architecture(model)
    given = {"config": None if config is None
             else configs.get_config(config).name,
             "batch_norm": batch_norm, "width_multiplier": width_multiplier,
             "classes": classes,
             "input_shape": None if input_shape is None
             else tuple(input_shape)}
    for key, value in given.items():
        if value is not None and value != arch[key]:
            raise ValueError(f"{key}={value!r} does not match the model "
                             f"({arch[key]!r}).")
    mode = arch.pop("preprocessing")
    if preprocessing not in (None, "none"):
        if mode is not None:
            raise ValueError(f"Model {model.name!r} already holds its "
                             f"preprocessing ({mode!r}).")
        mode = preprocessing
    tk_model = build_tf_keras(preprocessing=mode,
                              name=name or f"{model.name}_tf_keras", **arch)
    _copy_weights(model, tk_model, skip=(PREPROCESSING,))
    return tk_model


def copy_back(tf_keras_model, keras_model):
    """Copies the weights of a (plain, not quantisation-wrapped) tf_keras
    copy back into the Keras 3 model, by layer name.  Returns the names
    copied."""
    return _copy_weights(tf_keras_model, keras_model)


# -- quantisation-aware training ---------------------------------------------

def _tfmot():
    # tfmot sets TF_USE_LEGACY_KERAS=1 for the whole process when imported;
    # keep the environment as it was for the rest of the program.
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
    tfmot = _tfmot()
    tk = _tf_keras()
    quantized = tfmot.quantization.keras.quantize_model(tf_keras_model)
    softmax = tf_keras_model.get_layer("predictions").activation
    from_logits = getattr(softmax, "__name__", "") != "softmax"
    quantized.compile(
        optimizer=tk.optimizers.SGD(learning_rate, momentum=momentum),
        loss=tk.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"])
    return quantized


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
    tk = _tf_keras()
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
    probe = tk.Model(float_model.inputs, [wanted[k] for k in keys])
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


def training_batches(spec, data_dir=None, scale=256, crop=224,
                     batch_size=16, split="train"):
    """Endless (pixels [0, 255], labels) batches of `split` from the same
    pipeline that gives `export.tflite.calibration_images` its images
    (evaluation rescale to `scale`, central `crop`, no preprocessing)."""
    from pipelines import augment
    from pipelines import sources

    source = sources.load_source(spec, split, data_dir=data_dir)
    dataset = augment.make_dataset(source, training=False,
                                   batch_size=batch_size, scale=scale,
                                   crop=crop, preprocessing="none",
                                   deterministic=True)
    return dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int64))).repeat()


def qat_pixel_model(source, calibration_data, data_dir=None, steps=20,
                    dynamic_size=False, batch_size=16, learning_rate=1e-4,
                    calibration_steps=100):
    """The quantisation-aware, fine-tuned tf_keras pixel model of an
    `export.common.ExportModel`: bridge, `quantize_model`, activation
    ranges measured on `calibration_steps` training images
    (`calibrate_ranges`), then `steps` SGD steps on training batches of
    `calibration_data`.  Convert it with `export.tflite.convert(model,
    "qat")`."""
    if dynamic_size:
        raise ValueError("--quantize=qat does not support --dynamic_size "
                         "(the tf_keras bridge mirrors only the fixed-size "
                         "classifier); use --quantize=int8 for it.")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"--qat_steps={steps!r}: expected an int >= 0.")
    preprocessing = (None if source.preprocessing == "none"
                     else source.preprocessing)
    tk_model = to_tf_keras(source.model, preprocessing=preprocessing)
    quantized = qat_model(tk_model, learning_rate=learning_rate)
    from export.tflite import calibration_images

    images = calibration_images(calibration_data, "train", data_dir,
                                source.test_scale, source.crop,
                                max(1, calibration_steps))
    calibrate_ranges(quantized, tk_model, images, batch_size)
    if steps:
        batches = training_batches(calibration_data, data_dir, source.test_scale,
                                   source.crop, batch_size)
        quantized.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    return quantized


def max_abs_difference(keras_model, tf_keras_model, images):
    """Largest |difference| between the two models' outputs on `images`."""
    a = np.asarray(keras_model(images, training=False))
    b = np.asarray(tf_keras_model(images, training=False))
    return float(np.max(np.abs(a - b)))
