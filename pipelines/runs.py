"""Reading what a training run left: its model and its training config.

One place for the run-directory conventions of `pipelines.train` (a run dir
holds `model.keras`, `training_config.json`, `class_names.txt`), used by
evaluation, localisation and export.
"""

import json
import os

import keras


def load_run_model(model, what="--model"):
    """Loads a `.keras` file or the `model.keras` of a run directory.

    Returns:
        (keras.Model, model_path, training_config dict or None).

    Raises:
        ValueError: starting with `what`, when the file is missing, cannot be
            read or is not a Keras model.
    """
    path = os.fspath(model)
    if os.path.isdir(path):
        path = os.path.join(path, "model.keras")
    if not os.path.isfile(path):
        raise ValueError(f"{what}: no model file at {path!r} (give a .keras "
                         "file or a training run directory).")
    try:
        loaded = keras.saving.load_model(path, compile=False)
    except Exception as e:  # corrupt zip, unknown layer, wrong format
        raise ValueError(f"{what}: cannot read {path!r}: "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(loaded, keras.Model):
        raise ValueError(f"{what}: {path!r} holds a {type(loaded).__name__}, "
                         "not a Keras model.")
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)),
                               "training_config.json")
    training_config = None
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                training_config = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{what}: cannot read {config_path!r}: {e}") \
                from e
    return loaded, path, training_config
