"""The paper's training augmentation and test-time rescaling, as tf.data maps.

Training (Simonyan & Zisserman, section 3.1): rescale the image isotropically
so its smallest side is S (fixed, or drawn per image from [Smin, Smax]:
"scale jittering"), take one random crop x crop window, flip it horizontally
half the time, and add AlexNet's PCA lighting noise.  Testing (section 3.2):
rescale the smallest side to Q and either centre-crop or keep the whole image
for dense evaluation.

The fast path never builds the rescaled image.  The crop is chosen in
rescaled coordinates and mapped back to the original image: a square window
of side crop * min(H, W) / S.  For JPEGs only that window is decoded
(`tf.image.decode_and_crop_jpeg`, the shape coming from the header through
`tf.image.extract_jpeg_shape`); other formats are decoded whole and sliced.
The window is then resized to crop x crop.  The output equals decode ->
crop -> resize exactly, and rescale-then-crop (`reference_crop`, the slow
path) up to the sub-pixel rounding of the window.  (Sampling the window at
resize's exact points with `crop_and_resize` or `ScaleAndTranslate` removes
that rounding, but halved the fast path's speed on CPU, leaving it slower
than the slow path.)

Randomness: every example gets its own stateless seed; `make_dataset(seed=)`
derives it from (seed, position in the stream), so one seed gives identical
batches in every run; without a seed it is drawn at random.  Each random
choice (scale, offsets, flip, lighting) folds a different constant into that
seed, so turning one off (flip=False) leaves the others unchanged.

Bad images: see `SkipCounter` and `map_skipping_errors`.

Example:
>>> from pipelines import sources
>>> source = sources.load_source("builtin")
>>> counter = SkipCounter()
>>> ds = make_dataset(source, training=True, batch_size=32, scale=(256, 512),
...                   seed=0, skip_counter=counter)
>>> images, labels = next(iter(ds))
>>> images.shape, counter.count
(TensorShape([32, 224, 224, 3]), 0)
"""

import collections
import uuid

import numpy as np
import tensorflow as tf

from keras_vgg import preprocessing as vgg_preprocessing
from pipelines import data_service as data_service_lib

# AlexNet's PCA of ImageNet RGB pixels in [0, 1] (as published with
# fb.resnet.torch): eigenvalues and eigenvectors (columns).
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], np.float32)

# Constants folded into an example's seed, one per random choice.
_SCALE, _OFFSET_Y, _OFFSET_X, _FLIP, _LIGHTING = 1, 2, 3, 4, 5

CropWindow = collections.namedtuple("CropWindow", [
    "scale",                          # S (or Q): smallest side once rescaled
    "image_height", "image_width",    # the original image
    "rescaled_height", "rescaled_width",
    "offset_y", "offset_x",           # the crop's corner, rescaled pixels
    # The same crop in original pixels: the square that is decoded.
    "window_y", "window_x", "window_size",
])


class _HostVariable:
    """An int64 resource variable on the host CPU.

    Made with raw ops rather than `tf.Variable` because a pipeline is often
    built inside `strategy.scope()`, where a `tf.Variable` becomes a mirrored
    variable whose handle tf.data functions cannot use.  The resource is
    never destroyed (a few bytes): a dataset still holding its handle must
    not fail because the Python object was collected.
    """

    def __init__(self, value, shape=()):
        with tf.init_scope(), tf.device("/cpu:0"):
            self.handle = tf.raw_ops.VarHandleOp(
                dtype=tf.int64, shape=shape,
                shared_name=f"keras_vgg_{uuid.uuid4().hex}")
            self.assign(value)

    def assign(self, value):
        return tf.raw_ops.AssignVariableOp(
            resource=self.handle, value=tf.cast(value, tf.int64))

    def assign_add(self, value):
        return tf.raw_ops.AssignAddVariableOp(
            resource=self.handle, value=tf.cast(value, tf.int64))

    def read(self):
        return tf.raw_ops.ReadVariableOp(resource=self.handle, dtype=tf.int64)


