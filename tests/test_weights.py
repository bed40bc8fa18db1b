import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from safetensors.numpy import save_file

import keras_vgg
from keras_vgg import configs
from keras_vgg import weights as weights_lib
from tests.helpers import images
from tests.helpers import randomize


def save_legacy_h5(model, path):
    """The format keras.applications ships its VGG weights in."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return str(path)


@pytest.fixture(scope="module")
def vgg16_reference(tmp_path_factory):
    """keras.applications.VGG16 with random weights, saved in both Keras
    formats, and its logits on two images."""
    d = tmp_path_factory.mktemp("vgg16")
    ref = randomize(keras.applications.VGG16(weights=None,
                                             classifier_activation=None))
    x = keras_vgg.preprocess_input(images(2))
    files = {"h5": save_legacy_h5(ref, d / "vgg16.h5"),
             "keras3": str(d / "vgg16.weights.h5")}
    ref.save_weights(files["keras3"])
    return files, x, ref.predict(x, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5", "keras3"])
def test_vgg16_equals_keras_applications(vgg16_reference, fmt):
    files, x, expected = vgg16_reference
    model = keras_vgg.VGG16(weights=files[fmt], classifier_activation=None)
    out = model.predict(x, verbose=0)
    assert np.abs(expected).max() > 1.0  # non-trivial logits
    np.testing.assert_allclose(out, expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("fmt", ["h5", "keras3"])
def test_vgg19_notop_equals_keras_applications(tmp_path, fmt):
    ref = randomize(keras.applications.VGG19(
        weights=None, include_top=False, input_shape=(64, 64, 3)))
    path = (save_legacy_h5(ref, tmp_path / "e.h5") if fmt == "h5"
            else str(tmp_path / "e.weights.h5"))
    if fmt == "keras3":
        ref.save_weights(path)
    x = keras_vgg.preprocess_input(images(2, 64))
    model = keras_vgg.VGG19(weights=path, include_top=False,
                            input_shape=(64, 64, 3))
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               ref.predict(x, verbose=0), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_legacy_h5_by_name_into_bn_model_and_input_tensor(vgg16_reference):
    files, _, _ = vgg16_reference
    src = keras.applications.VGG16(weights=None)
    src.load_weights(files["h5"])
    inp = keras.Input((256, 256, 3))
    x = keras.layers.CenterCrop(224, 224, name="crop")(inp)
    with pytest.warns(UserWarning, match="block1_conv1_bn"):
        model = keras_vgg.VGG16(weights=files["h5"], batch_norm=True,
                                input_tensor=x)
    for name in ("block1_conv1", "block5_conv3", "fc1", "predictions"):
        for a, b in zip(model.get_layer(name).get_weights(),
                        src.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_full_model_h5_with_model_weights_group(tmp_path):
    ref = randomize(keras_vgg.VGG11(include_top=False, input_shape=(32, 32, 3)))
    path = tmp_path / "full.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(
            f.create_group("model_weights"), ref)
    model = keras_vgg.VGG11(weights=str(path), include_top=False,
                            input_shape=(32, 32, 3))
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- torchvision / timm safetensors, checked against numpy -----------------


def torch_state_dict(config, batch_norm, side, classes, seed=0):
    """A torchvision-layout VGG state dict with random weights."""
    r = np.random.RandomState(seed)
    cfg = configs.get_config(config)
    state, idx, cin = {}, 0, 3
    for block in cfg.blocks:
        for k, f in block:
            state[f"features.{idx}.weight"] = r.normal(
                0, np.sqrt(2 / (k * k * cin)), (f, cin, k, k)).astype("float32")
            state[f"features.{idx}.bias"] = r.normal(
                0, 0.1, f).astype("float32")
            idx += 1
            if batch_norm:
                bn = f"features.{idx}"
                state[f"{bn}.weight"] = r.uniform(.5, 1.5, f).astype("float32")
                state[f"{bn}.bias"] = r.normal(0, .1, f).astype("float32")
                state[f"{bn}.running_mean"] = r.normal(
                    0, .1, f).astype("float32")
                state[f"{bn}.running_var"] = r.uniform(
                    .5, 2, f).astype("float32")
                state[f"features.{idx}.num_batches_tracked"] = np.array(7)
                idx += 1
            idx += 1  # ReLU
            cin = f
        idx += 1  # MaxPool
    fin = cin * side * side
    for i, (o, n) in zip((0, 3, 6),
                         ((4096, fin), (4096, 4096), (classes, 4096))):
        state[f"classifier.{i}.weight"] = r.normal(
            0, np.sqrt(2 / n), (o, n)).astype("float32")
        state[f"classifier.{i}.bias"] = r.normal(0, .1, o).astype("float32")
    return state


def timm_layout(state, last_filters, side):
    """What timm's checkpoint filter makes of a torchvision state dict."""
    out = {k: v for k, v in state.items() if not k.startswith("classifier")}
    w0 = state["classifier.0.weight"]
    out["pre_logits.fc1.weight"] = w0.reshape(-1, last_filters, side, side)
    out["pre_logits.fc1.bias"] = state["classifier.0.bias"]
    out["pre_logits.fc2.weight"] = state["classifier.3.weight"][..., None, None]
    out["pre_logits.fc2.bias"] = state["classifier.3.bias"]
    out["head.fc.weight"] = state["classifier.6.weight"]
    out["head.fc.bias"] = state["classifier.6.bias"]
    return out


