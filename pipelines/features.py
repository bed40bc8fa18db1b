"""Image descriptors of the paper's Appendix B, written to a file.

    python -m pipelines.features --model=runs/vgg16 --dataset=folder:photos \\
        --split=train --scales=256,384,512 --output=train_features.npz
    python -m pipelines.features --architecture=D --weights=imagenet \\
        --dataset=folder:photos --split=validation --output=val_features.npz
    python -m pipelines.features --architecture=A --weights=mine.weights.h5 \\
        --dataset=folder:photos --output=features.npz

With --architecture and a weight file, the network is built as the file's
shapes say (BN or not, width multiplier, classes of its head: the head does
not matter for fc2 descriptors); --batch_norm, --width_multiplier and
--classes override them.

The descriptor of an image (Appendix B, "image classification with
ImageNet features"): the penultimate layer (fc2, 4096 values after its
ReLU) computed densely, i.e. with the FC layers as convolutions over the
whole image rescaled to each scale Q; averaged over the positions of the
map, over the image and its horizontal flip, and over the scales; then
L2-normalised.  A linear classifier on top (`pipelines.linear_probe`) is the
paper's transfer recipe.

The .npz holds `features` (N, D) float32, `labels` (N,) int64,
`class_names`, and `meta` (JSON: model, dataset, split, scales, flip,
images, skipped, and the per-class counts of a `--max_images` sample).
Undecodable images are skipped and counted, as in training.
"""

import json
import time

import keras
import numpy as np
import tensorflow as tf
from absl import flags

import keras_vgg
from keras_vgg import atomic
from keras_vgg import runs
from pipelines import augment
from pipelines import entry
from pipelines import evaluate
from pipelines import protocols
from pipelines import sources

PENULTIMATE = "fc2"


def descriptor_model(run):
    """The fully convolutional network up to the penultimate layer (fc2 as a
    1x1 conv, with its ReLU): (N, H, W, 3) -> (N, h, w, 4096)."""
    fcn = run.fully_convolutional()
    try:
        layer = fcn.get_layer(PENULTIMATE)
    except ValueError:
        raise ValueError(f"Model {run.name!r} has no {PENULTIMATE!r} layer: "
                         "descriptors need a VGG classifier with its FC "
                         "head.") from None
    return keras.Model(fcn.inputs, layer.output,
                       name=f"{run.model.name}_descriptor")


def describe(model, image, scales, preprocessing="caffe", flip=True):
    """The Appendix B descriptor of one RGB image (H, W, 3) in [0, 255]:
    (D,) float32, L2-normalised."""
    total = 0.0
    for q in scales:
        x = protocols.rescale(image, q)
        if flip:
            x = tf.concat([x, tf.image.flip_left_right(x)], axis=0)
        maps = np.asarray(model(protocols.preprocess(x, preprocessing),
                                training=False), dtype="float64")
        total = total + maps.mean(axis=(0, 1, 2))
    total = total / len(scales)
    norm = np.linalg.norm(total)
    return (total / norm if norm > 0 else total).astype("float32")


def extract_features(run, dataset, split="train", scales=None,
                     data_dir=None, flip=True, max_images=None, verbose=0,
                     seed=0):
    """Descriptors and labels of every decodable image of a dataset split.

    Args:
        run: a classifier: run dir, .keras, keras.Model or `keras_vgg.runs.
            Run`.
        dataset: a `pipelines.sources` spec ("folder:DIR", "builtin", ...).
        scales: test scales Q (default: the run's multi-scale set).
        max_images: describe N images drawn from every class alike
            (`sources.stratified_sample`, from `seed`); the meta's
            `class_counts` says how many of each (None: all images).

    Returns:
        dict with "features" (N, D), "labels" (N,), "class_names" and
        "meta".

    Raises:
        ValueError: a bad model or scale, or no decodable image.
    """
    run = runs.load_classifier(run)
    scales = [runs.check_test_scale(int(q), run.crop, "--scales")
              for q in (scales or run.multi_scales)]
    if max_images is not None and max_images < 1:
        raise ValueError(f"`max_images` must be >= 1. Received: {max_images}")
    model = descriptor_model(run)
    source = sources.load_source(dataset, split, data_dir=data_dir,
                                 shuffle_files=False)
    class_counts = None
    if max_images:
        source, class_counts = sources.stratified_sample(source, max_images,
                                                         seed)
    examples = source.dataset
    counter = augment.SkipCounter()
    decoded = augment.map_skipping_errors(examples,
                                           evaluate.decode_example, counter)
    features, labels = [], []
    start = time.perf_counter()
    for image, label in decoded.as_numpy_iterator():
        features.append(describe(model, image.astype("float32"), scales,
                                 run.preprocessing, flip))
        labels.append(int(label))
        if verbose and len(labels) % verbose == 0:
            print(f"  {len(labels)} images", flush=True)
    if not features:
        raise ValueError(f"No decodable image in {dataset!r} ({split}): "
                         f"{counter.count} skipped.")
    names = list(source.class_names) if source.class_names else None
    return {"features": np.stack(features),
            "labels": np.asarray(labels, "int64"),
            "class_names": names,
            "meta": {"model": run.name, "dataset": dataset, "split": split,
                     "scales": scales, "flip": bool(flip),
                     "images": len(labels), "images_skipped": counter.count,
                     "class_counts": class_counts,
                     "seconds": time.perf_counter() - start}}


