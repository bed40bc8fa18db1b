import functools
import io
import os
import re

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


# -- folders with a box file ------------------------------------------------

@pytest.fixture
def shapes(tmp_path):
    """circle/: a 40x80 PNG, a 50x20 JPEG; square/: a 30x60 PNG, a 64x32
    JPEG (height x width); the file name a.png is in both classes."""
    root = tmp_path / "shapes"
    sizes = {"circle/a.png": (40, 80), "circle/b.jpg": (50, 20),
             "square/a.png": (30, 60), "square/d.jpg": (64, 32)}
    for name, (h, w) in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = tf.constant(_pixels(h, w))
        encode = tf.io.encode_png if name.endswith(".png") else (
            tf.io.encode_jpeg)
        (root / name).write_bytes(encode(pixels).numpy())
    return root


def _boxes_by_file(root, split="train", **kw):
    source = sources.load_source(f"folder:{root}", split=split, **kw)
    assert source.dataset.element_spec == sources.element_spec()
    by_bytes = {p.read_bytes(): p.relative_to(root).as_posix()
                for p in root.rglob("*") if p.suffix in (".png", ".jpg")}
    return {by_bytes[ex["encoded"]]: (int(ex["label"]), ex["bbox"])
            for ex in source.dataset.as_numpy_iterator()}


def test_folder_boxes_csv_in_pixels_of_the_image(shapes):
    # No width/height: divided by each image's own size, read in the graph
    # (the JPEG's from its header), and clipped to the image.
    (shapes / "boxes.csv").write_text(
        "filename,class,xmin,ymin,xmax,ymax\n"
        "circle/a.png,circle,8,4,40,20\n"
        "circle/b.jpg,circle,2,5,10,25\n"
        "circle/a.png,circle,0,0,80,40\n"
        "square/a.png,square,6,3,66,27\n")
    got = _boxes_by_file(shapes, val_fraction=0.0, shuffle_files=True)
    assert {k: label for k, (label, _) in got.items()} == {
        "circle/a.png": 0, "circle/b.jpg": 0, "square/a.png": 1,
        "square/d.jpg": 1}
    expected = {"circle/a.png": [[0.1, 0.1, 0.5, 0.5], [0, 0, 1, 1]],
                "circle/b.jpg": [[0.1, 0.1, 0.5, 0.5]],
                "square/a.png": [[0.1, 0.1, 0.9, 1.0]]}  # 66 > 60: clipped
    for name, (_, boxes) in got.items():
        assert boxes.dtype == np.float32
        np.testing.assert_allclose(
            boxes, np.reshape(expected.get(name, []), [-1, 4]), rtol=1e-6)


def test_folder_boxes_csv_with_the_image_size(shapes):
    # The given size is used as given (here twice the real one for
    # circle/a.png); an empty size falls back to the image's.
    (shapes / "boxes.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "circle/a.png,160,80,circle,8,4,40,20\n"
        "d.jpg,,,square,8,16,24,48\n"
        "circle/a.png,160,80,circle,0,0,160,80\n")
    got = _boxes_by_file(shapes, val_fraction=0.0)
    np.testing.assert_allclose(got["circle/a.png"][1],
                               [[0.05, 0.05, 0.25, 0.25], [0, 0, 1, 1]],
                               rtol=1e-6)
    np.testing.assert_allclose(got["square/d.jpg"][1],
                               [[0.25, 0.25, 0.75, 0.75]], rtol=1e-6)
    assert got["circle/b.jpg"][1].shape == (0, 4)
    assert got["square/a.png"][1].shape == (0, 4)


@pytest.mark.parametrize("data", [
    {"circle/b.jpg": [[2, 5, 10, 25], [0, 0, 20, 50]], "a.png": []},
    [{"filename": "circle/b.jpg", "xmin": 2, "ymin": 5, "xmax": 10,
      "ymax": 25},
     {"filename": "b.jpg", "xmin": 0, "ymin": 0, "xmax": 20, "ymax": 50,
      "width": 20, "height": 50}],
])
def test_folder_boxes_json(shapes, data):
    import json
    if isinstance(data, dict):
        # "a.png" is ambiguous, but names no box: only used names resolve.
        data = {k: v for k, v in data.items() if v}
    (shapes / "boxes.json").write_text(json.dumps(data))
    got = _boxes_by_file(shapes, val_fraction=0.0)
    np.testing.assert_allclose(got["circle/b.jpg"][1],
                               [[0.1, 0.1, 0.5, 0.5], [0, 0, 1, 1]],
                               rtol=1e-6)
    assert all(got[k][1].shape == (0, 4) for k in got if k != "circle/b.jpg")


