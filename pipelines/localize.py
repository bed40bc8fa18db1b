"""Localisation with VGG box regressors: the paper's appendix A protocols.

- Central crop (Table 8): rescale to Q, central crop, the box of the
  ground-truth class; correct when its IoU with a ground-truth box is > 0.5.
- Dense (Table 9): the fully convolutional localiser on the whole image at
  every scale (its window grid centred: `keras_vgg.boxes.centered_grid`)
  gives one box per
  score-map position (per class for PCR); each
  box is rated by the classification network's class score at the same
  position and scale; the boxes of all positions, scales and models are
  unioned, then merged greedily (OverFeat: `keras_vgg.boxes.greedy_merge`).
  `--dense_stride=16` or 8 gives a position every 16 or 8 pixels (the
  last pools at both offsets: `keras_vgg.fully_convolutional`), for the
  boxes and their ratings alike.
  Reported: the error with the ground-truth class, and the top-5 error (the
  ground-truth class among the classifier's five best, with a box of IoU
  > 0.5).

    python -m pipelines.localize IMAGE --model=runs/loc --classifier=runs/cls \\
        --output=boxes.png
    python -m pipelines.evaluate --task=localisation --model=runs/loc \\
        --classifier=runs/cls --dataset=builtin

Boxes: the localiser predicts (cx, cy, w, h) normalised to its input window;
they are turned into corners normalised to the whole image.  Score-map
position (i, j) sees the window starting at (stride*i, stride*j) of the
covered part of the rescaled image (stride 32: five 2x2 pools; 16 or 8
with pooling offsets), of the training crop's size.
"""

import time

import numpy as np
import tensorflow as tf

from keras_vgg import atomic
from keras_vgg import boxes as box_lib
from keras_vgg import runs
from keras_vgg.fully_conv import STRIDE
from pipelines import entry
from pipelines import protocols as protocol_lib
from pipelines import sources


def center_crop_box(localizer, image, class_index):
    """The central-crop protocol's box (image-normalised corners) for one
    raw RGB image and a class."""
    q, crop = localizer.test_scale, localizer.crop
    x = protocol_lib.rescale(image, q)
    h, w = int(x.shape[1]), int(x.shape[2])
    top, left = (h - crop) // 2, (w - crop) // 2
    x = protocol_lib.preprocess(x[:, top:top + crop, left:left + crop, :],
                     localizer.preprocessing)
    out = np.asarray(localizer.model(x, training=False))[0]
    box = box_lib.select_class_boxes(out[None], [class_index],
                                     localizer.regression)[0]
    corners = box_lib.centers_to_corners(box) * crop + [top, left, top, left]
    return box_lib.to_normalized(corners, h, w)


