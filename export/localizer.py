"""Exporting a localiser (the paper's appendix A) with the classifier that
rates its boxes.

A localiser alone predicts boxes, not classes: the class scores come from a
classification network of the same input window (the paper's protocol).
Both go into one artifact, whose outputs are the classifier's
(`probabilities`, `top_k_indices`, `top_k_scores`, `top_k_labels`) plus

    boxes  float32 [N, k, 4]  the box of each top-k class, corners
                              (ymin, xmin, ymax, xmax) normalised to the
                              image (the tf.image / TFLite detection order)

- SavedModel / TF-Serving (`export.saved_model`, `export.serving` with
  `--classifier`): the dense protocol in the graph.  At test scale Q the
  fully convolutional localiser gives a box per score-map position (per
  class for PCR; the window grid centred on the image, as
  `keras_vgg.boxes.centered_grid`), each rated by the classifier's
  softmax at that position, whose average gives the probabilities;
  with `--flip` the boxes of the mirrored image are added, mirrored back;
  `--dense_stride=16` or 8 gives a position every 16 or 8 pixels.
  Per top-k class the boxes are merged greedily (OverFeat, as
  `keras_vgg.boxes.greedy_merge`) and the merged box of highest total score
  is returned: the same numbers as `pipelines.localize.dense_boxes`.
- TFLite (`export.tflite` with `--classifier`): the central-crop protocol
  (the model's fixed input is the training crop): the box of each top-k
  class, normalised to the crop.  A TFLite graph with a data-dependent loop
  (the greedy merge) would not quantise; the crop model does.  See
  `export.tflite_localizer`.

Usage:
    python -m export.saved_model --model=runs/loc --classifier=runs/cls \\
        --output=/tmp/vgg_loc
    python -m export.tflite --model=runs/loc --classifier=runs/cls \\
        --quantize=dynamic --output=/tmp/vgg_loc.tflite
"""

import keras
import numpy as np
import tensorflow as tf

import keras_vgg
from export import dense
from keras_vgg import boxes as box_lib
from keras_vgg import fully_conv
from keras_vgg import preprocessing as vgg_preprocessing

IOU_THRESHOLD = 0.5


# -- boxes in the graph (the arithmetic is keras_vgg.boxes') -----------------

def best_merged_box(boxes, scores, iou_threshold=IOU_THRESHOLD):
    """The first box of `keras_vgg.boxes.greedy_merge(boxes, scores)`, in
    the graph: the merged box of highest total score, and that score.

    Written here because tf.image's non-max suppression keeps boxes rather
    than averaging them, which is what OverFeat's merging does.  Each loop
    step takes the best remaining box and absorbs every remaining box that
    overlaps it by more than `iou_threshold` (score-weighted average).  The
    loop is not greedy_merge's: that one's numpy list grows with the data,
    a graph's while loop needs fixed shapes (a mask of the remaining boxes,
    the best box so far); the overlap is the same `keras_vgg.boxes.iou`.
    """
    m = tf.shape(boxes)[0]
    positions = tf.range(m)

    def step(remaining, best_box, best_score):
        first = tf.argmax(tf.where(remaining, scores, -np.inf),
                          output_type=tf.int32)
        group = ((box_lib.iou(boxes[first], boxes) > iou_threshold)
                 | tf.equal(positions, first)) & remaining
        weights = tf.where(group, scores, 0.0)
        total = tf.reduce_sum(weights)
        count = tf.reduce_sum(tf.cast(group, tf.float32))
        average = tf.reduce_sum(
            tf.where(group[:, None], boxes, 0.0), axis=0) / count
        box = tf.where(total > 0, tf.reduce_sum(boxes * weights[:, None], 0)
                       / tf.where(total > 0, total, 1.0), average)
        # Strictly greater: the earlier of equal totals wins, as the stable
        # sort in greedy_merge.
        better = total > best_score
        return (remaining & ~group, tf.where(better, box, best_box),
                tf.where(better, total, best_score))

    _, box, score = tf.while_loop(
        lambda remaining, *_: tf.reduce_any(remaining), step,
        (tf.ones([m], tf.bool), tf.zeros([4], tf.float32),
         tf.constant(-1.0, tf.float32)))
    return box, score


def class_boxes(corners, indices, regression):
    """(N, M, U, 4) corners (U = 1 for SCR, classes for PCR) and (N, k)
    class indices -> (N, k, M, 4) the boxes of each chosen class."""
    per_class = tf.transpose(corners, [0, 2, 1, 3])  # (N, U, M, 4)
    if regression == "scr":
        k = tf.shape(indices)[1]
        return tf.repeat(per_class, k, axis=1)
    return tf.gather(per_class, indices, axis=1, batch_dims=1)


# -- the SavedModel's predictor ----------------------------------------------

