"""pipelines.scoremap: the figure, its labels and the command line."""

import re

import keras
import numpy as np
import pytest

import keras_vgg
from keras_vgg import runs
from pipelines import protocols
from pipelines import scoremap
from tests.tiny_run import CLASS_NAMES
from tests.tiny_run import pixels
from tests.tiny_run import write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoremap")
    directory, model = write_run(str(root / "run"), seed=2)
    image = str(root / "image.png")
    keras.utils.save_img(image, np.floor(pixels(70, 90, seed=7)))
    return directory, model, image


def test_figure_labels_are_the_dense_probabilities(run):
    directory, model, image = run
    fig = scoremap.score_map_figure(directory, image, q=64, top=2)
    axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(axes) == 3                       # the image + 2 classes
    fcn = keras_vgg.fully_convolutional(model, average=True)
    p = protocols.dense(fcn, scoremap.load_image(image), 64)[0]
    best = np.argsort(-p)[:2]
    for ax, c in zip(axes[1:], best):
        assert ax.get_title() == f"{CLASS_NAMES[c]}: {p[c]:.1%}"
    assert "score map 2x2" in axes[0].get_title()   # 64x82 -> 2x2 windows


def test_score_map_is_the_fully_convolutional_output(run):
    # Each position is the classifier on its 32x32 window, but with the
    # image around it instead of zero padding at the window's borders:
    # the per-position softmax of fully_convolutional(model).
    directory, model, image = run
    loaded = runs.load_classifier(directory)
    pixels_ = scoremap.load_image(image)
    score_map, _, rescaled, geometry = scoremap.score_maps(loaded, pixels_,
                                                           64)
    assert geometry == (32, 32) and score_map.shape == (2, 2, 4)
    assert rescaled.shape == (64, 82, 3)
    fcn_map = keras_vgg.fully_convolutional(model)
    x = keras_vgg.preprocess_input(protocols.rescale(pixels_, 64).numpy())
    np.testing.assert_allclose(score_map, np.asarray(fcn_map(x))[0],
                               rtol=1e-4, atol=1e-6)


def test_cli_writes_a_png(run, tmp_path):
    directory, _, image = run
    output = tmp_path / "out" / "scores.png"
    scoremap.cli([image, f"--model={directory}/model.keras",
                  f"--output={output}", "--q=40", "--top=1"])
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_names_and_errors(run, tmp_path):
    directory, _, image = run
    assert runs.load_run(directory).class_names == CLASS_NAMES
    def tiny(classes):
        return keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=classes,
                             width_multiplier=0.125)
    assert runs.load_run(tiny(1000)).class_names[0] == \
        keras_vgg.class_names()[0]
    assert runs.load_run(tiny(7)).class_names is None
    with pytest.raises(ValueError, match="No image file"):
        scoremap.score_map_figure(directory, str(tmp_path / "none.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Cannot decode"):
        scoremap.score_map_figure(directory, str(bad))
    with pytest.raises(ValueError, match="Q=20"):
        scoremap.score_map_figure(directory, image, q=20)


def _heat_cell_centres(ax, rows, cols):
    """(x, y) centres at which the overlay draws cells (0, 0) and
    (rows - 1, cols - 1)."""
    left, right, bottom, top = ax.get_images()[1].get_extent()
    width, height = (right - left) / cols, (bottom - top) / rows
    return ((left + width / 2, top + height / 2),
            (left + width * (cols - 0.5), top + height * (rows - 0.5)))


def test_default_q_gives_a_map_with_cells_on_their_windows(run):
    # A crop-32 model without a training config tests at Q = 37: a 1x1
    # map.  The figure's default is 2 * crop = 64: on the 70x90 image,
    # 64x82 and a 2x2 map of 32-pixel windows every 32 pixels.
    _, model, image = run
    loaded = runs.load_classifier(model)
    assert loaded.test_scale == 37 and loaded.figure_scale == 64
    fig = scoremap.score_map_figure(model, image, top=1)
    axes = [ax for ax in fig.axes if ax.get_images()]
    assert "Q=64: 64x82" in axes[0].get_title()
    assert "score map 2x2" in axes[0].get_title()
    heat = axes[1].get_images()[1].get_array()
    assert heat.shape == (2, 2)
    # Cell (i, j) is centred on the window at (32 i, 32 j), side 32.
    first, last = _heat_cell_centres(axes[1], 2, 2)
    np.testing.assert_allclose(first, (16, 16))
    np.testing.assert_allclose(last, (32 + 16, 32 + 16))
    # An explicit q still wins: at Q=40 the map is 1x1.
    fig = scoremap.score_map_figure(model, image, q=40, top=1)
    assert "score map 1x1" in fig.axes[0].get_title()


@pytest.mark.slow
def test_cli_console_shows_only_the_result(run, tmp_path):
    # As a user runs it: none of TensorFlow's settings from this process.
    import os
    import subprocess
    import sys

    directory, _, image = run
    output = tmp_path / "scores.png"
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_VGG_VERBOSE")}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.scoremap", image,
         f"--model={directory}", f"--output={output}", "--top=1"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"Score maps written to {output}\n"
    noise = [line for line in result.stderr.splitlines()
             if "cuda" in line.lower() or "onednn" in line.lower()
             or re.match(r"[IWE]\d{4} ", line)]
    assert noise == []
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