def numpy_torch_forward(state, x_nchw, config, batch_norm):
    """torchvision's VGG forward written in numpy (NCHW, OIHW, CHW flatten)."""
    cfg = configs.get_config(config)
    convs = sorted({int(k.split(".")[1]) for k in state
                    if k.startswith("features") and state[k].ndim == 4})
    bns = sorted({int(k.split(".")[1]) for k in state
                  if k.endswith("running_mean")})
    x, ci = x_nchw.astype("float64"), 0
    for block in cfg.blocks:
        for k, _ in block:
            w = state[f"features.{convs[ci]}.weight"].astype("float64")
            b = state[f"features.{convs[ci]}.bias"]
            p = k // 2
            xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), (2, 3))
            x = np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]
            if batch_norm:
                j = f"features.{bns[ci]}"
                x = ((x - state[j + ".running_mean"][None, :, None, None])
                     / np.sqrt(state[j + ".running_var"][None, :, None, None]
                               + 1e-5)
                     * state[j + ".weight"][None, :, None, None]
                     + state[j + ".bias"][None, :, None, None])
            x = np.maximum(x, 0)
            ci += 1
        n, c, h, w_ = x.shape
        x = x.reshape(n, c, h // 2, 2, w_ // 2, 2).max(axis=(3, 5))
    x = x.reshape(x.shape[0], -1)
    for i in (0, 3):
        x = np.maximum(x @ state[f"classifier.{i}.weight"].T
                       + state[f"classifier.{i}.bias"], 0)
    return x @ state["classifier.6.weight"].T + state["classifier.6.bias"]


@pytest.mark.slow
@pytest.mark.parametrize("config,batch_norm", [("A", False), ("B", True)])
def test_safetensors_against_numpy(tmp_path, config, batch_norm):
    side, classes = 2, 10  # 64x64 input: a 2x2x512 map, so CHW order matters
    state = torch_state_dict(config, batch_norm, side, classes)
    x = keras_vgg.preprocess_input(images(2, 64), mode="torch")
    expected = numpy_torch_forward(state, x.transpose(0, 3, 1, 2), config,
                                   batch_norm)
    tv_path = tmp_path / "tv.safetensors"
    timm_path = tmp_path / "timm.safetensors"
    save_file(state, str(tv_path))
    save_file(timm_layout(state, 512, side), str(timm_path))
    for path in (tv_path, timm_path):
        model = keras_vgg.VGG(config, weights=str(path), batch_norm=batch_norm,
                              input_shape=(64, 64, 3), classes=classes,
                              classifier_activation=None)
        out = model.predict(x, verbose=0)
        assert np.abs(expected).max() > 1.0
        np.testing.assert_allclose(out, expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).max())


def test_safetensors_for_other_config_is_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file(torch_state_dict("A", False, 1, 3), str(path))
    with pytest.raises(ValueError, match="another configuration"):
        keras_vgg.VGG13(weights=str(path), include_top=False,
                        input_shape=(32, 32, 3))


def test_shape_mismatch_names_the_layer(tmp_path):
    src = keras_vgg.VGG11(include_top=True, classes=5, input_shape=(32, 32, 3))
    path = save_legacy_h5(src, tmp_path / "five.h5")
    with pytest.raises(ValueError, match="'predictions'.*five.h5"):
        keras_vgg.VGG11(weights=path, classes=6, input_shape=(32, 32, 3))


def test_no_matching_layer(tmp_path):
    inp = keras.Input((4,))
    other = keras.Model(inp, keras.layers.Dense(2, name="dense_x")(inp))
    path = save_legacy_h5(other, tmp_path / "other.h5")
    with pytest.raises(ValueError, match="No layer .* matches"):
        keras_vgg.VGG11(weights=path, include_top=False)


def _tiny(**kwargs):
    return keras_vgg.VGG("A", width_multiplier=0.125, include_top=False,
                         input_shape=(32, 32, 3), **kwargs)


