"""Export formats of VGG16 at 224 on this CPU, in one process.

    python -m benchmarks.export [--calibration_images=50] [--weights=PATH]

For Keras, the SavedModel and TFLite float32, fp16, dynamic-range and
full-integer int8 (LiteRT, 1 and 2 threads): file size, latency per image,
conversion time, peak resident memory during conversion, and top-1 agreement
and largest probability difference against the Keras float model on real
images (the built-in dataset's validation images and the bundled photo).

Without `--weights` the network has seeded He-normal weights (no download
here): agreement figures then describe the numerics of the formats, not
ImageNet accuracy.
"""

import os
import tempfile
import threading
import time

from absl import flags

import keras_vgg
from export import calibration
from export import common
from export import litert
from export import saved_model
from export import tflite
from pipelines import demo as pipelines_demo
from pipelines import entry
from pipelines.report import format_table

FLAGS = flags.FLAGS
flags.DEFINE_integer("calibration_images", 50, "int8 calibration images.")
flags.DEFINE_integer("verify_images", 20, "Images for agreement.")
flags.DEFINE_string("weights", None, "VGG16 weights (name or file).")
flags.DEFINE_string("data_dir", None, "Cache of the built-in dataset.")


class PeakRSS:
    """Samples this process's resident memory in a thread."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f))
                   for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)


def _latency(fn, images, repeats=5):
    fn(images[0])
    start = time.perf_counter()
    for i in range(repeats):
        fn(images[i % len(images)])
    return (time.perf_counter() - start) / repeats


def main(argv):
    del argv
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras_vgg.VGG16(weights=FLAGS.weights)
    if FLAGS.weights is None:
        rng = np.random.RandomState(0)
        for layer in model.layers:
            values = layer.get_weights()
            if values:
                kernel, bias = values
                fan_in = int(np.prod(kernel.shape[:-1]))
                layer.set_weights([
                    rng.normal(0, np.sqrt(2 / fan_in), kernel.shape)
                    .astype("float32"), np.zeros_like(bias)])
    source = common.load_export_model(model, q=224)
    pixel = tflite.pixel_model(source)
    images = calibration.calibration_images("builtin", "validation",
                                       FLAGS.data_dir, 256, 224,
                                       FLAGS.verify_images - 1)
    photo = pipelines_demo.load_rescaled(pipelines_demo.IMAGE, 224).numpy()
    top, left = (photo.shape[0] - 224) // 2, (photo.shape[1] - 224) // 2
    images = np.concatenate([images, photo[None, top:top + 224,
                                           left:left + 224]])
    calibration_set = calibration.calibration_images(
        "builtin", "train", FLAGS.data_dir, 256, 224,
        FLAGS.calibration_images)
    reference = pixel.predict(images, batch_size=8, verbose=0)

    rows = []
    keras_lat = _latency(lambda x: pixel(x[None], training=False), images)
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = os.path.join(tmp, "vgg16.keras")
        model.save(keras_path)
        float_size = _size(keras_path)
        rows.append(("Keras (.keras)", f"{float_size / 1e6:.0f}", "1.00",
                     f"{1000 * keras_lat:.0f}", "-", "-", "-", "1.000",
                     "0"))
        start = time.perf_counter()
        with PeakRSS() as mem:
            sm_dir = os.path.join(tmp, "sm")
            saved_model.export_saved_model(source, sm_dir, flip=False)
        sm_time = time.perf_counter() - start
        loaded = tf.saved_model.load(sm_dir)
        fn = loaded.signatures["predict_images"]
        sm_probs = np.concatenate([fn(tf.constant(images[i:i + 1]))[
            "probabilities"].numpy() for i in range(len(images))])
        sm_lat = _latency(lambda x: fn(tf.constant(x[None])), images)
        sm_agree = np.mean(sm_probs.argmax(1) == reference.argmax(1))
        rows.append(("SavedModel (dense, no flip)",
                     f"{_size(sm_dir) / 1e6:.0f}",
                     f"{_size(sm_dir) / float_size:.2f}",
                     f"{1000 * sm_lat:.0f}", "-", f"{sm_time:.0f}",
                     f"{mem.peak / 1e9:.1f}",
                     f"{sm_agree:.3f}",
                     f"{np.abs(sm_probs - reference).max():.2e}"))
        for quantize in ("none", "fp16", "dynamic", "int8"):
            start = time.perf_counter()
            with PeakRSS() as mem:
                flat = litert.convert(
                    pixel, quantize,
                    calibration_set if quantize == "int8" else None,
                    int8_io=quantize == "int8")
            seconds = time.perf_counter() - start
            lats = []
            for threads in (1, 2):
                lite = litert.LiteModel(model_content=flat,
                                        num_threads=threads)
                lats.append(_latency(lite.predict_one, images))
            got = lite.predict(images)
            label = quantize if quantize != "none" else "float32"
            rows.append((f"TFLite {label}",
                         f"{len(flat) / 1e6:.0f}",
                         f"{len(flat) / float_size:.2f}",
                         f"{1000 * lats[1]:.0f}", f"{1000 * lats[0]:.0f}",
                         f"{seconds:.0f}", f"{mem.peak / 1e9:.1f}",
                         f"{np.mean(got.argmax(1) == reference.argmax(1)):.3f}",
                         f"{np.abs(got - reference).max():.2e}"))
            print(f"  {rows[-1]}", flush=True)
    print(f"\nVGG16 at 224x224, {len(images)} real images, "
          f"weights={FLAGS.weights or 'seeded He-normal'}:")
    print(format_table(["format", "MB", "size vs Keras",
                        "latency ms (2 thr)", "latency ms (1 thr)",
                        "convert s", "peak RSS GB", "top-1 agreement",
                        "max |Δp|"], rows))


if __name__ == "__main__":
    entry.run(main, __name__)
