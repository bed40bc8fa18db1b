"""Bounding boxes for the localisation networks (the paper's appendix A).

The localiser predicts a box as (centre x, centre y, width, height),
normalised to the input crop (so 0..1 inside it).  Datasets (tfds, the
built-in one) store corners (ymin, xmin, ymax, xmax), also normalised.  All
functions take numpy arrays of shape (..., 4) and work on any leading shape.
"""

import numpy as np


def corners_to_centers(boxes):
    """(ymin, xmin, ymax, xmax) -> (cx, cy, w, h).

    >>> corners_to_centers(np.array([0.1, 0.2, 0.5, 0.6]))
    array([0.4, 0.3, 0.4, 0.4])
    """
    b = np.asarray(boxes, dtype="float64")
    ymin, xmin, ymax, xmax = np.moveaxis(b, -1, 0)
    return np.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin,
                     ymax - ymin], axis=-1)


def centers_to_corners(boxes):
    """(cx, cy, w, h) -> (ymin, xmin, ymax, xmax)."""
    b = np.asarray(boxes, dtype="float64")
    cx, cy, w, h = np.moveaxis(b, -1, 0)
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


def to_pixels(corners, height, width):
    """Normalised corners -> pixel corners of an image of height x width."""
    return np.asarray(corners, dtype="float64") * np.array(
        [height, width, height, width], dtype="float64")


def to_normalized(corners, height, width):
    """Pixel corners -> normalised corners."""
    return np.asarray(corners, dtype="float64") / np.array(
        [height, width, height, width], dtype="float64")


def iou(a, b):
    """Intersection over union of corner boxes, broadcast over leading axes.

    >>> iou(np.array([0, 0, 2, 2]), np.array([1, 1, 3, 3]))
    0.14285714285714285
    """
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    top = np.maximum(a[..., 0], b[..., 0])
    left = np.maximum(a[..., 1], b[..., 1])
    bottom = np.minimum(a[..., 2], b[..., 2])
    right = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out.item() if out.ndim == 0 else out


def greedy_merge(boxes, scores, iou_threshold=0.5, max_boxes=None):
    """OverFeat-style greedy merging of predicted boxes.

    Repeatedly takes the highest-scoring remaining box, merges it with every
    remaining box that overlaps it by more than `iou_threshold` (the merged
    box is the score-weighted average of their coordinates; its score the
    sum of theirs, as OverFeat accumulates the confidence of the boxes it
    merges), and removes them.

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
        overlap = iou(boxes[best][None], boxes[remaining]) > iou_threshold
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


def select_class_boxes(boxes, labels, regression):
    """Picks each sample's box from a localiser's output.

    Args:
        boxes: (N, 4) for "scr", (N, 4 * classes) for "pcr".
        labels: (N,) class indices (ignored for "scr").
        regression: "scr" or "pcr".

    Returns:
        (N, 4) boxes (cx, cy, w, h).
    """
    boxes = np.asarray(boxes)
    if regression == "scr":
        return boxes.reshape(-1, 4)
    per_class = boxes.reshape(len(boxes), -1, 4)
    return per_class[np.arange(len(boxes)), np.asarray(labels).astype(int)]
