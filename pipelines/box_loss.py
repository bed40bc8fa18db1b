"""The localisation objective of the paper's appendix A, in TensorFlow.

The network regresses (cx, cy, w, h) normalised to the crop; the loss is
Euclidean (squared L2 over the 4 numbers).  Per-class regression (PCR) has 4
outputs per class and only the ground-truth class's 4 count.  Ground-truth
boxes arrive as the augmentation moved them: (ymin, xmin, ymax, xmax) in the
crop, padded with -1 rows; the first box is the target, and an image whose
box left the crop (a -1 row) is left out of the loss.  The box arithmetic is
`keras_vgg.boxes` (on tensors it runs on keras.ops, so inside the training
step's tf.function too).
"""

import tensorflow as tf

from keras_vgg import boxes as box_lib


def target_boxes(boxes):
    """(N, K, 4) padded corner boxes -> ((N, 4) centers, (N,) valid mask)."""
    first = boxes[:, 0, :]
    ymin, xmin, ymax, xmax = tf.unstack(first, axis=-1)
    valid = tf.cast((ymax > ymin) & (xmax > xmin) & (ymin >= 0), tf.float32)
    return box_lib.corners_to_centers(first), valid


def euclidean_loss(predictions, labels, boxes, regression):
    """Per-sample squared L2 box error (0 for samples without a box)."""
    target, valid = target_boxes(boxes)
    pred = box_lib.select_class_boxes(tf.cast(predictions, tf.float32),
                                      labels, regression)
    return tf.reduce_sum(tf.square(pred - target), axis=-1) * valid, valid


def correct_boxes(predictions, labels, boxes, regression, threshold=0.5):
    """1 where the ground-truth class's box has IoU > threshold (the paper's
    criterion, with the ground-truth class as in its Table 8), per sample."""
    target, valid = target_boxes(boxes)
    pred = box_lib.select_class_boxes(tf.cast(predictions, tf.float32),
                                      labels, regression)
    overlap = box_lib.iou(box_lib.centers_to_corners(pred),
                          box_lib.centers_to_corners(target))
    return tf.cast(overlap > threshold, tf.float32) * valid, valid