def test_folder_box_file_errors_name_the_file_and_the_row(shapes):
    (shapes / "boxes.csv").write_text(
        "filename,xmin,ymin,xmax,ymax\n"
        "circle/b.jpg,2,5,10,25\n"
        "a.png,1,1,2,2\n")
    with pytest.raises(ValueError, match=re.escape(
            f"{shapes / 'boxes.csv'}: row 2 (line 3): the bare filename "
            "'a.png' matches 2 images (circle/a.png, square/a.png)")):
        sources.load_source(f"folder:{shapes}", split="validation")
    (shapes / "boxes.json").write_text("{}")
    with pytest.raises(ValueError, match=r"boxes\.csv.*boxes\.json"):
        sources.load_source(f"folder:{shapes}")


def test_folder_split_is_the_same_with_a_box_file(tmp_path):
    root = tmp_path / "many"
    lines = ["filename,xmin,ymin,xmax,ymax"]
    for name in ("b", "a"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            # 8x16 JPEGs; trailing bytes make each file unique and say i.
            (root / name / f"{i:02d}.jpg").write_bytes(
                _encode(_pixels(8, 16), "JPEG") + f"{name}{i:02d}".encode())
            lines.append(f"{name}/{i:02d}.jpg,{i},0,{i + 1},8")

    def split(name):
        source = sources.load_source(f"folder:{root}", split=name,
                                     val_fraction=0.25, seed=3,
                                     shuffle_files=True)
        return [(ex["encoded"], ex["bbox"])
                for ex in source.dataset.as_numpy_iterator()]

    before = {name: split(name) for name in ("train", "validation")}
    assert all(b.shape == (0, 4) for s in before.values() for _, b in s)
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    after = {name: split(name) for name in ("train", "validation")}
    for name in before:  # the same files, in the same shuffled order
        assert [e for e, _ in after[name]] == [e for e, _ in before[name]]
        assert len(after[name]) == (18 if name == "train" else 6)
    for encoded, boxes in after["train"] + after["validation"]:
        i = int(encoded[-2:])  # the box moved along with its image
        np.testing.assert_allclose(boxes, [[0, i / 16, 1, (i + 1) / 16]],
                                   rtol=1e-6)


def test_folder_boxes_of_an_unreadable_image_are_skipped_and_counted(
        shapes):
    # Its size cannot be read; augment skips it as it would undecodable.
    (shapes / "square" / "a.png").write_bytes(
        (shapes / "square" / "a.png").read_bytes()[:40])
    (shapes / "boxes.csv").write_text(
        "filename,xmin,ymin,xmax,ymax\n"
        "square/a.png,6,3,30,27\n"
        "circle/a.png,8,4,40,20\n")
    source = sources.load_source(f"folder:{shapes}", val_fraction=0.0,
                                 shuffle_files=False)
    counter = augment.SkipCounter()
    ds = augment.make_dataset(source, False, 1, scale=40, crop=None,
                              preprocessing="none", with_bbox=True,
                              skip_counter=counter, deterministic=True)
    got = [(int(y[0]), b[0].numpy()) for _, y, b in ds]
    assert counter.count == 1
    assert [label for label, _ in got] == [0, 0, 1]
    np.testing.assert_allclose(got[0][1], [[0.1, 0.1, 0.5, 0.5]], rtol=1e-6)


# -- tfds objects/label -----------------------------------------------------

def test_objects_to_label_and_boxes_takes_the_largest_objects_class():
    boxes = tf.constant([[0.0, 0.0, 0.2, 0.2],    # class 3, area 0.04
                         [0.1, 0.1, 0.5, 0.6],    # class 5, area 0.2
                         [0.5, 0.5, 0.6, 0.7]])   # class 3, area 0.02
    label, kept = sources._objects_to_label_and_boxes(
        tf.constant([3, 5, 3]), boxes)
    assert label.dtype == tf.int64 and int(label) == 5
    np.testing.assert_array_equal(kept, np.float32([[0.1, 0.1, 0.5, 0.6]]))
    label, kept = sources._objects_to_label_and_boxes(
        tf.constant([3, 5, 3]), tf.gather(boxes, [1, 0, 2]))
    assert int(label) == 3  # the largest (first row) is class 3 now
    np.testing.assert_array_equal(kept, np.float32([[0.1, 0.1, 0.5, 0.6],
                                                     [0.5, 0.5, 0.6, 0.7]]))
    # Equal areas: the first object wins.
    label, kept = sources._objects_to_label_and_boxes(
        tf.constant([7, 2]), [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    assert int(label) == 7
    np.testing.assert_array_equal(kept, [[0.0, 0.0, 0.5, 0.5]])


def test_tfds_objects_label_without_a_top_level_label(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    jpeg = _encode(_pixels(), "JPEG")
    images = [  # (object labels, boxes)
        ([14, 11, 14], [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.9, 0.9],
                        [0.5, 0.5, 0.6, 0.6]]),
        ([], np.zeros([0, 4])),  # no object: left out
        ([14, 0], [[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.4]]),
    ]

    def as_dataset(self, *args, **kwargs):
        examples = [tf.data.Dataset.from_tensors({
            "image": jpeg, "image/filename": f"{i}.jpg",
            "objects": {"label": tf.constant(labels, tf.int64),
                        "bbox": tf.constant(boxes, tf.float32)}})
            for i, (labels, boxes) in enumerate(images)]
        return functools.reduce(tf.data.Dataset.concatenate, examples)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset,
                                data_dir=str(tmp_path)):
        source = sources.load_source("voc", split="train",
                                     data_dir=str(tmp_path))
        got = list(source.dataset.as_numpy_iterator())
    assert source.num_classes == 20
    assert source.class_names[:2] == ("aeroplane", "bicycle")
    assert source.class_names[11] == "dog" and source.class_names[14] == (
        "person")
    assert source.dataset.element_spec == sources.element_spec()
    assert [int(ex["label"]) for ex in got] == [11, 14]
    np.testing.assert_array_equal(got[0]["bbox"],
                                  np.float32([[0.0, 0.0, 0.9, 0.9]]))
    np.testing.assert_array_equal(got[1]["bbox"], [[0.0, 0.0, 1.0, 1.0]])
    assert got[0]["encoded"] == jpeg


@pytest.mark.parametrize("name", ["celeb_a", "kitti"])
def test_tfds_without_any_label_is_a_value_error(tmp_path, name):
    # celeb_a: no label at all; kitti: objects with bbox but "type".
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=1, data_dir=str(tmp_path)):
        with pytest.raises(ValueError, match=f"{name}.*'objects/label'"):
            sources.load_source(f"tfds:{name}", data_dir=str(tmp_path))


# -- paths, unknown names, classes matched by name ---------------------------

def test_paths_expand_home_and_environment_variables(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "pets" / "cat").mkdir(parents=True)
    (home / "pets" / "cat" / "a.png").write_bytes(_encode(_pixels(), "PNG"))
    jpeg = _encode(_pixels(), "JPEG")
    (home / "records").mkdir()
    _write_records(home / "records" / "train-00000-of-00001",
                   [(jpeg, 0, [])])
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RECORDS", str(home / "records"))
    folder = sources.load_source("folder:~/pets", val_fraction=0)
    assert folder.paths == (str(home / "pets" / "cat" / "a.png"),)
    records = sources.load_source("tfrecord:$RECORDS/{split}-*")
    assert [int(ex["label"]) for ex in records.dataset] == [0]
    small = functools.partial(synthetic.write_builtin, num_train=5,
                              num_val=5)
    monkeypatch.setattr(synthetic, "write_builtin", small)
    sources.load_source("builtin", data_dir="~/cache")
    assert (home / "cache" / synthetic.CLASS_NAMES_FILE).is_file()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("spec, guess", [
    ("imagnet2012", "'imagenet2012'"),
    ("tfds:imagenete", "'tfds:imagenette'"),
    ("fodler:/data/flowers", "'folder:/data/flowers'"),
    ("biultin", "'builtin'"),
])
def test_unknown_dataset_is_one_line_with_close_matches(spec, guess):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError) as info:
        sources.load_source(spec)
    message = str(info.value)
    assert message.startswith(f"Unknown dataset {spec!r}. Did you mean "
                              f"{guess}")
    assert message.endswith("Give builtin, folder:DIR, tfrecord:GLOB or a "
                            "tfds name.")
    assert "\n" not in message and len(message) < 200
    # Nothing chained: the traceback does not repeat tfds' list of names.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_class_mapping_by_name():
    # Same classes, another order: dataset label -> model index.
    np.testing.assert_array_equal(sources.class_mapping(
        ["cat", "dog", "fox"], ["fox", "cat", "dog"]), [1, 2, 0])
    assert sources.class_mapping(["cat", "dog"], ["cat", "dog"]) is None
    # Some of the model's classes: still by name.
    np.testing.assert_array_equal(sources.class_mapping(
        ["dog"], ["cat", "dog"]), [1])
    # ImageNet's WordNet ids (tfds, folders) meet its class names (a model
    # without a names file).
    np.testing.assert_array_equal(sources.class_mapping(
        ["n01443537", "n01440764"], ["tench", "goldfish"]), [1, 0])
    with pytest.raises(ValueError, match=r"the model lacks \['emu'\]; the "
                       r"dataset lacks \['fox'\]"):
        sources.class_mapping(["cat", "emu"], ["cat", "fox"])
    # A side without names: only the counts.
    assert sources.class_mapping(None, ["a", "b"], 2) is None
    # Digits are names like any other: "0", "1" of a folder are not the
    # model's "2", "3" (invented names reach here as None: keras_vgg.runs).
    np.testing.assert_array_equal(sources.class_mapping(
        ["3", "2"], ["0", "1", "2", "3"]), [3, 2])
    with pytest.raises(ValueError, match=r"the model lacks \['0', '1'\]"):
        sources.class_mapping(["0", "1"], ["2", "3"], 2)
    with pytest.raises(ValueError, match="has 3 classes, the model 2"):
        sources.class_mapping(["a", "b", "c"], None, 2)


