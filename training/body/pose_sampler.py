"""Random plausible human poses: anatomical joint angles within published ranges of motion.

Used to train the VAE pose prior when no motion-capture poses are at hand, and by the synthetic
data generator. A pose is drawn in three steps:

1. an *activity* is picked (standing, walking, sitting, reaching, crouching, bending, free); it
   couples the joints: left/right legs in anti-phase when walking (and each arm in anti-phase
   with its own leg), hips and knees flexed together when sitting or crouching, one shared bend
   split over the three spine segments, neck and head turning together, the collar following the
   arm once it is raised above the shoulder (scapulohumeral rhythm);
2. every joint's angles are expressed anatomically (flexion, abduction, rotation... in degrees)
   and clamped to the joint's range of motion (`RANGES_OF_MOTION`);
3. the anatomical angles become SMPL axis-angle rotations in each joint's local frame.

SMPL's rest pose is a T-pose, y up, the body facing +z, its left side on +x. The left-side axis
conventions below were checked by forward kinematics on the body model (tests/test_pose_prior.py):
knee flexion is +x (the ankle moves to -z), hip flexion -x, spine flexion +x, left elbow
flexion -y (the forearm moves forward from the T-pose), left shoulder abduction +z. The right
side is the mirror image (x -> -x), which maps an axis-angle (x, y, z) to (x, -y, -z).
The global orientation (joint 0) is always zero.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import roma
import torch

from training.body.chains import SMPL_JOINT_NAMES

# Ranges of motion in degrees, (min, max), for the left side; the right side mirrors them.
# Sources: American Academy of Orthopaedic Surgeons, "Joint Motion: Method of Measuring and
# Recording" (AAOS 1965; Greene & Heckman, "The Clinical Measurement of Joint Motion", 1994) and
# C. C. Norkin & D. J. White, "Measurement of Joint Motion: A Guide to Goniometry" (5th ed., 2016),
# adult averages. Where the two differ we take the smaller value. Positive = the first movement
# named, negative = its opposite. Spine and neck values are for the whole region; the sampler
# splits them over the SMPL segments (spine1/2/3; neck and head).
# SMPL's hands and feet are whole segments (no fingers or toes), so "hand" and "toes" are kept
# small on purpose: a fixed hand posture and toe joint moves barely show on the body mesh.
RANGES_OF_MOTION: Dict[str, Tuple[float, float]] = {
    "hip_flexion": (-30.0, 120.0),          # flexion 120 / extension 30
    "hip_abduction": (-30.0, 45.0),         # abduction 45 / adduction 30
    "hip_external_rotation": (-45.0, 45.0),  # external 45 / internal 45
    "knee_flexion": (0.0, 135.0),           # flexion 135 (AAOS), no hyperextension
    "ankle_dorsiflexion": (-50.0, 20.0),    # dorsiflexion 20 / plantarflexion 50
    "ankle_inversion": (-15.0, 35.0),       # inversion 35 / eversion 15
    "toe_extension": (-15.0, 30.0),         # metatarsophalangeal, kept small (see above)
    "collar_elevation": (-10.0, 30.0),      # shoulder-girdle elevation / depression
    "collar_protraction": (-15.0, 20.0),    # protraction / retraction
    "shoulder_elevation": (0.0, 180.0),     # flexion 180, abduction 180 (extension: see below)
    "shoulder_plane": (-90.0, 135.0),       # plane of elevation: 0 side, 90 front, -90 back
    "shoulder_external_rotation": (-70.0, 90.0),  # external 90 / internal 70
    "elbow_flexion": (0.0, 145.0),          # flexion 145 (Norkin & White 150, AAOS 146)
    "forearm_supination": (-80.0, 80.0),    # supination 80 / pronation 80
    "wrist_flexion": (-70.0, 80.0),         # flexion 80 / extension 70
    "wrist_ulnar_deviation": (-20.0, 30.0),  # ulnar 30 / radial 20
    "hand_flexion": (-10.0, 15.0),          # kept small (see above)
    "spine_flexion": (-25.0, 80.0),         # thoracolumbar flexion 80 / extension 25
    "spine_lateral_left": (-35.0, 35.0),    # lateral flexion 35 each side
    "spine_rotation_left": (-45.0, 45.0),   # rotation 45 each side
    "neck_flexion": (-45.0, 45.0),          # cervical flexion 45 / extension 45
    "neck_lateral_left": (-45.0, 45.0),     # lateral flexion 45
    "neck_rotation_left": (-60.0, 60.0),    # rotation 60 (AAOS)
}

# Shoulder elevation allowed in each plane: full 180 between abduction (0) and flexion (90);
# 60 of extension straight back (-90); across the body the arm meets the trunk (horizontal
# adduction 135 at 90 elevation). Piecewise linear in the plane angle.
_SHOULDER_PLANES = (-90.0, 0.0, 90.0, 135.0)
_SHOULDER_MAX_ELEVATION = (60.0, 180.0, 180.0, 100.0)

SIDE_ANGLES: Tuple[str, ...] = (
    "hip_flexion", "hip_abduction", "hip_external_rotation", "knee_flexion", "ankle_dorsiflexion",
    "ankle_inversion", "toe_extension", "collar_elevation", "collar_protraction",
    "shoulder_elevation", "shoulder_plane", "shoulder_external_rotation", "elbow_flexion",
    "forearm_supination", "wrist_flexion", "wrist_ulnar_deviation", "hand_flexion",
)
CENTRAL_ANGLES: Tuple[str, ...] = (
    "spine_flexion", "spine_lateral_left", "spine_rotation_left",
    "neck_flexion", "neck_lateral_left", "neck_rotation_left",
)

ACTIVITIES: Tuple[str, ...] = ("standing", "walking", "sitting", "reaching", "crouching", "bending", "free")
DEFAULT_ACTIVITY_WEIGHTS: Dict[str, float] = {
    "standing": 0.20, "walking": 0.20, "sitting": 0.15, "reaching": 0.15,
    "crouching": 0.10, "bending": 0.08, "free": 0.12,
}

# Share of the spine's bend per segment (spine1, spine2, spine3): lumbar segments bend most.
_SPINE_SHARE = (0.4, 0.3, 0.3)
# Share of the cervical motion at the neck and head joints.
_NECK_SHARE = (0.5, 0.5)

Angles = Dict[str, torch.Tensor]


def _joint(name: str) -> int:
    return SMPL_JOINT_NAMES.index(name)


def _axis_rot(angle_deg: torch.Tensor, axis: int) -> torch.Tensor:
    """Rotation matrices Nx3x3 about a coordinate axis (0=x, 1=y, 2=z) by angles N (degrees)."""
    rotvec = torch.zeros(*angle_deg.shape, 3, dtype=angle_deg.dtype)
    rotvec[..., axis] = torch.deg2rad(angle_deg)
    return roma.rotvec_to_rotmat(rotvec)


def _swing(elevation_deg: torch.Tensor, plane_deg: torch.Tensor) -> torch.Tensor:
    """Rotation Nx3x3 taking the left upper arm's T-pose direction (+x) to its sampled direction.

    The direction hangs down (-y) at elevation 0 and tilts towards the side (+x, plane 0), the
    front (+z, plane 90) or the back (-z, plane -90).
    """
    e, p = torch.deg2rad(elevation_deg), torch.deg2rad(plane_deg)
    d = torch.stack([torch.sin(e) * torch.cos(p), -torch.cos(e), torch.sin(e) * torch.sin(p)], -1)
    x = torch.zeros_like(d)
    x[..., 0] = 1.0
    axis = torch.cross(x, d, dim=-1)
    sin_a = axis.norm(dim=-1, keepdim=True)
    angle = torch.atan2(sin_a, d[..., :1])
    rotvec = torch.where(sin_a > 1e-8, axis / sin_a.clamp(min=1e-8) * angle, torch.zeros_like(axis))
    return roma.rotvec_to_rotmat(rotvec)


def shoulder_max_elevation(plane_deg: torch.Tensor) -> torch.Tensor:
    """Largest shoulder elevation (degrees) allowed in a plane of elevation (degrees), N -> N."""
    planes = torch.tensor(_SHOULDER_PLANES, dtype=plane_deg.dtype)
    limits = torch.tensor(_SHOULDER_MAX_ELEVATION, dtype=plane_deg.dtype)
    p = plane_deg.clamp(planes[0], planes[-1])
    i = torch.searchsorted(planes, p.contiguous(), right=True).clamp(1, len(planes) - 1)
    w = (p - planes[i - 1]) / (planes[i] - planes[i - 1])
    return limits[i - 1] + w * (limits[i] - limits[i - 1])


def clamp_to_ranges(angles: Angles) -> Angles:
    """Clamp every anatomical angle (degrees) to `RANGES_OF_MOTION`, plus the shoulder's coupling."""
    out = {}
    for key, value in angles.items():
        base = key.split(":")[-1]
        lo, hi = RANGES_OF_MOTION[base]
        out[key] = value.clamp(lo, hi)
    for side in ("left", "right"):
        plane = out[f"{side}:shoulder_plane"]
        out[f"{side}:shoulder_elevation"] = torch.minimum(
            out[f"{side}:shoulder_elevation"], shoulder_max_elevation(plane))
    return out


