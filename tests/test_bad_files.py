"""Which files are bad: sources key every example, `map_skipping_errors`
files the keys of the examples it drops, the `SkipCounter` names them and
a training run writes them to metrics.json."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import augment
from pipelines import sources
from pipelines import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jpeg(seed, size=(40, 48)):
    pixels = np.random.RandomState(seed).randint(0, 255, size + (3,))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _folder(root, per_class=8, bad=()):
    """Two classes of small JPEGs; `bad` names files (class/name) written
    as undecodable bytes."""
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(_jpeg(10 * c + i))
    for path in bad:
        (root / path).write_bytes(b"not a jpeg")
    return root


@pytest.mark.parametrize("deterministic", [True, False])
def test_counter_names_each_bad_file_once_and_counts_every_pass(
        deterministic):
    good = _jpeg(0, (8, 8))
    encoded = [b"bad", good, b"", b"x", good, good, b"bad", good, b"y"]
    keys = [f"file{i}" for i in range(len(encoded))]
    counter = augment.SkipCounter()
    ds = augment.map_skipping_errors(
        tf.data.Dataset.from_tensor_slices((encoded, keys)),
        lambda e, k: (k, tf.io.decode_jpeg(e)), counter,
        deterministic=deterministic, key_fn=lambda element: element[1])
    assert sorted(k.decode() for k, _ in ds.as_numpy_iterator()) == [
        "file1", "file4", "file5", "file7"]
    list(ds)
    assert counter.count == 10
    assert counter.bad_files_count == 5
    assert sorted(counter.bad_files) == ["file0", "file2", "file3", "file6",
                                         "file8"]
    counter.reset()
    assert (counter.count, counter.bad_files_count) == (0, 5)
    counter.reset(bad_files=True)
    assert (counter.bad_files_count, counter.bad_files) == (0, [])


def test_bad_files_are_capped_and_in_first_seen_order():
    good = _jpeg(0, (8, 8))
    n = augment.SkipCounter.BAD_FILES_SHOWN + 3
    encoded = [b"bad"] * n + [good]
    keys = [f"f{i:02d}" for i in range(n)] + ["good"]
    counter = augment.SkipCounter()
    list(augment.map_skipping_errors(
        tf.data.Dataset.from_tensor_slices((encoded, keys)),
        lambda e, k: tf.io.decode_jpeg(e), counter,
        key_fn=lambda element: element[1]))
    assert counter.bad_files_count == n
    assert counter.bad_files == keys[:augment.SkipCounter.BAD_FILES_SHOWN]


def test_every_source_keys_its_examples(tmp_path, data_dir):
    folder = _folder(tmp_path / "images", per_class=2)
    source = sources.load_source(f"folder:{folder}", val_fraction=0.0,
                                 shuffle_files=False)
    assert [ex["key"].decode() for ex in source.dataset.as_numpy_iterator()
            ] == list(source.paths)
    builtin = sources.load_source("builtin", "validation",
                                  data_dir=data_dir, shuffle_files=False)
    keys = [ex["key"].decode()
            for ex in builtin.dataset.take(400).as_numpy_iterator()]
    assert len(set(keys)) == len(keys)
    for key in keys:
        path, _, index = key.rpartition(":")
        assert os.path.basename(path).startswith("validation-")
        assert int(index) >= 0
    # The key names the record: the INDEX-th of FILE holds these bytes.
    path, _, index = keys[-1].rpartition(":")
    record = next(iter(tf.data.TFRecordDataset(path).skip(int(index))))
    last = next(iter(builtin.dataset.skip(len(keys) - 1)))
    parsed = tf.io.parse_single_example(record, {
        "image/encoded": tf.io.FixedLenFeature([], tf.string)})
    assert parsed["image/encoded"].numpy() == last["encoded"].numpy()


def test_make_dataset_names_the_bad_files_of_a_folder(tmp_path):
    bad = ["cat/3.jpg", "dog/5.jpg"]
    folder = _folder(tmp_path / "images", per_class=4, bad=bad)
    source = sources.load_source(f"folder:{folder}", val_fraction=0.0)
    counter = augment.SkipCounter()
    ds = augment.make_dataset(source, True, 2, scale=32, crop=32, seed=0,
                              skip_counter=counter)
    assert sum(len(y) for _, y in ds) == 6
    assert counter.count == 2
    assert sorted(counter.bad_files) == [str(folder / p) for p in bad]


def test_check_decodable_error_names_a_file(tmp_path):
    folder = tmp_path / "images"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        (folder / name / "0.jpg").write_bytes(b"not a jpeg")
        (folder / name / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"2 files skipped, e\.g\. .*images"
                       r"/(cat|dog)/[01]\.jpg\."):
        train._check_decodable(f"folder:{folder}", "train", None,
                               train.recipes.TrainConfig(
                                   crop=32, scale_min=32, scale_max=32))


@pytest.mark.slow
def test_cli_run_writes_bad_files_to_metrics(tmp_path):
    images = _folder(tmp_path / "train", per_class=8)
    # One bad file of each class in the folder given as --val_dataset,
    # which validation reads whole once per epoch: each is met 3 times.
    val = _folder(tmp_path / "val", per_class=20,
                  bad=["cat/0.jpg", "dog/7.jpg"])
    bad = [str(val / "cat" / "0.jpg"), str(val / "dog" / "7.jpg")]
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "--recipe=demo",
         f"--model_dir={run}", f"--dataset=folder:{images}",
         f"--val_dataset=folder:{val}", "--architecture=A",
         "--batch_norm=false", "--width_multiplier=0.0625", "--crop=32",
         "--scale_min=32", "--scale_max=32", "--test_scale=32",
         "--batch_size=4", "--val_batch_size=4", "--max_epochs=3",
         "--seed=1"],
        cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert metrics["images_skipped"] == 6
    assert metrics["bad_files_count"] == 2
    assert sorted(metrics["bad_files"]) == sorted(bad)
    assert '"bad_files_count": 2' in proc.stdout


@pytest.mark.parametrize("deterministic", [True, False])
def test_counting_per_batch_is_exact_and_the_remainder_is_not_skipped(
        deterministic):
    good = _jpeg(0, (8, 8))
    # 7 good of 12: batches of 3 make two full ones and a remainder of one.
    encoded = [good, b"", good, good, b"x", b"y", good, good, b"",
               good, good, b"z"]
    keys = [f"file{i}" for i in range(len(encoded))]
    counter = augment.SkipCounter()
    ds = augment.map_skipping_errors(
        tf.data.Dataset.from_tensor_slices((encoded, keys)),
        lambda e, k: (k, tf.io.decode_jpeg(e)), counter,
        deterministic=deterministic, key_fn=lambda element: element[1],
        batch_size=3, drop_remainder=True)
    assert ds.element_spec[0].shape == [3]
    batches = [k for k, _ in ds.as_numpy_iterator()]
    assert [len(b) for b in batches] == [3, 3]
    assert counter.count == 5
    assert sorted(counter.bad_files) == ["file1", "file11", "file4",
                                         "file5", "file8"]


def test_a_run_of_failures_inside_a_batch_stops_the_pipeline():
    good = _jpeg(0, (8, 8))
    encoded = [good] + [b"bad"] * 5 + [good] * 3
    ds = augment.map_skipping_errors(
        tf.data.Dataset.from_tensor_slices(encoded), tf.io.decode_jpeg,
        augment.SkipCounter(), max_consecutive_failures=5, batch_size=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="in a row"):
        list(ds)
    # Four failures in a row, then more after a good image: they pass.
    counter = augment.SkipCounter()
    ds = augment.map_skipping_errors(
        tf.data.Dataset.from_tensor_slices(
            [b"bad"] * 4 + [good] + [b"bad"] * 4 + [good]),
        tf.io.decode_jpeg, counter, max_consecutive_failures=5, batch_size=4)
    assert sum(len(b) for b in ds) == 2 and counter.count == 8

