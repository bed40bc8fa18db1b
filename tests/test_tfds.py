"""A TensorFlow Datasets dataset on the path a user takes: `pipelines.train`
with `dataset=<tfds name>` and `data_dir=~/tensorflow_datasets` runs tfds'
own `download_and_prepare` on a fresh data_dir, then trains.  The dataset
is a tiny builder defined here, whose "download" is images this module
writes, so nothing reaches the network."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from pipelines import evaluate
from pipelines import recipes
from pipelines import train

tfds = pytest.importorskip("tensorflow_datasets")

# Not in sorted order: the run must keep tfds' label order.
CLASS_NAMES = ["square", "circle"]


class KerasVggTinyShapes(tfds.core.GeneratorBasedBuilder):
    """Two classes of 40x40 PNGs read from `image_dir` (set by the test):
    image_dir/{train,validation}/<class>/*.png."""

    VERSION = tfds.core.Version("1.0.0")
    image_dir = None

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the files are local
        root = pathlib.Path(self.image_dir)
        return {"train": self._generate_examples(root / "train"),
                "validation": self._generate_examples(root / "validation")}

    def _generate_examples(self, directory):
        for path in sorted(directory.glob("*/*.png")):
            key = f"{path.parent.name}/{path.name}"
            yield key, {"image": str(path), "label": path.parent.name}


NAME = KerasVggTinyShapes.name  # "keras_vgg_tiny_shapes"


def _write_images(root):
    rng = np.random.RandomState(0)
    for split, count in (("train", 4), ("validation", 2)):
        for label, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                # Class 0 dark, class 1 bright: learnable, not that it matters.
                pixels = rng.randint(0, 128, (40, 40, 3)) + 127 * label
                tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(
                    pixels.astype(np.uint8)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained 2 steps on the tiny tfds dataset, prepared by tfds in
    `~/tensorflow_datasets` with HOME pointed at a temporary folder."""
    root = tmp_path_factory.mktemp("tfds")
    _write_images(root / "images")
    KerasVggTinyShapes.image_dir = str(root / "images")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.chdir(root)        # a literal "~" folder would appear here
        cfg = dataclasses.replace(
            recipes.RECIPES["demo"], crop=32, scale_min=32, scale_max=32,
            test_scale=32, width_multiplier=0.125, max_steps=2,
            max_epochs=1, batch_size=4, val_batch_size=4,
            shuffle_buffer=8, checkpoint_every=2)
        metrics = train.train(cfg, dataset=NAME, model_dir=str(root / "run"),
                              data_dir="~/tensorflow_datasets", verbose=0)
        results = evaluate.evaluate(str(root / "run"), NAME, "single",
                                    data_dir="~/tensorflow_datasets")
    return root, home, metrics, results


@pytest.mark.slow
def test_train_prepares_a_tfds_dataset_in_home_data_dir(trained):
    root, home, metrics, _ = trained
    assert metrics["steps"] == 2
    # tfds prepared the dataset where "~" points, not in a folder named "~".
    prepared = home / "tensorflow_datasets" / NAME / "1.0.0"
    info = json.loads((prepared / "dataset_info.json").read_text())
    assert {s["name"]: int(s["shardLengths"][0]) for s in info["splits"]} == {
        "train": 8, "validation": 4}
    assert not (root / "~").exists()
    # The run keeps tfds' class names in tfds' label order.
    names = (root / "run" / "class_names.txt").read_text().split()
    assert names == CLASS_NAMES


@pytest.mark.slow
def test_evaluate_reads_the_prepared_tfds_dataset(trained):
    _, _, _, [result] = trained
    assert result["images"] == 4 and result["images_skipped"] == 0
    assert result["dataset"] == NAME
