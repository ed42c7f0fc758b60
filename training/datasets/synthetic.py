"""Synthetic people: renders of the body model with exact ground truth, written as shards.

Each sample: a random shape (betas ~ N(0, I)), a plausible pose from the pose sampler, a random
global orientation (upright, any yaw, small tilt), a camera at a random distance, focal length and
elevation, skin/clothing/hair colours per body part, random lighting and a background (procedural
texture or a crop of a user's image). The crop follows the SPIN convention (`center`, `scale`
of a full camera frame); the renderer draws the crop directly by folding the crop into the
intrinsics, which is much cheaper than rendering the full frame and cutting it.

Sample `i` of a dataset with seed `s` draws everything from `np.random.default_rng([s, i])`, so any
sample can be regenerated alone and the same seed gives byte-identical shards on one machine.

On disk (`docs/synthetic_data.md`): `manifest.json`, and per shard `shard_XXXXX.images` (the
JPEG files back to back) and `shard_XXXXX.npz` (ground truth and the JPEG byte offsets).

CLI: `python -m training.datasets.synthetic --out DIR --num N --seed S [--backgrounds DIR]`.
"""
from __future__ import annotations

import argparse
import colorsys
import dataclasses
import io
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from training.body.pose_sampler import sample_poses  # imports roma: before any EGL context (render.py)
from training.datasets.augment import sample_to_tensors
from training.datasets.crop import (
    CROP_SIZE,
    SCALE_UNIT,
    box_to_center_scale,
    denormalise_keypoints,
    normalise_keypoints,
)
from hkmr_ros.camera import CameraModel
from training.render import Light, MeshRenderer, RenderResult

GENERATOR_VERSION = 1
FORMAT_NAME = "hkmr-synthetic"
DATASET_NAME = "synthetic"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# SMPL joints whose skinned vertices get each material (argmax of the skinning weights).
# Joints 18/19 (forearms) and 4/5 (shins) switch to skin for short sleeves / shorts.
SHIRT_JOINTS = (3, 6, 9, 13, 14, 16, 17)
SLEEVE_JOINTS = (18, 19)
TROUSER_JOINTS = (0, 1, 2)
SHIN_JOINTS = (4, 5)
SHOE_JOINTS = (7, 8, 10, 11)
HEAD_JOINT = 15
(SKIN, SHIRT, SLEEVE, TROUSERS, SHIN, SHOES, HAIR) = range(7)

# RGB in [0, 1], light to dark; a skin tone is drawn between two neighbours.
SKIN_TONES = np.array([
    (0.96, 0.80, 0.69), (0.92, 0.71, 0.57), (0.84, 0.62, 0.49), (0.72, 0.51, 0.37),
    (0.55, 0.37, 0.26), (0.39, 0.26, 0.18), (0.27, 0.18, 0.12),
])
HAIR_COLOURS = np.array([
    (0.05, 0.04, 0.03), (0.18, 0.11, 0.06), (0.35, 0.22, 0.12), (0.72, 0.58, 0.34),
    (0.55, 0.55, 0.55), (0.45, 0.18, 0.07),
])
BACKGROUND_KINDS = ("noise", "stripes", "gradient", "checker")


@dataclass(frozen=True)
class GeneratorConfig:
    """Distributions of the scene parameters (recorded in the manifest). Angles in degrees."""
    frame_width: int = 640  # the full camera frame that `center`/`scale` refer to
    frame_height: int = 480
    fov_range: Tuple[float, float] = (45.0, 75.0)  # horizontal field of view
    distance_range: Tuple[float, float] = (2.0, 7.0)  # pelvis depth, metres
    elevation_range: Tuple[float, float] = (-10.0, 30.0)  # camera above the person looks down
    tilt_std: float = 5.0  # body pitch/roll about upright
    bbox_rescale: float = 1.2  # crop side = this x the person's longer box side (SPIN)
    center_jitter: float = 0.04  # std of the crop centre shift, fraction of the crop side
    scale_jitter: Tuple[float, float] = (0.95, 1.1)  # multiplies the crop side
    short_sleeve_prob: float = 0.4
    shorts_prob: float = 0.25
    hair_prob: float = 0.85
    image_background_prob: float = 0.8  # when a background folder is given
    noise_std_max: float = 3.0  # Gaussian pixel noise, std uniform in [0, this]
    visibility_tolerance: float = 0.15  # metres a joint may lie behind the surface seen at its pixel
    bystander_prob: float = 0.0  # another person in the frame, in front of or behind the one cropped
    bystander_depth_gap: Tuple[float, float] = (0.8, 2.0)  # metres between the two pelvises
    bystander_offset: Tuple[float, float] = (0.15, 0.6)  # sideways pelvis offset, fraction of the crop side
    msaa_samples: int = 4
    jpeg_quality: int = 95
    batch_size: int = 32  # body model forward passes per batch


