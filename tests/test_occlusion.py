"""The occlusion protocol of the paper's section 4: occluder sizes, placement, errors."""
import numpy as np
import pytest

from training.occlusion import (BAR_WIDTHS, CIRCLE_RADII, DOC_LEVELS, RECTANGLE_AREAS,
                                RECTANGLE_ASPECT_RANGE, TrainingOccluder, apply_occluder,
                                occluder_mask, protocol_size, sample_training_occluder, shape_mask)

SHAPE = (400, 400)
CENTRE = (200.3, 199.6)  # off the pixel grid on purpose


def _pixels(mask):
    ys, xs = np.nonzero(mask)
    return np.stack([xs, ys], axis=1).astype(np.float64)


def test_protocol_table_matches_the_paper():
    # section 4: bar width 10..50 px, circle radius 10..50 px, rectangle area 3,000..15,000 px
    assert [protocol_size("bar", d) for d in DOC_LEVELS] == [10, 20, 30, 40, 50]
    assert [protocol_size("circle", d) for d in DOC_LEVELS] == [10, 20, 30, 40, 50]
    assert [protocol_size("rectangle", d) for d in DOC_LEVELS] == [3000, 6000, 9000, 12000, 15000]


@pytest.mark.parametrize("doc", DOC_LEVELS)
def test_bar_width_measured_across_its_axis(doc):
    rng = np.random.default_rng(doc)
    for _ in range(3):
        angle = rng.uniform(0, 180)
        mask = shape_mask("bar", BAR_WIDTHS[doc - 1], CENTRE, SHAPE, angle=angle, length=150)
        p = _pixels(mask) - CENTRE
        a = np.deg2rad(angle)
        across = p @ np.array([np.sin(a), np.cos(a)])  # the image-space normal of the axis
        along = p @ np.array([np.cos(a), -np.sin(a)])
        width = across.max() - across.min() + 1.0  # extent of pixel centres + one pixel
        assert abs(width - BAR_WIDTHS[doc - 1]) <= 1.5
        assert abs(along.max() - along.min() + 1.0 - 150) <= 1.5
        assert abs(mask.sum() / 150.0 - BAR_WIDTHS[doc - 1]) <= 1.5


def test_protocol_bar_crosses_the_image_with_a_random_orientation():
    masks = [occluder_mask("bar", 3, CENTRE, SHAPE, np.random.default_rng(s)) for s in range(4)]
    for m in masks:
        touches = [m[0].any(), m[-1].any(), m[:, 0].any(), m[:, -1].any()]
        assert sum(touches) >= 2  # cut only by the image border
        assert m[int(round(CENTRE[1])), int(round(CENTRE[0]))]
    assert not all(np.array_equal(masks[0], m) for m in masks[1:])


@pytest.mark.parametrize("doc", DOC_LEVELS)
def test_circle_area_and_centre(doc):
    r = CIRCLE_RADII[doc - 1]
    mask = occluder_mask("circle", doc, CENTRE, SHAPE, np.random.default_rng(0))
    assert abs(mask.sum() / (np.pi * r * r) - 1.0) < 0.03
    assert np.allclose(_pixels(mask).mean(axis=0), CENTRE, atol=0.5)


@pytest.mark.parametrize("doc", DOC_LEVELS)
def test_rectangle_area_aspect_and_centre(doc):
    rng = np.random.default_rng(10 + doc)
    for _ in range(3):
        mask = occluder_mask("rectangle", doc, CENTRE, SHAPE, rng)
        assert abs(mask.sum() / RECTANGLE_AREAS[doc - 1] - 1.0) < 0.04
        p = _pixels(mask)
        assert np.allclose(p.mean(axis=0), CENTRE, atol=0.5)
        w, h = np.ptp(p, axis=0) + 1.0
        lo, hi = RECTANGLE_ASPECT_RANGE
        assert lo * 0.95 <= w / h <= hi * 1.05


def test_occluder_centred_on_a_joint_near_the_border_is_clipped():
    mask = occluder_mask("circle", 5, (3.0, 5.0), (224, 224), np.random.default_rng(0))
    assert mask[5, 3] and mask[0, 0]
    assert 0 < mask.sum() < np.pi * 50 ** 2 / 2


def test_same_seed_gives_same_mask():
    a = occluder_mask("rectangle", 2, CENTRE, SHAPE, np.random.default_rng(7))
    b = occluder_mask("rectangle", 2, CENTRE, SHAPE, np.random.default_rng(7))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kind,doc", [("triangle", 1), ("bar", 0), ("bar", 6), ("circle", 2.5),
                                      ("rectangle", True), ("circle", "3")])
def test_unknown_kind_or_doc_is_a_value_error(kind, doc):
    with pytest.raises(ValueError) as e:
        occluder_mask(kind, doc, CENTRE, SHAPE, np.random.default_rng(0))
    assert ("bar, circle, rectangle" in str(e.value)) or ("1, 2, 3, 4, 5" in str(e.value))


def test_apply_occluder_colour_and_texture():
    img = np.full((50, 60, 3), 7, dtype=np.uint8)
    mask = shape_mask("circle", 10, (30, 25), img.shape)
    out = apply_occluder(img, mask, (255, 0, 128))
    assert np.all(out[mask] == (255, 0, 128)) and np.all(out[~mask] == 7)
    assert np.all(img == 7)  # input untouched
    texture = np.random.default_rng(0).integers(0, 256, img.shape, dtype=np.uint8)
    out = apply_occluder(img, mask, texture)
    assert np.array_equal(out[mask], texture[mask]) and np.all(out[~mask] == 7)
    with pytest.raises(ValueError, match="fill"):
        apply_occluder(img, mask, (1, 2))
    with pytest.raises(ValueError, match="mask"):
        apply_occluder(img, mask[:10], (1, 2, 3))


def test_training_occluder_is_reproducible_and_scales_with_the_crop():
    occluders = [sample_training_occluder(np.random.default_rng(s)) for s in range(40)]
    assert sample_training_occluder(np.random.default_rng(3)) == occluders[3]
    assert {o.kind for o in occluders} == {"bar", "circle", "rectangle"}
    assert any(o.texture_seed is None for o in occluders)
    assert any(o.texture_seed is not None for o in occluders)
    img = np.zeros((224, 224, 3), dtype=np.uint8)
    for o in occluders[:10]:
        out = o.apply(img)
        assert np.array_equal(out, o.apply(img))
        assert (out.any(axis=2) == o.mask(img.shape)).mean() > 0.97  # only masked pixels change
    circle = TrainingOccluder("circle", 20.0, (112.0, 112.0), 0.0, 1.0, 100.0, (255, 255, 255),
                              None)
    small = circle.mask((112, 112)).sum()
    assert abs(small / (np.pi * 10 ** 2) - 1.0) < 0.05  # a radius of 20 px at 224 -> 10 px at 112
