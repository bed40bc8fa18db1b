"""Class score maps of dense evaluation, drawn over the image.

    python -m pipelines.scoremap IMAGE --model=runs/a --output=out.png \\
        [--q=448] [--top=3] [--dense_stride=16]

The fully convolutional network (section 3.2) gives, at every position of
its score map, the classifier's softmax on one crop x crop window of the
image rescaled to Q (one position per 32 pixels for VGG; per 16 or 8 with
`--dense_stride`, the last pools at both offsets).  The figure shows
the rescaled image, then for each of the `top` classes of dense evaluation
(softmax of the spatially averaged scores, averaged with the flipped image)
the image with that class's per-position probability overlaid as a heatmap,
each position drawn at the centre of its window.

Class names: the run's training_config.json or class_names.txt, else the
ImageNet names for a 1000-class model, else the class numbers.

Example:
>>> fig = score_map_figure("runs/demo", "pipelines/data/grace_hopper.jpg")
>>> fig.savefig("grace_hopper_scores.png")
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_vgg import atomic
from keras_vgg import runs
from keras_vgg.fully_conv import STRIDE
from pipelines import entry
from pipelines import protocols as protocol_lib


def load_image(path):
    """RGB pixels, float32 (H, W, 3), of an image file (JPEG, PNG, GIF,
    BMP, WebP)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No image file at {path!r}.")
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                   expand_animations=False)
    except tf.errors.OpError as e:
        raise ValueError(f"Cannot decode the image {path!r}: "
                         f"{e.message}") from e
    return tf.cast(image, tf.float32).numpy()


def score_maps(loaded, image, q, flip=True, stride=STRIDE):
    """Per-position probabilities and dense-evaluation probabilities, with
    a score map of `stride` (32, 16, 8).

    Returns:
        (score_map (H', W', classes) per-position softmax of the image
        rescaled to Q, probabilities (classes,) of the `dense` protocol,
        the rescaled raw image (H, W, 3), (stride, window) of the map).
    """
    fcn = loaded.fully_convolutional(True, stride, "--dense_stride")
    # The pre-softmax score map: what the averaged network averages.
    scores = keras.Model(fcn.inputs, fcn.get_layer("score_average").input)
    q = runs.check_test_scale(q, loaded.crop, f"model {loaded.name!r}")
    rescaled = protocol_lib.rescale(image, q)
    x = protocol_lib.preprocess(rescaled, loaded.preprocessing)
    logits = protocol_lib.predict(scores, x)[0].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    score_map = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    probabilities = protocol_lib.dense(fcn, image, q, flip,
                                       loaded.preprocessing)[0]
    geometry = (protocol_lib.score_map_geometry(fcn)
                or (loaded.crop, loaded.crop))
    return score_map, probabilities, rescaled[0].numpy(), geometry


