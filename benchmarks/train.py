"""Training throughput: the keras_vgg trainer against keras.applications +
`model.fit`, on the same built-in data, in one process.

    python -m benchmarks.train [--crop=112] [--batch_size=16] [--steps=20]
    python -m benchmarks.train --crop=32 --steps=50 --steps_per_loop=1,10,50

Both train VGG16 (config D) from scratch with SGD (momentum 0.9) on batches
from the same `pipelines.augment.make_dataset` input.  The trainer runs its
steps `steps_per_loop` at a time in one compiled call (one row per value):
at small crops, where a step is short, the per-call dispatch and the loss
read back after each call show.  A last row is the compute ceiling: the
trainer's model stepped on one fixed batch in a bare `tf.function` (forward,
backward, SGD; no input pipeline, augmentation, weight decay or metrics),
which no loop over real data can beat; a loop's fraction of it is what its
overhead leaves.  All are built first and timed in turns, `--repeats`
rounds (the median is printed), so that a change in the machine's load
touches every row alike; the first steps of each (tracing) are excluded.
Prints images/s and the ratio to the baseline.
"""

import dataclasses
import statistics
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
flags.DEFINE_integer("crop", 112, "Training crop (the paper: 224).",
                     lower_bound=32)
flags.DEFINE_integer("batch_size", 16, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Timed steps per round (after warm-up); "
                     "a multiple of every --steps_per_loop is fairest.",
                     lower_bound=1)
flags.DEFINE_list("steps_per_loop", ["1"], "The trainer's steps per "
                  "compiled call, one row each (e.g. 1,10,50).")
flags.DEFINE_integer("repeats", 3, "Timed rounds (median printed).",
                     lower_bound=1)
flags.register_validator(
    "steps_per_loop", lambda v: all(str(k).isdigit() and int(k) >= 1
                                    for k in v),
    "--steps_per_loop takes whole numbers >= 1, e.g. 1,10,50.")
flags.DEFINE_string("data_dir", None, "Built-in dataset cache.")


def timed(run, images):
    start = time.perf_counter()
    run()
    return images / (time.perf_counter() - start)


def _baseline(data, crop, steps):
    """keras.applications.VGG16 + model.fit: warmed up, and a function
    that trains `steps` steps."""
    import keras

    model = keras.applications.VGG16(weights=None, input_shape=(crop, crop, 3),
                                      classes=5, classifier_activation=None)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data(), steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    return lambda: model.fit(data(), steps_per_epoch=steps, epochs=1,
                             verbose=0, shuffle=False)


def trainer_loops(trainer, steps, loops):
    """The trainer's loops, warmed up, as functions that train `steps`
    steps `k` at a time (the last loop shorter if k does not divide it)."""
    import tensorflow as tf

    iterator = iter(trainer._train_dataset(0, 0))
    trainer._train_loop(iterator, tf.constant(2))  # traces step and loop

    def run(k):
        left = steps
        while left:
            n = min(k, left)
            ran, loss, _ = trainer._train_loop(iterator, tf.constant(n))
            float(loss)  # the host reads the loss once per loop
            left -= int(ran)
    return {k: (lambda k=k: run(k)) for k in loops}


def compute_ceiling(model, batch, crop, steps):
    """`steps` bare training steps of `model` on one fixed batch, warmed
    up: forward, backward and SGD with momentum, nothing else."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    images = tf.random.stateless_uniform([batch, crop, crop, 3], (0, 0),
                                         -120.0, 150.0)
    labels = tf.zeros([batch], tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    float(step())

    def run():
        for _ in range(steps):
            loss = step()
        float(loss)
    return run


def main(argv):
    del argv
    import keras

    crop, batch, steps = FLAGS.crop, FLAGS.batch_size, FLAGS.steps
    loops = [int(k) for k in FLAGS.steps_per_loop]
    source = sources.load_source("builtin", "train", data_dir=FLAGS.data_dir)
    val = sources.load_source("builtin", "validation", data_dir=FLAGS.data_dir)

    def data():
        return augment.make_dataset(source, training=True, batch_size=batch,
                                    scale=(crop, crop * 2), crop=crop,
                                    repeat=True, seed=0)

    baseline = _baseline(data, crop, steps)
    # The keras_vgg trainer (custom loop, weight decay, top-k metrics).
    cfg = dataclasses.replace(
        recipes.RECIPES["vgg16_s256"], crop=crop, scale_min=crop,
        scale_max=crop * 2, batch_size=batch, steps_per_epoch=10_000,
        max_epochs=1, seed=0, checkpoint_every=10_000)
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = Trainer(cfg, source, val, model_dir,
                          distribute.make_strategy("one_device"), verbose=0)
        ours = trainer_loops(trainer, steps, loops)
        with trainer.strategy.scope():
            ceiling_model = trainer.task.build_model()
        ours["ceiling"] = compute_ceiling(ceiling_model, batch, crop, steps)
        speeds = {"base": []}
        for _ in range(FLAGS.repeats):
            speeds["base"].append(timed(baseline, steps * batch))
            for k, run in ours.items():
                speeds.setdefault(k, []).append(timed(run, steps * batch))
            print("  round (images/s): " + ", ".join(
                f"{name} {s[-1]:.1f}" for name, s in speeds.items()),
                flush=True)
    base = statistics.median(speeds["base"])
    rows = [("keras.applications.VGG16 + model.fit", f"{base:.2f}", "1.00")]
    for k in loops:
        ips = statistics.median(speeds[k])
        rows.append((f"keras_vgg trainer, steps_per_loop={k}", f"{ips:.2f}",
                     f"{ips / base:.2f}"))
    ceiling = statistics.median(speeds["ceiling"])
    rows.append(("compute ceiling: the trainer's model, one fixed batch",
                 f"{ceiling:.2f}", f"{ceiling / base:.2f}"))
    print(f"\nTraining VGG16 at {crop}x{crop}, batch {batch}, {steps} steps "
          f"per round, median of {FLAGS.repeats} rounds, built-in data, "
          f"backend {keras.backend.backend()}:")
    print(format_table(["loop", "images/s", "ratio"], rows))


if __name__ == "__main__":
    entry.run(main, __name__)
