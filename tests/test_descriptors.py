"""pipelines.features (Appendix B descriptors) and pipelines.linear_probe."""

import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import keras_vgg
from keras_vgg import runs
from pipelines import features
from pipelines import linear_probe
from pipelines import protocols
from tests import tiny_run
from tests.helpers import randomize


@pytest.fixture(scope="module")
def classifier():
    return runs.load_classifier(tiny_run.tiny_model(seed=4))


def test_descriptor_is_the_mean_fc2_over_positions_flips_and_scales(
        classifier):
    image = tiny_run.pixels(40, 40, seed=3)
    got = features.describe(features.descriptor_model(classifier), image,
                            [32, 64], "caffe", flip=True)
    # Q = 32: the image is exactly one 32x32 window, so the classifier's own
    # fc2 gives it.  Q = 64: the fully convolutional fc2 map is 2x2.
    fc2 = keras.Model(classifier.model.inputs[0],
                      classifier.model.get_layer("fc2").output)
    fcn = keras_vgg.fully_convolutional(classifier.model)
    fc2_map = keras.Model(fcn.inputs[0], fcn.get_layer("fc2").output)
    per_scale = []
    for q, net in ((32, fc2), (64, fc2_map)):
        x = protocols.rescale(image, q).numpy()
        views = keras_vgg.preprocess_input(np.concatenate([x, x[:, :, ::-1]]))
        out = np.asarray(net(views), dtype="float64")
        assert out.shape[1:-1] == ((2, 2) if q == 64 else ())
        per_scale.append(out.reshape(-1, out.shape[-1]).mean(axis=0))
    want = np.mean(per_scale, axis=0)
    want /= np.linalg.norm(want)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert abs(np.linalg.norm(got) - 1) < 1e-5