def test_truncated_h5_names_the_file(tmp_path):
    path = save_legacy_h5(_tiny(), tmp_path / "cut.h5")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"weight file '.*cut\.h5' "
                       r"\(\d+ bytes\) as HDF5: it is truncated") as info:
        weights_lib.load_weights(_tiny(), path)
    assert "truncated" in str(info.value.__cause__)   # h5py's own words
    with pytest.raises(ValueError, match=r"cut\.h5"):
        _tiny(weights=path)


@pytest.mark.parametrize("name, kind", [("junk.safetensors", "safetensors"),
                                        ("junk.weights.h5", "HDF5")])
def test_garbage_weight_file_names_the_file(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(b"this is not a weight file" * 4)
    with pytest.raises(ValueError, match=rf"{name}' \(100 bytes\) as {kind}"):
        weights_lib.load_weights(_tiny(), str(path))


# --- named weight sets (the download is replaced by a local file) ----------


def test_named_weights_fetch_arguments(monkeypatch, tmp_path):
    calls = []

    def fake_get_file(fname, origin, **kwargs):
        calls.append((fname, origin, kwargs))
        return str(tmp_path / fname)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    ws = keras_vgg.get_weight_set("imagenet", "D")
    weights_lib.fetch(ws, include_top=False)
    weights_lib.fetch(keras_vgg.get_weight_set("tv_in1k", "E", True))
    assert calls[0] == (
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        {"cache_subdir": "models",
         "file_hash": "6d6bbae143d832006294945121d1f1fc",
         "hash_algorithm": "md5"})
    assert calls[1][1] == ("https://huggingface.co/timm/vgg19_bn.tv_in1k/"
                           "resolve/main/model.safetensors")


@pytest.mark.slow
def test_named_weights_load_and_metadata(monkeypatch, tmp_path):
    state = torch_state_dict("A", False, 7, 1000)
    path = tmp_path / "vgg11.safetensors"
    save_file(timm_layout(state, 512, 7), str(path))
    seen = []

    def fake_fetch(weight_set, include_top=True):
        seen.append((weight_set.name, weight_set.config, include_top))
        return str(path)

    monkeypatch.setattr(weights_lib, "fetch", fake_fetch)
    model = keras_vgg.VGG11(weights="tv_in1k", include_preprocessing=True)
    assert seen == [("tv_in1k", "A", True)]
    assert model.get_layer("preprocessing").mode == "torch"
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(),
                                  state["classifier.6.weight"].T)
    notop = keras_vgg.VGG11(weights="tv_in1k", include_top=False)
    np.testing.assert_array_equal(
        notop.get_layer("block1_conv1").kernel.numpy(),
        state["features.0.weight"].transpose(2, 3, 1, 0))
    ws = keras_vgg.get_weight_set("tv_in1k", "A")
    assert (ws.preprocessing, ws.classes, ws.top1, ws.top5) == (
        "torch", 1000, 69.02, 88.63)
    assert keras_vgg.get_weight_set("imagenet", "E").preprocessing == "caffe"


def test_available_weights():
    assert keras_vgg.available_weights("D") == ["imagenet", "tv_in1k"]
    assert keras_vgg.available_weights("D", batch_norm=True) == ["tv_in1k"]
    assert keras_vgg.available_weights("C") == []
    assert keras_vgg.available_weights("A-LRN") == []


# --- nested models, BN / plain files, width mismatches ---------------------


