"""Transfer to classes a network never saw: from scratch, fine-tuned from
pretrained weights (`--weights`), and a linear probe on Appendix B
descriptors.

    python -m benchmarks.transfer [--pretrain_epochs=50] [--epochs=20]

A narrow net A (the `demo` recipe) is pretrained on three of the built-in
dataset's classes (`--pretrain_classes`); then each method learns the
others (two by default) from a folder (train/, val/) of new drawings: few
to learn from (`--train_per_class`), many to validate on
(`--val_per_class`).  Prints
validation top-1 accuracy and wall time of each, in the same process.
"""

import dataclasses
import os
import shutil
import time

from absl import flags

from keras_vgg import runs
from pipelines import entry
from pipelines import features
from pipelines import linear_probe
from pipelines import recipes
from pipelines import sources
from pipelines import synthetic
from pipelines import train
from pipelines.report import format_table

flags.DEFINE_string("work_dir", "/tmp/keras_vgg_transfer", "Runs and data.")
flags.DEFINE_string("data_dir", None, "The built-in dataset's cache.")
flags.DEFINE_integer("pretrain_epochs", 50, "Epochs on the first classes.")
flags.DEFINE_integer("epochs", 20, "Epochs on the new classes.")
flags.DEFINE_list("pretrain_classes", ["circle", "cross", "checker"],
                  "Built-in classes to pretrain on; the others are new.")
flags.DEFINE_integer("train_per_class", 40,
                     "New-class images to learn from, per class.")
flags.DEFINE_integer("val_per_class", 150,
                     "New-class images to validate on, per class.")
FLAGS = flags.FLAGS


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_folders(root, data_dir, pretrain_classes=(0, 3, 4),
                  train_per_class=40, val_per_class=150):
    """Two folder datasets laid out by split (train/, val/): the built-in
    dataset's `pretrain_classes`, whole; and new drawings of the others,
    few to learn from and many to validate on (the usual transfer setting).
    Returns their specs and image counts."""
    counts = {"pretrain": 0, "transfer": 0}
    for split, folder in (("train", "train"), ("validation", "val")):
        source = sources.load_source("builtin", split, data_dir=data_dir,
                                     shuffle_files=False)
        for i, example in enumerate(source.dataset.as_numpy_iterator()):
            label = int(example["label"])
            if label not in pretrain_classes:
                continue
            name = source.class_names[label]
            _write(os.path.join(root, "pretrain", folder, name, f"{i}.jpg"),
                   example["encoded"])
            counts["pretrain"] += 1
    for label in sorted(set(range(synthetic.NUM_CLASSES))
                        - set(pretrain_classes)):
        name = synthetic.CLASS_NAMES[label]
        for folder, count, salt in (("train", train_per_class, 1),
                                    ("val", val_per_class, 2)):
            for i in range(count):
                # Seeds of their own: none of these is a built-in image.
                image, _, _ = synthetic.render(label, (7919, salt, i))
                _write(os.path.join(root, "transfer", folder, name,
                                    f"{i}.jpg"), synthetic.encode_jpeg(image))
                counts["transfer"] += 1
    specs = [f"folder:{os.path.join(root, n)}"
             for n in ("pretrain", "transfer")]
    return specs, counts


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv):
    del argv
    root = FLAGS.work_dir
    unknown = set(FLAGS.pretrain_classes) - set(synthetic.CLASS_NAMES)
    if unknown or not 0 < len(FLAGS.pretrain_classes) < len(
            synthetic.CLASS_NAMES):
        raise ValueError(
            f"--pretrain_classes must name some but not all of "
            f"{', '.join(synthetic.CLASS_NAMES)}. Received: "
            f"{','.join(FLAGS.pretrain_classes)}")
    shutil.rmtree(root, ignore_errors=True)
    (pretrain, transfer), counts = write_folders(
        os.path.join(root, "data"), FLAGS.data_dir,
        pretrain_classes=[synthetic.CLASS_NAMES.index(c)
                          for c in FLAGS.pretrain_classes],
        train_per_class=FLAGS.train_per_class,
        val_per_class=FLAGS.val_per_class)
    demo = recipes.get_recipe("demo")
    base = dataclasses.replace(demo, max_epochs=FLAGS.epochs,
                               steps_per_epoch=None)
    pre_dir = os.path.join(root, "pretrained")
    pre_metrics, pre_seconds = timed(lambda: train.train(
        dataclasses.replace(demo, max_epochs=FLAGS.pretrain_epochs),
        dataset=pretrain, model_dir=pre_dir, verbose=0))
    weights = os.path.join(root, "pretrained.weights.h5")
    pretrained = runs.load_run(pre_dir)
    pretrained.model.save_weights(weights)

    rows = []
    metrics, seconds = timed(lambda: train.train(
        base, dataset=transfer, model_dir=os.path.join(root, "scratch"),
        verbose=0))
    rows.append(("(a) from scratch", metrics["val_top1_accuracy"], seconds))
    metrics, seconds = timed(lambda: train.train(
        dataclasses.replace(base, weights=weights, body_lr_multiplier=0.1),
        dataset=transfer, model_dir=os.path.join(root, "finetuned"),
        verbose=0))
    rows.append(("(b) fine-tuned (--weights, body lr x0.1)",
                 metrics["val_top1_accuracy"], seconds))

    def probe():
        train_set = features.extract_features(pretrained, transfer, "train")
        val_set = features.extract_features(pretrained, transfer,
                                            "validation")
        pack = [(s["features"], s["labels"], s["class_names"], s["meta"])
                for s in (train_set, val_set)]
        return linear_probe.train_probe(*pack)

    result, seconds = timed(probe)
    rows.append(("(c) linear probe on Appendix B descriptors",
                 result["top1_accuracy"], seconds))
    new_classes = [c for c in synthetic.CLASS_NAMES
                   if c not in FLAGS.pretrain_classes]
    print(f"Pretrained: net A (demo recipe), {FLAGS.pretrain_epochs} epochs "
          f"on {counts['pretrain']} images of "
          f"{', '.join(FLAGS.pretrain_classes)}, {pre_seconds:.0f} s,"
          f" val top-1 {pre_metrics['val_top1_accuracy']:.3f}."
          f"\nNew classes ({', '.join(new_classes)}): "
          f"{FLAGS.train_per_class} training and "
          f"{FLAGS.val_per_class} validation images each, never seen in "
          f"pretraining; {FLAGS.epochs} epochs for (a) and (b):\n")
    print(format_table(["method", "val top-1", "wall s"],
                       [(m, f"{a:.3f}", f"{s:.0f}") for m, a, s in rows]))


if __name__ == "__main__":
    entry.run(main, __name__)
