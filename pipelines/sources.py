"""Datasets as streams of undecoded examples, whatever they are stored as.

Every source yields the same dicts:

    {"encoded": tf.string  the image file's bytes, undecoded,
     "label":   tf.int64   0-based class index,
     "bbox":    tf.float32 [N, 4] object boxes (ymin, xmin, ymax, xmax),
                           normalised to [0, 1]; N may be 0}

Images stay encoded so that `pipelines.augment` can decode only the crop
window of a JPEG (`tf.image.decode_and_crop_jpeg`), which is most of the cost
of the input pipeline.

Spec forms accepted by `load_source`:

    "builtin"            the generated shapes of `pipelines.synthetic`,
                         written to `data_dir` (default its cache) on first use
    "tfrecord:GLOB"      TFRecords in the ImageNet / Model Garden layout; see
                         `_tfrecord_files` for how GLOB picks a split's files
    "folder:DIR"         one sub-folder of images per class
    "NAME" / "tfds:NAME" a TensorFlow Datasets name ("imagenet2012",
                         "imagenette", "imagenet2012:5.1.0"), from `data_dir`

Example:
>>> source = load_source("folder:/data/flowers", split="validation")
>>> source.class_names[:2], source.num_examples
(('daisy', 'dandelion'), 367)
"""

import dataclasses
import os
import pathlib
import zlib
from typing import Optional

import numpy as np
import tensorflow as tf

from pipelines import synthetic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation",
                  "valid": "validation", "validation": "validation"}


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset of undecoded examples and what is known about it.

    Attributes:
        dataset: `tf.data.Dataset` of {"encoded", "label", "bbox"} dicts.
        class_names: tuple of names indexed by label, or None when unknown
            (TFRecords without a `class_names.txt`).
        num_classes: int, or None when unknown.
        num_examples: examples in one pass, or None when counting would mean
            reading every file (TFRecords).
    """
    dataset: tf.data.Dataset
    class_names: Optional[tuple]
    num_classes: Optional[int]
    num_examples: Optional[int]


def element_spec():
    """The `element_spec` every source's dataset has."""
    return {"encoded": tf.TensorSpec([], tf.string),
            "label": tf.TensorSpec([], tf.int64),
            "bbox": tf.TensorSpec([None, 4], tf.float32)}


