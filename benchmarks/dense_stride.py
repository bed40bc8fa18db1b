"""Dense evaluation and localisation with finer score maps: the last pools
at both offsets (OverFeat's multiple pooling offsets), strides 32, 16, 8.

    python -m benchmarks.dense_stride [--work_dir=/tmp/keras_vgg_stride]
        [--epochs=30] [--loc_epochs=20] [--max_images=150] [--scales=64,96]

Trains the `demo` classifier and, from it, single-class (SCR) and per-class
(PCR) localisers (the `demo_loc` recipe, all layers) on the built-in
dataset, the localisers with fewer epochs than their recipe (the table
compares strides, not the recipes): about 3 + 2 x 1.5 minutes of CPU.
Runs already in `--work_dir` are reused.  Then, on the validation split,
in one process:

- classification: top-1 error and images/s of the central crop and
  of dense evaluation (with flip) at strides 32, 16 and 8, over `--scales`;
- localisation (SCR, PCR): error with the ground-truth class and top-5
  error of the central-crop protocol and of the dense protocol at strides
  32, 16, 8 (Q = the localiser's, with flip; boxes rated by the
  classifier's score map of the same stride).
"""

import dataclasses

from absl import flags

from benchmarks.localization import trained
from pipelines import entry
from pipelines import evaluate
from pipelines import localize
from pipelines import recipes
from pipelines.report import format_table

flags.DEFINE_string("work_dir", "/tmp/keras_vgg_stride", "Runs are "
                    "written (and reused) here.")
flags.DEFINE_integer("epochs", 30, "Classifier epochs (the demo "
                     "recipe's).")
flags.DEFINE_integer("loc_epochs", 20, "Localiser epochs (demo_loc: 40).")
flags.DEFINE_integer("max_images", 150, "Validation images measured.")
flags.DEFINE_list("scales", ["64", "96"], "Classification test scales Q "
                  "(averaged).")
FLAGS = flags.FLAGS
STRIDES = (32, 16, 8)


def classification_rows(classifier, scales, max_images):
    rows = []
    single, = evaluate.evaluate(classifier, "builtin", "single",
                                scales=scales, max_images=max_images)
    results = [("central crop", single)]
    for stride in STRIDES:
        dense, = evaluate.evaluate(classifier, "builtin", "dense",
                                   scales=scales, max_images=max_images,
                                   dense_stride=stride)
        results.append((f"dense + flip, stride {stride}", dense))
    for name, r in results:
        rows.append((name, ",".join(map(str, r["scales"])),
                     f"{100 * r['top1_error']:.1f}",
                     f"{r['gmacs_per_image'] * 1000:.1f}",
                     f"{r['images_per_second']:.1f}"))
    return rows


def localization_rows(localizers, classifier, max_images):
    rows = []
    for regression, loc in localizers.items():
        settings = [("central crop", "center", 32)] + [
            (f"dense + flip, stride {s}", "dense", s) for s in STRIDES]
        for name, protocol, stride in settings:
            r = localize.evaluate_localization(
                [loc], [classifier], "builtin", protocol=protocol,
                max_images=max_images, flip=True, dense_stride=stride)
            rows.append((regression, name, ",".join(map(str, r["scales"])),
                         f"{100 * r['localization_error']:.1f}",
                         f"{100 * r['top5_error']:.1f}",
                         f"{r['images_per_second']:.1f}"))
    return rows


def main(argv):
    del argv
    work = FLAGS.work_dir
    demo = dataclasses.replace(recipes.RECIPES["demo"],
                               max_epochs=FLAGS.epochs)
    classifier = trained("classifier", demo, work)
    localizers = {}
    for regression in ("scr", "pcr"):
        cfg = dataclasses.replace(recipes.RECIPES["demo_loc"],
                                  regression=regression, fine_tune="all",
                                  max_epochs=FLAGS.loc_epochs)
        localizers[regression.upper()] = trained(regression, cfg, work,
                                                  init_from=classifier)
    scales = [int(q) for q in FLAGS.scales]
    print("\nClassification (built-in validation split):\n")
    # Five classes: top-5 is always right.
    print(format_table(["protocol", "Q", "top-1 err %", "MMACs/image",
                        "images/s"],
                       classification_rows(classifier, scales,
                                           FLAGS.max_images)))
    print("\nLocalisation (all layers fine-tuned; boxes rated by the "
          "classifier):\n")
    print(format_table(["regression", "protocol", "Q",
                        "loc. error % (GT class)", "top-5 loc. error %",
                        "images/s"],
                       localization_rows(localizers, classifier,
                                         FLAGS.max_images)))


if __name__ == "__main__":
    entry.run(main, __name__)
