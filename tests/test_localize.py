import numpy as np
import pytest

import keras_vgg
from keras_vgg import boxes as box_lib
from keras_vgg import runs
from pipelines import localize


def constant_localizer(box=(0.5, 0.5, 1.0, 1.0), crop=32, regression="scr",
                       classes=3):
    """A localiser whose every window predicts `box` (the whole window by
    default), for any input."""
    model = keras_vgg.VGGLocalizer("A", regression=regression, classes=classes,
                                   input_shape=(crop, crop, 3),
                                   width_multiplier=0.125)
    layer = model.get_layer("boxes")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel),
                       np.tile(np.array(box, "float32"), len(bias) // 4)])
    return runs.from_model(model, name="const").with_q(crop)


def classifier_fcn():
    """A random 3-class classifier's score map model (32x32 windows)."""
    clf = keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=3,
                        width_multiplier=0.125)
    return keras_vgg.fully_convolutional(clf)


def test_window_boxes_to_image():
    box_map = np.tile([0.5, 0.5, 1.0, 1.0], (2, 2, 1))
    out = box_lib.window_corners(box_map[None], (256, 256), 224, 32)[0]
    np.testing.assert_allclose(out[0, 0], [0, 0, 224 / 256, 224 / 256])
    np.testing.assert_allclose(out[1, 1], [32 / 256, 32 / 256, 1, 1])
    # A box in the left half of the window at position (0, 1).
    box_map[0, 1] = [0.25, 0.5, 0.5, 1.0]
    out = box_lib.window_corners(box_map[None], (256, 256), 224, 32)[0]
    np.testing.assert_allclose(out[0, 1], [0, 32 / 256, 224 / 256,
                                           (32 + 112) / 256])


def test_center_crop_box_maps_to_the_image():
    loc = constant_localizer()
    image = np.zeros((100, 200, 3), "float32")
    # Q=32: rescaled 32x64, central 32x32 crop at x = 16.
    np.testing.assert_allclose(localize.center_crop_box(loc, image, 0),
                               [0, 0.25, 1, 0.75], atol=1e-6)


def test_center_crop_box_pcr_takes_the_class():
    loc = constant_localizer(regression="pcr")
    layer = loc.model.get_layer("boxes")
    kernel, bias = layer.get_weights()
    bias[8:12] = [0.25, 0.5, 0.5, 1.0]   # class 2: the left half
    layer.set_weights([kernel, bias])
    image = np.zeros((64, 64, 3), "float32")
    np.testing.assert_allclose(localize.center_crop_box(loc, image, 2),
                               [0, 0, 1, 0.5], atol=1e-6)
    np.testing.assert_allclose(localize.center_crop_box(loc, image, 0),
                               [0, 0, 1, 1], atol=1e-6)


def test_dense_boxes_are_the_windows_merged():
    loc = constant_localizer()
    fcn = classifier_fcn()
    image = np.zeros((64, 64, 3), "float32")
    merged = localize.dense_boxes([loc], [fcn], image, [64], [0, 1])
    boxes, scores = merged[0]
    # 2x2 positions whose 32-pixel windows do not overlap: four boxes.
    expected = {(0, 0, .5, .5), (0, .5, .5, 1), (.5, 0, 1, .5), (.5, .5, 1, 1)}
    assert {tuple(np.round(b, 6)) for b in boxes} == expected
    assert len(scores) == 4 and np.all(scores > 0)


def test_centered_grid():
    assert box_lib.centered_grid(64, 85, 64, 32) == (0, 10, 64, 64)
    assert box_lib.centered_grid(64, 100, 64, 32) == (0, 2, 64, 96)
    assert box_lib.centered_grid(256, 341, 224, 32) == (0, 10, 256, 320)


def test_dense_boxes_centre_the_windows():
    # One 32-pixel window on a 32x50 image: centred at x = 9, not at 0.
    loc = constant_localizer()
    fcn = classifier_fcn()
    image = np.zeros((32, 50, 3), "float32")
    boxes, _ = localize.dense_boxes([loc], [fcn], image, [32], [0])[0]
    np.testing.assert_allclose(boxes, [[0, 9 / 50, 1, 41 / 50]], atol=1e-6)