def save(result, path):
    """Writes `extract_features`' result as .npz, atomically."""
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=result["features"], labels=result["labels"],
                     class_names=np.asarray(result["class_names"] or [],
                                            dtype=str),
                     meta=json.dumps(result["meta"]))


def load(path, what="--features"):
    """(features, labels, class_names or None, meta) of a .npz written by
    `save`; ValueError naming `what` when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            features, labels = data["features"], data["labels"]
            names = [str(n) for n in data["class_names"]] or None
            meta = json.loads(str(data["meta"]))
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{what}: {path!r} is not a features file written "
                         f"by pipelines.features ({e}).") from e
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"{what}: {path!r} holds {len(features)} "
                         f"descriptors for {len(labels)} labels.")
    return features, labels, names, meta


def define_flags(flag_values=flags.FLAGS):
    fv = flag_values
    flags.DEFINE_string("model", None, "Classification run or .keras.",
                        flag_values=fv)
    flags.DEFINE_enum("architecture", None, list(keras_vgg.CONFIGS),
                      "Instead of --model: a Table 1 configuration built "
                      "with --weights.", flag_values=fv)
    flags.DEFINE_string("weights", "imagenet", "With --architecture: a "
                        "weight set name or file.", flag_values=fv)
    # None: what the weight file's shapes say (keras_vgg.weights.
    # inspect_weight_file); the flags override it.
    flags.DEFINE_bool("batch_norm", None, "With --architecture: the BN "
                      "variant (default: as the --weights file).",
                      flag_values=fv)
    flags.DEFINE_integer("classes", None, "With --architecture: classes of "
                         "the head (default: as the --weights file).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_float("width_multiplier", None, "With --architecture: the "
                       "network's width (default: as the --weights file).",
                       lower_bound=1e-3, flag_values=fv)
    flags.DEFINE_string("dataset", None, "builtin, folder:DIR, "
                        "tfrecord:GLOB or a tfds name.", flag_values=fv)
    flags.DEFINE_string("split", "train", "Dataset split.", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "tfds data_dir or the built-in "
                        "dataset's cache.", flag_values=fv)
    flags.DEFINE_list("scales", None, "Test scales Q (default: the run's "
                      "multi-scale set).", flag_values=fv)
    flags.DEFINE_bool("flip", True, "Average with the flipped image.",
                      flag_values=fv)
    flags.DEFINE_integer("max_images", None, "N images only, drawn from "
                         "every class alike (seeded).", flag_values=fv)
    flags.DEFINE_string("output", None, "The .npz to write.", flag_values=fv)


def main(argv):
    del argv
    fv = flags.FLAGS
    if not fv.output or not fv.dataset:
        raise ValueError("Give --dataset and --output.")
    if bool(fv.model) == bool(fv.architecture):
        raise ValueError("Give either --model or --architecture (with "
                         "--weights).")
    shape_flags = [f"--{name}" for name in ("batch_norm", "classes",
                                             "width_multiplier")
                   if fv[name].present]
    if fv.model and shape_flags:
        raise ValueError(f"{', '.join(shape_flags)} go with --architecture; "
                         "--model keeps its own network.")
    model = fv.model or runs.from_weights(
        fv.architecture, fv.weights, fv.batch_norm, fv.classes,
        fv.width_multiplier)
    result = extract_features(model, fv.dataset, fv.split,
                              [int(q) for q in fv.scales or []] or None,
                              fv.data_dir, fv.flip, fv.max_images)
    save(result, fv.output)
    meta = result["meta"]
    print(f"{meta['images']} descriptors of {result['features'].shape[1]} "
          f"values ({meta['images_skipped']} undecodable images skipped), "
          f"scales {meta['scales']}: {fv.output}")
    if meta["class_counts"] is not None:
        print("Sampled from every class: " + sources.format_class_counts(
            meta["class_counts"], result["class_names"]))


def run():
    """The command line; also the `vgg-features` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
