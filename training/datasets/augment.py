"""HMR/SPIN-style data augmentation, shared by the real-data loaders and the synthetic generator.

Maths are pure numpy functions; `Augmentation` draws the parameters from a caller's
`np.random.Generator` (so a sample is reproducible from its seed) and applies them to a sample
that is already a person-centred crop:

    aug = Augmentation(flip_prob=0.5, rot_factor=30, rot_prob=0.4, scale_factor=0.25,
                       noise_factor=0.4, occluder_prob=0.0)
    out = aug(sample, rng)                   # = aug.apply(sample, aug.sample_params(rng))

`sample` holds `img` (`HxWx3` uint8 RGB crop, square), `keypoints_2d` (`24x3` spin24, normalised
crop coordinates + visibility), and optionally `joints_3d` (`24x4` spin24, camera frame, metres +
confidence) and `pose` (`72` SMPL axis-angle); other keys are copied unchanged. The result has the
same keys, types and shapes. The steps, in SPIN's order:

1. rotation by `rot` degrees (counter-clockwise in the image) and zoom by `1 / scale` about the
   crop centre: the image (`cv2.warpAffine`), the 2D keypoints, the 3D joints about the camera z
   axis, and the global orientation `pose[:3]` all turn together;
2. horizontal flip: the image mirrors, keypoints and joints negate x (2D: about the image's
   exact mirror axis, see `flip_keypoints`) and swap left/right (`SPIN24_FLIP_PERMUTATION`),
   the SMPL pose swaps left/right (`SMPL_FLIP_PERMUTATION`) and negates the y and z axis-angle
   components (SPIN's `flip_pose`);
3. colour jitter: each RGB channel multiplied by its own factor in `[1 - noise, 1 + noise]`;
4. optionally a random synthetic occluder (`training.occlusion.sample_training_occluder`).

A loader that still holds the full image passes `source=(image, crop_matrix)` to `apply`; the
crop is then re-cut from the full image under the composed map, so rotation and zoom-out show real
image content instead of black corners (SPIN crops this way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hkmr_ros.skeleton import SMPL_FLIP_PERMUTATION
from training.datasets.crop import CROP_SIZE
from training.occlusion import TrainingOccluder, sample_training_occluder

# SPIN's J24 joints (the `spin24` training set): LSP-14, then pelvis, thorax, spine, jaw, head,
# nose, eyes and ears.
SPIN24_JOINT_NAMES: Tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "head_top", "pelvis", "thorax", "spine", "jaw", "head", "nose",
    "left_eye", "right_eye", "left_ear", "right_ear",
)

# Index of the mirrored joint (left <-> right), as SPIN's J24_FLIP_PERM.
SPIN24_FLIP_PERMUTATION: Tuple[int, ...] = tuple(
    SPIN24_JOINT_NAMES.index(
        name.replace("left_", "@").replace("right_", "left_").replace("@", "right_")
    )
    for name in SPIN24_JOINT_NAMES
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# ---------------------------------------------------------------- pure functions

def inplane_rotation(rot: float) -> np.ndarray:
    """3x3 rotation about the camera z axis that turns image content `rot` degrees
    counter-clockwise (camera frame: x right, y down, z forward), as SPIN's `rot_aa`."""
    a = np.deg2rad(rot)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def crop_augment_matrix(rot: float, scale: float, res: int = CROP_SIZE) -> np.ndarray:
    """2x3 affine map of crop pixels that rotates by `rot` degrees and zooms by `1 / scale` about
    the crop centre (the same framing as `crop_transform(center, scale * s, rot=rot)`)."""
    m = np.zeros((2, 3))
    m[:, :2] = inplane_rotation(rot)[:2, :2] / scale
    c = np.array([res / 2.0, res / 2.0])
    m[:, 2] = c - m[:, :2] @ c
    return m


def rotate_scale_keypoints(keypoints: np.ndarray, rot: float, scale: float) -> np.ndarray:
    """Normalised crop keypoints `Jx3` (x, y, visibility) under `crop_augment_matrix`."""
    out = keypoints.copy()
    out[:, :2] = keypoints[:, :2] @ (inplane_rotation(rot)[:2, :2] / scale).T
    return out


def rotate_joints_3d(joints: np.ndarray, rot: float) -> np.ndarray:
    """Camera-frame joints `Jx4` (x, y, z, confidence) rotated about the camera z axis."""
    out = joints.copy()
    out[:, :3] = joints[:, :3] @ inplane_rotation(rot).T
    return out


def rotate_global_orient(pose: np.ndarray, rot: float) -> np.ndarray:
    """SMPL pose `72` with its global orientation turned about the camera z axis."""
    out = pose.copy()
    global_orient = Rotation.from_matrix(inplane_rotation(rot)) * Rotation.from_rotvec(pose[:3])
    out[:3] = global_orient.as_rotvec()
    return out


