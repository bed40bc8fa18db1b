"""Evaluates trained models with the paper's test protocols (section 3.2).

    python -m pipelines.evaluate --model=runs/a --model=runs/b/model.keras \\
        --dataset=builtin --protocol=single,dense,multicrop,combined \\
        [--scales=256,384,512] [--noflip] [--output=results.json] \\
        [--max_images=N] [--dense_stride=16]

Prints a table like the paper's Tables 3-6 (protocol, test scales, top-1 and
top-5 error, GMACs per image, images/s) and optionally writes the same as
JSON: a list with one entry per protocol,

    {"protocol": "dense", "scales": [256, 384, 512],
     "top1_error": 0.24, "top5_error": 0.07,       # fractions, not percent
     "gmacs_per_image": 312.4, "images_per_second": 1.9,
     "images": 150, "images_skipped": 0,
     "models": [...], "dataset": "builtin", "split": "validation",
     "flip": true, "dense_stride": 32}    # flip: dense, multicrop and
                                           # combined; dense_stride: dense
                                           # and combined only

A folder of class sub-folders (no train/val split) holds out a tenth of
each class as its validation split: its results add "split_images" and
"dataset_images" (the split's and the folder's image counts) and the table
says "N of M images (validation split)"; `--split=all` evaluates every
image of the folder.

Protocols (see `pipelines.protocols`):

    single      central crop at each Q (no flip)
    dense       fully convolutional network on the whole image (+ flip);
                --dense_stride=16 or 8 averages a finer score map (the last
                pools at both offsets: `keras_vgg.fully_convolutional`)
    multicrop   5x5 grid of crops (+ flips): 50 views per scale
    combined    the average of dense and multicrop

With several Q every protocol averages its softmax over them (multi-scale
evaluation); with several `--model`s their softmax is averaged (ensemble).
Scales default, per model, to what its `training_config.json` says: for
"single" Q = S (fixed S) or (Smin + Smax) / 2 (jittered S); for the others
{S - 32, S, S + 32} or {Smin, (Smin + Smax) / 2, Smax}.  A model without a
training config is taken as trained at S = 256 (for a 224 input); the
rules live in `keras_vgg.runs`.

Cost: "GMACs/image" counts the Conv/Dense multiply-accumulates of every view
each protocol runs (`keras_vgg.cost.count_macs` at the actual input sizes,
summed over scales, flips and models; "combined" is dense + multicrop),
averaged over the images.  "images/s" divides the images by the time spent
in the protocol's model calls, rescaling and preprocessing (decoding
excluded); shared work is timed once ("combined" = dense + multicrop time).

Images are evaluated one per step: the dense network's output depends on
the image's size and borders, so images of different sizes are never
padded into one batch.  Each network runs as one TensorFlow graph traced
once for every input size (`protocols.compiled`); the dense protocol runs
the image and its flip as one batch, and its FC head as matrix products
(`keras_vgg.fully_conv.FullyConnectedConv2D`).  Undecodable images are
skipped and counted (`images_skipped`); a dataset with no decodable image
is an error.  The dataset's labels are matched to the models' classes by
name (folder, tfds or class_names.txt names against the run's), whatever
order either lists them in (`pipelines.sources.class_mapping`).
"""

import json
import time

import numpy as np
import tensorflow as tf

from keras_vgg import atomic
from keras_vgg import cost
from keras_vgg import fully_conv
from keras_vgg import runs
from pipelines import augment
from pipelines import entry
from pipelines import localize
from pipelines import protocols as protocol_lib
from pipelines import sources
from pipelines.report import format_table

PROTOCOLS = ("single", "dense", "multicrop", "combined")
_ALIASES = {"single": "single", "single_crop": "single",
            "single-crop": "single", "central": "single",
            "dense": "dense",
            "multicrop": "multicrop", "multi_crop": "multicrop",
            "multi-crop": "multicrop",
            "combined": "combined", "dense+multicrop": "combined"}