def test_match_classes_remaps_the_labels(tmp_path):
    for name in ("b", "c", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(_encode(_pixels(), "PNG"))
    source = sources.load_source(f"folder:{tmp_path}", val_fraction=0,
                                 shuffle_files=False)
    matched = sources.match_classes(source, ["c", "a", "b"])
    assert matched.class_names == ("c", "a", "b")
    assert [int(ex["label"]) for ex in matched.dataset] == [1, 2, 0]


def _byte_files(root, layout):
    """Files whose unique bytes name them (sources do not decode)."""
    for rel in layout:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())


def _read(spec, split, **kw):
    source = sources.load_source(spec, split=split, **kw)
    return source.class_names, sorted(
        (ex["encoded"].decode(), int(ex["label"]))
        for ex in source.dataset.as_numpy_iterator())


def test_a_folder_laid_out_by_split_reads_each_split_whole(tmp_path):
    # The ImageNet / torchvision-tutorial layout: DIR/train/<class>/ and
    # DIR/val/<class>/; val may lack a class, and val_fraction is not used.
    _byte_files(tmp_path, ["train/bee/1.jpg", "train/bee/2.jpg",
                           "train/ant/3.jpg", "val/bee/4.jpg",
                           "test/ant/5.jpg"])
    spec = f"folder:{tmp_path}"
    names, train = _read(spec, "train", val_fraction=0.5)
    assert names == ("ant", "bee")
    assert train == [("train/ant/3.jpg", 0), ("train/bee/1.jpg", 1),
                     ("train/bee/2.jpg", 1)]
    # "val" wins over "test" as the validation folder; labels by the train
    # folder's class list.
    assert _read(spec, "validation") == (("ant", "bee"),
                                         [("val/bee/4.jpg", 1)])
    assert sources.split_folders(str(tmp_path)) == {
        "train": str(tmp_path / "train"), "validation": str(tmp_path / "val")}


