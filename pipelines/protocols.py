"""The paper's test protocols (Simonyan & Zisserman, section 3.2).

Every protocol takes images as RGB pixels in [0, 255] (numpy or tf, uint8
or float; one image `(H, W, 3)` or a batch of same-size images
`(N, H, W, 3)`) and returns class probabilities `(N, classes)` as numpy:

    single_crop   rescale the smallest side to Q, central crop x crop window,
                  run the classifier (the model with the Flatten/Dense head)
    dense         the fully convolutional network (`keras_vgg.
                  fully_convolutional(model, average=True)`) on the whole
                  rescaled image: softmax of the spatially averaged scores,
                  averaged with that of the horizontally flipped image
    multi_crop    a 5x5 regular grid of crop x crop windows of the rescaled
                  image and their flips: 50 views per scale, softmax averaged
    combined      the average of dense and multi_crop
    multi_scale   the average of a protocol over several Q
    ensemble      the average over several models

Order of operations, the same in every protocol: the raw RGB image is
rescaled (`tf.image.resize`, bilinear with antialiasing, smallest side to Q,
the other side rounded as in `pipelines.augment`), cropped and flipped as raw
pixels, and only then preprocessed with `keras_vgg.preprocessing.apply(x,
preprocessing)` ("caffe", "torch", or "none" for a model that contains its
own `keras_vgg.layers.Preprocessing` layer).

Images of different sizes: the dense network's output depends on the whole
image, so images of different sizes must never be padded into one batch
(the padding would enter the borders and the averaged score map).  These
functions therefore take one image, or a batch of images of identical size;
`pipelines.evaluate` runs one image per step.

Example:
>>> model = keras.saving.load_model("runs/demo/model.keras")
>>> fcn = keras_vgg.fully_convolutional(model, average=True)
>>> image = np.asarray(PIL.Image.open("cat.jpg").convert("RGB"))
>>> p = multi_scale(lambda q: combined(fcn, model, image, q),
...                 keras_vgg.runs.load_run("runs/demo").multi_scales)
>>> p.shape
(1, 1000)
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_vgg import fully_conv
from keras_vgg import preprocessing as vgg_preprocessing
from keras_vgg import runs
from keras_vgg.transforms import rescaled_size  # noqa: F401  (public here too)

GRID = 5


# -- helpers ----------------------------------------------------------------

def _as_batch(image):
    """float32 tf tensor (N, H, W, 3) from one image or a batch."""
    x = tf.convert_to_tensor(image)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    if x.shape.rank == 3:
        x = x[None]
    if x.shape.rank != 4 or x.shape[-1] != 3:
        raise ValueError(
            "Expected an RGB image (H, W, 3) or a batch of same-size images "
            f"(N, H, W, 3). Received shape {tuple(x.shape)}")
    return x


def rescale(image, q):
    """Rescales raw RGB pixels so that the smallest side is Q: bilinear
    `tf.image.resize` with antialiasing.  Returns float32 (N, H', W', 3)."""
    x = _as_batch(image)
    h, w = rescaled_size(x.shape[1], x.shape[2], q)
    if (h, w) == tuple(x.shape[1:3]):
        return x
    return tf.image.resize(x, [h, w], method="bilinear", antialias=True)


def preprocess(x, preprocessing):
    """`keras_vgg.preprocessing.apply`, returning a float32 tf tensor."""
    return tf.convert_to_tensor(vgg_preprocessing.apply(x, preprocessing))


def input_size(model):
    """The (height, width) the classifier takes; (None, None) for a fully
    convolutional model."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(f"Model {model.name!r} takes inputs of shape "
                         f"{shape}; expected (N, H, W, 3) images.")
    return shape[1], shape[2]


def _classifier_crop(model, crop):
    h, w = input_size(model)
    if h is None or w is None:
        raise ValueError(
            f"Model {model.name!r} takes images of any size: crop protocols "
            "need the classifier with its Flatten/Dense head (fixed input "
            "size), not the fully convolutional model.")
    if h != w:
        raise ValueError(f"Model {model.name!r} takes {h}x{w} inputs; the "
                         "crop protocols need square crops.")
    if crop is not None and crop != h:
        raise ValueError(f"crop={crop} but model {model.name!r} takes "
                         f"{h}x{w} inputs.")
    return h


# One graph per model, for every input size (see `predict`).
_GRAPHS = weakref.WeakKeyDictionary()


