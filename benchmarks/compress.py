"""A VGG16 that fits a phone: low-rank FC layers, pruning and clustering
with int8 (`python -m export.tflite --fc_rank / --prune / --cluster`), in
one process.

    python -m benchmarks.compress [--work_dir=/tmp/keras_vgg_compress]
        [--classifier=runs/demo] [--full_width] [--finetune_steps=500]

Two models, each exported as int8 (full-integer, calibrated on the built-in
training images) uncompressed and compressed four ways: low rank (SVD of
fc1 and fc2), magnitude pruning of the Dense layers, clustering of the
Dense layers, and all three together.

- The trained `demo` classifier (narrow net A with BN, 64-pixel crops;
  trained into `--work_dir` unless `--classifier` names a run): file size,
  gzip size, LiteRT latency (1 and 2 threads), top-1 agreement with the
  float Keras model and validation top-1 accuracy on the built-in
  dataset's validation split.  Compressed rows are fine-tuned on the
  built-in training split (`--finetune_steps`; 0: one-shot).
- With `--full_width`: VGG16 at 224 with its default (Glorot) random
  weights, for file size and latency: compressed one-shot (no data of its
  1000 classes here).  Conversion of this model is heavy: several GB of
  memory and minutes per row.

The FC settings are the same fraction of the FC width for both: rank
`--rank_fraction` of it, `--sparsity`, `--clusters` centroids.
"""

import os
import time

import keras
from absl import flags

import keras_vgg
from export import calibration
from export import common
from export import compress
from export import litert
from export import tflite
from pipelines import entry
from pipelines import recipes
from pipelines import train
from pipelines.report import format_table

FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("work_dir", "/tmp/keras_vgg_compress",
                        "Where the demo run and the .tflite files go.")
    flags.DEFINE_string("classifier", None, "A trained classification run "
                        "(default: train the demo recipe into work_dir).")
    flags.DEFINE_string("data_dir", None, "Cache of the built-in dataset.")
    flags.DEFINE_bool("full_width", False, "Also the full-width VGG16 at "
                      "224 (heavy: minutes and GBs per row).")
    flags.DEFINE_float("rank_fraction", 1 / 16, "fc1/fc2 rank as a fraction "
                       "of the FC width (4096 for VGG16).")
    flags.DEFINE_float("sparsity", 0.9, "Pruning sparsity of the `prune` "
                       "row.")
    flags.DEFINE_float("all_sparsity", 0.5, "Pruning sparsity of the `all` "
                       "row (after the SVD).")
    flags.DEFINE_integer("clusters", 16, "Centroids per Dense layer.")
    flags.DEFINE_float("energy", 0.95, "The `energy` row's --fc_energy.")
    flags.DEFINE_integer("finetune_steps", 500, "Fine-tuning steps of the "
                         "demo rows (0: one-shot).")
    flags.DEFINE_float("finetune_lr", 1e-2, "Their learning rate.")
    flags.DEFINE_integer("calibration_images", 50, "int8 calibration "
                         "images.")
    flags.DEFINE_integer("full_verify_images", 8, "Images the full-width "
                         "rows are checked on.")
    flags.DEFINE_list("rows", ["int8", "svd", "energy", "prune", "cluster",
                               "all"], "The demo classifier's rows.")
    flags.DEFINE_list("full_rows", ["int8", "svd", "all", "prune",
                                    "cluster"], "The full-width rows.")


def _settings(width, finetune, keys):
    rank = max(1, round(FLAGS.rank_fraction * width))
    tune = dict(finetune_data="builtin", finetune_steps=FLAGS.finetune_steps,
                finetune_lr=FLAGS.finetune_lr) if finetune else {}
    every = {
        "int8": ("int8", {}),
        "svd": (f"SVD r={rank} + int8", dict(fc_rank=rank)),
        "energy": (f"SVD energy {FLAGS.energy:g} + int8",
                   dict(fc_energy=FLAGS.energy)),
        "prune": (f"prune {FLAGS.sparsity:g} + int8",
                  dict(prune=FLAGS.sparsity)),
        "cluster": (f"cluster {FLAGS.clusters} + int8",
                    dict(cluster=FLAGS.clusters)),
        "all": (f"SVD r={rank} + prune {FLAGS.all_sparsity:g} + cluster "
                f"{FLAGS.clusters} + int8",
                dict(fc_rank=rank, prune=FLAGS.all_sparsity,
                     cluster=FLAGS.clusters)),
    }
    for key in keys:
        label, kwargs = every[key]
        if kwargs:
            kwargs = dict(kwargs, **tune)
        yield label, compress.Compression(**kwargs)


