"""Fine-tuning from pretrained weights: --weights, --fine_tune=from:...,
--body_lr_multiplier and the finetune recipes."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vgg
from keras_vgg import imagenet
from keras_vgg import runs
from pipelines import recipes
from pipelines import tasks
from pipelines import train
from tests.helpers import randomize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(),
                                                    b.get_weights()))


def test_a_head_of_other_classes_is_new_unless_kept(pretrained):
    path, source = pretrained
    cfg = recipes.TrainConfig(weights=path, **SMALL)
    # As many classes as the weights' head, but nothing says they are its.
    task = tasks.make_task(cfg, num_classes=7,
                           class_names=[f"c{i}" for i in range(7)])
    model = task.build_model()
    assert "predictions" in task.pretrained.missing
    assert "predictions" not in task.pretrained.loaded
    assert "do not say" in task.new_head_reason
    assert _same(model.get_layer("fc2"), source.get_layer("fc2"))
    assert not _same(model.get_layer("predictions"),
                     source.get_layer("predictions"))
    kept = tasks.make_task(dataclasses.replace(cfg, keep_head=True), 7,
                           [f"c{i}" for i in range(7)])
    model = kept.build_model()
    assert kept.new_head_reason is None
    assert _same(model.get_layer("predictions"),
                 source.get_layer("predictions"))


def test_imagenet_head_serves_imagenet_classes_only():
    names = imagenet.class_names()
    wnids = [wnid for wnid, _ in imagenet.class_index()]
    assert tasks.new_head_reason("imagenet", names) is None
    assert tasks.new_head_reason("tv_in1k", wnids) is None   # tfds' names
    assert "not the weights' own" in tasks.new_head_reason(
        "imagenet", [f"x{i}" for i in range(1000)])
    assert "not the weights' own" in tasks.new_head_reason(
        "imagenet", names[1:] + names[:1])
    assert "does not name its classes (1000" in tasks.new_head_reason(
        "imagenet", None)


def _digit_folder(root, classes=7):
    for c in range(classes):
        os.makedirs(root / str(c))
        for i in range(2):
            keras.utils.save_img(
                str(root / str(c) / f"{i}.png"), np.random.RandomState(
                    10 * c + i).uniform(0, 255, (36, 36, 3)), scale=False)
    return root


@pytest.mark.slow
def test_train_cli_starts_a_new_head_for_other_classes(pretrained, tmp_path):
    path, source = pretrained
    folder = _digit_folder(tmp_path / "digits")

    def train_cli(model_dir, *extra):
        # A learning rate so small that one step leaves loaded weights as
        # they were loaded.
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.train", "--recipe=demo",
             f"--dataset=folder:{folder}", f"--model_dir={model_dir}",
             f"--weights={path}", "--architecture=A",
             "--width_multiplier=0.125", "--crop=32", "--scale_min=32",
             "--scale_max=32", "--dropout=0", "--batch_size=2",
             "--nobatch_norm",
             "--steps_per_epoch=1", "--max_steps=1", "--max_epochs=1",
             "--learning_rate=1e-12", "--weight_decay=0", *extra],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout, runs.load_run(model_dir).model

    out, model = train_cli(tmp_path / "new")
    assert "block1_conv1, " in out and "fc2" in out
    assert "new (not in the weights, of another shape or of other " \
           "classes): predictions" in out
    assert "--keep_head" in out
    np.testing.assert_allclose(model.get_layer("fc2").get_weights()[0],
                               source.get_layer("fc2").get_weights()[0],
                               atol=1e-6)
    assert not np.allclose(model.get_layer("predictions").get_weights()[0],
                           source.get_layer("predictions").get_weights()[0],
                           atol=1e-3)
    config = json.loads((tmp_path / "new" / "training_config.json")
                        .read_text())
    assert config["class_names_invented"] is False
    assert runs.load_run(str(tmp_path / "new")).class_names == [
        str(c) for c in range(7)]

    out, model = train_cli(tmp_path / "kept", "--keep_head")
    assert "new" not in out.split("Loaded")[1].splitlines()[0]
    np.testing.assert_allclose(
        model.get_layer("predictions").get_weights()[0],
        source.get_layer("predictions").get_weights()[0], atol=1e-6)
