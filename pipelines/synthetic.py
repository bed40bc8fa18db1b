"""The built-in dataset: generated shapes, so nothing has to be downloaded.

Five classes that a small CNN can only tell apart by looking at the shapes:

    0 circle    a filled disc
    1 square    a filled axis-aligned square
    2 triangle  a filled equilateral triangle at a random rotation
    3 cross     a filled plus sign (bars one third of its size thick)
    4 checker   a square patch of stripes or a checkerboard in two colours

Each image is an RGB JPEG whose sides are drawn independently from
[200, 500] px (so the pipeline's isotropic rescaling and cropping have real
work to do), on a background of a random solid colour plus a linear gradient
plus noise.  The object covers 20-60 % of the smaller side, at a random
position and in a random colour kept far from the background's, so colour
alone never gives the class away.  Its bounding box is recorded.

`write_builtin` stores the images as TFRecords in the ImageNet / TF Model
Garden layout, so `pipelines.sources` reads them with the same code that reads
ImageNet:

    image/encoded            JPEG bytes
    image/format             b"jpeg"
    image/height, image/width
    image/class/label        int64, 0-based
    image/class/text         the class name
    image/object/bbox/xmin|ymin|xmax|ymax   float lists in [0, 1]
    image/object/class/label int64 list (the image's label, once per box)

Example:
>>> from pipelines import synthetic
>>> path = synthetic.write_builtin("/tmp/builtin", num_train=50, num_val=10)
>>> sorted(p.name for p in path.iterdir())[:2]
['COMPLETE.json', 'class_names.txt']
"""

import io
import json
import math
import os
import pathlib
import shutil
import tempfile
import zlib

import numpy as np
from PIL import Image
from PIL import ImageDraw

CLASS_NAMES = ("circle", "square", "triangle", "cross", "checker")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "validation")
MARKER = "COMPLETE.json"
CLASS_NAMES_FILE = "class_names.txt"
# Bump when the drawing changes, so an old cache is regenerated rather than
# silently mixed with new code.
FORMAT_VERSION = 2
# Images per TFRecord shard: several shards let a reader interleave files.
_SHARD_SIZE = 256
_MIN_SIDE, _MAX_SIDE = 200, 500
_MIN_OBJECT, _MAX_OBJECT = 0.2, 0.6


def default_cache_dir():
    """`$KERAS_VGG_DATA` if set, else `~/.cache/keras_vgg/builtin`."""
    env = os.environ.get("KERAS_VGG_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path("~/.cache/keras_vgg/builtin").expanduser()


def _random_colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float32)


def _far_colour(rng, other, min_distance=120.0):
    """A random colour at least `min_distance` (RGB, L2) from `other`: the
    object must stay visible on its background whatever the draw."""
    for _ in range(100):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - other) >= min_distance:
            return colour
    # A colour's RGB complement is at least 221 away from a mid-grey and
    # further from anything else, so this always holds.
    return 255.0 - np.round(other)


def _background(rng, height, width):
    """A solid colour with a linear gradient in a random direction."""
    base = _random_colour(rng)
    angle = rng.uniform(0, 2 * np.pi)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    ramp = np.cos(angle) * xs + np.sin(angle) * ys  # in about [-0.7, 0.7]
    tint = rng.uniform(-60, 60, size=3).astype(np.float32)
    image = base + ramp[..., None] * tint
    return image, base


