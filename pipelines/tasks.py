"""What is trained: a task builds the network, says its loss and counts its
metrics; the trainer (`pipelines.train`) runs any task the same way.

- `ClassificationTask`: a VGG classifier with logits out, softmax
  cross-entropy, top-1 / top-5 hits.
- `LocalizationTask`: the box regressor of the paper's appendix A (SCR or
  PCR), Euclidean box loss (`pipelines.box_loss`), boxes with IoU > 0.5.

A task's `metric_sums` are sums over a batch, so that they add up over
micro-batches, replicas and steps; `validation_summary` turns the sums over
the validation set into the fields of `metrics.json`.

Also here, since they make the network a task trains: the paper's
initialisation of deeper nets from net A (`initialize_from`) and fine-tuning
of the FC layers alone (`freeze_body`).
"""

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf

import keras_vgg
from keras_vgg import imagenet
from keras_vgg import runs
from pipelines import box_loss
from pipelines import sources

# The classifier's last layer: the one layer tied to the classes.
HEAD = "predictions"

# The paper initialises deeper nets from a trained net A: its first four conv
# layers (those of blocks 1-3, which exist with the same shapes in every
# architecture) and its three FC layers.
PAPER_INIT_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1",
                     "block3_conv2", "fc1", "fc2", "predictions")


def initialize_from(model, path, architecture):
    """Copies weights from a trained run (a model dir or a `.keras` file)
    into `model`, a network of Table 1's `architecture`.

    When the run was trained as the same architecture (or does not say),
    every layer is copied (S=384 from S=256, jittered from S=384); from
    another architecture (a deeper net from A) only `PAPER_INIT_LAYERS`.
    """
    source = runs.load_run(path, "--init_from")
    same = (source.architecture or architecture) == architecture
    names = None if same else PAPER_INIT_LAYERS
    return keras_vgg.weights.copy_layers(source.model, model, names,
                                         what=f"--init_from={source.name!r}")


def freeze_body(model):
    """Makes every layer before `flatten` (the conv body) untrainable: BN
    layers among them then also keep their moving statistics."""
    freeze_before(model, "fc")


def _first_trained(model, fine_tune):
    """Index of the first trained layer for `fine_tune` ("fc" or
    "from:NAME", NAME a layer or a block such as "block4")."""
    names = [layer.name for layer in model.layers]
    if fine_tune == "fc":
        if "flatten" not in names:
            raise ValueError(f"`fine_tune`='fc': model {model.name!r} has no "
                             "'flatten' layer (an FC head) to train alone.")
        return names.index("flatten")
    start = fine_tune[len("from:"):]
    for i, name in enumerate(names):
        if name == start or name.startswith(f"{start}_"):
            return i
    blocks = sorted({n.split("_")[0] for n in names if n.startswith("block")})
    raise ValueError(f"`fine_tune`={fine_tune!r}: no layer or block "
                     f"{start!r}. Expected from:<block> ({blocks}) or "
                     f"from:<layer> ({names[1:]}).")


def freeze_before(model, fine_tune):
    """Makes the layers before the ones `fine_tune` trains untrainable
    ("fc": the conv body; "from:block4": blocks 1-3; "all": none)."""
    if fine_tune == "all":
        return
    for layer in model.layers[:_first_trained(model, fine_tune)]:
        layer.trainable = False


def body_variables(model):
    """Whether each trainable variable belongs to the conv body (the layers
    before `flatten`), in `model.trainable_variables` order."""
    names = [layer.name for layer in model.layers]
    end = names.index("flatten") if "flatten" in names else len(names)
    body = {id(v) for layer in model.layers[:end] for v in layer.weights}
    return [id(v) in body for v in model.trainable_variables]


def weights_class_names(weights):
    """The classes of a weight set's head, in order (ImageNet's 1000 for
    every named set), or None for a weight file: nothing says what its
    head's outputs are."""
    if weights in keras_vgg.weights.WEIGHT_NAMES:
        return imagenet.class_names()
    return None


def new_head_reason(weights, class_names):
    """Why the `predictions` layer of `weights` cannot serve a dataset of
    `class_names` (None: unknown), or None when it can: its classes are the
    dataset's, in the same order.  Equal counts alone say nothing: another
    1000 classes would be scored with ImageNet's rows."""
    own = weights_class_names(weights)
    if own is None:
        return "the weights do not say what their classes are"
    if not class_names:
        return f"the dataset does not name its classes ({len(own)} in the " \
               "weights)"
    if not sources.same_classes(class_names, own):
        return "the dataset's classes are not the weights' own"
    return None


