"""Training-step cost of net A-LRN against net A, with TensorFlow's fused
LRN kernel (what `keras_vgg.layers.LocalResponseNormalization` uses on the
TensorFlow backend) and with its portable `keras.ops` form.

    python -m benchmarks.lrn [--batch=8] [--size=224] [--repeats=3]

One SGD step (forward, backward, update) of the full-width networks on
random images, median of `--repeats` steps after a warm-up step, in one
process; the ratio column is against net A.
"""

import time

from absl import flags

import keras_vgg
from keras_vgg import layers as vgg_layers
from pipelines import entry
from pipelines.report import format_table

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("size", 224, "Image side.")
flags.DEFINE_integer("repeats", 3, "Timed steps.")


def step_seconds(config, batch, size, repeats):
    import keras
    import numpy as np
    import tensorflow as tf


    rng = np.random.RandomState(0)
    x = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)), tf.float32)
    y = tf.constant(np.arange(batch) % 1000)
    model = keras_vgg.VGG(config, input_shape=(size, size, 3),
                          classifier_activation=None)
    optimizer = keras.optimizers.SGD(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, model(x, training=True), from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv):
    del argv

    args = (FLAGS.batch, FLAGS.size, FLAGS.repeats)
    base = step_seconds("A", *args)
    fused = step_seconds("A-LRN", *args)
    lrn = vgg_layers.LocalResponseNormalization
    fused_call = lrn.call
    lrn.call = lrn.portable_call  # the keras.ops form, for comparison only
    try:
        portable = step_seconds("A-LRN", *args)
    finally:
        lrn.call = fused_call
    rows = [(name, f"{s:.3f}", f"{s / base:.2f}") for name, s in (
        ("A", base), ("A-LRN, fused tf LRN", fused),
        ("A-LRN, keras.ops LRN", portable))]
    print(f"\nOne training step, batch {FLAGS.batch}, {FLAGS.size}x"
          f"{FLAGS.size}, median of {FLAGS.repeats}:")
    print(format_table(["model", "seconds / step", "vs A"], rows))


if __name__ == "__main__":
    entry.run(main, __name__)
