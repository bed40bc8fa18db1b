"""pipelines.evaluate and keras_vgg.cost: error counting, the wiring of
protocols, scales and ensembles, the CLI's JSON, errors, MAC counts."""

import json
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from keras_vgg import cost
from pipelines import evaluate
from pipelines import protocols
from pipelines import sources
from tests.tiny_run import CLASS_NAMES
from tests.tiny_run import CROP
from tests.tiny_run import pixels
from tests.tiny_run import write_run

FIELDS = {"protocol", "scales", "top1_error", "top5_error",
          "gmacs_per_image", "images_per_second", "images",
          "images_skipped"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run0, model0 = write_run(str(root / "run0"), seed=0)
    # The second run was trained with jittered S in [32, 64].
    run1, model1 = write_run(str(root / "run1"), seed=1, scale_min=32,
                             scale_max=64)
    return (run0, model0), (run1, model1)


def png(image):
    return tf.io.encode_png(image.astype(np.uint8)).numpy()


@pytest.fixture(scope="module")
def examples():
    """Four images of different sizes, and one undecodable file."""
    images = [pixels(36, 44, seed=10), pixels(50, 40, seed=11),
              pixels(33, 33, seed=12), pixels(40, 61, seed=13)]
    images = [np.floor(i) for i in images]     # exactly what PNG stores
    encoded = [png(i) for i in images]
    encoded.insert(2, b"this is not an image")
    labels = [0, 1, 9, 2, 3]                   # 9: the undecodable one
    dataset = tf.data.Dataset.from_tensor_slices({
        "encoded": encoded, "label": np.asarray(labels, np.int64),
        "bbox": np.zeros((5, 0, 4), np.float32)})
    return dataset, images, [0, 1, 2, 3]


def test_topk_counts_a_hand_made_case():
    p = np.array([
        [0.30, 0.25, 0.15, 0.10, 0.08, 0.07, 0.05],  # label 0: top-1
        [0.30, 0.25, 0.15, 0.10, 0.08, 0.07, 0.05],  # label 4: 5th
        [0.30, 0.25, 0.15, 0.10, 0.08, 0.07, 0.05],  # label 5: 6th
        [0.40, 0.40, 0.10, 0.05, 0.05, 0.0, 0.0],    # label 1: tied first
    ])
    labels = [0, 4, 5, 1]
    assert evaluate.topk_correct(p, labels, 1).tolist() == [True, False, False,
                                                     True]
    assert evaluate.topk_correct(p, labels, 5).tolist() == [True, True, False,
                                                     True]
    # Fewer than 5 classes: top-5 is every class.
    few = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    assert evaluate.topk_correct(few, [2, 0], 5).tolist() == [True, True]
    assert evaluate.topk_correct(few, [2, 0], 1).tolist() == [False, False]


def test_evaluate_matches_the_protocols_and_counts_skips(runs, examples):
    (run0, model0), (run1, model1) = runs
    dataset, images, labels = examples
    results = evaluate.evaluate([run0, run1], dataset,
                         ["single", "dense", "multicrop", "combined"])
    by_name = {r["protocol"]: r for r in results}
    assert [r["protocol"] for r in results] == [
        "single", "dense", "multicrop", "combined"]
    for r in results:
        assert FIELDS <= set(r)
        assert r["images"] == 4 and r["images_skipped"] == 1
        assert r["images_per_second"] > 0
    # Default scales come from each run's training_config.json.
    assert by_name["single"]["scales"] == {run0 + "/model.keras": [40],
                                           run1 + "/model.keras": [48]}
    assert by_name["dense"]["scales"] == {run0 + "/model.keras": [35, 40, 45],
                                          run1 + "/model.keras": [32, 48, 64]}
    # The same numbers computed with the protocols directly.
    fcn0 = keras_vgg.fully_convolutional(model0, average=True)
    fcn1 = keras_vgg.fully_convolutional(model1, average=True)
    scales = {0: [35, 40, 45], 1: [32, 48, 64]}
    pairs = [(model0, fcn0, 0), (model1, fcn1, 1)]
    errors = {name: [0, 0] for name in by_name}
    for image, label in zip(images, labels):
        single = protocols.average([protocols.single_crop(m, image, s)
                            for m, s in ((model0, 40), (model1, 48))])
        # The lambdas run at once, inside this iteration.
        dense = protocols.ensemble(lambda t: protocols.multi_scale(
            lambda q: protocols.dense(t[1], image, q),  # noqa: B023
            scales[t[2]]), pairs)
        multi = protocols.ensemble(lambda t: protocols.multi_scale(
            lambda q: protocols.multi_crop(t[0], image, q),  # noqa: B023
            scales[t[2]]), pairs)
        probs = {"single": single, "dense": dense, "multicrop": multi,
                 "combined": (dense + multi) / 2}
        for name, p in probs.items():
            errors[name][0] += int(np.argmax(p) != label)
    for name, r in by_name.items():
        assert r["top1_error"] == pytest.approx(errors[name][0] / 4)
        assert r["top5_error"] == 0.0           # 4 classes: top-5 = all
    # MACs: 50 crops per scale x 3 scales x 2 models for multicrop.
    crop_macs = cost.count_macs(model0, (CROP, CROP, 3))
    assert by_name["single"]["gmacs_per_image"] * 1e9 == pytest.approx(
        2 * crop_macs)
    assert by_name["multicrop"]["gmacs_per_image"] * 1e9 == pytest.approx(
        300 * crop_macs)
    dense_macs = np.mean([sum(
        2 * cost.count_macs(f, protocols.rescaled_size(*i.shape[:2], q) + (3,))
        for f, qs in ((fcn0, scales[0]), (fcn1, scales[1])) for q in qs)
        for i in images])
    assert by_name["dense"]["gmacs_per_image"] * 1e9 == pytest.approx(
        dense_macs)
    assert by_name["combined"]["gmacs_per_image"] == pytest.approx(
        by_name["dense"]["gmacs_per_image"]
        + by_name["multicrop"]["gmacs_per_image"])


def test_given_scales_and_noflip(runs, examples):
    (run0, model0), _ = runs
    dataset, images, labels = examples
    [r] = evaluate.evaluate(run0, dataset, "multicrop", scales=[32, 48],
                     flip=False, max_images=2)
    assert r["scales"] == [32, 48] and r["flip"] is False
    assert r["images"] == 2 and r["images_skipped"] == 0
    assert r["gmacs_per_image"] * 1e9 == pytest.approx(
        50 * cost.count_macs(model0, (CROP, CROP, 3)))
    expected = [int(np.argmax(protocols.multi_scale(
        lambda q: protocols.multi_crop(model0, i, q, flip=False),  # noqa: B023
        [32, 48])) != y) for i, y in zip(images[:2], labels[:2])]
    assert r["top1_error"] == pytest.approx(np.mean(expected))


def test_cli_writes_json(runs, tmp_path):
    (run0, _), (run1, _) = runs
    folder = tmp_path / "images"
    for label, name in enumerate(CLASS_NAMES):
        os.makedirs(folder / name)
        for i in range(2):
            keras.utils.save_img(str(folder / name / f"{i}.png"),
                                 pixels(34 + 5 * i, 40, seed=label + 4 * i))
    output = tmp_path / "out" / "results.json"
    evaluate.cli([f"--model={run0}", f"--model={run1}/model.keras",
           f"--dataset=folder:{folder}", "--protocol=dense,single",
           "--scales=32,40", "--noflip", f"--output={output}"])
    results = json.loads(output.read_text())
    assert [r["protocol"] for r in results] == ["dense", "single"]
    # Each protocol records the settings it uses only.
    assert results[0]["flip"] is False and results[0]["dense_stride"] == 32
    assert "flip" not in results[1] and "dense_stride" not in results[1]
    for r in results:
        assert FIELDS <= set(r)
        assert r["scales"] == [32, 40]
        assert r["images"] == 4 and r["images_skipped"] == 0
        assert 0 <= r["top1_error"] <= 1 and r["top5_error"] == 0
    table = evaluate.format_results(results)
    assert "top-1 err %" in table and "GMACs/image" in table


def test_bad_inputs_raise_clear_errors(runs, examples, tmp_path):
    (run0, model0), _ = runs
    dataset, _, _ = examples
    missing = str(tmp_path / "nothing.keras")
    with pytest.raises(ValueError, match="nothing.keras"):
        evaluate.evaluate(missing, dataset, "single")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read .*broken"):
        evaluate.evaluate(str(broken), dataset, "single")
    with pytest.raises(ValueError, match="Unknown protocol 'densest'"):
        evaluate.evaluate(run0, dataset, "single,densest")
    with pytest.raises(ValueError, match="Q=24 is smaller than the crop"):
        evaluate.evaluate(run0, dataset, "single", scales=[24, 32])
    # A softmax classifier whose head has no Flatten: no dense evaluation.
    body = keras_vgg.VGG("A", include_top=False, width_multiplier=0.125,
                         input_shape=(CROP, CROP, 3), pooling="avg")
    gap = keras.Model(body.inputs, keras.layers.Dense(
        4, activation="softmax")(body.outputs[0]), name="gap_head")
    path = str(tmp_path / "gap.keras")
    gap.save(path)
    with pytest.raises(ValueError, match="gap.keras.*cannot be evaluated "
                                         "densely"):
        evaluate.evaluate(path, dataset, "combined")
    logits = keras_vgg.VGG("A", width_multiplier=0.125, classes=4,
                           input_shape=(CROP, CROP, 3),
                           classifier_activation=None)
    with pytest.raises(ValueError, match="softmax"):
        evaluate.evaluate(logits, dataset, "single")
    other = keras_vgg.VGG("A", width_multiplier=0.125, classes=3,
                          input_shape=(CROP, CROP, 3))
    with pytest.raises(ValueError, match="same classes"):
        evaluate.evaluate([model0, other], dataset, "single")
    with pytest.raises(ValueError, match="--model"):
        evaluate.cli(["--dataset=builtin"])


# The model's classes in an order where no class keeps its index when a
# folder of them is read in sorted order (circle, square, star, triangle).
DERANGED = ["square", "triangle", "circle", "star"]


def _write_run_named(directory, names, seed=0, invented=None):
    """A tiny run whose class_names.txt lists `names`; `invented`: its
    training config's record of whether they are invented (None: no
    record, as older runs)."""
    directory, model = write_run(directory, seed=seed)
    config = json.loads(open(os.path.join(directory,
                                          "training_config.json")).read())
    config["class_names"] = list(names)
    if invented is not None:
        config["class_names_invented"] = invented
    with open(os.path.join(directory, "training_config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(directory, "class_names.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    return directory, model


def _folder_of_predictions(root, model, folder_names, count=8):
    """`count` PNGs, each in the folder of the class `model` predicts for it
    (single crop at Q=40): by the model's own classes every label is
    right."""
    for i in range(count):
        image = np.floor(pixels(36 + 3 * i, 44, seed=20 + i))
        label = int(np.argmax(protocols.single_crop(model, image, 40)))
        path = root / folder_names[label] / f"{i}.png"
        os.makedirs(path.parent, exist_ok=True)
        keras.utils.save_img(str(path), image.astype(np.uint8), scale=False)
    for name in folder_names:            # every class has a folder
        os.makedirs(root / name, exist_ok=True)
        if not os.listdir(root / name):
            keras.utils.save_img(str(root / name / "pad.png"),
                                 np.floor(pixels(40, 40, seed=99)),
                                 scale=False)


def test_folder_classes_are_matched_to_the_model_by_name(tmp_path):
    run, model = _write_run_named(str(tmp_path / "run"), DERANGED)
    folder = tmp_path / "images"
    _folder_of_predictions(folder, model, DERANGED)
    # The images of the folder's train split, as the evaluation reads them.
    files = [pathlib.Path(p) for p in sources.load_source(
        f"folder:{folder}", "train", shuffle_files=False).paths]
    predicted = [int(np.argmax(protocols.single_crop(
        model, keras.utils.img_to_array(keras.utils.load_img(str(f))), 40)))
        for f in files]
    by_name = np.mean([p != DERANGED.index(f.parent.name)
                       for p, f in zip(predicted, files)])
    by_position = np.mean([p != sorted(DERANGED).index(f.parent.name)
                           for p, f in zip(predicted, files)])
    assert by_name < 0.5 < by_position      # the two readings differ
    [r] = evaluate.evaluate(run, f"folder:{folder}", "single",
                            split="train")
    assert r["images"] == len(files) and r["images_skipped"] == 0
    assert r["top1_error"] == pytest.approx(by_name)


def test_folder_with_other_class_names_is_refused(runs, tmp_path):
    (run0, _), _ = runs
    for name in ["circle", "square", "hexagon", "star"]:
        os.makedirs(tmp_path / name)
        keras.utils.save_img(str(tmp_path / name / "a.png"),
                             pixels(36, 36), scale=False)
    with pytest.raises(ValueError, match=r"different classes: the model\(s\) "
                       r"lacks \['hexagon'\]; .* lacks \['triangle'\]"):
        evaluate.evaluate(run0, f"folder:{tmp_path}", "single",
                          split="train")


def test_only_undecodable_images_is_an_error(runs, tmp_path):
    (run0, _), _ = runs
    for name in CLASS_NAMES:
        os.makedirs(tmp_path / name)
        (tmp_path / name / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"gave no decodable image: 4 "
                       r"skipped as undecodable \(e\.g\. '.*circle/x\.png'"):
        evaluate.evaluate(run0, f"folder:{tmp_path}", "single",
                          split="train")


def test_count_macs_of_vgg16_is_the_config_formula():
    model = keras_vgg.VGG16()
    assert cost.count_macs(model, (224, 224, 3)) == keras_vgg.count_macs("D")
    assert round(keras_vgg.count_macs("D") / 1e9, 2) == 15.47
    with pytest.raises(ValueError, match="takes inputs of shape"):
        cost.count_macs(model, (256, 256, 3))


def test_count_macs_of_narrow_and_fully_convolutional_models():
    model = keras_vgg.VGG("A", width_multiplier=0.125, classes=4,
                          input_shape=(CROP, CROP, 3))
    widths = [8, 16, 32, 32, 64, 64, 64, 64]      # net A at 1/8 width
    sides = [32, 16, 8, 8, 4, 4, 2, 2]            # before each block's pool

    def convs(scale_h, scale_w):
        total, cin = 0, 3
        for width, side in zip(widths, sides):
            total += side * scale_h * side * scale_w * 9 * cin * width
            cin = width
        return total

    fc = 64 * 512 + 512 * 512 + 512 * 4           # 1x1x64 -> 512 -> 512 -> 4
    assert cost.count_macs(model, (CROP, CROP, 3)) == convs(1, 1) + fc
    assert cost.count_macs(model, (1, CROP, CROP, 3)) == convs(1, 1) + fc
    # The score map of a 64x96 input has 2x3 positions.
    fcn = keras_vgg.fully_convolutional(model)
    assert cost.count_macs(fcn, (64, 96, 3)) == convs(2, 3) + 6 * fc
    assert cost.count_macs(keras_vgg.fully_convolutional(
        model, average=True), (64, 96, 3)) == convs(2, 3) + 6 * fc


def test_digit_class_names_are_matched_by_name(tmp_path):
    # A run trained on a folder of classes "5".."8" meets a folder of
    # classes "0".."3": other classes, not the same ones by position.
    run, model = _write_run_named(str(tmp_path / "run"),
                                  ["5", "6", "7", "8"], invented=False)
    _folder_of_predictions(tmp_path / "low", model, ["0", "1", "2", "3"])
    with pytest.raises(ValueError, match=r"the model\(s\) lacks \['0', '1', "
                       r"'2', '3'\]"):
        evaluate.cli([f"--model={run}", f"--dataset=folder:{tmp_path}/low",
                      "--split=train", "--protocol=single"])


def _errors(model, folder, model_names):
    """The single-crop (Q=40) top-1 error of `model` on the train split of
    `folder`, its labels read by name and by position."""
    files = [pathlib.Path(p) for p in sources.load_source(
        f"folder:{folder}", "train", shuffle_files=False).paths]
    predicted = [int(np.argmax(protocols.single_crop(
        model, keras.utils.img_to_array(keras.utils.load_img(str(f))), 40)))
        for f in files]
    folders = sorted({f.parent.name for f in files})
    by_name = np.mean([p != model_names.index(f.parent.name)
                       for p, f in zip(predicted, files)])
    by_position = np.mean([p != folders.index(f.parent.name)
                           for p, f in zip(predicted, files)])
    return by_name, by_position


def test_a_subset_of_digit_classes_is_matched_by_name(tmp_path):
    digits = ["0", "1", "2", "3"]
    run, model = _write_run_named(str(tmp_path / "run"), digits,
                                  invented=False)
    everything = tmp_path / "all"
    _folder_of_predictions(everything, model, digits, count=12)
    # Only the folders of classes "2" and "3" (labels 0 and 1 of the
    # dataset): the model's classes 2 and 3, not 0 and 1.
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("2", "3"):
        (everything / name).rename(subset / name)
    by_name, by_position = _errors(model, subset, digits)
    assert by_name < 0.5 < by_position
    output = tmp_path / "out.json"
    evaluate.cli([f"--model={run}", f"--dataset=folder:{subset}",
                  "--split=train", "--protocol=single", "--scales=40",
                  f"--output={output}"])
    [r] = json.loads(output.read_text())
    assert r["top1_error"] == pytest.approx(by_name)


def test_invented_names_are_matched_by_count(tmp_path):
    # A run of a dataset without names: labels as they are.
    run, model = _write_run_named(str(tmp_path / "run"),
                                  ["0", "1", "2", "3"], invented=True)
    _folder_of_predictions(tmp_path / "images", model, DERANGED)
    by_name, by_position = _errors(model, tmp_path / "images", DERANGED)
    assert by_name < 0.5 < by_position
    [r] = evaluate.evaluate(run, f"folder:{tmp_path}/images", "single",
                            split="train", scales=[40])
    assert r["top1_error"] == pytest.approx(by_position)


def _class_folder(folder, per_class=3):
    """A flat folder of `per_class` images of each class in CLASS_NAMES."""
    for label, name in enumerate(CLASS_NAMES):
        os.makedirs(folder / name)
        for i in range(per_class):
            keras.utils.save_img(str(folder / name / f"{i}.png"),
                                 pixels(36, 40, seed=label + 4 * i))
    return folder


def test_cli_max_images_samples_every_class(runs, tmp_path):
    (run0, _), _ = runs
    folder = _class_folder(tmp_path / "images")
    output = tmp_path / "results.json"
    evaluate.cli([f"--model={run0}", f"--dataset=folder:{folder}",
                  "--split=train", "--protocol=single", "--max_images=4",
                  f"--output={output}"])
    [r] = json.loads(output.read_text())
    assert r["images"] == 4
    assert r["class_counts"] == {name: 1 for name in sorted(CLASS_NAMES)}
    assert "Sampled from every class: circle 1, square 1" in \
        evaluate.format_results([r])


def test_cli_says_a_flat_folder_is_scored_on_its_held_out_part(
        runs, tmp_path, capsys):
    (run0, _), _ = runs
    folder = _class_folder(tmp_path / "images")
    output = tmp_path / "held_out.json"
    evaluate.cli([f"--model={run0}", f"--dataset=folder:{folder}",
                  "--protocol=single", f"--output={output}"])
    # One image of each class is held out as the validation split.
    assert "4 of 12 images (validation split)" in capsys.readouterr().out
    [r] = json.loads(output.read_text())
    assert r["images"] == 4 and r["split"] == "validation"
    assert r["split_images"] == 4 and r["dataset_images"] == 12
    output = tmp_path / "all.json"
    evaluate.cli([f"--model={run0}", f"--dataset=folder:{folder}",
                  "--protocol=single", "--split=all", f"--output={output}"])
    assert " of 12 images" not in capsys.readouterr().out
    [r] = json.loads(output.read_text())
    assert r["images"] == 12 and r["split"] == "all"
    assert "dataset_images" not in r
