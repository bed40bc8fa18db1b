"""TensorFlow Lite / LiteRT export, with quantisation and a check against
the Keras model.

The .tflite model takes RGB pixels in [0, 255] (float32, or uint8 for an
int8 model with `--int8_io`), applies the weights' preprocessing itself and
outputs class probabilities.  Its input is the training crop (fixed size) or,
with `--dynamic_size`, any size of at least the crop (the fully
convolutional network; call `resize_tensor_input` before `allocate_tensors`).
A smaller image gives NaN: the file's metadata entry "keras_vgg" (JSON)
holds `minimum_image_size` ({"minimum": [rows, cols], "reason"}), which
`export.litert.LiteModel` checks before running an image.

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
printed and written to `<output without .tflite>.verification.json`, with
the classes of the images compared on (`class_counts`: they are drawn from
every class alike).

Smaller files (`export.compress`): `--fc_rank=N` / `--fc_energy=F` (fc1
and fc2 as their truncated SVD), `--prune=SPARSITY` (`--prune_convs`),
`--cluster=N`, each one-shot or fine-tuned on `--finetune_data`
(`--finetune_steps`); they combine with every `--quantize` but qat (SVD
alone goes with qat too).  The verification then compares the file with
the uncompressed model and adds the ranks, sparsity, cluster count,
parameters and gzip size (pruning and clustering shrink the gzip size; the
file itself only with SVD, or pruning at `--quantize=none`).

This module is the command line and the `export_tflite` dispatcher; the
converter and the LiteRT runner live in `export.litert`, the calibration
images in `export.calibration`, the QAT copy in `export.tf_keras_bridge`
and the localiser in `export.tflite_localizer`.

Usage:
    python -m export.tflite --model=runs/demo --quantize=int8 \\
        --calibration_data=builtin --output=/tmp/vgg_int8.tflite
    python -m export.tflite --model=runs/demo --quantize=int8 \\
        --fc_rank=64 --prune=0.5 --cluster=16 --finetune_data=builtin \\
        --output=/tmp/vgg_small.tflite
"""

import os

import keras
import numpy as np
from absl import app
from absl import flags

import keras_vgg
from export import calibration
from export import common
from export import compress
from export import litert
from export import tf_keras_bridge
from export import tflite_localizer
from keras_vgg.layers import preprocessing_conv
from pipelines import entry
from pipelines.report import format_table


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


