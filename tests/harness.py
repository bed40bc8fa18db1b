"""The contracts every public Keras object of keras_vgg keeps, checked once
here for all of them (as keras-hub's `TestCase.run_layer_test`,
`run_model_saving_test` and `run_precision_test` do); `test_contracts.py`
lists the objects.  Plain functions, no TensorFlow: they run on every
backend.

- `check_layer`: config round trip, batch 1 and 3, `.keras` save/load
  inside a model, mixed_bfloat16 (float32 variables, bfloat16 compute).
- `check_model`: config round trip with identical outputs, `.keras`
  save/load of the compiled model with identical outputs, batch 1 and 3,
  the smallest input and one below it (a ValueError naming the size),
  mixed_bfloat16 (finite, float32 variables, close to float32).
- `check_loss`: config round trip with the same value, a model compiled
  with the loss saved and loaded with the same outputs and the same loss,
  batch 1 and 3, mixed_bfloat16 equal to float32.
"""

from __future__ import annotations

import contextlib
import copy
import os

import keras
import numpy as np
from keras import ops

# bfloat16 keeps 8 bits of mantissa: one rounding is a relative error of
# 2**-8 (0.4 %), and a deep VGG accumulates some tens of them.
BF16_RTOL = 0.1


@contextlib.contextmanager
def policy(name):
    """The global dtype policy `name` for the block, restored after."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def numpy(x):
    """Outputs as float64 numpy arrays (a dict of them for dict outputs)."""
    if isinstance(x, dict):
        return {k: numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [numpy(v) for v in x]
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")),
                      dtype="float64")


def assert_close(a, b, rtol=1e-5, atol=1e-5, what="outputs"):
    a, b = numpy(a), numpy(b)
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), what
        for key in a:
            assert_close(a[key], b[key], rtol, atol, f"{what}[{key!r}]")
        return
    if isinstance(a, list):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, rtol, atol, f"{what}[{i}]")
        return
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def assert_finite(x, what="outputs"):
    x = numpy(x)
    for value in (x.values() if isinstance(x, dict) else
                  x if isinstance(x, list) else [x]):
        assert np.all(np.isfinite(value)), f"{what} hold NaN or inf"


def batch_size(x):
    x = numpy(x)
    if isinstance(x, dict):
        return {int(v.shape[0]) for v in x.values()}
    return {int(v.shape[0]) for v in (x if isinstance(x, list) else [x])}


def first(x, n=1):
    x = numpy(x)
    if isinstance(x, dict):
        return {k: v[:n] for k, v in x.items()}
    if isinstance(x, list):
        return [v[:n] for v in x]
    return x[:n]


def pixels(shape, seed=0):
    """RGB-like pixels in [0, 255]."""
    return np.random.RandomState(seed).uniform(0, 255, shape).astype(
        "float32")


def check_config_round_trip(obj):
    """`from_config(get_config())` gives an object with the same config,
    also through `keras.saving.serialize_keras_object` (which is what a
    `.keras` file stores)."""
    config = obj.get_config()
    # A deep copy: Functional.from_config pops what it reads.
    clone = obj.__class__.from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj)
    assert restored.get_config() == config
    return clone


def check_batch_sizes(fn, x):
    """fn on batches of 1 and 3: each keeps its batch size, and the first
    image's output does not depend on the others."""
    one, three = fn(x[:1]), fn(x[:3])
    assert batch_size(one) == {1}, f"batch 1 gave {batch_size(one)}"
    assert batch_size(three) == {3}, f"batch 3 gave {batch_size(three)}"
    assert_close(first(three), one, rtol=1e-4, atol=1e-4,
                 what="image 0 in a batch of 3 against alone")
    return three


def save_and_load(model, tmp_path, name="model.keras"):
    path = os.path.join(str(tmp_path), name)
    model.save(path)
    return keras.saving.load_model(path)


def check_layer(make, input_shape, tmp_path, *, inputs=None, seed=0,
                precision=True):
    """The contracts of a Keras layer.  `make()` builds it; `input_shape`
    excludes the batch axis (a list of shapes for several inputs)."""
    layer = make()
    several = isinstance(input_shape, list)
    shapes = input_shape if several else [input_shape]
    if inputs is None:
        inputs = [pixels((3,) + tuple(s), seed + i)
                  for i, s in enumerate(shapes)]

    def call(obj, n):
        args = [x[:n] for x in inputs]
        return obj(args if several else args[0])

    out = call(layer, 3)
    assert_finite(out)
    one = call(layer, 1)
    assert batch_size(one) == {1} and batch_size(out) == {3}
    assert_close(first(out), one, rtol=1e-4, atol=1e-4,
                 what="image 0 in a batch of 3 against alone")

    clone = check_config_round_trip(layer)
    call(clone, 1)  # build it
    clone.set_weights(layer.get_weights())
    assert_close(call(clone, 3), out, what="outputs after from_config")

    # .keras save/load inside a functional model.
    keras_inputs = [keras.Input(tuple(s)) for s in shapes]
    fresh = make()
    model = keras.Model(keras_inputs,
                        fresh(keras_inputs if several else keras_inputs[0]))
    fresh.set_weights(layer.get_weights())
    loaded = save_and_load(model, tmp_path)
    assert_close(loaded(inputs if several else inputs[0]), out,
                 what="outputs after .keras save/load")

    if precision:
        with policy("mixed_bfloat16"):
            mixed = make()
            low = call(mixed, 3)
        assert all(v.dtype == "float32" for v in mixed.weights)
        assert mixed.compute_dtype == "bfloat16"
        assert_finite(low)
        if mixed.weights:
            mixed.set_weights(layer.get_weights())
            low = call(mixed, 3)
        assert_close(low, out, rtol=BF16_RTOL, atol=BF16_RTOL * max(
            1.0, float(np.max(np.abs(numpy(out))))),
            what="mixed_bfloat16 against float32")


