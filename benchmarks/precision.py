"""float32 against mixed bfloat16 and mixed float16: speed, and the demo's
loss curve, in one process.

    python -m benchmarks.precision [--crop=112] [--batch_size=16] [--steps=10]
    python -m benchmarks.precision --demo_epochs=10 --seeds=0,1

Speed: VGG16 (config D) trained by the keras_vgg trainer (`--mixed_precision`
as `pipelines.train` sets it: the Keras mixed policy, loss scaling for
float16, the loss in float32) at `--crop`, and its inference at
`--image_size` (batch `--infer_batch`), per precision, timed in turns over
`--repeats` rounds (medians printed, ratios against float32).  A precision
the machine cannot run is listed with its error; float16 is only asked
for (`--precisions=none,bfloat16,float16`) where it has kernels (GPUs).

Curves (`--demo_epochs` > 0): the `demo` recipe trained for that many
epochs per precision and seed; prints each epoch's training loss and
validation top-1 per run, and per precision the mean and the spread
(max - min over seeds), so that a difference between precisions can be
weighed against the difference between seeds.
"""

import dataclasses
import statistics
import tempfile
import time

from absl import flags

import keras_vgg
from benchmarks import train as train_benchmark
from pipelines import distribute
from pipelines import entry
from pipelines import recipes
from pipelines import sources
from pipelines import train
from pipelines import trainer as trainer_lib
from pipelines.report import format_table

FLAGS = flags.FLAGS
# --crop, --batch_size, --steps, --repeats and --data_dir: benchmarks.train's.
# float16 is not in the default: CPUs without float16 kernels emulate it
# (on an AVX-512 machine its first two VGG16 steps at 64x64 ran over 8 min).
flags.DEFINE_list("precisions", ["none", "bfloat16"],
                  "--mixed_precision values to compare (none: float32; add "
                  "float16 on GPUs).")
flags.DEFINE_integer("image_size", 224, "Inference input size.")
flags.DEFINE_integer("infer_batch", 8, "Inference batch size.")
flags.DEFINE_integer("demo_epochs", 0, "Epochs of the demo recipe per "
                     "precision and seed (0: no curves).")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds of the demo runs.")

_NAMES = {"none": "float32", "bfloat16": "mixed_bfloat16",
          "float16": "mixed_float16"}


