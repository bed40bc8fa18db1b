"""Bounding boxes for the localisation networks (the paper's appendix A).

The localiser predicts a box as (center x, center y, width, height),
normalised to its input window (so 0..1 inside it).  Datasets (tfds, the
built-in one) store corners (ymin, xmin, ymax, xmax), also normalised.  Boxes
are arrays of shape (..., 4); every function broadcasts over leading axes.

This module is the one place where boxes are converted and compared: numpy
callers (`pipelines.localize`, `greedy_merge`), the training loss
(`pipelines.box_loss`, inside a tf.function) and the exported graph
(`export.localizer`) all use it.

The rule for numpy and tensors: numpy in, numpy out; tensors in, tensors
out.  When no argument is a tensor (numpy arrays, Python numbers and lists)
the result is a float64 numpy array, computed by numpy; when any argument is
a backend tensor (eager, or symbolic inside a tf.function / jit) the result
is a backend tensor of the input's float dtype, computed by `keras.ops`.  The
arithmetic is written once, against the namespace `_ops` picks: numpy and
`keras.ops` share these names, and numpy's own is 25x faster than eager
`keras.ops` on the small arrays of `greedy_merge`'s loop.
"""

import numbers

import keras
import numpy as np


def _is_numpy(value):
    if isinstance(value, (list, tuple)):
        return all(_is_numpy(v) for v in value)
    return isinstance(value, (np.ndarray, np.generic, numbers.Number))


def _ops(*values):
    """numpy if every value is numpy (or Python), else `keras.ops`."""
    return np if all(_is_numpy(v) for v in values) else keras.ops


def _floats(x, ops):
    if ops is np:
        return np.asarray(x, dtype="float64")
    x = keras.ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        x = keras.ops.cast(x, keras.config.floatx())
    return x


def _scale(height, width, like, ops):
    """[height, width, height, width] in the dtype of `like`."""
    if ops is np:
        return np.array([height, width, height, width], dtype="float64")
    sides = [keras.ops.cast(side, like.dtype) for side in (height, width)]
    return keras.ops.stack(sides * 2)


def corners_to_centers(boxes):
    """(ymin, xmin, ymax, xmax) -> (cx, cy, w, h).

    >>> corners_to_centers(np.array([0.1, 0.2, 0.5, 0.6]))
    array([0.4, 0.3, 0.4, 0.4])
    """
    ops = _ops(boxes)
    b = _floats(boxes, ops)
    ymin, xmin, ymax, xmax = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return ops.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin,
                      ymax - ymin], axis=-1)


def centers_to_corners(boxes):
    """(cx, cy, w, h) -> (ymin, xmin, ymax, xmax).

    >>> centers_to_corners(np.array([0.4, 0.3, 0.4, 0.2]))
    array([0.2, 0.2, 0.4, 0.6])
    """
    ops = _ops(boxes)
    b = _floats(boxes, ops)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return ops.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2],
                     axis=-1)


def to_pixels(corners, height, width):
    """Normalised corners -> pixel corners of an image of height x width."""
    ops = _ops(corners, height, width)
    corners = _floats(corners, ops)
    return corners * _scale(height, width, corners, ops)


def to_normalized(corners, height, width):
    """Pixel corners -> normalised corners."""
    ops = _ops(corners, height, width)
    corners = _floats(corners, ops)
    return corners / _scale(height, width, corners, ops)


def window_corners(box_map, image_hw, crop, stride):
    """Boxes of a fully convolutional localiser -> corners in the image.

    Args:
        box_map: (N, H', W', ..., 4) boxes (cx, cy, w, h), each normalised
            to the crop-sized window of its score-map position; position
            (i, j) sees the window whose top-left corner is pixel
            (stride * i, stride * j).
        image_hw: (height, width) of the image the windows tile.
        crop: the window side (the localiser's training crop).
        stride: pixels between neighbouring windows (32 for a VGG).

    Returns:
        (N, H', W', ..., 4) corners normalised to the image.
    """
    ops = _ops(box_map, image_hw)
    corners = centers_to_corners(box_map) * crop
    shape = ops.shape(corners)
    extra = [1] * (len(corners.shape) - 4)  # axes between W' and the 4
    top = ops.reshape(ops.arange(shape[1]) * stride, [1, -1, 1] + extra)
    left = ops.reshape(ops.arange(shape[2]) * stride, [1, 1, -1] + extra)
    if ops is not np:
        top, left = (ops.cast(x, corners.dtype) for x in (top, left))
    corners = ops.stack([corners[..., 0] + top, corners[..., 1] + left,
                         corners[..., 2] + top, corners[..., 3] + left],
                        axis=-1)
    return to_normalized(corners, image_hw[0], image_hw[1])


