import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def images(n, size=224, seed=0):
    """Random RGB pixels in [0, 255]."""
    return np.random.RandomState(seed).uniform(
        0, 255, (n, size, size, 3)).astype("float32")


def randomize(model, seed=0, scale=None):
    """Gives every weight of `model` random values with He-like scale, so
    activations neither vanish nor explode through a deep VGG."""
    r = np.random.RandomState(seed)
    for layer in model.layers:
        values = []
        for w in layer.get_weights():
            if w.ndim >= 2:
                fan_in = int(np.prod(w.shape[:-1]))
                s = scale or np.sqrt(2.0 / fan_in)
                values.append(r.normal(0, s, w.shape).astype("float32"))
            else:
                values.append(r.uniform(0.1, 0.5, w.shape).astype("float32"))
        if values:
            layer.set_weights(values)
    return model