def load_pretrained(model, weights, architecture, batch_norm,
                    class_names=None, keep_head=False):
    """Loads a weight set or file into `model` by layer name; layers whose
    shapes differ (a head of another class count) stay new, and so does
    the head of other classes (`new_head_reason`) unless `keep_head`.
    Returns (the `keras_vgg.weights.LoadReport`, why the head is new or
    None)."""
    if weights in keras_vgg.weights.WEIGHT_NAMES:
        weight_set = keras_vgg.get_weight_set(weights, architecture,
                                              batch_norm)
        path = keras_vgg.weights.fetch(weight_set, include_top=True)
    else:
        path = weights
    reason = None if keep_head else new_head_reason(weights, class_names)
    names = [layer.name for layer in model.layers]
    head = model.get_layer(HEAD) if HEAD in names else None
    # The head as built, put back if the weights' one loads: excluding it
    # by name would not do for files that key layers by class order.
    fresh = head.get_weights() if reason and head is not None else None
    try:
        report = keras_vgg.weights.load_weights(model, path,
                                                skip_mismatch=True)
    except ValueError as e:
        raise ValueError(f"--weights: {e}") from e
    if fresh is None or HEAD not in report.loaded:
        # Another class count (new whatever the names), or no head at all.
        return report, None
    head.set_weights(fresh)
    return dataclasses.replace(
        report, loaded=[n for n in report.loaded if n != HEAD],
        missing=report.missing + [HEAD]), reason


def _gaussian_init(model, seed):
    # The paper's init for net A: N(0, 1e-2) weights, zero biases.
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel, bias = layer.get_weights()
            layer.set_weights([
                rng.normal(0, 1e-2, kernel.shape).astype(kernel.dtype),
                np.zeros_like(bias)])


def _in_top_k(labels, logits, k):
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k),
                                 tf.float32))


class Task:
    """What a task provides the trainer (Model Garden's `base_task.Task`).

    Subclasses set `with_boxes` (batches are (images, labels, boxes) rather
    than (images, labels)), `monitor` (the validation field the plateau
    schedule watches) and `display_names` (their training metrics' names in
    the progress bar and TensorBoard), and define `_network()`,
    `per_example_loss`, `metric_sums`, `train_display`,
    `validation_summary` and `validation_line`.
    """

    with_boxes = False
    monitor = "val_top1_accuracy"
    display_names = ("top1", "top5")

    def __init__(self, cfg, num_classes, class_names=None):
        self.cfg = cfg
        self.num_classes = num_classes
        self.class_names = class_names

    def build_model(self):
        """The network to train: from `weights` when given (the report in
        `self.pretrained`, why the head is new in `self.new_head_reason`),
        its first layers frozen as `fine_tune` says."""
        model = self._network()
        self.pretrained = self.new_head_reason = None
        if self.cfg.weights:
            self.pretrained, self.new_head_reason = load_pretrained(
                model, self.cfg.weights, self.cfg.architecture,
                self.cfg.batch_norm, self.class_names, self.cfg.keep_head)
        freeze_before(model, self.cfg.fine_tune)
        return model

    @contextlib.contextmanager
    def saved_form(self, model):
        """The network as a user loads it, while it is saved."""
        yield model


