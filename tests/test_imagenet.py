import numpy as np
import pytest

import keras_vgg
from keras_vgg import imagenet


def test_class_index_is_complete():
    index = imagenet.class_index()
    assert len(index) == 1000
    assert len({wnid for wnid, _ in index}) == 1000
    assert index[0] == ("n01440764", "tench")
    assert index[999] == ("n15075141", "toilet_tissue")
    assert index[281] == ("n02123045", "tabby")


def test_decode_predictions_orders_and_scores():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [281, 1, 999]] = [0.5, 0.3, 0.2]
    preds[1, 7] = 1.0
    out = keras_vgg.decode_predictions(preds, top=3)
    assert [name for _, name, _ in out[0]] == ["tabby", "goldfish",
                                               "toilet_tissue"]
    assert out[0][0][2] == pytest.approx(0.5)
    assert out[1][0][:2] == imagenet.class_index()[7]
    assert len(out[1]) == 3


@pytest.mark.parametrize("shape", [(1000,), (2, 10), (1, 1001)])
def test_decode_predictions_bad_shape(shape):
    with pytest.raises(ValueError, match="preds.shape"):
        keras_vgg.decode_predictions(np.zeros(shape))


def test_decode_predictions_bad_top():
    with pytest.raises(ValueError, match="top"):
        keras_vgg.decode_predictions(np.zeros((1, 1000)), top=0)
