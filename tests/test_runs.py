"""keras_vgg.runs: one reading of a run, and every consumer's test scale Q
taken from it."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from export import common
from export import dense
from keras_vgg import runs
from pipelines import evaluate
from pipelines import recipes
from pipelines import scoremap
from tests import tiny_run


def test_scales_follow_the_paper():
    fixed = {"scale_min": 256, "scale_max": 256}
    assert runs.multi_scales(fixed, 224) == [224, 256, 288]
    assert runs.multi_scales({"scale_min": 384, "scale_max": 384}, 224) == [
        352, 384, 416]
    jittered = {"scale_min": 256, "scale_max": 512}
    assert runs.multi_scales(jittered, 224) == [256, 384, 512]
    assert runs.multi_scales(None, 224) == [224, 256, 288]
    assert runs.test_scale(jittered, 224) == 384
    assert runs.test_scale({"scale_min": 384, "scale_max": 384}, 224) == 384
    assert runs.test_scale(None, 224) == 256
    # Small crops: S and the step scale with the crop; scales under the
    # crop are dropped.
    assert runs.multi_scales(tiny_run.training_config(), 32) == [35, 40, 45]
    assert runs.multi_scales(tiny_run.training_config(32, 64), 32) == [
        32, 48, 64]
    assert runs.test_scale(None, 32) == 37
    assert runs.multi_scales(None, 32) == [32, 37, 42]
    assert runs.test_scale({"scale_min": 40, "scale_max": 40,
                            "test_scale": 36}, 32) == 36


def test_check_test_scale():
    assert runs.check_test_scale(np.int64(40), 32) == 40
    with pytest.raises(ValueError, match="Q=30 is smaller than the crop"):
        runs.check_test_scale(30, 32, "--q")
    for bad in ("40", 40.5, True, None):
        with pytest.raises(ValueError, match="must be an int"):
            runs.check_test_scale(bad, 32)


def test_old_training_configs_are_read_in_todays_words(tmp_path):
    # tiny_run writes the keys of earlier versions: "config", and the
    # localiser's task "localisation".
    directory, _ = tiny_run.write_localizer_run(str(tmp_path / "loc"))
    run = runs.load_run(directory)
    assert run.task == "localization" and run.regression == "pcr"
    assert run.architecture == "A"
    assert run.class_names == tiny_run.CLASS_NAMES
    assert run.num_classes == len(tiny_run.CLASS_NAMES)
    with pytest.raises(ValueError, match="not a localiser"):
        runs.load_localizer(tiny_run.write_run(str(tmp_path / "cls"))[0])
    with pytest.raises(ValueError, match="is a localiser"):
        runs.load_classifier(directory)


def test_invented_class_names_are_no_names():
    model = tiny_run.tiny_model()
    digits = ["0", "1", "2", "3"]

    def names(**config):
        return runs.from_model(model, training_config=config).class_names

    assert names(class_names=digits, class_names_invented=True) is None
    # A dataset's own digit names (a folder of classes 0-3) are real.
    assert names(class_names=digits, class_names_invented=False) == digits
    # Runs from before the record: digits in order read as before (none).
    assert names(class_names=digits) is None
    assert names(class_names=["5", "6", "7", "8"]) == ["5", "6", "7", "8"]


def test_errors_name_the_argument_and_file(tmp_path):
    with pytest.raises(ValueError, match="--init_from: no model file"):
        runs.load_run(str(tmp_path / "none"), "--init_from")
    directory, _ = tiny_run.write_run(str(tmp_path / "run"))
    (tmp_path / "run" / "training_config.json").write_text("{broken")
    with pytest.raises(ValueError, match="training_config.json"):
        runs.load_run(directory)
    (tmp_path / "run" / "training_config.json").write_text("{}")
    (tmp_path / "run" / "class_names.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 class names .* 4 classes"):
        runs.load_run(directory)
    softmaxless = keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=3,
                                width_multiplier=0.125,
                                classifier_activation=None)
    with pytest.raises(ValueError, match="softmax"):
        runs.load_classifier(softmaxless)


def test_preprocessing_layer_means_none_for_every_task():
    # A model holding its Preprocessing layer takes raw pixels, whatever the
    # config says: classifiers and localisers alike.
    clf = keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=3,
                        width_multiplier=0.125, include_preprocessing=True)
    assert runs.from_model(clf, training_config={
        "preprocessing": "caffe"}).preprocessing == "none"
    loc = keras_vgg.VGGLocalizer("A", regression="scr", classes=3,
                                 input_shape=(32, 32, 3),
                                 width_multiplier=0.125,
                                 include_preprocessing=True)
    assert runs.from_model(loc, training_config={
        "preprocessing": "caffe"}).preprocessing == "none"
    plain = keras_vgg.VGGLocalizer("A", regression="scr", classes=3,
                                   input_shape=(32, 32, 3),
                                   width_multiplier=0.125)
    assert runs.from_model(plain, training_config={
        "preprocessing": "torch"}).preprocessing == "torch"


# Every consumer of the test scale picks the same Q: {no config, fixed S,
# jittered S, explicit test scale} x {crop 32, 64, 224}.  Expected values
# by hand from the paper's rule (S = 256 * crop / 224 without a config).
CASES = {
    "no config": (None, {32: 37, 64: 73, 224: 256}),
    "fixed S": (lambda c: {"scale_min": c * 5 // 4, "scale_max": c * 5 // 4}
                if c < 224 else {"scale_min": 384, "scale_max": 384},
                {32: 40, 64: 80, 224: 384}),
    "jittered S": (lambda c: {"scale_min": c, "scale_max": c * 3 // 2}
                   if c < 224 else {"scale_min": 256, "scale_max": 512},
                   {32: 40, 64: 80, 224: 384}),
    "explicit test scale": (
        lambda c: {"scale_min": c * 5 // 4, "scale_max": c * 5 // 4,
                   "test_scale": {32: 36, 64: 70, 224: 300}[c]},
        {32: 36, 64: 70, 224: 300}),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny classifier and localiser per crop size, saved once."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for crop in (32, 64, 224):
        clf = keras_vgg.VGG("A", input_shape=(crop, crop, 3), classes=4,
                            width_multiplier=0.125, dropout=0.0)
        loc = keras_vgg.VGGLocalizer("A", regression="pcr", classes=4,
                                     input_shape=(crop, crop, 3),
                                     width_multiplier=0.125, dropout=0.0)
        paths[crop] = (str(root / f"cls{crop}.keras"),
                       str(root / f"loc{crop}.keras"))
        clf.save(paths[crop][0])
        loc.save(paths[crop][1])
    return paths


def _run_dir(directory, model_file, config):
    os.makedirs(directory)
    shutil.copy(model_file, os.path.join(directory, "model.keras"))
    if config is not None:
        with open(os.path.join(directory, "training_config.json"), "w") as f:
            json.dump(dict(config, class_names=list("abcd")), f)
    return str(directory)


@pytest.mark.parametrize("crop", [32, 64, 224])
@pytest.mark.parametrize("case", list(CASES))
def test_every_consumer_picks_the_same_q(case, crop, saved_models,
                                         tmp_path):
    make_config, expected = CASES[case]
    config = make_config(crop) if make_config else None
    cls = _run_dir(tmp_path / "cls", saved_models[crop][0], config)
    loc = _run_dir(tmp_path / "loc", saved_models[crop][1], config)
    image = str(tmp_path / "image.png")
    tf.io.write_file(image, tf.io.encode_png(
        np.round(tiny_run.pixels(50, 60)).astype("uint8")))

    found = {
        "evaluate": evaluate.scales_for(runs.load_classifier(cls),
                                        "single"),
        "export": [dense.DenseClassifier(common.load_export_model(cls)).q],
        "export localiser": [common.load_localizer_source(loc, cls)
                             .test_scale],
        "localize": [runs.load_localizer(loc).test_scale],
    }
    if config is not None:
        cfg = recipes.TrainConfig(crop=crop, **{
            k: v for k, v in config.items() if k != "class_names"})
        found["train validation"] = [cfg.validation_scale]
    assert found == {k: [expected[crop]] for k in found}
    # The score-map picture: its own rule, also in keras_vgg.runs (at the
    # test scale the map is often one position).
    fig = scoremap.score_map_figure(cls, image, top=1)
    drawn = int(fig.axes[0].get_title().split(":")[0][2:])
    assert drawn == runs.load_run(cls).figure_scale == max(expected[crop],
                                                            2 * crop)
