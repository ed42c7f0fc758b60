"""Joint sets derived from a body model's output: names and how each joint is built.

Every joint is the mean of one or more *keypoints*: SMPL's 24 joints, smplx's vertex
keypoints (face, feet, finger tips) and the head-top vertex. No dataset regressor is
needed, so the sets work the same for SMPL's own file and the open anny-smpl default.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from hkmr_ros.skeleton import SMPL_JOINT_NAMES

# smplx's extra vertex keypoints, in the order its VertexJointSelector appends them.
VERTEX_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    "left_thumb", "left_index", "left_middle", "left_ring", "left_pinky",
    "right_thumb", "right_index", "right_middle", "right_ring", "right_pinky",
)

# smplx's vertex_ids keys for the names above (same order).
SMPLX_VERTEX_ID_KEYS: Tuple[str, ...] = (
    "nose", "reye", "leye", "rear", "lear",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky",
    "rthumb", "rindex", "rmiddle", "rring", "rpinky",
)

# The keypoints a joint set may draw on: smplx's `joints` output (SMPL joints, then the
# vertex keypoints) followed by the head-top vertex.
KEYPOINT_NAMES: Tuple[str, ...] = SMPL_JOINT_NAMES + VERTEX_KEYPOINT_NAMES + ("head_top",)

_HIPS = ("left_hip", "right_hip")
_SHOULDERS = ("left_shoulder", "right_shoulder")

# Human3.6M's 17 evaluation joints, built from SMPL joints and vertices (no H36M regressor
# is shipped): pelvis = mid-hips, spine = mid-torso, thorax = mid-shoulders,
# neck/nose = between SMPL's head joint and the nose, head = head-top vertex.
H36M17: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("pelvis", _HIPS),
    ("right_hip", ("right_hip",)),
    ("right_knee", ("right_knee",)),
    ("right_ankle", ("right_ankle",)),
    ("left_hip", ("left_hip",)),
    ("left_knee", ("left_knee",)),
    ("left_ankle", ("left_ankle",)),
    ("spine", _HIPS + _SHOULDERS),
    ("thorax", _SHOULDERS),
    ("neck_nose", ("head", "nose")),
    ("head", ("head_top",)),
    ("left_shoulder", ("left_shoulder",)),
    ("left_elbow", ("left_elbow",)),
    ("left_wrist", ("left_wrist",)),
    ("right_shoulder", ("right_shoulder",)),
    ("right_elbow", ("right_elbow",)),
    ("right_wrist", ("right_wrist",)),
)
_H36M = dict(H36M17)

# LSP's 14 joints (the first 14 of SPIN's J24).
LSP14: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("right_ankle", ("right_ankle",)),
    ("right_knee", ("right_knee",)),
    ("right_hip", ("right_hip",)),
    ("left_hip", ("left_hip",)),
    ("left_knee", ("left_knee",)),
    ("left_ankle", ("left_ankle",)),
    ("right_wrist", ("right_wrist",)),
    ("right_elbow", ("right_elbow",)),
    ("right_shoulder", ("right_shoulder",)),
    ("left_shoulder", ("left_shoulder",)),
    ("left_elbow", ("left_elbow",)),
    ("left_wrist", ("left_wrist",)),
    ("neck", ("neck",)),
    ("head_top", ("head_top",)),
)

# The 12 limb joints of LSP-14 (hips, knees, ankles, shoulders, elbows, wrists; no neck, no head):
# the joints that off-the-shelf 2D/3D pose estimators share with SMPL, so methods that predict
# different skeletons can be compared on them (aligned on the hips' midpoint, like LSP-14).
LIMBS12: Tuple[Tuple[str, Tuple[str, ...]], ...] = LSP14[:12]

# SPIN's J24: LSP-14, then pelvis, thorax, spine, jaw, head (the H36M-derived ones), face.
SPIN24: Tuple[Tuple[str, Tuple[str, ...]], ...] = LSP14 + (
    ("pelvis", _H36M["pelvis"]),
    ("thorax", _H36M["thorax"]),
    ("spine", _H36M["spine"]),
    ("jaw", _H36M["neck_nose"]),
    ("head", _H36M["head"]),
    ("nose", ("nose",)),
    ("left_eye", ("left_eye",)),
    ("right_eye", ("right_eye",)),
    ("left_ear", ("left_ear",)),
    ("right_ear", ("right_ear",)),
)

# MS-COCO's 17 keypoints.
COCO17: Tuple[Tuple[str, Tuple[str, ...]], ...] = tuple(
    (name, (name,)) for name in (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    )
)

SMPL24: Tuple[Tuple[str, Tuple[str, ...]], ...] = tuple((name, (name,)) for name in SMPL_JOINT_NAMES)

JOINT_SETS: Dict[str, Tuple[Tuple[str, Tuple[str, ...]], ...]] = {
    "smpl24": SMPL24,
    "spin24": SPIN24,
    "h36m17": H36M17,
    "coco17": COCO17,
    "lsp14": LSP14,
    "limbs12": LIMBS12,
}


def joint_names(name: str) -> Tuple[str, ...]:
    """Names of the joints of one set, in order."""
    return tuple(joint for joint, _ in _definition(name))


def joint_set_matrix(name: str) -> torch.Tensor:
    """Averaging weights from KEYPOINT_NAMES to one joint set: J x len(KEYPOINT_NAMES), rows sum to 1."""
    rows = _definition(name)
    matrix = torch.zeros(len(rows), len(KEYPOINT_NAMES))
    for j, (_, sources) in enumerate(rows):
        for source in sources:
            matrix[j, KEYPOINT_NAMES.index(source)] += 1.0 / len(sources)
    return matrix


def _definition(name: str) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    if name not in JOINT_SETS:
        raise ValueError(f"unknown joint set {name!r}; known joint sets: {', '.join(JOINT_SETS)}")
    return JOINT_SETS[name]
