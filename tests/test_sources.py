import functools
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import augment
from pipelines import sources
from pipelines import synthetic


def _pixels(h=40, w=56, seed=0):
    """A smooth colourful image: gradients survive JPEG nearly unchanged."""
    ys, xs = np.mgrid[0:h, 0:w]
    r = np.random.RandomState(seed)
    a, b = r.uniform(1, 4, 2)
    return np.stack([255 * ys / h, 255 * xs / w,
                     127 + 100 * np.sin(a * ys / h + b * xs / w)],
                    -1).astype(np.uint8)


def _encode(image, fmt, mode=None, **kw):
    buffer = io.BytesIO()
    pil = Image.fromarray(image)
    if mode:
        pil = pil.convert(mode)
    pil.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path):
    """cat/: a PNG and a grayscale JPEG; dog/: a CMYK JPEG, an RGB JPEG, a
    truncated JPEG; plus a non-image file that must be ignored."""
    root = tmp_path / "pets"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    rgb = _pixels()
    files = {
        "cat/a.png": _encode(rgb, "PNG"),
        "cat/b_gray.jpg": _encode(rgb, "JPEG", "L", quality=95),
        "dog/c_cmyk.jpg": _encode(rgb, "JPEG", "CMYK", quality=95),
        "dog/d.JPEG": _encode(rgb, "JPEG", quality=95),
        "dog/e_truncated.jpg": _encode(rgb, "JPEG")[:300],
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "dog" / "README.txt").write_text("not an image")
    return root, rgb


def test_folder_source_yields_every_image_file(folder):
    root, _ = folder
    source = sources.load_source(f"folder:{root}", val_fraction=0.0,
                                 shuffle_files=False)
    assert source.class_names == ("cat", "dog")
    assert source.num_classes == 2 and source.num_examples == 5
    assert source.dataset.element_spec == sources.element_spec()
    examples = list(source.dataset.as_numpy_iterator())
    files = sorted(p for p in root.rglob("*") if p.suffix != ".txt"
                   and p.is_file())
    assert [ex["encoded"] for ex in examples] == [p.read_bytes()
                                                  for p in files]
    assert [ex["label"] for ex in examples] == [0, 0, 1, 1, 1]
    assert all(ex["bbox"].shape == (0, 4) for ex in examples)


def test_folder_images_become_rgb_and_bad_ones_are_counted(folder):
    root, rgb = folder
    source = sources.load_source(f"folder:{root}", val_fraction=0.0,
                                 shuffle_files=False)
    counter = augment.SkipCounter()
    ds = augment.make_dataset(source, False, 1, scale=40, crop=None,
                              preprocessing="none", skip_counter=counter,
                              deterministic=True)
    out = [(x[0].numpy(), int(y[0])) for x, y in ds]
    assert counter.count == 1  # the truncated JPEG, skipped, not fatal
    assert [label for _, label in out] == [0, 0, 1, 1]
    for image, _ in out:
        assert image.shape == rgb.shape  # smallest side already 40
    png, gray, cmyk, jpeg = (image for image, _ in out)
    np.testing.assert_allclose(png, rgb, atol=1e-3)
    assert np.array_equal(gray[..., 0], gray[..., 1])  # gray -> 3 equal
    assert np.abs(cmyk - rgb).mean() < 6  # CMYK converted back to RGB
    assert np.abs(jpeg - rgb).mean() < 6
    # The same counter keeps counting across passes.
    list(ds)
    assert counter.count == 2


def test_folder_validation_split_is_a_held_out_fraction(tmp_path):
    root = tmp_path / "many"
    for name, count in (("b", 20), ("a", 10)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            # Sources do not decode: unique bytes name each file.
            (root / name / f"{i:02d}.jpg").write_bytes(f"{name}{i}".encode())

    def split(name, seed=0):
        source = sources.load_source(f"folder:{root}", split=name,
                                     val_fraction=0.2, seed=seed)
        got = {ex["encoded"].decode(): int(ex["label"])
               for ex in source.dataset.as_numpy_iterator()}
        assert len(got) == source.num_examples
        return got

    train, val = split("train"), split("val")
    assert (len(train), len(val)) == (24, 6)
    assert not set(train) & set(val) and len(set(train) | set(val)) == 30
    # 20 % of each class; labels follow the sorted class names.
    assert sorted(val.values()) == [0, 0, 1, 1, 1, 1]
    assert all(k.startswith("ab"[v]) for k, v in {**train, **val}.items())
    assert split("validation") == val  # deterministic
    assert split("validation", seed=1) != val


def _write_records(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for jpeg, label, boxes in examples:
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[jpeg])),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[label])),
            }
            for i, k in enumerate(("ymin", "xmin", "ymax", "xmax")):
                if boxes:
                    feature[f"image/object/bbox/{k}"] = tf.train.Feature(
                        float_list=tf.train.FloatList(
                            value=[b[i] for b in boxes]))
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())


