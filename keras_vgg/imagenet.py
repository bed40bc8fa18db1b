"""ImageNet-1k class names, shipped with the package (no download).

`data/imagenet_class_index.json` has the same form as Keras'
`imagenet_class_index.json` ({"0": ["n01440764", "tench"], ...}): WordNet ids
in the ILSVRC-2012 class order, each with its first lemma; the two classes
that share a lemma ("crane", "maillot") are told apart where WordNet's gloss
allows it ("crane_(bird)", "crane_(machine)").
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

_INDEX = os.path.join(os.path.dirname(__file__), "data",
                      "imagenet_class_index.json")


@functools.lru_cache(maxsize=1)
def class_index():
    """Returns the list of 1000 `(wordnet_id, name)` pairs in class order."""
    with open(_INDEX) as f:
        raw = json.load(f)
    return [tuple(raw[str(i)]) for i in range(len(raw))]


def class_names() -> list[str]:
    """The 1000 class names, in class order."""
    return [name for _, name in class_index()]


def decode_predictions(
        preds: np.typing.ArrayLike,
        top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Decodes ImageNet predictions, as `keras.applications` does, offline.

    Args:
        preds: array of shape (N, 1000): class probabilities or scores.
        top: how many classes to return per sample.

    Returns:
        A list of N lists of `(wordnet_id, class_name, score)` tuples, best
        first.

    Example:
    >>> import keras_vgg
    >>> keras_vgg.decode_predictions(np.eye(1000)[[1]], top=1)
    [[('n01443537', 'goldfish', 1.0)]]
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of ImageNet predictions, "
            f"shape (samples, 1000). Received: preds.shape={preds.shape}"
        )
    if not isinstance(top, int) or top < 1:
        raise ValueError(
            f"`top` must be a positive integer. Received: top={top!r}")
    index = class_index()
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([index[i] + (float(row[i]),) for i in best])
    return results
