import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipelines import recipes
from pipelines import tasks


def test_classification_counts_top1_and_top5_hits():
    task = tasks.make_task(recipes.TrainConfig(), num_classes=6)
    logits = tf.constant([[0., 9, 1, 2, 3, 4],     # label 1: top-1
                          [9., 0, 8, 7, 6, 5],     # label 5: top-5 only
                          [0., 1, 2, 3, 4, 9]])    # label 0: neither
    sums = {k: float(v) for k, v in task.metric_sums(
        logits, (None, tf.constant([1, 5, 0]))).items()}
    assert sums == {"top1_correct": 1, "top5_correct": 2, "examples": 3}
    summary = task.validation_summary(sums)
    assert summary == {"val_top1_accuracy": 1 / 3, "val_top5_accuracy": 2 / 3,
                       "val_images": 3}
    with pytest.raises(ValueError, match="no image"):
        task.validation_summary({"top1_correct": 0, "top5_correct": 0,
                                 "examples": 0})


def test_localization_counts_boxes_over_images_with_a_box():
    cfg = recipes.TrainConfig(task="localisation", regression="scr")
    task = tasks.make_task(cfg, num_classes=5)
    assert isinstance(task, tasks.LocalizationTask) and task.with_boxes
    # Exact box; a box shifted by half its width (IoU 1/3); a cropped-out box.
    boxes = tf.constant([[[0.0, 0.0, 0.5, 0.5]], [[0.0, 0.0, 0.5, 0.5]],
                         [[-1.0, -1.0, -1.0, -1.0]]])
    predicted = tf.constant([[0.25, 0.25, 0.5, 0.5], [0.5, 0.25, 0.5, 0.5],
                             [0.5, 0.5, 1.0, 1.0]])
    batch = (None, tf.constant([0, 0, 0]), boxes)
    sums = {k: float(v) for k, v in task.metric_sums(predicted,
                                                     batch).items()}
    assert sums == {"boxes_correct": 1, "examples_with_box": 2}
    summary = task.validation_summary(sums)
    assert summary["val_localization_accuracy"] == 0.5
    assert summary["val_localization_error"] == 0.5
    assert summary["val_top1_accuracy"] == 0.5
    np.testing.assert_allclose(task.per_example_loss(predicted, batch), [
        0, 0.25 ** 2, 0], atol=1e-6)


def test_fine_tune_fc_freezes_the_body_of_either_task():
    cfg = recipes.TrainConfig(architecture="A", width_multiplier=0.125,
                              crop=32, scale_min=32, scale_max=32,
                              fine_tune="fc")
    for task in ("classification", "localization"):
        model = tasks.build_model(dataclasses.replace(cfg, task=task), 5)
        trainable = {layer.name for layer in model.layers
                     if layer.trainable and layer.weights}
        assert "block1_conv1" not in trainable and "fc1" in trainable
