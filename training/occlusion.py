"""Synthetic occluders: the paper's section-4 evaluation protocol and random training occluders.

The protocol follows Sárándi et al. ("How robust is 3D human pose estimation to occlusion?", 2018)
as the paper uses it: one occluder centred on one joint at a time, three kinds, and a degree of
occlusion (DoC) 1..5 that sets its size in the 224x224 crop:

| kind        | DoC 1 | DoC 2 | DoC 3 | DoC 4  | DoC 5  | size is                 |
|-------------|-------|-------|-------|--------|--------|-------------------------|
| `bar`       | 10    | 20    | 30    | 40     | 50     | width in pixels         |
| `circle`    | 10    | 20    | 30    | 40     | 50     | radius in pixels        |
| `rectangle` | 3000  | 6000  | 9000  | 12000  | 15000  | area in square pixels   |

Choices the paper leaves open: a bar has a random orientation (uniform in [0, 180) degrees) and,
by default, crosses the whole image (its length is the image diagonal, so it is only cut by the
image border); a rectangle is axis-aligned with an aspect ratio (width / height) drawn
log-uniformly in [0.5, 2]. Both random choices come from the caller's generator, so an evaluation
is reproducible from its seed. A pixel belongs to a shape when its centre does (pixel centres at
integer coordinates, OpenCV's convention). numpy + OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

OCCLUDER_KINDS: Tuple[str, ...] = ("bar", "circle", "rectangle")
DOC_LEVELS: Tuple[int, ...] = (1, 2, 3, 4, 5)
BAR_WIDTHS: Tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0)
CIRCLE_RADII: Tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0)
RECTANGLE_AREAS: Tuple[float, ...] = (3000.0, 6000.0, 9000.0, 12000.0, 15000.0)
PROTOCOL_SIZES = {"bar": BAR_WIDTHS, "circle": CIRCLE_RADII, "rectangle": RECTANGLE_AREAS}
RECTANGLE_ASPECT_RANGE = (0.5, 2.0)  # width / height, drawn log-uniformly

Fill = Union[Sequence[float], np.ndarray]


def protocol_size(kind: str, doc: int) -> float:
    """The protocol's size of a `kind` occluder at degree of occlusion `doc` (table above)."""
    _check_kind(kind)
    if isinstance(doc, bool) or doc not in DOC_LEVELS:
        known = ", ".join(map(str, DOC_LEVELS))
        raise ValueError(f"unknown degree of occlusion {doc!r} (known: {known})")
    return PROTOCOL_SIZES[kind][int(doc) - 1]


def _check_kind(kind: str) -> None:
    if kind not in OCCLUDER_KINDS:
        raise ValueError(f"unknown occluder kind {kind!r} (known: {', '.join(OCCLUDER_KINDS)})")


def shape_mask(kind: str, size: float, center_xy: Sequence[float], image_shape: Sequence[int],
               angle: float = 0.0, aspect: float = 1.0,
               length: Optional[float] = None) -> np.ndarray:
    """Boolean `HxW` mask of one occluder shape, no randomness.

    `size` is the bar's width, the circle's radius or the rectangle's area (pixels); `angle`
    (degrees, counter-clockwise in the image) orients a bar's axis or a rectangle's width;
    `aspect` is a rectangle's width / height; `length` is a bar's length (None: the image
    diagonal, so the bar crosses the whole image).
    """
    _check_kind(kind)
    if not np.isfinite(size) or size <= 0:
        raise ValueError(f"occluder size must be a positive number, got {size!r}")
    h, w = int(image_shape[0]), int(image_shape[1])
    cx, cy = float(center_xy[0]), float(center_xy[1])
    dx = np.arange(w, dtype=np.float64)[None, :] - cx
    dy = np.arange(h, dtype=np.float64)[:, None] - cy
    if kind == "circle":
        return dx * dx + dy * dy <= size * size
    if kind == "bar":
        half_along = (np.hypot(h, w) if length is None else float(length)) / 2.0
        half_across = size / 2.0
    else:  # rectangle of area `size`
        if not np.isfinite(aspect) or aspect <= 0:
            raise ValueError(f"rectangle aspect ratio must be positive, got {aspect!r}")
        half_along = np.sqrt(size * aspect) / 2.0
        half_across = np.sqrt(size / aspect) / 2.0
    a = np.deg2rad(angle)
    # image y points down, so a counter-clockwise axis is (cos a, -sin a)
    along = dx * np.cos(a) - dy * np.sin(a)
    across = dx * np.sin(a) + dy * np.cos(a)
    return (np.abs(along) <= half_along) & (np.abs(across) <= half_across)