def export_tflite(source, output, quantize="none", dynamic_size=False,
                  int8_io=False, calibration_data="builtin",
                  calibration_steps=100, data_dir=None, verify_images=50,
                  qat_steps=20, overwrite=False, top_k=5, compression=None):
    """Converts, verifies, writes the JSON and `output` (only once
    verified: `litert.write_verified`).

    Args:
        source: a classifier `keras_vgg.runs.Run` or a run dir / .keras
            path, or a `common.LocalizerSource`: then a crop model whose
            outputs are probabilities, top_k_scores, top_k_indices and
            boxes (`top_k` of them; see `export.localizer`).
        calibration_data: a `pipelines.sources.load_source` spec: the
            int8 / QAT images (split "train") and the verification images
            (split "validation").  None: verify on nothing.
        verify_images: how many validation images to compare on (0: skip).
        compression: an `export.compress.Compression` (low-rank FC layers,
            pruning, clustering, fine-tuning) applied before conversion;
            the verification then compares with the uncompressed model.

    Returns:
        The verification dict (with "quantize", "dynamic_size", "int8_io",
        "output", and the compression's fields), or {} when not verified.
    """
    if not common.is_export_source(source):
        source = common.load_export_model(source)
    litert.check_quantize(quantize)
    compression = (compression or compress.Compression()).check()
    if compression.active:
        _check_compression(source, compression, quantize)
    if isinstance(source, common.LocalizerSource):
        if dynamic_size:
            raise ValueError("--dynamic_size is for classifiers: a "
                             "localiser's TFLite model takes the crop "
                             "(central-crop protocol).")
        return tflite_localizer.export_tflite_localizer(
            source, output, quantize, int8_io, calibration_data,
            calibration_steps, data_dir, verify_images, top_k, overwrite)
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output!r} exists; pass --overwrite.")
    if quantize in ("int8", "qat") and calibration_data is None:
        raise ValueError(f"--quantize={quantize} needs --calibration_data.")
    reference = pixel_model(source, dynamic_size)
    compressed = {}
    if compression.active:
        source, compressed = compress.compress(source, compression, data_dir)
    keras_model = (pixel_model(source, dynamic_size) if compressed
                   else reference)
    q, crop = source.test_scale, source.crop
    representative = None
    # LiteRT's sparse weight encoding runs (XNNPack) for float32 only.
    sparse = compression.prune is not None and quantize == "none"
    if quantize == "int8":
        representative = calibration.calibration_images(
            calibration_data, "train", data_dir, q, crop, calibration_steps)
    if quantize == "qat":
        converted_model = tf_keras_bridge.qat_pixel_model(
            source, calibration_data, data_dir, steps=qat_steps,
            dynamic_size=dynamic_size, calibration_steps=calibration_steps)
        flatbuffer = litert.convert(converted_model, "qat", int8_io=int8_io)
    else:
        flatbuffer = litert.convert(keras_model, quantize, representative,
                                    int8_io, sparse=sparse)
    minimum = litert.minimum_image_size(reference)
    if minimum is not None:  # a --dynamic_size model: LiteModel checks it
        flatbuffer = litert.with_metadata(
            flatbuffer, {"minimum_image_size": minimum})

    def check(flatbuffer):
        if calibration_data is None or not verify_images:
            return {}
        # Dynamic models are checked at Q x Q (a size other than the crop).
        size = q if dynamic_size else crop
        images, class_counts = calibration.sampled_images(
            calibration_data, "validation", data_dir, q, size, verify_images)
        report = litert.verify(flatbuffer, reference, images)
        report.update(quantize=quantize, dynamic_size=bool(dynamic_size),
                      int8_io=bool(int8_io), input_size=size,
                      output=os.path.abspath(output),
                      calibration_data=calibration_data,
                      class_counts=class_counts)
        if compression.active:
            report.update(compressed, sparse_encoding=sparse)
            report.update(_compressed_report(flatbuffer, keras_model,
                                             reference, images))
        return report

    return litert.write_verified(output, flatbuffer, check, overwrite)


def _check_compression(source, compression, quantize):
    if isinstance(source, common.LocalizerSource):
        raise ValueError("--fc_rank, --fc_energy, --prune and --cluster "
                         "compress classifiers; a localiser (--classifier) "
                         "is exported uncompressed.")
    if quantize == "qat" and compression.uses_tfmot:
        raise ValueError("--prune, --cluster and --finetune_data do not "
                         "combine with --quantize=qat (tfmot's pruning- and "
                         "clustering-preserving QAT is not wired here); use "
                         "--quantize=int8.")
    compress.check_model(source, compression)


def _compressed_report(flatbuffer, keras_model, reference, images):
    """The compression's part of the verification JSON: gzip size and the
    compressed float model's agreement with the original."""
    got = np.asarray(keras_model.predict(images, batch_size=16, verbose=0))
    expected = np.asarray(reference.predict(images, batch_size=16,
                                            verbose=0))
    return {
        "reference": "uncompressed float Keras model",
        "gzip_size_bytes": compress.compressed_size(flatbuffer),
        "compressed_keras_top1_agreement": float(
            np.mean(got.argmax(1) == expected.argmax(1))),
        "compressed_parameters": int(keras_model.count_params()),
        "parameters": int(reference.count_params()),
    }