def dense_boxes(localizers, classifier_fcns, image, scales, classes,
                preprocessing="caffe", flip=False, stride=STRIDE):
    """Dense protocol: for each class in `classes`, the boxes of every
    position, scale and model with their class scores, merged greedily.

    Args:
        localizers: localiser `keras_vgg.runs.Run`s (their boxes are
            unioned).
        classifier_fcns: fully convolutional classifiers (average=False,
            score maps of `stride`) whose per-position softmax rates the
            boxes (averaged over them).
        image: raw RGB pixels (H, W, 3).
        scales: test scales Q.
        classes: class indices to localise.
        flip: also the boxes of the mirrored image (mirrored back), rated
            by the classifier on the mirrored image.
        stride: input pixels between score-map positions (32, 16, 8): the
            localisers' fully convolutional networks are made with it.

    Returns:
        {class: (merged corner boxes (M, 4), merged scores (M,))}.
    """
    collected = {c: ([], []) for c in classes}
    for q in scales:
        rescaled = protocol_lib.rescale(image, q)
        h, w = int(rescaled.shape[1]), int(rescaled.shape[2])
        crop = localizers[0].crop
        top, left, rows, cols = box_lib.centered_grid(h, w, crop, stride)
        covered = np.asarray(rescaled)[:, top:top + rows, left:left + cols]
        # Corners normalised to the covered part -> to the whole image.
        scale = np.array([rows, cols, rows, cols]) / [h, w, h, w]
        shift = np.array([top, left, top, left]) / [h, w, h, w]
        views = [(covered, False)]
        if flip:
            views.append((covered[:, :, ::-1], True))
        for x, mirrored in views:
            scores = None
            for fcn in classifier_fcns:
                s = protocol_lib.predict(
                    fcn, protocol_lib.preprocess(x, preprocessing))[0]
                scores = s if scores is None else scores + s
            scores = scores / len(classifier_fcns)
            for loc in localizers:
                box_map = protocol_lib.predict(
                    loc.fully_convolutional(stride=stride),
                    protocol_lib.preprocess(x, loc.preprocessing))[0]
                if box_map.shape[:2] != scores.shape[:2]:
                    raise ValueError(
                        f"Localiser {loc.name!r} and the classifier give "
                        f"score maps of {box_map.shape[:2]} and "
                        f"{scores.shape[:2]}: they need the same input "
                        "window (training crop).")
                for c in classes:
                    # SCR: one box per position; PCR: one per class.
                    per_class = box_map.reshape(box_map.shape[:2] + (-1, 4))
                    boxes = per_class[:, :, 0 if loc.regression == "scr"
                                      else c]
                    corners = box_lib.window_corners(
                        boxes[None], (rows, cols), loc.crop, stride)[0]
                    if mirrored:
                        corners = box_lib.mirror_corners(corners)
                    corners = corners * scale + shift
                    collected[c][0].append(corners.reshape(-1, 4))
                    collected[c][1].append(scores[..., c].reshape(-1))
    return {c: box_lib.greedy_merge(np.concatenate(b), np.concatenate(s))
            for c, (b, s) in collected.items()}


def _hit(box, truth):
    truth = np.asarray(truth).reshape(-1, 4)
    truth = truth[(truth[:, 2] > truth[:, 0]) & (truth[:, 3] > truth[:, 1])]
    return bool(len(truth)) and bool(np.any(box_lib.iou(box[None], truth)
                                            > 0.5))


def _matched_source(source, models, dataset):
    """`source` with its labels as the class indices the localisers and
    classifiers share (`sources.match_classes`, by name); ValueError when
    two models order their classes differently."""
    named = [m for m in models if m.class_names]
    for m in named[1:]:
        if m.class_names != named[0].class_names:
            raise ValueError(
                f"{named[0].name!r} and {m.name!r} list their classes "
                f"differently ({named[0].class_names[:5]}... and "
                f"{m.class_names[:5]}...): box and class indices would not "
                "agree.")
    counts = {m.num_classes for m in models if m.num_classes}
    if len(counts) > 1:
        raise ValueError("The localisers and classifiers have different "
                         "class counts: " + ", ".join(
                             f"{m.name!r}: {m.num_classes}" for m in models
                             if m.num_classes))
    return sources.match_classes(
        source, named[0].class_names if named else None,
        counts.pop() if counts else None, f"The dataset {dataset!r}",
        "the model(s)")


