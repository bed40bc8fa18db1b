"""The TFLite converter and the LiteRT runner, shared by the classifier
(`export.tflite`) and the localiser (`export.tflite_localizer`) exports:
`convert` a Keras model to flatbuffer bytes with one of `QUANTIZE`, run a
.tflite classifier (`LiteModel`), and compare it with the Keras model it
came from (`verify`, written beside the file at `verification_path`);
`write_verified` places a file only once it has been checked.

A Keras network refuses an image smaller than its windows
(`keras_vgg.layers.MinimumImageSize`); TFLite has no such op, and a
`--dynamic_size` model given one returns NaN.  So the smallest size goes
into the file's metadata (`with_metadata`, the flatbuffer's metadata entry
"keras_vgg", JSON) and `LiteModel` refuses a smaller image before running
it, with the Keras layer's own message.
"""

import contextlib
import io
import json
import os
import time
import warnings

import numpy as np
import tensorflow as tf

import pipelines
from export import common
from keras_vgg import atomic
from keras_vgg.layers import MinimumImageSize

QUANTIZE = ("none", "fp16", "dynamic", "int8", "qat")
# The name of this project's entry in a .tflite file's metadata.
METADATA_NAME = "keras_vgg"


def check_quantize(quantize):
    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize={quantize!r}: expected one of "
                         f"{QUANTIZE}.")
    return quantize


def convert(keras_model, quantize="none", representative=None,
            int8_io=False, sparse=False):
    """TFLite flatbuffer bytes of `keras_model` (a pixel model).

    Args:
        quantize: one of QUANTIZE ("qat" expects a model already trained
            with fake quantisation; it converts like "int8").
        representative: for "int8": numpy images (n, h, w, 3) in [0, 255].
        int8_io: with "int8"/"qat": uint8 input pixels instead of float32.
        sparse: LiteRT's sparse weight encoding (EXPERIMENTAL_SPARSITY) for
            mostly-zero weights; "none" only: LiteRT 2.3's XNNPack fails to
            prepare the sparse int8 / dynamic-range fully connected layers
            it makes.
    """
    check_quantize(quantize)
    if int8_io and quantize not in ("int8", "qat"):
        raise ValueError("--int8_io needs --quantize=int8 or qat.")
    # Works for Keras 3 and (for QAT) tf_keras models alike.  A Keras 3
    # model is saved through `model.export` here, which prints its endpoint
    # report (~60 TensorSpec lines) on stdout: not for the user.
    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if sparse and quantize != "none":
        raise ValueError("Sparse weight encoding needs --quantize=none "
                         f"(got {quantize!r}).")
    if sparse:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
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
    # The converter's C++ prints its quantisation settings on stderr, and
    # warns that int8 inputs carry no statistics (they need none here).
    with common.quiet_tensorflow(), \
            contextlib.redirect_stdout(io.StringIO()), \
            pipelines.native_lines_dropped(r"fully_quantize: "), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")
        return converter.convert()


def minimum_image_size(keras_model):
    """The config ({"minimum": [rows, cols], "reason": ...}) of the largest
    `MinimumImageSize` layer inside `keras_model` (nested models
    included), or None when it has none (a fixed-size model)."""
    def layers(model):
        for layer in model.layers:
            yield layer
            if hasattr(layer, "layers"):
                yield from layers(layer)

    checks = [layer for layer in layers(keras_model)
              if isinstance(layer, MinimumImageSize)]
    if not checks:
        return None
    largest = max(checks, key=lambda layer: layer.minimum)
    return {"minimum": list(largest.minimum), "reason": largest.reason}