class _HostTable:
    """A mutable hash table on the host CPU, made with raw ops for the same
    reasons as `_HostVariable` (usable in tf.data functions built inside a
    strategy scope; never destroyed under a dataset that holds it)."""

    def __init__(self, key_dtype, value_dtype, default):
        with tf.init_scope(), tf.device("/cpu:0"):
            self.handle = tf.raw_ops.MutableHashTableV2(
                key_dtype=key_dtype, value_dtype=value_dtype,
                shared_name=f"keras_vgg_{uuid.uuid4().hex}")
        self.key_dtype = key_dtype
        self.default = tf.constant(default, value_dtype)

    def insert(self, keys, values):
        return tf.raw_ops.LookupTableInsertV2(
            table_handle=self.handle, keys=keys, values=values)

    def find(self, keys):
        return tf.raw_ops.LookupTableFindV2(
            table_handle=self.handle, keys=keys, default_value=self.default)

    def remove(self, keys):
        return tf.raw_ops.LookupTableRemoveV2(table_handle=self.handle,
                                              keys=keys)

    def size(self):
        return tf.raw_ops.LookupTableSizeV2(table_handle=self.handle)

    def export(self):
        return tf.raw_ops.LookupTableExportV2(
            table_handle=self.handle, Tkeys=self.key_dtype,
            Tvalues=self.default.dtype)


class SkipCounter:
    """Counts the examples dropped because their image could not be decoded,
    and remembers which ones they were.

    Host state that the pipeline's graph updates, readable from Python
    during and after iteration; it works inside and outside a
    `tf.distribute` strategy scope.  Share one counter between datasets to
    add up their skips.  See `map_skipping_errors` for exactly when a skip
    is counted.

    - `count`: examples skipped, every pass counted (a bad file read in each
      of 3 epochs counts 3);
    - `bad_files_count`: distinct keys (file paths, "FILE:INDEX" of
      TFRecords, tfds ids: `pipelines.sources`) of the skipped examples;
    - `bad_files`: the first `BAD_FILES_SHOWN` of those keys, in the order
      they were first skipped.

    >>> counter = SkipCounter()
    >>> ds = make_dataset(source, False, 8, skip_counter=counter)
    >>> for batch in ds: ...
    >>> counter.count, counter.bad_files_count, counter.bad_files
    (3, 3, ['/data/cats/1.jpg', '/data/cats/7.jpg', '/data/dogs/2.jpg'])
    """

    BAD_FILES_SHOWN = 10

    def __init__(self):
        self._variable = _HostVariable(0)
        # Key -> the order it was first skipped in.
        self._bad = _HostTable(tf.string, tf.int64, -1)
        self._seen = _HostVariable(0)

    @property
    def count(self):
        return int(self._variable.read())

    @property
    def bad_files_count(self):
        return int(self._bad.size())

    @property
    def bad_files(self):
        keys, order = self._bad.export()
        first = np.argsort(order.numpy(), kind="stable")
        keys = keys.numpy()[first[:self.BAD_FILES_SHOWN]]
        return [k.decode("utf-8", "replace") for k in keys]

    def add(self, value):
        """Adds `value` (usable inside tf.data functions)."""
        return self._variable.assign_add(value)

    def add_bad_files(self, keys):
        """Remembers the keys (string [N]) of skipped examples; empty keys
        (unknown) are left out.  Usable inside tf.data functions."""
        keys = tf.reshape(keys, [-1])
        keys = tf.boolean_mask(keys, tf.strings.length(keys) > 0)
        new = tf.boolean_mask(keys, tf.reshape(self._bad.find(keys), [-1]) < 0)
        order = self._seen.read() + tf.range(tf.size(new, tf.int64))
        with tf.control_dependencies([self._bad.insert(new, order)]):
            return self._seen.assign_add(tf.size(new, tf.int64))

    def forget_bad_files(self, keys):
        """Takes back keys counted as skipped too early (see
        `map_skipping_errors`' unordered mode)."""
        return self._bad.remove(keys)

    def reset(self, bad_files=False):
        """Sets `count` to 0; with `bad_files`, forgets the bad files too
        (kept otherwise: they are distinct over the counter's life)."""
        self._variable.assign(0)
        if bad_files:
            keys, _ = self._bad.export()
            self._bad.remove(keys)

    def __repr__(self):
        return (f"SkipCounter(count={self.count}, "
                f"bad_files_count={self.bad_files_count})")


def _placeholder(spec):
    return tf.zeros([d if d is not None else 0 for d in spec.shape],
                    spec.dtype)