def flip_keypoints(points: np.ndarray, permutation: Sequence[int] = SPIN24_FLIP_PERMUTATION,
                   x_offset: float = 0.0) -> np.ndarray:
    """Mirror keypoints `Jx3` or joints `Jx4`: swap left/right, `x -> -x - x_offset`.

    3D joints use no offset. 2D keypoints of a `W`-pixel crop whose image is mirrored with
    `flip_image` use `x_offset = 2 / W`: with pixel centres at integers the mirror axis is
    `x = (W - 1) / 2`, i.e. normalised `u = -1 / W`, not `u = 0`.
    """
    out = points[list(permutation)].copy()
    out[:, 0] = -out[:, 0] - x_offset
    return out


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """Mirror an SMPL pose `72`: swap left/right joints, negate the y and z axis-angle parts."""
    out = pose.reshape(24, 3)[list(SMPL_FLIP_PERMUTATION)].copy()
    out[:, 1:] = -out[:, 1:]
    return out.reshape(pose.shape)


def flip_image(img: np.ndarray) -> np.ndarray:
    """Mirror `HxWxC` left/right."""
    return np.ascontiguousarray(img[:, ::-1])


def jitter_colour(img: np.ndarray, pixel_noise: Sequence[float]) -> np.ndarray:
    """Multiply each channel of `HxWx3` uint8 by its factor, rounded and clipped to [0, 255] (SPIN);
    as a lookup table of the 256 levels per channel, twice as fast as the products per pixel."""
    levels = np.arange(256, dtype=np.float32)[:, None] * np.asarray(pixel_noise, dtype=np.float32)
    table = np.clip(np.rint(levels), 0, 255).astype(np.uint8)[None]  # 1x256x3
    return cv2.LUT(np.ascontiguousarray(img), table)


