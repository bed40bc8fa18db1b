"""What every exporter shares: finding the model to export, the flags that
name it, and writing an artifact directory atomically.

A model to export comes either from a training run (`--model=RUN_DIR` or
`--model=model.keras`; class names and the test scale Q from its
`training_config.json`) or from a configuration and weights
(`--config=D --weights=imagenet`; ImageNet class names for 1000 classes).

Example:
>>> source = load_export_model("runs/demo")
>>> source.crop, source.q, source.preprocessing, source.class_names[:2]
(64, 64, 'caffe', ['circle', 'square'])
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Optional

from absl import flags

import keras

import keras_vgg
from keras_vgg import layers as vgg_layers
from keras_vgg import localizer as localizer_lib
from keras_vgg import preprocessing as vgg_preprocessing
from keras_vgg import weights as weights_lib
from pipelines import runs

# Q for a model that has no training_config.json: the paper's smallest test
# scale, right for the published weights' 224 crops.
DEFAULT_Q = 256


@dataclasses.dataclass
class ExportModel:
    """A classifier to export and what is known about it.

    Attributes:
        model: the Keras classifier (Flatten/Dense head, softmax output),
            taking crop x crop x 3 inputs.
        name: where it came from (path or "D:imagenet").
        class_names: list of `num_classes` names.
        q: default test scale (smallest image side before dense evaluation).
        crop: the classifier's input side (training crop).
        preprocessing: "caffe", "torch" or "none" ("none" when the model
            holds its own `keras_vgg.layers.Preprocessing` layer).
        training_config: the run's training_config.json, or None.
    """
    model: keras.Model
    name: str
    class_names: list
    q: int
    crop: int
    preprocessing: str
    training_config: Optional[dict] = None

    @property
    def num_classes(self):
        return int(self.model.outputs[0].shape[-1])


def q_from_training_config(training_config, crop):
    """The test scale Q of a run: `validation_scale`, else S for a fixed S,
    else the middle of [Smin, Smax]; DEFAULT_Q (at least `crop`) without a
    config."""
    cfg = training_config or {}
    if cfg.get("validation_scale"):
        return int(cfg["validation_scale"])
    lo, hi = cfg.get("scale_min"), cfg.get("scale_max")
    if lo and hi:
        return int((int(lo) + int(hi)) // 2)
    if lo:
        return int(lo)
    return max(DEFAULT_Q, crop) if crop >= 224 else crop


def _read_class_names(path, what):
    try:
        with open(path) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError as e:
        raise ValueError(f"Cannot read {what} {path!r}: {e}") from e


def _has_preprocessing_layer(model):
    return any(isinstance(layer, vgg_layers.Preprocessing)
               for layer in model.layers)


def _input_crop(model, name):
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(
            f"Model {name!r} takes inputs of shape {shape}; export needs a "
            "classifier of square, fixed-size crops (N, crop, crop, 3).")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(f"Model {name!r} must output (N, classes) "
                         "probabilities.")
    return int(shape[1])


def load_export_model(model=None, config=None, weights=None,
                      batch_norm=False, classes=1000, class_names=None,
                      q=None):
    """The `ExportModel` named by a run / .keras path, or a config + weights.

    Args:
        model: a training run directory (model.keras, training_config.json,
            class_names.txt), a `.keras` file, or a `keras.Model`.
        config: with `weights`, instead of `model`: "A".."E".
        weights: a weight set name ("imagenet", "tv_in1k") or a weight file.
        batch_norm: with `config`: the BN variant.
        classes: with `config` and a weight file: the head's classes.
        class_names: optional path of a names file (one per line),
            overriding the run's / ImageNet's names.
        q: test scale override; default from the run (see
            `q_from_training_config`).

    Raises:
        ValueError: naming the flag (`--model`, `--config`, `--weights`,
            `--class_names`, `--q`) or file that is wrong.
    """
    training_config = None
    names = None
    if model is not None and config is not None:
        raise ValueError("Give either --model or --config/--weights, not "
                         "both.")
    if model is None and config is None:
        raise ValueError("Give --model (a run directory or .keras file) or "
                         "--config with --weights.")
    if isinstance(model, keras.Model):
        name = model.name
    elif model is not None:
        model, path, training_config = runs.load_run_model(model, "--model")
        directory = os.path.dirname(os.path.abspath(path))
        name = path
        if training_config:
            names = training_config.get("class_names")
        names_path = os.path.join(directory, "class_names.txt")
        if not names and os.path.isfile(names_path):
            names = _read_class_names(names_path, "class names file")
    else:
        if weights is None:
            raise ValueError("--config needs --weights (a weight set name "
                             f"such as {list(weights_lib.WEIGHT_NAMES)} or a "
                             "weight file).")
        try:
            keras_vgg.get_config(config)
        except ValueError as e:
            raise ValueError(f"--config: {e}") from e
        if not (weights in weights_lib.WEIGHT_NAMES
                or weights_lib.is_weight_file(weights)):
            raise ValueError(
                f"--weights={weights!r} is neither a weight set name "
                f"({list(weights_lib.WEIGHT_NAMES)}) nor an existing weight "
                "file.")
        try:
            model = keras_vgg.VGG(config, weights=weights,
                                  batch_norm=batch_norm, classes=classes)
        except ValueError as e:
            raise ValueError(f"--config={config!r} --weights={weights!r}: "
                             f"{e}") from e
        name = f"{config}:{weights}"
        training_config = {"preprocessing":
                           weights_lib.preprocessing_for(weights)}
    if localizer_lib.is_localizer(model):
        raise ValueError(
            f"{name!r} is a localiser (a 'boxes' layer): export it with "
            "--classifier, the classification network rating its boxes "
            "(export.localizer).")
    crop = _input_crop(model, name)
    num_classes = int(model.outputs[0].shape[-1])
    if class_names is not None:
        names = _read_class_names(class_names, "--class_names")
    if not names:
        names = (keras_vgg.class_names() if num_classes == 1000
                 else [f"class_{i}" for i in range(num_classes)])
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ValueError(
            f"{'--class_names' if class_names else name!r}: "
            f"{len(names)} class names for a model of {num_classes} "
            "classes.")
    if _has_preprocessing_layer(model):
        mode = "none"
    else:
        mode = (training_config or {}).get("preprocessing", "caffe")
    vgg_preprocessing.check_mode(mode)
    if q is None:
        q = q_from_training_config(training_config, crop)
    if not isinstance(q, int) or isinstance(q, bool) or q < crop:
        raise ValueError(f"--q={q!r}: the test scale must be an int of at "
                         f"least the crop size {crop}.")
    return ExportModel(model=model, name=name, class_names=names, q=q,
                       crop=crop, preprocessing=mode,
                       training_config=training_config)


# -- flags --------------------------------------------------------------------

def define_model_flags(flag_values=None):
    """Defines the flags that name the model (shared by every exporter)."""
    fv = flag_values or flags.FLAGS
    flags.DEFINE_string("model", None, "Training run directory or .keras "
                        "file to export.", flag_values=fv)
    flags.DEFINE_string("config", None, "VGG configuration (A..E), with "
                        "--weights, instead of --model.", flag_values=fv)
    flags.DEFINE_string("weights", None, "Weight set name (imagenet, "
                        "tv_in1k) or weight file, with --config.",
                        flag_values=fv)
    flags.DEFINE_bool("batch_norm", False, "With --config: the BN variant.",
                      flag_values=fv)
    flags.DEFINE_integer("classes", 1000, "With --config and a weight file: "
                         "number of classes.", flag_values=fv)
    flags.DEFINE_string("class_names", None, "Class names file (one per "
                        "line) overriding the run's / ImageNet's.",
                        flag_values=fv)
    flags.DEFINE_integer("q", None, "Test scale Q (smallest image side); "
                         "default from training_config.json, else 256.",
                         flag_values=fv)
    flags.DEFINE_string("classifier", None, "With a localiser as --model: "
                        "the classification run or .keras whose class "
                        "scores rate its boxes (outputs gain `boxes`).",
                        flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output.",
                      flag_values=fv)


def define_serving_flags(flag_values=None):
    """--top_k and --flip, shared by the SavedModel and serving exporters."""
    fv = flag_values or flags.FLAGS
    flags.DEFINE_integer("top_k", 5, "Top classes in the outputs.",
                         flag_values=fv)
    flags.DEFINE_bool("flip", True, "Average with the flipped image.",
                      flag_values=fv)


def is_export_source(source):
    """An `ExportModel` or an `export.localizer.LocalizerSource`."""
    from export import localizer

    return isinstance(source, (ExportModel, localizer.LocalizerSource))


def model_from_flags(fv=None):
    """The `ExportModel` the flags name, or with `--classifier` an
    `export.localizer.LocalizerSource` (a localiser without it is refused
    by `load_export_model`, naming the flag)."""
    fv = fv or flags.FLAGS
    if fv.classifier:
        from export import localizer

        if fv.config:
            raise ValueError("--classifier goes with --model (a localiser), "
                             "not --config.")
        return localizer.load_localizer_source(
            fv.model, fv.classifier, q=fv.q, class_names=fv.class_names)
    return load_export_model(model=fv.model, config=fv.config,
                             weights=fv.weights, batch_norm=fv.batch_norm,
                             classes=fv.classes, class_names=fv.class_names,
                             q=fv.q)


# -- atomic output -----------------------------------------------------------

@contextlib.contextmanager
def atomic_directory(target, overwrite=False):
    """Yields a temporary directory beside `target`; renames it to `target`
    when the block ends without an exception, else deletes it.  A reader
    therefore sees no `target` or a complete one, never half of it.

    Raises:
        FileExistsError: `target` exists and `overwrite` is False (checked
            before and again after the block).

    Example:
    >>> with atomic_directory("models/vgg16/1") as tmp:
    ...     tf.saved_model.save(module, tmp)
    """
    target = os.path.abspath(os.fspath(target))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target!r} exists; pass overwrite=True "
                              "(--overwrite) to replace it.")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(target)
    # A leading dot keeps TF-Serving's version scan (numeric names only) and
    # most globbing away from the half-written directory.
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        yield tmp
        old = None
        if os.path.exists(target):
            if not overwrite:
                raise FileExistsError(f"{target!r} appeared while writing; "
                                      "not replacing it.")
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(target, os.path.join(old, base))
        os.rename(tmp, target)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_file(path, data, overwrite=False):
    """Writes bytes or text to `path` through a temporary file and a rename."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True "
                              "(--overwrite) to replace it.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