def compiled(model):
    """`model(x, training=False)` as one `tf.function` for inputs of every
    batch size and image size (an input signature of unknown dimensions):
    the dense network sees a new size with nearly every image, and is
    traced once all the same.  In a graph TensorFlow fuses each
    convolution with its bias and ReLU, where eager calls run three passes
    over every activation map."""
    if model not in _GRAPHS:
        spec = tf.TensorSpec((None,) * (len(model.inputs[0].shape) - 1)
                             + tuple(model.inputs[0].shape[-1:]),
                             tf.float32)
        # A weak reference: the cache must not keep the model alive.
        ref = weakref.ref(model)
        _GRAPHS[model] = tf.function(
            lambda x: ref()(x, training=False), input_signature=[spec])
    return _GRAPHS[model]


def predict(model, x, batch_size=50):
    """`model` on the float32 batch `x` in chunks of `batch_size`; numpy.
    The model runs as one graph for every input size (`compiled`)."""
    n = int(x.shape[0])
    graph = compiled(model)
    outputs = [np.asarray(graph(tf.cast(x[i:i + batch_size], tf.float32)))
               for i in range(0, n, batch_size)]
    return np.concatenate(outputs, axis=0)


def average(probabilities):
    """The mean of a list of (N, classes) probability arrays."""
    probabilities = [np.asarray(p, np.float64) for p in probabilities]
    if not probabilities:
        raise ValueError("Nothing to average: an empty list of predictions.")
    return np.mean(probabilities, axis=0).astype(np.float32)


# -- protocols --------------------------------------------------------------

def central_crop(x, crop):
    """The central crop x crop window of a (N, H, W, 3) batch, at offsets
    ((H - crop) // 2, (W - crop) // 2) as `augment.central_crop_window`."""
    h, w = int(x.shape[1]), int(x.shape[2])
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    return x[:, y0:y0 + crop, x0:x0 + crop]


def single_crop(model, image, q, crop=None, preprocessing="caffe",
                batch_size=50):
    """Single central crop: rescale to Q, take the central crop x crop
    window, run the classifier `model`.  No flip.

    Args:
        model: the classifier (Flatten/Dense head, softmax output).
        image: RGB pixels, (H, W, 3) or (N, H, W, 3).
        q: test scale Q (smallest side), at least `crop`.
        crop: the model's input size (default: read from the model).
        preprocessing: "caffe", "torch" or "none".

    Returns:
        numpy (N, classes) probabilities.
    """
    crop = _classifier_crop(model, crop)
    runs.check_test_scale(q, crop, "single_crop")
    x = central_crop(rescale(image, q), crop)
    return predict(model, preprocess(x, preprocessing), batch_size)


def score_map_geometry(fcn_model):
    """(stride, window) of the score map of a fully convolutional model:
    position (i, j) is the classifier on the window x window box at
    (stride * i, stride * j) of its input (32 and 224 for VGG; stride 16 or
    8 with pooling offsets, as its `WindowsInImage` layer records).  Else
    found from its first "valid" conv (the former fc1; VGG's own convs are
    "same").  None when it cannot be told."""
    for layer in fcn_model.layers:
        if isinstance(layer, fully_conv.WindowsInImage):
            return layer.stride, max(layer.window)
    stride = 1
    for layer in fcn_model.layers:
        if isinstance(layer, keras.layers.Conv2D) and \
                layer.padding == "valid":
            return stride, stride * max(layer.kernel_size)
        strides = getattr(layer, "strides", None)
        if strides is not None:
            stride *= int(np.atleast_1d(strides)[0])
    return None


def min_input_size(fcn_model):
    """The smallest input side the fully convolutional model accepts: the
    window of one score-map position, 224 for VGG.  None when unknown."""
    geometry = score_map_geometry(fcn_model)
    return geometry[1] if geometry else None


def is_dense_model(model):
    """Whether `model` is a fully convolutional network with averaged
    output (input of any size, output (N, classes))."""
    h, w = input_size(model)
    return h is None and w is None and len(model.outputs[0].shape) == 2


