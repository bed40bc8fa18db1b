"""TensorFlow Lite / LiteRT export, with quantisation and a check against
the Keras model.

The .tflite model takes RGB pixels in [0, 255] (float32, or uint8 for an
int8 model with `--int8_io`), applies the weights' preprocessing itself and
outputs class probabilities.  Its input is the training crop (fixed size) or,
with `--dynamic_size`, any size of at least the crop (the fully
convolutional network; call `resize_tensor_input` before `allocate_tensors`).

Quantisation (`--quantize`):
    none     float32
    fp16     float16 weights (dequantised to float32 at run time)
    dynamic  int8 weights, float activations (dynamic-range)
    int8     full-integer: int8 weights and activations, ranges calibrated on
             `--calibration_steps` images of `--calibration_data` read by the
             training input pipeline (`pipelines.augment.make_dataset`)
    qat      quantisation-aware fine-tuning (`export.tf_keras_bridge`), then
             full-integer conversion

After conversion the file is run with `ai_edge_litert.interpreter.Interpreter`
on validation images of the calibration source and compared with the Keras
model; size, top-1 agreement, max abs probability difference and latency are
printed and written to `<output without .tflite>.verification.json`.

Usage:
    python -m export.tflite --model=runs/demo --quantize=int8 \\
        --calibration_data=builtin --output=/tmp/vgg_int8.tflite
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

import numpy as np
import keras
import tensorflow as tf

import keras_vgg
from export import common
from pipelines import entry

QUANTIZE = ("none", "fp16", "dynamic", "int8", "qat")


def preprocessing_conv(mode, name="preprocessing"):
    """The weights' preprocessing as a fixed 1x1 convolution (channel
    permutation and scale as the kernel, the mean as the bias): the same
    numbers as `keras_vgg.layers.Preprocessing`, but one op that the int8
    converter quantises well (a ReverseV2 + Sub pair there cost 30-40 % top-1
    agreement in full-integer models of the tiny test network)."""
    from keras_vgg import preprocessing as vgg_preprocessing

    kernel = np.zeros((1, 1, 3, 3), np.float32)
    if mode == "caffe":
        for out in range(3):  # BGR output channel `out` is RGB 2 - out
            kernel[0, 0, 2 - out, out] = 1.0
        bias = -np.asarray(vgg_preprocessing.CAFFE_MEAN_BGR, np.float32)
    elif mode == "torch":
        std = np.asarray(vgg_preprocessing.TORCH_STD, np.float32)
        mean = np.asarray(vgg_preprocessing.TORCH_MEAN, np.float32)
        for c in range(3):
            kernel[0, 0, c, c] = 1.0 / (255.0 * std[c])
        bias = -mean / std
    else:
        raise ValueError(f"No preprocessing conv for mode {mode!r}.")
    conv = keras.layers.Conv2D(3, 1, name=name)
    conv.build((None, None, None, 3))
    conv.set_weights([kernel, bias])
    return conv


def pixel_model(source, dynamic_size=False):
    """The Keras model that is converted: RGB pixels [0, 255] in,
    probabilities out, preprocessing inside.  Fixed crop x crop input, or
    any size (the fully convolutional network, spatially averaged) with
    `dynamic_size`."""
    if dynamic_size:
        body = keras_vgg.fully_convolutional(source.model, average=True)
        shape = (None, None, 3)
    else:
        body = source.model
        shape = (source.crop, source.crop, 3)
    inputs = keras.Input(shape=shape, name="pixels")
    x = inputs
    if source.preprocessing != "none":
        x = preprocessing_conv(source.preprocessing)(x)
    outputs = body(x, training=False)
    return keras.Model(inputs, outputs, name=f"{source.model.name}_pixels")


def calibration_images(spec="builtin", split="train", data_dir=None,
                       scale=256, crop=224, count=100, batch_size=1):
    """Up to `count` raw RGB crops (float32 [0, 255], numpy (n, crop, crop,
    3)) from the evaluation input pipeline: smallest side to `scale`,
    central crop (crop=None: the whole rescaled image, one at a time)."""
    from pipelines import augment
    from pipelines import sources

    source = sources.load_source(spec, split, data_dir=data_dir)
    dataset = augment.make_dataset(source, training=False,
                                   batch_size=batch_size, scale=scale,
                                   crop=crop, preprocessing="none",
                                   deterministic=True)
    images = []
    for batch, _ in dataset:
        images.extend(np.asarray(batch, np.float32))
        if len(images) >= count:
            break
    if not images:
        raise ValueError(f"--calibration_data={spec!r} gave no images for "
                         f"split {split!r}.")
    return np.stack(images[:count])


def convert(keras_model, quantize="none", representative=None,
            int8_io=False):
    """TFLite flatbuffer bytes of `keras_model` (a pixel model).

    Args:
        quantize: one of QUANTIZE ("qat" expects a model already trained
            with fake quantisation; it converts like "int8").
        representative: for "int8": numpy images (n, h, w, 3) in [0, 255].
        int8_io: with "int8"/"qat": uint8 input pixels instead of float32.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize={quantize!r}: expected one of "
                         f"{QUANTIZE}.")
    if int8_io and quantize not in ("int8", "qat"):
        raise ValueError("--int8_io needs --quantize=int8 or qat.")
    # Works for Keras 3 and (for QAT) tf_keras models alike.
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize in ("int8", "qat"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            if representative is None or len(representative) == 0:
                raise ValueError("--quantize=int8 needs calibration images.")

            def dataset():
                for image in representative:
                    yield [np.asarray(image, np.float32)[None]]

            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # For "qat" the fake-quantisation ops give every range: the model
        # converts to integer kernels without TFLITE_BUILTINS_INT8, which TF
        # 2.21's converter would refuse here for want of a representative
        # dataset (its metrics pass does not look at the graph).
        if int8_io:
            converter.inference_input_type = tf.uint8
    return converter.convert()


def quantize_input(pixels, details):
    """Float pixels -> the dtype of a LiteRT input (`details`: its entry of
    `get_input_details()`), rounded and clipped with its quantisation."""
    x = np.asarray(pixels, np.float32)
    dtype = details["dtype"]
    if dtype == np.float32:
        return x
    scale, zero = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min,
                   info.max).astype(dtype)


