"""keras_vgg.compress: the truncated SVD of fc1 and fc2 is the best rank-r
approximation, exact at full rank, and refuses what cannot apply."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_vgg
from keras_vgg import compress
from tests.helpers import images
from tests.helpers import randomize

CROP = 8


@pytest.fixture(scope="module")
def model():
    """A VGG-shaped chain, small enough to factorise in milliseconds:
    conv, pool, Flatten, fc1 (64 x 48), fc2 (48 x 40), predictions."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((CROP, CROP, 3), name="input_layer")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            name="block1_conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(48, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(0.5, name="fc1_dropout")(x)
    x = keras.layers.Dense(40, activation="relu", name="fc2")(x)
    x = keras.layers.Dense(5, activation="softmax", name="predictions")(x)
    return randomize(keras.Model(inputs, x, name="chain"))


def _product(low, name):
    a = low.get_layer(name + compress.U_SUFFIX).get_weights()[0]
    b = low.get_layer(name + compress.V_SUFFIX).get_weights()[0]
    return a @ b


def test_full_rank_reproduces_the_outputs(model):
    x = images(4, CROP)
    expected = ops.convert_to_numpy(model(x))
    assert expected.std(axis=1).mean() > 1e-3  # not a constant output
    for name, rank in (("fc1", 48), ("fc2", 40)):
        low = compress.low_rank_head(model, rank=rank, layers=(name,))
        assert compress.low_rank_ranks(low) == {name: rank}
        np.testing.assert_allclose(ops.convert_to_numpy(low(x)), expected,
                                   atol=1e-5)
    # Both at once, by energy 1: ranks up to the layers' own.
    both = compress.low_rank_head(model, energy=1.0)
    np.testing.assert_allclose(ops.convert_to_numpy(both(x)), expected,
                               atol=1e-5)
    assert [layer.name for layer in both.layers[-6:]] == [
        "fc1_u", "fc1_v", "fc1_dropout", "fc2_u", "fc2_v", "predictions"]


def test_rank_r_is_the_best_approximation(model):
    low = compress.low_rank_head(model, rank=10)
    assert compress.low_rank_ranks(low) == {"fc1": 10, "fc2": 10}
    for name in ("fc1", "fc2"):
        kernel, bias = model.get_layer(name).get_weights()
        s = np.linalg.svd(kernel.astype(np.float64), compute_uv=False)
        product = _product(low, name)
        got = np.linalg.svd(product.astype(np.float64), compute_uv=False)
        # Its singular values are the r largest of the kernel's, the rest 0.
        np.testing.assert_allclose(got[:10], s[:10], rtol=1e-4)
        assert got[10] < 1e-4 * s[0]
        # Eckart-Young: the error is the discarded singular values.
        error = np.linalg.norm(kernel - product) ** 2
        np.testing.assert_allclose(error, np.sum(s[10:] ** 2), rtol=1e-3)
        np.testing.assert_array_equal(
            low.get_layer(name + compress.V_SUFFIX).get_weights()[1], bias)
    # The rest of the model is copied: same conv weights.
    np.testing.assert_array_equal(
        low.get_layer("block1_conv1").get_weights()[0],
        model.get_layer("block1_conv1").get_weights()[0])


def test_energy_picks_the_smallest_rank(model):
    low = compress.low_rank_head(model, energy=0.8)
    for name, rank in compress.low_rank_ranks(low).items():
        s = np.linalg.svd(model.get_layer(name).get_weights()[0]
                          .astype(np.float64), compute_uv=False)
        kept = np.cumsum(s ** 2) / np.sum(s ** 2)
        assert kept[rank - 1] >= 0.8 > kept[rank - 2]
    assert compress.rank_for_energy([3.0, 2.0, 1.0], 9 / 14) == 1
    assert compress.rank_for_energy([3.0, 2.0, 1.0], 0.7) == 2


def test_low_rank_fully_convolutional(model):
    """The factorised head still rewrites into convolutions (dense
    evaluation, `--dynamic_size`)."""
    low = compress.low_rank_head(model, rank=16)
    fcn = keras_vgg.fully_convolutional(low, average=True)
    x = images(2, CROP)
    np.testing.assert_allclose(ops.convert_to_numpy(fcn(x)),
                               ops.convert_to_numpy(low(x)), atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=41), "--fc_rank=41 is larger than layer 'fc2'.*48 x 40"),
    (dict(rank=0), "--fc_rank=0"),
    (dict(rank=4, energy=0.5), "one of --fc_rank and --fc_energy"),
    (dict(), "one of --fc_rank and --fc_energy"),
    (dict(energy=1.5), "--fc_energy=1.5"),
    (dict(energy=0.0), "--fc_energy=0.0"),
])
def test_refusals(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress.low_rank_head(model, **kwargs)


def test_refuses_a_model_without_fc1():
    headless = keras_vgg.VGG("A", include_top=False, width_multiplier=0.125,
                             input_shape=(32, 32, 3), pooling="avg")
    with pytest.raises(ValueError, match="no layer 'fc1'"):
        compress.low_rank_head(headless, rank=4)