class DenseLocalizer:
    """The dense protocol in the graph; the interface `export.saved_model.
    ServingModule` reads (`variables`, `predict_same_size`,
    `predict_encoded`, `check_size` and the limits), like
    `export.dense.DenseClassifier`.

    Args:
        source: a `common.LocalizerSource`.
        q, flip, top_k, max_pixels, max_aspect_ratio, dense_stride: as
            `DenseClassifier` (the boxes come at the classifier's stride).
    """

    def __init__(self, source, q=None, flip=True, top_k=5,
                 max_pixels=dense.MAX_PIXELS,
                 max_aspect_ratio=dense.MAX_ASPECT_RATIO,
                 dense_stride=fully_conv.STRIDE):
        self.source = source
        self.classifier = dense.DenseClassifier(
            source.classifier, q=q, flip=flip, top_k=top_k,
            max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio,
            dense_stride=dense_stride)
        self.q, self.flip = self.classifier.q, self.classifier.flip
        self.stride = self.classifier.stride
        self.top_k = self.classifier.top_k
        self.max_pixels = self.classifier.max_pixels
        self.max_aspect_ratio = self.classifier.max_aspect_ratio
        self.check_size = self.classifier.check_size
        fcn = self.classifier.fcn
        # One pass gives both the score map (rating each position's boxes)
        # and the averaged probabilities.
        logits = fcn.get_layer("score_average").input
        self.scorer = keras.Model(fcn.inputs, [logits, fcn.outputs[0]],
                                  name=f"{fcn.name}_scorer")
        self.boxer = keras_vgg.fully_convolutional(
            source.localizer, stride=fully_conv.check_stride(
                source.localizer, self.stride, "--dense_stride"))

    @property
    def variables(self):
        return list(self.scorer.variables) + list(self.boxer.variables)

    def predict_same_size(self, pixels):
        x = dense.rescale(tf.cast(pixels, tf.float32), self.q)
        crop = self.source.crop
        # The part the windows cover, centred: corners normalised to it,
        # then to the image.
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        top, left, rows, cols = box_lib.centered_grid(h, w, crop,
                                                      self.stride)
        covered = x[:, top:top + rows, left:left + cols, :]
        hw = tf.cast(tf.stack([h, w, h, w]), tf.float32)
        scale = tf.cast(tf.stack([rows, cols, rows, cols]), tf.float32) / hw
        shift = tf.cast(tf.stack([top, left, top, left]), tf.float32) / hw
        views = [(covered, False)]
        if self.flip:
            views.append((tf.image.flip_left_right(covered), True))
        image_hw = (rows, cols)
        probabilities, corners, ratings = 0.0, [], []
        for view, mirrored in views:
            logits, probs = self.scorer(vgg_preprocessing.apply(
                view, self.source.classifier.preprocessing), training=False)
            probabilities += probs / len(views)
            box_map = self.boxer(vgg_preprocessing.apply(
                view, self.source.preprocessing), training=False)
            n = tf.shape(box_map)[0]
            box_map = tf.reshape(box_map, tf.concat(
                [tf.shape(box_map)[:3], [-1, 4]], 0))
            c = box_lib.window_corners(box_map, image_hw, crop, self.stride)
            if mirrored:
                c = box_lib.mirror_corners(c)
            c = c * scale + shift
            corners.append(tf.reshape(c, [n, -1, tf.shape(c)[3], 4]))
            s = tf.nn.softmax(logits, axis=-1)
            ratings.append(tf.reshape(s, [n, -1, tf.shape(s)[-1]]))
        corners = tf.concat(corners, axis=1)            # (N, M, U, 4)
        ratings = tf.transpose(tf.concat(ratings, 1), [0, 2, 1])  # (N, C, M)
        out = self.classifier.outputs(probabilities)
        indices = out["top_k_indices"]
        chosen = class_boxes(corners, indices, self.source.regression)
        scores = tf.gather(ratings, indices, axis=1, batch_dims=1)
        m = tf.shape(chosen)[2]
        flat_boxes = tf.reshape(chosen, [-1, m, 4])
        flat_scores = tf.reshape(scores, [-1, m])
        best, _ = tf.map_fn(
            lambda a: best_merged_box(a[0], a[1]), (flat_boxes, flat_scores),
            fn_output_signature=(tf.TensorSpec([4], tf.float32),
                                 tf.TensorSpec([], tf.float32)))
        out["boxes"] = tf.reshape(best, [-1, self.top_k, 4])
        return out

    def predict_encoded(self, encoded):
        k, classes = self.top_k, self.source.num_classes

        def one(e):
            out = self.predict_same_size(self.classifier.decode(e)[None])
            return {key: value[0] for key, value in out.items()}

        return tf.map_fn(one, encoded, fn_output_signature={
            "probabilities": tf.TensorSpec([classes], tf.float32),
            "top_k_indices": tf.TensorSpec([k], tf.int32),
            "top_k_scores": tf.TensorSpec([k], tf.float32),
            "boxes": tf.TensorSpec([k, 4], tf.float32)})