def _assert_same_body(model, source):
    names = [layer.name for layer in model.layers
             if layer.name.startswith("block") and layer.weights]
    assert names
    for name in names:
        for a, b in zip(model.get_layer(name).get_weights(),
                        source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("wrapper", ["sequential", "functional"])
def test_weights_h5_of_a_model_nesting_a_vgg(tmp_path, wrapper):
    # Keras 3 numbers a nested model's layers within it: such a file used
    # to lose every conv ("no layer matches") or match the outer head to
    # the VGG's fc1.
    inner = randomize(keras_vgg.VGG("A", width_multiplier=0.125, classes=5,
                                    input_shape=(32, 32, 3)), seed=3)
    head = keras.layers.Dense(2)
    if wrapper == "sequential":
        outer = keras.Sequential([keras.Input((32, 32, 3)), inner, head])
    else:
        inp = keras.Input((32, 32, 3))
        outer = keras.Model(inp, head(inner(inp)))
    path = str(tmp_path / "outer.weights.h5")
    outer.save_weights(path)
    model = keras_vgg.VGG("A", width_multiplier=0.125, classes=5,
                          input_shape=(32, 32, 3))
    report = weights_lib.load_weights(model, path)
    _assert_same_body(model, inner)
    np.testing.assert_array_equal(model.get_layer("predictions").kernel,
                                  inner.get_layer("predictions").kernel)
    assert report.missing == [] and report.unused == ["dense:0"]
    # The other way: a VGG's own file into a model nesting a fresh VGG.
    inner.save_weights(str(tmp_path / "vgg.weights.h5"))
    fresh = keras_vgg.VGG("A", width_multiplier=0.125, classes=5,
                          input_shape=(32, 32, 3))
    weights_lib.load_weights(keras.Sequential([fresh, keras.layers.Dense(2)]),
                             str(tmp_path / "vgg.weights.h5"))
    _assert_same_body(fresh, inner)


def test_weights_h5_nesting_two_vggs_is_refused(tmp_path):
    inp = keras.Input((32, 32, 3))
    a, b = _tiny(name="left"), _tiny(name="right")
    twin = keras.Model(inp, [a(inp), b(inp)])
    path = str(tmp_path / "twin.weights.h5")
    twin.save_weights(path)
    with pytest.raises(ValueError, match=r"twin\.weights\.h5' nests 2 "
                       r"networks .*'functional:0', 'functional:1'.*same "
                       "structure"):
        weights_lib.load_weights(_tiny(), path)


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5"])
def test_bn_file_into_plain_model_warns(tmp_path, suffix):
    bn = randomize(_tiny(batch_norm=True))
    path = str(tmp_path / f"bn{suffix}")
    if suffix == ".h5":
        save_legacy_h5(bn, path)
    else:
        bn.save_weights(path)
    with pytest.warns(UserWarning, match=r"8 BatchNormalization layers of "
                      r"'.*bn\..*' \(.*\) were ignored.*batch_norm=True"):
        plain = _tiny(weights=path)
    _assert_same_body(plain, bn)
    # A plain file into a BN model names the BN layers left as they were.
    plain_path = str(tmp_path / f"plain{suffix}")
    if suffix == ".h5":
        save_legacy_h5(plain, plain_path)
    else:
        plain.save_weights(plain_path)
    with pytest.warns(UserWarning, match=r"'block1_conv1_bn', .*"
                      r"'block5_conv2_bn'\] were not in"):
        _tiny(batch_norm=True, weights=plain_path)


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5"])
@pytest.mark.parametrize("skip_mismatch", [False, True])
def test_width_mismatch_names_layer_shapes_and_multiplier(
        tmp_path, suffix, skip_mismatch):
    half = keras_vgg.VGG("A", width_multiplier=0.0625, include_top=False,
                         input_shape=(32, 32, 3))
    path = str(tmp_path / f"half{suffix}")
    if suffix == ".h5":
        save_legacy_h5(half, path)
    else:
        half.save_weights(path)
    key = "block1_conv1" if suffix == ".h5" else "conv2d:0"
    # skip_mismatch (fine-tuning's --weights) used to say that no layer
    # name matched.
    with pytest.raises(ValueError, match=(
            rf"mismatch for layer '{key}' \(block1_conv1/kernel\): model "
            r"\(3, 3, 3, 8\), file .* \(3, 3, 3, 4\)\. The file's layer is "
            r"0\.5 times as wide .* width_multiplier=0\.0625 and the model "
            r"with 0\.125")):
        weights_lib.load_weights(_tiny(), path, skip_mismatch=skip_mismatch)


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5", ".safetensors"])
def test_inspect_weight_file(tmp_path, suffix):
    path = str(tmp_path / f"net{suffix}")
    if suffix == ".safetensors":
        save_file(torch_state_dict("A", True, 1, 3), path)
        want = weights_lib.FileNetwork(True, 1.0, 3)
    else:
        net = keras_vgg.VGG("A", width_multiplier=0.3, batch_norm=True,
                            classes=7, input_shape=(32, 32, 3))
        save_legacy_h5(net, path) if suffix == ".h5" else net.save_weights(
            path)
        want = weights_lib.FileNetwork(True, 1229 / 4096, 7)
    assert weights_lib.inspect_weight_file(path) == want
    # A file without the head: the widest convolution gives the width.
    plain = _tiny()
    notop = str(tmp_path / f"notop{suffix}")
    if suffix == ".safetensors":
        state = torch_state_dict("A", False, 1, 3)
        save_file({k: v for k, v in state.items()
                   if k.startswith("features")}, notop)
        want = weights_lib.FileNetwork(False, 1.0, None)
    else:
        save_legacy_h5(plain, notop) if suffix == ".h5" else \
            plain.save_weights(notop)
        want = weights_lib.FileNetwork(False, 0.125, None)
    assert weights_lib.inspect_weight_file(notop) == want