def load_source(spec, split="train", data_dir=None, val_fraction=0.1,
                seed=0, shuffle_files=None, label_offset=0):
    """Opens the `split` of the dataset named by `spec`.

    Args:
        spec: "builtin", "tfrecord:GLOB", "folder:DIR", or a tfds name
            (optionally prefixed "tfds:").  GLOB may hold "{split}"
            ("/data/in1k/{split}-*"); a folder stands for
            "FOLDER/{split}-*"; any other GLOB is read whatever the split.
        split: "train" or "validation" ("val" is accepted).  tfds sources
            take any tfds split string ("train[:10%]"); their "validation"
            falls back to "test" when the dataset has no validation split.
        data_dir: builtin: where the generated dataset lives (default
            `synthetic.default_cache_dir()`); tfds: the tfds data_dir.
        val_fraction: folder sources: the fraction of each class held out,
            deterministically from `seed`, as the validation split.
        seed: seeds the folder split and the file shuffling.
        shuffle_files: shuffle the order of files / shards (deterministic
            from `seed`, a new order each epoch).  Default: True for the
            training split.  A record-level shuffle buffer alone mixes only
            neighbouring records of big sharded datasets.
        label_offset: subtracted from TFRecord labels; pass 1 for ImageNet
            TFRecords written with 1-based labels (Model Garden's
            `imagenet_to_gcs.py`, background = 0).

    Returns:
        A `Source`.

    Raises:
        ValueError: naming `spec` when its form is unknown, its folder is
            missing or empty, or its glob matches no files.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"`spec` must be a non-empty string. Received: "
                         f"spec={spec!r}")
    if shuffle_files is None:
        shuffle_files = split in ("train", "training")
    if spec == "builtin":
        return _builtin(split, data_dir, seed, shuffle_files)
    kind, _, rest = spec.partition(":")
    if kind == "tfrecord":
        return _tfrecord(spec, rest, _split_name(split, spec), seed,
                         shuffle_files, label_offset)
    if kind == "folder":
        return _folder(spec, rest, _split_name(split, spec), val_fraction,
                       seed, shuffle_files)
    if kind == "tfds":
        return _tfds(spec, rest, split, data_dir, seed, shuffle_files)
    return _tfds(spec, spec, split, data_dir, seed, shuffle_files)


def _split_name(split, spec):
    if split not in _SPLIT_ALIASES:
        raise ValueError(
            f"`split` must be 'train' or 'validation' for spec={spec!r}. "
            f"Received: split={split!r}")
    return _SPLIT_ALIASES[split]


def _boxes(boxes):
    """[N, 4] float32 with N left unknown, so that every source has the same
    `element_spec` (a constant [0, 4] would otherwise be static)."""
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    return tf.compat.v1.placeholder_with_default(boxes, [None, 4])


def _empty_boxes():
    return _boxes(tf.zeros([0, 4], tf.float32))


# -- builtin ----------------------------------------------------------------

def _builtin(split, data_dir, seed, shuffle_files):
    cache_dir = pathlib.Path(data_dir or synthetic.default_cache_dir())
    marker = synthetic.read_marker(cache_dir)
    if marker is None:
        synthetic.write_builtin(cache_dir)
        marker = synthetic.read_marker(cache_dir)
    split = _split_name(split, "builtin")
    source = _tfrecord("builtin", str(cache_dir / f"{split}-*"), split, seed,
                       shuffle_files, 0)
    count = marker["num_train"] if split == "train" else marker["num_val"]
    return dataclasses.replace(source, num_examples=count)


# -- TFRecords --------------------------------------------------------------

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
}


def _tfrecord_files(spec, pattern, split):
    """The files of `split`.

    GLOB may contain "{split}" ("/data/imagenet/{split}-*"), which becomes
    "train" or "validation"; a GLOB that is a folder means
    "FOLDER/{split}-*", the Model Garden shard names
    ("train-00000-of-01024"); any other GLOB is used as given, whatever the
    split.
    """
    pattern = os.path.expanduser(pattern)
    if not pattern:
        raise ValueError(f"`spec`={spec!r} names no files: expected "
                         "'tfrecord:GLOB'.")
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "{split}-*")
    pattern = pattern.replace("{split}", split)
    files = sorted(tf.io.gfile.glob(pattern))  # gfile: also gs:// paths
    if not files:
        raise ValueError(f"`spec`={spec!r}: no TFRecord files match "
                         f"{pattern!r} (split={split!r}).")
    return files


def _parse_record(serialized, label_offset):
    f = tf.io.parse_single_example(serialized, _FEATURES)
    coords = [tf.sparse.to_dense(f[f"image/object/bbox/{k}"])
              for k in ("ymin", "xmin", "ymax", "xmax")]
    return {"encoded": f["image/encoded"],
            "label": f["image/class/label"] - label_offset,
            "bbox": _boxes(tf.stack(coords, axis=-1))}


def _read_class_names(directory):
    path = os.path.join(directory, synthetic.CLASS_NAMES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        names = tuple(line.strip() for line in f if line.strip())
    return names or None


def _tfrecord(spec, pattern, split, seed, shuffle_files, label_offset):
    files = _tfrecord_files(spec, pattern, split)
    names = _read_class_names(os.path.dirname(files[0]))
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        dataset = dataset.shuffle(len(files), seed=seed,
                                  reshuffle_each_iteration=True)
    # Interleaving several shards both overlaps their reads and mixes their
    # records before any shuffle buffer.
    dataset = dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(lambda r: _parse_record(r, label_offset),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return Source(dataset, names, len(names) if names else None, None)


# -- image folders ----------------------------------------------------------

def _folder_split(spec, directory, val_fraction, seed):
    """Per class, the sorted files of the train and validation splits.

    Each class's files are permuted by a generator seeded with (seed, crc32
    of the class name): the split of one class does not change when other
    classes are added.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError("`val_fraction` must be in [0, 1). Received: "
                         f"val_fraction={val_fraction!r}")
    classes = sorted(e.name for e in os.scandir(directory)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"`spec`={spec!r}: {directory!r} has no class "
                         "sub-folders.")
    splits = {"train": [], "validation": []}
    for label, name in enumerate(classes):
        files = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(os.path.join(directory, name),
                                          followlinks=True)
            for f in names
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not files:
            raise ValueError(
                f"`spec`={spec!r}: class folder {name!r} holds no image "
                f"files ({', '.join(IMAGE_EXTENSIONS)}).")
        order = np.random.default_rng(
            [int(seed), zlib.crc32(name.encode())]).permutation(len(files))
        num_val = int(round(len(files) * val_fraction))
        if val_fraction > 0 and len(files) > 1:
            num_val = min(max(num_val, 1), len(files) - 1)
        held_out = set(order[:num_val].tolist())
        for i, path in enumerate(files):
            key = "validation" if i in held_out else "train"
            splits[key].append((path, label))
    return classes, splits


