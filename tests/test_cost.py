"""keras_vgg.cost (MACs measured on a built model) against keras_vgg.configs
(MACs from Table 1 as data), and keras_vgg.chain."""

import keras
import pytest

import keras_vgg
from keras_vgg import chain as chain_lib
from keras_vgg import cost


@pytest.mark.parametrize("config", sorted(keras_vgg.CONFIGS))
def test_walker_counts_table_1_for_every_configuration(config):
    # 32x32 inputs and 10 classes keep the models small; the convs see the
    # same layers as at 224, the head a 1x1x512 feature map.
    model = keras_vgg.VGG(config, input_shape=(32, 32, 3), classes=10)
    assert cost.count_macs(model, (32, 32, 3)) == keras_vgg.count_macs(
        config, 32, classes=10)


def test_walker_ignores_batch_norm_and_counts_the_body_alone():
    body = keras_vgg.VGG("B", include_top=False, batch_norm=True,
                         input_shape=(64, 96, 3))
    assert cost.count_macs(body, (64, 96, 3)) == keras_vgg.count_macs(
        "B", 64, 96, include_top=False)


def test_layer_chain_of_sequential_and_functional_models():
    sequential = keras.Sequential([keras.Input((8, 8, 3)),
                                   keras.layers.Conv2D(2, 3, name="a"),
                                   keras.layers.Flatten(name="b")])
    assert [layer.name for layer in chain_lib.layer_chain(
        sequential, "test")] == ["a", "b"]
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(2, 3, name="a")(inputs)
    b = keras.layers.Conv2D(2, 3, name="b")(inputs)
    branched = keras.Model(inputs, keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="'b' .*not fed by the layer before "
                                         "it; count_macs"):
        cost.count_macs(branched, (8, 8, 3))
    two_outputs = keras.Model(inputs, [a, b])
    with pytest.raises(ValueError, match="2 outputs; count_macs needs one"):
        cost.count_macs(two_outputs, (8, 8, 3))