def _left_side_rotations(a: Angles, side: str) -> Dict[str, torch.Tensor]:
    """Rotation matrices of one side's joints, in the left side's axis convention."""
    g = lambda name: a[f"{side}:{name}"]  # noqa: E731
    return {
        "hip": _axis_rot(-g("hip_flexion"), 0) @ _axis_rot(g("hip_abduction"), 2)
        @ _axis_rot(g("hip_external_rotation"), 1),
        "knee": _axis_rot(g("knee_flexion"), 0),
        "ankle": _axis_rot(-g("ankle_dorsiflexion"), 0) @ _axis_rot(-g("ankle_inversion"), 2),
        "foot": _axis_rot(-g("toe_extension"), 0),
        "collar": _axis_rot(-g("collar_protraction"), 1) @ _axis_rot(g("collar_elevation"), 2),
        "shoulder": _swing(g("shoulder_elevation"), g("shoulder_plane"))
        @ _axis_rot(-g("shoulder_external_rotation"), 0),
        "elbow": _axis_rot(-g("elbow_flexion"), 1) @ _axis_rot(-g("forearm_supination"), 0),
        "wrist": _axis_rot(-g("wrist_flexion"), 2) @ _axis_rot(g("wrist_ulnar_deviation"), 1),
        "hand": _axis_rot(-g("hand_flexion"), 2),
    }


