import os

import keras
import numpy as np
import pytest

import keras_vgg
from keras_vgg import configs
from tests.helpers import WITH_HEAD
from tests.helpers import WITHOUT_HEAD
from tests.helpers import images

BUILDERS = {"A": keras_vgg.VGG11, "A-LRN": keras_vgg.VGG11LRN,
            "B": keras_vgg.VGG13, "C": keras_vgg.VGG16C, "D": keras_vgg.VGG16,
            "E": keras_vgg.VGG19}


@pytest.mark.parametrize("config", list(WITH_HEAD))
def test_exact_parameter_counts_and_table1_shapes(config):
    model = BUILDERS[config]()
    assert model.count_params() == WITH_HEAD[config]
    cfg = configs.get_config(config)
    # Every conv of Table 1 with its kernel size and width, in order.
    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.kernel_size[0], c.filters) for c in convs] == [
        (k, f) for _, _, k, f in cfg.convs]
    assert all(c.strides == (1, 1) and c.padding == "same" for c in convs)
    for block, side, width in zip(range(1, 6), (112, 56, 28, 14, 7),
                                  (64, 128, 256, 512, 512)):
        assert model.get_layer(f"block{block}_pool").output.shape == (
            None, side, side, width)
    assert model.get_layer("fc1").kernel.shape == (25088, 4096)
    assert model.get_layer("predictions").output.shape == (None, 1000)
    assert [layer.rate for layer in model.layers
            if isinstance(layer, keras.layers.Dropout)] == [0.5, 0.5]
    names = [layer.name for layer in model.layers]
    assert ("block1_lrn" in names) == (config == "A-LRN")
    if config == "A-LRN":
        assert names.index("block1_lrn") == names.index("block1_conv1") + 1


@pytest.mark.parametrize("config", ["A", "C"])
def test_without_head_counts(config):
    model = keras_vgg.VGG(config, include_top=False,
                          input_shape=(None, None, 3))
    assert model.count_params() == WITHOUT_HEAD[config]
    assert model.output.shape == (None, None, None, 512)


@pytest.mark.parametrize("builder,ref", [
    (keras_vgg.VGG16, keras.applications.VGG16),
    (keras_vgg.VGG19, keras.applications.VGG19),
])
def test_layer_names_match_keras_applications(builder, ref):
    ours = [layer.name for layer in builder().layers
            if not isinstance(layer, keras.layers.Dropout)]
    theirs = [layer.name for layer in ref(weights=None).layers]
    assert ours[1:] == theirs[1:]


def test_batch_norm_variant_order_and_count():
    model = keras_vgg.VGG11(batch_norm=True, include_top=False)
    names = [layer.name for layer in model.layers][1:5]
    assert names == ["block1_conv1", "block1_conv1_bn", "block1_conv1_relu",
                     "block1_pool"]
    assert model.get_layer("block1_conv1").activation is \
        keras.activations.linear
    assert model.count_params() == configs.count_params(
        "A", include_top=False, batch_norm=True)
    assert model.name == "vgg11_bn"


@pytest.mark.parametrize("pooling,shape", [("avg", (None, 512)),
                                           ("max", (None, 512)),
                                           (None, (None, 2, 2, 512))])
def test_pooling(pooling, shape):
    model = keras_vgg.VGG11(include_top=False, pooling=pooling,
                            input_shape=(64, 64, 3))
    assert model.output.shape == shape


def test_global_pooling_values(rng):
    x = images(1, 64)
    base = keras_vgg.VGG11(include_top=False, input_shape=(64, 64, 3))
    avg = keras_vgg.VGG11(include_top=False, pooling="avg",
                          input_shape=(64, 64, 3))
    avg.set_weights(base.get_weights())
    fmap = base.predict(x, verbose=0)
    np.testing.assert_allclose(avg.predict(x, verbose=0), fmap.mean((1, 2)),
                               rtol=1e-5, atol=1e-6)