class LiteModel:
    """A .tflite classifier run by LiteRT: `predict(pixels)` takes float
    RGB pixels [0, 255] of one size (N, H, W, 3), quantises them when the
    input is integer, resizes the input when needed, returns float
    probabilities (N, classes)."""

    def __init__(self, model_content=None, model_path=None, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model_content,
                                       model_path=model_path,
                                       num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._shape = tuple(self.input["shape"])

    def _set_shape(self, shape):
        if tuple(shape) != self._shape:
            self.interpreter.resize_tensor_input(self.input["index"],
                                                 list(shape))
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._shape = tuple(shape)

    def predict_one(self, image):
        x = np.asarray(image, np.float32)[None]
        self._set_shape(x.shape)
        self.interpreter.set_tensor(self.input["index"],
                                    quantize_input(x, self.input))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y[0]

    def predict(self, images):
        return np.stack([self.predict_one(image) for image in images])


def verify(tflite_bytes, keras_model, images):
    """Compares the .tflite model with the Keras pixel model on `images`.

    Returns:
        dict: size_bytes, images, top1_agreement, max_abs_prob_diff,
        mean_abs_prob_diff, latency_ms (mean per image, batch 1, LiteRT),
        keras_latency_ms.
    """
    lite = LiteModel(model_content=tflite_bytes)
    lite.predict_one(images[0])  # warm up (allocation, first-run packing)
    start = time.perf_counter()
    got = lite.predict(images)
    latency = (time.perf_counter() - start) / len(images)
    expected = np.asarray(keras_model.predict(images, batch_size=16,
                                              verbose=0))
    start = time.perf_counter()
    for image in images[:8]:
        keras_model(image[None], training=False)
    keras_latency = (time.perf_counter() - start) / min(len(images), 8)
    diff = np.abs(got - expected)
    return {
        "size_bytes": len(tflite_bytes),
        "images": int(len(images)),
        "top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "latency_ms": 1000.0 * latency,
        "keras_latency_ms": 1000.0 * keras_latency,
    }


def verification_path(output):
    root, ext = os.path.splitext(output)
    return (root if ext == ".tflite" else output) + ".verification.json"


def export_tflite(source, output, quantize="none", dynamic_size=False,
                  int8_io=False, calibration_data="builtin",
                  calibration_steps=100, data_dir=None, verify_images=50,
                  qat_steps=20, overwrite=False, top_k=5):
    """Converts, writes `output` atomically, verifies, writes the JSON.

    Args:
        source: a `common.ExportModel` or a run dir / .keras path, or an
            `export.localizer.LocalizerSource`: then a crop model whose
            outputs are probabilities, top_k_scores, top_k_indices and
            boxes (`top_k` of them; see `export.localizer`).
        calibration_data: a `pipelines.sources.load_source` spec: the
            int8 / QAT images (split "train") and the verification images
            (split "validation").  None: verify on nothing.
        verify_images: how many validation images to compare on (0: skip).

    Returns:
        The verification dict (with "quantize", "dynamic_size", "int8_io",
        "output"), or {} when not verified.
    """
    if not common.is_export_source(source):
        source = common.load_export_model(source)
    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize={quantize!r}: expected one of "
                         f"{QUANTIZE}.")
    if not isinstance(source, common.ExportModel):
        from export import tflite_localizer

        if dynamic_size:
            raise ValueError("--dynamic_size is for classifiers: a "
                             "localiser's TFLite model takes the crop "
                             "(central-crop protocol).")
        return tflite_localizer.export_tflite_localizer(
            source, output, quantize, int8_io, calibration_data,
            calibration_steps, data_dir, verify_images, top_k, overwrite)
    if quantize == "qat":
        try:
            from export import tf_keras_bridge  # noqa: F401
        except ImportError:
            raise ValueError("--quantize=qat is not available yet: "
                             "export/tf_keras_bridge.py (the tf_keras copy "
                             "of the model that tfmot needs) is not written."
                             ) from None
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output!r} exists; pass --overwrite.")
    keras_model = pixel_model(source, dynamic_size)
    q, crop = source.q, source.crop
    representative = None
    if quantize in ("int8", "qat") and calibration_data is None:
        raise ValueError(f"--quantize={quantize} needs --calibration_data.")
    if quantize == "int8":
        representative = calibration_images(calibration_data, "train",
                                            data_dir, q, crop,
                                            calibration_steps)
    if quantize == "qat":
        from export import tf_keras_bridge

        converted_model = tf_keras_bridge.qat_pixel_model(
            source, calibration_data, data_dir, steps=qat_steps,
            dynamic_size=dynamic_size, calibration_steps=calibration_steps)
        flatbuffer = convert(converted_model, "qat", int8_io=int8_io)
    else:
        flatbuffer = convert(keras_model, quantize, representative, int8_io)
    common.atomic_write_file(output, flatbuffer, overwrite=overwrite)
    report = {}
    if calibration_data is not None and verify_images:
        # Dynamic models are checked at Q x Q (a size other than the crop).
        size = q if dynamic_size else crop
        images = calibration_images(calibration_data, "validation",
                                    data_dir, q, size, verify_images)
        report = verify(flatbuffer, keras_model, images)
        report.update(quantize=quantize, dynamic_size=bool(dynamic_size),
                      int8_io=bool(int8_io), input_size=size,
                      output=os.path.abspath(output),
                      calibration_data=calibration_data)
        common.atomic_write_file(verification_path(output),
                                 json.dumps(report, indent=2) + "\n",
                                 overwrite=True)
    return report


