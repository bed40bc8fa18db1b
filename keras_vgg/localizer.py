"""The localisation networks of the paper's appendix A.

A classification VGG whose last FC layer is replaced by a box regressor: 4
outputs shared by every class (single-class regression, "scr") or 4 per
class (per-class regression, "pcr"; 4000 outputs for ImageNet).  A box is
(centre x, centre y, width, height) normalised to the input crop.  The head
stays Flatten -> Dense, so `keras_vgg.fully_convolutional` rewrites a
localiser like a classifier: one box set per score-map position.
"""

from __future__ import annotations

import os

import keras

from keras_vgg import vgg
from keras_vgg import weights as weights_lib

REGRESSIONS = ("scr", "pcr")


def box_units(regression, classes):
    return 4 if regression == "scr" else 4 * classes


def VGGLocalizer(config: str = "D", regression: str = "pcr",
                 classes: int = 1000,
                 weights: str | os.PathLike | keras.Model | None = None,
                 input_shape: tuple[int | None, int | None, int] | None = None,
                 batch_norm: bool = False, dropout: float = 0.5,
                 include_preprocessing: bool = False,
                 width_multiplier: float = 1.0,
                 name: str | None = None) -> keras.Model:
    """Builds a VGG localiser.

    Args:
        config: Table 1 configuration (the paper uses "D").
        regression: "pcr" (4 outputs per class) or "scr" (4 in all).
        classes: number of classes (sets the PCR output size).
        weights: None, a weight set name or file (loaded as for
            `keras_vgg.VGG`, the classifier's last layer left out), or a
            classification `keras.Model` whose layers other than
            `predictions` are copied by name.  The box layer is random.
        input_shape, batch_norm, dropout, include_preprocessing,
        width_multiplier: as `keras_vgg.VGG`.
        name: model name; default "<vgg16>_<regression>".

    Returns:
        A model mapping images to boxes: (N, 4) or (N, 4 * classes), output
        layer `boxes` (linear).

    Example (builds the full-size network, so not a doctest)::

        loc = keras_vgg.VGGLocalizer("D", regression="scr")
        loc.output.shape  # (None, 4)
    """
    if regression not in REGRESSIONS:
        raise ValueError(f"`regression` must be one of {REGRESSIONS}. "
                         f"Received: regression={regression!r}")
    source = weights if isinstance(weights, keras.Model) else None
    file_or_name = None if source is not None else weights
    classifier = vgg.VGG(
        config, include_top=True, weights=None, input_shape=input_shape,
        classes=classes, classifier_activation=None, batch_norm=batch_norm,
        dropout=dropout, include_preprocessing=include_preprocessing,
        width_multiplier=width_multiplier)
    if file_or_name is not None:
        if (isinstance(file_or_name, str)
                and file_or_name in weights_lib.WEIGHT_NAMES):
            ws = weights_lib.get_weight_set(file_or_name, config, batch_norm)
            path = weights_lib.fetch(ws, include_top=True)
        elif weights_lib.is_weight_file(file_or_name):
            path = file_or_name
        else:
            raise ValueError(
                "`weights` must be None, a classification keras.Model, one "
                f"of {list(weights_lib.WEIGHT_NAMES)} or an existing weight "
                f"file. Received: weights={weights!r}")
        weights_lib.load_weights(classifier, path, exclude=("predictions",))
    features = classifier.get_layer("fc2_dropout").output
    boxes = keras.layers.Dense(box_units(regression, classes), name="boxes")(
        features)
    base = classifier.name
    model = keras.Model(classifier.inputs, boxes,
                        name=name or f"{base}_{regression}")
    if source is not None:
        copy_from_classifier(model, source)
    return model


def is_localizer(model):
    """True for a model with the localiser's `boxes` layer."""
    return any(layer.name == "boxes" for layer in model.layers)


def copy_from_classifier(localizer, classifier):
    """Copies every layer but the classifier's `predictions` by name."""
    names = [layer.name for layer in localizer.layers
             if layer.weights and layer.name != "boxes"]
    return weights_lib.copy_layers(classifier, localizer, names,
                                   what=f"Classifier {classifier.name!r}")