def test_dense_boxes_flip_adds_the_mirrored_boxes():
    # Every window predicts its left half; the mirrored image's left half is
    # the original's right half.
    loc = constant_localizer(box=(0.25, 0.5, 0.5, 1.0))
    fcn = classifier_fcn()
    image = np.random.RandomState(0).uniform(0, 255, (32, 32, 3))
    plain = localize.dense_boxes([loc], [fcn], image, [32], [1])[1]
    np.testing.assert_allclose(plain[0], [[0, 0, 1, 0.5]], atol=1e-6)
    boxes, scores = localize.dense_boxes([loc], [fcn], image, [32], [1],
                                         flip=True)[1]
    assert {tuple(np.round(b, 6)) for b in boxes} == {(0, 0, 1, .5),
                                                      (0, .5, 1, 1)}
    assert len(scores) == 2


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="--model: no model file"):
        runs.load_localizer(str(tmp_path / "none"))
    clf = keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=3,
                        width_multiplier=0.125)
    clf.save(str(tmp_path / "model.keras"))
    with pytest.raises(ValueError, match="not a localiser"):
        runs.load_localizer(str(tmp_path))
    with pytest.raises(ValueError, match="protocol"):
        localize.evaluate_localization([str(tmp_path)], protocol="grid")


def test_localization_error_hand_made_folder(tmp_path):
    # Two images with pixel boxes in a boxes.csv; the localiser always
    # predicts its whole window.  Image "one" (32x32): the box is the whole
    # image, hit.  Image "two" (32x64): the central crop is x in [16, 48],
    # the box is x in [0, 16]: IoU 0, miss.  Error 1/2.
    import tensorflow as tf

    for name, (h, w) in (("one", (32, 32)), ("two", (32, 64))):
        (tmp_path / name).mkdir()
        pixels = tf.zeros((h, w, 3), tf.uint8)
        tf.io.write_file(str(tmp_path / name / f"{name}.png"),
                         tf.io.encode_png(pixels))
    (tmp_path / "boxes.csv").write_text(
        "filename,xmin,ymin,xmax,ymax\n"
        "one.png,0,0,32,32\n"
        "two/two.png,0,0,16,32\n")
    result = localize.evaluate_localization(
        [constant_localizer()], dataset=f"folder:{tmp_path}", split="train",
        protocol="center")
    assert result["images"] == 2
    assert result["localization_error"] == 0.5



@pytest.mark.slow
def test_figure_draws_the_best_box_last_and_leaves_out_unlikely_classes(
        tmp_path):
    import tensorflow as tf
    from matplotlib.patches import Rectangle

    from pipelines import protocols
    from tests import tiny_run

    cls, _ = tiny_run.write_run(str(tmp_path / "cls"))
    loc, _ = tiny_run.write_localizer_run(str(tmp_path / "loc"))
    image = np.round(tiny_run.pixels(60, 90, seed=7)).astype("uint8")
    path = str(tmp_path / "image.png")
    tf.io.write_file(path, tf.io.encode_png(image))
    clf = runs.load_classifier(cls)
    probs = protocols.dense(clf.fcn, image.astype("float32"), 40,
                            flip=True, preprocessing="caffe")[0]
    ranked = np.argsort(-probs)
    # A threshold between the 2nd and 3rd class: of top=3, two are drawn.
    threshold = (probs[ranked[1]] + probs[ranked[2]]) / 2
    fig = localize.localization_figure(loc, cls, path, top=3,
                                       min_probability=threshold)
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    labels = [t.get_text() for t in ax.texts]
    names = tiny_run.CLASS_NAMES
    assert labels == [f"{names[c]} {probs[c]:.2f}" for c in ranked[1::-1]]
    assert len(boxes) == 2
    # The last rectangle, drawn on top, is the best class's merged box.
    best = int(ranked[0])
    merged = localize.dense_boxes(
        [runs.load_localizer(loc)],
        [clf.fully_convolutional()], image.astype("float32"),
        [40], [best], flip=True)[best]
    y0, x0, y1, x1 = merged[0][0] * [60, 90, 60, 90]
    np.testing.assert_allclose(boxes[-1].get_xy(), (x0, y0), atol=1e-6)
    np.testing.assert_allclose(boxes[-1].get_width(), x1 - x0, atol=1e-6)
    assert ax.get_title() == ("image.png: localiser loc, classifier cls, "
                              "Q=40")
    # Above every probability: the best class alone.
    fig = localize.localization_figure(loc, cls, path, top=3,
                                       min_probability=0.99)
    assert [t.get_text() for t in fig.axes[0].texts] == [labels[-1]]