def test_include_preprocessing_equals_preprocess_input():
    x = images(2, 64)
    plain = keras_vgg.VGG11(include_top=False, input_shape=(64, 64, 3))
    inside = keras_vgg.VGG11(include_top=False, input_shape=(64, 64, 3),
                             include_preprocessing=True)
    inside.set_weights(plain.get_weights())
    assert inside.layers[1].name == "preprocessing"
    np.testing.assert_allclose(
        inside.predict(x, verbose=0),
        plain.predict(keras_vgg.preprocess_input(x), verbose=0),
        rtol=1e-5, atol=1e-5)


def test_input_tensor_with_layers_before():
    inp = keras.Input((80, 80, 3))
    x = keras.layers.Resizing(64, 64)(inp)
    model = keras_vgg.VGG11(include_top=False, input_tensor=x)
    assert model.inputs[0] is inp
    assert model.output.shape == (None, 2, 2, 512)


def test_keras_round_trip_with_lrn(tmp_path):
    model = keras_vgg.VGG11LRN(include_top=True, input_shape=(32, 32, 3),
                               classes=7)
    x = images(2, 32)
    path = str(tmp_path / "a_lrn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("block1_lrn"),
                      keras_vgg.LocalResponseNormalization)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


def test_glorot_init_zero_bias():
    model = keras_vgg.VGG11(include_top=False, input_shape=(32, 32, 3))
    conv = model.get_layer("block3_conv1")
    kernel, bias = conv.get_weights()
    limit = np.sqrt(6 / (9 * 128 + 9 * 256))
    # float32 sampling can land on the float32-rounded limit itself.
    assert 0.9 * limit < np.abs(kernel).max() <= limit * (1 + 1e-6)
    assert not bias.any()


@pytest.mark.parametrize("kwargs,match", [
    ({"config": "F"}, "config"),
    ({"pooling": "sum", "include_top": False}, "pooling"),
    ({"weights": "laion"}, "weights"),
    ({"weights": "/no/such/file.h5"}, "weights"),
    ({"config": "D", "weights": "imagenet", "classes": 10}, "classes"),
    ({"config": "D", "weights": "imagenet",
      "classifier_activation": "sigmoid"}, "classifier_activation"),
    ({"input_shape": (224, 224)}, "input_shape"),
    ({"input_shape": (224, 224, 3, 1)}, "input_shape"),
    ({"input_shape": (16, 224, 3), "include_top": False}, "at least 32"),
    ({"input_shape": (None, None, 3)}, "fixed input size"),
    ({"config": "D", "weights": "imagenet", "input_shape": (256, 256, 3)},
     "input_shape"),
    ({"config": "D", "weights": "imagenet", "include_top": False,
      "input_shape": (64, 64, 1)}, "3 input channels"),
    ({"config": "C", "weights": "imagenet"},
     r"config 'C'. Weight sets for it: none"),
    ({"config": "A", "weights": "imagenet"},
     r"Weight sets for it: \['tv_in1k'\]"),
    ({"config": "A-LRN", "weights": "tv_in1k"}, "config 'A-LRN'"),
    ({"config": "D", "weights": "imagenet", "batch_norm": True},
     r"batch_norm=True. Weight sets for it: \['tv_in1k'\]"),
    ({"classes": 0}, "classes"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_arguments(kwargs, match):
    kwargs = dict(kwargs)
    config = kwargs.pop("config", "A")
    with pytest.raises(ValueError, match=match):
        keras_vgg.VGG(config, **kwargs)


def test_bad_weights_file_format(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not weights")
    with pytest.raises(ValueError, match="weights.pt"):
        keras_vgg.VGG11(weights=str(path), include_top=False)
    assert os.path.exists(path)


def test_width_multiplier():
    model = keras_vgg.VGG11(width_multiplier=0.25, input_shape=(32, 32, 3),
                            classes=5)
    assert model.get_layer("block1_conv1").filters == 16
    assert model.get_layer("block5_conv2").filters == 128
    assert model.get_layer("fc1").units == 1024
    with pytest.raises(ValueError, match="width_multiplier"):
        keras_vgg.VGG16(weights="imagenet", width_multiplier=0.5)
    with pytest.raises(ValueError, match="width_multiplier"):
        keras_vgg.VGG16(width_multiplier=0)
