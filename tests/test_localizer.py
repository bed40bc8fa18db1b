import keras
import numpy as np
import pytest

import keras_vgg
from tests.helpers import images
from tests.helpers import randomize


def small_classifier(classes=6):
    return randomize(keras_vgg.VGG11(input_shape=(64, 64, 3), classes=classes))


@pytest.mark.parametrize("regression,units", [("scr", 4), ("pcr", 24)])
def test_heads_and_init_from_classifier(regression, units):
    clf = small_classifier()
    loc = keras_vgg.VGGLocalizer("A", regression=regression, classes=6,
                                 weights=clf, input_shape=(64, 64, 3))
    assert loc.output.shape == (None, units)
    assert loc.get_layer("boxes").activation is keras.activations.linear
    for name in ("block1_conv1", "block5_conv2", "fc1", "fc2"):
        for a, b in zip(loc.get_layer(name).get_weights(),
                        clf.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    names = [layer.name for layer in loc.layers]
    assert "predictions" not in names


def test_paper_sizes():
    pcr = keras_vgg.VGGLocalizer("D", regression="pcr")
    scr = keras_vgg.VGGLocalizer("D", regression="scr")
    assert pcr.output.shape == (None, 4000)
    head = 4096 * 4000 + 4000
    assert pcr.count_params() == 138_357_544 - (4096 * 1000 + 1000) + head
    assert scr.count_params() == 138_357_544 - (4096 * 1000 + 1000) + 4 * 4097


def test_fully_convolutional_localizer():
    loc = randomize(keras_vgg.VGGLocalizer("A", regression="scr", classes=3,
                                           input_shape=(64, 64, 3)))
    fcn = keras_vgg.fully_convolutional(loc)
    x = keras_vgg.preprocess_input(images(1, 64))
    np.testing.assert_allclose(fcn.predict(x, verbose=0)[:, 0, 0],
                               loc.predict(x, verbose=0), rtol=1e-4,
                               atol=1e-4)
    assert fcn.compute_output_shape((1, 128, 128, 3)) == (1, 3, 3, 4)


def test_weights_file_leaves_out_predictions(tmp_path):
    clf = small_classifier(classes=6)
    path = str(tmp_path / "clf.weights.h5")
    clf.save_weights(path)
    # A classifier file with another number of classes still loads.
    loc = keras_vgg.VGGLocalizer("A", regression="pcr", classes=6,
                                 weights=path, input_shape=(64, 64, 3))
    np.testing.assert_array_equal(loc.get_layer("fc1").get_weights()[0],
                                  clf.get_layer("fc1").get_weights()[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="regression"):
        keras_vgg.VGGLocalizer(regression="both")
    with pytest.raises(ValueError, match="weights"):
        keras_vgg.VGGLocalizer(weights="/no/file.h5")
