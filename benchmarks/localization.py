"""Localisation error of SCR against PCR, central crop against dense: the
paper's Tables 8 and 9 on the built-in dataset.

    python -m benchmarks.localization [--work_dir=/tmp/keras_vgg_loc]
        [--classifier=runs/demo] [--epochs=N] [--max_images=150]

Trains the `demo` classifier (unless `--classifier` names a run), fine-tunes
single-class (SCR) and per-class (PCR) localisers from it with the
`demo_loc` recipe (learning rate 1e-3, fixed S, L2 box loss), the FC layers
only and all layers, then measures on the validation split: the
central-crop protocol with the ground-truth class (Table 8: fine-tuned
layers x regression), and for the all-layer localisers the dense protocol
(Table 9: boxes at every position, rated by the classifier, merged
greedily) at one scale, at two scales, with the flip, and with SCR and PCR
unioned.  A box is right when its IoU with a ground-truth box exceeds 0.5.
Prints both tables, the box loss of the first and last epochs, and the
latency of the localiser's SavedModel (boxes in the graph) against the
classifier's; the numbers are written to `<work_dir>/results.json`.  Runs
already in `--work_dir` are reused, not retrained.
"""

import dataclasses
import json
import os
import time

from absl import flags

from export import common
from export import saved_model
from pipelines import entry
from pipelines import localize
from pipelines import recipes
from pipelines import train
from pipelines.report import format_table

FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("work_dir", "/tmp/keras_vgg_loc",
                        "Where the runs are written.")
    flags.DEFINE_string("classifier", None, "A trained classification run "
                        "(default: train the demo recipe into work_dir).")
    flags.DEFINE_integer("epochs", None, "Localisation fine-tuning epochs "
                         "(default: the demo_loc recipe's).")
    flags.DEFINE_integer("max_images", 150, "Validation images measured.")


def trained(name, cfg, work, init_from=None):
    """The run directory of `cfg` in `work`, trained unless it is there."""
    model_dir = os.path.join(work, name)
    if not os.path.isfile(os.path.join(model_dir, "model.keras")):
        print(f"Training {name} ({cfg.max_epochs} epochs) into {model_dir} "
              "...", flush=True)
        train.train(cfg, dataset="builtin", model_dir=model_dir,
                    init_from=init_from, verbose=0)
    return model_dir


def fine_tune(regression, layers, classifier, model_dir, epochs=None):

    cfg = dataclasses.replace(recipes.RECIPES["demo_loc"],
                              regression=regression, fine_tune=layers)
    if epochs:
        cfg = dataclasses.replace(cfg, max_epochs=epochs)
    start = time.perf_counter()
    metrics = train.train(cfg, dataset="builtin", model_dir=model_dir,
                          init_from=classifier, verbose=0)
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def _row(r):
    return (f"{100 * r['localization_error']:.1f}",
            f"{100 * r['top5_error']:.1f}", r["images"],
            f"{r['images_per_second']:.1f}")


def main(argv):
    del argv

    work = FLAGS.work_dir
    classifier = (FLAGS.classifier or
                  trained("classifier", recipes.RECIPES["demo"], work))
    locs, losses = {}, []
    for layers in ("fc", "all"):
        for regression in ("scr", "pcr"):
            key = f"{regression}_{layers}"
            model_dir = os.path.join(work, key)
            if not os.path.isfile(os.path.join(model_dir, "model.keras")):
                print(f"Fine-tuning {regression.upper()}, layers: {layers} "
                      "...")
                m = fine_tune(regression, layers, classifier, model_dir,
                              FLAGS.epochs)
                history = m["history"]
                losses.append((regression.upper(), layers, len(history),
                               f"{history[0]['train_loss']:.4f}",
                               f"{history[-1]['train_loss']:.4f}",
                               f"{m['seconds']:.0f}"))
            locs[key] = model_dir
    if losses:
        print(format_table(["regression", "fine-tuned", "epochs",
                            "box loss epoch 1", "box loss last", "seconds"],
                           losses))
    q = recipes.RECIPES["demo_loc"].test_scale
    kw = dict(classifiers=[classifier], dataset="builtin",
              max_images=FLAGS.max_images)
    results = {"table8": [], "table9": []}
    rows = []
    for layers in ("fc", "all"):
        for regression in ("scr", "pcr"):
            r = localize.evaluate_localization(
                [locs[f"{regression}_{layers}"]], protocol="center",
                scales=[q], **kw)
            r.update(regression=regression, fine_tuned=layers)
            results["table8"].append(r)
            rows.append((layers, regression.upper()) + _row(r))
    print("\nTable 8 form: central crop, ground-truth class, Q="
          f"{q}\n")
    print(format_table(["fine-tuned layers", "regression", "loc. error % "
                        "(GT class)", "top-5 loc. error %", "images",
                        "images/s"], rows))
    settings = [  # (label, localisers, protocol, scales, flip)
        ("SCR", ["scr_all"], "center", [q], False),
        ("PCR", ["pcr_all"], "center", [q], False),
        ("SCR", ["scr_all"], "dense", [q], False),
        ("PCR", ["pcr_all"], "dense", [q], False),
        ("PCR", ["pcr_all"], "dense", [q], True),
        ("PCR", ["pcr_all"], "dense", [q, q + 32], True),
        ("SCR+PCR", ["scr_all", "pcr_all"], "dense", [q, q + 32], True),
    ]
    rows = []
    for label, names, protocol, scales, flip in settings:
        r = localize.evaluate_localization(
            [locs[n] for n in names], protocol=protocol, scales=scales,
            flip=flip, **kw)
        r.update(regression=label)
        results["table9"].append(r)
        rows.append((label, protocol + (" +flip" if flip else ""),
                     ",".join(map(str, scales))) + _row(r))
    print("\nTable 9 form: all layers fine-tuned\n")
    print(format_table(["regression", "protocol", "Q", "loc. error % "
                        "(GT class)", "top-5 loc. error %", "images",
                        "images/s"], rows))
    timings = export_timings(work, locs["pcr_all"], classifier)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"losses": losses, "results": results,
                   "export": timings}, f, indent=2)


def export_timings(work, localizer_run, classifier, calls=20):
    """SavedModels of the classifier and of the PCR localiser with it
    (flip, top 5): milliseconds per `predict_images` call on one image,
    and what the boxes (localiser pass + greedy merging) add."""
    import shutil

    import numpy as np
    import tensorflow as tf


    image = tf.constant(np.random.RandomState(0).uniform(
        0, 255, (1, 240, 320, 3)).astype("float32"))
    rows, out = [], {}
    for name, source in (
            ("classifier", common.load_export_model(classifier)),
            ("PCR localiser + classifier",
             common.load_localizer_source(localizer_run, classifier))):
        path = os.path.join(work, "export", name.split()[0])
        shutil.rmtree(path, ignore_errors=True)
        saved_model.export_saved_model(source, path)
        predict = tf.saved_model.load(path).signatures["predict_images"]
        predict(images=image)  # warm up
        start = time.perf_counter()
        for _ in range(calls):
            predict(images=image)
        out[name] = 1000 * (time.perf_counter() - start) / calls
        rows.append((name, f"{out[name]:.1f}",
                     f"{out[name] / out['classifier']:.2f}"))
    print(format_table(["SavedModel (Q=64, flip, 240x320 image)",
                        "ms / image", "ratio"], rows))
    return out


if __name__ == "__main__":
    _define_flags()
    entry.run(main, __name__)
