"""A trained model and what its run says about it, as one object.

`pipelines.train` leaves a run directory holding `model.keras`,
`training_config.json` and `class_names.txt`.  `load_run` reads such a
directory (or a `.keras` file, or a model in memory) into a `Run`: the
model, its training config, class names, input crop, preprocessing (in the
model or not), task and regression, and the paper's test scales.
Evaluation, score maps, localisation, every exporter and `--init_from`
read runs through it, so each of these facts is worked out here only.

The test scales (the paper's section 3.2):

- single scale: Q = S for a fixed training scale S, Q = (Smin + Smax) / 2
  for a jittered one; a run's explicit `test_scale` wins;
- multi-scale: {S - 32, S, S + 32} for fixed S, {Smin, (Smin + Smax) / 2,
  Smax} for jittered S; scales under the crop are dropped;
- a model without a training config is taken as trained at the paper's
  smallest S = 256 (for a 224 crop);
- at other crop sizes S and the 32-pixel step scale with the crop
  (S = 37 and a step of 5 for a 32-pixel model without config).

Example::

    run = keras_vgg.runs.load_run("runs/demo")
    run.crop, run.test_scale, run.multi_scales, run.class_names[:2]
    # (64, 64, [64, 68, 72], ['circle', 'square'])
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras

from keras_vgg import configs
from keras_vgg import imagenet
from keras_vgg import layers as vgg_layers
from keras_vgg import localizer as localizer_lib
from keras_vgg import preprocessing as vgg_preprocessing
from keras_vgg import vgg
from keras_vgg import weights as weights_lib
from keras_vgg.fully_conv import check_stride
from keras_vgg.fully_conv import fully_convolutional
from keras_vgg.fully_conv import score_map_strides

MODEL_FILE = "model.keras"
CONFIG_FILE = "training_config.json"
CLASS_NAMES_FILE = "class_names.txt"
METRICS_FILE = "metrics.json"
# The training config's record of whether the run's class names are
# invented ("0", "1", ... for a dataset that names none) rather than the
# dataset's own (folder, tfds or class-names-file names).
NAMES_INVENTED = "class_names_invented"

# The paper's smallest training scale and its multi-scale step, at its
# 224-pixel crop.
PAPER_CROP = 224
PAPER_SCALE = 256
PAPER_STEP = 32

TASKS = ("classification", "localization")
# Spellings and keys of training configs written by earlier versions.
_TASK_ALIASES = {"localisation": "localization"}
_KEY_ALIASES = {"config": "architecture"}


# -- test scales --------------------------------------------------------------

def _scaled(value: int, crop: int) -> int:
    return int(round(value * crop / PAPER_CROP))


def training_scales(training_config: dict | None,
                    crop: int) -> tuple[int, int]:
    """(Smin, Smax) of a training config; S = 256 * crop / 224 (both) for a
    model without one."""
    config = training_config or {}
    s_min, s_max = config.get("scale_min"), config.get("scale_max")
    if s_min and s_max:
        return int(s_min), int(s_max)
    if s_min or s_max:
        s = int(s_min or s_max)
        return s, s
    s = _scaled(PAPER_SCALE, crop)
    return s, s


def test_scale(training_config: dict | None, crop: int) -> int:
    """The single test scale Q: the config's explicit `test_scale` (or the
    `validation_scale` it recorded), else S for fixed S, else the middle of
    [Smin, Smax]."""
    config = training_config or {}
    explicit = config.get("test_scale") or config.get("validation_scale")
    if explicit:
        return int(explicit)
    s_min, s_max = training_scales(config, crop)
    return (s_min + s_max) // 2


def multi_scales(training_config: dict | None, crop: int) -> list[int]:
    """The multi-scale test scales: {S - step, S, S + step} for fixed S
    (step 32 * crop / 224), {Smin, mid, Smax} for jittered S; scales under
    the crop dropped."""
    s_min, s_max = training_scales(training_config, crop)
    if s_max > s_min:
        scales = [s_min, (s_min + s_max) // 2, s_max]
    else:
        step = max(1, _scaled(PAPER_STEP, crop))
        scales = [s_min - step, s_min, s_min + step]
    return [q for q in scales if q >= crop]


def check_test_scale(q: Any, crop: int, what: str = "test scale") -> int:
    """`q` as an int, or ValueError naming `what` when it is no int or is
    smaller than the crop."""
    if isinstance(q, bool) or not isinstance(q, int):
        try:
            if isinstance(q, bool) or int(q) != q:
                raise ValueError
            q = int(q)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: the test scale Q must be an int. "
                             f"Received: {q!r}") from None
    if q < crop:
        raise ValueError(f"{what}: the test scale Q={q} is smaller than the "
                         f"crop size {crop}; Q must be at least {crop}.")
    return q


# -- reading a run ---------------------------------------------------------

def normalize_training_config(config: dict | None) -> dict:
    """A training config dict with the keys and spellings of this version
    (`architecture`, task `localization`), whatever version wrote it."""
    config = dict(config or {})
    for old, new in _KEY_ALIASES.items():
        if old in config and new not in config:
            config[new] = config.pop(old)
    task = config.get("task")
    if task:
        config["task"] = _TASK_ALIASES.get(task, task)
    return config


def read_class_names(path: str, what: str = "class names file") -> list[str]:
    """The non-empty lines of a names file, one class per line."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"Cannot read the {what} {path!r}: {e}") from e


