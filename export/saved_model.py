"""A SavedModel that classifies images end to end, for TF-Serving and tf.

Everything after the request is in the graph: decoding (JPEG, PNG, BMP,
GIF up to `--max_pixels` and `--max_aspect_ratio`, checked from the header
before decoding; anything beyond is refused with InvalidArgumentError, the
REST API's HTTP 400, naming the limit and the image's size), rescaling the
smallest side to Q, the weights' preprocessing, and the paper's dense
evaluation (the FC head rewritten as convolutions, class scores averaged
over the score map -- one position per 32 pixels, or per 16 or 8 with
`--dense_stride` -- optionally averaged with the horizontally flipped
image).

Signatures:
    serving_default(images: string [N])          encoded image files
    predict_images(images: uint8|float32 [N, H, W, 3])  RGB pixels [0, 255]
        (predict_images_uint8 is the same for uint8 pixels; both refuse
        pixels beyond the same limits)
Outputs (all):
    probabilities [N, classes], top_k_indices int32 [N, k],
    top_k_scores [N, k], top_k_labels string [N, k]
    and, for a localiser exported with its classifier (`--classifier`),
    boxes [N, k, 4]: each top-k class's box, corners (ymin, xmin, ymax,
    xmax) normalised to the image (see `export.localizer`)

Usage:
    python -m export.saved_model --model=runs/demo --output=/tmp/vgg_sm
    python -m export.saved_model --architecture=D --weights=imagenet \\
        --output=DIR
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
import tempfile

import tensorflow as tf
from absl import app
from absl import flags

from export import common
from export import dense
from export import localizer
from keras_vgg import atomic
from keras_vgg.fully_conv import STRIDE
from pipelines import entry

INPUT_KEY = "images"
SIGNATURES = ("serving_default", "predict_images", "predict_images_uint8")
OUTPUT_KEYS = ("probabilities", "top_k_indices", "top_k_scores",
               "top_k_labels")


class ServingModule(tf.Module):
    """The SavedModel's root object: the signatures and the variables.

    Written with `tf.saved_model.save` rather than `keras.export.
    ExportArchive`: in Keras 3.15 the archive saves every variable twice
    (once through the Keras wrapper, once as the TF variable), doubling a
    VGG16 SavedModel to 1.1 GB.  Here only the underlying TF variables are
    tracked, once.

    The image limits are stored with it, as the variables `max_pixels` and
    `max_aspect_ratio` (`tf.saved_model.load(path).max_pixels.numpy()`),
    and so is the score-map stride it was exported with, `dense_stride`.
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
        # What the graph checks, kept readable in the SavedModel.
        self.max_pixels = tf.Variable(classifier.max_pixels, dtype=tf.int64,
                                      trainable=False, name="max_pixels")
        self.max_aspect_ratio = tf.Variable(
            classifier.max_aspect_ratio, dtype=tf.float64, trainable=False,
            name="max_aspect_ratio")
        self.dense_stride = tf.Variable(
            classifier.stride, dtype=tf.int64, trainable=False,
            name="dense_stride")
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
        # Pixels sent as a tensor are bounded like encoded images: a
        # 1 x 20000 tensor rescaled to Q costs as much as that PNG.
        with tf.control_dependencies(
                self._classifier.check_size(tf.shape(images)[1:3])):
            images = tf.identity(images)
        return self._labelled(self._classifier.predict_same_size(images))

    def signatures(self):
        return {
            "serving_default": self.serving_default.get_concrete_function(),
            "predict_images": self.predict_images.get_concrete_function(),
            "predict_images_uint8":
                self.predict_images_uint8.get_concrete_function(),
        }


def write_saved_model(source, path, q=None, flip=True, top_k=5,
                      max_pixels=dense.MAX_PIXELS,
                      max_aspect_ratio=dense.MAX_ASPECT_RATIO,
                      dense_stride=STRIDE):
    """Writes the SavedModel to `path` (not atomic: `export_saved_model` is).
    The class names are the asset `assets/class_names.txt`, one per line in
    class order.  `source`: a classifier `keras_vgg.runs.Run`, or a
    `common.LocalizerSource` (outputs `boxes` too).  `max_pixels`,
    `max_aspect_ratio`: the largest and most elongated image accepted (see
    `export.dense`); `dense_stride`: the score map's (32, 16, 8).  Returns
    the `dense.DenseClassifier` (`localizer.DenseLocalizer`)."""
    limits = dict(q=q, flip=flip, top_k=top_k, max_pixels=max_pixels,
                  max_aspect_ratio=max_aspect_ratio,
                  dense_stride=dense_stride)
    if isinstance(source, common.LocalizerSource):
        # A localiser with its classifier: boxes in the outputs too.
        classifier = localizer.DenseLocalizer(source, **limits)
    else:
        classifier = dense.DenseClassifier(source, **limits)
    with tempfile.TemporaryDirectory() as tmp:
        labels_file = os.path.join(tmp, "class_names.txt")
        with open(labels_file, "w", encoding="utf-8") as f:
            f.write("\n".join(str(n).replace("\n", " ")
                              for n in common.output_labels(source)) + "\n")
        module = ServingModule(classifier, labels_file)
        with common.quiet_tensorflow():
            tf.saved_model.save(module, path,
                                signatures=module.signatures())
    return classifier


def export_saved_model(source, output, q=None, flip=True, top_k=5,
                       overwrite=False, max_pixels=dense.MAX_PIXELS,
                       max_aspect_ratio=dense.MAX_ASPECT_RATIO,
                       dense_stride=STRIDE):
    """Writes the SavedModel for `source` (a `Run`, a run dir or a
    .keras path) to directory `output`, atomically.  The arguments are
    `write_saved_model`'s.

    Returns:
        The output path.
    """
    if not common.is_export_source(source):
        source = common.load_export_model(source, q=q)
    with atomic.atomic_directory(output, overwrite=overwrite) as tmp:
        write_saved_model(source, tmp, q=q, flip=flip, top_k=top_k,
                          max_pixels=max_pixels,
                          max_aspect_ratio=max_aspect_ratio,
                          dense_stride=dense_stride)
    return output


def define_flags(flag_values=None):
    fv = flag_values or flags.FLAGS
    common.define_model_flags(fv)
    flags.DEFINE_string("output", None, "SavedModel directory to write.",
                        flag_values=fv)
    common.define_serving_flags(fv)
    # So that --help lists common's flags with this command's own flags.
    flags.adopt_module_key_flags(common, flag_values=fv)


def main(argv):
    del argv
    fv = flags.FLAGS
    if not fv.output:
        raise app.UsageError("--output is required.")
    source = common.model_from_flags(fv)
    export_saved_model(source, fv.output, q=fv.q, flip=fv.flip,
                       top_k=fv.top_k, overwrite=fv.overwrite,
                       max_pixels=fv.max_pixels,
                       max_aspect_ratio=fv.max_aspect_ratio,
                       dense_stride=fv.dense_stride)
    boxes = ", boxes" if isinstance(source, common.LocalizerSource) else ""
    print(f"Wrote {fv.output} (Q={source.test_scale}, flip={fv.flip}, "
          f"stride {fv.dense_stride}, {source.num_classes} classes{boxes})")
    return 0


def run():
    """The command line, as `python -m export.saved_model` runs it; also the
    `vgg-export-savedmodel` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