def _shape_mask(rng, label, height, width, size, top, left):
    """A boolean mask of the object and, for `checker`, its texture mask."""
    mask_image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask_image)
    x0, y0, x1, y1 = left, top, left + size, top + size
    name = CLASS_NAMES[label]
    if name == "circle":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=255)
    elif name in ("square", "checker"):
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
    elif name == "triangle":
        # Equilateral, inscribed in the size x size box whatever the
        # rotation: radius size/2 about the box centre.
        cx, cy, r = left + size / 2, top + size / 2, size / 2
        phase = rng.uniform(0, 2 * np.pi)
        points = [(cx + r * np.cos(phase + k * 2 * np.pi / 3),
                   cy + r * np.sin(phase + k * 2 * np.pi / 3))
                  for k in range(3)]
        draw.polygon(points, fill=255)
    elif name == "cross":
        third = size / 3
        draw.rectangle([x0 + third, y0, x1 - third - 1, y1 - 1], fill=255)
        draw.rectangle([x0, y0 + third, x1 - 1, y1 - third - 1], fill=255)
    mask = np.asarray(mask_image) > 0
    texture = None
    if name == "checker":
        period = max(4, int(size / rng.integers(3, 9)))
        ys, xs = np.mgrid[0:height, 0:width]
        kind = rng.integers(0, 3)
        if kind == 0:    # checkerboard
            texture = ((ys - top) // period + (xs - left) // period) % 2 == 0
        elif kind == 1:  # horizontal stripes
            texture = ((ys - top) // period) % 2 == 0
        else:            # vertical stripes
            texture = ((xs - left) // period) % 2 == 0
    return mask, texture


def render(label, seed):
    """Draws one example of class `label`.

    Args:
        label: class index in [0, 5).
        seed: an int or a sequence of ints; the same seed draws the same
            image.

    Returns:
        (image, bbox, mask): uint8 [H, W, 3] RGB, the object's box
        (ymin, xmin, ymax, xmax) normalised to [0, 1] with max exclusive,
        and the boolean [H, W] mask of the object's pixels.
    """
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(
            f"`label` must be in [0, {NUM_CLASSES}). "
            f"Received: label={label!r}")
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(_MIN_SIDE, _MAX_SIDE + 1, 2))
    image, base = _background(rng, height, width)
    side = min(height, width)
    size = int(rng.uniform(_MIN_OBJECT, _MAX_OBJECT) * side)
    # Anywhere inside the central square, as photographs centre their
    # subject: a random crop of the rescaled image then mostly keeps it (an
    # object at the far end of a long side would be cropped out, and the
    # label would name nothing in the crop).
    top = (height - side) // 2 + int(rng.integers(0, side - size + 1))
    left = (width - side) // 2 + int(rng.integers(0, side - size + 1))
    mask, texture = _shape_mask(rng, label, height, width, size, top, left)
    colour = _far_colour(rng, base)
    image[mask] = colour
    if texture is not None:
        second = _far_colour(rng, colour)
        image[mask & texture] = second
    # Noise over everything, object included, so exact colours never
    # identify pixels.
    sigma = rng.uniform(4, 16)
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    # The box comes from the mask itself, so it is exact for rotated shapes.
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    bbox = (rows[0] / height, cols[0] / width,
            (rows[-1] + 1) / height, (cols[-1] + 1) / width)
    return image, tuple(float(v) for v in bbox), mask


def encode_jpeg(image, quality=90):
    """The JPEG bytes of a uint8 image, as the built-in dataset stores it."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _to_example(jpeg, label, bbox, height, width):
    import tensorflow as tf  # deferred: rendering alone needs no TF

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    ymin, xmin, ymax, xmax = bbox
    feature = {
        "image/encoded": strings([jpeg]),
        "image/format": strings([b"jpeg"]),
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/class/label": ints([label]),
        "image/class/text": strings([CLASS_NAMES[label].encode()]),
        "image/object/bbox/xmin": floats([xmin]),
        "image/object/bbox/ymin": floats([ymin]),
        "image/object/bbox/xmax": floats([xmax]),
        "image/object/bbox/ymax": floats([ymax]),
        "image/object/class/label": ints([label]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _write_split(directory, split, count, seed):
    import tensorflow as tf

    split_id = zlib.crc32(split.encode())  # stable, unlike hash()
    num_shards = max(1, math.ceil(count / _SHARD_SIZE))
    for shard in range(num_shards):
        path = directory / f"{split}-{shard:05d}-of-{num_shards:05d}"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for index in range(shard, count, num_shards):
                # Balanced classes; each image seeded by (seed, split, index)
                # so it does not depend on how many others are drawn.
                label = index % NUM_CLASSES
                image, bbox, _ = render(label, (seed, split_id, index))
                example = _to_example(encode_jpeg(image), label, bbox,
                                      image.shape[0], image.shape[1])
                writer.write(example.SerializeToString())


def read_marker(cache_dir):
    """The marker's contents if `cache_dir` holds a complete dataset, else
    None."""
    path = pathlib.Path(cache_dir) / MARKER
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_builtin(cache_dir=None, num_train=600, num_val=150, seed=0):
    """Generates the built-in dataset as TFRecords, once.

    Nothing is done when `cache_dir` already holds a complete dataset made
    with the same arguments (its `COMPLETE.json` marker says so).  The files
    are written to a temporary folder beside `cache_dir` and renamed into
    place only when complete, so an interrupted run never leaves a half
    dataset; a dataset made with other arguments is replaced the same way.

    Args:
        cache_dir: where to write; default `default_cache_dir()`.
        num_train, num_val: images in the "train" and "validation" splits.
        seed: the same seed gives byte-identical files.

    Returns:
        The dataset folder as a `pathlib.Path`.

    Example:
    >>> path = write_builtin("/tmp/shapes", num_train=20, num_val=5)
    >>> (path / "class_names.txt").read_text().split()
    ['circle', 'square', 'triangle', 'cross', 'checker']
    """
    cache_dir = pathlib.Path(cache_dir or default_cache_dir()).expanduser()
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive int. Received: {name}={value!r}")
    wanted = {"version": FORMAT_VERSION, "num_train": num_train,
              "num_val": num_val, "seed": int(seed),
              "class_names": list(CLASS_NAMES)}
    if read_marker(cache_dir) == wanted:
        return cache_dir
    if cache_dir.exists() and read_marker(cache_dir) is None and any(
            cache_dir.iterdir()):
        # Not ours (ours always has a marker): never overwrite user files.
        raise ValueError(
            f"`cache_dir`={str(cache_dir)!r} exists, is not empty and holds "
            f"no {MARKER} marker: refusing to overwrite it with the built-in "
            "dataset. Pick an empty or new folder.")

    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(
        prefix=f".{cache_dir.name}.tmp-", dir=cache_dir.parent))
    try:
        _write_split(staging, "train", num_train, seed)
        _write_split(staging, "validation", num_val, seed)
        (staging / CLASS_NAMES_FILE).write_text(
            "\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
        # The marker goes last: its presence means every file is complete.
        with open(staging / MARKER, "w", encoding="utf-8") as f:
            json.dump(wanted, f)
        _swap_into_place(staging, cache_dir, wanted)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache_dir


def _swap_into_place(staging, cache_dir, wanted):
    """Renames `staging` to `cache_dir`; renames are atomic on one file
    system, so readers see either the old complete dataset or the new one.

    Not `keras_vgg.atomic.atomic_directory`: the cache is shared by
    processes that may build the same dataset at once (test workers, the
    workers of a multi-worker run), and a finished identical copy must win
    rather than be replaced or raise."""
    old = None
    if cache_dir.exists():
        if read_marker(cache_dir) == wanted:
            return  # another process finished the same dataset first
        old = cache_dir.with_name(
            f".{cache_dir.name}.old-{os.getpid()}-{id(staging)}")
        os.rename(cache_dir, old)
    try:
        os.rename(staging, cache_dir)
    except OSError:
        # A concurrent writer won the race: keep its dataset if complete.
        if read_marker(cache_dir) != wanted:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
