"""The dense protocol as TensorFlow graph pieces: bounded decoding,
rescaling to Q and the fully convolutional classifier with flip, for every
image size.  The SavedModel's classifier (`export.saved_model`) and the
localiser's scorer (`export.localizer`) are built on it.

Images sent to a server are untrusted: a 140-byte PNG can claim 1 x 20000
pixels, which rescaled so that its smallest side is Q becomes Q x 20000 Q
(16 GB for a small model).  So the size an image's header claims is checked
against `max_pixels` and `max_aspect_ratio` before anything is decoded.
"""

import tensorflow as tf

import keras_vgg
from keras_vgg import fully_conv
from keras_vgg import preprocessing as vgg_preprocessing

# Defaults of the limits a server puts on an image.  4096 x 4096 (16.8 MP)
# holds the photos of phones and most cameras (12-16 MP); decoded to float32
# such an image is 200 MB, which a server can afford per request.  After
# rescaling to Q an image costs Q^2 x its aspect ratio: 4 admits every
# photo format (4:3, 16:9, 21:9, 3:1 panoramas) for at most 4 times the
# work of a square image, where 1 x 20000 would cost 20000 times.
MAX_PIXELS = 4096 * 4096
MAX_ASPECT_RATIO = 4.0
# The header bytes read below (BMP's height ends at byte 26).
_HEADER_BYTES = 26


def _header(encoded):
    """The first bytes of `encoded` as int64 [26], zero-padded when the file
    is shorter (then the decoder refuses it)."""
    padded = tf.strings.join([encoded, tf.constant(b"\0" * _HEADER_BYTES)])
    head = tf.strings.substr(padded, 0, _HEADER_BYTES)
    return tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)


def _unsigned(header, start, count, little_endian):
    """The unsigned integer of `count` bytes at `start`."""
    order = range(count) if little_endian else reversed(range(count))
    value = tf.constant(0, tf.int64)
    for shift, i in enumerate(order):
        value += tf.bitwise.left_shift(header[start + i],
                                       tf.constant(8 * shift, tf.int64))
    return value


def header_size(encoded):
    """(height, width) int64 that the header of one encoded image claims,
    read without decoding: JPEG by `tf.image.extract_jpeg_shape`, PNG from
    IHDR (bytes 16-24, big-endian width, height), GIF from the logical
    screen (bytes 6-10, little-endian; what TensorFlow decodes to), BMP from
    bytes 18-26 (little-endian signed; negative height means top-down).
    (-1, -1) for any other bytes.

    Written here because TensorFlow reads only JPEG headers without
    decoding; the offsets are those of the formats' specifications, the
    magic numbers those `tf.io.decode_image` tells the formats by.
    """
    header = _header(encoded)
    magic = tf.strings.substr(tf.strings.join([encoded, "\0" * 8]), 0, 8)
    png = tf.equal(magic, b"\x89PNG\r\n\x1a\n")
    gif = tf.equal(tf.strings.substr(magic, 0, 4), b"GIF8")
    bmp = tf.equal(tf.strings.substr(magic, 0, 2), b"BM")

    def signed(value):
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    png_hw = tf.stack([_unsigned(header, 20, 4, False),
                       _unsigned(header, 16, 4, False)])
    gif_hw = tf.stack([_unsigned(header, 8, 2, True),
                       _unsigned(header, 6, 2, True)])
    bmp_hw = tf.stack([signed(_unsigned(header, 22, 4, True)),
                       signed(_unsigned(header, 18, 4, True))])
    other = tf.where(png, png_hw, tf.where(
        gif, gif_hw, tf.where(bmp, bmp_hw, tf.constant([-1, -1], tf.int64))))
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.image.extract_jpeg_shape(encoded, tf.int64)[:2],
        lambda: other)


def bmp_palette_colours(encoded, image):
    """`image` as decoded by `tf.io.decode_image(channels=3)`, with the
    colours of an 8-bit paletted BMP looked up: TensorFlow's BMP decoder
    returns the palette indices (right only for a gray ramp palette).  The
    palette follows the DIB header (size at bytes 14-18): 4 bytes B, G, R,
    0 an entry (the BMP specification)."""
    raw = tf.io.decode_raw(tf.strings.substr(tf.strings.join(
        [encoded, tf.constant(b"\0" * 32)]), 0, 32), tf.uint8)
    bits = tf.cast(raw[28], tf.int64) + 256 * tf.cast(raw[29], tf.int64)
    paletted = tf.logical_and(
        tf.equal(tf.strings.substr(encoded, 0, 2), b"BM"), tf.equal(bits, 8))

    def lookup():
        start = 14 + _unsigned(_header(encoded), 14, 4, True)
        table = tf.strings.substr(tf.strings.join(
            [encoded, tf.constant(b"\0" * 1024)]), start, 1024)
        bgr0 = tf.reshape(tf.io.decode_raw(table, tf.uint8), [256, 4])
        return tf.gather(bgr0[:, 2::-1], tf.cast(image[..., 0], tf.int32))

    return tf.cond(paletted, lookup, lambda: image)


