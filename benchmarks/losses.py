"""Perceptual-loss cost: forward + backward per image, keras_vgg.
PerceptualLoss against the hand-written form (a `keras.Model` of
`get_layer(n).output` on the same VGG16, caffe preprocessing and a mean
squared difference), timed in the same process.

    python -m benchmarks.losses [--size=256] [--batch=4] [--repeats=5]
"""

import time

import keras
import numpy as np
import tensorflow as tf
from absl import flags

import keras_vgg
from keras_vgg import preprocessing
from pipelines import entry
from pipelines.report import format_table

flags.DEFINE_integer("size", 256, "Image side.")
flags.DEFINE_integer("batch", 4, "Images per call.")
flags.DEFINE_integer("repeats", 5, "Timed calls (after one warm-up).")
FLAGS = flags.FLAGS


def seconds_per_image(loss_fn, target, images):
    def step():
        x = tf.Variable(images)
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss_fn(target, x))
        return tape.gradient(value, x)

    step()  # build and warm up
    start = time.perf_counter()
    for _ in range(FLAGS.repeats):
        step()
    return (time.perf_counter() - start) / FLAGS.repeats / len(images)


def main(argv):
    del argv
    vgg16 = keras_vgg.VGG16(include_top=False, input_shape=(None, None, 3))
    layers = ["block2_conv2", "block4_conv2"]
    loss = keras_vgg.PerceptualLoss(vgg16, layers=layers, reduction=None)
    probe = keras.Model(vgg16.inputs[0],
                        [vgg16.get_layer(n).output for n in layers])
    probe.trainable = False

    def by_hand(y_true, y_pred):
        a = probe(preprocessing.apply(y_true, "caffe"), training=False)
        b = probe(preprocessing.apply(y_pred, "caffe"), training=False)
        return sum(tf.reduce_mean(tf.square(p - q), axis=[1, 2, 3])
                   for p, q in zip(a, b))

    rng = np.random.RandomState(0)
    shape = (FLAGS.batch, FLAGS.size, FLAGS.size, 3)
    target = tf.constant(rng.uniform(0, 255, shape), tf.float32)
    images = rng.uniform(0, 255, shape).astype("float32")
    np.testing.assert_allclose(loss(target, images), by_hand(target, images),
                               rtol=1e-4)
    base = seconds_per_image(by_hand, target, images)
    ours = seconds_per_image(loss, target, images)
    print(f"VGG16 perceptual loss ({', '.join(layers)}), {FLAGS.size}x"
          f"{FLAGS.size}, batch {FLAGS.batch}, forward + backward:")
    print(format_table(["implementation", "ms / image", "vs hand-written"], [
        ("keras.Model(get_layer(n).output) by hand", f"{1e3 * base:.1f}",
         "1.00"),
        ("keras_vgg.PerceptualLoss", f"{1e3 * ours:.1f}",
         f"{ours / base:.2f}")]))


if __name__ == "__main__":
    entry.run(main, __name__)