def score_map_figure(model, image_path, q=None, top=3, preprocessing=None,
                     class_names=None, flip=True, stride=STRIDE):
    """A matplotlib Figure (Agg canvas) of the dense class score maps of the
    `top` classes over the image.

    Args:
        model: a run directory, `.keras` path, Keras classifier (with its
            Flatten/Dense head and softmax) or `keras_vgg.runs.Run`.
        image_path: the image file.
        q: test scale Q; default `Run.figure_scale`: the larger of the run's
            own Q and twice its crop.
        top: how many classes to draw.
        preprocessing: override the run's preprocessing mode.
        class_names: override the class names.
        flip: the label probabilities average the flipped image (dense).
        stride: input pixels between score-map positions: 32 (the
            network's own), 16 or 8 (see `keras_vgg.fully_convolutional`).

    Returns:
        matplotlib.figure.Figure; `fig.savefig("out.png")` writes it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    loaded = runs.load_classifier(model, preprocessing=preprocessing)
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"`top` must be a positive int. Received: {top!r}")
    q = loaded.with_q(loaded.figure_scale if q is None else q,
                      "q").test_scale
    image = load_image(image_path)
    score_map, probabilities, rescaled, (stride, window) = score_maps(
        loaded, image, q, flip, stride)
    names = (list(class_names) if class_names is not None
             else loaded.class_names
             or [str(i) for i in range(loaded.num_classes)])
    classes = np.argsort(-probabilities, kind="stable")[:top]

    height, width = rescaled.shape[:2]
    rows, cols = score_map.shape[:2]
    half = stride / 2
    # Position (i, j) scores the window x window box at (stride * i,
    # stride * j) of the rescaled image: its cell, stride wide, is centred
    # on that window's centre (stride * i + window / 2, ...).
    extent = (window / 2 - half, window / 2 + stride * (cols - 1) + half,
              window / 2 + stride * (rows - 1) + half, window / 2 - half)
    panels = len(classes) + 1
    fig = Figure(figsize=(3.2 * panels, 3.4 * height / width + 0.8),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    pixels = np.clip(rescaled / 255.0, 0, 1)
    axes[0].imshow(pixels)
    axes[0].set_title(f"Q={q}: {height}x{width}\nscore map {rows}x{cols}"
                      + (f", stride {stride}" if stride != STRIDE else ""),
                      fontsize=9)
    heat = None
    for ax, c in zip(axes[1:], classes):
        ax.imshow(pixels)
        heat = ax.imshow(score_map[:, :, c], cmap="inferno", alpha=0.55,
                         vmin=0.0, vmax=1.0, extent=extent,
                         interpolation="bilinear")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        name = names[c] if c < len(names) else str(c)
        ax.set_title(f"{name}: {probabilities[c]:.1%}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if heat is not None:
        fig.colorbar(heat, ax=list(axes[1:]), shrink=0.8,
                     label="probability at each position")
    model_name = loaded.name
    if os.path.basename(model_name) == "model.keras":  # a run directory
        model_name = os.path.dirname(model_name)
    fig.suptitle(f"{os.path.basename(os.fspath(image_path))} - "
                 f"{os.path.basename(model_name)}", fontsize=10)
    return fig


# -- command line -----------------------------------------------------------

def define_flags(flag_values=None):
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string("model", None, "Trained model: a .keras file or a "
                        "training run directory.", flag_values=fv)
    flags.DEFINE_string("output", "scoremap.png", "The PNG to write.",
                        flag_values=fv)
    flags.DEFINE_integer("q", None, "Test scale Q; default the larger of "
                         "the run's test scale and twice its crop (a map of "
                         "several positions).", flag_values=fv)
    flags.DEFINE_integer("top", 3, "Classes to draw.", flag_values=fv)
    flags.DEFINE_enum("preprocessing", None, ["caffe", "torch", "none"],
                      "Override the model's preprocessing.", flag_values=fv)
    entry.define_dense_stride("the score-map positions", __name__, fv)
    return fv


def run_from_flags(fv, args):
    if len(args) != 1:
        raise ValueError("Give one IMAGE: python -m pipelines.scoremap IMAGE "
                         f"--model=... Received: {args}")
    if not fv.model:
        raise ValueError("Give --model (a .keras file or a training run "
                         "directory).")
    fig = score_map_figure(fv.model, args[0], q=fv.q, top=fv.top,
                           preprocessing=fv.preprocessing,
                           stride=fv.dense_stride)
    with atomic.atomic_path(fv.output) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    print(f"Score maps written to {fv.output}")
    return fv.output


def cli(argv):
    """The command line on `argv` (without the program name), with its own
    flag values."""
    from absl import flags

    fv = define_flags(flags.FlagValues())
    args = fv(["pipelines.scoremap"] + list(argv))
    return run_from_flags(fv, args[1:])


def main(argv):
    from absl import flags

    run_from_flags(flags.FLAGS, argv[1:])


def run():
    """The command line, as `python -m pipelines.scoremap` runs it; also the
    `vgg-scoremap` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