def check_size(size, max_pixels, max_aspect_ratio):
    """Assert ops refusing (InvalidArgumentError, naming the limit and the
    size) an image of `size` (height, width) above the limits; (-1, -1),
    an unknown format, is refused too."""
    size = tf.cast(size, tf.int64)
    h, w = size[0], size[1]
    hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
    described = tf.strings.format("{}x{}", (h, w))
    known = tf.debugging.Assert(
        tf.reduce_all(size >= 0),
        ["not a JPEG, PNG, GIF or BMP image (the formats whose size is "
         "checked before decoding)"])
    # float64: a header may claim 2^32 x 2^32, whose product overflows int64.
    pixels = tf.debugging.Assert(
        hf * wf <= float(max_pixels),
        [tf.strings.join([
            "image of ", described, " pixels (height x width) is larger "
            f"than max_pixels={int(max_pixels)}"])])
    aspect = tf.debugging.Assert(
        tf.maximum(hf, wf) <= float(max_aspect_ratio) * tf.minimum(hf, wf),
        [tf.strings.join([
            "image of ", described, " pixels (height x width) is more "
            f"elongated than max_aspect_ratio={float(max_aspect_ratio):g}"])])
    return [known, pixels, aspect]


def check_limits(max_pixels, max_aspect_ratio):
    """The limits as (int, float); ValueError naming the flag when one is
    not a positive number (an aspect ratio is at least 1)."""
    if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels \
            or max_pixels < 1:
        raise ValueError(f"--max_pixels={max_pixels!r}: must be a positive "
                         "integer.")
    if not float(max_aspect_ratio) >= 1.0:
        raise ValueError(f"--max_aspect_ratio={max_aspect_ratio!r}: must be "
                         "at least 1 (long side / short side).")
    return int(max_pixels), float(max_aspect_ratio)


def rescale(images, q):
    """Float32 pixels (N, H, W, 3) of one size, resized so that the smallest
    side is `q` (other side rounded half to even), bilinear with
    antialiasing: the same as `pipelines.protocols.rescale`."""
    shape = tf.shape(images)
    h = tf.cast(shape[1], tf.float64)
    w = tf.cast(shape[2], tf.float64)
    q64 = tf.constant(float(q), tf.float64)
    new_h = tf.where(h <= w, q64, tf.round(h * q64 / w))
    new_w = tf.where(h <= w, tf.round(w * q64 / h), q64)
    size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
    resized = tf.image.resize(images, size, method="bilinear",
                              antialias=True)
    # Leaves the pixels untouched when the image already has that size.
    return tf.cond(tf.reduce_all(tf.equal(size, shape[1:3])),
                   lambda: images, lambda: resized)


class DenseClassifier:
    """The graph pieces of the SavedModel around a fully convolutional VGG.

    Args:
        source: a classifier `keras_vgg.runs.Run`.
        q: test scale (default `source.test_scale`).
        flip: average with the horizontally flipped image.
        top_k: how many top classes to return (at most the class count).
        max_pixels, max_aspect_ratio: the largest image (height x width)
            and the most elongated (long side / short side) accepted; an
            image beyond them is refused before it is decoded.
        dense_stride: input pixels between the score-map positions whose
            scores are averaged: 32 (the network's own), 16 or 8 (its last
            pools at both offsets, `keras_vgg.fully_convolutional`).
    """

    def __init__(self, source, q=None, flip=True, top_k=5,
                 max_pixels=MAX_PIXELS, max_aspect_ratio=MAX_ASPECT_RATIO,
                 dense_stride=fully_conv.STRIDE):
        self.source = source
        self.q = int(q or source.test_scale)
        if self.q < source.crop:
            raise ValueError(f"q={self.q} is smaller than the crop size "
                             f"{source.crop}.")
        self.flip = bool(flip)
        self.top_k = max(1, min(int(top_k), source.num_classes))
        self.max_pixels, self.max_aspect_ratio = check_limits(
            max_pixels, max_aspect_ratio)
        self.stride = fully_conv.check_stride(
            source.model, dense_stride, "--dense_stride", source.name)
        self.fcn = keras_vgg.fully_convolutional(source.model, average=True,
                                                 stride=self.stride)

    def classify_same_size(self, pixels):
        """Probabilities (N, classes) for float32 RGB pixels (N, H, W, 3) in
        [0, 255], all of one size."""
        x = rescale(tf.cast(pixels, tf.float32), self.q)
        x = vgg_preprocessing.apply(x, self.source.preprocessing)
        if not self.flip:
            return self.fcn(x, training=False)
        # The image and its flip in one call: one pass over the weights.
        n = tf.shape(x)[0]
        p = self.fcn(tf.concat([x, tf.image.flip_left_right(x)], 0),
                     training=False)
        return (p[:n] + p[n:]) / 2.0

    def check_size(self, size):
        """Assert ops for an image of `size` (height, width): see
        `check_size`."""
        return check_size(size, self.max_pixels, self.max_aspect_ratio)

    def decode(self, encoded):
        """One encoded image -> float32 (H, W, 3); InvalidArgumentError for
        bytes that are no image and for an image beyond the limits, whose
        header is read before anything is decoded."""
        with tf.control_dependencies(self.check_size(header_size(encoded))):
            image = tf.io.decode_image(encoded, channels=3,
                                       expand_animations=False)
        return tf.cast(bmp_palette_colours(encoded, image), tf.float32)

    def classify_encoded(self, encoded):
        # Images differ in size: one at a time (map_fn), then stacked.
        def one(e):
            return self.classify_same_size(self.decode(e)[None])[0]

        return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec(
            [self.source.num_classes], tf.float32))

    def outputs(self, probabilities):
        """Probabilities and the top k; `ServingModule` adds the labels."""
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)
        return {"probabilities": probabilities,
                "top_k_indices": indices,
                "top_k_scores": scores}

    # The interface `ServingModule` reads (shared with
    # `export.localizer.DenseLocalizer`).

    @property
    def variables(self):
        return self.fcn.variables

    def predict_same_size(self, pixels):
        return self.outputs(self.classify_same_size(pixels))

    def predict_encoded(self, encoded):
        return self.outputs(self.classify_encoded(encoded))