def map_skipping_errors(dataset, map_fn, counter, deterministic=True,
                        num_parallel_calls=tf.data.AUTOTUNE,
                        max_consecutive_failures=100, with_index=False,
                        key_fn=None, batch_size=None, drop_remainder=False,
                        padding_values=None):
    """`dataset.map(map_fn)` in parallel, dropping and counting the elements
    for which `map_fn` fails at run time (undecodable or truncated images).

    How: graph ops cannot catch errors, so the parallel map is followed by
    `Dataset.ignore_errors`, which drops failed elements silently; the
    count is recovered from the gaps.  Each element is numbered before the
    map; after it, a sequential `scan` keeps the next number it expects and
    adds to `counter` the numbers jumped over.  A sentinel concatenated
    after the last element (reached only once every element is done) adds
    the failures at the very end of a pass.  The map runs as fast as a
    plain parallel map.  With `batch_size`, the elements are batched before
    the scan, which then accounts for a whole batch at once: a sequential
    step per batch rather than per element, the cheapest place for it.

    With `key_fn`, a sequential stage before the map files each element's
    key (`key_fn(element)`, a string scalar: its file) under its number,
    and the scan hands the keys of the numbers jumped over to
    `counter.add_bad_files`, so that the counter names the bad files.

    With `deterministic=True` elements keep their order, so the count only
    ever holds real failures: each is counted when the next good element (or
    the end of the pass) reaches the scan (in its batch, with `batch_size`),
    which, like any tf.data stage,
    may run a few elements ahead of what the consumer has read.  With
    `deterministic=False` an element that overtakes a slower one counts the
    slower one as skipped until it arrives (then it is subtracted, and its
    key taken back): while iterating the count may include a few elements
    still being decoded.  Either way it is exact at the end of every pass,
    and a new pass (or `repeat`) keeps adding to it.

    Every run-time error of `map_fn` counts as a bad image, a bug included;
    so that a broken pipeline does not silently skip everything, a run of
    `max_consecutive_failures` failures in a row stops it with an error.
    A dataset is numbered per pass: iterate one pass at a time.

    Args:
        dataset: the input `tf.data.Dataset`.
        map_fn: one element -> any structure of tensors.
        counter: a `SkipCounter`.
        deterministic: keep the input order.
        num_parallel_calls: elements mapped at once.
        max_consecutive_failures: raise after this many failures in a row
            (None: never).
        with_index: call `map_fn(index, *element)`, index being the
            element's position in the stream (0, 1, ... per pass).
        key_fn: element -> its key (tf.string scalar), or None: the bad
            elements are counted, not named.
        batch_size: batch the mapped elements (None: do not).
        drop_remainder: drop a last batch smaller than `batch_size` (its
            elements are not skipped images: they are not counted).
        padding_values: with `batch_size`, `padded_batch` with these
            padding values (the structure of `map_fn`'s output).

    Returns:
        The mapped `tf.data.Dataset`.
    """
    # The highest element number handed to `map_fn` in this pass, for the
    # end sentinel; scatter-max, so parallel updates in any order agree.
    last_index = _HostVariable([-1], shape=[1])
    # Number -> key of the elements not yet accounted for by the scan.
    pending = None if key_fn is None else _HostTable(tf.int64, tf.string, "")

    def file_key(index, element):
        key = tf.reshape(tf.cast(key_fn(element), tf.string), [])
        with tf.control_dependencies([pending.insert(index[None],
                                                     key[None])]):
            return tf.identity(index), (key, element)

    def apply(index, keyed):
        key, element = keyed if pending is not None else ("", keyed)
        update = tf.raw_ops.ResourceScatterMax(
            resource=last_index.handle, indices=[0], updates=index[None])
        with tf.control_dependencies([update]):
            args = element if isinstance(element, tuple) else (element,)
            if with_index:
                args = (index,) + args
            # As Dataset.map does, a tuple element becomes the arguments.
            return index, tf.reshape(key, []), map_fn(*args)

    numbered = dataset.enumerate()
    if pending is not None:
        numbered = numbered.map(file_key)  # sequential: filed before mapped
    mapped = (numbered
              .map(apply, num_parallel_calls=num_parallel_calls,
                   deterministic=deterministic)
              .ignore_errors())
    if batch_size is not None and padding_values is None:
        mapped = mapped.batch(batch_size)
    elif batch_size is not None:
        mapped = mapped.padded_batch(
            batch_size, padding_values=(None, None, padding_values))
    # Reached only once every element is done; no numbers: the pass ends.
    end = tf.data.Dataset.from_tensors(tf.nest.map_structure(
        _placeholder, mapped.element_spec))
    if batch_size is None:  # a number and a key, not vectors of them
        end = end.map(lambda i, k, output: (i - 1, k, output))

    def end_of_pass():
        total = last_index.read()[0] + 1
        with tf.control_dependencies([total]):
            reset = last_index.assign([-1])
        with tf.control_dependencies([reset]):
            return tf.identity(total)

    def account(expected, item):
        indices, keys, output = item
        if batch_size is None:  # one element: its number, -1 at the end
            is_end = indices < 0
            indices = tf.boolean_mask(indices[None], ~is_end[None])
            keys = tf.boolean_mask(keys[None], ~is_end[None])
        else:
            is_end = tf.equal(tf.size(indices), 0)
        # The numbers from `expected` up to the highest here (or the end of
        # the pass) that are not here were skipped.  A straggler (unordered
        # mode) was counted as skipped already: it takes itself back.
        reached = tf.maximum(expected, tf.reshape(tf.cond(
            is_end, end_of_pass,
            lambda: tf.reduce_max(indices) + 1), []))
        span = tf.range(expected, reached)
        arrived = tf.reduce_any(
            tf.equal(span[:, None], indices[None, :]), axis=1)
        gap = tf.boolean_mask(span, tf.logical_not(arrived))
        late = indices < expected
        skipped = (tf.size(gap, tf.int64)
                   - tf.reduce_sum(tf.cast(late, tf.int64)))
        updates = [counter.add(skipped)]
        if pending is not None:
            gap_keys = pending.find(gap)
            with tf.control_dependencies([gap_keys]):
                updates.append(pending.remove(tf.concat(
                    [span, tf.boolean_mask(indices, late)], 0)))
            updates.append(counter.add_bad_files(gap_keys))
            updates.append(counter.forget_bad_files(
                tf.boolean_mask(keys, late)))
        if max_consecutive_failures:
            # The longest run of numbers skipped between two arrivals.
            marks = tf.sort(tf.concat([
                [expected - 1], tf.boolean_mask(indices, ~late),
                tf.where(is_end, reached, expected - 1)[None]], 0))
            run = tf.reduce_max(marks[1:] - marks[:-1]) - 1
            updates.append(tf.debugging.Assert(
                run < max_consecutive_failures,
                ["map_skipping_errors: images failed in a row:", run,
                 "- more likely a bug in the map function than bad files"]))
        with tf.control_dependencies(updates):
            return reached, (output, tf.identity(is_end),
                             tf.size(indices))

    def kept(output, is_end, size):
        if batch_size is None or not drop_remainder:
            return tf.logical_not(is_end)
        return tf.equal(size, batch_size)

    def unpacked(output, is_end, size):
        if batch_size is not None and drop_remainder:
            for t in tf.nest.flatten(output):
                t.set_shape([batch_size] + t.shape[1:])
        return output

    return (mapped.concatenate(end)
            .scan(tf.constant(0, tf.int64), account)
            .filter(kept)
            .map(unpacked))