# What each protocol runs: combined reuses dense and multicrop.
_PARTS = {"single": ("single",), "dense": ("dense",),
          "multicrop": ("multicrop",), "combined": ("dense", "multicrop")}


# The settings each protocol part uses, recorded in its results.
_SETTINGS = {"single": (), "dense": ("flip", "dense_stride"),
             "multicrop": ("flip",)}


# -- arguments --------------------------------------------------------------

def parse_protocols(protocols):
    """Canonical protocol names from a list or a comma-separated string."""
    if isinstance(protocols, str):
        protocols = protocols.split(",")
    names = []
    for p in protocols:
        key = str(p).strip().lower()
        if key not in _ALIASES:
            raise ValueError(f"Unknown protocol {p!r}. Expected one of "
                             f"{list(PROTOCOLS)}.")
        if _ALIASES[key] not in names:
            names.append(_ALIASES[key])
    if not names:
        raise ValueError(f"No protocol given. Expected some of "
                         f"{list(PROTOCOLS)}.")
    return names


def _parse_scales(scales):
    if scales is None:
        return None
    if isinstance(scales, (int, np.integer)):
        scales = [scales]
    if isinstance(scales, str):
        scales = scales.split(",")
    out = []
    for q in scales:
        try:
            out.append(int(q))
        except (TypeError, ValueError):
            raise ValueError(f"Scales must be integers. Received: {q!r} in "
                             f"scales={scales!r}") from None
    if not out:
        raise ValueError("`scales` is empty.")
    return out


def scales_for(run, protocol, scales=None):
    """The test scales of `protocol` for one model: `scales`, or the run's
    (single: its single test scale; others: its multi-scale set)."""
    if scales is None:
        scales = run.scales(multi_scale=protocol != "single")
    return [runs.check_test_scale(q, run.crop, f"model {run.name!r}")
            for q in scales]


def topk_correct(probabilities, labels, k):
    """Per example, whether the label is among the k most probable classes
    (k capped at the number of classes: with fewer than 5 classes top-5 is
    always right).  Ties count in the label's favour: the rank of the label
    is the number of classes with a strictly higher probability.

    >>> topk_correct([[0.1, 0.6, 0.3]], [2], 1), topk_correct(..., 2)
    (array([False]), array([ True]))
    """
    p = np.asarray(probabilities)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    k = min(int(k), p.shape[-1])
    label_p = p[np.arange(len(labels)), labels]
    rank = np.sum(p > label_p[:, None], axis=-1)
    return rank < k


# -- evaluation -------------------------------------------------------------

def decode_example(example):
    """A source example -> (RGB uint8 image, label); fails on bytes that
    are no image (`augment.map_skipping_errors` skips and counts it)."""
    image = tf.io.decode_image(example["encoded"], channels=3,
                               expand_animations=False)
    image.set_shape([None, None, 3])
    return image, example["label"]


def _open_dataset(dataset, split, data_dir):
    """(`sources.Source`, name) of the `dataset` argument; a bare
    tf.data.Dataset is a source whose classes nothing names."""
    if isinstance(dataset, str):
        source = sources.load_source(dataset, split, data_dir=data_dir,
                                     shuffle_files=False)
        return source, dataset
    if isinstance(dataset, sources.Source):
        return dataset, "source"
    if isinstance(dataset, tf.data.Dataset):
        return sources.Source(dataset, None, None, None), "dataset"
    raise ValueError("`dataset` must be a spec string, a sources.Source or "
                     "a tf.data.Dataset of {'encoded', 'label', 'bbox'} "
                     f"examples. Received: {type(dataset).__name__}")


