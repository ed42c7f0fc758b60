"""hkmr_ros.crops: the runtime's copy of the training crop rules (same maps, no torch)."""
import numpy as np
import pytest

from hkmr_ros.crops import (CROP_SIZE, SCALE_UNIT, box_to_center_scale, crop_image, crop_transform,
                            denormalise_keypoints, normalise_keypoints, transform_points)


def test_box_centre_goes_to_crop_centre_and_box_side_fills_the_crop():
    center, scale = box_to_center_scale(100, 50, 300, 450, rescale=1.0)
    np.testing.assert_allclose(center, [200, 250])
    assert scale == pytest.approx(400 / SCALE_UNIT)
    m = crop_transform(center, scale)
    np.testing.assert_allclose(m[:, :2] @ center + m[:, 2], [CROP_SIZE / 2, CROP_SIZE / 2])
    corners = transform_points(np.array([[0.0, 50.0], [400.0, 450.0]]), center, scale)
    np.testing.assert_allclose(corners, [[0, 0], [CROP_SIZE, CROP_SIZE]], atol=1e-9)


def test_box_is_padded_to_a_square_on_its_longer_side():
    _, scale = box_to_center_scale(0, 0, 100, 50)
    assert scale == pytest.approx(100 * 1.2 / SCALE_UNIT)


def test_rotation_turns_content_counter_clockwise():
    # a point right of the centre moves up (smaller y) under a 90-degree counter-clockwise turn
    p = transform_points(np.array([[110.0, 100.0]]), np.array([100.0, 100.0]), 1.0, res=200, rot=90)
    np.testing.assert_allclose(p, [[100, 90]], atol=1e-9)


def test_crop_image_cuts_the_box_and_pads_outside_with_border_value():
    img = np.zeros((400, 400, 3), np.uint8)
    img[100:300, 100:300] = 200
    out = crop_image(img, np.array([200.0, 200.0]), 200 / SCALE_UNIT)
    assert out.shape == (CROP_SIZE, CROP_SIZE, 3) and out.dtype == np.uint8
    assert out[5:-5, 5:-5].min() == 200
    off = crop_image(img, np.array([-1000.0, -1000.0]), 1.0, border_value=7)
    assert (off == 7).all()


def test_bad_scale_is_rejected():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            crop_transform(np.zeros(2), bad)


def test_keypoint_normalisation_round_trips():
    px = np.array([[0.0, 224.0], [112.0, 56.0]])
    np.testing.assert_allclose(normalise_keypoints(px), [[-1, 1], [0, -0.5]])
    np.testing.assert_allclose(denormalise_keypoints(normalise_keypoints(px)), px)


def test_same_maps_as_the_training_crop_module():
    training_crop = pytest.importorskip("training.datasets.crop")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for _ in range(5):
        center, scale, rot = rng.uniform(0, 300, 2), rng.uniform(0.3, 2.0), rng.uniform(-40, 40)
        np.testing.assert_array_equal(crop_transform(center, scale, rot=rot),
                                      training_crop.crop_transform(center, scale, rot=rot))
        np.testing.assert_array_equal(crop_image(img, center, scale, rot=rot),
                                      training_crop.crop_image(img, center, scale, rot=rot))
    box = (10.0, 20.0, 110.0, 260.0)
    a, b = box_to_center_scale(*box), training_crop.box_to_center_scale(*box)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert CROP_SIZE == training_crop.CROP_SIZE and SCALE_UNIT == training_crop.SCALE_UNIT
