"""The dense protocol as TensorFlow graph pieces: rescaling to Q and the
fully convolutional classifier with flip, for every image size.  The
SavedModel's classifier (`export.saved_model`) and the localiser's scorer
(`export.localizer`) are built on it."""

import tensorflow as tf

import keras_vgg
from keras_vgg import preprocessing as vgg_preprocessing


def rescale(images, q):
    """Float32 pixels (N, H, W, 3) of one size, resized so that the smallest
    side is `q` (other side rounded half to even), bilinear with
    antialiasing: the same as `pipelines.protocols.rescale`."""
    shape = tf.shape(images)
    h = tf.cast(shape[1], tf.float64)
    w = tf.cast(shape[2], tf.float64)
    q64 = tf.constant(float(q), tf.float64)
    new_h = tf.where(h <= w, q64, tf.round(h * q64 / w))
    new_w = tf.where(h <= w, tf.round(w * q64 / h), q64)
    size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
    resized = tf.image.resize(images, size, method="bilinear",
                              antialias=True)
    # Leaves the pixels untouched when the image already has that size.
    return tf.cond(tf.reduce_all(tf.equal(size, shape[1:3])),
                   lambda: images, lambda: resized)


class DenseClassifier:
    """The graph pieces of the SavedModel around a fully convolutional VGG.

    Args:
        source: a classifier `keras_vgg.runs.Run`.
        q: test scale (default `source.test_scale`).
        flip: average with the horizontally flipped image.
        top_k: how many top classes to return (at most the class count).
    """

    def __init__(self, source, q=None, flip=True, top_k=5):
        self.source = source
        self.q = int(q or source.test_scale)
        if self.q < source.crop:
            raise ValueError(f"q={self.q} is smaller than the crop size "
                             f"{source.crop}.")
        self.flip = bool(flip)
        self.top_k = max(1, min(int(top_k), source.num_classes))
        self.fcn = keras_vgg.fully_convolutional(source.model, average=True)

    def classify_same_size(self, pixels):
        """Probabilities (N, classes) for float32 RGB pixels (N, H, W, 3) in
        [0, 255], all of one size."""
        x = rescale(tf.cast(pixels, tf.float32), self.q)
        x = vgg_preprocessing.apply(x, self.source.preprocessing)
        p = self.fcn(x, training=False)
        if self.flip:
            p = (p + self.fcn(tf.image.flip_left_right(x),
                              training=False)) / 2.0
        return p

    def decode(self, encoded):
        """One encoded image -> float32 (H, W, 3); InvalidArgumentError for
        bytes that are no image."""
        image = tf.io.decode_image(encoded, channels=3,
                                   expand_animations=False)
        return tf.cast(image, tf.float32)

    def classify_encoded(self, encoded):
        # Images differ in size: one at a time (map_fn), then stacked.
        def one(e):
            return self.classify_same_size(self.decode(e)[None])[0]

        return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec(
            [self.source.num_classes], tf.float32))

    def outputs(self, probabilities):
        """Probabilities and the top k; `ServingModule` adds the labels."""
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)
        return {"probabilities": probabilities,
                "top_k_indices": indices,
                "top_k_scores": scores}

    # The interface `ServingModule` reads (shared with
    # `export.localizer.DenseLocalizer`).

    @property
    def variables(self):
        return self.fcn.variables

    def predict_same_size(self, pixels):
        return self.outputs(self.classify_same_size(pixels))

    def predict_encoded(self, encoded):
        return self.outputs(self.classify_encoded(encoded))
