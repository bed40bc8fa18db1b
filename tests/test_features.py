"""keras_vgg.features: multi-level feature maps equal the full model's
layers, and the per-layer table's numbers."""

import keras
import numpy as np
import pytest

import keras_vgg
from tests.helpers import randomize


def _outputs_of(model, names, x):
    probe = keras.Model(model.inputs[0],
                        [model.get_layer(n).output for n in names])
    return [np.asarray(o) for o in probe(x)]


@pytest.mark.parametrize("batch_norm", [False, True])
def test_stages_equal_the_full_models_layers(batch_norm):
    model = keras_vgg.VGG("B", input_shape=(64, 64, 3), classes=3,
                          width_multiplier=0.125, batch_norm=batch_norm)
    randomize(model)
    fx = keras_vgg.feature_extractor(
        model, stages=["block2", "block3_pool", "block5"],
        layers=["block4_conv1"])
    x = np.random.RandomState(0).uniform(-50, 50, (2, 64, 64, 3))
    got = fx(x)
    assert list(got) == ["block2", "block3_pool", "block4_conv1", "block5"]
    before_pool = "block2_conv2_relu" if batch_norm else "block2_conv2"
    names = [before_pool, "block3_pool", "block4_conv1",
             "block5_conv2_relu" if batch_norm else "block5_conv2"]
    for key, want in zip(got, _outputs_of(model, names, x)):
        np.testing.assert_array_equal(np.asarray(got[key]), want)
    info = keras_vgg.feature_info(fx)
    assert [(f.name, f.channels, f.stride) for f in info] == [
        ("block2", 16, 2), ("block3_pool", 32, 8), ("block4_conv1", 64, 8),
        ("block5", 64, 16)]
    # The source model is untouched: it still rewrites into convolutions.
    keras_vgg.fully_convolutional(model)


def test_any_input_size_and_defaults():
    fx = keras_vgg.feature_extractor(keras_vgg.VGG(
        "A", include_top=False, input_shape=(32, 32, 3),
        width_multiplier=0.125))
    out = fx(np.zeros((1, 96, 128, 3), "float32"))
    assert list(out) == [f"block{i}" for i in range(1, 6)]
    assert [tuple(v.shape[1:3]) for v in out.values()] == [
        (96, 128), (48, 64), (24, 32), (12, 16), (6, 8)]


def test_bad_names_name_the_argument_and_the_choices():
    model = keras_vgg.VGG("A", input_shape=(32, 32, 3), classes=2,
                          width_multiplier=0.125)
    with pytest.raises(ValueError, match=r"stage 'block6' in `stages`.*"
                                         r"block5_pool"):
        keras_vgg.feature_extractor(model, stages="block6")
    with pytest.raises(ValueError, match=r"layer 'conv9' in `layers`.*"
                                         r"block1_conv1"):
        keras_vgg.feature_extractor(model, layers=["conv9"])
    with pytest.raises(ValueError, match="weights"):
        keras_vgg.feature_extractor(model, weights="imagenet")
    with pytest.raises(ValueError, match="config"):
        keras_vgg.feature_extractor("Z")


def test_layer_table_vgg16():
    rows = keras_vgg.layer_table("D")
    by_name = {r.name: r for r in rows}
    assert sum(r.params for r in rows) == 138_357_544
    assert sum(r.macs for r in rows) == keras_vgg.count_macs("D")
    # The note's two facts: fc1 holds most parameters (102.8 M of 138.4 M),
    # the first two convolutions the largest activations.
    assert by_name["fc1"].params == 7 * 7 * 512 * 4096 + 4096
    conv_memory = sorted((r.activation_bytes, r.name) for r in rows[1:])
    assert {name for _, name in conv_memory[-2:]} == {"block1_conv1",
                                                      "block1_conv2"}
    assert by_name["block1_conv1"].activation_bytes == 224 * 224 * 64 * 4
    # Receptive fields: 3, 5 in block 1; 212 at pool5 (VGG16's).
    assert [by_name[n].receptive_field for n in
            ("block1_conv1", "block1_conv2", "block1_pool", "block5_pool")
            ] == [3, 5, 6, 212]
    assert by_name["block5_pool"].stride == 32
    assert by_name["fc1"].receptive_field is None


def test_layer_table_cli():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pipelines.layer_table", "--architecture=A",
         "--input_size=64", "--noinclude_top"],
        capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "VGG A at 64x64, one image, float32 activations:"
    total = lines[-1].split("|")
    assert total[0].strip() == "total"
    params = keras_vgg.count_params("A", include_top=False)
    assert total[4].strip() == f"{params:,}"
    pool5 = [line.split("|") for line in lines if "block5_pool" in line][0]
    assert (pool5[1].strip(), pool5[-1].strip()) == ("2x2x512", "32")


def test_per_block_summary_for_the_demo():
    from pipelines import layer_table

    text = layer_table.format_blocks(keras_vgg.layer_table("D"))
    rows = {cells[0].strip(): [c.strip() for c in cells]
            for cells in (line.split("|") for line in text.splitlines()[2:])}
    assert list(rows) == [f"block{i}" for i in range(1, 6)] + [
        "fc1", "fc2", "predictions"]
    # Block 1 (its two convolutions and pool) holds the most activation
    # memory, fc1 three quarters of the parameters.
    assert rows["block1"][3] == "47.8" and rows["fc1"][5] == "74.3"
    assert rows["block1"][4] == f"{1792 + 36928:,}"


def test_one_channel_model():
    # The extractor's input used to be hard-coded to 3 channels, so copying
    # a grayscale network's 3x3x1 first kernel failed.
    model = randomize(keras_vgg.VGG("A", input_shape=(32, 32, 1),
                                    include_top=False,
                                    width_multiplier=0.125))
    fx = keras_vgg.feature_extractor(model, stages=["block2", "block5"])
    assert fx.inputs[0].shape[-1] == 1
    x = np.random.RandomState(1).uniform(0, 255, (2, 32, 32, 1))
    got = fx(x)
    for key, want in zip(got, _outputs_of(model,
                                          ["block2_conv1", "block5_conv2"],
                                          x)):
        np.testing.assert_array_equal(np.asarray(got[key]), want)
