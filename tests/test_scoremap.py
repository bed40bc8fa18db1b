"""pipelines.scoremap: the figure, its labels and the command line."""

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