def test_a_validation_folder_with_an_unknown_class_is_refused(tmp_path):
    _byte_files(tmp_path, ["train/bee/1.jpg", "validation/wasp/2.jpg"])
    with pytest.raises(ValueError, match=r"validation'? has classes that .* "
                                         r"lacks: wasp"):
        sources.load_source(f"folder:{tmp_path}", split="validation")


def test_classes_named_like_splits_stay_classes(tmp_path):
    # "train" and "val" holding images directly are two classes.
    _byte_files(tmp_path, ["train/1.jpg", "val/2.jpg", "val/3.jpg"])
    names, items = _read(f"folder:{tmp_path}", "train", val_fraction=0)
    assert names == ("train", "val")
    assert items == [("train/1.jpg", 0), ("val/2.jpg", 1), ("val/3.jpg", 1)]


def test_val_fraction_one_makes_the_whole_folder_validation(tmp_path):
    _byte_files(tmp_path, [f"c{k}/{i}.jpg" for k in range(2)
                           for i in range(3)])
    _, items = _read(f"folder:{tmp_path}", "validation", val_fraction=1.0)
    assert len(items) == 6
    with pytest.raises(ValueError, match="no 'train' images"):
        sources.load_source(f"folder:{tmp_path}", "train", val_fraction=1.0)


