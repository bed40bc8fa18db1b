"""keras_vgg.load_images: the weight set's evaluation transform, the same
numbers as the single-crop test protocol."""

import numpy as np
import pytest
from PIL import Image

import keras_vgg
from pipelines import protocols


def _pixels(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(
        "uint8")


@pytest.mark.parametrize("weights,mode", [("imagenet", "caffe"),
                                          ("tv_in1k", "torch")])
def test_files_and_arrays_of_any_size(tmp_path, weights, mode):
    tall, wide = _pixels(300, 260, 1), _pixels(240, 400, 2)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    batch = keras_vgg.load_images([tall, str(tmp_path / "wide.png")],
                                  weights=weights)
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32
    for image, got in zip((tall, wide), batch):
        # The single-crop protocol at Q = 256: rescale, central crop, then
        # the weights' preprocessing.
        want = protocols.preprocess(protocols.central_crop(
            protocols.rescale(image, 256), 224), mode).numpy()[0]
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_transform_of_a_weight_set_and_errors(tmp_path):
    assert keras_vgg.eval_transform("imagenet") == keras_vgg.EvalTransform(
        resize=256, crop=224, preprocessing="caffe")
    assert keras_vgg.eval_transform("tv_in1k", crop=64).resize == 73
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        keras_vgg.load_images(str(tmp_path / "bad.jpg"))
    with pytest.raises(ValueError, match="RGB"):
        keras_vgg.load_images(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="weights"):
        keras_vgg.load_images(_pixels(10, 10), weights="nope")
