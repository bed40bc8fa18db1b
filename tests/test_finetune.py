"""Fine-tuning from pretrained weights: --weights, --fine_tune=from:...,
--body_lr_multiplier and the finetune recipes."""

import numpy as np
import pytest

import keras_vgg
from keras_vgg import runs
from pipelines import recipes
from pipelines import tasks
from pipelines import train
from tests.helpers import randomize

SMALL = dict(architecture="A", width_multiplier=0.125, crop=32,
             scale_min=32, scale_max=32, dropout=0.0)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 'pretrained' net A of 7 classes as a Keras 3 weights file."""
    model = randomize(keras_vgg.VGG("A", width_multiplier=0.125,
                                    input_shape=(32, 32, 3), classes=7),
                      seed=5)
    path = str(tmp_path_factory.mktemp("pre") / "pretrained.weights.h5")
    model.save_weights(path)
    return path, model


def test_weights_load_the_body_and_leave_a_new_head(pretrained):
    path, source = pretrained
    cfg = recipes.TrainConfig(weights=path, **SMALL)
    assert cfg.preprocessing == "caffe"   # the weights' own
    task = tasks.make_task(cfg, num_classes=5)
    model = task.build_model()
    assert task.pretrained.mismatched == ["predictions"]
    assert "block5_conv2" in task.pretrained.loaded
    for name in ("block1_conv1", "block5_conv2", "fc1", "fc2"):
        for a, b in zip(model.get_layer(name).get_weights(),
                        source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert model.get_layer("predictions").get_weights()[0].shape == (512, 5)


def test_fine_tune_names_and_recipes():
    model = keras_vgg.VGG("A", width_multiplier=0.125,
                          input_shape=(32, 32, 3), classes=3)
    tasks.freeze_before(model, "from:block4")
    trained = [layer.name for layer in model.layers if layer.trainable
               and layer.weights]
    assert trained[0] == "block4_conv1" and "block3_conv2" not in trained
    with pytest.raises(ValueError, match=r"no layer or block 'block9'.*"
                                         r"block5"):
        tasks.freeze_before(model, "from:block9")
    with pytest.raises(ValueError, match="fine_tune"):
        recipes.TrainConfig(fine_tune="conv")
    with pytest.raises(ValueError, match="weights"):
        recipes.TrainConfig(weights="/no/such/file.h5")
    assert recipes.get_recipe("vgg16_finetune").weights == "imagenet"
    assert recipes.get_recipe("vgg16_finetune").preprocessing == "caffe"
    assert recipes.get_recipe("vgg11_finetune").preprocessing == "torch"


@pytest.mark.slow
def test_frozen_blocks_and_a_slower_body_when_fine_tuning(
        pretrained, tmp_path, data_dir):
    path, source = pretrained
    common = dict(SMALL, weights=path, max_steps=2, steps_per_epoch=2,
                  batch_size=8, val_batch_size=25, seed=0, max_epochs=1,
                  learning_rate=0.05)
    train.train(recipes.TrainConfig(fine_tune="from:block4", **common),
                model_dir=str(tmp_path / "from4"), data_dir=data_dir,
                verbose=0)
    model = runs.load_run(str(tmp_path / "from4")).model

    def same(name):
        return all(np.array_equal(a, b) for a, b in zip(
            model.get_layer(name).get_weights(),
            source.get_layer(name).get_weights()))

    assert same("block1_conv1") and same("block3_conv2")
    assert not same("block4_conv1") and not same("fc1")
    train.train(recipes.TrainConfig(body_lr_multiplier=0.0, **common),
                model_dir=str(tmp_path / "still"), data_dir=data_dir,
                verbose=0)
    model = runs.load_run(str(tmp_path / "still")).model
    assert same("block1_conv1") and same("block5_conv2")
    assert not same("fc1")