def occluder_mask(kind: str, doc: int, center_xy: Sequence[float], image_shape: Sequence[int],
                  rng: np.random.Generator) -> np.ndarray:
    """The protocol's occluder of `kind` at DoC `doc`, centred on `center_xy` (a joint): bool `HxW`.

    `rng` draws the bar's orientation and the rectangle's aspect ratio (a circle draws nothing).
    """
    size = protocol_size(kind, doc)
    angle, aspect = 0.0, 1.0
    if kind == "bar":
        angle = float(rng.uniform(0.0, 180.0))
    elif kind == "rectangle":
        lo, hi = np.log(RECTANGLE_ASPECT_RANGE)
        aspect = float(np.exp(rng.uniform(lo, hi)))
    return shape_mask(kind, size, center_xy, image_shape, angle=angle, aspect=aspect)


def apply_occluder(img: np.ndarray, mask: np.ndarray, fill: Fill) -> np.ndarray:
    """A copy of `img` `HxWxC` with the `mask` pixels set to `fill`: a colour (C values) or a
    texture image of the same shape as `img`."""
    if mask.shape != img.shape[:2]:
        raise ValueError(f"occluder mask {mask.shape} does not match the image {img.shape[:2]}")
    fill = np.asarray(fill)
    out = img.copy()
    if fill.shape == img.shape:
        out[mask] = fill[mask]
    elif fill.shape == (img.shape[2],):
        out[mask] = fill.astype(img.dtype)
    else:
        raise ValueError(f"occluder fill must be a colour of {img.shape[2]} values or an image "
                         f"of shape {img.shape}, got shape {fill.shape}")
    return out


def random_texture(rng: np.random.Generator, image_shape: Sequence[int]) -> np.ndarray:
    """A blocky-smooth random colour texture `HxWx3` uint8: a coarse random grid upsampled."""
    h, w = int(image_shape[0]), int(image_shape[1])
    cells = int(rng.integers(2, 17))
    coarse = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    interp = cv2.INTER_NEAREST if rng.uniform() < 0.5 else cv2.INTER_LINEAR
    return cv2.resize(coarse, (w, h), interpolation=interp)


@dataclass(frozen=True)
class TrainingOccluder:
    """A random occluder for training-time augmentation: all its randomness drawn up front.

    Sizes are in pixels of a `reference_res` crop and scale with the crop it is applied to.
    """
    kind: str
    size: float
    center_xy: Tuple[float, float]  # in a `reference_res` crop
    angle: float
    aspect: float
    length: float
    colour: Tuple[int, int, int]
    texture_seed: Optional[int]  # None: plain `colour`
    reference_res: int = 224

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        k = image_shape[0] / self.reference_res
        size = self.size * (k * k if self.kind == "rectangle" else k)
        center = (self.center_xy[0] * k, self.center_xy[1] * k)
        return shape_mask(self.kind, size, center, image_shape, angle=self.angle,
                          aspect=self.aspect, length=self.length * k)

    def apply(self, img: np.ndarray) -> np.ndarray:
        """`img` `HxWx3` uint8 with this occluder pasted on it."""
        if self.texture_seed is None:
            fill: Fill = self.colour
        else:
            fill = random_texture(np.random.default_rng(self.texture_seed), img.shape)
        return apply_occluder(img, self.mask(img.shape), fill)


def sample_training_occluder(rng: np.random.Generator, res: int = 224) -> TrainingOccluder:
    """A random occluder of any kind with a size anywhere in the protocol's DoC 1..5 range, at a
    random place in a `res x res` crop, of a random colour (half the time) or texture."""
    kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    sizes = PROTOCOL_SIZES[kind]
    size = float(rng.uniform(sizes[0], sizes[-1]))
    center = (float(rng.uniform(0, res)), float(rng.uniform(0, res)))
    angle = float(rng.uniform(0.0, 180.0))
    lo, hi = np.log(RECTANGLE_ASPECT_RANGE)
    aspect = float(np.exp(rng.uniform(lo, hi)))
    length = float(rng.uniform(0.25, 1.0) * res)  # bars of part of the crop, not always across it
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    texture_seed = int(rng.integers(2**31)) if rng.uniform() < 0.5 else None
    return TrainingOccluder(kind, size, center, angle, aspect, length, colour, texture_seed, res)