# ---------------------------------------------------------------- scene sampling (pure functions)

def global_orientation(yaw: float, tilt: Tuple[float, float], elevation: float) -> np.ndarray:
    """Axis-angle (3,) of the body in the OpenCV camera frame.

    SMPL's body stands along +y and faces +z; a 180 degree turn about x makes it upright
    (head towards -y) facing the camera. Then: tilt (pitch, roll), yaw about the vertical, and
    the camera's elevation (looking down at the person tips the head towards the camera).
    """
    r = (Rotation.from_euler("x", elevation, degrees=True)
         * Rotation.from_euler("y", yaw, degrees=True)
         * Rotation.from_euler("xz", tilt, degrees=True)
         * Rotation.from_euler("x", 180.0, degrees=True))
    return r.as_rotvec()


def crop_camera(camera: CameraModel, center: np.ndarray, scale: float, res: int = CROP_SIZE) -> CameraModel:
    """Intrinsics that render the SPIN crop (center, scale) of `camera`'s frame directly at `res`."""
    k = res / (float(scale) * SCALE_UNIT)
    return CameraModel(fx=camera.fx * k, fy=camera.fy * k,
                       cx=(camera.cx - center[0]) * k + res / 2.0,
                       cy=(camera.cy - center[1]) * k + res / 2.0, width=res, height=res)


def project(points: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Nx3 camera-frame points -> Nx2 pixels."""
    z = points[:, 2:3]
    return points[:, :2] / z * np.array([camera.fx, camera.fy]) + np.array([camera.cx, camera.cy])


def keypoint_visibility(points: np.ndarray, pixels: np.ndarray, depth: np.ndarray,
                        tolerance: float) -> np.ndarray:
    """N bool: inside the image and not hidden by the body.

    A joint lies inside the body, so it counts as visible when its depth is at most `tolerance`
    behind the farthest surface seen in its 3x3 pixel neighbourhood (background = infinitely far).
    """
    h, w = depth.shape
    px = np.floor(pixels + 0.5).astype(np.int64)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    visible = np.zeros(len(points), dtype=bool)
    for j in np.flatnonzero(inside):
        x, y = px[j]
        window = depth[max(y - 1, 0): y + 2, max(x - 1, 0): x + 2]
        visible[j] = points[j, 2] <= window.max() + tolerance
    return visible


def vertex_materials(skinning_weights: np.ndarray, rest_vertices: np.ndarray,
                     head_joint: np.ndarray) -> np.ndarray:
    """V int material per vertex (SKIN, SHIRT, ...) from the skinning weights' argmax.

    Hair: head vertices above the head joint plus a margin, or behind it (rest pose, SMPL frame:
    y up, z forward).
    """
    part = np.argmax(skinning_weights, axis=1)
    material = np.full(len(part), SKIN, dtype=np.int64)
    for joints, value in ((SHIRT_JOINTS, SHIRT), (SLEEVE_JOINTS, SLEEVE), (TROUSER_JOINTS, TROUSERS),
                          (SHIN_JOINTS, SHIN), (SHOE_JOINTS, SHOES)):
        material[np.isin(part, joints)] = value
    head = part == HEAD_JOINT
    rel = rest_vertices - head_joint
    hair = head & ((rel[:, 1] > 0.07) | ((rel[:, 2] < -0.02) & (rel[:, 1] > -0.04)))
    material[hair] = HAIR
    return material


def random_colour(rng: np.random.Generator, saturation: Tuple[float, float],
                  value: Tuple[float, float]) -> np.ndarray:
    """An RGB colour in [0, 1] with a uniform hue."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)))


def vertex_colours(material: np.ndarray, rng: np.random.Generator, cfg: GeneratorConfig) -> np.ndarray:
    """Vx3 RGB: one colour per material, slight per-vertex variation."""
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    low = int(np.floor(tone))
    skin = SKIN_TONES[low] + (tone - low) * (SKIN_TONES[min(low + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[low])
    shirt = random_colour(rng, (0.05, 0.8), (0.15, 0.95))
    trousers = random_colour(rng, (0.05, 0.7), (0.1, 0.8))
    shoes = random_colour(rng, (0.0, 0.5), (0.05, 0.6))
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
    short_sleeves = rng.uniform() < cfg.short_sleeve_prob
    shorts = rng.uniform() < cfg.shorts_prob
    has_hair = rng.uniform() < cfg.hair_prob
    palette = np.stack([
        skin, shirt, skin if short_sleeves else shirt, trousers, skin if shorts else trousers,
        shoes, hair if has_hair else skin,
    ])
    colours = palette[material] * rng.uniform(0.94, 1.06, size=(len(material), 1))
    return np.clip(colours, 0.0, 1.0)


def random_light(rng: np.random.Generator) -> Light:
    """Ambient + a directional light mostly from the camera's side and above."""
    direction = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 0.3), -rng.uniform(0.2, 1.0)])
    return Light(direction=tuple(direction / np.linalg.norm(direction)),
                 ambient=float(rng.uniform(0.25, 0.6)), diffuse=float(rng.uniform(0.3, 0.8)),
                 specular=float(rng.uniform(0.0, 0.1)))