def angles_to_pose(angles: Angles) -> torch.Tensor:
    """Anatomical angles (degrees, keys `side:name` and central names, each N) -> Nx72 axis-angle.

    The angles are used as given (call `clamp_to_ranges` first to enforce the ranges).
    """
    n = angles["spine_flexion"].shape[0]
    pose = torch.zeros(n, 24, 3, dtype=angles["spine_flexion"].dtype)
    for side in ("left", "right"):
        mirror = torch.tensor([1.0, -1.0, -1.0] if side == "right" else [1.0, 1.0, 1.0])
        for part, rot in _left_side_rotations(angles, side).items():
            pose[:, _joint(f"{side}_{part}")] = roma.rotmat_to_rotvec(rot) * mirror
    for segment, share in zip(("spine1", "spine2", "spine3"), _SPINE_SHARE):
        rot = (_axis_rot(share * angles["spine_flexion"], 0)
               @ _axis_rot(-share * angles["spine_lateral_left"], 2)
               @ _axis_rot(share * angles["spine_rotation_left"], 1))
        pose[:, _joint(segment)] = roma.rotmat_to_rotvec(rot)
    for segment, share in zip(("neck", "head"), _NECK_SHARE):
        rot = (_axis_rot(share * angles["neck_flexion"], 0)
               @ _axis_rot(-share * angles["neck_lateral_left"], 2)
               @ _axis_rot(share * angles["neck_rotation_left"], 1))
        pose[:, _joint(segment)] = roma.rotmat_to_rotvec(rot)
    return pose.reshape(n, 72)