def define_flags(flag_values=None):
    fv = flag_values or flags.FLAGS
    common.define_model_flags(fv)
    # So that --help lists common's flags with this command's own flags.
    flags.adopt_module_key_flags(common, flag_values=fv)
    flags.DEFINE_string("output", None, ".tflite file to write.",
                        flag_values=fv)
    flags.DEFINE_enum("quantize", "none", litert.QUANTIZE, "Quantisation.",
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
    _define_compression_flags(fv)


def _define_compression_flags(fv):
    flags.DEFINE_integer("fc_rank", None, "Low-rank FC layers: fc1 and fc2 "
                         "become their truncated SVD of this rank, two "
                         "Dense layers each (at most min(inputs, units) of "
                         "each layer).", flag_values=fv)
    flags.DEFINE_float("fc_energy", None, "Instead of --fc_rank: per layer "
                       "the smallest rank keeping this fraction of the sum "
                       "of squared singular values, in (0, 1] (a rank over "
                       "in*out/(in+out) makes the layer larger: see "
                       "fc_ranks and compressed_parameters in the JSON).",
                       flag_values=fv)
    flags.DEFINE_float("prune", None, "Magnitude pruning (tfmot) of fc1 "
                       "and fc2 (or their SVD factors; the output layer is "
                       "left whole) to this sparsity, in (0, 1): "
                       "fine-tuned on --finetune_data with the sparsity "
                       "rising gradually, else one-shot (the smallest "
                       "weights zeroed, no training). Pruning shrinks the "
                       "gzip size (reported), and the file itself only at "
                       "--quantize=none (LiteRT sparse encoding).",
                       flag_values=fv)
    flags.DEFINE_bool("prune_convs", False, "With --prune: prune the "
                      "convolutions too.", flag_values=fv)
    flags.DEFINE_integer("cluster", None, "Weight clustering (tfmot) of fc1 "
                         "and fc2 (or their SVD factors): at most this many "
                         "distinct values per layer (>= 2); fine-tuned on "
                         "--finetune_data, "
                         "else one-shot (k-means). Shrinks the gzip size.",
                         flag_values=fv)
    flags.DEFINE_string("finetune_data", None, "Source spec (as "
                        "--calibration_data) whose training images (central "
                        "crops at Q, labels unused) fine-tune the compressed "
                        "model's Dense layers to the uncompressed model's "
                        "probabilities (distillation); none: no "
                        "fine-tuning.", flag_values=fv)
    flags.DEFINE_integer("finetune_steps", 300, "Fine-tuning SGD steps (per "
                         "stage: pruning, clustering).", flag_values=fv)
    flags.DEFINE_float("finetune_lr", 1e-2, "Fine-tuning learning rate.",
                       flag_values=fv)


def compression_from_flags(fv):
    """The `export.compress.Compression` the flags ask for."""
    for name in ("finetune_steps", "finetune_lr"):
        if fv[name].present and not fv.finetune_data:
            raise ValueError(f"--{name} needs --finetune_data.")
    return compress.Compression(
        fc_rank=fv.fc_rank, fc_energy=fv.fc_energy, prune=fv.prune,
        prune_convs=fv.prune_convs, cluster=fv.cluster,
        finetune_data=fv.finetune_data, finetune_steps=fv.finetune_steps,
        finetune_lr=fv.finetune_lr).check()


def main(argv):
    del argv
    fv = flags.FLAGS
    if not fv.output:
        raise app.UsageError("--output is required.")
    compression = compression_from_flags(fv)
    source = common.model_from_flags(fv)
    report = export_tflite(
        source, fv.output, fv.quantize, fv.dynamic_size, fv.int8_io,
        fv.calibration_data, fv.calibration_steps, fv.data_dir,
        fv.verify_images, fv.qat_steps, fv.overwrite, fv.top_k,
        compression)
    if report:
        keys = ("quantize", "size_bytes", "images", "top1_agreement",
                "max_abs_prob_diff", "latency_ms", "keras_latency_ms")
        if "mean_box_iou" in report:
            keys = keys[:5] + ("mean_box_iou",) + keys[5:]
        if "gzip_size_bytes" in report:
            keys = keys[:2] + ("gzip_size_bytes",) + keys[2:]
        print(format_table(keys, [[
            f"{report[k]:.4g}" if isinstance(report[k], float) else report[k]
            for k in keys]]))
        print(f"Wrote {fv.output} and {litert.verification_path(fv.output)}")
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
