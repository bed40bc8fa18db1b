import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipelines import box_loss
from pipelines import recipes
from pipelines import train


def test_pcr_loss_counts_only_the_true_class():
    # Two classes; the true class of sample 0 is 1, of sample 1 is 0.
    boxes = tf.constant([[[0.2, 0.1, 0.6, 0.5]], [[0.0, 0.0, 1.0, 1.0]]])
    target = np.array([[0.3, 0.4, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]])
    pred = np.zeros((2, 8), "float32")
    pred[0, 4:] = target[0]            # class 1 exact
    pred[0, :4] = [9, 9, 9, 9]         # class 0 wildly wrong: must not count
    pred[1, :4] = target[1] + [0.1, 0, 0, 0.2]
    pred[1, 4:] = [5, 5, 5, 5]
    loss, valid = box_loss.euclidean_loss(pred, tf.constant([1, 0]), boxes,
                                          "pcr")
    np.testing.assert_allclose(loss.numpy(), [0.0, 0.01 + 0.04], atol=1e-6)
    np.testing.assert_array_equal(valid.numpy(), [1, 1])
    scr, _ = box_loss.euclidean_loss(pred[:, :4], tf.constant([1, 0]), boxes,
                                     "scr")
    np.testing.assert_allclose(scr.numpy()[0], np.sum((9 - target[0]) ** 2),
                               rtol=1e-6)


def test_box_cropped_out_is_left_out():
    boxes = tf.constant([[[-1.0, -1.0, -1.0, -1.0]], [[0.0, 0.0, 0.5, 0.5]]])
    loss, valid = box_loss.euclidean_loss(tf.ones((2, 4)), tf.constant([0, 0]),
                                          boxes, "scr")
    np.testing.assert_array_equal(valid.numpy(), [0, 1])
    assert loss.numpy()[0] == 0


def test_correct_boxes_iou_threshold():
    boxes = tf.constant([[[0.0, 0.0, 0.5, 0.5]], [[0.0, 0.0, 0.5, 0.5]]])
    # Same box; and a box shifted by half its width (IoU 1/3).
    pred = tf.constant([[0.25, 0.25, 0.5, 0.5], [0.5, 0.25, 0.5, 0.5]])
    hits, valid = box_loss.correct_boxes(pred, tf.constant([0, 0]), boxes,
                                         "scr")
    np.testing.assert_array_equal(hits.numpy(), [1, 0])


def test_localization_fine_tune_lowers_box_loss(tmp_path, data_dir):  # noqa: F811
    cfg = dataclasses.replace(
        recipes.RECIPES["demo_loc"], width_multiplier=0.125, crop=32,
        scale_min=32, scale_max=32, test_scale=32, batch_size=16,
        max_epochs=3, regression="pcr", learning_rate=1e-3, seed=2)
    metrics = train.train(cfg, model_dir=str(tmp_path), data_dir=data_dir,
                          verbose=0)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0], losses
    assert 0 <= metrics["val_localization_error"] <= 1
    assert (tmp_path / "model.keras").exists()


def test_fine_tune_fc_leaves_the_conv_body(tmp_path, data_dir):  # noqa: F811
    import keras_vgg

    classifier = keras_vgg.VGG("A", width_multiplier=0.125,
                               input_shape=(32, 32, 3), classes=5,
                               dropout=0.0)
    run = str(tmp_path / "cls.keras")
    classifier.save(run)
    cfg = dataclasses.replace(
        recipes.RECIPES["demo_loc"], batch_norm=False, dropout=0.0,
        width_multiplier=0.125, crop=32, scale_min=32, scale_max=32,
        test_scale=32, batch_size=16, max_epochs=1, max_steps=3,
        regression="scr", fine_tune="fc", seed=2)
    train.train(cfg, model_dir=str(tmp_path / "loc"), data_dir=data_dir,
                init_from=run, verbose=0)
    import keras

    loc = keras.saving.load_model(str(tmp_path / "loc" / "model.keras"))
    for name in ("block1_conv1", "block5_conv2"):
        for got, want in zip(loc.get_layer(name).get_weights(),
                             classifier.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    changed = [not np.array_equal(g, w) for g, w in zip(
        loc.get_layer("fc1").get_weights(),
        classifier.get_layer("fc1").get_weights())]
    assert all(changed)
    with pytest.raises(ValueError, match="fine_tune"):
        dataclasses.replace(cfg, fine_tune="conv")