def _two_colours(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    return (random_colour(rng, (0.0, 0.7), (0.1, 1.0)) * 255.0,
            random_colour(rng, (0.0, 0.7), (0.1, 1.0)) * 255.0)


def procedural_background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """size x size x 3 uint8 texture: 'noise' | 'stripes' | 'gradient' | 'checker'."""
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background kind {kind!r}; known: {', '.join(BACKGROUND_KINDS)}")
    c0, c1 = _two_colours(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    if kind == "noise":
        t = np.zeros((size, size), np.float32)
        for octave, cells in enumerate((3, 6, 12, 24, 48)):
            grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
            t += cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) * 0.6 ** octave
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == "stripes":
        period = rng.uniform(0.04, 0.3)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
        if rng.uniform() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == "gradient":
        t = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    else:  # checker
        cell = rng.uniform(0.04, 0.25)
        across = -xx * np.sin(angle) + yy * np.cos(angle)
        t = ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    image = c0 + t[..., None] * (c1 - c0)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_background(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of an HxWx3 uint8 image, resized to size x size."""
    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 1.0))
    side = max(side, 1)
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = image[y0:y0 + side, x0:x0 + side]
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def list_background_images(folder: Union[str, Path]) -> List[Path]:
    """Image files under `folder` (recursively), sorted so that the choice is reproducible."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"background folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in background folder {root}")
    return files


# ---------------------------------------------------------------- the generator

def default_pose_sampler(n: int, seed: int) -> np.ndarray:
    """n x 72 plausible poses from `training.body.pose_sampler`."""
    return np.asarray(sample_poses(n, seed), dtype=np.float64).reshape(n, 72)


def skinning_weights(body_model: torch.nn.Module) -> np.ndarray:
    """Vx24 skinning weights of an smplx-based body model (its `lbs_weights` buffer)."""
    for name, buffer in body_model.named_buffers():
        if name.split(".")[-1] == "lbs_weights":
            return buffer.detach().cpu().numpy()
    raise ValueError("the body model has no 'lbs_weights' buffer (smplx SMPL's skinning weights)")


class SyntheticGenerator:
    """Draws and renders samples; `generate(indices)` returns one dict per index.

    body_model: `training.body.body_model.BodyModel` (or anything with its API and smplx's
    `lbs_weights` buffer); pose_sampler: `(n, seed) -> n x 72` axis-angle.
    """

    def __init__(self, body_model: torch.nn.Module, seed: int, cfg: GeneratorConfig = GeneratorConfig(),
                 backgrounds: Optional[Union[str, Path]] = None,
                 pose_sampler: Callable[[int, int], np.ndarray] = default_pose_sampler):
        self.body_model = body_model.eval()
        self.seed = int(seed)
        self.cfg = cfg
        self.pose_sampler = pose_sampler
        self.background_files = list_background_images(backgrounds) if backgrounds is not None else []
        self._background_cache: Dict[int, np.ndarray] = {}
        faces = np.asarray(body_model.faces)
        rest = body_model.rest()
        rest_vertices = rest.vertices[0].numpy()
        self.materials = vertex_materials(skinning_weights(body_model), rest_vertices,
                                          rest.joints[0, HEAD_JOINT].numpy())
        self.renderer = MeshRenderer(faces, len(rest_vertices), samples=cfg.msaa_samples)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        use_image = bool(self.background_files) and rng.uniform() < self.cfg.image_background_prob
        kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
        file_index = int(rng.integers(max(len(self.background_files), 1)))
        if not use_image:
            return procedural_background(kind, rng, CROP_SIZE)
        if file_index not in self._background_cache:
            path = self.background_files[file_index]
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"could not read background image {path}")
            if len(self._background_cache) >= 64:
                self._background_cache.pop(next(iter(self._background_cache)))
            self._background_cache[file_index] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return image_background(self._background_cache[file_index], rng, CROP_SIZE)

    def _poses(self, indices: Sequence[int]) -> np.ndarray:
        """len(indices) x 72 sampler poses. The sampler runs once per block of `batch_size`
        consecutive indices, seeded by (seed, block), so a sample's pose does not depend on
        which other samples are generated with it."""
        block_size = self.cfg.batch_size
        blocks: Dict[int, np.ndarray] = {}
        for i in indices:
            block = int(i) // block_size
            if block not in blocks:
                block_seed = int(np.random.default_rng([self.seed, block, 1]).integers(2 ** 31))
                blocks[block] = self.pose_sampler(block_size, block_seed)
        return np.stack([blocks[int(i) // block_size][int(i) % block_size] for i in indices])

    def _global_orientation(self, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        tilt = np.clip(rng.normal(0.0, cfg.tilt_std, size=2), -3 * cfg.tilt_std, 3 * cfg.tilt_std)
        elevation = rng.uniform(*cfg.elevation_range)
        return global_orientation(rng.uniform(0.0, 360.0), tuple(tilt), elevation)

    def _bystander_draws(self, indices: Sequence[int]) -> List[Optional[np.random.Generator]]:
        """Per sample, the generator of its bystander, or None without one. Bystanders draw from
        `default_rng([seed, index, 3])`, so the samples without one (all, when `bystander_prob`
        is 0) are the same as without the option."""
        if self.cfg.bystander_prob <= 0:
            return [None] * len(indices)
        rngs = [np.random.default_rng([self.seed, int(i), 3]) for i in indices]
        return [rng if rng.uniform() < self.cfg.bystander_prob else None for rng in rngs]

    def _bystander_pose_index(self, index: int, rng: np.random.Generator) -> int:
        """Another sample of `index`'s pose block, whose pose the bystander takes."""
        block_size = self.cfg.batch_size
        offset = (int(index) % block_size + int(rng.integers(1, block_size))) % block_size
        return int(index) // block_size * block_size + offset

    def generate(self, indices: Sequence[int]) -> List[Dict[str, np.ndarray]]:
        """Render samples `indices` (each from `default_rng([seed, index])`)."""
        rngs = [np.random.default_rng([self.seed, int(i)]) for i in indices]
        bystander_rngs = self._bystander_draws(indices)
        with_bystander = [(i, rng) for i, rng in zip(indices, bystander_rngs) if rng is not None]
        pose_indices = [*indices, *(self._bystander_pose_index(i, rng) for i, rng in with_bystander)]
        poses = self._poses(pose_indices).astype(np.float64)
        params = []
        for rng, pose in zip([*rngs, *(rng for _, rng in with_bystander)], poses):
            pose[:3] = self._global_orientation(rng)
            params.append({"pose": pose, "betas": rng.standard_normal(self.body_model.num_betas)})
        pose = torch.as_tensor(np.stack([p["pose"] for p in params]), dtype=torch.float32)
        betas = torch.as_tensor(np.stack([p["betas"] for p in params]), dtype=torch.float32)
        with torch.no_grad():
            out = self.body_model(pose, betas)
            spin24 = self.body_model.joint_set("spin24", out).numpy().astype(np.float64)
            h36m17 = self.body_model.joint_set("h36m17", out).numpy().astype(np.float64)
        vertices = out.vertices.numpy().astype(np.float64)
        pelvis = out.joints[:, 0].numpy().astype(np.float64)
        bystanders: List[Optional[Tuple[np.random.Generator, np.ndarray]]] = []
        row = len(indices)
        for rng in bystander_rngs:
            bystanders.append(None if rng is None else (rng, vertices[row] - pelvis[row]))
            row += rng is not None
        return [self._render_sample(rng, params[b], vertices[b], spin24[b], h36m17[b], pelvis[b], bystanders[b])
                for b, rng in enumerate(rngs)]

    def _render_sample(self, rng: np.random.Generator, params: Dict[str, np.ndarray],
                       vertices: np.ndarray, spin24: np.ndarray, h36m17: np.ndarray, pelvis: np.ndarray,
                       bystander: Optional[Tuple[np.random.Generator, np.ndarray]] = None
                       ) -> Dict[str, np.ndarray]:
        """One sample; `bystander`: (its generator, its pelvis-centred Vx3 vertices) or None."""
        cfg = self.cfg
        w, h = cfg.frame_width, cfg.frame_height
        fx = w / 2.0 / np.tan(np.deg2rad(rng.uniform(*cfg.fov_range)) / 2.0)
        camera = CameraModel(fx=fx, fy=fx, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0, width=w, height=h)
        # the pelvis at a random depth, projecting into the middle of the frame
        depth = rng.uniform(*cfg.distance_range)
        u, v = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.35 * h, 0.65 * h)
        translation = np.array([(u - camera.cx) / fx * depth, (v - camera.cy) / fx * depth, depth])
        offset = translation - pelvis
        vertices, spin24, h36m17 = vertices + offset, spin24 + offset, h36m17 + offset

        box = project(vertices, camera)
        center, scale = box_to_center_scale(*box.min(axis=0), *box.max(axis=0), rescale=cfg.bbox_rescale)
        scale *= rng.uniform(*cfg.scale_jitter)
        center = center + rng.normal(0.0, cfg.center_jitter, size=2) * scale * SCALE_UNIT
        crop = crop_camera(camera, center, scale)

        background = self._background(rng)
        colours = vertex_colours(self.materials, rng, cfg)
        light = random_light(rng)
        if bystander is None:
            rendered = self.renderer.render(vertices, colours, crop, background, light)
        else:
            side = float(scale) * SCALE_UNIT
            placed = place_bystander(bystander[0], cfg, camera, np.array([u, v]), depth, side)
            rendered = self.render_with_bystander(vertices, colours, bystander[1] + placed.translation,
                                                  vertex_colours(self.materials, bystander[0], cfg),
                                                  placed.in_front, crop, background, light)
        noise_std = rng.uniform(0.0, cfg.noise_std_max)
        image = rendered.image + rng.standard_normal(rendered.image.shape, dtype=np.float32) * noise_std
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

        keypoints_px = project(spin24, crop)
        visible = keypoint_visibility(spin24, keypoints_px, rendered.depth, cfg.visibility_tolerance)
        return {
            "img": image,
            "mask": rendered.mask,
            "pose": params["pose"].astype(np.float32),
            "betas": params["betas"].astype(np.float32),
            "joints_spin24": spin24.astype(np.float32),
            "joints_h36m17": h36m17.astype(np.float32),
            "keypoints_2d": np.concatenate([normalise_keypoints(keypoints_px), visible[:, None]],
                                           axis=1).astype(np.float32),
            "center": center.astype(np.float32),
            "scale": np.float32(scale),
            "camera_K": camera.matrix.astype(np.float32),
            "crop_K": crop.matrix.astype(np.float32),
        }


    def render_with_bystander(self, vertices: np.ndarray, colours: np.ndarray, bystander_vertices: np.ndarray,
                              bystander_colours: np.ndarray, in_front: bool, camera: CameraModel,
                              background: np.ndarray, light: Light) -> RenderResult:
        """The person and a bystander at a different depth, the farther one drawn first. `mask` and
        `coverage` are the person's visible part; `depth` is the nearer surface of the two."""
        if in_front:
            person = self.renderer.render(vertices, colours, camera, background, light)
            both = self.renderer.render(bystander_vertices, bystander_colours, camera, person.image, light)
            coverage = person.coverage * (1.0 - both.coverage)
            other_depth = both.depth
        else:
            behind = self.renderer.render(bystander_vertices, bystander_colours, camera, background, light)
            both = self.renderer.render(vertices, colours, camera, behind.image, light)
            person, coverage, other_depth = both, both.coverage, behind.depth
        return RenderResult(image=both.image, coverage=coverage.astype(np.float32),
                            depth=np.minimum(person.depth, other_depth))


@dataclass(frozen=True)
class BystanderPlacement:
    translation: np.ndarray  # (3,) camera-frame position of the bystander's pelvis, metres
    in_front: bool  # nearer the camera than the person


def place_bystander(rng: np.random.Generator, cfg: GeneratorConfig, camera: CameraModel,
                    pelvis_pixel: np.ndarray, depth: float, crop_side: float) -> BystanderPlacement:
    """A bystander beside the person: its pelvis `cfg.bystander_offset` crop sides to the left or
    right of the person's (and a little up or down) in the image, `cfg.bystander_depth_gap`
    metres nearer or farther. Nearer only where that leaves it at least 1 m from the camera, so the
    two bodies never interpenetrate."""
    gap = rng.uniform(*cfg.bystander_depth_gap)
    in_front = bool(rng.uniform() < 0.5) and depth - gap >= 1.0
    bystander_depth = depth - gap if in_front else depth + gap
    side = -1.0 if rng.uniform() < 0.5 else 1.0
    pixel = pelvis_pixel + crop_side * np.array([side * rng.uniform(*cfg.bystander_offset), rng.normal(0.0, 0.05)])
    translation = np.array([(pixel[0] - camera.cx) / camera.fx * bystander_depth,
                            (pixel[1] - camera.cy) / camera.fy * bystander_depth, bystander_depth])
    return BystanderPlacement(translation=translation, in_front=in_front)


# ---------------------------------------------------------------- shards

LABEL_KEYS = ("pose", "betas", "joints_spin24", "joints_h36m17", "keypoints_2d", "center", "scale",
              "camera_K", "crop_K")


def shard_names(shard: int) -> Tuple[str, str]:
    """(images file, labels file) of shard number `shard`."""
    return f"shard_{shard:05d}.images", f"shard_{shard:05d}.npz"


def write_npz_deterministic(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """Like np.savez, but with fixed zip timestamps so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def write_shard(root: Path, shard: int, samples: Sequence[Dict[str, np.ndarray]], jpeg_quality: int) -> Dict:
    """Write one shard; returns its manifest entry."""
    images_name, labels_name = shard_names(shard)
    offsets = [0]
    with open(root / images_name, "wb") as f:
        for sample in samples:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(sample["img"], cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            f.write(jpeg.tobytes())
            offsets.append(offsets[-1] + len(jpeg))
    labels = {key: np.stack([s[key] for s in samples]) for key in LABEL_KEYS}
    labels["image_offsets"] = np.asarray(offsets, dtype=np.int64)
    write_npz_deterministic(root / labels_name, labels)
    return {"images": images_name, "labels": labels_name, "count": len(samples)}


def generate_dataset(out: Union[str, Path], num: int, seed: int, body_model: torch.nn.Module,
                     backgrounds: Optional[Union[str, Path]] = None, shard_size: int = 1000,
                     cfg: GeneratorConfig = GeneratorConfig(), overwrite: bool = False,
                     pose_sampler: Callable[[int, int], np.ndarray] = default_pose_sampler,
                     progress: bool = True) -> Dict:
    """Render `num` samples into shards under `out` and write `manifest.json`; returns the manifest."""
    if num < 1 or shard_size < 1:
        raise ValueError(f"num and shard_size must be positive, got {num} and {shard_size}")
    root = Path(out)
    if (root / "manifest.json").exists() and not overwrite:
        raise FileExistsError(f"{root / 'manifest.json'} exists; choose another folder or overwrite")
    root.mkdir(parents=True, exist_ok=True)
    generator = SyntheticGenerator(body_model, seed, cfg, backgrounds, pose_sampler)
    shards = []
    with tqdm(total=num, unit="img", desc="rendering", disable=not progress) as bar:
        for shard, start in enumerate(range(0, num, shard_size)):
            stop = min(start + shard_size, num)
            samples: List[Dict[str, np.ndarray]] = []
            for batch_start in range(start, stop, cfg.batch_size):
                batch = range(batch_start, min(batch_start + cfg.batch_size, stop))
                samples.extend(generator.generate(batch))
                bar.update(len(batch))
            shards.append(write_shard(root, shard, samples, cfg.jpeg_quality))
    manifest = {
        "format": FORMAT_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "count": int(num),
        "shard_size": int(shard_size),
        "crop_size": CROP_SIZE,
        "shards": shards,
        "config": dataclasses.asdict(cfg),
        "backgrounds": {"folder": str(backgrounds) if backgrounds is not None else None,
                        "num_images": len(generator.background_files)},
        "body_model": {"file": Path(getattr(body_model, "source", "")).name,
                       "licence": getattr(body_model, "licence", "")},
        "keypoints": "spin24",
    }
    text = json.dumps(manifest, indent=2) + "\n"
    (root / "manifest.json").write_text(text)
    return json.loads(text)


def read_manifest(root: Union[str, Path]) -> Dict:
    """The manifest of a shard folder, checked; FileNotFoundError/ValueError name the problem."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"synthetic dataset folder not found: {root}")
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {root}; generate the data with "
                                "`python -m training.datasets.synthetic --out DIR --num N --seed S`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a {FORMAT_NAME} manifest")
    if manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{path}: generator version {manifest.get('generator_version')!r}, this code "
                         f"reads version {GENERATOR_VERSION}; regenerate the data")
    if not manifest.get("shards"):
        raise ValueError(f"{path} lists no shards: the dataset in {root} is empty")
    for entry in manifest["shards"]:
        for key in ("images", "labels"):
            if not (root / entry[key]).is_file():
                raise FileNotFoundError(f"shard file listed in {path} not found: {root / entry[key]}")
    return manifest


# ---------------------------------------------------------------- the torch dataset

class SyntheticDataset(torch.utils.data.Dataset):
    """Samples of a shard folder as the dict of docs/architecture.md.

    augment: optional callable `augment(sample, rng) -> sample` applied before normalisation to a
    dict of numpy arrays (`img` 224x224x3 uint8 RGB, `keypoints_2d` 24x3, `joints_3d` 24x4, `pose`
    72, `betas` 10, `center` 2, `scale`); `rng` is a `np.random.Generator`
    (`training.datasets.augment.Augmentation` fits). eval_keys: also return `joints_h36m17` 17x3
    and `keypoints_px` 24x3 (crop pixels + visibility), for evaluation only (no augmentation).
    """

    def __init__(self, root: Union[str, Path], augment: Optional[Callable] = None, eval_keys: bool = False):
        if augment is not None and eval_keys:
            raise ValueError("eval_keys are for evaluation: they are not augmented, so pass augment=None")
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.augment = augment
        self.eval_keys = eval_keys
        labels = []
        self._locations = []  # (shard, start byte, end byte) per sample
        for shard, entry in enumerate(self.manifest["shards"]):
            with np.load(self.root / entry["labels"], allow_pickle=False) as npz:
                shard_labels = {key: npz[key] for key in LABEL_KEYS}
                offsets = npz["image_offsets"]
            labels.append(shard_labels)
            self._locations.extend((shard, int(offsets[i]), int(offsets[i + 1])) for i in range(entry["count"]))
        self.labels = {key: np.concatenate([l[key] for l in labels]) for key in LABEL_KEYS}
        self._files: Dict[int, object] = {}
        self._files_pid = -1
        self._draws = 0

    def __len__(self) -> int:
        return len(self._locations)

    def read_image(self, index: int) -> np.ndarray:
        """224x224x3 uint8 RGB of sample `index`."""
        shard, start, end = self._locations[index]
        if self._files_pid != os.getpid():  # file handles are not shared across worker processes
            self._files, self._files_pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = open(self.root / self.manifest["shards"][shard]["images"], "rb")
        f = self._files[shard]
        f.seek(start)
        data = np.frombuffer(f.read(end - start), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"sample {index}: corrupt JPEG in {f.name}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def raw_sample(self, index: int) -> Dict[str, np.ndarray]:
        """Sample `index` as numpy arrays, before augmentation and normalisation."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        labels = {key: value[index] for key, value in self.labels.items()}
        return {
            "img": self.read_image(index),
            "keypoints_2d": labels["keypoints_2d"],
            "joints_3d": np.concatenate([labels["joints_spin24"], np.ones((24, 1), np.float32)], axis=1),
            "pose": labels["pose"],
            "betas": labels["betas"],
            "center": labels["center"],
            "scale": labels["scale"],
            "joints_h36m17": labels["joints_h36m17"],
        }

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = None
        if self.augment is not None:
            self._draws += 1
            rng = np.random.default_rng([torch.initial_seed(), index, self._draws])
        return self.sample(index, rng)

    def sample(self, index: int, rng: Optional[np.random.Generator] = None) -> Dict[str, object]:
        """Sample `index` with its augmentation drawn from `rng` (training passes a generator
        seeded by the sample's stream position, so a resumed run sees the same augmentation)."""
        sample = self.raw_sample(index)
        if self.augment is not None:
            if rng is None:
                raise ValueError("an augmenting SyntheticDataset needs a random generator per sample")
            sample = self.augment(sample, rng)
        item = sample_to_tensors(sample["img"], sample["keypoints_2d"], sample["joints_3d"],
                                 sample["pose"], sample["betas"], 1.0, 1.0, sample["center"],
                                 float(sample["scale"]), DATASET_NAME)
        if self.eval_keys:
            kp = sample["keypoints_2d"]
            item["joints_h36m17"] = torch.as_tensor(sample["joints_h36m17"], dtype=torch.float32)
            item["keypoints_px"] = torch.as_tensor(
                np.concatenate([denormalise_keypoints(kp[:, :2]), kp[:, 2:]], axis=1), dtype=torch.float32)
        return item


# ---------------------------------------------------------------- contact sheet and CLI

def contact_sheet(dataset: SyntheticDataset, indices: Sequence[int], columns: int = 4) -> np.ndarray:
    """RGB uint8 grid of samples with their 2D keypoints (green visible, red hidden) and bones."""
    # spin24 bones: legs, arms, hips and shoulders to pelvis/neck, neck-head top, the spine
    bones = ((0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (9, 10), (10, 11), (2, 14), (3, 14),
             (8, 12), (9, 12), (12, 13), (14, 16), (16, 15), (15, 12))
    tiles = []
    for i in indices:
        sample = dataset.raw_sample(i)
        image = sample["img"].copy()
        kp = sample["keypoints_2d"]
        px = denormalise_keypoints(kp[:, :2])
        for a, b in bones:
            cv2.line(image, tuple(int(round(c)) for c in px[a]), tuple(int(round(c)) for c in px[b]),
                     (255, 255, 0), 1, cv2.LINE_AA)
        for j, (p, vis) in enumerate(zip(px, kp[:, 2])):
            colour = (0, 255, 0) if vis > 0 else (255, 0, 0)
            if j in (0, 1, 2, 6, 7, 8):  # right side of the body: filled
                cv2.circle(image, tuple(int(round(c)) for c in p), 3, colour, -1, cv2.LINE_AA)
            else:
                cv2.circle(image, tuple(int(round(c)) for c in p), 3, colour, 1, cv2.LINE_AA)
        tiles.append(image)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.datasets.synthetic",
                                     description="Render synthetic people into shards.")
    parser.add_argument("--out", required=True, help="output folder (gets manifest.json and shards)")
    parser.add_argument("--num", type=int, required=True, help="number of samples")
    parser.add_argument("--seed", type=int, required=True, help="dataset seed (keep test seeds apart)")
    parser.add_argument("--backgrounds", help="folder of background images (else procedural only)")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--model", help="SMPL-format body model file (default: $HKMR_SMPL_MODEL or anny-smpl)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    parser.add_argument("--contact-sheet", help="also write a PNG of the first 16 samples with keypoints")
    parser.add_argument("--bystanders", type=float, default=0.0, metavar="P",
                        help="probability of another person beside the one cropped (default 0)")
    args = parser.parse_args(argv)

    from training.body.body_model import load_body_model
    try:
        body_model = load_body_model(args.model)
        start = time.perf_counter()
        if not 0.0 <= args.bystanders <= 1.0:
            raise ValueError(f"--bystanders is a probability in [0, 1], got {args.bystanders}")
        manifest = generate_dataset(args.out, args.num, args.seed, body_model, args.backgrounds,
                                    args.shard_size, GeneratorConfig(bystander_prob=args.bystanders),
                                    overwrite=args.overwrite)
        seconds = time.perf_counter() - start
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {manifest['count']} samples in {len(manifest['shards'])} shards to {args.out} "
          f"in {seconds:.1f} s: {manifest['count'] / seconds:.1f} images/s "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    if args.contact_sheet:
        dataset = SyntheticDataset(args.out)
        sheet = contact_sheet(dataset, range(min(16, len(dataset))))
        cv2.imwrite(args.contact_sheet, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"contact sheet: {args.contact_sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
