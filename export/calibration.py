"""Images for the TFLite exports: int8 calibration, QAT fine-tuning and
verification, read through the evaluation input pipeline
(`pipelines.sources` -> `pipelines.augment.make_dataset`, no
preprocessing: RGB pixels in [0, 255])."""

import numpy as np
import tensorflow as tf

from pipelines import augment
from pipelines import sources


def _dataset(spec, split, data_dir, scale, crop, batch_size, run=None,
             count=None):
    """The evaluation pipeline's batches of `spec`; `count` examples drawn
    from every class alike (`sources.stratified_sample`) when given: the
    first N of a dataset stored class by class are one or two classes.
    Returns (batches, {class name: examples sampled} or None)."""
    source = sources.load_source(spec, split, data_dir=data_dir)
    class_counts = None
    if count is not None:
        sample, counts = sources.stratified_sample(source, count)
        class_counts = sources.named_class_counts(counts, source.class_names)
        source = sample
    if run is not None:
        source = sources.match_classes(
            source, run.class_names, run.num_classes,
            f"--calibration_data={spec!r}", f"model {run.name!r}")
    return augment.make_dataset(source, training=False,
                                batch_size=batch_size, scale=scale,
                                crop=crop, preprocessing="none",
                                deterministic=True), class_counts


def calibration_images(spec="builtin", split="train", data_dir=None,
                       scale=256, crop=224, count=100, batch_size=1):
    """Up to `count` raw RGB crops (float32 [0, 255], numpy (n, crop, crop,
    3)) from the evaluation input pipeline: smallest side to `scale`,
    central crop (crop=None: the whole rescaled image, one at a time); drawn
    from every class alike (`sources.stratified_sample`, seeded)."""
    return sampled_images(spec, split, data_dir, scale, crop, count,
                          batch_size)[0]


def sampled_images(spec="builtin", split="validation", data_dir=None,
                   scale=256, crop=224, count=100, batch_size=1):
    """(`calibration_images`'s crops, the examples sampled of each class:
    {class name: count}, undecodable ones included, or None when the
    source does not know its classes): what a verification records of the
    images it compared on."""
    images = []
    batches, class_counts = _dataset(spec, split, data_dir, scale, crop,
                                     batch_size, count=count)
    for batch, _ in batches:
        images.extend(np.asarray(batch, np.float32))
        if len(images) >= count:
            break
    if not images:
        raise ValueError(f"--calibration_data={spec!r} gave no images for "
                         f"split {split!r}.")
    return np.stack(images[:count]), class_counts


def training_batches(spec, data_dir=None, scale=256, crop=224,
                     batch_size=16, split="train", run=None):
    """Endless (pixels [0, 255] float32, labels int64) batches of `split`
    from the pipeline of `calibration_images` (evaluation rescale to
    `scale`, central `crop`), for QAT fine-tuning.

    `run`: the `keras_vgg.runs.Run` being fine-tuned: the labels become
    its class indices, matched by name (`sources.match_classes`; a
    ValueError when the dataset has classes the model lacks)."""
    dataset, _ = _dataset(spec, split, data_dir, scale, crop, batch_size, run)
    return dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int64))).repeat()


def labelled_images(spec, split="validation", data_dir=None, scale=256,
                    crop=224, count=None, run=None):
    """(images, labels): up to `count` (None: all) crops of
    `calibration_images`'s pipeline, drawn from every class alike, and
    their labels (int64), matched to
    the classes of `run` (a `keras_vgg.runs.Run`) by name when given."""
    images, labels = [], []
    for batch, label in _dataset(spec, split, data_dir, scale, crop, 32,
                                 run, count)[0]:
        images.extend(np.asarray(batch, np.float32))
        labels.extend(np.asarray(label, np.int64))
        if count is not None and len(images) >= count:
            break
    if not images:
        raise ValueError(f"{spec!r} gave no images for split {split!r}.")
    return np.stack(images[:count]), np.array(labels[:count])