def _model_classes(loaded):
    """The class names (or None) and count the models of an ensemble share;
    ValueError when they differ (their probabilities are averaged class by
    class)."""
    counts = {m.num_classes for m in loaded}
    named = [m for m in loaded if m.class_names]
    if len(counts) > 1 or any(m.class_names != named[0].class_names
                              for m in named):
        raise ValueError("The models of an ensemble must have the same "
                         "classes in the same order; they have " + ", ".join(
                             f"{m.name!r}: {m.num_classes}"
                             + (f" {m.class_names[:5]}..." if m.class_names
                                else "") for m in loaded))
    return (named[0].class_names if named else None), counts.pop()


def _no_images_error(dataset_name, split, source, skipped):
    """The ValueError of an evaluation that decoded no image."""
    if not skipped:
        return ValueError(f"The dataset {dataset_name!r} ({split}) gave no "
                          "images.")
    sample = f" (e.g. {source.paths[0]!r})" if source.paths else ""
    return ValueError(
        f"The dataset {dataset_name!r} ({split}) gave no decodable image: "
        f"{skipped} skipped as undecodable{sample}.")


class _Cost:
    """MACs per view, cached by (model, input shape)."""

    def __init__(self):
        self._cache = {}

    def __call__(self, model, shape):
        key = (id(model), tuple(shape))
        if key not in self._cache:
            self._cache[key] = cost.count_graph_macs(model, shape)
        return self._cache[key]


def _run_part(part, run, image, q, flip, batch_size, macs,
              stride=fully_conv.STRIDE):
    """Probabilities (1, classes) and MACs of one protocol part, one model,
    one scale."""
    crop, mode = run.crop, run.preprocessing
    h, w = protocol_lib.rescaled_size(image.shape[0], image.shape[1], q)
    if part == "single":
        p = protocol_lib.single_crop(run.model, image, q, crop, mode,
                                     batch_size)
        return p, macs(run.model, (crop, crop, 3))
    if part == "multicrop":
        p = protocol_lib.multi_crop(run.model, image, q, crop, flip, mode,
                                    batch_size=batch_size)
        views = protocol_lib.GRID * protocol_lib.GRID * (2 if flip else 1)
        return p, views * macs(run.model, (crop, crop, 3))
    fcn = run.fully_convolutional(True, stride, "--dense_stride")
    p = protocol_lib.dense(fcn, image, q, flip, mode)
    return p, (2 if flip else 1) * macs(fcn, (h, w, 3))