def test_cli_writes_a_png(tmp_path):
    import os
    import subprocess
    import sys

    from tests import tiny_run

    cls, _ = tiny_run.write_run(str(tmp_path / "cls"))
    loc, _ = tiny_run.write_localizer_run(str(tmp_path / "loc"))
    output = str(tmp_path / "boxes.png")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    image = os.path.join(root, "pipelines", "data", "grace_hopper.jpg")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.localize", image,
         f"--model={loc}", f"--classifier={cls}", f"--output={output}"],
        capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def _named_pcr_localizer(names):
    """A 2-class PCR localiser named `names`: class 0's box is the left
    half of the window, class 1's the whole window."""
    loc = constant_localizer(regression="pcr", classes=2)
    layer = loc.model.get_layer("boxes")
    kernel, bias = layer.get_weights()
    bias[0:4] = [0.25, 0.5, 0.5, 1.0]
    bias[4:8] = [0.5, 0.5, 1.0, 1.0]
    layer.set_weights([kernel, bias])
    return runs.from_model(loc.model, name="named",
                           class_names=names).with_q(32)


def _two_box_folder(root):
    """one/one.png with the whole image as its box, two/two.png with its
    left half; folders read in sorted order: one = 0, two = 1."""
    import tensorflow as tf

    for name in ("one", "two"):
        (root / name).mkdir()
        tf.io.write_file(str(root / name / f"{name}.png"),
                         tf.io.encode_png(tf.zeros((32, 32, 3), tf.uint8)))
    (root / "boxes.csv").write_text("filename,xmin,ymin,xmax,ymax\n"
                                    "one.png,0,0,32,32\n"
                                    "two.png,0,0,16,32\n")


def test_localization_matches_classes_by_name(tmp_path):
    # The model lists "two" first: by position each image would take the
    # other class's box (IoU 0.5, a miss); by name both hit.
    _two_box_folder(tmp_path)
    result = localize.evaluate_localization(
        [_named_pcr_localizer(["two", "one"])], dataset=f"folder:{tmp_path}",
        split="train", protocol="center")
    assert result["images"] == 2 and result["localization_error"] == 0.0
    with pytest.raises(ValueError, match=r"the model\(s\) lacks \['two'\]; "
                       r".* lacks \['three'\]"):
        localize.evaluate_localization(
            [_named_pcr_localizer(["one", "three"])],
            dataset=f"folder:{tmp_path}", split="train", protocol="center")


def test_max_images_samples_every_class(tmp_path, capsys):
    # Class "one": three images whose box is the whole image (hits);
    # class "two": three whose box is the left half (misses, IoU < 0.5).
    # The first two images are both of "one": a sample of every class
    # holds one of each, an error of 1/2.
    import json

    import tensorflow as tf

    from pipelines import evaluate

    rows = []
    for name, box in (("one", "0,0,32,32"), ("two", "0,0,16,32")):
        (tmp_path / name).mkdir()
        for i in range(3):
            tf.io.write_file(str(tmp_path / name / f"{i}.png"),
                             tf.io.encode_png(tf.zeros((32, 32, 3),
                                                       tf.uint8)))
            rows.append(f"{name}/{i}.png,{box}")
    (tmp_path / "boxes.csv").write_text("filename,xmin,ymin,xmax,ymax\n"
                                        + "\n".join(rows) + "\n")
    loc = constant_localizer(classes=2)
    loc.model.save(str(tmp_path / "loc.keras"))
    output = tmp_path / "loc.json"
    evaluate.cli([f"--model={tmp_path}/loc.keras", "--task=localisation",
                  "--loc_protocol=center", f"--dataset=folder:{tmp_path}",
                  "--split=train", "--max_images=2", f"--output={output}"])
    [result] = json.loads(output.read_text())
    assert result["images"] == 2 and result["localization_error"] == 0.5
    assert result["class_counts"] == {"one": 1, "two": 1}
    assert "Sampled from every class: one 1, two 1" in \
        capsys.readouterr().out
