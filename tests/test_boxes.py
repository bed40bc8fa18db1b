import numpy as np
import pytest
import tensorflow as tf

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


# -- the same functions on tensors: numpy in, numpy out; tensors in, tensors
# out, also inside a tf.function (the training step, the exported graph).

# Boxes with four different coordinates each: a swapped x/y or min/max
# would give other numbers.
CORNERS = np.array([[0.1, 0.2, 0.5, 0.9],      # ymin, xmin, ymax, xmax
                    [0.3, 0.0, 0.4, 0.6]])
CENTERS = np.array([[0.55, 0.3, 0.7, 0.4],     # cx, cy, w, h
                    [0.3, 0.35, 0.6, 0.1]])


def _in_graph(fn, *args):
    """`fn` traced by tf.function on int32 (integers) or float32 tensors."""
    tensors = [tf.constant(a, tf.int32 if np.asarray(a).dtype.kind == "i"
                           else tf.float32) for a in args]
    out = tf.function(fn)(*tensors)
    assert isinstance(out, tf.Tensor) and out.dtype == tf.float32
    return out.numpy()


def test_conversions_on_numpy_and_in_a_tf_function():
    for fn, given, expected in ((boxes.corners_to_centers, CORNERS, CENTERS),
                                (boxes.centers_to_corners, CENTERS, CORNERS)):
        got = fn(given)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, atol=1e-12)
        np.testing.assert_allclose(_in_graph(fn, given), expected, atol=1e-6)
    # Height 200, width 400: y coordinates x200, x coordinates x400.
    pixels = [[20, 80, 100, 360], [60, 0, 80, 240]]
    np.testing.assert_allclose(boxes.to_pixels(CORNERS, 200, 400), pixels)
    np.testing.assert_allclose(
        _in_graph(boxes.to_pixels, CORNERS, 200, 400), pixels, rtol=1e-6)
    np.testing.assert_allclose(
        _in_graph(boxes.to_normalized, pixels, 200, 400), CORNERS,
        atol=1e-6)


def test_iou_one_against_many_and_pairwise_agree_in_graph():
    a = np.array([0.0, 0.0, 2.0, 4.0])            # 2 tall, 4 wide
    many = np.array([[0.0, 0.0, 4.0, 2.0],        # 4 tall, 2 wide: 4/12
                     [1.0, 2.0, 3.0, 6.0],        # inter 1x2: 2/14
                     [0.0, 0.0, 2.0, 4.0],        # the same box: 1
                     [3.0, 0.0, 4.0, 4.0],        # disjoint: 0
                     [1.0, 1.0, 0.0, 2.0]])       # ymax < ymin: area 0
    expected = [1 / 3, 1 / 7, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(boxes.iou(a, many), expected)
    np.testing.assert_allclose(_in_graph(boxes.iou, a, many), expected,
                               rtol=1e-6)
    # Pairwise: row i of the first with row i of the second.
    pairwise = _in_graph(boxes.iou, np.tile(a, (5, 1)), many)
    np.testing.assert_allclose(pairwise, expected, rtol=1e-6)
    np.testing.assert_allclose(boxes.iou(many, np.tile(a, (5, 1))), expected)
    # Two empty boxes: 0, not nan.
    assert boxes.iou([0, 0, 0, 0], [1, 1, 1, 1]) == 0.0
    assert _in_graph(boxes.iou, [0, 0, 0, 0], [1, 1, 1, 1]) == 0.0


def test_window_corners_hand_made():
    # Two score-map rows, three columns, windows of 64 pixels every 32, in
    # an image 96 tall and 128 wide; the box at every position is the
    # centered half of its window: 32x32 pixels.
    box_map = np.tile([0.5, 0.5, 0.5, 0.5], (1, 2, 3, 1))
    box_map[0, 1, 2] = [0.25, 0.75, 0.5, 0.25]   # left of center, low
    got = boxes.window_corners(box_map, (96, 128), 64, 32)
    # Position (0, 0): pixels 16..48 both ways.
    np.testing.assert_allclose(got[0, 0, 0], [16 / 96, 16 / 128,
                                              48 / 96, 48 / 128])
    # Position (1, 2): window from (32, 64); cx 16, cy 48, w 32, h 16.
    np.testing.assert_allclose(got[0, 1, 2], [(32 + 40) / 96, (64 + 0) / 128,
                                              (32 + 56) / 96,
                                              (64 + 32) / 128])
    graph = tf.function(lambda m, h, w: boxes.window_corners(
        m, (h, w), 64, 32))(tf.constant(box_map, tf.float32),
                            tf.constant(96), tf.constant(128))
    np.testing.assert_allclose(graph.numpy(), got, atol=1e-6)


def test_select_class_boxes_in_graph():
    out = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 12)
    got = _in_graph(lambda o, ls: boxes.select_class_boxes(o, ls, "pcr"),
                    out, np.array([2, 0]))
    np.testing.assert_array_equal(got, [[8, 9, 10, 11], [12, 13, 14, 15]])


def test_mirror_corners_numpy_and_graph():
    corners = np.array([[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 0.25]])
    expected = [[0.1, 0.1, 0.6, 0.8], [0.0, 0.75, 1.0, 1.0]]
    np.testing.assert_allclose(boxes.mirror_corners(corners), expected)
    got = tf.function(boxes.mirror_corners)(tf.constant(corners, tf.float32))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_centered_grid_on_ints_and_tensors():
    assert boxes.centered_grid(64, 85, 64, 32) == (0, 10, 64, 64)
    got = tf.function(lambda h, w: boxes.centered_grid(h, w, 64, 32))(
        tf.constant(64), tf.constant(100))
    assert [int(v) for v in got] == [0, 2, 64, 96]
