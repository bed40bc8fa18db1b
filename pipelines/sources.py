"""Datasets as streams of undecoded examples, whatever they are stored as.

Every source yields the same dicts:

    {"encoded": tf.string  the image file's bytes, undecoded,
     "label":   tf.int64   0-based class index,
     "bbox":    tf.float32 [N, 4] object boxes (ymin, xmin, ymax, xmax),
                           normalised to [0, 1]; N may be 0,
     "key":     tf.string  where the example comes from, to name a bad
                           one: the file path (folders), "FILE:INDEX" (the
                           INDEX-th record of a TFRecord file, from 0) or
                           the tfds id ("imagenet2012-train.tfrecord-00001-
                           of-01024__17")}

Images stay encoded so that `pipelines.augment` can decode only the crop
window of a JPEG (`tf.image.decode_and_crop_jpeg`), which is most of the cost
of the input pipeline.

Spec forms accepted by `load_source`:

    "builtin"            the generated shapes of `pipelines.synthetic`,
                         written to `data_dir` (default its cache) on first use
    "tfrecord:GLOB"      TFRecords in the ImageNet / Model Garden layout; see
                         `_tfrecord_files` for how GLOB picks a split's files
    "folder:DIR"         one sub-folder of images per class, or DIR/train/
                         and DIR/val/ holding one each; boxes from
                         DIR/boxes.csv or DIR/boxes.json when there is one
                         (pixel coordinates; see `pipelines.box_files`)
    "NAME" / "tfds:NAME" a TensorFlow Datasets name ("imagenet2012",
                         "imagenette", "imagenet2012:5.1.0"), from `data_dir`;
                         one without a top-level label but with labelled
                         objects ("voc") takes its largest object's class,
                         and skips images without objects

Paths (DIR, GLOB, `data_dir`) may start with "~" and hold $VARIABLES
(`expand_path`).  Where a dataset meets a model, its labels are matched to
the model's classes by name (`match_classes`).

Example:
>>> source = load_source("folder:/data/flowers", split="validation")
>>> source.class_names[:2], source.num_examples
(('daisy', 'dandelion'), 367)
"""

import dataclasses
import difflib
import os
import pathlib
import re
import zlib

import numpy as np
import tensorflow as tf

from keras_vgg import imagenet
from pipelines import box_files
from pipelines import synthetic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation",
                  "valid": "validation", "validation": "validation"}
# Every image of a folder, both splits: what a folder given whole as test
# data is evaluated on.
ALL_SPLITS = "all"


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset of undecoded examples and what is known about it.

    Attributes:
        dataset: `tf.data.Dataset` of {"encoded", "label", "bbox", "key"}
            dicts (`element_spec()`).
        class_names: tuple of names indexed by label, or None when unknown
            (TFRecords without a `class_names.txt`).
        num_classes: int, or None when unknown.
        num_examples: examples in one pass, or None when counting would mean
            reading every file (TFRecords).
        paths: the image files in the order the dataset reads them
            without file shuffling (folder sources), else None: lets an
            error name a file.
        dataset_examples: the images of the whole folder when the split is
            a part held out of it (a folder of class sub-folders, split by
            `val_fraction`), else None: lets an evaluation say it scored
            only part of the folder.
    """
    dataset: tf.data.Dataset
    class_names: tuple | None
    num_classes: int | None
    num_examples: int | None
    paths: tuple | None = None
    dataset_examples: int | None = None


def element_spec():
    """The `element_spec` every source's dataset has."""
    return {"encoded": tf.TensorSpec([], tf.string),
            "label": tf.TensorSpec([], tf.int64),
            "bbox": tf.TensorSpec([None, 4], tf.float32),
            "key": tf.TensorSpec([], tf.string)}