def _folder(root):
    rng = np.random.RandomState(0)
    for name, colour in (("cats", (200, 40, 40)), ("dogs", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.clip(rng.normal(colour, 20, (40, 48, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(
                root / name / f"{i}.png")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return f"folder:{root}"


@pytest.mark.slow
def test_features_cli_skips_bad_images_and_round_trips(tmp_path,
                                                       classifier):
    run_dir, _ = tiny_run.write_run(str(tmp_path / "run"))
    spec = _folder(tmp_path / "photos")
    out = tmp_path / "f.npz"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.features", f"--model={run_dir}",
         f"--dataset={spec}", "--split=train", "--scales=32,40",
         f"--output={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    x, y, names, meta = features.load(str(out))
    assert names == ["cats", "dogs"] and meta["scales"] == [32, 40]
    assert meta["images_skipped"] == 1 and len(y) == meta["images"]
    assert x.shape[1] == 512 and np.allclose(np.linalg.norm(x, axis=1), 1)
    with pytest.raises(ValueError, match="--features: .* not a features"):
        features.load(str(tmp_path / "run" / "class_names.txt"))


@pytest.mark.slow
def test_linear_probe_learns_and_checks_its_inputs(tmp_path):
    rng = np.random.RandomState(0)
    centers = rng.normal(0, 1, (3, 16))

    def split(n):
        y = np.arange(n) % 3
        x = centers[y] + rng.normal(0, 0.1, (n, 16))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(
            "float32"), y

    names = ["a", "b", "c"]
    for path, n in (("train.npz", 60), ("val.npz", 30)):
        x, y = split(n)
        features.save({"features": x, "labels": y, "class_names": names,
                       "meta": {"images": n}}, str(tmp_path / path))
    result = linear_probe.train_probe(
        features.load(str(tmp_path / "train.npz")),
        features.load(str(tmp_path / "val.npz")), epochs=60)
    assert result["top1_accuracy"] == 1.0
    other = features.load(str(tmp_path / "val.npz"))
    with pytest.raises(ValueError, match="different classes"):
        linear_probe.train_probe(
            features.load(str(tmp_path / "train.npz")),
            (other[0], other[1], ["a", "b", "x"], other[3]))
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.linear_probe",
         f"--features={tmp_path / 'train.npz'}",
         f"--val_features={tmp_path / 'val.npz'}", "--epochs=60",
         f"--output={tmp_path / 'probe.json'}"],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "probe.json").read_text())
    assert written["top1_accuracy"] == 1.0


@pytest.mark.slow
def test_features_cli_takes_a_weight_file_of_any_width_bn_and_head(
        tmp_path):
    # --architecture with --weights=FILE used to build a full-width,
    # 1000-class, non-BN network whatever the file held.
    net = keras_vgg.VGG("A", width_multiplier=0.0625, batch_norm=True,
                        classes=3, classifier_activation="softmax")
    randomize(net, seed=5)
    path = str(tmp_path / "mine.weights.h5")
    net.save_weights(path)
    spec = _folder(tmp_path / "photos")
    out = tmp_path / "f.npz"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.features", "--architecture=A",
         f"--weights={path}", f"--dataset={spec}", "--scales=224",
         "--noflip", f"--output={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    x, y, names, meta = features.load(str(out))
    assert x.shape == (meta["images"], 256) and meta["model"] == f"A:{path}"
    model = features.descriptor_model(runs.load_classifier(net))
    want = np.stack([features.describe(
        model, np.asarray(Image.open(png), "float32"), [224], "caffe",
        flip=False) for png in sorted((tmp_path / "photos").glob("*/*.png"))])
    # Each descriptor is that of one image under the file's own network.
    gaps = np.abs(x[:, None, :] - want[None]).max(axis=-1)
    assert gaps.min(axis=1).max() < 1e-5 and np.abs(x).max() > 1e-2
    # The flags override the file: a wrong width is refused, naming it.
    with pytest.raises(ValueError, match=r"--weights=.*mine\.weights\.h5.*"
                       r"width_multiplier=0\.0625 and the model with 0\.125"):
        runs.from_weights("A", path, width_multiplier=0.125)


def test_max_images_describes_every_class(tmp_path, classifier):
    spec = _folder(tmp_path / "photos")
    result = features.extract_features(classifier, spec, "train",
                                       scales=[32], max_images=2)
    # One of each class, not the first two (both cats).
    assert sorted(result["labels"].tolist()) == [0, 1]
    assert result["meta"]["class_counts"] == [1, 1]


def _npz(path, meta, labels=(0, 1, 2, 0, 1, 2), names=("a", "b", "c")):
    x = np.eye(len(labels), 8, dtype="float32")
    features.save({"features": x, "labels": np.asarray(labels),
                   "class_names": list(names),
                   "meta": dict({"images": len(labels)}, **meta)},
                  str(path))
    return str(path)


@pytest.mark.slow
def test_linear_probe_refuses_descriptors_described_differently(tmp_path):
    common = {"model": "runs/a/model.keras", "scales": [32, 40],
              "flip": True}
    train = _npz(tmp_path / "train.npz", dict(common, dataset="x",
                                              split="train"))
    val = _npz(tmp_path / "val.npz", dict(common, scales=[32],
                                          flip=False, split="validation"))
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.linear_probe",
         f"--features={train}", f"--val_features={val}", "--epochs=1",
         f"--output={tmp_path / 'probe.json'}"],
        capture_output=True, text=True)
    assert done.returncode != 0
    assert re.search(r"error: .*scales: \[32, 40\] and \[32\]; flip: True "
                     r"and False", done.stderr), done.stderr
    assert "split:" not in done.stderr and "model:" not in done.stderr
    assert not (tmp_path / "probe.json").exists()
    other = _npz(tmp_path / "other.npz", dict(common, model="runs/b"))
    with pytest.raises(ValueError, match=r"model: 'runs/a/model.keras' and "
                                         r"'runs/b'"):
        linear_probe.train_probe(features.load(train), features.load(other),
                                 epochs=1)


def test_linear_probe_warns_of_a_class_without_training_example(tmp_path):
    meta = {"model": "m", "scales": [32], "flip": True}
    train = _npz(tmp_path / "train.npz", meta, labels=(0, 2, 0, 2, 0, 2))
    val = _npz(tmp_path / "val.npz", meta)
    with pytest.warns(UserWarning, match=r"no training example of 1 "
                                         r"class\(es\): b"):
        linear_probe.train_probe(features.load(train), features.load(val),
                                 epochs=1)