class PoseSampler:
    """Draws plausible SMPL body poses from a mixture of activities.

    activity_weights: relative frequency of each activity in `ACTIVITIES` (missing ones: 0).
    """

    def __init__(self, activity_weights: Optional[Dict[str, float]] = None):
        weights = dict(DEFAULT_ACTIVITY_WEIGHTS if activity_weights is None else activity_weights)
        unknown = sorted(set(weights) - set(ACTIVITIES))
        if unknown:
            raise ValueError(f"unknown activities {unknown}; known: {', '.join(ACTIVITIES)}")
        probs = torch.tensor([float(weights.get(a, 0.0)) for a in ACTIVITIES], dtype=torch.float64)
        if (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"activity weights must be >= 0 with a positive sum, got {weights}")
        self.activity_probs = probs / probs.sum()

    def sample(self, n: int, generator: Optional[torch.Generator] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """n poses: (Nx72 axis-angle float32, N activity indices into `ACTIVITIES`)."""
        if n < 0:
            raise ValueError(f"number of poses must be >= 0, got {n}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        activity = torch.multinomial(self.activity_probs, n, replacement=True, generator=g) if n else \
            torch.zeros(0, dtype=torch.long)
        angles = {k: torch.zeros(n, dtype=torch.float64) for k in _all_angle_keys()}
        for index, name in enumerate(ACTIVITIES):
            rows = (activity == index).nonzero(as_tuple=True)[0]
            if len(rows) == 0:
                continue
            part = _ACTIVITY_FUNCTIONS[name](_Draw(len(rows), g))
            part = _add_everyday_variation(part, _Draw(len(rows), g))
            for key, value in part.items():
                angles[key][rows] = value
        pose = angles_to_pose(clamp_to_ranges(angles)) if n else torch.zeros(0, 72, dtype=torch.float64)
        return pose.float(), activity


def sample_poses(n: int, generator: Union[torch.Generator, int, None] = None,
                 activity_weights: Optional[Dict[str, float]] = None) -> torch.Tensor:
    """n plausible poses, Nx72 axis-angle (SMPL order, zero global orientation).

    generator: a torch.Generator or an integer seed (None = seed 0); the same seed gives the
    same poses.
    """
    if generator is None or isinstance(generator, int):
        generator = torch.Generator().manual_seed(0 if generator is None else int(generator))
    return PoseSampler(activity_weights).sample(n, generator)[0]


# ---------------------------------------------------------------------------------------------
# Activities: each returns anatomical angles (degrees) for n samples; unset angles stay neutral.

def _all_angle_keys() -> Tuple[str, ...]:
    return tuple(f"{s}:{k}" for s in ("left", "right") for k in SIDE_ANGLES) + CENTRAL_ANGLES


class _Draw:
    """Random draws of n values (float64) from one generator."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.g = n, generator

    def uniform(self, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(self.n, generator=self.g, dtype=torch.float64)

    def normal(self, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        return mean + std * torch.randn(self.n, generator=self.g, dtype=torch.float64)

    def coin(self, p: float) -> torch.Tensor:
        return (torch.rand(self.n, generator=self.g, dtype=torch.float64) < p).double()

    def sign(self) -> torch.Tensor:
        return 2.0 * self.coin(0.5) - 1.0


def _both(angles: Angles, name: str, left: torch.Tensor, right: torch.Tensor) -> None:
    angles[f"left:{name}"] = left
    angles[f"right:{name}"] = right


def _symmetric(angles: Angles, d: _Draw, name: str, mean: float, shared_std: float,
               side_std: float) -> None:
    """Left and right share a common value plus a smaller per-side deviation."""
    common = d.normal(mean, shared_std)
    _both(angles, name, common + d.normal(0, side_std), common + d.normal(0, side_std))


def _relaxed_arms(a: Angles, d: _Draw, elevation: float = 12.0) -> None:
    """Arms hanging near the body, slightly away from it, elbows a little bent."""
    _symmetric(a, d, "shoulder_elevation", elevation, 6.0, 6.0)
    _symmetric(a, d, "shoulder_plane", 20.0, 20.0, 15.0)
    _symmetric(a, d, "shoulder_external_rotation", 0.0, 10.0, 8.0)
    _symmetric(a, d, "elbow_flexion", 15.0, 10.0, 8.0)


def _standing(d: _Draw) -> Angles:
    a: Angles = {}
    weight_left = d.normal(0.0, 1.0)  # weight shift: the loaded leg straight, the other relaxed
    _both(a, "hip_flexion", 3.0 + 4.0 * weight_left + d.normal(0, 3), 3.0 - 4.0 * weight_left + d.normal(0, 3))
    _both(a, "knee_flexion", (6.0 + 6.0 * weight_left).abs() + d.normal(0, 2).abs(),
          (6.0 - 6.0 * weight_left).abs() + d.normal(0, 2).abs())
    _symmetric(a, d, "hip_abduction", 4.0, 3.0, 3.0)
    _symmetric(a, d, "hip_external_rotation", 8.0, 6.0, 5.0)
    arms_up = d.coin(0.35)  # gesturing or arms out (A/T-pose-like) in a third of the cases
    _relaxed_arms(a, d)
    for side in ("left", "right"):
        raise_arm = arms_up * d.coin(0.7)
        a[f"{side}:shoulder_elevation"] = a[f"{side}:shoulder_elevation"] + raise_arm * d.uniform(20, 90)
        a[f"{side}:shoulder_plane"] = a[f"{side}:shoulder_plane"] * (1 - raise_arm) + raise_arm * d.uniform(-10, 90)
        a[f"{side}:elbow_flexion"] = a[f"{side}:elbow_flexion"] + raise_arm * d.uniform(0, 90)
    a["spine_flexion"] = d.normal(2.0, 5.0)
    a["spine_lateral_left"] = -3.0 * weight_left + d.normal(0, 3)
    a["spine_rotation_left"] = d.normal(0, 8)
    return a


def _walking(d: _Draw) -> Angles:
    """Gait cycle: legs in anti-phase, each arm in anti-phase with its own leg."""
    a: Angles = {}
    phase = d.uniform(0.0, 2 * math.pi)
    stride = d.uniform(0.6, 1.3)  # slow walk .. brisk walk
    for side, p in (("left", phase), ("right", phase + math.pi)):
        a[f"{side}:hip_flexion"] = 10.0 + stride * 22.0 * torch.sin(p) + d.normal(0, 3)
        # the knee flexes during swing, when the hip moves forward through neutral
        a[f"{side}:knee_flexion"] = 5.0 + stride * 50.0 * torch.cos(p).clamp(min=0) ** 1.5 + d.normal(0, 3).abs()
        a[f"{side}:ankle_dorsiflexion"] = 5.0 * torch.sin(p) - 10.0 * torch.cos(p).clamp(min=0) + d.normal(0, 3)
        a[f"{side}:hip_abduction"] = d.normal(3.0, 2.0)
        a[f"{side}:hip_external_rotation"] = d.normal(5.0, 4.0)
        forward = -stride * 20.0 * torch.sin(p) + d.normal(0, 4)  # opposite to the same-side leg
        sideways = d.normal(10.0, 4.0)
        a[f"{side}:shoulder_elevation"] = torch.sqrt(forward ** 2 + sideways ** 2)
        a[f"{side}:shoulder_plane"] = torch.rad2deg(torch.atan2(forward, sideways))
        a[f"{side}:elbow_flexion"] = 15.0 + stride * 10.0 * (1 + torch.sin(-p)) + d.normal(0, 5)
        a[f"{side}:shoulder_external_rotation"] = d.normal(0, 8)
    a["spine_rotation_left"] = 6.0 * stride * torch.sin(phase) + d.normal(0, 2)
    a["spine_flexion"] = d.normal(4.0, 3.0)
    return a


def _sitting(d: _Draw) -> Angles:
    a: Angles = {}
    _symmetric(a, d, "hip_flexion", 85.0, 8.0, 5.0)
    _symmetric(a, d, "knee_flexion", 90.0, 12.0, 12.0)
    _symmetric(a, d, "hip_abduction", 8.0, 6.0, 4.0)
    _symmetric(a, d, "hip_external_rotation", 10.0, 8.0, 6.0)
    _symmetric(a, d, "ankle_dorsiflexion", 0.0, 8.0, 5.0)
    crossed = d.coin(0.15)  # one leg crossed over the other
    leg = d.coin(0.5)
    for side, on in (("left", leg), ("right", 1 - leg)):
        c = crossed * on
        a[f"{side}:hip_flexion"] = a[f"{side}:hip_flexion"] + c * 15.0
        a[f"{side}:hip_abduction"] = a[f"{side}:hip_abduction"] * (1 - c) - c * 20.0
        a[f"{side}:knee_flexion"] = a[f"{side}:knee_flexion"] * (1 - c) + c * d.uniform(85, 110)
    # hands on the lap or on armrests
    _symmetric(a, d, "shoulder_elevation", 30.0, 10.0, 6.0)
    _symmetric(a, d, "shoulder_plane", 70.0, 20.0, 10.0)
    _symmetric(a, d, "elbow_flexion", 70.0, 15.0, 10.0)
    _symmetric(a, d, "shoulder_external_rotation", -15.0, 10.0, 8.0)
    a["spine_flexion"] = d.normal(10.0, 10.0)
    a["spine_rotation_left"] = d.normal(0, 8)
    a["neck_flexion"] = d.normal(10.0, 10.0)
    return a


def _reaching(d: _Draw) -> Angles:
    """One or both arms raised towards a target; the trunk leans and turns towards it."""
    a: Angles = {}
    _standing_legs(a, d)
    _relaxed_arms(a, d)
    both = d.coin(0.4)
    left_reaches = d.coin(0.5)
    target_plane = d.uniform(-20.0, 110.0)
    target_elevation = d.uniform(60.0, 175.0)
    for side, reaches in (("left", torch.maximum(both, left_reaches)),
                          ("right", torch.maximum(both, 1 - left_reaches))):
        a[f"{side}:shoulder_elevation"] = (1 - reaches) * a[f"{side}:shoulder_elevation"] + reaches * (
            target_elevation + d.normal(0, 10))
        a[f"{side}:shoulder_plane"] = (1 - reaches) * a[f"{side}:shoulder_plane"] + reaches * (
            target_plane + d.normal(0, 10))
        a[f"{side}:elbow_flexion"] = (1 - reaches) * a[f"{side}:elbow_flexion"] + reaches * d.uniform(0, 50)
        a[f"{side}:shoulder_external_rotation"] = d.normal(0, 20)
    toward_left = (1 - both) * (2 * left_reaches - 1)
    a["spine_lateral_left"] = toward_left * d.uniform(0, 15) + d.normal(0, 3)
    a["spine_rotation_left"] = toward_left * d.uniform(0, 20) + d.normal(0, 5)
    a["spine_flexion"] = d.normal(0.0, 8.0)
    a["neck_flexion"] = -(target_elevation - 90.0) * 0.3 + d.normal(0, 8)
    return a


def _crouching(d: _Draw) -> Angles:
    """Squat or kneel-like crouch: deep hip and knee flexion with ankle dorsiflexion."""
    a: Angles = {}
    depth = d.uniform(0.4, 1.0)
    _symmetric(a, d, "hip_flexion", 0.0, 0.0, 6.0)
    _symmetric(a, d, "knee_flexion", 0.0, 0.0, 8.0)
    for side in ("left", "right"):
        a[f"{side}:hip_flexion"] = a[f"{side}:hip_flexion"] + 115.0 * depth
        a[f"{side}:knee_flexion"] = a[f"{side}:knee_flexion"] + 135.0 * depth
        a[f"{side}:ankle_dorsiflexion"] = 18.0 * depth + d.normal(0, 4)
    _symmetric(a, d, "hip_abduction", 15.0, 8.0, 4.0)
    _symmetric(a, d, "hip_external_rotation", 15.0, 8.0, 5.0)
    # arms forward for balance or resting on the knees
    _symmetric(a, d, "shoulder_elevation", 55.0, 20.0, 10.0)
    _symmetric(a, d, "shoulder_plane", 75.0, 15.0, 10.0)
    _symmetric(a, d, "elbow_flexion", 45.0, 25.0, 10.0)
    a["spine_flexion"] = 30.0 * depth + d.normal(0, 8)
    a["neck_flexion"] = -15.0 * depth + d.normal(0, 8)
    return a


def _bending(d: _Draw) -> Angles:
    """Bending forward to pick something up: spine and hip flexion, knees mostly straight."""
    a: Angles = {}
    amount = d.uniform(0.3, 1.0)
    _symmetric(a, d, "hip_flexion", 0.0, 0.0, 5.0)
    _symmetric(a, d, "knee_flexion", 12.0, 10.0, 5.0)
    for side in ("left", "right"):
        a[f"{side}:hip_flexion"] = a[f"{side}:hip_flexion"] + 70.0 * amount
    _symmetric(a, d, "hip_abduction", 6.0, 4.0, 3.0)
    # arms hang towards the floor: with the trunk bent forward that is forward in the body frame
    _symmetric(a, d, "shoulder_elevation", 0.0, 10.0, 8.0)
    for side in ("left", "right"):
        a[f"{side}:shoulder_elevation"] = a[f"{side}:shoulder_elevation"] + 100.0 * amount
    _symmetric(a, d, "shoulder_plane", 85.0, 10.0, 8.0)
    _symmetric(a, d, "elbow_flexion", 15.0, 10.0, 8.0)
    a["spine_flexion"] = 60.0 * amount + d.normal(0, 8)
    a["spine_rotation_left"] = d.normal(0, 8)
    a["neck_flexion"] = -25.0 * amount + d.normal(0, 8)
    return a


def _free(d: _Draw) -> Angles:
    """Each angle spread over its range around neutral (truncated by the clamp), independently:
    covers what the other activities miss."""
    a: Angles = {}
    for key in _all_angle_keys():
        lo, hi = RANGES_OF_MOTION[key.split(":")[-1]]
        if key.endswith(("shoulder_elevation", "shoulder_plane", "elbow_flexion", "knee_flexion")):
            a[key] = d.uniform(lo, 0.8 * hi)
        else:
            a[key] = d.normal(0.0, 0.25 * (hi - lo))
    return a


def _standing_legs(a: Angles, d: _Draw) -> None:
    _symmetric(a, d, "hip_flexion", 3.0, 4.0, 5.0)
    _symmetric(a, d, "knee_flexion", 6.0, 4.0, 5.0)
    _symmetric(a, d, "hip_abduction", 5.0, 3.0, 3.0)
    _symmetric(a, d, "hip_external_rotation", 8.0, 6.0, 5.0)
    for side in ("left", "right"):
        a[f"{side}:knee_flexion"] = a[f"{side}:knee_flexion"].abs()


def _add_everyday_variation(a: Angles, d: _Draw) -> Angles:
    """Small angles every activity shares: head and neck, hands, feet, collars, forearms."""
    defaults = {
        "neck_flexion": (5.0, 10.0), "neck_lateral_left": (0.0, 6.0), "neck_rotation_left": (0.0, 20.0),
        "spine_lateral_left": (0.0, 3.0),
    }
    for key, (mean, std) in defaults.items():
        extra = d.normal(0.0, std)
        a[key] = (a[key] + extra) if key in a else (mean + extra)
    side_defaults = {
        "ankle_dorsiflexion": (0.0, 5.0), "ankle_inversion": (3.0, 4.0), "toe_extension": (0.0, 5.0),
        "collar_elevation": (0.0, 4.0), "collar_protraction": (0.0, 4.0),
        "forearm_supination": (0.0, 20.0), "wrist_flexion": (5.0, 12.0),
        "wrist_ulnar_deviation": (5.0, 6.0), "hand_flexion": (5.0, 5.0),
    }
    for name, (mean, std) in side_defaults.items():
        for side in ("left", "right"):
            key = f"{side}:{name}"
            if key not in a:
                a[key] = d.normal(mean, std)
    for name in ("hip_flexion", "hip_abduction", "hip_external_rotation", "knee_flexion",
                 "shoulder_elevation", "shoulder_plane", "shoulder_external_rotation", "elbow_flexion"):
        for side in ("left", "right"):
            a.setdefault(f"{side}:{name}", torch.zeros(d.n, dtype=torch.float64))
    for key in CENTRAL_ANGLES:
        a.setdefault(key, torch.zeros(d.n, dtype=torch.float64))
    for side in ("left", "right"):
        # scapulohumeral rhythm: above the shoulder the collar (scapula) takes part of the lift
        # (the arm's total elevation stays as sampled: the shoulder gives up what the collar takes)
        lift = 0.2 * (a[f"{side}:shoulder_elevation"] - 90.0).clamp(min=0)
        a[f"{side}:collar_elevation"] = a[f"{side}:collar_elevation"] + lift
        a[f"{side}:shoulder_elevation"] = a[f"{side}:shoulder_elevation"] - lift
    return a


_ACTIVITY_FUNCTIONS = {
    "standing": _standing, "walking": _walking, "sitting": _sitting, "reaching": _reaching,
    "crouching": _crouching, "bending": _bending, "free": _free,
}