def load_source(spec, split="train", data_dir=None, val_fraction=0.1,
                seed=0, shuffle_files=None, label_offset=0):
    """Opens the `split` of the dataset named by `spec`.

    Args:
        spec: "builtin", "tfrecord:GLOB", "folder:DIR", or a tfds name
            (optionally prefixed "tfds:").  GLOB may hold "{split}"
            ("/data/in1k/{split}-*"); a folder stands for
            "FOLDER/{split}-*"; any other GLOB is read whatever the split.
        split: "train" or "validation" ("val" is accepted); "all": every
            image of a folder (both splits).  tfds sources take any tfds
            split string ("train[:10%]", "all"); their "validation" falls
            back to "test" when the dataset has no validation split.
        data_dir: builtin: where the generated dataset lives (default
            `synthetic.default_cache_dir()`); tfds: the tfds data_dir.
        val_fraction: folder sources: the fraction of each class held out,
            deterministically from `seed`, as the validation split (1: the
            whole folder is validation).  A folder laid out by split
            (DIR/train/<class>/ and DIR/val/<class>/; "validation", "valid"
            or "test" also name the second) reads each split from its own
            sub-folder instead.
            A folder's images have boxes when DIR holds a boxes.csv
            (header row; columns filename, xmin, ymin, xmax, ymax, optional
            width, height; one row per box) or a boxes.json (filename ->
            [[xmin, ymin, xmax, ymax], ...], or a list of objects with the
            CSV's columns); pixel coordinates, filenames relative to DIR or
            bare when unique.  See `pipelines.box_files`.
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
            missing or empty, or its glob matches no files; naming the box
            file and the entry when a folder's box file has a bad entry.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"`spec` must be a non-empty string. Received: "
                         f"spec={spec!r}")
    if shuffle_files is None:
        shuffle_files = split in ("train", "training")
    data_dir = expand_path(data_dir)
    if spec == "builtin":
        return _builtin(split, data_dir, seed, shuffle_files)
    kind, _, rest = spec.partition(":")
    rest = expand_path(rest) if kind in ("tfrecord", "folder") else rest
    if kind == "tfrecord":
        return _tfrecord(spec, rest, _split_name(split, spec), seed,
                         shuffle_files, label_offset)
    if kind == "folder":
        return _folder(spec, rest, _split_name(split, spec, every=True),
                       val_fraction, seed, shuffle_files)
    if kind == "tfds":
        return _tfds(spec, rest, split, data_dir, seed, shuffle_files)
    return _tfds(spec, spec, split, data_dir, seed, shuffle_files)


def expand_path(path):
    """`path` with "~" and environment variables expanded, as a shell
    would: the one place every path a source takes (`data_dir`,
    "folder:DIR", "tfrecord:GLOB") is expanded, so that README's
    `--data_dir=~/tensorflow_datasets` reaches tfds as a real folder.
    None stays None.

    Example (HOME=/home/me)::

        expand_path("~/tensorflow_datasets")  # '/home/me/tensorflow_datasets'
        expand_path("$DATA/in1k/{split}-*")   # '/data/in1k/{split}-*'
    """
    if path is None:
        return None
    return os.path.expandvars(os.path.expanduser(os.fspath(path)))


def _split_name(split, spec, every=False):
    """The canonical split name; `every`: "all" is allowed (folders)."""
    if every and split == ALL_SPLITS:
        return split
    if split not in _SPLIT_ALIASES:
        allowed = "'train', 'validation' or 'all'" if every else (
            "'train' or 'validation' ('all' is for folder:DIR and tfds "
            "specs)")
        raise ValueError(f"`split` must be {allowed} for spec={spec!r}. "
                         f"Received: split={split!r}")
    return _SPLIT_ALIASES[split]


def _boxes(boxes):
    """[N, 4] float32 with N left unknown, so that every source has the same
    `element_spec` (a constant [0, 4] would otherwise be static)."""
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    return tf.compat.v1.placeholder_with_default(boxes, [None, 4])


def _empty_boxes():
    return _boxes(tf.zeros([0, 4], tf.float32))


# -- where a dataset meets a model -----------------------------------------

def _comparable(names):
    """The names with ImageNet's WordNet ids ("n01440764", tfds and folder
    names) as its class names ("tench", what a model without a names file
    is given), so that either spelling matches the other."""
    lemma = dict(imagenet.class_index())
    return [lemma.get(n, n) for n in names]


def same_classes(names, other):
    """Whether two lists name the same classes in the same order (ImageNet's
    WordNet ids and class names alike); False when either is None."""
    return bool(names) and bool(other) and (
        _comparable(names) == _comparable(other))


def _listed(names, limit=10):
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return "[" + ", ".join(map(repr, names[:limit])) + more + "]"


def class_mapping(dataset_names, model_names, num_classes=None,
                  dataset="the dataset", model="the model"):
    """How a dataset's labels become a model's class indices.

    Classes are matched by name: the dataset's label i is the model's class
    `mapping[i]`, whatever order each side lists them in (folders are read
    in sorted order, a model keeps the order it was trained with), and a
    dataset may hold only some of the model's classes.  Names are names,
    digits included: a folder of classes "0" ... "4" meets a model of
    classes "5" ... "9" as different classes.  When either side has no
    names (TFRecords without a class_names.txt; a model trained on such
    data, whose invented names `keras_vgg.runs` reads as None), labels are
    taken as they are and only the counts are compared.

    Args:
        dataset_names: the dataset's class names by label, or None.
        model_names: the model's real class names by index, or None.
        num_classes: the model's class count, checked when names are not
            (None: unknown).
        dataset, model: how the message names each side.

    Returns:
        None when labels are already the model's indices, else an int64
        array: mapping[dataset label] = model index.

    Raises:
        ValueError: the dataset has classes the model lacks (listing what
            each side lacks), or, without names, the counts differ.
    """
    if not dataset_names or not model_names:
        count = len(dataset_names) if dataset_names else None
        if count is not None and num_classes and count != num_classes:
            raise ValueError(f"{dataset} has {count} classes, {model} "
                             f"{num_classes}.")
        return None
    ours, theirs = _comparable(dataset_names), _comparable(model_names)
    index = {name: i for i, name in enumerate(theirs)}
    missing = [n for n in ours if n not in index]
    if missing:
        raise ValueError(
            f"{dataset} and {model} have different classes: {model} lacks "
            f"{_listed(missing)}; {dataset} lacks "
            f"{_listed(set(theirs) - set(ours))}. "
            f"{dataset}: {_listed(ours)}; {model}: {_listed(theirs)}.")
    mapping = np.asarray([index[n] for n in ours], np.int64)
    if np.array_equal(mapping, np.arange(len(mapping))) and (
            len(mapping) == len(theirs)):
        return None
    return mapping


def match_classes(source, model_names, num_classes=None,
                  dataset="the dataset", model="the model"):
    """`source` with its labels as the model's class indices (see
    `class_mapping`): the one place a dataset's labels meet a model."""
    mapping = class_mapping(source.class_names, model_names, num_classes,
                            dataset, model)
    if mapping is None:
        return source
    table = tf.constant(mapping)

    def remap(example):
        return dict(example, label=tf.gather(table, example["label"]))

    names = tuple(model_names) if model_names else None
    return dataclasses.replace(
        source, dataset=source.dataset.map(remap), class_names=names,
        num_classes=len(names) if names else num_classes)


