import numpy as np
import pytest

from keras_vgg import boxes


def test_corner_center_round_trip():
    corners = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.5]])
    centers = boxes.corners_to_centers(corners)
    np.testing.assert_allclose(centers, [[0.4, 0.3, 0.4, 0.4],
                                         [0.25, 0.5, 0.5, 1.0]])
    np.testing.assert_allclose(boxes.centers_to_corners(centers), corners)


def test_pixels_round_trip():
    corners = np.array([0.25, 0.5, 0.75, 1.0])
    px = boxes.to_pixels(corners, 200, 400)
    np.testing.assert_allclose(px, [50, 200, 150, 400])
    np.testing.assert_allclose(boxes.to_normalized(px, 200, 400), corners)


def test_iou_hand_cases():
    assert boxes.iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert boxes.iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert boxes.iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert boxes.iou([0, 0, 2, 1], [0, 0, 1, 1]) == pytest.approx(0.5)
    np.testing.assert_allclose(
        boxes.iou(np.array([[0, 0, 2, 2]]), np.array([[0, 0, 2, 2],
                                                      [0, 1, 2, 3]])),
        [1.0, 1 / 3])


def test_greedy_merge_hand_made():
    b = np.array([[0, 0, 10, 10],     # score 3
                  [1, 1, 11, 11],     # overlaps the first (IoU 0.68), score 1
                  [50, 50, 60, 60],   # far away, score 2
                  [0, 0, 10, 10.5]])  # overlaps the first, score 0
    s = np.array([3.0, 1.0, 2.0, 0.0])
    merged, scores = boxes.greedy_merge(b, s, iou_threshold=0.5)
    np.testing.assert_allclose(merged[0], [0.25, 0.25, 10.25, 10.25])
    np.testing.assert_allclose(merged[1], [50, 50, 60, 60])
    np.testing.assert_allclose(scores, [4.0, 2.0])
    merged, _ = boxes.greedy_merge(b, s, max_boxes=1)
    assert len(merged) == 1
    with pytest.raises(ValueError, match="differ in length"):
        boxes.greedy_merge(b, s[:2])


def test_select_class_boxes():
    out = np.arange(2 * 3 * 4).reshape(2, 12)
    np.testing.assert_array_equal(
        boxes.select_class_boxes(out, [2, 0], "pcr"),
        [[8, 9, 10, 11], [12, 13, 14, 15]])
    np.testing.assert_array_equal(
        boxes.select_class_boxes(out[:, :4], [5, 5], "scr"), out[:, :4])