def read_training_config(directory: str, what: str = "--model") -> dict:
    """The run's training_config.json (normalised), or {} without one."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{what}: cannot read {path!r}: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{what}: {path!r} holds no JSON object.")
    return normalize_training_config(config)


def load_model_file(path: str, what: str = "--model") -> keras.Model:
    """The Keras model of a `.keras` file, or ValueError naming `what` and
    the file."""
    if not os.path.isfile(path):
        raise ValueError(f"{what}: no model file at {path!r} (give a .keras "
                         "file or a training run directory).")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # corrupt zip, unknown layer, wrong format
        raise ValueError(f"{what}: cannot read {path!r}: "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(model, keras.Model):
        raise ValueError(f"{what}: {path!r} holds a {type(model).__name__}, "
                         "not a Keras model.")
    return model


# -- the run ---------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """A trained model and what its run says about it.

    Attributes:
        model: the Keras model (a classifier with its softmax, or a
            localiser whose last layer is `boxes`).
        name: where it came from (a path, or the model's name).
        directory: the run directory, or None.
        training_config: the run's training config (normalised), or {}.
        class_names: one name per class, or None when nothing says (names
            the run invented for a dataset without names are None: see
            `NAMES_INVENTED`).
        crop: the model's (square) input side.
        preprocessing: "caffe", "torch", or "none" when the model holds its
            own `keras_vgg.layers.Preprocessing` layer.
        task: "classification" or "localization".
        regression: a localiser's "scr" or "pcr"; None for classifiers.
        test_scale_override: a test scale chosen by the caller (`with_q`),
            None for the run's own.
    """
    model: keras.Model
    name: str
    directory: str | None = None
    training_config: dict = dataclasses.field(default_factory=dict)
    class_names: list[str] | None = None
    crop: int = PAPER_CROP
    preprocessing: str = "caffe"
    task: str = "classification"
    regression: str | None = None
    test_scale_override: int | None = None
    _fcns: dict = dataclasses.field(default_factory=dict, repr=False,
                                    compare=False)

    @property
    def num_classes(self) -> int:
        if self.task == "classification":
            return int(self.model.outputs[0].shape[-1])
        if self.class_names:
            return len(self.class_names)
        if self.training_config.get("num_classes"):
            return int(self.training_config["num_classes"])
        units = int(self.model.get_layer("boxes").units)
        return units // 4 if self.regression == "pcr" else 0

    @property
    def architecture(self) -> str | None:
        """The Table 1 configuration the run was trained as, if recorded."""
        return self.training_config.get("architecture")

    @property
    def test_scale(self) -> int:
        """The single test scale Q (see the module doc), or the one chosen
        with `with_q`."""
        if self.test_scale_override is not None:
            return self.test_scale_override
        return test_scale(self.training_config, self.crop)

    @property
    def figure_scale(self) -> int:
        """The scale a score-map picture uses unless told: the larger of
        the test scale and twice the crop.

        At the run's own Q the map is often one position (the `demo` run
        tests at Q = crop = 64; a model without a config at S = 256 * crop
        / 224, under crop + stride), which shows nothing of where a class
        is.  At Q = 2 * crop the short side holds crop / stride + 1
        positions (3 for a 64 crop, 8 for VGG's 224) and each window covers
        half of it: Q = 448 for VGG, within the paper's test scales.
        """
        return max(self.test_scale, 2 * self.crop)

    @property
    def multi_scales(self) -> list[int]:
        """The multi-scale test scales (see the module doc)."""
        return multi_scales(self.training_config, self.crop)

    def scales(self, multi_scale: bool) -> list[int]:
        """[test_scale], or the multi-scale set."""
        return self.multi_scales if multi_scale else [self.test_scale]

    def with_q(self, q: int | None, what: str = "--q") -> Run:
        """This run with the test scale `q` (None: the run's own)."""
        if q is None:
            return self
        q = check_test_scale(q, self.crop, what)
        return dataclasses.replace(self, test_scale_override=q, _fcns={})

    def fully_convolutional(self, average: bool = False,
                            stride: int | None = None,
                            what: str = "stride") -> keras.Model:
        """`keras_vgg.fully_convolutional(model, average, stride=stride)`,
        made once per (average, stride); None is the network's own stride;
        a stride the model does not allow is a ValueError naming `what`
        (e.g. "--dense_stride")."""
        asked = (bool(average), stride)
        if asked not in self._fcns:
            try:
                score_map_strides(self.model)
            except ValueError as e:
                raise ValueError(
                    f"Model {self.name!r} cannot be evaluated densely: its "
                    f"head cannot be rewritten into convolutions ({e})"
                ) from e
            key = (bool(average),
                   check_stride(self.model, stride, what, self.name))
            if key not in self._fcns:
                self._fcns[key] = fully_convolutional(
                    self.model, average=average, stride=key[1])
            self._fcns[asked] = self._fcns[key]
        return self._fcns[asked]

    @property
    def fcn(self) -> keras.Model:
        """The fully convolutional classifier with averaged scores."""
        return self.fully_convolutional(average=True)


def _is_softmax(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return activation is keras.activations.softmax or getattr(
        activation, "__name__", None) == "softmax"


def _input_crop(model: keras.Model, name: str) -> int:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(
            f"Model {name!r} takes inputs of shape {shape}; it needs square, "
            "fixed-size crops (N, crop, crop, 3).")
    return int(shape[1])


def placeholder_names(names) -> bool:
    """Whether `names` are "0", "1", ..., "N-1" in order: what
    `pipelines.train` writes for a dataset without class names."""
    return bool(names) and [str(n) for n in names] == [
        str(i) for i in range(len(names))]


def _class_names(directory, config, count, task, name):
    """The run's real class names, or None when it has none: names
    invented for a dataset without names say nothing of the classes."""
    if config.get(NAMES_INVENTED):
        return None
    names = config.get("class_names")
    path = os.path.join(directory, CLASS_NAMES_FILE) if directory else None
    if not names and path and os.path.isfile(path):
        names = read_class_names(path)
    if not names and count == 1000:
        names = imagenet.class_names()
    if not names:
        return None
    names = [str(n) for n in names]
    if NAMES_INVENTED not in config and placeholder_names(names):
        # Runs from before the record: "0", "1", ... were most often
        # invented, and were taken as no names.
        return None
    if count and len(names) != count:
        raise ValueError(f"{name!r}: {len(names)} class names for a "
                         f"{task} model of {count} classes.")
    return names


def from_model(model: keras.Model, name: str | None = None,
               training_config: dict | None = None,
               directory: str | None = None,
               class_names: list[str] | None = None,
               preprocessing: str | None = None) -> Run:
    """The `Run` of a model in memory and what is known about it.

    Args:
        model: a classifier (softmax output) or a localiser (`boxes`).
        name: how messages name it (default the model's name).
        training_config: its training config dict (or None).
        directory: a run directory to read `class_names.txt` from.
        class_names: names overriding the run's.
        preprocessing: overrides the run's mode ("caffe", "torch",
            "none"); by default "none" when the model holds a
            `Preprocessing` layer, else the config's, else "caffe".
    """
    name = name or model.name
    config = normalize_training_config(training_config)
    crop = _input_crop(model, name)
    if localizer_lib.is_localizer(model):
        task = "localization"
        units = int(model.get_layer("boxes").units)
        regression = config.get("regression") or (
            "scr" if units == 4 else "pcr")
        count = units // 4 if regression == "pcr" else config.get(
            "num_classes")
    else:
        task, regression = "classification", None
        if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
            raise ValueError(f"Model {name!r} must output (N, classes) "
                             "probabilities.")
        count = int(model.outputs[0].shape[-1])
    if class_names is not None:
        names = [str(n) for n in class_names]
        if count and len(names) != count:
            raise ValueError(f"{len(names)} class names for model {name!r} "
                             f"of {count} classes.")
    else:
        names = _class_names(directory, config, count, task, name)
    if preprocessing is None:
        preprocessing = (vgg_layers.input_preprocessing(model)
                         or config.get("preprocessing") or "caffe")
    vgg_preprocessing.check_mode(preprocessing)
    return Run(model=model, name=name, directory=directory,
               training_config=config, class_names=names, crop=crop,
               preprocessing=preprocessing, task=task, regression=regression)


def from_weights(architecture: str, weights: str,
                 batch_norm: bool | None = None, classes: int | None = None,
                 width_multiplier: float | None = None) -> Run:
    """The `Run` of a Table 1 network built with a weight set or file (no
    training run): named "<architecture>:<weights>", with the weights'
    preprocessing and ImageNet's class names for 1000 classes.

    `batch_norm`, `classes` and `width_multiplier` left None are what a
    weight file's shapes say (`keras_vgg.weights.inspect_weight_file`; 1000
    classes for a file without a head); with a weight set name, False,
    1000 and 1.0.

    Raises:
        ValueError: naming `--architecture` or `--weights`.
    """
    try:
        configs.get_config(architecture)
    except ValueError as e:
        raise ValueError(f"--architecture: {e}") from e
    if weights is None or not (weights in weights_lib.WEIGHT_NAMES
                               or weights_lib.is_weight_file(weights)):
        raise ValueError(
            f"--weights={weights!r} is neither a weight set name "
            f"({list(weights_lib.WEIGHT_NAMES)}) nor an existing weight "
            "file.")
    try:
        if weights_lib.is_weight_file(weights):
            found = weights_lib.inspect_weight_file(weights)
            batch_norm = found.batch_norm if batch_norm is None else batch_norm
            classes = classes or found.classes
            width_multiplier = width_multiplier or found.width_multiplier
        model = vgg.VGG(architecture, weights=weights,
                        batch_norm=batch_norm or False,
                        classes=classes or 1000,
                        width_multiplier=width_multiplier or 1.0)
    except ValueError as e:
        raise ValueError(f"--architecture={architecture!r} "
                         f"--weights={weights!r}: {e}") from e
    return from_model(model, name=f"{architecture}:{weights}",
                      training_config={
                          "architecture": architecture,
                          "preprocessing": weights_lib.preprocessing_for(
                              weights)})


def load_run(source: Any, what: str = "--model",
             class_names: list[str] | None = None,
             preprocessing: str | None = None) -> Run:
    """A `Run` from a run directory, a `.keras` file, a Keras model or a
    `Run` (returned as it is).

    Args:
        source: the run directory (holding model.keras and, as
            `pipelines.train` writes them, training_config.json and
            class_names.txt), a `.keras` path, a keras.Model or a Run.
        what: how error messages name the argument ("--model").
        class_names: names overriding the run's.
        preprocessing: overrides the run's mode.

    Raises:
        ValueError: starting with `what`, when the file is missing or cannot
            be read, or the model is neither a square-input classifier nor
            a localiser.
    """
    if isinstance(source, Run):
        return source
    if isinstance(source, keras.Model):
        return from_model(source, class_names=class_names,
                          preprocessing=preprocessing)
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    model = load_model_file(path, what)
    directory = os.path.dirname(os.path.abspath(path))
    config = read_training_config(directory, what)
    try:
        return from_model(model, name=path, training_config=config,
                          directory=directory, class_names=class_names,
                          preprocessing=preprocessing)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e


def load_classifier(source: Any, what: str = "--model",
                    class_names: list[str] | None = None,
                    preprocessing: str | None = None) -> Run:
    """`load_run`, refusing anything but a classifier ending in softmax
    (the protocols average probabilities)."""
    run = load_run(source, what, class_names, preprocessing)
    if run.task != "classification":
        raise ValueError(
            f"{what}: {run.name!r} is a localiser (a 'boxes' layer), not a "
            "classification network.")
    if not _is_softmax(run.model.layers[-1]):
        raise ValueError(
            f"{what}: model {run.name!r} does not end in a softmax: the "
            "protocols average class probabilities (save the model with its "
            "softmax, as pipelines.train does).")
    return run


def load_localizer(source: Any, what: str = "--model",
                   preprocessing: str | None = None) -> Run:
    """`load_run`, refusing anything but a localiser (a `boxes` layer)."""
    run = load_run(source, what, preprocessing=preprocessing)
    if run.task != "localization":
        raise ValueError(f"{what}: {run.name!r} is not a localiser (no "
                         "'boxes' layer).")
    return run
