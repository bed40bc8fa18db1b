"""The SavedModel export: its signatures against the Keras model, encoded
images of several formats and sizes, corrupt images, the REST b64 body."""

import base64
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from export import client
from export import common
from export import saved_model
from tests import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory, model = tiny_run.write_run(
        str(tmp_path_factory.mktemp("export_sm") / "run"))
    return directory, model


@pytest.fixture(scope="module")
def default_path(run, tmp_path_factory):
    """The default export's directory (Q=40 from the run, flip, the default
    image limits)."""
    directory, _ = run
    return saved_model.export_saved_model(
        common.load_export_model(directory),
        str(tmp_path_factory.mktemp("sm_default") / "default"))


@pytest.fixture(scope="module")
def exported(run, default_path, tmp_path_factory):
    """The default export and one at Q=crop without flip, loaded."""
    directory, _ = run
    base = tmp_path_factory.mktemp("sm")
    source = common.load_export_model(directory)
    default = default_path
    plain = saved_model.export_saved_model(source, str(base / "plain"),
                                           q=tiny_run.CROP, flip=False)
    return (tf.saved_model.load(default, tags=["serve"]),
            tf.saved_model.load(plain, tags=["serve"]), source)


def _reference(model, image, q, flip):
    """Dense evaluation computed outside the SavedModel: numpy sizes, the
    Keras fully convolutional model."""
    fcn = keras_vgg.fully_convolutional(model, average=True)
    h, w = image.shape[:2]
    size = ((q, int(np.round(w * q / h))) if h <= w
            else (int(np.round(h * q / w)), q))
    x = tf.image.resize(image[None], size, antialias=True) \
        if size != (h, w) else tf.constant(image[None])
    x = keras_vgg.preprocessing.apply(x, "caffe")
    p = np.asarray(fcn(x))
    if flip:
        p = (p + np.asarray(fcn(tf.image.flip_left_right(x)))) / 2
    return p[0]


def test_load_export_model_reads_run(run):
    directory, _ = run
    source = common.load_export_model(directory)
    assert source.crop == 32 and source.test_scale == 40
    assert source.class_names == tiny_run.CLASS_NAMES
    assert source.preprocessing == "caffe"


def test_load_export_model_errors_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--model"):
        common.load_export_model(str(tmp_path / "nothing"))
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="--model: cannot read"):
        common.load_export_model(str(bad))
    with pytest.raises(ValueError, match="--weights"):
        common.load_export_model(architecture="D", weights="nope")
    with pytest.raises(ValueError, match="--architecture"):
        common.load_export_model(architecture="Z", weights="imagenet")
    with pytest.raises(ValueError, match="Give --model"):
        common.load_export_model()


def test_signatures_and_outputs(exported):
    default, _, _ = exported
    assert set(default.signatures) >= {"serving_default", "predict_images",
                                       "predict_images_uint8"}
    sig = default.signatures["predict_images"]
    out = sig(images=tf.constant(tiny_run.pixels(32, 48)[None]))
    assert set(out) == set(saved_model.OUTPUT_KEYS)
    p = out["probabilities"].numpy()[0]
    order = np.argsort(-p)
    np.testing.assert_array_equal(out["top_k_indices"].numpy()[0], order)
    labels = [s.decode() for s in out["top_k_labels"].numpy()[0]]
    assert labels == [tiny_run.CLASS_NAMES[i] for i in order]


def test_matches_keras_classifier_at_crop_size(run, exported):
    _, model = run
    _, plain, _ = exported
    x = np.stack([tiny_run.pixels(32, 32, seed=s) for s in range(3)])
    expected = np.asarray(model(keras_vgg.preprocessing.apply(x, "caffe")))
    got = plain.signatures["predict_images"](images=tf.constant(x))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected,
                               atol=1e-4)
    # The probabilities really differ between images (a non-trivial test).
    assert np.abs(expected[0] - expected[1]).max() > 1e-3


def test_matches_keras_dense_evaluation(run, exported):
    _, model = run
    default, _, _ = exported
    image = tiny_run.pixels(45, 61, seed=3)
    got = default.signatures["predict_images"](images=tf.constant(image[None]))
    np.testing.assert_allclose(got["probabilities"].numpy()[0],
                               _reference(model, image, 40, True), atol=1e-4)
    got8 = default.signatures["predict_images_uint8"](
        images=tf.constant(image[None].astype(np.uint8)))
    np.testing.assert_allclose(
        got8["probabilities"].numpy()[0],
        _reference(model, image.astype(np.uint8).astype(np.float32), 40,
                   True), atol=1e-4)


def _encoded_batch():
    jpeg = tf.io.encode_jpeg(tiny_run.pixels(50, 70, 1).astype(np.uint8))
    png = tf.io.encode_png(tiny_run.pixels(90, 41, 2).astype(np.uint8))
    bmp_source = tiny_run.pixels(36, 36, 4).astype(np.uint8)
    return [jpeg.numpy(), png.numpy()], bmp_source