def evaluate(models, dataset, protocols=PROTOCOLS, scales=None,
             data_dir=None, max_images=None, flip=True, split="validation",
             preprocessing=None, batch_size=50, verbose=0,
             dense_stride=fully_conv.STRIDE, seed=0):
    """Top-1/top-5 errors of `models` (an ensemble when several) under each
    protocol, with the cost of each.

    Args:
        models: one or a list of run directories, `.keras` paths, Keras
            classifiers or `keras_vgg.runs.Run`s.  Several: their softmax is
            averaged (an ensemble); they must have the same classes.
        dataset: a `pipelines.sources` spec ("builtin", "tfrecord:GLOB",
            "folder:DIR", a tfds name), a `Source`, or a tf.data.Dataset of
            {"encoded", "label", ...} examples.  Its labels are matched to
            the models' classes by name where both sides have names.
        protocols: names among "single", "dense", "multicrop", "combined"
            (list or comma-separated string).
        scales: the test scales Q for every protocol and model (averaged
            when several), or None for each model's defaults (see module
            doc).
        data_dir: the sources' data_dir (builtin cache, tfds).
        max_images: evaluate N examples drawn from every class alike
            (`sources.stratified_sample`, from `seed`; undecodable ones
            included in the N); the results then hold `class_counts`.
        flip: dense and multicrop also evaluate horizontal flips.
        split: the dataset split ("all": every image of a folder).
        preprocessing: override every model's preprocessing mode.
        batch_size: crops per model call (multicrop runs 50 per scale).
        verbose: print progress every `verbose` images (0: never).
        dense_stride: input pixels between the score-map positions that
            dense (and combined) average: 32 (the network's own), 16 or 8
            (its last one or two pools at both offsets; see
            `keras_vgg.fully_convolutional`).

    Returns:
        A list of result dicts, one per protocol (see module doc).

    Raises:
        ValueError: a missing or unreadable model, a model without a
            rewritable head (dense, combined), a `dense_stride` the models
            do not allow, Q smaller than the crop, an
            unknown protocol, models with different classes, a dataset with
            classes the models lack (classes are matched by name: see
            `sources.class_mapping`), or no decodable image.
    """
    names = parse_protocols(protocols)
    scales = _parse_scales(scales)
    if not isinstance(models, (list, tuple)):
        models = [models]
    if not models:
        raise ValueError("`models` is empty: give at least one model.")
    loaded = [runs.load_classifier(m, preprocessing=preprocessing)
              for m in models]
    class_names, num_classes = _model_classes(loaded)
    parts = sorted({part for n in names for part in _PARTS[n]})
    part_scales = {part: [scales_for(m, part, scales) for m in loaded]
                   for part in parts}
    if "dense" in parts:
        for m in loaded:  # a ValueError naming a bad model, early
            m.fully_convolutional(True, dense_stride, "--dense_stride")
    if max_images is not None and max_images < 1:
        raise ValueError(f"`max_images` must be >= 1. Received: "
                         f"max_images={max_images!r}")

    source, dataset_name = _open_dataset(dataset, split, data_dir)
    held_out = sources.split_counts(source)  # before a sample replaces it

    def matched(source):
        return sources.match_classes(
            source, class_names, num_classes, f"The dataset {dataset_name!r}",
            "the model(s)")

    examples = matched(source).dataset  # refuses other classes before reading
    class_counts = None
    if max_images is not None:
        # Sampled among the dataset's own classes, before they become the
        # model's (of which it may hold only some).
        sample, class_counts = sources.stratified_sample(source, max_images,
                                                         seed)
        examples = matched(sample).dataset
        class_counts = sources.named_class_counts(class_counts,
                                                  source.class_names)
    counter = augment.SkipCounter()
    decoded = augment.map_skipping_errors(examples, decode_example, counter,
                                          deterministic=True)
    decoded = decoded.prefetch(2)

    macs = _Cost()
    seconds = {part: 0.0 for part in parts}
    total_macs = {part: 0 for part in parts}
    correct = {n: [0, 0] for n in names}
    images = 0
    for image, label in decoded.as_numpy_iterator():
        image = image.astype(np.float32)
        probs = {}
        for part in parts:
            per_model = []
            start = time.perf_counter()
            for m, qs in zip(loaded, part_scales[part]):
                per_scale = []
                for q in qs:
                    p, n_macs = _run_part(part, m, image, q, flip,
                                          batch_size, macs, dense_stride)
                    per_scale.append(p)
                    total_macs[part] += n_macs
                per_model.append(protocol_lib.average(per_scale))
            probs[part] = protocol_lib.average(per_model)
            seconds[part] += time.perf_counter() - start
        for n in names:
            p = protocol_lib.average([probs[part] for part in _PARTS[n]])
            correct[n][0] += int(topk_correct(p, [label], 1)[0])
            correct[n][1] += int(topk_correct(p, [label], 5)[0])
        images += 1
        if verbose and images % verbose == 0:
            print(f"  {images} images", flush=True)
    if not images:
        raise _no_images_error(dataset_name, split, source, counter.count)

    results = []
    for n in names:
        used = _PARTS[n]
        model_scales = part_scales[used[-1]]
        same = all(s == model_scales[0] for s in model_scales)
        spent = sum(seconds[part] for part in used)
        results.append({
            "protocol": n,
            "scales": (model_scales[0] if same else
                       {m.name: s for m, s in zip(loaded, model_scales)}),
            "top1_error": (1.0 - correct[n][0] / images) if images else None,
            "top5_error": (1.0 - correct[n][1] / images) if images else None,
            "gmacs_per_image": (sum(total_macs[part] for part in used)
                                / images / 1e9) if images else None,
            "images_per_second": images / spent if spent > 0 else None,
            "images": images,
            "images_skipped": counter.count,
            "top5_k": min(5, num_classes),
            "models": [m.name for m in loaded],
            "dataset": dataset_name,
            "split": split,
            **held_out,
        })
        # Only the settings the protocol uses: a single crop is neither
        # flipped nor dense.
        settings = {"flip": bool(flip), "dense_stride": int(dense_stride)}
        results[-1].update({k: settings[k] for part in used
                            for k in _SETTINGS[part]})
        if class_counts is not None:
            results[-1]["class_counts"] = class_counts
    return results