def image_to_tensor(img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """`HxWx3` uint8 RGB -> `3xHxW` float32 `(rgb / 255 - mean) / std` (the network input; ImageNet
    mean/std by default, `training.models.encoders.encoder_normalisation(name)` for an encoder)."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    x = (img.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def normalise_batch(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Bx3xHxW uint8 RGB -> float32 `(rgb / 255 - mean) / std`, the batched `image_to_tensor`."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=img.device)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32, device=img.device)[:, None, None]
    return (img.float() / 255.0 - m) / s


def renormalise(img: torch.Tensor, source: Tuple[Sequence[float], Sequence[float]],
                target: Tuple[Sequence[float], Sequence[float]]) -> torch.Tensor:
    """Bx3xHxW float normalised with `source` (mean, std) -> normalised with `target`; the identity
    when they are equal. Per-channel affine, so it commutes with `resize_images`."""
    if tuple(map(float, source[0])) == tuple(map(float, target[0])) and \
            tuple(map(float, source[1])) == tuple(map(float, target[1])):
        return img
    sm, ss, tm, ts = (torch.as_tensor(v, dtype=img.dtype, device=img.device)[:, None, None]
                      for v in (*source, *target))
    return ((img * ss + sm) - tm) / ts


def resize_images(img: torch.Tensor, size: int) -> torch.Tensor:
    """Bx3xHxW crops -> Bx3xsizexsize, the network's input side. Keypoints are in normalised crop
    coordinates, so they do not change."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    return torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True)


def sample_to_tensors(img: np.ndarray, keypoints_2d: np.ndarray, joints_3d: np.ndarray,
                      pose: np.ndarray, betas: np.ndarray, has_smpl: float, has_joints_3d: float,
                      center: np.ndarray, scale: float, dataset_name: str,
                      normalise: bool = True) -> Dict[str, object]:
    """The sample dict of docs/architecture.md, with exactly its keys (datasets mixed in one
    batch must agree on them). normalise=False keeps `img` a 3xHxW uint8 tensor (the store's
    compact form; the training step normalises it for its encoder)."""
    def f32(x):
        return torch.as_tensor(np.asarray(x, dtype=np.float32))
    return {
        "img": image_to_tensor(img) if normalise else torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
        "keypoints_2d": f32(keypoints_2d),
        "joints_3d": f32(joints_3d),
        "pose": f32(pose),
        "betas": f32(betas),
        "has_smpl": f32(has_smpl),
        "has_joints_3d": f32(has_joints_3d),
        "center": f32(center),
        "scale": f32(scale),
        "dataset_name": str(dataset_name),
    }


# ---------------------------------------------------------------- the random augmentation

@dataclass(frozen=True)
class AugmentationParams:
    """One draw of the augmentation; the identity by default."""
    flip: bool = False
    rot: float = 0.0  # degrees, counter-clockwise in the image
    scale: float = 1.0  # multiplies the box side: > 1 zooms out
    pixel_noise: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    occluder: Optional[TrainingOccluder] = None


class Augmentation:
    """SPIN's augmentation (flip, rotation, scale, colour jitter) plus optional occluders.

    rot_prob is the probability that a sample is rotated at all (SPIN rotates 40% of samples);
    the angle is `N(0, rot_factor)` clipped to `±2 rot_factor`, the scale `N(1, scale_factor)`
    clipped to `1 ± scale_factor`, the channel factors uniform in `1 ± noise_factor`.
    """

    def __init__(self, flip_prob: float = 0.5, rot_factor: float = 30.0, rot_prob: float = 0.4,
                 scale_factor: float = 0.25, noise_factor: float = 0.4,
                 occluder_prob: float = 0.0):
        for name, p in (("flip_prob", flip_prob), ("rot_prob", rot_prob),
                        ("occluder_prob", occluder_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        for name, v in (("rot_factor", rot_factor), ("scale_factor", scale_factor),
                        ("noise_factor", noise_factor)):
            if not v >= 0.0:
                raise ValueError(f"{name} must be non-negative, got {v!r}")
        if scale_factor >= 1.0 or noise_factor > 1.0:
            raise ValueError(f"scale_factor must be < 1 and noise_factor <= 1, got "
                             f"{scale_factor!r} and {noise_factor!r}")
        self.flip_prob = flip_prob
        self.rot_factor = rot_factor
        self.rot_prob = rot_prob
        self.scale_factor = scale_factor
        self.noise_factor = noise_factor
        self.occluder_prob = occluder_prob

    def __repr__(self) -> str:
        return (f"Augmentation(flip_prob={self.flip_prob}, rot_factor={self.rot_factor}, "
                f"rot_prob={self.rot_prob}, scale_factor={self.scale_factor}, "
                f"noise_factor={self.noise_factor}, occluder_prob={self.occluder_prob})")

    def sample_params(self, rng: np.random.Generator, res: int = CROP_SIZE) -> AugmentationParams:
        """Draw one augmentation (always the same number of draws, so streams stay aligned)."""
        flip = bool(rng.uniform() < self.flip_prob)
        rotate = bool(rng.uniform() < self.rot_prob)
        rot = float(np.clip(rng.standard_normal() * self.rot_factor,
                            -2 * self.rot_factor, 2 * self.rot_factor))
        scale = float(np.clip(1.0 + rng.standard_normal() * self.scale_factor,
                              1.0 - self.scale_factor, 1.0 + self.scale_factor))
        noise = rng.uniform(1.0 - self.noise_factor, 1.0 + self.noise_factor, size=3)
        occlude = bool(rng.uniform() < self.occluder_prob)
        occluder = sample_training_occluder(rng, res) if occlude else None
        return AugmentationParams(flip=flip, rot=rot if rotate else 0.0, scale=scale,
                                  pixel_noise=tuple(float(n) for n in noise), occluder=occluder)

    def __call__(self, sample: Dict[str, object], rng: np.random.Generator) -> Dict[str, object]:
        res = int(np.asarray(sample["img"]).shape[0])
        return self.apply(sample, self.sample_params(rng, res))

    @staticmethod
    def apply(sample: Dict[str, object], params: AugmentationParams,
              source: Optional[Tuple[np.ndarray, np.ndarray]] = None,
              res: int = CROP_SIZE) -> Dict[str, object]:
        """Apply `params` to a cropped `sample` (see the module docstring).

        `source=(image, crop_matrix)`: the full `HxWx3` uint8 image and the 2x3 map from its
        pixels to the un-augmented `res x res` crop; the image is then cut from it and
        `sample['img']` is not needed.
        """
        out = dict(sample)
        if source is None:
            img = np.asarray(sample["img"])
            if img.ndim != 3 or img.shape[0] != img.shape[1] or img.dtype != np.uint8:
                raise ValueError(f"augmentation expects a square HxWx3 uint8 crop, got "
                                 f"{img.shape} {img.dtype}")
            res = img.shape[0]
        geometric = params.rot != 0.0 or params.scale != 1.0
        warp = crop_augment_matrix(params.rot, params.scale, res)
        if source is not None:
            image, crop_matrix = source
            full = np.vstack([crop_matrix, [0.0, 0.0, 1.0]])
            img = cv2.warpAffine(image, warp @ full, (res, res), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        elif geometric:
            img = cv2.warpAffine(img, warp, (res, res), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        kp = np.asarray(sample["keypoints_2d"], dtype=np.float64)
        joints = sample.get("joints_3d")
        joints = None if joints is None else np.asarray(joints, dtype=np.float64)
        pose = sample.get("pose")
        pose = None if pose is None else np.asarray(pose, dtype=np.float64)
        if geometric:
            kp = rotate_scale_keypoints(kp, params.rot, params.scale)
        if params.rot != 0.0:
            joints = rotate_joints_3d(joints, params.rot) if joints is not None else None
            pose = rotate_global_orient(pose, params.rot) if pose is not None else None
        if params.flip:
            img = flip_image(img)
            kp = flip_keypoints(kp, x_offset=2.0 / res)
            joints = flip_keypoints(joints) if joints is not None else None
            pose = flip_pose(pose) if pose is not None else None
        if tuple(params.pixel_noise) != (1.0, 1.0, 1.0):
            img = jitter_colour(img, params.pixel_noise)
        if params.occluder is not None:
            img = params.occluder.apply(img)
        out["img"] = img
        out["keypoints_2d"] = kp.astype(np.float32)
        if joints is not None:
            out["joints_3d"] = joints.astype(np.float32)
        if pose is not None:
            out["pose"] = pose.astype(np.float32)
        return out
