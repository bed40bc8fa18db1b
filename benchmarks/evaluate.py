"""Cost of the paper's test protocols: dense evaluation against multi-crop.

    python -m benchmarks.evaluate [--architecture=D] [--q=384] [--repeats=2]
        [--image=pipelines/data/grace_hopper.jpg] [--dense_stride=32]
        [--noeager]

For VGG16 (random weights, full width) on one image rescaled to Q, times in
the same process: a single central crop, dense evaluation with its flip (the
fully convolutional network on the whole image twice, its score map at
`--dense_stride`), and the 50-crop multi-crop (5x5 grid of 224 crops and
their flips).  Prints views per image, the GMACs each protocol costs on this
image (`keras_vgg.cost.count_graph_macs` at the actual input sizes) and
images/s (median of `--repeats` rounds, each calling every protocol once,
after one warm-up call each; rescaling and preprocessing included).

The protocols run as `pipelines.protocols` runs them (one graph per network
for every input size; dense: the FC head as matrix products).  The rows
marked "eager" run them the straightforward way, for comparison in the same
process: eager Keras calls, and dense with the head as Conv2D layers (the
rewrite before `FullyConnectedConv2D`).
"""

import os
import statistics
import time

import numpy as np
import tensorflow as tf
from absl import flags

import keras_vgg
from keras_vgg import cost
from keras_vgg import fully_conv
from pipelines import entry
from pipelines import protocols
from pipelines.report import format_table
from pipelines.scoremap import load_image

IMAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipelines",
                     "data", "grace_hopper.jpg")

FLAGS = flags.FLAGS
flags.DEFINE_string("architecture", "D", "Table 1 configuration.")
flags.DEFINE_integer("q", 384, "Test scale Q (smallest side).")
flags.DEFINE_integer("repeats", 2, "Timed rounds, each calling every "
                     "protocol once (the median is printed).")
flags.DEFINE_string("image", IMAGE, "The image.")
flags.DEFINE_integer("dense_stride", 32, "Dense evaluation's score-map "
                     "stride: 32, 16 or 8.")
flags.DEFINE_boolean("eager", True, "Also time the eager rows.")


def seconds_per_call(fns, repeats):
    """Median seconds of each of `fns` over `repeats` rounds, after one
    warm-up call each; a round calls every function once, so that a load
    that comes and goes on a shared machine weighs on all of them alike."""
    for fn in fns:
        fn()  # warm-up: allocation, kernels, tracing
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def with_conv2d_head(fcn):
    """`fcn` with its head as plain Conv2D layers (same weights)."""
    import keras

    def clone(layer):
        if isinstance(layer, fully_conv.FullyConnectedConv2D):
            return keras.layers.Conv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(fcn, clone_function=clone)
    plain.set_weights(fcn.get_weights())
    return plain


def eager_dense(fcn, image, q):
    """Dense evaluation with flip, the model called eagerly."""
    x = protocols.rescale(image, q)
    x = protocols.preprocess(tf.concat(
        [x, tf.image.flip_left_right(x)], 0), "caffe")
    p = np.asarray(fcn(x, training=False))
    return protocols.average([p[:1], p[1:]])


def eager_multi_crop(model, image, q):
    """Multi-crop with flips, the model called eagerly (50 crops a call)."""
    x = protocols.rescale(image, q)
    crop = protocols.input_size(model)[0]
    views = [x[:, y:y + crop, x0:x0 + crop]
             for y, x0 in protocols.crop_grid(x.shape[1], x.shape[2], crop)]
    views += [tf.image.flip_left_right(v) for v in views]
    x = protocols.preprocess(tf.concat(views, 0), "caffe")
    return np.asarray(model(x, training=False)).mean(axis=0, keepdims=True)


def main(argv):
    del argv
    import keras

    image = load_image(FLAGS.image)
    q = FLAGS.q
    model = keras_vgg.VGG(FLAGS.architecture, weights=None)
    fcn = keras_vgg.fully_convolutional(model, average=True,
                                        stride=FLAGS.dense_stride)
    crop = protocols.input_size(model)[0]
    h, w = protocols.rescaled_size(image.shape[0], image.shape[1], q)
    crop_macs = cost.count_macs(model, (crop, crop, 3))
    dense_macs = cost.count_graph_macs(fcn, (h, w, 3))
    dense_name = "dense + flip" + (f", stride {FLAGS.dense_stride}"
                                   if FLAGS.dense_stride != 32 else "")
    runs = [
        ("single crop", 1, f"{crop}x{crop}", crop_macs,
         lambda: protocols.single_crop(model, image, q)),
        (dense_name, 2, f"{h}x{w}", 2 * dense_macs,
         lambda: protocols.dense(fcn, image, q, flip=True)),
        ("multi-crop 5x5 + flips", 50, f"{crop}x{crop}", 50 * crop_macs,
         lambda: protocols.multi_crop(model, image, q, flip=True)),
    ]
    if FLAGS.eager:
        plain = with_conv2d_head(fcn)
        np.testing.assert_allclose(eager_dense(plain, image, q),
                                   protocols.dense(fcn, image, q),
                                   rtol=1e-3, atol=1e-6)
        runs[2:2] = [(dense_name + " (eager, Conv2D head)", 2, f"{h}x{w}",
                      2 * dense_macs, lambda: eager_dense(plain, image, q))]
        runs.append(("multi-crop 5x5 + flips (eager)", 50, f"{crop}x{crop}",
                     50 * crop_macs,
                     lambda: eager_multi_crop(model, image, q)))
    rows = []
    seconds = seconds_per_call([run[-1] for run in runs], FLAGS.repeats)
    for (name, views, size, macs, _), spent in zip(runs, seconds):
        rows.append((name, views, size, f"{macs / 1e9:.2f}",
                     f"{1 / spent:.3f}", f"{macs / spent / 1e9:.1f}"))
    print(f"VGG {FLAGS.architecture} (random weights), one "
          f"{image.shape[0]}x{image.shape[1]} image at Q={q}, backend "
          f"{keras.backend.backend()}, median of {FLAGS.repeats} rounds "
          "(each calls every protocol once):")
    print(format_table(["protocol", "views", "view size", "GMACs/image",
                        "images/s", "GMAC/s"], rows))


if __name__ == "__main__":
    entry.run(main, __name__)