def format_results(results):
    """The results as a table like the paper's (errors in percent)."""
    def number(value, spec):
        return "-" if value is None else format(value, spec)

    def scales(value):
        if isinstance(value, dict):
            return "; ".join(",".join(map(str, s)) for s in value.values())
        return ",".join(map(str, value))

    def protocol(r):
        stride = r.get("dense_stride", fully_conv.STRIDE)
        if r["protocol"] in ("dense", "combined") and \
                stride != fully_conv.STRIDE:
            return f"{r['protocol']} (stride {stride})"
        return r["protocol"]

    rows = [(protocol(r), scales(r["scales"]),
             number(None if r["top1_error"] is None
                    else 100 * r["top1_error"], ".2f"),
             number(None if r["top5_error"] is None
                    else 100 * r["top5_error"], ".2f"),
             number(r["gmacs_per_image"], ".4g"),
             number(r["images_per_second"], ".2f")) for r in results]
    table = format_table(["protocol", "scales Q", "top-1 err %",
                          "top-5 err %", "GMACs/image", "images/s"], rows)
    if results:
        r = results[0]
        table += (f"\n{r['images']} images ({r['images_skipped']} "
                  f"undecodable skipped), {len(r['models'])} model(s)"
                  + ("" if all(x.get("flip", True) for x in results)
                     else ", no flips")
                  + (f", top-5 = top-{r['top5_k']}" if r["top5_k"] < 5
                     else ""))
        table += footnotes(r)
    return table


def footnotes(result):
    """The lines under a results table, each after a newline: which part of
    a folder was scored ("N of M images (validation split)",
    `sources.split_counts`) and the classes of a `max_images` sample."""
    lines = ""
    if "dataset_images" in result:
        lines += (f"\n{result['split_images']} of "
                  f"{result['dataset_images']} images ({result['split']} "
                  f"split) of {result['dataset']}: --split=all evaluates "
                  "every image of the folder.")
    if result.get("class_counts"):
        counts = result["class_counts"]
        lines += ("\nSampled from every class: " + sources.
                  format_class_counts(list(counts.values()), list(counts)))
    return lines


def write_json(results, path):
    atomic.atomic_write_file(path, json.dumps(results, indent=2))


# -- command line -----------------------------------------------------------

