import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import synthetic


def _parse(path):
    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/text": tf.io.FixedLenFeature([], tf.string),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    }
    for k in ("xmin", "ymin", "xmax", "ymax"):
        features[f"image/object/bbox/{k}"] = tf.io.VarLenFeature(tf.float32)
    out = []
    for record in tf.data.TFRecordDataset(sorted(map(str, path))):
        ex = tf.io.parse_single_example(record, features)
        out.append({k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor)
                        else v).numpy() for k, v in ex.items()})
    return out


@pytest.mark.parametrize("label", range(synthetic.NUM_CLASSES))
def test_render_box_is_the_mask_extent_and_shapes_differ(label):
    image, bbox, mask = synthetic.render(label, seed=(3, label))
    h, w = mask.shape
    assert image.shape == (h, w, 3) and image.dtype == np.uint8
    assert 200 <= h <= 500 and 200 <= w <= 500
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    np.testing.assert_allclose(
        bbox, [rows[0] / h, cols[0] / w, (rows[-1] + 1) / h,
               (cols[-1] + 1) / w])
    box_h, box_w = (rows[-1] + 1 - rows[0]), (cols[-1] + 1 - cols[0])
    side = min(h, w)
    assert 0.15 * side <= max(box_h, box_w) <= 0.6 * side + 1
    # The fraction of its box a shape fills is what tells shapes apart.
    fill = mask.sum() / (box_h * box_w)
    expected = {"circle": (0.74, 0.83), "square": (0.99, 1.0),
                "triangle": (0.3, 0.6), "cross": (0.5, 0.6),
                "checker": (0.99, 1.0)}[synthetic.CLASS_NAMES[label]]
    assert expected[0] <= fill <= expected[1]
    # The object stands out from its background.
    inside = image[mask].astype(float).mean(0)
    outside = image[~mask].astype(float).mean(0)
    assert np.linalg.norm(inside - outside) > 40


def test_render_is_deterministic_and_validates_label():
    a = synthetic.render(2, seed=11)[0]
    b = synthetic.render(2, seed=11)[0]
    c = synthetic.render(2, seed=12)[0]
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or np.any(a != c)
    with pytest.raises(ValueError, match="label"):
        synthetic.render(5, seed=0)


def test_write_builtin_layout(tmp_path):
    path = synthetic.write_builtin(tmp_path / "b", num_train=12, num_val=5,
                                   seed=1)
    names = sorted(p.name for p in path.iterdir())
    assert names == ["COMPLETE.json", "class_names.txt",
                     "train-00000-of-00001", "validation-00000-of-00001"]
    assert ((path / "class_names.txt").read_text().split()
            == list(synthetic.CLASS_NAMES))
    train = _parse(path.glob("train-*"))
    val = _parse(path.glob("validation-*"))
    assert len(train) == 12 and len(val) == 5
    labels = [ex["image/class/label"] for ex in train]
    assert sorted(set(labels)) == [0, 1, 2, 3, 4]  # balanced, 0-based
    for ex in train + val:
        image = tf.io.decode_jpeg(ex["image/encoded"]).numpy()
        assert image.shape == (ex["image/height"], ex["image/width"], 3)
        assert ex["image/format"] == b"jpeg"
        label = ex["image/class/label"]
        assert ex["image/class/text"].decode() == synthetic.CLASS_NAMES[label]
        assert list(ex["image/object/class/label"]) == [label]
        xmin, ymin = ex["image/object/bbox/xmin"], ex["image/object/bbox/ymin"]
        xmax, ymax = ex["image/object/bbox/xmax"], ex["image/object/bbox/ymax"]
        assert len(xmin) == 1
        assert 0 <= xmin[0] < xmax[0] <= 1 and 0 <= ymin[0] < ymax[0] <= 1


def test_write_builtin_is_deterministic_and_done_once(tmp_path):
    a = synthetic.write_builtin(tmp_path / "a", num_train=6, num_val=2)
    b = synthetic.write_builtin(tmp_path / "b", num_train=6, num_val=2)
    c = synthetic.write_builtin(tmp_path / "c", num_train=6, num_val=2,
                                seed=5)
    shard = "train-00000-of-00001"
    assert (a / shard).read_bytes() == (b / shard).read_bytes()
    assert (a / shard).read_bytes() != (c / shard).read_bytes()
    stamp = os.stat(a / shard).st_mtime_ns
    synthetic.write_builtin(tmp_path / "a", num_train=6, num_val=2)
    assert os.stat(a / shard).st_mtime_ns == stamp  # skipped: marker matched
    # Other arguments replace the dataset.
    synthetic.write_builtin(tmp_path / "a", num_train=3, num_val=2)
    assert synthetic.read_marker(a)["num_train"] == 3
    assert len(_parse([a / shard])) == 3
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # no leftovers


def test_interrupted_write_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []
    real = synthetic.render

    def failing(label, seed):
        calls.append(label)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(label, seed)

    monkeypatch.setattr(synthetic, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic.write_builtin(tmp_path / "d", num_train=6, num_val=2)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(synthetic, "render", real)
    path = synthetic.write_builtin(tmp_path / "d", num_train=6, num_val=2)
    assert synthetic.read_marker(path)["num_train"] == 6


def test_write_builtin_errors_and_default_dir(tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="mine"):
        synthetic.write_builtin(foreign, num_train=2, num_val=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="num_val"):
        synthetic.write_builtin(tmp_path / "x", num_train=2, num_val=0)
    monkeypatch.setenv("KERAS_VGG_DATA", str(tmp_path / "env"))
    assert synthetic.default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("KERAS_VGG_DATA")
    assert str(synthetic.default_cache_dir()).endswith(
        os.path.join(".cache", "keras_vgg", "builtin"))
