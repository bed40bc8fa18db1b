"""Training input through a tf.data service vs in this process.

    python -m benchmarks.data_service [--num_images=200] [--epochs=2]

Times `augment.make_dataset(training=True)` over the same synthetic JPEGs
as `benchmarks.input_pipeline` (on disk this time: workers read files),
in images/s: in this process, and through a dispatcher with 1 and with 2
workers started in this process on 127.0.0.1 (`pipelines.data_service`).
On one machine the workers share its cores with the trainer, so this
measures what the service costs (serialising batches, gRPC) rather than
what it buys: more machines' cores decoding.  The paths take turns, best
round kept; compare ratios from one run.
"""

import os
import tempfile

from absl import flags

from benchmarks.input_pipeline import time_datasets
from benchmarks.input_pipeline import write_jpegs
from pipelines import augment
from pipelines import data_service
from pipelines import entry
from pipelines import sources
from pipelines.report import format_table

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 200, "Synthetic JPEGs (350-450 px).",
                     lower_bound=1)
flags.DEFINE_integer("epochs", 2, "Timed passes over the images.",
                     lower_bound=1)
flags.DEFINE_integer("rounds", 2, "The paths take turns; the best counts.",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Images per batch.", lower_bound=1)
flags.DEFINE_integer("crop", 224, "Training crop.", lower_bound=1)


def main(argv):
    del argv
    crop = FLAGS.crop
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(tmp, FLAGS.num_images)
        source = sources.load_source(f"folder:{tmp}", val_fraction=0.0)

        def make(service=None):
            # Each pass over a service dataset is a new job on its workers.
            return augment.make_dataset(
                source, True, FLAGS.batch_size, scale=(256, 512), crop=crop,
                shuffle_buffer=FLAGS.num_images, drop_remainder=False,
                data_service=service)

        paths = {"in process (make_dataset)": make()}
        servers = []
        for workers in (1, 2):
            server, started, dispatcher = data_service.start(
                port=0, num_workers=workers, host="127.0.0.1")
            servers.append((server, started))
            paths[f"tf.data service, {workers} local worker(s)"] = make(
                f"grpc://{dispatcher}")
        best = dict(time_datasets(paths, FLAGS.epochs, FLAGS.rounds))
        for server, started in servers:
            for worker in started:
                worker.stop()
            server.stop()
    base = best["in process (make_dataset)"][0]
    print(f"{FLAGS.num_images} JPEGs, crop {crop}, batch "
          f"{FLAGS.batch_size}, best of {FLAGS.rounds} rounds of "
          f"{FLAGS.epochs} passes, {os.cpu_count()} CPUs (the workers run "
          "in this process: their CPU time counts)")
    print(format_table(["input", "images/s", "vs in process", "images/CPU-s"],
                       [[name, f"{v:.1f}", f"{v / base:.2f}x", f"{c:.0f}"]
                        for name, (v, c) in best.items()]))


if __name__ == "__main__":
    entry.run(main, __name__)