def with_metadata(flatbuffer, metadata):
    """`flatbuffer` with `metadata` (a JSON-able dict) as its metadata entry
    `METADATA_NAME`, as the converter adds its own CONVERSION_METADATA."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in model.metadata or []
                      if m.name.decode() != METADATA_NAME] + [entry]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def read_metadata(model_content=None, model_path=None):
    """The `METADATA_NAME` dict of a .tflite file or its bytes; {} for a
    file without one (exported before it was written, or elsewhere).  Reads
    the flatbuffer in place: a file is mapped, not loaded."""
    import mmap

    from tensorflow.lite.python import schema_py_generated as schema

    def read(buf):
        model = schema.Model.GetRootAs(buf, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_NAME.encode():
                data = model.Buffers(entry.Buffer()).DataAsNumpy()
                return json.loads(np.asarray(data, np.uint8).tobytes())
        return {}

    if model_content is not None:
        return read(bytes(model_content))
    with open(model_path, "rb") as f, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return read(buf)


def interpreter(model_content=None, model_path=None, num_threads=2):
    """A LiteRT `Interpreter` of a .tflite file or its bytes."""
    # LiteRT is an optional dependency, needed only to run a .tflite model.
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model_content, model_path=model_path,
                       num_threads=num_threads)


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
    probabilities (N, classes).

    An image of another size than a fixed-size model's input, or smaller
    than a `--dynamic_size` model's smallest (`minimum_image_size`, from
    the file's metadata), is a ValueError naming both sizes."""

    def __init__(self, model_content=None, model_path=None, num_threads=2):
        self.interpreter = interpreter(model_content, model_path,
                                       num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        found = read_metadata(model_content, model_path).get(
            "minimum_image_size")
        # The Keras layer itself checks, so that both say the same.
        self.minimum = None if found is None else MinimumImageSize(
            found["minimum"], found.get("reason", ""))
        # Tensors are allocated at the first image's shape: a dynamic-size
        # model's default input [1, 1, 1, 3] is smaller than the network's
        # windows and fails XNNPack's "prepare", so it is never allocated.
        self._shape = None

    def _check_size(self, shape):
        fixed = [int(side) for side in self.input["shape_signature"][1:3]]
        if -1 not in fixed and list(shape[1:3]) != fixed:
            raise ValueError(
                f"Image size {shape[1]}x{shape[2]} (rows x columns) is not "
                f"the input size of this model, {fixed[0]}x{fixed[1]} (it "
                "was exported without --dynamic_size).")
        if self.minimum is not None:
            self.minimum.compute_output_shape(tuple(shape))

    def _set_shape(self, shape):
        if tuple(shape) == self._shape:
            return
        self._check_size(shape)
        if tuple(shape) != tuple(self.input["shape"]):
            self.interpreter.resize_tensor_input(self.input["index"],
                                                 list(shape))
        # LiteRT's C++ announces its XNNPACK delegate on stderr each time.
        with pipelines.native_lines_dropped(r"INFO: Created TensorFlow Lite"):
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


def keras_latency(keras_model, images, count=8):
    """Mean seconds per image of `keras_model` on up to `count` of
    `images`, one at a time (the LiteRT runs' batch size)."""
    start = time.perf_counter()
    for image in images[:count]:
        keras_model(image[None], training=False)
    return (time.perf_counter() - start) / min(len(images), count)


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
    diff = np.abs(got - expected)
    return {
        "size_bytes": len(tflite_bytes),
        "images": int(len(images)),
        "top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "latency_ms": 1000.0 * latency,
        "keras_latency_ms": 1000.0 * keras_latency(keras_model, images),
    }


def verification_path(output):
    """Where the verification JSON of .tflite file `output` goes."""
    root, ext = os.path.splitext(output)
    return (root if ext == ".tflite" else output) + ".verification.json"


def write_verified(output, flatbuffer, check, overwrite=False):
    """Writes `flatbuffer` to `output` only once `check` has passed.

    The file is written beside `output` under a temporary name; `check`
    (bytes -> verification dict, or {} for none) runs; its dict goes to
    `verification_path(output)`, then the file is renamed to `output`.  A
    check that raises leaves neither at `output`, where a device build
    would pick up a model nobody ran.  Returns the dict.
    """
    json_path = verification_path(output)
    with atomic.atomic_path(output, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
        report = check(flatbuffer)
        if report:
            atomic.atomic_write_file(json_path,
                                     json.dumps(report, indent=2) + "\n",
                                     overwrite=True)
        elif os.path.exists(json_path):
            # It described the file this one replaces.
            os.remove(json_path)
    return report