def _inference(precision, size, batch):
    """A VGG16 under the precision's policy, warmed up, as a function that
    runs one batch."""
    import keras
    import numpy as np
    import tensorflow as tf

    if precision != "none":
        keras.mixed_precision.set_global_policy(_NAMES[precision])
    try:
        model = keras_vgg.VGG("D", input_shape=(size, size, 3))
        if precision != "none":  # as the trainer builds it
            trainer_lib.float32_outputs(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = tf.constant(np.random.RandomState(0).uniform(
        -100, 100, (batch, size, size, 3)).astype("float32"))
    forward = tf.function(lambda x: model(x, training=False))
    forward(x).numpy()
    return lambda: forward(x).numpy()


def _speed_rows(source, val, model_dir):
    crop, batch, steps = FLAGS.crop, FLAGS.batch_size, FLAGS.steps
    runs, errors = {}, {}
    for precision in FLAGS.precisions:
        cfg = dataclasses.replace(
            recipes.RECIPES["vgg16_s256"], crop=crop, scale_min=crop,
            scale_max=crop * 2, batch_size=batch, steps_per_epoch=10_000,
            max_epochs=1, seed=0, checkpoint_every=10_000,
            mixed_precision=precision)
        try:
            trainer = train.Trainer(
                cfg, source, val, f"{model_dir}/{precision}",
                distribute.make_strategy("one_device"), verbose=0)
            step = train_benchmark.trainer_loops(trainer, steps, [1])[1]
            infer = _inference(precision, FLAGS.image_size,
                               FLAGS.infer_batch)
        except Exception as e:  # a precision without kernels on this CPU
            errors[precision] = f"{type(e).__name__}: {str(e)[:80]}"
            continue
        runs[precision] = (step, infer)
        print(f"  built {_NAMES[precision]}", flush=True)
    speeds = {p: ([], []) for p in runs}
    for _ in range(FLAGS.repeats):
        for precision, (step, infer) in runs.items():
            speeds[precision][0].append(
                train_benchmark.timed(step, steps * batch))
            speeds[precision][1].append(
                train_benchmark.timed(infer, FLAGS.infer_batch))
        print("  round (train, inference images/s): " + ", ".join(
            f"{_NAMES[p]} {s[0][-1]:.1f}, {s[1][-1]:.1f}"
            for p, s in speeds.items()), flush=True)
    medians = {p: [statistics.median(s) for s in pair]
               for p, pair in speeds.items()}
    base = medians.get("none")
    rows = []
    for precision in FLAGS.precisions:
        if precision in errors:
            rows.append((_NAMES[precision], "-", "-", "-", "-",
                         errors[precision]))
            continue
        ips = medians[precision]
        ratio = [f"{v / b:.2f}" if base else "-"
                 for v, b in zip(ips, base or ips)]
        rows.append((_NAMES[precision], f"{ips[0]:.2f}", ratio[0],
                     f"{ips[1]:.2f}", ratio[1], ""))
    return rows


def _curves(data_dir):
    """Per-epoch (train loss, val top-1) of the demo recipe, per precision
    and seed."""
    histories = {}
    for precision in FLAGS.precisions:
        for seed in (int(s) for s in FLAGS.seeds):
            cfg = dataclasses.replace(
                recipes.RECIPES["demo"], max_epochs=FLAGS.demo_epochs,
                seed=seed, mixed_precision=precision)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as model_dir:
                try:
                    metrics = train.train(cfg, model_dir=model_dir,
                                          data_dir=FLAGS.data_dir, verbose=0)
                except Exception as e:  # no kernels for it here
                    print(f"  {_NAMES[precision]}: {type(e).__name__}")
                    break
            histories[precision, seed] = [
                (h["train_loss"], h["val_top1_accuracy"])
                for h in metrics["history"]]
            print(f"  demo {_NAMES[precision]} seed {seed}: "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    return histories


def _curve_table(histories):
    precisions = [p for p in FLAGS.precisions
                  if any(key[0] == p for key in histories)]
    header, rows = ["epoch"], []
    for p in precisions:
        seeds = [s for (q, s) in histories if q == p]
        header += [f"{_NAMES[p]} loss (seeds {','.join(map(str, seeds))})",
                   "mean", "spread", "val top-1"]
    epochs = min(len(h) for h in histories.values())
    for epoch in range(epochs):
        row = [epoch + 1]
        for p in precisions:
            runs = [h[epoch] for (q, _), h in histories.items() if q == p]
            losses = [loss for loss, _ in runs]
            row += [" / ".join(f"{v:.4f}" for v in losses),
                    f"{statistics.mean(losses):.4f}",
                    f"{max(losses) - min(losses):.4f}",
                    " / ".join(f"{top1:.3f}" for _, top1 in runs)]
        rows.append(row)
    return header, rows


def main(argv):
    del argv
    import keras

    source = sources.load_source("builtin", "train", data_dir=FLAGS.data_dir)
    val = sources.load_source("builtin", "validation", data_dir=FLAGS.data_dir)
    with tempfile.TemporaryDirectory() as model_dir:
        rows = _speed_rows(source, val, model_dir)
    print(f"\nVGG16, training at {FLAGS.crop}x{FLAGS.crop} batch "
          f"{FLAGS.batch_size} ({FLAGS.steps} steps per round), inference at "
          f"{FLAGS.image_size}x{FLAGS.image_size} batch {FLAGS.infer_batch};"
          f" median of {FLAGS.repeats} rounds, backend "
          f"{keras.backend.backend()}:")
    print(format_table(["precision", "train images/s", "vs float32",
                        "inference images/s", "vs float32", "note"], rows))
    if FLAGS.demo_epochs:
        header, rows = _curve_table(_curves(FLAGS.data_dir))
        print(f"\nThe demo recipe, {FLAGS.demo_epochs} epochs: training loss "
              "per epoch (each seed, mean, spread = max - min over seeds) "
              "and validation top-1:")
        print(format_table(header, rows))


if __name__ == "__main__":
    entry.run(main, __name__)