# -- a sample of every class -------------------------------------------------

def stratified_sample(source, count, seed=0):
    """`count` examples of `source` drawn from every class alike: the one
    place "the first N images" of a dataset (one or two classes of a
    dataset stored class by class) is replaced by a sample of each.

    Each class gets count // K examples (K classes), and count % K classes
    chosen by `seed` one more; a class with too few examples leaves its
    share to the others.  The dataset is read in order and reading stops
    once every class has its share (TFRecords and tfds are never read
    whole when they mix their classes; a folder is read class by class).
    Examples keep their dataset order.  A source that does not know its
    class count (a bare tf.data.Dataset, TFRecords without names) gives its
    first `count` examples.

    Returns:
        (a `Source` of the sample, its per-class counts: a list indexed by
        label, or None when the class count is unknown).
    """
    if count is None or count < 1:
        raise ValueError(f"`count` must be >= 1. Received: count={count!r}")
    classes = source.num_classes
    if not classes:
        return dataclasses.replace(source, dataset=source.dataset.take(count),
                                   paths=None), None
    rng = np.random.default_rng(int(seed))
    share = np.full(classes, count // classes)
    share[rng.choice(classes, count % classes, replace=False)] += 1
    cap = -(-count // classes)
    buckets = [[] for _ in range(classes)]
    for position, example in enumerate(source.dataset.as_numpy_iterator()):
        label = int(example["label"])
        if 0 <= label < classes and len(buckets[label]) < cap:
            buckets[label].append((position, example))
            if all(len(b) >= n for b, n in zip(buckets, share)):
                break
    take = np.minimum(share, [len(b) for b in buckets])
    # A short class's share goes to classes with more, in seeded order.
    for c in rng.permutation(classes):
        spare = min(len(buckets[c]) - take[c], count - take.sum())
        take[c] += max(spare, 0)
    chosen = sorted((item for c in range(classes)
                     for item in (buckets[c][i] for i in sorted(rng.choice(
                         len(buckets[c]), take[c], replace=False)))),
                    key=lambda item: item[0])
    examples = [example for _, example in chosen]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=source.dataset.element_spec)
    paths = (tuple(e["key"].decode() for e in examples)
             if source.paths and examples and "key" in examples[0] else None)
    return dataclasses.replace(source, dataset=dataset,
                               num_examples=len(examples),
                               paths=paths), [int(n) for n in take]


def split_counts(source):
    """{"split_images": N, "dataset_images": M} when `source` is a split
    holding N of the M images of a folder (its held-out part or the rest),
    else {}: what an evaluation records so that nobody takes a folder's
    tenth for the whole folder."""
    whole, part = source.dataset_examples, source.num_examples
    if whole is None or part is None or part >= whole:
        return {}
    return {"split_images": int(part), "dataset_images": int(whole)}


def named_class_counts(counts, names=None):
    """`stratified_sample`'s per-label counts as {class name: count} (names
    "0", "1", ... when the source has none); None stays None."""
    if counts is None:
        return None
    return dict(zip(names or [str(i) for i in range(len(counts))], counts))


def format_class_counts(counts, names=None, limit=10):
    """"circle 2, square 2, ..." of `stratified_sample`'s counts."""
    names = names or [str(i) for i in range(len(counts))]
    parts = [f"{name} {n}" for name, n in zip(names, counts)]
    more = f", ... ({len(parts)} classes)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


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


def _parse_record(key, serialized, label_offset):
    f = tf.io.parse_single_example(serialized, _FEATURES)
    coords = [tf.sparse.to_dense(f[f"image/object/bbox/{k}"])
              for k in ("ymin", "xmin", "ymax", "xmax")]
    return {"encoded": f["image/encoded"],
            "label": f["image/class/label"] - label_offset,
            "bbox": _boxes(tf.stack(coords, axis=-1)), "key": key}


def _keyed_records(path):
    """The records of one TFRecord file, each with its key "PATH:INDEX"."""
    return tf.data.TFRecordDataset(path).enumerate().map(
        lambda index, record: (tf.strings.join(
            [path, tf.strings.as_string(index)], ":"), record))


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
        _keyed_records, cycle_length=min(len(files), 16),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(lambda k, r: _parse_record(k, r, label_offset),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return Source(dataset, names, len(names) if names else None, None)


# -- image folders ----------------------------------------------------------

# A folder laid out by split (DIR/train/<class>/, DIR/val/<class>/), as
# ImageNet and most fine-tuning datasets ship: each split is its sub-folder,
# whole.  The first validation name present wins ("test" as tfds falls back).
_SPLIT_FOLDERS = {"train": ("train", "training"),
                  "validation": ("val", "validation", "valid", "test")}


def _sub_folders(directory):
    return sorted(e.name for e in os.scandir(directory)
                  if e.is_dir() and not e.name.startswith("."))


def split_folders(directory):
    """{"train": path, "validation": path} when `directory` is laid out by
    split (a train sub-folder and a val/validation/valid/test one, each of
    class sub-folders); {"validation": path} when its only sub-folder is a
    validation one; else None."""
    present = set(_sub_folders(directory))
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        name = next((n for n in names if n in present), None)
        # Without class sub-folders of its own, "train" is a class.
        if name is not None and _sub_folders(os.path.join(directory, name)):
            found[split] = os.path.join(directory, name)
    if len(found) == 2:
        return found
    if list(found) == ["validation"] and len(present) == 1:
        # DIR/val/<class>/ alone: a validation split, not a class "val".
        return found
    return None


def _class_files(spec, directory, name):
    files = sorted(
        os.path.join(root, f)
        for root, _, names in os.walk(os.path.join(directory, name),
                                      followlinks=True)
        for f in names
        if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    if not files:
        raise ValueError(
            f"`spec`={spec!r}: class folder "
            f"{os.path.join(directory, name)!r} holds no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def _folder_split(spec, directory, val_fraction, seed):
    """Per class, the sorted files of the train and validation splits.

    A folder laid out by split (`split_folders`) gives each split its
    sub-folder, whole; the classes are the train folder's, and the
    validation folder may hold fewer but no others.  Otherwise each class's
    files are permuted by a generator seeded with (seed, crc32 of the class
    name), and `val_fraction` of them held out: the split of one class does
    not change when other classes are added.  `val_fraction=1` makes every
    image validation (a folder given as validation data).
    """
    if not 0 <= val_fraction <= 1:
        raise ValueError("`val_fraction` must be in [0, 1]. Received: "
                         f"val_fraction={val_fraction!r}")
    by_split = split_folders(directory)
    if by_split is not None and "train" not in by_split:
        classes = _sub_folders(by_split["validation"])
        splits = {"train": [], "validation": []}
        for label, name in enumerate(classes):
            splits["validation"] += [(path, label) for path in
                                     _class_files(spec, by_split[
                                         "validation"], name)]
        return classes, splits
    if by_split is not None:
        classes = _sub_folders(by_split["train"])
        if not classes:
            raise ValueError(f"`spec`={spec!r}: {by_split['train']!r} has "
                             "no class sub-folders.")
        extra = sorted(set(_sub_folders(by_split["validation"]))
                       - set(classes))
        if extra:
            raise ValueError(
                f"`spec`={spec!r}: {by_split['validation']!r} has classes "
                f"that {by_split['train']!r} lacks: {', '.join(extra)}.")
        splits = {"train": [], "validation": []}
        for split, folder in by_split.items():
            for name in _sub_folders(folder):
                label = classes.index(name)
                splits[split] += [(path, label) for path in
                                  _class_files(spec, folder, name)]
        return classes, splits
    classes = _sub_folders(directory)
    if not classes:
        raise ValueError(f"`spec`={spec!r}: {directory!r} has no class "
                         "sub-folders.")
    splits = {"train": [], "validation": []}
    for label, name in enumerate(classes):
        files = _class_files(spec, directory, name)
        order = np.random.default_rng(
            [int(seed), zlib.crc32(name.encode())]).permutation(len(files))
        num_val = int(round(len(files) * val_fraction))
        if 0 < val_fraction < 1 and len(files) > 1:
            num_val = min(max(num_val, 1), len(files) - 1)
        held_out = set(order[:num_val].tolist())
        for i, path in enumerate(files):
            key = "validation" if i in held_out else "train"
            splits[key].append((path, label))
    return classes, splits


def _folder(spec, directory, split, val_fraction, seed, shuffle_files):
    if not directory or not os.path.isdir(directory):
        raise ValueError(f"`spec`={spec!r}: {directory!r} is not a folder.")
    classes, splits = _folder_split(spec, directory, val_fraction, seed)
    every = sorted((item for s in splits.values() for item in s),
                   key=lambda item: (item[1], item[0]))
    items = every if split == ALL_SPLITS else splits[split]
    by_split = split_folders(directory)
    if not items and by_split is not None and "train" not in by_split:
        raise ValueError(
            f"`spec`={spec!r} holds only a validation split "
            f"({by_split['validation']!r}): no {split!r} images. Give a "
            "folder with a train/ sub-folder (or one sub-folder per class) "
            "to train on.")
    if not items:
        raise ValueError(f"`spec`={spec!r} has no {split!r} images "
                         f"(val_fraction={val_fraction}).")
    paths, labels = zip(*items)
    box_file = box_files.find_box_file(directory)
    # Against every image of the folder, not only the split's: filenames
    # resolve the same, and a bad entry fails, whichever the split.
    by_image = {} if box_file is None else box_files.read_boxes(
        box_file, directory, [p for s in splits.values() for p, _ in s])
    dataset = tf.data.Dataset.from_tensor_slices(
        (list(paths), np.asarray(labels, np.int64))
        + _ragged_boxes([by_image.get(path, []) for path in paths]))
    if shuffle_files:
        # Paths are cheap to hold: a perfect shuffle before any file is read.
        dataset = dataset.shuffle(len(paths), seed=seed,
                                  reshuffle_each_iteration=True)

    def example(path, label, boxes, in_pixels):
        encoded = tf.io.read_file(path)
        return {"encoded": encoded, "label": label,
                "bbox": _normalized_boxes(encoded, boxes, in_pixels),
                "key": path}

    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return Source(dataset, tuple(classes), len(classes), len(paths),
                  paths=tuple(paths),
                  dataset_examples=len(every) if by_split is None else None)


def _ragged_boxes(rows):
    """Per image, its (ymin, xmin, ymax, xmax, in_pixels) boxes as two
    ragged tensors: [images, None, 4] boxes and [images, None] in_pixels.
    Ragged, so that each path carries its own boxes through the shuffle."""
    flat = np.asarray([box for row in rows for box in row],
                      np.float32).reshape(-1, 5)
    lengths = [len(row) for row in rows]
    return (tf.RaggedTensor.from_row_lengths(flat[:, :4], lengths),
            tf.RaggedTensor.from_row_lengths(flat[:, 4] > 0, lengths))


def _image_size(encoded):
    """(height, width) of an encoded image, from the header of a JPEG."""
    def decoded():
        return tf.shape(tf.io.decode_image(encoded, channels=3,
                                           expand_animations=False))[:2]

    return tf.cond(tf.io.is_jpeg(encoded),
                   lambda: tf.image.extract_jpeg_shape(encoded)[:2], decoded)


def _normalized_boxes(encoded, boxes, in_pixels):
    """Divides the boxes given in pixels by the image's size, clipped to
    [0, 1]; the image is only looked at when a box needs it.  An image whose
    size cannot be read fails its element, which `augment.make_dataset`
    skips and counts as it does images it cannot decode."""
    boxes = tf.reshape(boxes, [-1, 4])

    def divided():
        height, width = tf.unstack(tf.cast(_image_size(encoded), tf.float32))
        scaled = boxes / tf.stack([height, width, height, width])
        return tf.where(in_pixels[:, None], scaled, boxes)

    boxes = tf.cond(tf.reduce_any(in_pixels), divided, lambda: boxes)
    return _boxes(tf.clip_by_value(boxes, 0.0, 1.0))


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


def _objects_to_label_and_boxes(labels, boxes):
    """The label of an image from its objects, for datasets without an
    image-level label (voc): the class of its largest object by box area
    (ImageNet localisation has one class per image), the first on ties,
    with the boxes of that class's objects only.

    Args:
        labels: int [N] object classes, N > 0.
        boxes: float [N, 4] object boxes (ymin, xmin, ymax, xmax).

    Returns:
        (int64 label, float32 [M, 4] boxes), 1 <= M <= N.
    """
    labels = tf.cast(labels, tf.int64)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    area = (tf.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
            * tf.maximum(boxes[:, 3] - boxes[:, 1], 0.0))
    # tf.argmax does not promise which of equal maxima it returns.
    largest = tf.reduce_min(tf.where(tf.equal(area, tf.reduce_max(area))))
    label = labels[largest]
    return label, tf.boolean_mask(boxes, tf.equal(labels, label))


_SPEC_KINDS = ("builtin", "folder", "tfrecord", "tfds")


def unknown_dataset_message(spec, tfds_names=()):
    """One line for a dataset name that is none of the spec forms, with the
    close matches among them and `tfds_names`.

    Example::

        unknown_dataset_message("imagnet2012", ["imagenet2012", "mnist"])
        # "Unknown dataset 'imagnet2012'. Did you mean 'imagenet2012'? Give
        #  builtin, folder:DIR, tfrecord:GLOB or a tfds name."
    """
    kind, colon, rest = spec.partition(":")
    if kind == "tfds" and colon:
        kind, colon, rest = rest.partition(":")
    # The builder's name: "name/config:version" -> "name".
    base = re.split(r"[/:]", kind, maxsplit=1)[0]
    close = difflib.get_close_matches(
        base, list(_SPEC_KINDS[:3]) + list(tfds_names), n=3, cutoff=0.75)
    guesses = [spec.replace(base, match, 1) if match != "builtin"
               else "builtin" for match in close]
    guesses = [g + (":DIR" if g == "folder" else ":GLOB" if g == "tfrecord"
                    else "") for g in dict.fromkeys(guesses)]
    hint = (" Did you mean " + " or ".join(repr(g) for g in guesses) + "?"
            if guesses else "")
    return (f"Unknown dataset {spec!r}.{hint} Give builtin, folder:DIR, "
            "tfrecord:GLOB or a tfds name.")


def _tfds_builder(tfds, spec, name, data_dir):
    """`tfds.builder(name)`, or a ValueError of one line: tfds' own
    message for an unknown name lists every dataset it has (hundreds of
    lines, twice in a chained traceback)."""
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        pass  # raised below, outside this handler: no chained traceback
    except Exception as error:  # a bad version, config or name string
        known = tfds.list_builders(with_community_datasets=False)
        if re.split(r"[/:]", name, maxsplit=1)[0] in known:
            reason = str(error).strip().splitlines()[0][:300]
            raise ValueError(f"`spec`={spec!r}: {reason}") from None
    raise ValueError(unknown_dataset_message(
        spec, tfds.list_builders(with_community_datasets=False)))


def tfds_prepared(spec, data_dir=None):
    """For a tfds spec, whether its dataset is prepared in `data_dir` (a
    ValueError of one line for a name tfds does not know); None for the
    other forms.  Reads no example and downloads nothing: what a plan can
    check of a dataset that another machine will prepare."""
    kind, colon, rest = spec.partition(":")
    if spec == "builtin" or (colon and kind in ("folder", "tfrecord")):
        return None
    import tensorflow_datasets as tfds  # heavy: only when a tfds spec is used

    name = rest if kind == "tfds" and colon else spec
    return _tfds_builder(tfds, spec, name, expand_path(data_dir)
                         ).is_prepared()


def _tfds(spec, name, split, data_dir, seed, shuffle_files):
    """A tfds dataset with an `image` and either a ClassLabel `label` or,
    failing that, objects with a ClassLabel `label` and a `bbox` (voc):
    then each image is labelled by `_objects_to_label_and_boxes`, and
    images without objects are left out (`num_examples` still counts them:
    tfds only knows the split's size)."""
    import tensorflow_datasets as tfds  # heavy: only when a tfds spec is used

    builder = _tfds_builder(tfds, spec, name, data_dir)
    features = builder.info.features
    objects = features["objects"] if "objects" in features else None
    objects = getattr(objects, "feature", objects)  # inside a Sequence
    object_keys = getattr(objects, "keys", lambda: ())()
    has_objects = "bbox" in object_keys
    has_bbox = "bbox" in features  # e.g. caltech_birds2011: one box
    from_objects = ("label" not in features and has_objects
                    and "label" in object_keys)
    if "image" not in features or not ("label" in features or from_objects):
        raise ValueError(
            f"`spec`={spec!r}: the tfds dataset needs an 'image' feature "
            "and a 'label' feature, or objects with 'label' and 'bbox' "
            f"('objects/label'); it has {sorted(features.keys())}.")
    label_feature = objects["label"] if from_objects else features["label"]
    if not hasattr(label_feature, "names"):
        raise ValueError(
            f"`spec`={spec!r}: its "
            f"{'objects/label' if from_objects else 'label'!r} feature is "
            "not a ClassLabel.")
    if not builder.is_prepared():
        # Downloads what can be downloaded; ImageNet needs its archives in
        # the manual folder and tfds says so.
        builder.download_and_prepare()
    split = _tfds_split(builder, split)
    dataset = builder.as_dataset(
        split=split, shuffle_files=shuffle_files,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=True))

    if "tfds_id" not in dataset.element_spec:
        # A builder that does not honour add_tfds_id (a mocked one): the
        # position in the split names the example.
        dataset = dataset.enumerate().map(lambda i, example: dict(
            example, tfds_id=tf.strings.join(
                [f"{name}/{split}:", tf.strings.as_string(i)])))

    def convert(example):
        if from_objects:
            label, boxes = _objects_to_label_and_boxes(
                example["objects"]["label"], example["objects"]["bbox"])
        else:
            label = example["label"]
            if has_objects:
                boxes = example["objects"]["bbox"]
            elif has_bbox:
                boxes = example["bbox"][None]
            else:
                boxes = _empty_boxes()
        return {"encoded": example["image"],
                "label": tf.cast(label, tf.int64),
                "bbox": _boxes(boxes), "key": example["tfds_id"]}

    if from_objects:
        dataset = dataset.filter(
            lambda example: tf.size(example["objects"]["label"]) > 0)
    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    names = tuple(label_feature.names)
    try:
        count = builder.info.splits[split].num_examples or None
    except (KeyError, ValueError, TypeError):
        count = None  # unknown split name or a mocked dataset
    return Source(dataset, names, len(names), count)
