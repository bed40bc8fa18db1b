"""Transfer to classes a network never saw: from scratch, fine-tuned from
pretrained weights (`--weights`), and a linear probe on Appendix B
descriptors.

    python -m benchmarks.transfer [--pretrain_epochs=20] [--epochs=10]

The built-in dataset is split by class: a narrow net A (the `demo` recipe)
is pretrained on its first three classes, then each method learns the
other two from a folder of their images (a tenth held out for
validation).  Prints validation top-1 accuracy and wall time of each, in
the same process.
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
from pipelines import train
from pipelines.report import format_table

flags.DEFINE_string("work_dir", "/tmp/keras_vgg_transfer", "Runs and data.")
flags.DEFINE_string("data_dir", None, "The built-in dataset's cache.")
flags.DEFINE_integer("pretrain_epochs", 20, "Epochs on the first classes.")
flags.DEFINE_integer("epochs", 10, "Epochs on the new classes.")
FLAGS = flags.FLAGS


def write_folders(root, data_dir, pretrain_classes=3):
    """Two folder datasets of the built-in images: its first classes, and
    the others.  Returns their specs."""
    specs = []
    for name in ("pretrain", "transfer"):
        specs.append(f"folder:{os.path.join(root, name)}")
    counts = {}
    for split in ("train", "validation"):
        source = sources.load_source("builtin", split, data_dir=data_dir,
                                     shuffle_files=False)
        for example in source.dataset.as_numpy_iterator():
            label = int(example["label"])
            name = source.class_names[label]
            part = "pretrain" if label < pretrain_classes else "transfer"
            folder = os.path.join(root, part, name)
            os.makedirs(folder, exist_ok=True)
            counts[part] = counts.get(part, 0) + 1
            with open(os.path.join(folder, f"{split}_{counts[part]}.jpg"),
                      "wb") as f:
                f.write(example["encoded"])
    return specs, counts


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv):
    del argv
    root = FLAGS.work_dir
    shutil.rmtree(root, ignore_errors=True)
    (pretrain, transfer), counts = write_folders(
        os.path.join(root, "data"), FLAGS.data_dir)
    demo = recipes.get_recipe("demo")
    base = dataclasses.replace(demo, max_epochs=FLAGS.epochs,
                               steps_per_epoch=None)
    pre_dir = os.path.join(root, "pretrained")
    _, pre_seconds = timed(lambda: train.train(
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
    print(f"Pretrained: net A (demo recipe), {FLAGS.pretrain_epochs} epochs "
          f"on {counts['pretrain']} images of 3 classes, {pre_seconds:.0f} s."
          f"\nNew classes: {counts['transfer']} images of 2 classes, "
          f"{FLAGS.epochs} epochs for (a) and (b):\n")
    print(format_table(["method", "val top-1", "wall s"],
                       [(m, f"{a:.3f}", f"{s:.0f}") for m, a, s in rows]))


if __name__ == "__main__":
    entry.run(main, __name__)
