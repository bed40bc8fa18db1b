"""Input-pipeline throughput: decoding only the crop window vs everything.

    python -m benchmarks.input_pipeline --num_images 800 --epochs 2 --rounds 3

Writes `num_images` synthetic JPEGs (sides 350-450 px by default, about
ImageNet's; --min_side/--max_side change it) to a temporary folder, loads
their bytes into memory once (so file reads do not blur the comparison), and
times, in images per second through a parallel tf.data map, each image
reduced to its mean in the map (so that handing float images to Python does
not cap every path at the same copy speed):

    (a)  fused: header shape -> decode_and_crop_jpeg of the window -> resize
         to crop x crop (`augment.decode_window` + `tf.image.resize`)
    (a+) (a) inside the whole training pipeline as the trainer reads it,
         `make_dataset(training=True, deterministic=True,
         defer_pixel_ops=True)`: shuffle, the random draws, exact
         bad-image counting (per batch), batching, in order (exact counts
         at every step, exact resume); the flip, PCA lighting and
         preprocessing are left to the training step (on the accelerator)
    (a+) out of order: the same with `deterministic=False`
    (a+) pixel ops here: `defer_pixel_ops=False`, the ready batches that
         `make_dataset` gives by default (`model.fit`): flip, lighting and
         preprocessing run in the pipeline, per batch
    (a+) no counting: (a+) out of order with a plain parallel map +
         `ignore_errors` in place of `map_skipping_errors` (what exact
         counting costs)
    (b)  decode the whole image -> resize it so the smallest side is S ->
         crop (`augment.reference_crop`)
    (c)  decode the whole image, nothing else: what (b) can never beat,
         and (a) can, as it decodes less

The (a+) rows hand whole float batches on; each batch is reduced to its
images' means in a parallel map (the stand-in for the model, as the reduce
inside (a)'s parallel map is).  Ratios are against (b) and (a).

The paths take turns, best round kept, because a shared machine is noisy:
compare ratios from one run, not absolute numbers across runs.  The last
column, images per second of this process's CPU time, is what each path
costs; other processes' load changes it much less than the wall-clock
rate.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines import augment  # noqa: E402
from pipelines import sources  # noqa: E402
from pipelines import synthetic  # noqa: E402


def write_jpegs(directory, count, seed=0, sides=(350, 450)):
    """`count` JPEGs with sides drawn from `sides` under directory/shapes/."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(directory, "shapes")
    os.makedirs(folder)
    for i in range(count):
        image, _, _ = synthetic.render(i % synthetic.NUM_CLASSES, (seed, i))
        h, w = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        Image.fromarray(image).resize((w, h), Image.BILINEAR).save(
            os.path.join(folder, f"{i:05d}.jpg"), quality=90)
    return directory


def _passes(dataset, epochs):
    """(images per second, images per CPU second) over `epochs` passes."""
    count = 0
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for batch in dataset:
            count += int(tf.shape(tf.nest.flatten(batch)[0])[0])
    return (count / (time.perf_counter() - start),
            count / (time.process_time() - cpu))


def time_datasets(datasets, epochs, rounds):
    """Best (images/s, images/CPU-s) of each dataset over `rounds` rounds,
    the datasets taking turns so that a burst of load on a shared machine
    hits all."""
    for dataset in datasets.values():  # warm-up: tracing, autotuning
        for _ in dataset:
            pass
    best = dict.fromkeys(datasets, (0.0, 0.0))
    for _ in range(rounds):
        for name, dataset in datasets.items():
            best[name] = tuple(map(max, best[name],
                                   _passes(dataset, epochs)))
    return list(best.items())