def test_stratified_sample_draws_every_class(tmp_path):
    # Three classes of 4 images, read class by class: the first 4 images
    # would be one class and a bit.
    _byte_files(tmp_path, [f"{c}/{i}.jpg" for c in ("ant", "bee", "cat")
                           for i in range(4)])
    source = sources.load_source(f"folder:{tmp_path}", val_fraction=0,
                                 shuffle_files=False)
    sample, counts = sources.stratified_sample(source, 6, seed=3)
    items = [(ex["encoded"].decode(), int(ex["label"]))
             for ex in sample.dataset.as_numpy_iterator()]
    assert counts == [2, 2, 2] and sample.num_examples == 6
    assert sorted(label for _, label in items) == [0, 0, 1, 1, 2, 2]
    assert all(path.startswith(("ant/", "bee/", "cat/")[label])
               for path, label in items)
    assert list(sample.paths) == [str(tmp_path / p) for p, _ in items]
    # 4 of 3 classes: one class, chosen by the seed, gets the extra one.
    _, counts = sources.stratified_sample(source, 4, seed=0)
    assert sorted(counts) == [1, 1, 2]
    again = [ex["encoded"] for ex in sources.stratified_sample(
        source, 4, seed=0)[0].dataset.as_numpy_iterator()]
    assert again == [ex["encoded"] for ex in sources.stratified_sample(
        source, 4, seed=0)[0].dataset.as_numpy_iterator()]
    # A class with too few examples leaves its share to the others.
    _, counts = sources.stratified_sample(source, 11)
    assert sorted(counts) == [3, 4, 4]
    assert sources.format_class_counts([2, 1], ["ant", "bee"]) == \
        "ant 2, bee 1"
    with pytest.raises(ValueError, match="count"):
        sources.stratified_sample(source, 0)


def test_a_folder_of_val_alone_is_a_validation_split(tmp_path):
    _byte_files(tmp_path, ["val/bee/1.jpg", "val/ant/2.jpg",
                           "val/ant/3.jpg"])
    spec = f"folder:{tmp_path}"
    assert _read(spec, "validation") == (("ant", "bee"), [
        ("val/ant/2.jpg", 0), ("val/ant/3.jpg", 0), ("val/bee/1.jpg", 1)])
    with pytest.raises(ValueError, match=r"only a validation split .*val'\)"
                                         r": no 'train' images"):
        sources.load_source(spec, "train")


def test_split_all_reads_every_image_of_a_folder(tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        for i in range(5):
            (tmp_path / name / f"{i}.png").write_bytes(b"x")
    spec = f"folder:{tmp_path}"
    held_out = sources.load_source(spec, "validation")
    every = sources.load_source(spec, "all")
    assert held_out.num_examples == 2 and every.num_examples == 10
    assert sources.split_counts(held_out) == {"split_images": 2,
                                              "dataset_images": 10}
    assert sources.split_counts(every) == {}
    assert [os.path.relpath(p, tmp_path) for p in every.paths] == [
        f"{c}/{i}.png" for c in "ab" for i in range(5)]
    with pytest.raises(ValueError, match="'all' is for folder"):
        sources.load_source("tfrecord:/nowhere/*", "all")
