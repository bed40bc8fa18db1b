"""A tiny trained-run directory for the evaluation tests: a narrow net A on
32x32 crops with fixed random weights, saved as `pipelines.train` saves a
run (model.keras with its softmax, training_config.json, class_names.txt)."""

import json
import os

import numpy as np

import keras_vgg
from tests.helpers import randomize

CROP = 32
CLASS_NAMES = ["circle", "square", "triangle", "star"]


def tiny_model(seed=0):
    model = keras_vgg.VGG("A", width_multiplier=0.125,
                          input_shape=(CROP, CROP, 3),
                          classes=len(CLASS_NAMES), dropout=0.0,
                          name=f"tiny{seed}")
    randomize(model, seed=seed)
    # Small logits, so that probabilities are far from 0 and 1 and averages
    # of different views differ visibly.
    head = model.get_layer("predictions")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 5e-3, bias * 0.0])
    return model


def training_config(scale_min=40, scale_max=40):
    return {
        "config": "A", "batch_norm": False, "width_multiplier": 0.125,
        "scale_min": scale_min, "scale_max": scale_max, "crop": CROP,
        "preprocessing": "caffe", "class_names": CLASS_NAMES,
        "num_classes": len(CLASS_NAMES), "jittered": scale_max > scale_min,
        "validation_scale": (scale_min + scale_max) // 2,
    }


def write_run(directory, seed=0, scale_min=40, scale_max=40):
    """Writes a run directory; returns (directory, model)."""
    os.makedirs(directory, exist_ok=True)
    model = tiny_model(seed)
    model.save(os.path.join(directory, "model.keras"))
    with open(os.path.join(directory, "training_config.json"), "w") as f:
        json.dump(training_config(scale_min, scale_max), f, indent=2)
    with open(os.path.join(directory, "class_names.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    return directory, model


def pixels(height, width, seed=0):
    """Random RGB pixels in [0, 255], float32 (H, W, 3)."""
    return np.random.RandomState(seed).uniform(
        0, 255, (height, width, 3)).astype("float32")


def trained_export_source(data_dir, q=36, crop=CROP, name="tiny_trained"):
    """A tiny net A trained 10 epochs on the built-in crops (seeded), as an
    `export.common.ExportModel`: its predictions differ between images, so
    quantised exports can be compared with it on top-1 agreement."""
    import keras

    from export import calibration
    from export import common
    from pipelines import sources

    keras.utils.set_random_seed(0)
    model = keras_vgg.VGG("A", width_multiplier=0.125,
                          input_shape=(crop, crop, 3), classes=5,
                          dropout=0.0, name=name)
    x = calibration.calibration_images("builtin", "train", data_dir, q, crop,
                                       80)
    y = np.array([int(e["label"]) for e in sources.load_source(
        "builtin", "train", data_dir=data_dir,
        shuffle_files=False).dataset])
    model.compile(keras.optimizers.Adam(3e-3),
                  "sparse_categorical_crossentropy")
    model.fit(keras_vgg.preprocessing.apply(x, "caffe"), y, epochs=10,
              batch_size=16, verbose=0)
    return common.load_export_model(model, q=q)


def write_localizer_run(directory, regression="pcr", seed=1, scale=40):
    """A localisation run beside `write_run`'s classifier: a tiny localiser
    (same window, same classes) with random weights whose boxes differ from
    position to position.  Returns (directory, model)."""
    os.makedirs(directory, exist_ok=True)
    model = keras_vgg.VGGLocalizer(
        "A", regression=regression, classes=len(CLASS_NAMES),
        input_shape=(CROP, CROP, 3), width_multiplier=0.125, dropout=0.0,
        name=f"tiny_loc{seed}")
    randomize(model, seed=seed)
    # Boxes around the window's centre with sizes about half of it, varying
    # with the input: small weights on a centred bias.
    head = model.get_layer("boxes")
    kernel, bias = head.get_weights()
    centre = np.tile(np.array([0.5, 0.5, 0.5, 0.5], "float32"),
                     len(bias) // 4)
    head.set_weights([kernel * 2e-4, centre])
    model.save(os.path.join(directory, "model.keras"))
    config = training_config(scale, scale)
    config.update(task="localisation", regression=regression)
    with open(os.path.join(directory, "training_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(directory, "class_names.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    return directory, model
