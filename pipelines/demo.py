"""`make demo`: what keras_vgg builds, a training run, and dense evaluation.

1. Prints the six configurations of Table 1 (weight layers, parameters,
   GMACs at 224x224) as built.
2. Trains the `demo` recipe (a narrow net A with BN) on the built-in dataset
   (generated on first use, no download) with the same trainer as ImageNet
   runs: a line per epoch, then validation top-1 and the training time.
3. Rewrites VGG16's FC head into convolutions and runs it on the bundled
   image at two test scales Q, printing the class score map's shape and the
   top-5 labels of the spatially averaged scores.

Pretrained weights need a download the first time: with `--weights=auto`
(default) the Oxford weights are used if they are already in the Keras cache
(~/.keras/models), else the network keeps its random initialisation and the
labels printed are those of an untrained network.
"""

import os
import shutil
import time

import numpy as np
import tensorflow as tf
from absl import flags

import keras_vgg
from pipelines import entry
from pipelines import layer_table
from pipelines import recipes
from pipelines import train
from pipelines.report import format_table

IMAGE = os.path.join(os.path.dirname(__file__), "data", "grace_hopper.jpg")

FLAGS = flags.FLAGS


def config_table():
    """Rows (config, weight layers, parameters, GMACs at 224) of built
    models."""
    rows = []
    for name in keras_vgg.CONFIGS:
        model = keras_vgg.VGG(name)
        rows.append((name, keras_vgg.get_config(name).weight_layers,
                     model.count_params(), keras_vgg.count_macs(name) / 1e9))
        del model
    return rows


def _resolve_weights(weights):
    if weights == "none":
        return None
    if weights == "auto":
        cached = os.path.join(
            os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
            "models", "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
        return "imagenet" if os.path.exists(cached) else None
    return weights


def load_rescaled(path, q):
    """Decodes an image file and rescales it so its smallest side is Q."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False)
    h, w = float(image.shape[0]), float(image.shape[1])
    scale = q / min(h, w)
    size = (max(q, round(h * scale)), max(q, round(w * scale)))
    return tf.image.resize(tf.cast(image, tf.float32), size, antialias=True)


def dense_demo(weights, sizes, image_path):

    model = keras_vgg.VGG16(weights=weights)
    fcn = keras_vgg.fully_convolutional(model)
    dense = keras_vgg.fully_convolutional(model, average=True)
    rows = []
    for q in sizes:
        x = load_rescaled(image_path, q)[None]
        x = keras_vgg.preprocess_input(x.numpy(), weights=weights or "imagenet")
        start = time.perf_counter()
        score_map = fcn.predict(x, verbose=0)
        probs = dense.predict(x, verbose=0)
        seconds = time.perf_counter() - start
        top = keras_vgg.decode_predictions(np.asarray(probs), top=5)[0]
        rows.append((q, tuple(x.shape[1:3]), score_map.shape[1:3],
                     ", ".join(f"{name} {p:.3f}" for _, name, p in top),
                     f"{seconds:.1f}"))
    return rows


def train_demo(model_dir, data_dir):

    cfg = recipes.RECIPES["demo"]
    print(f"\nTraining the 'demo' recipe (architecture {cfg.architecture}, "
          f"BN, width x{cfg.width_multiplier}, S in [{cfg.scale_min}, "
          f"{cfg.scale_max}], crop {cfg.crop}, {cfg.max_epochs} epochs) on "
          f"the built-in dataset into {model_dir}:\n")
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    start = time.perf_counter()
    metrics = train.train(cfg, dataset="builtin", model_dir=model_dir,
                          data_dir=data_dir, verbose=1)
    minutes, seconds = divmod(round(time.perf_counter() - start), 60)
    # Each epoch's loss and validation top-1 were printed as it ended.
    print(f"\nval top-1 {metrics['val_top1_accuracy']:.3f} (chance "
          f"{1 / 5:.3f}), {metrics['steps']} steps, "
          f"{metrics['images_per_second']:.0f} images/s, "
          f"{metrics['images_skipped']} images skipped, trained in "
          f"{minutes} min {seconds} s; model in "
          f"{os.path.join(model_dir, 'model.keras')}")
    return metrics


def main(argv):
    del argv
    print("VGG configurations of Table 1, as built by keras_vgg "
          "(1000 classes, with the FC head):\n")
    print(format_table(["config", "weight layers", "parameters",
                        "GMACs@224"],
                       [(c, n, f"{p:,}", f"{g:.2f}")
                        for c, n, p, g in config_table()]))
    print("\nVGG16 at 224x224 per block, one image (every layer: "
          "python -m pipelines.layer_table):\n")
    print(layer_table.format_blocks(keras_vgg.layer_table("D")))
    if FLAGS.train:
        train_demo(FLAGS.model_dir, FLAGS.data_dir)
    weights = _resolve_weights(FLAGS.weights)
    print(f"\nDense evaluation of VGG16 (fully convolutional head), weights="
          f"{weights!r}, image {os.path.basename(FLAGS.image)}:")
    if weights is None:
        print("(random initialisation: the labels below are those of an "
              "untrained network; pass --weights=imagenet on a machine with "
              "internet access for the Oxford weights)")
    rows = dense_demo(weights, [int(q) for q in FLAGS.sizes], FLAGS.image)
    print()
    print(format_table(["Q", "image HxW", "score map", "top-5 (dense, "
                        "spatially averaged)", "seconds"], rows))


def _define_flags():
    # Defined when run, not at import: benchmarks and tests import this
    # module beside others that define the same names.
    flags.DEFINE_string("weights", "auto",
                        "'auto', 'none', 'imagenet', 'tv_in1k' or a weight "
                        "file.")
    flags.DEFINE_list("sizes", ["256", "384"], "Test scales Q (smallest side).")
    flags.DEFINE_string("image", IMAGE, "Image to classify.")
    flags.DEFINE_string("model_dir", "runs/demo",
                        "Where the demo training run writes (replaced on each "
                        "demo run).")
    flags.DEFINE_string("data_dir", None,
                        "Cache of the built-in dataset (default "
                        "~/.cache/keras_vgg/builtin or $KERAS_VGG_DATA).")
    flags.DEFINE_boolean("train", True, "Run the demo training.")


def run():
    """The command line, as `python -m pipelines.demo` runs it; also the
    `vgg-demo` console script."""
    _define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