def test_serving_default_mixed_formats_and_sizes(run, exported):
    _, model = run
    default, _, _ = exported
    (jpeg, png), _ = _encoded_batch()
    out = default.signatures["serving_default"](
        images=tf.constant([jpeg, png, jpeg]))
    p = out["probabilities"].numpy()
    assert p.shape == (3, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    decoded_jpeg = tf.io.decode_jpeg(jpeg).numpy().astype(np.float32)
    png_pixels = tiny_run.pixels(90, 41, 2).astype(np.uint8).astype(
        np.float32)
    np.testing.assert_allclose(p[0], _reference(model, decoded_jpeg, 40,
                                                True), atol=1e-4)
    np.testing.assert_allclose(p[1], _reference(model, png_pixels, 40, True),
                               atol=1e-4)
    np.testing.assert_allclose(p[2], p[0], atol=1e-6)


def test_corrupt_image_is_invalid_argument(exported):
    default, _, _ = exported
    (jpeg, _), _ = _encoded_batch()
    with pytest.raises(tf.errors.InvalidArgumentError):
        default.signatures["serving_default"](
            images=tf.constant([jpeg, b"\xff\xd8 truncated jpeg"]))


def _tf_serving_decode(body):
    """What TF-Serving's REST API does with the row format: {"b64": s}
    becomes the bytes base64-decoded from s."""
    request = json.loads(body)
    images = []
    for instance in request["instances"]:
        value = instance[saved_model.INPUT_KEY]
        images.append(base64.b64decode(value["b64"]))
    return request["signature_name"], images


def test_rest_body_b64_decodes_to_accepted_bytes(exported):
    default, _, _ = exported
    images, _ = _encoded_batch()
    body = client.rest_request_body(images)
    signature, decoded = _tf_serving_decode(body)
    assert signature == "serving_default"
    assert decoded == images
    direct = default.signatures[signature](images=tf.constant(images))
    via_json = default.signatures[signature](images=tf.constant(decoded))
    np.testing.assert_array_equal(via_json["probabilities"].numpy(),
                                  direct["probabilities"].numpy())


def test_variables_are_stored_once(run, tmp_path):
    """The SavedModel holds each weight once (keras.export.ExportArchive
    in Keras 3.15 would store it twice)."""
    directory, model = run
    source = common.load_export_model(directory)
    out = str(tmp_path / "sm")
    saved_model.export_saved_model(source, out)
    weights_bytes = sum(w.nbytes for w in model.get_weights())
    data = [f for f in os.listdir(os.path.join(out, "variables"))
            if f.startswith("variables.data")]
    stored = sum(os.path.getsize(os.path.join(out, "variables", f))
                 for f in data)
    assert weights_bytes <= stored < 1.2 * weights_bytes


def test_class_names_are_an_asset(run, tmp_path):
    directory, _ = run
    out = str(tmp_path / "sm")
    saved_model.export_saved_model(common.load_export_model(directory), out)
    with open(os.path.join(out, "assets", "class_names.txt")) as f:
        assert f.read().split("\n")[:len(tiny_run.CLASS_NAMES)] == \
            list(tiny_run.CLASS_NAMES)
    loaded = tf.saved_model.load(out)
    image = tf.constant(tiny_run.pixels(40, 48)[None], tf.float32)
    out = loaded.signatures["predict_images"](images=image)
    names = [n.decode() for n in out["top_k_labels"].numpy()[0]]
    assert names == [tiny_run.CLASS_NAMES[i]
                     for i in out["top_k_indices"].numpy()[0]]


# -- untrusted images are bounded --------------------------------------------

def _jpeg_claiming(height, width):
    """A small JPEG whose frame header (SOF0) claims height x width."""
    jpeg = bytearray(tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(
        2, "big")
    return bytes(jpeg)


def _png(pixels):
    return tf.io.encode_png(pixels).numpy()


def _pil_encoded(pixels, image_format):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format)
    return buffer.getvalue()


# Run in a fresh process so that its peak memory is the probes' alone: the
# unbounded decoder took 16 GB (1 x 20000) and 21 GB (2 x 50000) here.
_PROBE = textwrap.dedent("""
    import sys
    import numpy as np, tensorflow as tf
    from tests import test_export_saved_model as probes_lib
    served = tf.saved_model.load(sys.argv[1])
    probes = {
        "1x20000": probes_lib._png(np.zeros((1, 20000, 3), np.uint8)),
        "2x50000": probes_lib._png(np.zeros((2, 50000, 3), np.uint8)),
        "jpeg": probes_lib._jpeg_claiming(60000, 60000),
        "webp": b"RIFF\\x00\\x00\\x00\\x00WEBPVP8 ",
    }
    for name, image in probes.items():
        try:
            served.signatures["serving_default"](images=tf.constant([image]))
            print(name, "ACCEPTED")
        except tf.errors.InvalidArgumentError as e:
            print(name, "REFUSED", e.message.replace("\\n", " "))
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork
    # and exec, so a child of a big test process would report the parent's.
    with open("/proc/self/status") as f:
        peak = [line.split()[1] for line in f if line.startswith("VmHWM")]
    print("maxrss_kb", peak[0])
""")


@pytest.mark.slow
def test_oversized_images_refused_before_decoding(default_path):
    result = subprocess.run([sys.executable, "-c", _PROBE, default_path],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["1x20000"].startswith("REFUSED")
    assert "image of 1x20000 pixels" in lines["1x20000"]
    assert "max_aspect_ratio=4" in lines["1x20000"]
    assert "image of 2x50000 pixels" in lines["2x50000"]
    assert "image of 60000x60000 pixels" in lines["jpeg"]
    assert f"max_pixels={4096 * 4096}" in lines["jpeg"]
    assert "not a JPEG, PNG, GIF or BMP image" in lines["webp"]
    assert int(lines["maxrss_kb"]) < 1024 * 1024, lines["maxrss_kb"]


def test_limits_are_exported_and_applied(run, tmp_path):
    directory, _ = run
    out = saved_model.export_saved_model(
        common.load_export_model(directory), str(tmp_path / "sm"),
        max_pixels=2000, max_aspect_ratio=2.0)
    served = tf.saved_model.load(out)
    assert served.max_pixels.numpy() == 2000
    assert served.max_aspect_ratio.numpy() == 2.0
    signature = served.signatures["serving_default"]

    def refusal(pixels):
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            signature(images=tf.constant([_png(pixels)]))
        return e.value.message

    assert "image of 50x41 pixels (height x width) is larger than " \
        "max_pixels=2000" in refusal(np.zeros((50, 41, 3), np.uint8))
    assert "image of 20x41 pixels (height x width) is more elongated than " \
        "max_aspect_ratio=2" in refusal(np.zeros((20, 41, 3), np.uint8))
    # At the limits: accepted.
    ok = signature(images=tf.constant([_png(
        np.zeros((25, 50, 3), np.uint8))]))
    assert ok["probabilities"].shape == (1, 4)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="image of 10x30 pixels"):
        served.signatures["predict_images"](
            images=tf.zeros([1, 10, 30, 3], tf.float32))
    with pytest.raises(ValueError, match="--max_aspect_ratio"):
        saved_model.export_saved_model(
            common.load_export_model(directory), str(tmp_path / "bad"),
            max_aspect_ratio=0.5)
    assert not os.path.exists(tmp_path / "bad")


def test_gif_and_bmp_decode_as_before(exported):
    """Formats whose size is read from their own header bytes: the outputs
    are those of their pixels, and the header reading gives their size."""
    from export import dense

    default, _, _ = exported
    pixels = tiny_run.pixels(45, 61, seed=5).astype(np.uint8)
    for image_format in ("GIF", "BMP"):
        encoded = _pil_encoded(pixels, image_format)
        assert dense.header_size(tf.constant(encoded)).numpy().tolist() == \
            [45, 61]
        decoded = tf.io.decode_image(encoded, channels=3,
                                     expand_animations=False)
        got = default.signatures["serving_default"](
            images=tf.constant([encoded]))["probabilities"]
        expected = default.signatures["predict_images_uint8"](
            images=decoded[None])["probabilities"]
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    # A top-down BMP stores a negative height.
    bmp = bytearray(_pil_encoded(pixels, "BMP"))
    bmp[22:26] = (-45).to_bytes(4, "little", signed=True)
    assert dense.header_size(tf.constant(bytes(bmp))).numpy().tolist() == \
        [45, 61]


@pytest.mark.slow
def test_cli_is_quiet_and_takes_the_limits(run, tmp_path):
    directory, _ = run
    out = str(tmp_path / "sm")
    result = subprocess.run(
        [sys.executable, "-m", "export.saved_model", f"--model={directory}",
         f"--output={out}", "--max_pixels=5000", "--max_aspect_ratio=3"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "signature_serialization" not in console
    assert "Assets written" not in console
    served = tf.saved_model.load(out)
    assert served.max_pixels.numpy() == 5000
    assert served.max_aspect_ratio.numpy() == 3.0
    # absl's --verbosity still brings TensorFlow's notes back.
    loud = subprocess.run(
        [sys.executable, "-m", "export.saved_model", f"--model={directory}",
         f"--output={tmp_path / 'loud'}", "--verbosity=0"],
        capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "signature_serialization" in loud.stdout + loud.stderr