def define_flags(flag_values=None):
    fv = flag_values or flags.FLAGS
    common.define_model_flags(fv)
    flags.DEFINE_string("output", None, ".tflite file to write.",
                        flag_values=fv)
    flags.DEFINE_enum("quantize", "none", QUANTIZE, "Quantisation.",
                      flag_values=fv)
    flags.DEFINE_string("calibration_data", "builtin", "Source spec of the "
                        "calibration and verification images (builtin, "
                        "tfrecord:GLOB, folder:DIR, a tfds name).",
                        flag_values=fv)
    flags.DEFINE_integer("calibration_steps", 100, "Calibration images.",
                         flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Data directory of the source.",
                        flag_values=fv)
    flags.DEFINE_integer("verify_images", 50, "Validation images to compare "
                         "on (0: no check).", flag_values=fv)
    flags.DEFINE_bool("dynamic_size", False, "Any input size (fully "
                      "convolutional).", flag_values=fv)
    flags.DEFINE_bool("int8_io", False, "uint8 input pixels (int8/qat).",
                      flag_values=fv)
    flags.DEFINE_integer("qat_steps", 20, "QAT fine-tuning steps.",
                         flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "Localiser (--classifier): boxes of "
                         "this many top classes.", flag_values=fv)


def main(argv):
    del argv
    fv = flags.FLAGS
    if not fv.output:
        raise app.UsageError("--output is required.")
    try:
        source = common.model_from_flags(fv)
        report = export_tflite(
            source, fv.output, fv.quantize, fv.dynamic_size, fv.int8_io,
            fv.calibration_data, fv.calibration_steps, fv.data_dir,
            fv.verify_images, fv.qat_steps, fv.overwrite, fv.top_k)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from pipelines.report import format_table

    if report:
        keys = ("quantize", "size_bytes", "images", "top1_agreement",
                "max_abs_prob_diff", "latency_ms", "keras_latency_ms")
        if "mean_box_iou" in report:
            keys = keys[:5] + ("mean_box_iou",) + keys[5:]
        print(format_table(keys, [[
            f"{report[k]:.4g}" if isinstance(report[k], float) else report[k]
            for k in keys]]))
        print(f"Wrote {fv.output} and {verification_path(fv.output)}")
    else:
        print(f"Wrote {fv.output} (not verified)")
    return 0


def run():
    """The command line, as `python -m export.tflite` runs it; also the
    `vgg-export-tflite` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
