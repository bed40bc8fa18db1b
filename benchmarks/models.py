"""Inference speed of every configuration, against keras.applications.

    python -m benchmarks.models [--configs=A,D] [--batch_sizes=1,8]

Prints, per model and batch size, images/s at 224x224 and the achieved
GFLOP/s (2 FLOPs per multiply-accumulate of a direct convolution; oneDNN may
compute 3x3 convs with fewer, e.g. Winograd, so this can exceed the CPU's
peak: compare it between rows, not with the hardware), with
keras.applications VGG16 and VGG19 measured in the same process as the
baseline (ratio column).  Timings
are the median of `--repeats` calls after one warm-up call.
"""

import statistics
import time

from absl import flags

import keras_vgg
from pipelines import entry
from pipelines.report import format_table

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["A", "A-LRN", "B", "C", "D", "E"],
                  "keras_vgg configurations to time.")
flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement.")
flags.DEFINE_boolean("batch_norm", False, "Time the BN variants.")


def time_model(model, batch, repeats):
    import numpy as np

    x = np.random.RandomState(0).uniform(
        -100, 100, (batch, 224, 224, 3)).astype("float32")
    model.predict_on_batch(x)  # warm-up: tracing and allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main(argv):
    del argv
    import keras


    batches = [int(b) for b in FLAGS.batch_sizes]
    runs = [("keras.applications.VGG16", "D",
             lambda: keras.applications.VGG16(weights=None)),
            ("keras.applications.VGG19", "E",
             lambda: keras.applications.VGG19(weights=None))]
    for c in FLAGS.configs:
        runs.append((f"keras_vgg {c}" + (" BN" if FLAGS.batch_norm else ""), c,
                     lambda c=c: keras_vgg.VGG(c, batch_norm=FLAGS.batch_norm)))
    baseline = {}
    rows = []
    for label, config, build in runs:
        model = build()
        macs = keras_vgg.count_macs(config)
        for b in batches:
            ips = time_model(model, b, FLAGS.repeats)
            if label.startswith("keras.applications"):
                baseline[(config, b)] = ips
            base = baseline.get((config, b))
            ratio = f"{ips / base:.2f}" if base else "-"
            rows.append((label, b, f"{ips:.2f}", f"{2 * macs * ips / 1e9:.1f}",
                         ratio))
            print(f"  measured {label} batch {b}: {ips:.2f} images/s",
                  flush=True)
        del model
        keras.backend.clear_session()
    print()
    print(f"Inference at 224x224, backend {keras.backend.backend()}, "
          f"median of {FLAGS.repeats} calls:")
    print(format_table(["model", "batch", "images/s", "GFLOP/s",
                        "vs keras.applications (same config)"], rows))


if __name__ == "__main__":
    entry.run(main, __name__)