def centered_grid(height, width, crop, stride):
    """(top, left, rows, cols) of the part of a height x width image that
    the windows of a fully convolutional net cover, centred.

    The crop-sized windows step by `stride` from the top-left corner, so the
    last `(side - crop) % stride` pixels of each side are seen by no window.
    Anchored at the corner, an object in the middle of a 64x85 image is half
    outside the only 64-pixel window; centring the grid splits the unseen
    margin between both sides instead.  Plain integer arithmetic: the sides
    may be Python ints or integer tensors (the exported graph).
    """
    rows = crop + (height - crop) // stride * stride
    cols = crop + (width - crop) // stride * stride
    return (height - rows) // 2, (width - cols) // 2, rows, cols


def mirror_corners(corners):
    """Corners of the horizontally flipped image (normalised): x -> 1 - x,
    xmin and xmax swapped."""
    ops = _ops(corners)
    corners = _floats(corners, ops)
    return ops.stack([corners[..., 0], 1.0 - corners[..., 3],
                      corners[..., 2], 1.0 - corners[..., 1]], axis=-1)


def iou(a, b):
    """Intersection over union of corner boxes, broadcast over leading axes.

    One box against many is `iou(box, boxes)` ((4,) and (M, 4)); box by box
    is `iou(a, b)` ((N, 4) and (N, 4)).  A box with ymax < ymin or
    xmax < xmin has area 0; the IoU of boxes whose union is empty is 0.

    >>> iou(np.array([0, 0, 2, 2]), np.array([1, 1, 3, 3]))
    0.14285714285714285
    """
    ops = _ops(a, b)
    a, b = _floats(a, ops), _floats(b, ops)
    top = ops.maximum(a[..., 0], b[..., 0])
    left = ops.maximum(a[..., 1], b[..., 1])
    bottom = ops.minimum(a[..., 2], b[..., 2])
    right = ops.minimum(a[..., 3], b[..., 3])
    inter = ops.maximum(bottom - top, 0) * ops.maximum(right - left, 0)

    def area(x):
        return (ops.maximum(x[..., 2] - x[..., 0], 0)
                * ops.maximum(x[..., 3] - x[..., 1], 0))

    union = area(a) + area(b) - inter
    positive = union > 0
    out = ops.where(positive, inter / ops.where(positive, union, 1), 0)
    if ops is np:
        return out.item() if out.ndim == 0 else out
    return out


def select_class_boxes(boxes, labels, regression):
    """Picks each sample's box from a localiser's output.

    Args:
        boxes: (N, 4) for "scr", (N, 4 * classes) for "pcr".
        labels: (N,) class indices (ignored for "scr").
        regression: "scr" or "pcr".

    Returns:
        (N, 4) boxes (cx, cy, w, h), of the dtype of `boxes`.
    """
    ops = _ops(boxes, labels)
    if ops is np:
        boxes, labels = np.asarray(boxes), np.asarray(labels).astype(int)
    else:
        boxes = keras.ops.convert_to_tensor(boxes)
        labels = keras.ops.cast(labels, "int32")
    if regression == "scr":
        return ops.reshape(boxes, (-1, 4))
    per_class = ops.reshape(boxes, (-1, boxes.shape[-1] // 4, 4))
    chosen = ops.take_along_axis(per_class, labels[:, None, None], axis=1)
    return chosen[:, 0]


def greedy_merge(boxes, scores, iou_threshold=0.5, max_boxes=None):
    """OverFeat-style greedy merging of predicted boxes.

    Repeatedly takes the highest-scoring remaining box, merges it with every
    remaining box that overlaps it by more than `iou_threshold` (the merged
    box is the score-weighted average of their coordinates; its score the
    sum of theirs, as OverFeat accumulates the confidence of the boxes it
    merges), and removes them.

    numpy only: the loop's length depends on the data, so a graph needs a
    while loop with fixed shapes instead (`export.localizer.best_merged_box`,
    which keeps only the best merged box); both share `iou`.

    Args:
        boxes: (N, 4) corner boxes.
        scores: (N,) class scores of each box (the classification net's).
        iou_threshold: overlap above which two boxes are the same object.
        max_boxes: keep at most this many merged boxes.

    Returns:
        (merged_boxes (M, 4), merged_scores (M,)), best first.
    """
    boxes = np.asarray(boxes, dtype="float64").reshape(-1, 4)
    scores = np.asarray(scores, dtype="float64").reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"`boxes` ({len(boxes)}) and `scores` "
                         f"({len(scores)}) differ in length.")
    remaining = np.argsort(-scores, kind="stable")
    merged, merged_scores = [], []
    while remaining.size:
        best = remaining[0]
        overlap = iou(boxes[best], boxes[remaining]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = scores[group]
        total = weights.sum()
        if total > 0:
            box = (boxes[group] * weights[:, None]).sum(0) / total
        else:
            box = boxes[group].mean(0)
        merged.append(box)
        merged_scores.append(total)
        remaining = remaining[~overlap]
        if max_boxes and len(merged) >= max_boxes:
            break
    order = np.argsort(-np.array(merged_scores), kind="stable")
    return (np.array(merged).reshape(-1, 4)[order],
            np.array(merged_scores)[order])
