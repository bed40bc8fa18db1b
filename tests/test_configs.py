import pytest

import keras_vgg
from keras_vgg import configs
from tests.helpers import WITH_HEAD
from tests.helpers import WITHOUT_HEAD

# The paper's Table 1 / reference figures.
GMACS = {"A": 7.61, "A-LRN": 7.61, "B": 11.31, "C": 11.77, "D": 15.47,
         "E": 19.63}
LAYERS = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}


@pytest.mark.parametrize("name", list(WITH_HEAD))
def test_counts_from_table(name):
    assert configs.count_params(name) == WITH_HEAD[name]
    assert configs.count_params(name, include_top=False) == WITHOUT_HEAD[name]
    assert round(configs.count_macs(name) / 1e9, 2) == GMACS[name]
    assert configs.get_config(name).weight_layers == LAYERS[name]


def test_c_has_one_by_one_convs_in_blocks_3_to_5():
    kernels = {(b, i): k for b, i, k, _ in configs.get_config("C").convs}
    assert [kernels[(b, 3)] for b in (3, 4, 5)] == [1, 1, 1]
    assert all(k == 3 for (b, i), k in kernels.items() if i < 3)


def test_dense_head_macs_grow_with_score_map():
    # At Q=384 the head runs at 6x6 positions.
    body = configs.count_macs("D", 384, include_top=False)
    head = 7 * 7 * 512 * 4096 + 4096 * 4096 + 4096 * 1000
    assert configs.count_macs("D", 384) == body + 36 * head


def test_unknown_config_lists_names():
    with pytest.raises(ValueError, match=r"config.*'A', 'A-LRN', 'B'"):
        keras_vgg.get_config("F")
    assert keras_vgg.get_config("a-lrn").name == "A-LRN"