# -- seeds ------------------------------------------------------------------

def example_seed(seed, index):
    """The stateless seed of the `index`-th example of a run seeded `seed`."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])


def _as_seed(seed):
    """None -> a fresh random seed; int -> [seed, 0]; [2] tensor -> itself."""
    if seed is None:
        return tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return example_seed(seed, 0)
    return tf.cast(seed, tf.int64)


def _sub_seed(seed, salt):
    return tf.random.experimental.stateless_fold_in(seed, salt)


# -- geometry ---------------------------------------------------------------

# libjpeg's chroma upsampling reads the next column, which a cropped decode
# lacks: its last column can differ from a full decode's.  Decoding a few
# spare columns and rows, sliced off before use, keeps every pixel used
# identical to a full decode.
_JPEG_MARGIN = 2


def _check_scales(scale_min, scale_max, crop):
    if not 0 < crop <= scale_min <= scale_max:
        raise ValueError(
            "Expected 0 < crop <= scale_min <= scale_max. Received: "
            f"crop={crop!r}, scale_min={scale_min!r}, scale_max={scale_max!r}")


def _rescaled_shape(height, width, scale):
    """(H', W') with min(H', W') == scale exactly, aspect ratio kept."""
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    s = tf.cast(scale, tf.float64)
    short = tf.minimum(h, w)
    new_h = tf.where(h <= w, s, tf.round(h * s / short))
    new_w = tf.where(h <= w, tf.round(w * s / short), s)
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def _make_window(height, width, scale, new_h, new_w, offset_y, offset_x,
                 crop):
    """Maps a crop of the rescaled image back to original pixels: a square
    of side crop * min(H, W) / S, rounded to whole pixels.  Rounding moves
    the crop by under half an original pixel: no matter for augmentation,
    and it lets `tf.image.resize` (fast) do the resampling."""
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    ratio = (tf.cast(tf.minimum(height, width), tf.float64)
             / tf.cast(scale, tf.float64))
    size = tf.cast(tf.round(crop * ratio), tf.int32)
    size = tf.clip_by_value(size, 1, tf.minimum(height, width))

    def start(offset, extent):
        value = tf.cast(tf.round(tf.cast(offset, tf.float64) * ratio),
                        tf.int32)
        return tf.clip_by_value(value, 0, extent - size)

    return CropWindow(tf.cast(scale, tf.int32), height, width, new_h, new_w,
                      offset_y, offset_x, start(offset_y, height),
                      start(offset_x, width), size)


def sample_crop_window(height, width, scale_min=256, scale_max=512, crop=224,
                       seed=None):
    """Draws the training crop of an image of `height` x `width`.

    S is uniform over the integers [scale_min, scale_max] (fixed when equal);
    the crop's corner is uniform over the rescaled image.

    Returns:
        A `CropWindow` of int32 scalars.

    >>> w = sample_crop_window(300, 400, 256, 512, 224, seed=[0, 1])
    >>> int(min(w.rescaled_height, w.rescaled_width)) == int(w.scale)
    True
    """
    _check_scales(scale_min, scale_max, crop)
    seed = _as_seed(seed)
    scale = tf.random.stateless_uniform(
        [], _sub_seed(seed, _SCALE), scale_min, scale_max + 1, tf.int32)
    new_h, new_w = _rescaled_shape(height, width, scale)
    offset_y = tf.random.stateless_uniform(
        [], _sub_seed(seed, _OFFSET_Y), 0, new_h - crop + 1, tf.int32)
    offset_x = tf.random.stateless_uniform(
        [], _sub_seed(seed, _OFFSET_X), 0, new_w - crop + 1, tf.int32)
    return _make_window(height, width, scale, new_h, new_w, offset_y,
                        offset_x, crop)


def central_crop_window(height, width, scale=256, crop=224):
    """The test-time central crop after rescaling the smallest side to
    `scale` (Q), as a `CropWindow`."""
    _check_scales(scale, scale, crop)
    new_h, new_w = _rescaled_shape(height, width, scale)
    return _make_window(height, width, scale, new_h, new_w,
                        (new_h - crop) // 2, (new_w - crop) // 2, crop)


# -- decoding ---------------------------------------------------------------

def _decode_full(encoded):
    # channels=3 turns grayscale and CMYK into RGB and drops alpha;
    # expand_animations=False keeps a GIF's first frame as [H, W, 3].
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_window(encoded, window_fn):
    """Decodes the window `window_fn(height, width)` chooses; of a JPEG only
    that window (plus a small margin), the shape coming from its header.

    Returns:
        (uint8 [window_size, window_size, 3] pixels, the `CropWindow`).
    """
    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded, output_type=tf.int32)
        w = window_fn(shape[0], shape[1])
        rows = tf.minimum(w.window_size + _JPEG_MARGIN, shape[0] - w.window_y)
        cols = tf.minimum(w.window_size + _JPEG_MARGIN, shape[1] - w.window_x)
        image = tf.image.decode_and_crop_jpeg(
            encoded, tf.stack([w.window_y, w.window_x, rows, cols]),
            channels=3)
        return image[:w.window_size, :w.window_size], w

    def other():
        full = _decode_full(encoded)
        shape = tf.shape(full, out_type=tf.int32)
        w = window_fn(shape[0], shape[1])
        image = full[w.window_y:w.window_y + w.window_size,
                     w.window_x:w.window_x + w.window_size]
        return image, w

    image, w = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image, CropWindow(*w)


def reference_crop(encoded, window, crop=224):
    """The slow path: decode everything, rescale the whole image so its
    smallest side is S, then crop.  Kept for tests and benchmarks."""
    image = _decode_full(encoded)
    resized = tf.image.resize(
        image, tf.stack([window.rescaled_height, window.rescaled_width]))
    return resized[window.offset_y:window.offset_y + crop,
                   window.offset_x:window.offset_x + crop]


# -- colour and boxes -------------------------------------------------------

def lighting_shift(alpha):
    """The RGB shift (pixels in [0, 1]) of AlexNet's PCA lighting for draws
    `alpha` [3]: eigvec @ (alpha * eigval)."""
    return tf.linalg.matvec(tf.constant(PCA_EIGVEC),
                            tf.cast(alpha, tf.float32) * PCA_EIGVAL)


def sample_lighting_alpha(std=0.1, seed=None):
    """alpha ~ N(0, std) for the three principal components."""
    return tf.random.stateless_normal(
        [3], _sub_seed(_as_seed(seed), _LIGHTING), stddev=std)


def sample_flip(seed=None):
    """True half the time."""
    return tf.random.stateless_uniform(
        [], _sub_seed(_as_seed(seed), _FLIP)) < 0.5


def crop_boxes(boxes, window, flip=False):
    """Moves normalised boxes (ymin, xmin, ymax, xmax) of the original image
    into the crop window: clipped to it, normalised to it, mirrored when
    `flip`, and dropped when nothing of them is left inside."""
    ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(boxes, [-1, 4]), axis=-1)
    size = tf.cast(window.window_size, tf.float32)

    def move(v, extent, start):
        # Normalised coordinate -> original pixel edge -> window fraction.
        v = (v * tf.cast(extent, tf.float32)
             - tf.cast(start, tf.float32)) / size
        return tf.clip_by_value(v, 0.0, 1.0)

    ymin = move(ymin, window.image_height, window.window_y)
    ymax = move(ymax, window.image_height, window.window_y)
    xmin = move(xmin, window.image_width, window.window_x)
    xmax = move(xmax, window.image_width, window.window_x)
    xmin, xmax = (tf.where(flip, 1.0 - xmax, xmin),
                  tf.where(flip, 1.0 - xmin, xmax))
    moved = tf.stack([ymin, xmin, ymax, xmax], axis=-1)
    return tf.boolean_mask(moved, (ymax > ymin) & (xmax > xmin))


# -- maps -------------------------------------------------------------------

def finish_pixels(images, flip, shift, preprocessing="caffe"):
    """The per-pixel end of the training augmentation: the horizontal flip,
    the PCA lighting shift and the preprocessing, for one image ([H, W, 3],
    flip [], shift [3]) or a batch ([N, H, W, 3], [N], [N, 3]).

    `make_dataset(defer_pixel_ops=True)` leaves these to the training step,
    which calls this on its batch: on an accelerator they are then nearly
    free, and the host's CPUs only decode and resize.  Either way each pixel
    goes through the same float operations in the same order, so the images
    are bit-identical.

    Args:
        images: float32 crops, resized, before the flip.
        flip: bool, per image.
        shift: the lighting shift per image, in pixel units (0-255 scale).
        preprocessing: "caffe", "torch" or "none".
    """
    images = tf.convert_to_tensor(images, tf.float32)
    flip = tf.convert_to_tensor(flip, tf.bool)
    shift = tf.convert_to_tensor(shift, tf.float32)
    if images.shape.rank == 4:
        images = tf.where(flip[:, None, None, None],
                          tf.reverse(images, [-2]), images)
        shift = shift[:, None, None, :]
    else:  # one image: reversed only when flipped
        images = tf.cond(flip, lambda: tf.reverse(images, [-2]),
                         lambda: images)
    # The shift is defined on pixels in [0, 1] (AlexNet, fb.resnet);
    # (x / 255 + s) * 255 == x + 255 * s, one pass over the image instead
    # of three.  No clipping, as there.
    images = images + shift
    return vgg_preprocessing.apply(images, preprocessing)


def _train_example(example, scale_min, scale_max, crop, preprocessing_mode,
                   pca_lighting_std, seed, flip, defer_pixel_ops=False):
    """(image, label, boxes), or with `defer_pixel_ops` (the resized crop,
    label, boxes, {"flip", "shift"}) for `finish_pixels`."""
    vgg_preprocessing.check_mode(preprocessing_mode)
    seed = _as_seed(seed)
    pixels, window = decode_window(
        example["encoded"],
        lambda h, w: sample_crop_window(h, w, scale_min, scale_max, crop,
                                        seed))
    image = tf.image.resize(pixels, [crop, crop])
    image.set_shape([crop, crop, 3])
    flipped = sample_flip(seed) if flip else tf.constant(False)
    shift = (255.0 * lighting_shift(sample_lighting_alpha(pca_lighting_std,
                                                          seed))
             if pca_lighting_std else tf.zeros([3]))
    boxes = crop_boxes(example["bbox"], window, flipped)
    if defer_pixel_ops:
        return image, example["label"], boxes, {"flip": flipped,
                                                "shift": shift}
    image = finish_pixels(image, flipped, shift, preprocessing_mode)
    return image, example["label"], boxes


def train_map(example, scale_min=256, scale_max=512, crop=224,
              preprocessing="caffe", pca_lighting_std=0.1, seed=None,
              flip=True):
    """Training augmentation of one source example.

    Args:
        example: a {"encoded", "label", "bbox"} dict from `pipelines.sources`.
        scale_min, scale_max: range of S; equal for single-scale training.
        crop: side of the square crop.
        preprocessing: "caffe", "torch" or "none" (`keras_vgg.preprocessing`).
        pca_lighting_std: std of the PCA lighting draws; 0 turns it off.
        seed: None (random), an int, or a [2] stateless seed tensor.
        flip: allow the random horizontal flip.

    Returns:
        (float32 [crop, crop, 3] image, label).

    >>> image, label = train_map(example, 256, 512, seed=[0, 7])
    """
    image, label, _ = _train_example(example, scale_min, scale_max, crop,
                                     preprocessing, pca_lighting_std, seed,
                                     flip)
    return image, label


def train_map_with_bbox(example, scale_min=256, scale_max=512, crop=224,
                        preprocessing="caffe", pca_lighting_std=0.1,
                        seed=None, flip=True):
    """`train_map` that also returns the boxes moved with the crop and flip:
    (image, label, float32 [N', 4] boxes normalised to the crop), for
    localisation.  Boxes wholly outside the crop are dropped."""
    return _train_example(example, scale_min, scale_max, crop, preprocessing,
                          pca_lighting_std, seed, flip)


def eval_map(example, scale=256, crop=224, preprocessing="caffe",
             with_bbox=False):
    """Test-time rescaling: smallest side to `scale` (Q), then the central
    crop x crop window, or the whole rescaled image when `crop` is None
    (dense evaluation).

    Returns:
        (float32 image, label), plus the boxes in the output's normalised
        coordinates when `with_bbox`.
    """
    vgg_preprocessing.check_mode(preprocessing)
    if crop is None:
        image = _decode_full(example["encoded"])
        shape = tf.shape(image)
        new_h, new_w = _rescaled_shape(shape[0], shape[1], scale)
        image = tf.image.resize(image, tf.stack([new_h, new_w]))
        boxes = tf.reshape(example["bbox"], [-1, 4])  # unchanged: whole image
    else:
        pixels, window = decode_window(
            example["encoded"],
            lambda h, w: central_crop_window(h, w, scale, crop))
        image = tf.image.resize(pixels, [crop, crop])
        image.set_shape([crop, crop, 3])
        boxes = crop_boxes(example["bbox"], window)
    image = vgg_preprocessing.apply(image, preprocessing)
    if with_bbox:
        return image, example["label"], boxes
    return image, example["label"]


# -- datasets ---------------------------------------------------------------

def _on_data_service(dataset, transform, batch_size, drop_remainder,
                     padding_values, deterministic, dispatcher):
    """The pipeline from `dataset` on, run by the tf.data service's
    workers: the map (bad images dropped, not counted: host counters do not
    travel to workers) and the batching."""
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic).ignore_errors()
    if padding_values is not None:
        dataset = dataset.padded_batch(
            batch_size, padding_values=padding_values,
            drop_remainder=drop_remainder)
    else:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode="distributed_epoch",
        service=f"{data_service_lib.PROTOCOL}://{dispatcher}")).prefetch(
            tf.data.AUTOTUNE)


def _source_key(dataset):
    """How to read an example's key (`pipelines.sources`), or None for
    datasets of examples without one."""
    spec = dataset.element_spec
    if isinstance(spec, dict) and "key" in spec:
        return lambda example: example["key"]
    return None


def make_dataset(source, training, batch_size, *, scale=256, crop=224,
                 preprocessing="caffe", pca_lighting_std=0.1, flip=True,
                 with_bbox=False, shuffle_buffer=10_000, repeat=False,
                 drop_remainder=None, seed=None, deterministic=False,
                 skip_counter=None, data_service=None,
                 defer_pixel_ops=False):
    """Batches of augmented (training) or rescaled (evaluation) images.

    Args:
        source: a `pipelines.sources.Source` (or its `tf.data.Dataset`).
        training: augment and shuffle, else rescale to Q and centre-crop.
        batch_size: images per batch.
        scale: training: S, or (Smin, Smax) for scale jittering;
            evaluation: Q.
        crop: crop side; evaluation may pass None for whole images (then
            batch_size must be 1, as sizes differ).
        preprocessing, pca_lighting_std, flip: see `train_map`.
        with_bbox: also yield boxes, padded with -1 rows to the batch's most.
        shuffle_buffer: records in the training shuffle buffer.
        repeat: repeat forever (before batching, so batches span epochs).
        drop_remainder: default: True in training (static batch shape).
        seed: with `deterministic`, the same seed gives the same batches.
        deterministic: keep element order through the parallel stages.
        skip_counter: a `SkipCounter` that counts undecodable images; a new
            one is made when None.  Also available as `dataset.skip_counter`.
        data_service: "grpc://HOST:PORT" of a tf.data service dispatcher
            (`pipelines.data_service`), training only: its workers read,
            decode, augment and batch, in "distributed_epoch" mode (the
            dispatcher hands each worker its share of the files, so one
            pass still reads each example once; every worker shuffles its
            share with a buffer of `shuffle_buffer`).  What changes: bad
            images are dropped on the workers and not counted (the counter
            stays at 0); crops, flips and lighting are drawn at random on
            the workers whatever `seed` (which still orders the shuffle),
            and batches arrive in the order workers finish them, so a run
            is not reproducible and a resume does not replay its batches.
        defer_pixel_ops: training only: leave the flip, the lighting and
            the preprocessing to the consumer, which applies
            `finish_pixels(images, ops["flip"], ops["shift"], preprocessing)`
            to each batch (the trainer does, in its step, on the
            accelerator).  Batches are then (crops, labels, ops) or
            (crops, labels, boxes, ops), the crops resized but not flipped,
            and the host's CPUs only decode and resize.  Without it the
            same function runs here, on each image (per image rather than
            per batch: an image is still in the CPU's cache then; a
            batch-wide pass measured half as fast).

    Returns:
        A prefetched `tf.data.Dataset` of (images, labels) or
        (images, labels, boxes).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("`batch_size` must be a positive int. Received: "
                         f"batch_size={batch_size!r}")
    vgg_preprocessing.check_mode(preprocessing)
    dataset = getattr(source, "dataset", source)
    counter = SkipCounter() if skip_counter is None else skip_counter
    if drop_remainder is None:
        drop_remainder = training
    if training:
        scale_min, scale_max = (scale, scale) if np.isscalar(scale) else scale
        if crop is None:
            raise ValueError("Training needs a `crop` size. Received: "
                             "crop=None")
        _check_scales(scale_min, scale_max, crop)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
    else:
        if not np.isscalar(scale):
            raise ValueError("Evaluation takes one `scale` (Q). Received: "
                             f"scale={scale!r}")
        if crop is None and batch_size != 1:
            raise ValueError("Whole images (crop=None) differ in size: "
                             f"`batch_size` must be 1. Received: "
                             f"batch_size={batch_size!r}")
        if crop is not None:
            _check_scales(scale, scale, crop)
    if defer_pixel_ops and not training:
        raise ValueError("`defer_pixel_ops` is for training data. "
                         "Received: training=False")
    if repeat:
        dataset = dataset.repeat()

    def train_example(example, seed):
        out = _train_example(example, scale_min, scale_max, crop,
                             preprocessing, pca_lighting_std, seed, flip,
                             defer_pixel_ops)
        return out if with_bbox else out[:2] + out[3:]

    padding = None
    if with_bbox:
        padding = ((None, None, -1.0, None) if defer_pixel_ops
                   else (None, None, -1.0))
    if data_service is not None:
        if not training:
            raise ValueError("`data_service` is for training data. "
                             "Received: training=False")
        dataset = _on_data_service(
            dataset, lambda example: train_example(example, None),
            batch_size, drop_remainder, padding, deterministic,
            data_service_lib.address(data_service))
        dataset.skip_counter = counter
        return dataset
    # The position in the (shuffled, repeated) stream seeds each example
    # (`with_index` below), so a run is reproducible and every epoch draws
    # new crops.  A run without a seed still needs a base for the seeds.
    base_seed = (seed if seed is not None
                 else int(np.random.SeedSequence().generate_state(1)[0] >> 1))

    def transform(index, example):
        if training:
            return train_example(example, example_seed(base_seed, index))
        return eval_map(example, scale, crop, preprocessing, with_bbox)

    dataset = map_skipping_errors(
        dataset, transform, counter, deterministic=deterministic,
        with_index=True, key_fn=_source_key(dataset), batch_size=batch_size,
        drop_remainder=drop_remainder, padding_values=padding)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    try:
        dataset.skip_counter = counter
    except AttributeError:  # pragma: no cover - depends on the TF version
        pass
    return dataset
