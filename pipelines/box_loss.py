"""The localisation objective of the paper's appendix A, in TensorFlow.

The network regresses (cx, cy, w, h) normalised to the crop; the loss is
Euclidean (squared L2 over the 4 numbers).  Per-class regression (PCR) has 4
outputs per class and only the ground-truth class's 4 count.  Ground-truth
boxes arrive as the augmentation moved them: (ymin, xmin, ymax, xmax) in the
crop, padded with -1 rows; the first box is the target, and an image whose
box left the crop (a -1 row) is left out of the loss.
"""

import tensorflow as tf


def target_boxes(boxes):
    """(N, K, 4) padded corner boxes -> ((N, 4) centres, (N,) valid mask)."""
    first = boxes[:, 0, :]
    ymin, xmin, ymax, xmax = tf.unstack(first, axis=-1)
    valid = tf.cast((ymax > ymin) & (xmax > xmin) & (ymin >= 0), tf.float32)
    centres = tf.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin,
                        ymax - ymin], axis=-1)
    return centres, valid


def class_boxes(predictions, labels, regression):
    """The (N, 4) box of each sample: the shared one (SCR) or its class's."""
    if regression == "scr":
        return predictions
    per_class = tf.reshape(predictions, [tf.shape(predictions)[0], -1, 4])
    return tf.gather(per_class, tf.cast(labels, tf.int32), batch_dims=1)


def euclidean_loss(predictions, labels, boxes, regression):
    """Per-sample squared L2 box error (0 for samples without a box)."""
    target, valid = target_boxes(boxes)
    pred = class_boxes(tf.cast(predictions, tf.float32), labels, regression)
    return tf.reduce_sum(tf.square(pred - target), axis=-1) * valid, valid


def centres_to_corners(boxes):
    cx, cy, w, h = tf.unstack(boxes, axis=-1)
    return tf.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)


def iou(a, b):
    """IoU of (N, 4) corner boxes, row by row."""
    top = tf.maximum(a[:, 0], b[:, 0])
    left = tf.maximum(a[:, 1], b[:, 1])
    bottom = tf.minimum(a[:, 2], b[:, 2])
    right = tf.minimum(a[:, 3], b[:, 3])
    inter = tf.nn.relu(bottom - top) * tf.nn.relu(right - left)
    area = lambda x: tf.nn.relu(x[:, 2] - x[:, 0]) * tf.nn.relu(  # noqa: E731
        x[:, 3] - x[:, 1])
    union = area(a) + area(b) - inter
    return tf.math.divide_no_nan(inter, union)


def correct_boxes(predictions, labels, boxes, regression, threshold=0.5):
    """1 where the ground-truth class's box has IoU > threshold (the paper's
    criterion, with the ground-truth class as in its Table 8), per sample."""
    target, valid = target_boxes(boxes)
    pred = class_boxes(tf.cast(predictions, tf.float32), labels, regression)
    overlap = iou(centres_to_corners(pred), centres_to_corners(target))
    return tf.cast(overlap > threshold, tf.float32) * valid, valid