def run(num_images=800, epochs=2, scale_min=256, scale_max=512, crop=224,
        batch_size=32, rounds=3, sides=(350, 450)):
    """Times each path; returns [(name, (images/s, images/CPU-s))]."""
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(tmp, num_images, sides=sides)
        source = sources.load_source(f"folder:{tmp}", val_fraction=0.0,
                                     shuffle_files=False)
        encoded = [ex["encoded"] for ex in source.dataset.as_numpy_iterator()]
    examples = tf.data.Dataset.from_tensor_slices({
        "encoded": encoded, "label": np.zeros(len(encoded), np.int64),
        "bbox": np.zeros([len(encoded), 0, 4], np.float32)})
    data = tf.data.Dataset.from_tensor_slices(encoded).enumerate()

    def window_fn(index):
        seed = augment.example_seed(0, index)
        return lambda h, w: augment.sample_crop_window(
            h, w, scale_min, scale_max, crop, seed)

    def fused(index, contents):
        pixels, window = augment.decode_window(contents, window_fn(index))
        return tf.image.resize(pixels, [crop, crop])

    def decode_resize_crop(index, contents):
        # The same windows as (a); the header gives the shape cheaply, so
        # this path pays for exactly one decode.
        shape = tf.image.extract_jpeg_shape(contents)
        window = window_fn(index)(shape[0], shape[1])
        return augment.reference_crop(contents, window, crop)

    def decode_only(index, contents):
        return tf.io.decode_jpeg(contents, channels=3)

    def mapped(fn):
        # Each image is reduced to its mean inside the parallel map (one
        # cheap pass over its pixels), so that handing 600 KB float images
        # to Python does not cap every path at the same copy speed.
        def timed(index, contents):
            return tf.reduce_mean(tf.cast(fn(index, contents), tf.float32))
        return (data.map(timed, num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=False)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))

    def consumed(dataset):
        # The trainer's pipeline, batches included (their copy is part of
        # it); the model's place taken by a parallel reduce of each batch.
        return dataset.map(
            lambda images, *rest: tf.reduce_mean(images, [1, 2, 3]),
            num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def training(deterministic=False, defer=True):
        return consumed(augment.make_dataset(
            examples, True, batch_size, scale=(scale_min, scale_max),
            crop=crop, shuffle_buffer=num_images, seed=0,
            drop_remainder=False, deterministic=deterministic,
            defer_pixel_ops=defer))

    results = time_datasets({
        "(a)  fused decode_and_crop + resize": mapped(fused),
        "(a+) as the trainer reads it": training(True),
        "(a+) out of order": training(),
        "(a+) pixel ops here (ready batches)": training(defer=False),
        "(a+) no skip counting": _without_counting(training),
        "(b)  decode -> resize -> crop": mapped(decode_resize_crop),
        "(c)  decode only (bound for b)": mapped(decode_only),
    }, epochs, rounds)
    return results


def _without_counting(training):
    """`training()` built with a plain parallel map + `ignore_errors` in
    place of `augment.map_skipping_errors`."""
    def plain(dataset, map_fn, counter, deterministic=True, with_index=False,
              key_fn=None, batch_size=None, drop_remainder=False, **unused):
        del counter, key_fn, unused
        numbered = dataset.enumerate() if with_index else dataset
        mapped = numbered.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=deterministic).ignore_errors()
        return mapped.batch(batch_size, drop_remainder=drop_remainder)

    counting = augment.map_skipping_errors
    augment.map_skipping_errors = plain
    try:
        return training()
    finally:
        augment.map_skipping_errors = counting


def format_table(results):
    base = next(v for name, (v, _) in results if name.startswith("(b)"))
    fused = next(v for name, (v, _) in results if name.startswith("(a) "))
    lines = [f"{'path':<40} {'images/s':>9} {'vs (b)':>7} {'vs (a)':>7} "
             f"{'img/CPU-s':>10}"]
    lines += [f"{name:<40} {value:>9.1f} {value / base:>6.2f}x "
              f"{value / fused:>6.2f}x {cpu:>10.1f}"
              for name, (value, cpu) in results]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=800,
                        help="fewer make the (a+) rows noisier: each pass "
                        "starts a new iterator, whose autotuning ramps up")
    parser.add_argument("--epochs", type=int, default=2,
                        help="timed passes over the images")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the paths take turns; the best round counts")
    parser.add_argument("--min_side", type=int, default=350,
                        help="image sides are drawn from [min_side, max_side]")
    parser.add_argument("--max_side", type=int, default=450)
    parser.add_argument("--scale_min", type=int, default=256)
    parser.add_argument("--scale_max", type=int, default=512)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    for name in ("num_images", "epochs", "rounds", "min_side", "crop",
                 "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.max_side < args.min_side:
        parser.error("--max_side must be >= --min_side")
    if not 0 < args.crop <= args.scale_min <= args.scale_max:
        parser.error("expected 0 < --crop <= --scale_min <= --scale_max")
    results = run(args.num_images, args.epochs, args.scale_min,
                  args.scale_max, args.crop, args.batch_size, args.rounds,
                  (args.min_side, args.max_side))
    print(f"{args.num_images} JPEGs of {args.min_side}-{args.max_side} px, "
          f"S in [{args.scale_min}, "
          f"{args.scale_max}], crop {args.crop}, best of {args.rounds} "
          f"rounds of {args.epochs} passes, {os.cpu_count()} CPUs, "
          f"TF {tf.__version__}")
    print(format_table(results))


if __name__ == "__main__":
    main()