def dense(fcn_average_model, image, q, flip=True, preprocessing="caffe"):
    """Dense evaluation: the fully convolutional network on the whole image
    rescaled to Q; the softmax of the spatially averaged class scores,
    averaged with that of the horizontally flipped image when `flip`.

    Args:
        fcn_average_model: `keras_vgg.fully_convolutional(model,
            average=True)` (convert once, reuse: the conversion copies every
            weight).
        image: RGB pixels, (H, W, 3) or a batch of same-size images
            (N, H, W, 3) -- never images padded to a common size.
        q: test scale Q, at least the classifier's input size.
        flip: also evaluate the horizontally flipped image.
        preprocessing: "caffe", "torch" or "none".

    Returns:
        numpy (N, classes) probabilities.
    """
    model = fcn_average_model
    h, w = input_size(model)
    if h is not None or w is not None:
        raise ValueError(
            f"Model {model.name!r} takes fixed {h}x{w} inputs: dense "
            "evaluation needs keras_vgg.fully_convolutional(model, "
            "average=True).")
    if len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"Model {model.name!r} outputs a score map of shape "
            f"{tuple(model.outputs[0].shape)}: dense evaluation needs the "
            "spatially averaged scores, keras_vgg.fully_convolutional(model, "
            "average=True).")
    runs.check_test_scale(q, min_input_size(model) or 1, "dense")
    x = rescale(image, q)
    n = int(x.shape[0])
    if flip:
        x = tf.concat([x, tf.image.flip_left_right(x)], axis=0)
    p = predict(model, preprocess(x, preprocessing), batch_size=x.shape[0])
    if flip:
        return average([p[:n], p[n:]])
    return p


def crop_grid(height, width, crop, n=GRID):
    """The (y, x) corners of an n x n regular grid of crop x crop boxes:
    row-major, the first at (0, 0), the last at (H - crop, W - crop), evenly
    spaced (rounded to whole pixels) in between.

    >>> crop_grid(256, 320, 224)[:3]
    [(0, 0), (0, 24), (0, 48)]
    """
    height, width, crop, n = int(height), int(width), int(crop), int(n)
    if n < 1:
        raise ValueError(f"The grid needs n >= 1. Received: n={n}")
    if crop > height or crop > width:
        raise ValueError(f"crop={crop} is larger than the {height}x{width} "
                         "image.")

    def steps(extent):
        if n == 1:
            return [(extent - crop) // 2]
        return [int(np.round(i * (extent - crop) / (n - 1)))
                for i in range(n)]

    return [(y, x) for y in steps(height) for x in steps(width)]


def multi_crop(model, image, q, crop=None, flip=True, preprocessing="caffe",
               n=GRID, batch_size=50):
    """Multi-crop evaluation: the classifier on an n x n grid of crop x crop
    windows of the image rescaled to Q, and on their horizontal flips (the
    paper's 50 crops per scale); the softmax averaged over the views.

    Returns:
        numpy (N, classes) probabilities.
    """
    crop = _classifier_crop(model, crop)
    runs.check_test_scale(q, crop, "multi_crop")
    x = rescale(image, q)
    n_images = int(x.shape[0])
    views = [x[:, y:y + crop, x0:x0 + crop]
             for y, x0 in crop_grid(x.shape[1], x.shape[2], crop, n)]
    if flip:
        views += [tf.image.flip_left_right(v) for v in views]
    # (N, V, crop, crop, 3) -> (N * V, ...), each image's views together.
    views = tf.reshape(tf.stack(views, axis=1), [-1, crop, crop, 3])
    p = predict(model, preprocess(views, preprocessing), batch_size)
    return p.reshape(n_images, -1, p.shape[-1]).mean(axis=1)


def combined(fcn_average_model, model, image, q, crop=None, flip=True,
             preprocessing="caffe", batch_size=50):
    """The average of `dense` and `multi_crop` softmax at one scale (their
    multi-scale versions average the same terms)."""
    return average([
        dense(fcn_average_model, image, q, flip, preprocessing),
        multi_crop(model, image, q, crop, flip, preprocessing,
                   batch_size=batch_size)])


def multi_scale(fn, scales):
    """The average of `fn(q)` (a protocol at scale Q) over `scales`.

    >>> multi_scale(lambda q: dense(fcn, image, q), [256, 384, 512])
    """
    scales = list(scales)
    if not scales:
        raise ValueError("multi_scale needs at least one scale.")
    return average([fn(q) for q in scales])


def ensemble(fn, models):
    """The average of `fn(model)` over `models` (an ensemble of nets)."""
    models = list(models)
    if not models:
        raise ValueError("ensemble needs at least one model.")
    return average([fn(m) for m in models])
