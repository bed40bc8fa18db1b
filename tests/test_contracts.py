"""Every public Keras object of keras_vgg through the shared contracts of
`tests/harness.py`.  A new layer, loss, builder or model joins by being
listed here; the harness is not copied per module.  No TensorFlow: this
module runs under every backend (`make test-jax`, `make test-torch`)."""

import keras
import pytest

import keras_vgg
from keras_vgg import fully_conv
from tests import harness

# Small but whole networks: every layer of the configuration, 1/16 of the
# paper's widths, a 5-class head, the smallest input (32x32).
WIDTH = 1 / 16
CLASSES = 5
SMALLEST = (32, 32, 3)
CONFIGS = ["A", "A-LRN", "B", "C", "D", "E"]


def _seeded(build):
    """`build` with Keras' seed fixed, so that two builds have the same
    weights (losses hold a frozen VGG that the harness rebuilds)."""
    def make(**kwargs):
        keras.utils.set_random_seed(0)
        return build(**kwargs)
    return make


def _classifier(config, batch_norm, channels=3):
    def make(input_shape=None):
        shape = input_shape or SMALLEST[:2] + (channels,)
        return keras_vgg.VGG(config, batch_norm=batch_norm, classes=CLASSES,
                             width_multiplier=WIDTH, input_shape=shape)
    return make


MODELS = {}
for _config in CONFIGS:
    for _bn in (False, True):
        MODELS[f"VGG-{_config}{'-bn' if _bn else ''}"] = (
            _classifier(_config, _bn), SMALLEST)
MODELS["VGG-D-1-channel"] = (_classifier("D", False, channels=1),
                             (32, 32, 1))


def _headless(pooling):
    def make(input_shape=None):
        return keras_vgg.VGG("D", include_top=False, pooling=pooling,
                             width_multiplier=WIDTH,
                             input_shape=input_shape or (None, None, 3))
    return make


for _pooling in (None, "avg", "max"):
    MODELS[f"VGG-D-headless-{_pooling}"] = (_headless(_pooling), SMALLEST)


def _dense(stride, average, batch_norm=False):
    def make(input_shape=None):
        keras.utils.set_random_seed(0)
        source = keras_vgg.VGG("D", batch_norm=batch_norm, classes=CLASSES,
                               width_multiplier=WIDTH, input_shape=SMALLEST)
        model = keras_vgg.fully_convolutional(source, average=average,
                                              stride=stride)
        if input_shape is None:
            return model
        # A static input shape: the same rewrite applied to it.
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, model(inputs))
    return make


for _stride in (32, 16, 8):
    for _average in (False, True):
        MODELS[f"fully_convolutional-s{_stride}"
               f"{'-average' if _average else ''}"] = (
            _dense(_stride, _average), SMALLEST)
MODELS["fully_convolutional-bn-s16"] = (_dense(16, False, True), SMALLEST)


def _features(config, batch_norm):
    def make(input_shape=None):
        keras.utils.set_random_seed(0)
        source = keras_vgg.VGG(config, include_top=False,
                               batch_norm=batch_norm, width_multiplier=WIDTH,
                               input_shape=(None, None, 3))
        model = keras_vgg.feature_extractor(
            source, stages=["block1", "block3_pool", "block5"])
        if input_shape is None:
            return model
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, model(inputs))
    return make


# The deepest output, block5 before its pool, has one position per 16
# pixels: 16x16 is the smallest image.
MODELS["feature_extractor-D"] = (_features("D", False), (16, 16, 3))
MODELS["feature_extractor-E-bn"] = (_features("E", True), (16, 16, 3))


def _localizer(regression):
    def make(input_shape=None):
        return keras_vgg.VGGLocalizer(
            "D", regression=regression, classes=CLASSES,
            width_multiplier=WIDTH, input_shape=input_shape or SMALLEST)
    return make


MODELS["VGGLocalizer-scr"] = (_localizer("scr"), SMALLEST)
MODELS["VGGLocalizer-pcr"] = (_localizer("pcr"), SMALLEST)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contracts(name, tmp_path):
    make, shape = MODELS[name]
    below = [(shape[0] - 1, shape[1], shape[2]),
             (shape[0], shape[1] - 1, shape[2])]
    harness.check_model(make, shape, tmp_path, below=below)


LAYERS = {
    "LocalResponseNormalization": (
        keras_vgg.LocalResponseNormalization, (6, 5, 8)),
    "Preprocessing-caffe": (
        lambda: keras_vgg.Preprocessing("caffe"), (5, 4, 3)),
    "Preprocessing-torch": (
        lambda: keras_vgg.Preprocessing("torch"), (5, 4, 3)),
    "FullyConnectedConv2D": (
        lambda: fully_conv.FullyConnectedConv2D(7, (3, 3)), (5, 6, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_contracts(name, tmp_path):
    make, shape = LAYERS[name]
    harness.check_layer(make, shape, tmp_path)


def test_pooling_offsets_and_interleave_contracts(tmp_path):
    # PoolingOffsets puts the four offsets of a batch on the batch axis (4N)
    # and Interleave takes them off again: their batch contract is that of
    # the pair, around the pool they are made for.
    def make():
        inputs = keras.Input((6, 4, 2), name="images")
        x = fully_conv.PoolingOffsets(name="offsets")(inputs)
        x = keras.layers.MaxPooling2D(name="pool")(x)
        x = fully_conv.Interleave(name="interleave")(x)
        return keras.Model(inputs, x, name="offsets_pool_interleave")
    harness.check_layer(make, (6, 4, 2), tmp_path, precision=False)
    for layer in (fully_conv.PoolingOffsets(), fully_conv.Interleave()):
        harness.check_config_round_trip(layer)
    with harness.policy("mixed_bfloat16"):
        low = make()(harness.pixels((3, 6, 4, 2)))
    assert keras.backend.standardize_dtype(low.dtype) == "bfloat16"


def test_windows_in_image_contracts(tmp_path):
    harness.check_layer(lambda: fully_conv.WindowsInImage(4, 2),
                        [(5, 5, 3), (12, 12, 3)], tmp_path)


LOSSES = {
    "PerceptualLoss-D": lambda **kw: keras_vgg.PerceptualLoss(
        "D", weights=None, **kw),
    "PerceptualLoss-E-bn": lambda **kw: keras_vgg.PerceptualLoss(
        "E", weights=None, batch_norm=True, **kw),
    "StyleLoss-E": lambda **kw: keras_vgg.StyleLoss(
        "E", weights=None, **kw),
    "StyleLoss-D-bn-unit-range": lambda **kw: keras_vgg.StyleLoss(
        "D", weights=None, batch_norm=True, input_range=1, **kw),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_contracts(name, tmp_path):
    scale = 1 / 255 if "unit-range" in name else 1
    harness.check_loss(_seeded(LOSSES[name]), (32, 32, 3), tmp_path,
                       scale=scale,
                       reseed=lambda: keras.utils.set_random_seed(0))
