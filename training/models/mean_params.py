"""The regressors' starting point (mean pose, shape, camera) and the pose state they iterate on.

Both regressors refine a pose *state*: per joint either an axis-angle vector (`'aa'`, 3 numbers,
as in the paper) or the 6-D rotation of Zhou et al. 2019 (`'6d'`, 6 numbers, continuous).
Updates are added to the state in that space; `state_to_rotmat` turns it into rotations.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch

from training.body.chains import NUM_JOINTS
from training.geometry import aa_to_rotmat, rot6d_to_rotmat, rotmat_to_aa, rotmat_to_rot6d

ROTATION_DIMS: Dict[str, int] = {"aa": 3, "6d": 6}
NUM_BETAS = 10
# Weak-perspective (s, tx, ty): a person filling ~90% of the normalised crop, centred.
MEAN_CAM = (0.9, 0.0, 0.0)
# Xavier gain of the regressors' output layers (HMR/SPIN): small, so the first estimate is ~ the mean.
SMALL_GAIN = 0.01


def rotation_dim(rotation: str) -> int:
    """Numbers per joint of a pose state: 3 for 'aa', 6 for '6d'."""
    if rotation not in ROTATION_DIMS:
        raise ValueError(f"unknown rotation {rotation!r}; known: {', '.join(ROTATION_DIMS)}")
    return ROTATION_DIMS[rotation]


def mean_pose_aa() -> torch.Tensor:
    """Mean pose `24x3` axis-angle: body joints at rest, global orientation a rotation by pi about x.

    SMPL is y-up and faces +z; rotated by pi about x it is y-down and faces -z, i.e. upright in an
    image (y down) and facing a camera that looks down +z.
    """
    pose = torch.zeros(NUM_JOINTS, 3)
    pose[0, 0] = math.pi
    return pose


def mean_params(rotation: str = "aa") -> Dict[str, torch.Tensor]:
    """The initial estimate: `pose_state` 24xR in the `rotation` representation, `betas` 10, `cam` 3."""
    rotation_dim(rotation)
    pose = mean_pose_aa()
    state = pose if rotation == "aa" else rotmat_to_rot6d(aa_to_rotmat(pose))
    return {
        "pose_state": state,
        "betas": torch.zeros(NUM_BETAS),
        "cam": torch.tensor(MEAN_CAM),
    }


def state_to_rotmat(state: torch.Tensor, rotation: str) -> torch.Tensor:
    """Pose state `...xR` -> rotation matrices `...x3x3`."""
    return aa_to_rotmat(state) if rotation == "aa" else rot6d_to_rotmat(state)


def regressor_outputs(
    pose_states: List[torch.Tensor], betas: List[torch.Tensor], cams: List[torch.Tensor], rotation: str
) -> Dict[str, torch.Tensor]:
    """The output dict of docs/architecture.md from T per-iteration estimates.

    pose_states: T tensors Bx24xR; betas: T tensors Bx10; cams: T tensors Bx3.
    Returns `rotmat` BxTx24x3x3, `pose` BxTx72 (axis-angle), `betas` BxTx10, `cam` BxTx3.
    """
    state = torch.stack(pose_states, dim=1)
    rotmat = state_to_rotmat(state, rotation)
    pose = state if rotation == "aa" else rotmat_to_aa(rotmat)
    return {
        "rotmat": rotmat,
        "pose": pose.flatten(2),
        "betas": torch.stack(betas, dim=1),
        "cam": torch.stack(cams, dim=1),
    }
