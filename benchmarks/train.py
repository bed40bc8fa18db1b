"""Training throughput: the keras_vgg trainer against keras.applications +
`model.fit`, on the same built-in data, in one process.

    python -m benchmarks.train [--crop=112] [--batch_size=16] [--steps=20]

Both train VGG16 (config D) from scratch with SGD (momentum 0.9) on batches
from the same `pipelines.augment.make_dataset` input; the first steps
(tracing) are excluded.  Prints images/s and the ratio to the baseline.
"""

import dataclasses
import tempfile
import time

from absl import flags

from pipelines import augment
from pipelines import distribute
from pipelines import entry
from pipelines import recipes
from pipelines import sources
from pipelines.report import format_table
from pipelines.train import Trainer

FLAGS = flags.FLAGS
flags.DEFINE_integer("crop", 112, "Training crop (the paper: 224).")
flags.DEFINE_integer("batch_size", 16, "Global batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps (after 3 warm-up steps).")
flags.DEFINE_string("data_dir", None, "Built-in dataset cache.")


def main(argv):
    del argv
    import keras


    crop, batch, steps = FLAGS.crop, FLAGS.batch_size, FLAGS.steps
    source = sources.load_source("builtin", "train", data_dir=FLAGS.data_dir)
    val = sources.load_source("builtin", "validation", data_dir=FLAGS.data_dir)

    def data():
        return augment.make_dataset(source, training=True, batch_size=batch,
                                    scale=(crop, crop * 2), crop=crop,
                                    repeat=True, seed=0)

    rows = []
    # Baseline: keras.applications.VGG16 with model.fit.
    model = keras.applications.VGG16(weights=None, input_shape=(crop, crop, 3),
                                      classes=5, classifier_activation=None)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data(), steps_per_epoch=3, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data(), steps_per_epoch=steps, epochs=1, verbose=0)
    base = steps * batch / (time.perf_counter() - start)
    rows.append(("keras.applications.VGG16 + model.fit", f"{base:.2f}",
                 "1.00"))
    del model
    keras.backend.clear_session()

    # The keras_vgg trainer (custom loop, weight decay, top-k metrics).
    cfg = dataclasses.replace(
        recipes.RECIPES["vgg16_s256"], crop=crop, scale_min=crop,
        scale_max=crop * 2, batch_size=batch, steps_per_epoch=10_000,
        max_epochs=1, seed=0, checkpoint_every=10_000)
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = Trainer(cfg, source, val, model_dir,
                          distribute.make_strategy("one_device"), verbose=0)
        iterator = iter(trainer._train_dataset(0, 0))
        for _ in range(3):
            trainer._train_step(iterator)
        start = time.perf_counter()
        for _ in range(steps):
            loss = trainer._train_step(iterator)[0]
        float(loss)
        ours = steps * batch / (time.perf_counter() - start)
    rows.append(("keras_vgg trainer (VGG16)", f"{ours:.2f}",
                 f"{ours / base:.2f}"))
    print(f"\nTraining VGG16 at {crop}x{crop}, batch {batch}, {steps} steps, "
          f"built-in data, backend {keras.backend.backend()}:")
    print(format_table(["loop", "images/s", "ratio"], rows))


if __name__ == "__main__":
    entry.run(main, __name__)