def define_flags(flag_values=None):
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_multi_string(
        "model", None, "Trained model: a .keras file or a training run "
        "directory.  Repeat for an ensemble.", flag_values=fv)
    flags.DEFINE_string("dataset", "builtin",
                        "builtin, tfrecord:GLOB, folder:DIR or a tfds name.",
                        flag_values=fv)
    flags.DEFINE_string("split", "validation", "Dataset split: train, "
                        "validation, all (every image of a folder:DIR: a "
                        "folder of class sub-folders holds out a tenth as "
                        "its validation split), or a tfds split string.",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None,
                        "tfds data_dir, or the built-in dataset's cache.",
                        flag_values=fv)
    flags.DEFINE_list("protocol", list(PROTOCOLS),
                      f"Protocols, some of {list(PROTOCOLS)}.",
                      flag_values=fv)
    flags.DEFINE_list("scales", None,
                      "Test scales Q (averaged when several); default from "
                      "each model's training_config.json.", flag_values=fv)
    flags.DEFINE_boolean("flip", True,
                         "Dense and multicrop also evaluate horizontal "
                         "flips; localisation: the dense protocol adds the "
                         "flipped image's boxes (--noflip: not).",
                         flag_values=fv)
    flags.DEFINE_string("output", None, "Write the results as JSON here.",
                        flag_values=fv)
    flags.DEFINE_integer("max_images", None,
                         "Evaluate N images only, drawn from every class "
                         "alike (seeded).", flag_values=fv)
    flags.DEFINE_enum("preprocessing", None, ["caffe", "torch", "none"],
                      "Override the models' preprocessing.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 50, "Crops per model call.",
                         flag_values=fv)
    flags.DEFINE_integer("verbose", 0, "Print progress every N images.",
                         flag_values=fv)
    entry.define_dense_stride(
        "the score-map positions of the dense protocol (classification) and "
        "of the dense localisation protocol", __name__, fv)
    flags.DEFINE_enum("task", "classification",
                      ["classification", "localization", "localisation"],
                      "localization (or localisation): --model are "
                      "localisers, evaluated with "
                      "--loc_protocol (see pipelines.localize).",
                      flag_values=fv)
    flags.DEFINE_multi_string(
        "classifier", None, "Localisation: classification runs that rate "
        "the dense boxes and give the top-5 classes.", flag_values=fv)
    flags.DEFINE_list("loc_protocol", ["center", "dense"],
                      "Localisation protocols: center (Table 8), dense "
                      "(Table 9).", flag_values=fv)
    return fv


def run_localization(fv):
    results = [localize.evaluate_localization(
        fv.model, fv.classifier or (), fv.dataset, protocol=p,
        scales=fv.scales, data_dir=fv.data_dir, split=fv.split,
        max_images=fv.max_images, flip=fv.flip,
        dense_stride=fv.dense_stride) for p in fv.loc_protocol]
    rows = [(r["protocol"] + (" +flip" if r["flip"] else ""),
             ",".join(map(str, r["scales"])),
             f"{100 * r['localization_error']:.2f}",
             f"{100 * r['top5_error']:.2f}" if "top5_error" in r else "-",
             r["images"]) for r in results]
    print(format_table(["protocol", "scales Q", "loc. error % (GT class)",
                        "top-5 loc. error %", "images"], rows)
          + footnotes(results[0]))
    if fv.output:
        write_json(results, fv.output)
        print(f"Results written to {fv.output}")
    return results


def run_from_flags(fv):
    """Runs what the parsed flags say; prints and returns the results."""
    if not fv.model:
        raise ValueError("Give at least one --model (a .keras file or a "
                         "training run directory).")
    if fv.task in ("localization", "localisation"):
        return run_localization(fv)
    results = evaluate(fv.model, fv.dataset, fv.protocol, scales=fv.scales,
                       data_dir=fv.data_dir, max_images=fv.max_images,
                       flip=fv.flip, split=fv.split,
                       preprocessing=fv.preprocessing,
                       batch_size=fv.batch_size, verbose=fv.verbose,
                       dense_stride=fv.dense_stride)
    print(format_results(results))
    if fv.output:
        write_json(results, fv.output)
        print(f"Results written to {fv.output}")
    return results


def cli(argv):
    """The command line on `argv` (without the program name), with its own
    flag values: `cli(["--model=runs/a", "--max_images=10"])`."""
    from absl import flags

    fv = define_flags(flags.FlagValues())
    fv(["pipelines.evaluate"] + list(argv))
    return run_from_flags(fv)


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")
    run_from_flags(flags.FLAGS)


def run():
    """The command line, as `python -m pipelines.evaluate` runs it; also the
    `vgg-evaluate` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
