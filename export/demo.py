"""The export half of `make demo`: the demo run as deployable artifacts.

Takes the run `python -m pipelines.demo` trained (default `runs/demo`) and
writes, under `<run>/export/`: a SavedModel, the TF-Serving layout
(`serving/demo/<version>/`, models.config, warmup requests, Dockerfile,
docker-compose.yml) and a full-integer int8 TFLite file calibrated on the
built-in dataset, then prints what was checked: sizes, top-1 agreement with
the Keras model on real validation images, largest probability difference and
latency.  (It lives in `export/` because `pipelines` never imports `export`.)
"""

import os
import shutil
import time

import numpy as np
import tensorflow as tf
from absl import flags

from export import calibration
from export import common
from export import saved_model
from export import serving
from export import tflite
from pipelines import entry
from pipelines.report import format_table

FLAGS = flags.FLAGS


def export_demo(run, data_dir=None):
    """Exports `run`; returns the table rows that `main` prints."""
    if not os.path.isfile(os.path.join(run, "model.keras")):
        raise ValueError(f"--run={run!r} holds no model.keras: run "
                         "`python -m pipelines.demo` first.")
    out = os.path.join(run, "export")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    source = common.load_export_model(run)
    rows = []

    start = time.perf_counter()
    sm_dir = os.path.join(out, "saved_model")
    saved_model.export_saved_model(source, sm_dir)
    seconds = time.perf_counter() - start
    # The SavedModel against the Keras classifier on validation crops.
    images = calibration.calibration_images("builtin", "validation", data_dir,
                                       source.crop, source.crop, 50)
    loaded = tf.saved_model.load(sm_dir)
    probs = loaded.signatures["predict_images"](
        tf.constant(images, tf.float32))["probabilities"].numpy()
    keras_probs = tflite.pixel_model(source).predict(images, verbose=0)
    rows.append(("SavedModel (dense, flip)", _size(sm_dir),
                 f"{np.mean(probs.argmax(1) == keras_probs.argmax(1)):.3f}",
                 "-", f"{seconds:.1f} s export"))

    version = serving.export_for_serving(
        source, base_dir=os.path.join(out, "serving"), name="demo")
    rows.append((f"TF-Serving {os.path.relpath(version, run)}",
                 _size(version), "(same SavedModel + warmup)", "-", "-"))

    lite = os.path.join(out, "demo_int8.tflite")
    report = tflite.export_tflite(source, lite, quantize="int8",
                                  int8_io=True, calibration_data="builtin",
                                  data_dir=data_dir, calibration_steps=100)
    rows.append(("TFLite int8 (uint8 in)", _size(lite),
                 f"{report['top1_agreement']:.3f}",
                 f"{report['max_abs_prob_diff']:.4f}",
                 f"{report['latency_ms']:.2f} ms/image"))
    return rows


def _size(path):
    if os.path.isdir(path):
        total = sum(os.path.getsize(os.path.join(d, f))
                    for d, _, files in os.walk(path) for f in files)
    else:
        total = os.path.getsize(path)
    return f"{total / 1e6:.2f} MB"


def main(argv):
    del argv
    print(f"\nExporting {FLAGS.run}:")
    rows = export_demo(FLAGS.run, FLAGS.data_dir)
    print(format_table(["artifact", "size", "top-1 agreement with Keras",
                        "max |Δp|", "time"], rows))


def _define_flags():
    # Defined when run, not at import: tests import this module beside
    # others that define --data_dir.
    flags.DEFINE_string("run", "runs/demo", "Training run to export.")
    flags.DEFINE_string("data_dir", None, "Cache of the built-in dataset.")


def run():
    """The command line, as `python -m export.demo` (`make demo`) runs it."""
    _define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
