"""A linear classifier on image descriptors: the paper's transfer recipe
(Appendix B: a linear classifier on L2-normalised VGG descriptors).

    python -m pipelines.linear_probe --features=train_features.npz \\
        --val_features=val_features.npz --output=probe.json

Trains a Keras softmax layer (one Dense layer, weight decay) on the
descriptors of `pipelines.features`, prints the validation top-1 accuracy
and writes it as JSON (`top1_accuracy`, with the per-class counts and the
settings).  Keras rather than an SVM library: one dependency fewer, and the
paper's one-vs-rest linear SVM and a softmax on the same features differ
little in accuracy.
"""

import json
import os
import warnings

import keras
import numpy as np
from absl import flags

from keras_vgg import atomic
from pipelines import entry
from pipelines import features as features_lib

# What makes two descriptor files comparable (`pipelines.features`' meta):
# the network, the scales Q and whether flips were averaged.
_SAME_META = ("model", "scales", "flip")


def _meta_value(field, value):
    if field == "model" and isinstance(value, str) and os.path.exists(value):
        return os.path.realpath(value)  # runs/a/model.keras, however given
    return value


def _check_meta(train_meta, val_meta):
    """ValueError naming every field of `_SAME_META` whose values differ
    (a field one file lacks is not compared)."""
    differ = [f"{field}: {train_meta[field]!r} and {val_meta[field]!r}"
              for field in _SAME_META
              if field in train_meta and field in val_meta
              and _meta_value(field, train_meta[field])
              != _meta_value(field, val_meta[field])]
    if differ:
        raise ValueError(
            "--features and --val_features were not described alike ("
            + "; ".join(differ) + "): describe both splits with the same "
            "model, --scales and --flip.")


def _warn_missing_classes(labels, classes, names):
    counts = np.bincount(labels, minlength=classes)
    empty = [names[c] if names else str(c)
             for c in range(classes) if not counts[c]]
    if empty:
        warnings.warn(
            f"--features has no training example of {len(empty)} "
            f"class(es): {', '.join(empty[:10])}"
            + (", ..." if len(empty) > 10 else "")
            + "; the probe cannot predict them.", stacklevel=3)


def _check_classes(train_names, val_names):
    if train_names and val_names and list(train_names) != list(val_names):
        raise ValueError(
            "--features and --val_features have different classes: "
            f"{list(train_names)} and {list(val_names)}.")


def train_probe(train, val, epochs=100, learning_rate=0.01,
                weight_decay=1e-4, batch_size=64, seed=0):
    """Fits a softmax classifier on `train` = (features, labels, names,
    meta) and scores it on `val`.  Returns the result dict.

    Raises:
        ValueError: the two were described differently (another network,
            scales or flip: the fields of their metas are named with both
            values), or have other classes.

    Warns (UserWarning) when a class has no training example.
    """
    x, y, names, meta = train
    vx, vy, val_names, val_meta = val
    _check_classes(names, val_names)
    _check_meta(meta or {}, val_meta or {})
    if x.shape[1] != vx.shape[1]:
        raise ValueError(f"Descriptors of {x.shape[1]} and {vx.shape[1]} "
                         "values: --features and --val_features come from "
                         "different networks.")
    classes = len(names) if names else int(max(y.max(), vy.max())) + 1
    for what, labels in (("--features", y), ("--val_features", vy)):
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(f"{what}: labels outside [0, {classes}).")
    _warn_missing_classes(y, classes, names)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(classes, activation="softmax",
                           kernel_regularizer=keras.regularizers.L2(
                               weight_decay))])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    predicted = np.argmax(model.predict(vx, verbose=0), axis=1)
    correct = predicted == vy
    return {"top1_accuracy": float(correct.mean()),
            "train_accuracy": float(np.mean(np.argmax(
                model.predict(x, verbose=0), axis=1) == y)),
            "per_class_accuracy": {
                (names[c] if names else str(c)):
                    float(correct[vy == c].mean()) if np.any(vy == c)
                    else None for c in range(classes)},
            "train_images": int(len(y)), "val_images": int(len(vy)),
            "epochs": epochs, "learning_rate": learning_rate,
            "weight_decay": weight_decay}


def define_flags(flag_values=flags.FLAGS):
    fv = flag_values
    flags.DEFINE_string("features", None, "Training descriptors (.npz of "
                        "pipelines.features).", flag_values=fv)
    flags.DEFINE_string("val_features", None, "Validation descriptors.",
                        flag_values=fv)
    flags.DEFINE_string("output", None, "JSON results file to write.",
                        flag_values=fv)
    flags.DEFINE_integer("epochs", 100, "Training epochs.", flag_values=fv)
    flags.DEFINE_float("learning_rate", 0.01, "Adam learning rate.",
                       flag_values=fv)
    flags.DEFINE_float("weight_decay", 1e-4, "L2 on the weights.",
                       flag_values=fv)


def main(argv):
    del argv
    fv = flags.FLAGS
    if not (fv.features and fv.val_features and fv.output):
        raise ValueError("Give --features, --val_features and --output.")
    result = train_probe(features_lib.load(fv.features, "--features"),
                         features_lib.load(fv.val_features,
                                           "--val_features"),
                         fv.epochs, fv.learning_rate, fv.weight_decay)
    atomic.atomic_write_file(fv.output, json.dumps(result, indent=2))
    print(f"Linear probe: validation top-1 {result['top1_accuracy']:.4f} "
          f"({result['val_images']} images; train "
          f"{result['train_accuracy']:.4f}): {fv.output}")


def run():
    """The command line; also the `vgg-linear-probe` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
