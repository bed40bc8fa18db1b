"""A SavedModel that classifies images end to end, for TF-Serving and tf.

Everything after the request is in the graph: decoding (JPEG, PNG, BMP, GIF
of any size), rescaling the smallest side to Q, the weights' preprocessing,
and the paper's dense evaluation (the FC head rewritten as convolutions,
class scores averaged over the score map, optionally averaged with the
horizontally flipped image).

Signatures:
    serving_default(images: string [N])          encoded image files
    predict_images(images: uint8|float32 [N, H, W, 3])  RGB pixels [0, 255]
        (predict_images_uint8 is the same for uint8 pixels)
Outputs (both):
    probabilities [N, classes], top_k_indices int32 [N, k],
    top_k_scores [N, k], top_k_labels string [N, k]
    and, for a localiser exported with its classifier (`--classifier`),
    boxes [N, k, 4]: each top-k class's box, corners (ymin, xmin, ymax,
    xmax) normalised to the image (see `export.localizer`)

Usage:
    python -m export.saved_model --model=runs/demo --output=/tmp/vgg_sm
    python -m export.saved_model --config=D --weights=imagenet --output=DIR
    python -m export.saved_model --model=runs/loc --classifier=runs/cls \\
        --output=DIR

Example (library):
>>> from export import common, saved_model
>>> saved_model.export_saved_model(common.load_export_model("runs/demo"),
...                                "/tmp/vgg_sm")
>>> served = tf.saved_model.load("/tmp/vgg_sm")
>>> served.signatures["serving_default"](images=tf.constant([jpeg_bytes]))
"""

import os
import sys

import tensorflow as tf
from absl import app
from absl import flags

import keras_vgg
from export import common
from keras_vgg import preprocessing as vgg_preprocessing
from pipelines import entry

INPUT_KEY = "images"
SIGNATURES = ("serving_default", "predict_images", "predict_images_uint8")
OUTPUT_KEYS = ("probabilities", "top_k_indices", "top_k_scores",
               "top_k_labels")


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
        source: a `common.ExportModel`.
        q: test scale (default `source.q`).
        flip: average with the horizontally flipped image.
        top_k: how many top classes to return (at most the class count).
    """

    def __init__(self, source, q=None, flip=True, top_k=5):
        self.source = source
        self.q = int(q or source.q)
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


class ServingModule(tf.Module):
    """The SavedModel's root object: the signatures and the variables.

    Written with `tf.saved_model.save` rather than `keras.export.
    ExportArchive`: in Keras 3.15 the archive saves every variable twice
    (once through the Keras wrapper, once as the TF variable), doubling a
    VGG16 SavedModel to 1.1 GB.  Here only the underlying TF variables are
    tracked, once.
    """

    def __init__(self, classifier, labels_file):
        super().__init__(name="vgg_serving")
        self.model_variables = [v.value for v in classifier.variables]
        # Class names as a SavedModel asset (assets/class_names.txt), read
        # into a lookup table when the model loads.
        self.labels_asset = tf.saved_model.Asset(labels_file)
        self.labels = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.labels_asset, tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
        # Not tracked (the list above is): avoids the duplicate.
        self.__dict__["_classifier"] = classifier
        images = tf.TensorSpec([None], tf.string, name=INPUT_KEY)
        floats = tf.TensorSpec([None, None, None, 3], tf.float32,
                               name=INPUT_KEY)
        uint8 = tf.TensorSpec([None, None, None, 3], tf.uint8,
                              name=INPUT_KEY)
        self.serving_default = tf.function(
            self._encoded, input_signature=[images])
        self.predict_images = tf.function(
            self._pixels, input_signature=[floats])
        self.predict_images_uint8 = tf.function(
            self._pixels, input_signature=[uint8])

    def _labelled(self, out):
        # The names come from the asset's table, not a graph constant.
        out["top_k_labels"] = self.labels.lookup(
            tf.cast(out["top_k_indices"], tf.int64))
        return out

    def _encoded(self, images):
        return self._labelled(self._classifier.predict_encoded(images))

    def _pixels(self, images):
        return self._labelled(self._classifier.predict_same_size(images))

    def signatures(self):
        return {
            "serving_default": self.serving_default.get_concrete_function(),
            "predict_images": self.predict_images.get_concrete_function(),
            "predict_images_uint8":
                self.predict_images_uint8.get_concrete_function(),
        }


def write_saved_model(source, path, q=None, flip=True, top_k=5):
    """Writes the SavedModel to `path` (not atomic: `export_saved_model` is).
    The class names are the asset `assets/class_names.txt`, one per line in
    class order.  `source`: a `common.ExportModel`, or an `export.localizer.
    LocalizerSource` (outputs `boxes` too).  Returns the `DenseClassifier`
    (`DenseLocalizer`)."""
    import tempfile

    if isinstance(source, common.ExportModel):
        classifier = DenseClassifier(source, q=q, flip=flip, top_k=top_k)
    else:  # a localiser with its classifier: boxes in the outputs too
        from export import localizer

        classifier = localizer.DenseLocalizer(source, q=q, flip=flip,
                                              top_k=top_k)
    with tempfile.TemporaryDirectory() as tmp:
        labels_file = os.path.join(tmp, "class_names.txt")
        with open(labels_file, "w", encoding="utf-8") as f:
            f.write("\n".join(str(n).replace("\n", " ")
                              for n in source.class_names) + "\n")
        module = ServingModule(classifier, labels_file)
        tf.saved_model.save(module, path, signatures=module.signatures())
    return classifier


def export_saved_model(source, output, q=None, flip=True, top_k=5,
                       overwrite=False):
    """Writes the SavedModel for `source` (an `ExportModel`, a run dir or a
    .keras path) to directory `output`, atomically.

    Returns:
        The output path.
    """
    if not common.is_export_source(source):
        source = common.load_export_model(source, q=q)
    with common.atomic_directory(output, overwrite=overwrite) as tmp:
        write_saved_model(source, tmp, q=q, flip=flip, top_k=top_k)
    return output


def define_flags(flag_values=None):
    fv = flag_values or flags.FLAGS
    common.define_model_flags(fv)
    flags.DEFINE_string("output", None, "SavedModel directory to write.",
                        flag_values=fv)
    common.define_serving_flags(fv)


def main(argv):
    del argv
    fv = flags.FLAGS
    if not fv.output:
        raise app.UsageError("--output is required.")
    try:
        source = common.model_from_flags(fv)
        export_saved_model(source, fv.output, q=fv.q, flip=fv.flip,
                           top_k=fv.top_k, overwrite=fv.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    boxes = ", boxes" if not isinstance(source, common.ExportModel) else ""
    print(f"Wrote {fv.output} (Q={fv.q or source.q}, flip={fv.flip}, "
          f"{source.num_classes} classes{boxes})")
    return 0


def run():
    """The command line, as `python -m export.saved_model` runs it; also the
    `vgg-export-savedmodel` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
