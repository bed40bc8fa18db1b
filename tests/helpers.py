"""Plain helpers the tests share (fixtures live in `conftest.py`): random
pixels, random weights, Table 1's parameter counts, and setup.py's lists."""

import ast
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Parameter counts of Table 1's networks with and without the FC head
# (1000 classes, 224x224 input); the paper rounds them to millions.
WITH_HEAD = {"A": 132_863_336, "A-LRN": 132_863_336, "B": 133_047_848,
             "C": 133_638_952, "D": 138_357_544, "E": 143_667_240}
WITHOUT_HEAD = {"A": 9_220_480, "A-LRN": 9_220_480, "B": 9_404_992,
                "C": 9_996_096, "D": 14_714_688, "E": 20_024_384}


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


def setup_list(name):
    """The list literal assigned to `name` in setup.py (not run: it would
    call setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and [t.id for t in node.targets] == [name]):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no {name} in setup.py")
