"""Cost of the paper's test protocols: dense evaluation against multi-crop.

    python -m benchmarks.evaluate [--architecture=D] [--q=384] [--repeats=2]
        [--image=pipelines/data/grace_hopper.jpg]

For VGG16 (random weights, full width) on one image rescaled to Q, times in
the same process: a single central crop, dense evaluation with its flip (the
fully convolutional network on the whole image twice), and the 50-crop
multi-crop (5x5 grid of 224 crops and their flips).  Prints views per image,
the GMACs each protocol costs on this image (`keras_vgg.cost.count_macs` at
the actual input sizes) and images/s (median of `--repeats` calls after one
warm-up call, rescaling and preprocessing included).
"""

import os
import statistics
import time

from absl import flags

import keras_vgg
from keras_vgg import cost
from pipelines import entry
from pipelines import protocols
from pipelines.report import format_table
from pipelines.scoremap import load_image

IMAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipelines",
                     "data", "grace_hopper.jpg")

FLAGS = flags.FLAGS
flags.DEFINE_string("architecture", "D", "Table 1 configuration.")
flags.DEFINE_integer("q", 384, "Test scale Q (smallest side).")
flags.DEFINE_integer("repeats", 2, "Timed calls per protocol.")
flags.DEFINE_string("image", IMAGE, "The image.")


def seconds_per_call(fn, repeats):
    fn()  # warm-up: allocation, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv):
    del argv
    import keras


    image = load_image(FLAGS.image)
    q = FLAGS.q
    model = keras_vgg.VGG(FLAGS.architecture, weights=None)
    fcn = keras_vgg.fully_convolutional(model, average=True)
    crop = protocols.input_size(model)[0]
    h, w = protocols.rescaled_size(image.shape[0], image.shape[1], q)
    crop_macs = cost.count_macs(model, (crop, crop, 3))
    dense_macs = cost.count_macs(fcn, (h, w, 3))
    runs = [
        ("single crop", 1, f"{crop}x{crop}", crop_macs,
         lambda: protocols.single_crop(model, image, q)),
        ("dense + flip", 2, f"{h}x{w}", 2 * dense_macs,
         lambda: protocols.dense(fcn, image, q, flip=True)),
        ("multi-crop 5x5 + flips", 50, f"{crop}x{crop}", 50 * crop_macs,
         lambda: protocols.multi_crop(model, image, q, flip=True)),
    ]
    rows = []
    for name, views, size, macs, fn in runs:
        seconds = seconds_per_call(fn, FLAGS.repeats)
        rows.append((name, views, size, f"{macs / 1e9:.2f}",
                     f"{1 / seconds:.3f}", f"{macs / seconds / 1e9:.1f}"))
        print(f"  measured {name}: {seconds:.2f} s/image", flush=True)
    print()
    print(f"VGG {FLAGS.architecture} (random weights), one "
          f"{image.shape[0]}x{image.shape[1]} image at Q={q}, backend "
          f"{keras.backend.backend()}, median of {FLAGS.repeats} calls:")
    print(format_table(["protocol", "views", "view size", "GMACs/image",
                        "images/s", "GMAC/s"], rows))


if __name__ == "__main__":
    entry.run(main, __name__)