def check_model(make, input_shape, tmp_path, *, below=None, compile_loss=None,
                seed=0, rtol=1e-5, precision=True):
    """The contracts of a built model.

    Args:
        make: `make(input_shape=None)` builds the model (on `input_shape`
            where given: the smallest-input contract builds one at the
            smallest size and one below it).
        input_shape: an input shape (no batch axis) for which the model
            works; the smallest valid one, as the builder documents it.
        below: shapes just under the smallest: building at them, or calling
            the model on them, must raise a ValueError that names a size.
        compile_loss: the loss the model is compiled with before saving.
    """
    model = make()
    x = pixels((3,) + tuple(input_shape), seed)
    out = check_batch_sizes(model, x)
    assert_finite(out)

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert_close(clone(x), out, rtol=rtol, atol=rtol,
                 what="outputs after from_config")

    model.compile(optimizer="sgd", loss=compile_loss or "mse")
    loaded = save_and_load(model, tmp_path)
    assert_close(loaded(x), out, rtol=rtol, atol=rtol,
                 what="outputs after .keras save/load")
    assert type(loaded.loss) is type(model.loss)

    smallest = make(input_shape=tuple(input_shape))
    assert_finite(smallest(x[:1]), "outputs at the smallest input")
    for shape in below or ():
        check_refused(make, model, shape)

    if precision:
        with policy("mixed_bfloat16"):
            mixed = make()
        mixed.set_weights(model.get_weights())
        assert all(v.dtype == "float32" for v in mixed.weights)
        low = mixed(x)
        assert_finite(low, "mixed_bfloat16 outputs")
        scale = max(1.0, float(np.max(np.abs(np.concatenate(
            [v.ravel() for v in _leaves(numpy(out))])))))
        assert_close(low, out, rtol=BF16_RTOL, atol=BF16_RTOL * scale,
                     what="mixed_bfloat16 against float32")


def _leaves(x):
    if isinstance(x, dict):
        return list(x.values())
    return x if isinstance(x, list) else [x]


def check_refused(make, model, shape):
    """A shape below the smallest: refused by the builder (a static shape)
    or by the model when called (any shape), with a ValueError naming the
    size, never NaN or another batch size."""
    import pytest

    with pytest.raises(ValueError, match=r"\d+"):
        make(input_shape=tuple(shape))
    with pytest.raises(ValueError, match=r"\d+"):
        model(pixels((2,) + tuple(shape)))


def check_loss(make, image_shape, tmp_path, *, seed=0, scale=1.0,
               reseed=None):
    """The contracts of a keras_vgg loss.  `make(**kwargs)` builds it;
    images are pixels in [0, 255] times `scale`.  A loss on random weights
    (`weights=None`) cannot carry them in its config: `reseed()` then sets
    the random state `make` built it from, before the config is rebuilt."""
    loss = make()
    a = pixels((3,) + tuple(image_shape), seed)
    b = np.clip(a + pixels(a.shape, seed + 1) / 8 - 16, 0, 255) * scale
    a = a * scale
    value = float(numpy(loss(a, b)))
    assert np.isfinite(value) and value > 0
    assert float(numpy(loss(a, a))) == 0.0

    # Config round trip: the rebuilt loss has the same value.
    check_config_round_trip(loss)
    if reseed is not None:
        reseed()
    clone = loss.__class__.from_config(copy.deepcopy(loss.get_config()))
    np.testing.assert_allclose(float(numpy(clone(a, b))), value, rtol=1e-5)

    # Batch 1 and 3: per-image values.
    per_image = numpy(loss.call(a, b))
    assert per_image.shape == (3,)
    np.testing.assert_allclose(numpy(loss.call(a[:1], b[:1])),
                               per_image[:1], rtol=1e-4)

    # A model compiled with the loss: saved, loaded, same outputs and loss.
    inputs = keras.Input(tuple(image_shape))
    model = keras.Model(inputs, keras.layers.Rescaling(0.9)(inputs))
    model.compile(optimizer="sgd", loss=loss)
    before = model.evaluate(a, b, verbose=0)
    loaded = save_and_load(model, tmp_path)
    assert_close(loaded(a), model(a), what="outputs after .keras save/load")
    np.testing.assert_allclose(loaded.evaluate(a, b, verbose=0), before,
                               rtol=1e-5)

    # mixed_bfloat16: the frozen VGG stays in float32.
    with policy("mixed_bfloat16"):
        mixed = make()
        low = float(numpy(mixed(a, b)))
    np.testing.assert_allclose(low, value, rtol=1e-4)