def evaluate_localization(localizers, classifiers=(), dataset="builtin",
                          protocol="center", scales=None, data_dir=None,
                          split="validation", max_images=None, flip=False,
                          dense_stride=STRIDE, seed=0):
    """Localisation error of `localizers` on a dataset with boxes.

    Args:
        localizers: run dirs / .keras paths / `keras_vgg.runs.Run`s.
        classifiers: classification run dirs or .keras (needed for
            "dense", whose boxes they rate, and for the top-5 error).
        protocol: "center" (Table 8, ground-truth class) or "dense"
            (Table 9).
        scales: test scales for "dense" (default: each localiser's Q).
        flip: "dense": add the mirrored image's boxes (and average the
            classifier's top-5 over the flip).
        dense_stride: input pixels between the positions of the dense
            protocols (the classifier's top-5 and the dense boxes): 32, 16
            or 8 (see `keras_vgg.fully_convolutional`).
        max_images: localise N examples drawn from every class alike
            (`sources.stratified_sample`, from `seed`; undecodable images
            and images without boxes are included in the N and left out);
            the result then holds `class_counts`.

    Returns:
        dict with `protocol`, `scales`, `images`, `localization_error`
        (ground-truth class) and, with classifiers, `top5_error`, plus
        `images_per_second`, `dataset`, `split` (and a folder's
        `split_images` and `dataset_images`: `sources.split_counts`).
    """
    if protocol not in ("center", "dense"):
        raise ValueError(f"Unknown localisation `protocol`={protocol!r}; "
                         "expected 'center' or 'dense'.")
    locs = [runs.load_localizer(loc) for loc in localizers]
    if not locs:
        raise ValueError("Give at least one localiser (--model).")
    clfs = [runs.load_classifier(c, "--classifier") for c in classifiers]
    if protocol == "dense" and not clfs:
        raise ValueError("The dense protocol rates boxes with a "
                         "classification network: give --classifier.")
    fcns = [c.fully_convolutional(stride=dense_stride, what="--dense_stride")
            for c in clfs]
    averaged = [c.fully_convolutional(True, dense_stride) for c in clfs]
    for loc in locs if protocol == "dense" else ():  # errors early
        loc.fully_convolutional(stride=dense_stride, what="--dense_stride")
    scales = [int(q) for q in (scales or sorted({loc.test_scale
                                                     for loc in locs}))]
    if max_images is not None and max_images < 1:
        raise ValueError(f"`max_images` must be >= 1. Received: "
                         f"max_images={max_images!r}")
    raw = sources.load_source(dataset, split, data_dir=data_dir,
                              shuffle_files=False)
    # Refuses other classes before any image is read.
    source = _matched_source(raw, locs + clfs, dataset)
    class_counts = None
    if max_images is not None:
        # Sampled among the dataset's own classes, before they become the
        # models' (of which it may hold only some).
        sample, class_counts = sources.stratified_sample(raw, max_images,
                                                         seed)
        source = _matched_source(sample, locs + clfs, dataset)
        class_counts = sources.named_class_counts(class_counts,
                                                  raw.class_names)
    counted = wrong = wrong5 = 0
    start = time.perf_counter()
    # An element that fails (a folder image whose size cannot be read for
    # its pixel boxes) is left out, as undecodable images are below.
    for example in source.dataset.ignore_errors():
        try:
            image = tf.io.decode_image(example["encoded"], channels=3,
                                       expand_animations=False).numpy()
        except tf.errors.InvalidArgumentError:
            continue
        truth = example["bbox"].numpy()
        if not len(truth):
            continue
        label = int(example["label"].numpy())
        top5 = []
        if clfs:
            probs = np.mean([protocol_lib.dense(f, image, q, flip=flip,
                                     preprocessing=c.preprocessing)[0]
                             for c, f in zip(clfs, averaged)
                             for q in scales], axis=0)
            top5 = list(np.argsort(-probs)[:5])
        if protocol == "center":
            guesses = {c: np.mean([center_crop_box(loc, image, c)
                                   for loc in locs], axis=0)
                       for c in set(top5) | {label}}
        else:
            merged = dense_boxes(locs, fcns, image, scales,
                                 sorted(set(top5) | {label}),
                                 clfs[0].preprocessing, flip=flip,
                                 stride=dense_stride)
            guesses = {c: m[0][0] for c, m in merged.items()}
        counted += 1
        wrong += not _hit(guesses[label], truth)
        if clfs:
            wrong5 += not (label in top5 and _hit(guesses[label], truth))
    if not counted:
        raise ValueError(f"No image with a box in {dataset!r} ({split}).")
    result = {"protocol": protocol, "scales": scales, "images": counted,
              "flip": bool(flip and protocol == "dense"),
              "dense_stride": int(dense_stride),
              "localization_error": wrong / counted,
              "images_per_second": counted / (time.perf_counter() - start),
              "dataset": dataset, "split": split,
              **sources.split_counts(raw)}
    if clfs:
        result["top5_error"] = wrong5 / counted
    if class_counts is not None:
        result["class_counts"] = class_counts
    return result


# Classes under this probability are left out of the figure (the best one
# is always drawn): below 5% a box is a guess for a class the classifier
# rules out, and its label would cover the boxes of the likely ones.
MIN_FIGURE_PROBABILITY = 0.05


