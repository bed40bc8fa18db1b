"""What every exporter shares: the model to export and the flags naming it.

A model to export comes either from a training run (`--model=RUN_DIR` or
`--model=model.keras`, read by `keras_vgg.runs`: class names, crop,
preprocessing and the test scale Q come from the run) or from an
architecture and weights (`--architecture=D --weights=imagenet`; ImageNet
class names for 1000 classes).  Either way it is a `keras_vgg.runs.Run`.
A localiser is exported with the classifier that rates its boxes: a
`LocalizerSource`.

Example::

    source = load_export_model("runs/demo")
    source.crop, source.test_scale, source.preprocessing
    # (64, 64, 'caffe')
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
from absl import flags
from absl import logging

import keras_vgg
from export import dense
from keras_vgg import runs
from keras_vgg import weights as weights_lib
from pipelines import entry


@dataclasses.dataclass
class LocalizerSource:
    """A localiser to export and the classifier that rates its boxes.

    Attributes:
        localizer: the Keras localiser (output layer `boxes`).
        regression: "scr" or "pcr".
        preprocessing: the localiser's input preprocessing.
        classifier: the classifier's `keras_vgg.runs.Run` (class names, Q,
            crop).
    """
    localizer: keras.Model
    regression: str
    preprocessing: str
    classifier: runs.Run

    @property
    def name(self):
        return self.localizer.name

    @property
    def class_names(self):
        return self.classifier.class_names

    @property
    def num_classes(self):
        return self.classifier.num_classes

    @property
    def test_scale(self):
        return self.classifier.test_scale

    @property
    def crop(self):
        return self.classifier.crop


def _class_names_for(run, class_names):
    """The run with `--class_names` when given, else as it is (its own
    names, ImageNet's for 1000 classes, or None: see `output_labels`)."""
    if class_names is not None:
        names = runs.read_class_names(class_names, "--class_names")
        if len(names) != run.num_classes:
            raise ValueError(f"--class_names: {len(names)} class names for a "
                             f"model of {run.num_classes} classes.")
        return dataclasses.replace(run, class_names=names)
    return run


def output_labels(source):
    """The labels an artifact gives its outputs: the source's class names,
    else class_0..class_{n-1} (kept out of the run itself, so that nothing
    takes them for the classes' real names)."""
    return list(source.class_names or
                [f"class_{i}" for i in range(source.num_classes)])


def load_export_model(model=None, architecture=None, weights=None,
                      batch_norm=False, classes=1000, class_names=None,
                      q=None) -> runs.Run:
    """The classifier named by a run / .keras path, or an architecture and
    weights, as a `keras_vgg.runs.Run`.

    Args:
        model: a training run directory, a `.keras` file, a `keras.Model`
            or a `Run`.
        architecture: with `weights`, instead of `model`: "A".."E".
        weights: a weight set name ("imagenet", "tv_in1k") or a weight file.
        batch_norm: with `architecture`: the BN variant.
        classes: with `architecture` and a weight file: the head's classes.
        class_names: optional path of a names file (one per line),
            overriding the run's / ImageNet's names.
        q: test scale override; default the run's (`keras_vgg.runs`).

    Raises:
        ValueError: naming the flag (`--model`, `--architecture`,
            `--weights`, `--class_names`, `--q`) or file that is wrong.
    """
    if model is not None and architecture is not None:
        raise ValueError("Give either --model or --architecture/--weights, "
                         "not both.")
    if model is None and architecture is None:
        raise ValueError("Give --model (a run directory or .keras file) or "
                         "--architecture with --weights.")
    if model is None:
        if weights is None:
            raise ValueError("--architecture needs --weights (a weight set "
                             f"name such as {list(weights_lib.WEIGHT_NAMES)} "
                             "or a weight file).")
        run = runs.from_weights(architecture, weights, batch_norm, classes)
    else:
        run = runs.load_run(model, "--model")
    if run.task != "classification":
        raise ValueError(
            f"{run.name!r} is a localiser (a 'boxes' layer): export it with "
            "--classifier, the classification network rating its boxes "
            "(export.localizer).")
    return _class_names_for(run, class_names).with_q(q)


def load_localizer_source(model, classifier, q=None, class_names=None):
    """The `LocalizerSource` of a localiser run / .keras and a classifier.

    Args:
        model: localisation run directory, .keras file, keras.Model or Run.
        classifier: classification run directory, .keras, keras.Model or
            Run.
        q: test scale; default the localiser run's.
        class_names: optional names file (as `load_export_model`).

    Raises:
        ValueError: naming `--model` / `--classifier` when one is not what
            it should be, or when their input windows differ.
    """
    if classifier is None:
        raise ValueError("--model is a localiser: give --classifier (a "
                         "classification run or .keras whose class scores "
                         "rate its boxes).")
    loc = runs.load_localizer(model, "--model")
    clf = runs.load_run(classifier, "--classifier")
    if clf.task != "classification":
        raise ValueError(f"--classifier {clf.name!r} is a localiser; give a "
                         "classification network.")
    clf = _class_names_for(clf, class_names)
    if clf.crop != loc.crop:
        raise ValueError(
            f"--model's input window ({loc.crop}) differs from "
            f"--classifier's ({clf.crop}): their score maps would not "
            "line up.")
    clf = clf.with_q(loc.test_scale if q is None else q, "--q")
    units = int(loc.model.get_layer("boxes").units)
    if loc.regression == "pcr" and units != 4 * clf.num_classes:
        raise ValueError(
            f"--model is a PCR localiser of {units // 4} classes but "
            f"--classifier has {clf.num_classes}.")
    return LocalizerSource(localizer=loc.model, regression=loc.regression,
                           preprocessing=loc.preprocessing, classifier=clf)


def is_export_source(source):
    """A classifier `Run` or a `LocalizerSource`."""
    return isinstance(source, (runs.Run, LocalizerSource))


# -- flags --------------------------------------------------------------------

def define_model_flags(flag_values=None):
    """Defines the flags that name the model (shared by every exporter)."""
    fv = flag_values or flags.FLAGS
    flags.DEFINE_string("model", None, "Training run directory or .keras "
                        "file to export.", flag_values=fv)
    flags.DEFINE_enum("architecture", None, list(keras_vgg.CONFIGS),
                      "Table 1 configuration, with --weights, instead of "
                      "--model.", case_sensitive=False, flag_values=fv)
    flags.DEFINE_alias("config", "architecture", flag_values=fv)
    flags.DEFINE_string("weights", None, "Weight set name (imagenet, "
                        "tv_in1k) or weight file, with --architecture.",
                        flag_values=fv)
    flags.DEFINE_bool("batch_norm", False,
                      "With --architecture: the BN variant.", flag_values=fv)
    flags.DEFINE_integer("classes", 1000, "With --architecture and a weight "
                         "file: number of classes.", flag_values=fv)
    flags.DEFINE_string("class_names", None, "Class names file (one per "
                        "line) overriding the run's / ImageNet's.",
                        flag_values=fv)
    flags.DEFINE_integer("q", None, "Test scale Q (smallest image side); "
                         "default the run's (keras_vgg.runs).",
                         flag_values=fv)
    flags.DEFINE_string("classifier", None, "With a localiser as --model: "
                        "the classification run or .keras whose class "
                        "scores rate its boxes (outputs gain `boxes`).",
                        flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output.",
                      flag_values=fv)


def define_serving_flags(flag_values=None):
    """--top_k, --flip, --dense_stride and the image limits, shared by the
    SavedModel and serving exporters."""
    fv = flag_values or flags.FLAGS
    flags.DEFINE_integer("top_k", 5, "Top classes in the outputs.",
                         flag_values=fv)
    flags.DEFINE_bool("flip", True, "Average with the flipped image.",
                      flag_values=fv)
    flags.DEFINE_integer(
        "max_pixels", dense.MAX_PIXELS, "Largest image (height x width "
        "pixels) the served model decodes; larger ones are refused from "
        "their header, before decoding.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float(
        "max_aspect_ratio", dense.MAX_ASPECT_RATIO, "Most elongated image "
        "(long side / short side) the served model accepts; rescaled to Q "
        "an image costs Q^2 times this.", lower_bound=1.0, flag_values=fv)
    entry.define_dense_stride(
        "the score-map positions the served model averages", __name__, fv)


@contextlib.contextmanager
def quiet_tensorflow():
    """TensorFlow's INFO logging (signature notes, asset paths, converter
    notes: dozens of lines per export) held back for the block: absl's
    verbosity at WARNING, unless `--verbosity` / `-v` was given, which then
    decides as everywhere else."""
    if flags.FLAGS["verbosity"].present:
        yield
        return
    old = logging.get_verbosity()
    # absl counts up from FATAL: the lesser verbosity is the quieter one.
    logging.set_verbosity(min(old, logging.WARNING))
    try:
        yield
    finally:
        logging.set_verbosity(old)


def model_from_flags(fv=None):
    """The classifier `Run` the flags name, or with `--classifier` a
    `LocalizerSource` (a localiser without it is refused by
    `load_export_model`, naming the flag)."""
    fv = fv or flags.FLAGS
    if fv.classifier:
        if fv.architecture:
            raise ValueError("--classifier goes with --model (a localiser), "
                             "not --architecture.")
        return load_localizer_source(
            fv.model, fv.classifier, q=fv.q, class_names=fv.class_names)
    return load_export_model(model=fv.model, architecture=fv.architecture,
                             weights=fv.weights, batch_norm=fv.batch_norm,
                             classes=fv.classes, class_names=fv.class_names,
                             q=fv.q)