def _latency(lite, images, repeats=10):
    lite.predict_one(images[0])
    start = time.perf_counter()
    for i in range(repeats):
        lite.predict_one(images[i % len(images)])
    return 1000 * (time.perf_counter() - start) / repeats


def _rows(source, width, images, labels, tag, finetune, verify_images,
          keys):
    """One table row per setting, printed as it is measured."""
    rows = []
    float_accuracy = None
    if labels is not None:
        probs = tflite.pixel_model(source).predict(images, batch_size=32,
                                                   verbose=0)
        float_accuracy = float((probs.argmax(1) == labels).mean())
        rows.append((f"{tag}: float Keras", "-", "-", "-", "-", "1.000",
                     f"{float_accuracy:.3f}", "-"))
        print(f"  {rows[-1]}", flush=True)
    for label, compression in _settings(width, finetune, keys):
        path = os.path.join(FLAGS.work_dir, f"{tag}_{len(rows)}.tflite")
        start = time.perf_counter()
        report = tflite.export_tflite(
            source, path, "int8", calibration_data="builtin",
            calibration_steps=FLAGS.calibration_images,
            data_dir=FLAGS.data_dir, verify_images=verify_images,
            overwrite=True, compression=compression)
        seconds = time.perf_counter() - start
        with open(path, "rb") as f:
            flat = f.read()
        lats = [_latency(litert.LiteModel(model_content=flat,
                                          num_threads=t), images)
                for t in (1, 2)]
        accuracy = "-"
        if labels is not None:
            got = litert.LiteModel(model_content=flat).predict(images)
            accuracy = f"{(got.argmax(1) == labels).mean():.3f}"
        rows.append((f"{tag}: {label}", f"{len(flat) / 1e6:.2f}",
                     f"{compress.compressed_size(flat) / 1e6:.2f}",
                     f"{lats[0]:.1f}", f"{lats[1]:.1f}",
                     f"{report['top1_agreement']:.3f}", accuracy,
                     f"{seconds:.0f}"))
        print(f"  {rows[-1]}", flush=True)
    return rows


def _demo_classifier():
    classifier = FLAGS.classifier
    if not classifier:
        classifier = os.path.join(FLAGS.work_dir, "classifier")
        if not os.path.isfile(os.path.join(classifier, "model.keras")):
            print(f"Training the demo classifier into {classifier} ...")
            train.train(recipes.RECIPES["demo"], dataset="builtin",
                        model_dir=classifier, data_dir=FLAGS.data_dir,
                        verbose=0)
    return common.load_export_model(classifier)


def main(argv):
    del argv
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    source = _demo_classifier()
    width = int(source.model.get_layer("fc1").units)
    images, labels = calibration.labelled_images(
        "builtin", "validation", FLAGS.data_dir, source.test_scale,
        source.crop, run=source)
    print(f"Demo classifier {source.name} (FC width {width}), "
          f"{len(images)} validation images:")
    rows = _rows(source, width, images, labels, "demo",
                 FLAGS.finetune_steps > 0, len(images), FLAGS.rows)
    if FLAGS.full_width:
        keras.utils.set_random_seed(0)
        vgg16 = common.load_export_model(keras_vgg.VGG16(), q=224)
        full_images = calibration.calibration_images(
            "builtin", "validation", FLAGS.data_dir, 256, 224,
            FLAGS.full_verify_images)
        print("Full-width VGG16 at 224 (random weights):")
        rows += _rows(vgg16, 4096, full_images, None, "VGG16", False,
                      FLAGS.full_verify_images, FLAGS.full_rows)
    print(f"\nint8 TFLite (full integer); compressed demo rows fine-tuned "
          f"{FLAGS.finetune_steps} steps per stage (distillation, lr "
          f"{FLAGS.finetune_lr:g}), full-width rows one-shot:")
    print(format_table(["model", "MB", "gzip MB", "latency ms (1 thr)",
                        "latency ms (2 thr)", "top-1 agreement",
                        "val top-1", "export s"], rows))


if __name__ == "__main__":
    _define_flags()
    entry.run(main, __name__)