def test_tfrecord_source(tmp_path):
    jpeg = _encode(_pixels(), "JPEG")
    boxes = [(0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 0.5)]
    _write_records(tmp_path / "train-00000-of-00002",
                   [(jpeg, 1, boxes), (jpeg, 2, [])])
    _write_records(tmp_path / "train-00001-of-00002", [(jpeg, 3, [])])
    _write_records(tmp_path / "validation-00000-of-00001", [(jpeg, 2, [])])
    (tmp_path / "class_names.txt").write_text("bg\na\nb\nc\n")

    source = sources.load_source(f"tfrecord:{tmp_path}",
                                 shuffle_files=False)
    assert source.class_names == ("bg", "a", "b", "c")
    assert source.num_classes == 4 and source.num_examples is None
    assert source.dataset.element_spec == sources.element_spec()
    got = list(source.dataset.as_numpy_iterator())
    assert sorted(int(ex["label"]) for ex in got) == [1, 2, 3]
    first = next(ex for ex in got if ex["label"] == 1)
    assert first["encoded"] == jpeg
    np.testing.assert_allclose(first["bbox"], boxes)  # ymin, xmin, ...
    assert all(ex["bbox"].shape == (0, 4) for ex in got if ex["label"] != 1)

    val = sources.load_source(f"tfrecord:{tmp_path}/{{split}}-*",
                              split="validation", label_offset=1)
    assert [int(ex["label"]) for ex in val.dataset] == [1]  # 1-based -> 0
    explicit = sources.load_source(f"tfrecord:{tmp_path}/train-00001-*")
    assert [int(ex["label"]) for ex in explicit.dataset] == [3]


def test_builtin_source_generates_on_first_use(tmp_path, monkeypatch):
    small = functools.partial(synthetic.write_builtin, num_train=10,
                              num_val=5)
    monkeypatch.setattr(synthetic, "write_builtin", small)
    source = sources.load_source("builtin", data_dir=tmp_path / "cache")
    assert source.class_names == synthetic.CLASS_NAMES
    assert source.num_examples == 10
    assert source.dataset.element_spec == sources.element_spec()
    got = list(source.dataset.as_numpy_iterator())
    assert len(got) == 10
    assert sorted(int(ex["label"]) for ex in got) == [0, 0, 1, 1, 2, 2, 3, 3,
                                                       4, 4]
    assert all(ex["bbox"].shape == (1, 4) for ex in got)
    val = sources.load_source("builtin", "validation",
                              data_dir=tmp_path / "cache")
    assert val.num_examples == 5 and len(list(val.dataset)) == 5


@pytest.mark.parametrize("spec, match", [
    ("folder:/no/such/dir", "folder:/no/such/dir"),
    ("tfrecord:/no/such/train-*", "tfrecord:/no/such/train-"),
    ("tfrecord:", "tfrecord:"),
    ("nosuchkind:abc", "nosuchkind:abc"),
    ("no_such_tfds_dataset_xyz", "no_such_tfds_dataset_xyz"),
    ("", "spec"),
])
def test_bad_specs_raise_value_error_naming_them(spec, match):
    with pytest.raises(ValueError, match=match):
        sources.load_source(spec)


def test_bad_split_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="split"):
        sources.load_source(f"folder:{tmp_path}", split="test")
    with pytest.raises(ValueError, match="no class"):
        sources.load_source(f"folder:{tmp_path}")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        sources.load_source(f"folder:{tmp_path}")


def test_tfds_source_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3, data_dir=str(tmp_path)):
        source = sources.load_source("imagenette", split="validation",
                                     data_dir=str(tmp_path))
        assert source.num_classes == 10 and len(source.class_names) == 10
        assert source.dataset.element_spec == sources.element_spec()
        got = list(source.dataset.as_numpy_iterator())
        assert len(got) == 3
        for ex in got:
            assert tf.io.is_jpeg(ex["encoded"])  # still encoded
            assert 0 <= ex["label"] < 10 and ex["bbox"].shape == (0, 4)
        ds = augment.make_dataset(source, False, 3, scale=32, crop=32)
        images, labels = next(iter(ds))
        assert images.shape == (3, 32, 32, 3)


def test_tfds_source_reads_object_boxes(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    jpeg = _encode(_pixels(), "JPEG")
    boxes = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 1.0]],
                     np.float32)

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensors({
            "image": jpeg, "image/filename": "x.jpg",
            "label": tf.constant(7, tf.int64),
            "objects": {"bbox": boxes}})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset,
                                data_dir=str(tmp_path)):
        source = sources.load_source("tfds:stanford_dogs", split="train",
                                     data_dir=str(tmp_path))
        (ex,) = list(source.dataset.as_numpy_iterator())
    assert source.num_classes == 120
    assert source.dataset.element_spec == sources.element_spec()
    assert ex["encoded"] == jpeg and ex["label"] == 7
    np.testing.assert_array_equal(ex["bbox"], boxes)