def _folder(spec, directory, split, val_fraction, seed, shuffle_files):
    directory = os.path.expanduser(directory)
    if not directory or not os.path.isdir(directory):
        raise ValueError(f"`spec`={spec!r}: {directory!r} is not a folder.")
    classes, splits = _folder_split(spec, directory, val_fraction, seed)
    items = splits[split]
    if not items:
        raise ValueError(f"`spec`={spec!r} has no {split!r} images "
                         f"(val_fraction={val_fraction}).")
    paths, labels = zip(*items)
    dataset = tf.data.Dataset.from_tensor_slices(
        (list(paths), np.asarray(labels, np.int64)))
    if shuffle_files:
        # Paths are cheap to hold: a perfect shuffle before any file is read.
        dataset = dataset.shuffle(len(paths), seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.map(
        lambda path, label: {"encoded": tf.io.read_file(path),
                             "label": label, "bbox": _empty_boxes()},
        num_parallel_calls=tf.data.AUTOTUNE)
    return Source(dataset, tuple(classes), len(classes), len(paths))


# -- TensorFlow Datasets ----------------------------------------------------

def _tfds_split(builder, split):
    known = set(builder.info.splits.keys())
    if split in ("val", "validation") and known:
        if "validation" in known:
            return "validation"
        if "test" in known:
            return "test"
    if split == "val":
        return "validation"
    return split


def _tfds(spec, name, split, data_dir, seed, shuffle_files):
    import tensorflow_datasets as tfds  # heavy: only when a tfds spec is used

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for bad names
        raise ValueError(
            f"Unknown dataset `spec`={spec!r}: not 'builtin', "
            "'tfrecord:GLOB', 'folder:DIR' or a TensorFlow Datasets name "
            f"({type(error).__name__}: {error})") from error
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"`spec`={spec!r}: the tfds dataset needs 'image' and 'label' "
            f"features; it has {sorted(features.keys())}.")
    if not hasattr(features["label"], "names"):
        raise ValueError(f"`spec`={spec!r}: its 'label' feature is not a "
                         "ClassLabel.")
    if not builder.is_prepared():
        # Downloads what can be downloaded; ImageNet needs its archives in
        # the manual folder and tfds says so.
        builder.download_and_prepare()
    split = _tfds_split(builder, split)
    dataset = builder.as_dataset(
        split=split, shuffle_files=shuffle_files,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed))
    objects = features["objects"] if "objects" in features else None
    objects = getattr(objects, "feature", objects)  # inside a Sequence
    has_objects = "bbox" in getattr(objects, "keys", lambda: ())()
    has_bbox = "bbox" in features  # e.g. caltech_birds2011: one box

    def convert(example):
        if has_objects:
            boxes = example["objects"]["bbox"]
        elif has_bbox:
            boxes = example["bbox"][None]
        else:
            boxes = _empty_boxes()
        return {"encoded": example["image"],
                "label": tf.cast(example["label"], tf.int64),
                "bbox": _boxes(boxes)}

    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    names = tuple(features["label"].names)
    try:
        count = builder.info.splits[split].num_examples or None
    except (KeyError, ValueError, TypeError):
        count = None  # unknown split name or a mocked dataset
    return Source(dataset, names, len(names), count)