class ClassificationTask(Task):
    """Image classification: logits out (the loss applies softmax)."""

    name = "classification"

    def _network(self):
        cfg = self.cfg
        model = keras_vgg.VGG(
            cfg.architecture, batch_norm=cfg.batch_norm,
            classes=self.num_classes, input_shape=(cfg.crop, cfg.crop, 3),
            classifier_activation=None, dropout=cfg.dropout,
            width_multiplier=cfg.width_multiplier)
        if cfg.init == "gaussian":
            _gaussian_init(model, cfg.seed)
        return model

    def per_example_loss(self, logits, batch):
        return keras.losses.sparse_categorical_crossentropy(
            batch[1], logits, from_logits=True)

    def metric_sums(self, logits, batch):
        labels = tf.cast(batch[1], tf.int32)
        return {"top1_correct": _in_top_k(labels, logits, 1),
                "top5_correct": _in_top_k(labels, logits,
                                          min(5, self.num_classes)),
                "examples": tf.cast(tf.shape(labels)[0], tf.float32)}

    def train_display(self, sums, images):
        """(name, value) pairs for the progress bar and TensorBoard."""
        return list(zip(self.display_names,
                        (sums["top1_correct"] / images,
                         sums["top5_correct"] / images)))

    def validation_summary(self, sums):
        """`metrics.json`'s validation fields from the summed metrics."""
        if not sums["examples"]:
            raise ValueError("The validation data yielded no image.")
        return {"val_top1_accuracy": sums["top1_correct"] / sums["examples"],
                "val_top5_accuracy": sums["top5_correct"] / sums["examples"],
                "val_images": int(sums["examples"])}

    def validation_line(self, summary, learning_rate):
        return (f"  val top-1 {summary['val_top1_accuracy']:.4f}  top-5 "
                f"{summary['val_top5_accuracy']:.4f}  lr {learning_rate:g}")

    @contextlib.contextmanager
    def saved_form(self, model):
        """With its softmax while saved: probabilities, as a user expects."""
        head = model.get_layer(HEAD)
        head.activation = keras.activations.softmax
        try:
            yield model
        finally:
            head.activation = keras.activations.linear


class LocalizationTask(Task):
    """Box regression (the paper's appendix A): one box (SCR) or one per
    class (PCR), the box of the ground-truth class counting."""

    name = "localization"
    with_boxes = True
    monitor = "val_localization_accuracy"
    # The TensorBoard tags of the first runs, kept so that their curves line
    # up: "top1" counts boxes with IoU > 0.5, "top5" the images whose box is
    # still in the crop.
    display_names = ("top1", "top5")

    def _network(self):
        cfg = self.cfg
        return keras_vgg.VGGLocalizer(
            cfg.architecture, regression=cfg.regression,
            classes=self.num_classes, input_shape=(cfg.crop, cfg.crop, 3),
            batch_norm=cfg.batch_norm, dropout=cfg.dropout,
            width_multiplier=cfg.width_multiplier)

    def per_example_loss(self, boxes_out, batch):
        loss, _ = box_loss.euclidean_loss(boxes_out, batch[1], batch[2],
                                          self.cfg.regression)
        return loss

    def metric_sums(self, boxes_out, batch):
        hits, with_box = box_loss.correct_boxes(boxes_out, batch[1], batch[2],
                                                self.cfg.regression)
        return {"boxes_correct": tf.reduce_sum(hits),
                "examples_with_box": tf.reduce_sum(with_box)}

    def train_display(self, sums, images):
        return list(zip(self.display_names,
                        (sums["boxes_correct"] / images,
                         sums["examples_with_box"] / images)))

    def validation_summary(self, sums):
        """`metrics.json`'s validation fields: the fraction of images whose
        ground-truth-class box has IoU > 0.5, also under the classifier's
        field names (so every run's history has the same fields)."""
        if not sums["examples_with_box"]:
            raise ValueError("The validation data yielded no image.")
        accuracy = sums["boxes_correct"] / sums["examples_with_box"]
        return {"val_top1_accuracy": accuracy,
                "val_top5_accuracy": (sums["examples_with_box"]
                                      / sums["examples_with_box"]),
                "val_localization_accuracy": accuracy,
                "val_localization_error": 1 - accuracy,
                "val_images": int(sums["examples_with_box"])}

    def validation_line(self, summary, learning_rate):
        return (f"  val localisation accuracy (IoU > 0.5) "
                f"{summary['val_localization_accuracy']:.4f}  "
                f"lr {learning_rate:g}")


TASKS = {task.name: task for task in (ClassificationTask, LocalizationTask)}


def make_task(cfg, num_classes, class_names=None):
    """The `Task` of `cfg.task` ("classification" or "localization");
    `class_names`: the training data's (None: unnamed)."""
    return TASKS[cfg.task](cfg, num_classes, class_names)


def build_model(cfg, num_classes):
    """The network of `cfg`: a classifier with logits out (the loss applies
    softmax), or a localiser (box regressor) for task="localization"; its
    conv body frozen for fine_tune="fc"."""
    return make_task(cfg, num_classes).build_model()
