"""keras_vgg.checks and the public arguments it guards: each mistake is an
error naming the argument, never a silent default."""

import numpy as np
import pytest

import keras_vgg
from keras_vgg import checks


def test_check_bool_and_positive_int():
    assert checks.check_bool(np.bool_(True), "flag") is True
    assert checks.check_positive_int(np.int64(7), "n") == 7
    with pytest.raises(TypeError, match=r"`flag` must be True or False.*"
                       r"flag='yes' \(str\)"):
        checks.check_bool("yes", "flag")
    with pytest.raises(TypeError, match="`n` must be a positive integer"):
        checks.check_positive_int(True, "n")
    with pytest.raises(TypeError, match=r"n=2\.5"):
        checks.check_positive_int(2.5, "n")
    with pytest.raises(ValueError, match=r"`n` must be .* Received: n=0"):
        checks.check_positive_int(0, "n")


@pytest.mark.parametrize("argument", ["batch_norm", "include_top",
                                      "include_preprocessing"])
def test_vgg_refuses_a_non_bool_switch(argument):
    # "yes" (or "no") used to build the BN variant: any string is truthy.
    with pytest.raises(TypeError, match=f"`{argument}` must be True or "
                       f"False. Received: {argument}='no'"):
        keras_vgg.VGG("A", input_shape=(32, 32, 3), width_multiplier=0.125,
                      **{argument: "no"})


def test_vgg_classes_named():
    with pytest.raises(ValueError, match="`classes` .* classes=0"):
        keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=0)
    with pytest.raises(TypeError, match="`classes` .* classes='10'"):
        keras_vgg.VGG("A", input_shape=(32, 32, 3), classes="10")


@pytest.mark.parametrize("crop, error", [(0, ValueError), (-5, ValueError),
                                         (2.5, TypeError)])
def test_eval_transform_refuses_a_bad_crop(crop, error):
    # crop=0 used to give the weight set's 224 silently.
    with pytest.raises(error, match=rf"`crop` .* crop={crop}"):
        keras_vgg.eval_transform("imagenet", crop=crop)
    assert keras_vgg.eval_transform("imagenet", crop=112).resize == 128


def test_feature_extractor_refuses_a_non_model():
    # Used to be an AttributeError ('int' object has no attribute 'inputs').
    with pytest.raises(TypeError, match=r"`model` must be .* model=123 "
                       r"\(int\)"):
        keras_vgg.feature_extractor(123)
    with pytest.raises(TypeError, match="`batch_norm` .* batch_norm='yes'"):
        keras_vgg.feature_extractor("A", batch_norm="yes")