def localization_figure(localizer, classifier, image_path, scales=None,
                        top=3, flip=True,
                        min_probability=MIN_FIGURE_PROBABILITY,
                        stride=STRIDE):
    """A matplotlib Figure: the image with the dense protocol's best box for
    each of the classifier's `top` classes, labelled with class and score
    (`flip`: the mirrored image's boxes and scores too).

    Classes under `min_probability` are left out, except the best one; the
    best box and its label are drawn last, on top of the others.  The title
    names the image and the two models.  `stride`: the dense protocol's
    (32, 16, 8: see `dense_boxes`).
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    del matplotlib
    loc = runs.load_localizer(localizer)
    clf = runs.load_classifier(classifier, "--classifier")
    image = tf.io.decode_image(tf.io.read_file(image_path), channels=3,
                               expand_animations=False).numpy()
    scales = scales or [loc.test_scale]
    scorer = clf.fully_convolutional(stride=stride, what="--dense_stride")
    loc.fully_convolutional(stride=stride, what="--dense_stride")
    averaged = clf.fully_convolutional(True, stride)
    probs = np.mean([protocol_lib.dense(averaged, image, q, flip=flip,
                             preprocessing=clf.preprocessing)[0]
                     for q in scales], axis=0)
    ranked = np.argsort(-probs, kind="stable")[:top]
    best = [int(c) for rank, c in enumerate(ranked)
            if rank == 0 or probs[c] >= min_probability]
    merged = dense_boxes([loc], [scorer], image, scales, best,
                         clf.preprocessing, flip=flip, stride=stride)
    names = clf.class_names or [str(i) for i in range(len(probs))]
    fig = Figure(figsize=(6, 6 * image.shape[0] / image.shape[1] + 0.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image)
    ax.axis("off")
    h, w = image.shape[:2]
    colours = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00"]
    # Lowest rank first, so the best box and label end up on top.
    for rank, c in reversed(list(enumerate(best))):
        y0, x0, y1, x1 = box_lib.to_pixels(merged[c][0][0], h, w)
        colour = colours[rank % len(colours)]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                               edgecolor=colour, linewidth=2))
        ax.text(x0, max(y0 - 4, 8), f"{names[c]} {probs[c]:.2f}",
                color="white", backgroundcolor=colour, fontsize=9)
    ax.set_title(f"{_base_name(image_path)}: localiser "
                 f"{_base_name(loc.name)}, classifier "
                 f"{_base_name(clf.name)}, Q={'/'.join(map(str, scales))}"
                 + (f", stride {stride}" if stride != STRIDE else ""),
                 fontsize=9)
    fig.tight_layout()
    return fig


def _base_name(path):
    """A run's or file's short name: "runs/loc/model.keras" -> "loc"."""
    path = str(path).rstrip("/")
    if path.endswith("/model.keras"):
        path = path[:-len("/model.keras")]
    return path.rsplit("/", 1)[-1]


def main(argv):
    from absl import flags

    f = flags.FLAGS
    if len(argv) != 2:
        from absl import app

        raise app.UsageError("give exactly one IMAGE")
    fig = localization_figure(f.model, f.classifier, argv[1],
                              scales=[int(q) for q in f.scales] or None,
                              top=f.top, flip=f.flip,
                              min_probability=f.min_probability,
                              stride=f.dense_stride)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic.atomic_path(f.output) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    print(f"Boxes written to {f.output}")


def run():
    """The command line, as `python -m pipelines.localize` runs it; also the
    `vgg-localize` console script."""
    from absl import flags

    flags.DEFINE_string("model", None, "Localiser run dir or .keras.")
    flags.DEFINE_string("classifier", None,
                        "Classification run dir or .keras rating the boxes.")
    flags.DEFINE_string("output", "localization.png", "PNG to write.")
    flags.DEFINE_list("scales", [], "Test scales Q (default: the run's).")
    flags.DEFINE_integer("top", 3, "Classes to draw.")
    flags.DEFINE_float("min_probability", MIN_FIGURE_PROBABILITY,
                       "Leave out classes under this probability (the best "
                       "one is always drawn).")
    flags.DEFINE_bool("flip", True, "Add the mirrored image's boxes and "
                      "scores (--noflip: not).")
    entry.define_dense_stride("the dense protocol's positions", __name__)
    flags.mark_flags_as_required(["model", "classifier"])
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
