"""SMPL's 24-joint kinematic tree and HKMR's six kinematic chains, without torch.

This module is the single source of truth for the tree: the training code
(`training.body.chains`) and the runtime (skeleton drawing in RViz) both read it.
"""
from __future__ import annotations

from typing import Dict, Tuple

NUM_JOINTS = 24

SMPL_JOINT_NAMES: Tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

# Parent of each joint (-1 for the pelvis), as in SMPL's kintree_table.
SMPL_PARENTS: Tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)

# (parent, child) pairs: the bones a skeleton marker draws.
BONES: Tuple[Tuple[int, int], ...] = tuple(
    (parent, child) for child, parent in enumerate(SMPL_PARENTS) if parent >= 0
)

# The paper's order: Θ = [θ_root, θ_head, θ_R.arm, θ_L.arm, θ_R.leg, θ_L.leg].
CHAIN_NAMES: Tuple[str, ...] = ("root", "head", "right_arm", "left_arm", "right_leg", "left_leg")

# Each chain ordered from its base to its end effector (SMPL joint indices).
CHAINS: Dict[str, Tuple[int, ...]] = {
    "root": (0, 3, 6, 9),                # pelvis, spine1, spine2, spine3
    "head": (12, 15),                    # neck, head
    "right_arm": (14, 17, 19, 21, 23),   # collar, shoulder, elbow, wrist, hand
    "left_arm": (13, 16, 18, 20, 22),
    "right_leg": (2, 5, 8, 11),          # hip, knee, ankle, foot
    "left_leg": (1, 4, 7, 10),
}

# RGB in [0, 1] per chain, used for markers and debug drawings.
CHAIN_COLOURS: Dict[str, Tuple[float, float, float]] = {
    "root": (0.95, 0.85, 0.20),
    "head": (0.95, 0.45, 0.10),
    "right_arm": (0.85, 0.20, 0.20),
    "left_arm": (0.20, 0.45, 0.90),
    "right_leg": (0.90, 0.35, 0.60),
    "left_leg": (0.20, 0.75, 0.45),
}

JOINT_TO_CHAIN: Tuple[str, ...] = tuple(
    next(name for name, joints in CHAINS.items() if j in joints) for j in range(NUM_JOINTS)
)

# A bone takes the colour of its child joint's chain.
BONE_COLOURS: Tuple[Tuple[float, float, float], ...] = tuple(
    CHAIN_COLOURS[JOINT_TO_CHAIN[child]] for _, child in BONES
)

# Index of the mirrored joint (left <-> right), for horizontal flips.
SMPL_FLIP_PERMUTATION: Tuple[int, ...] = tuple(
    SMPL_JOINT_NAMES.index(
        name.replace("left_", "@").replace("right_", "left_").replace("@", "right_")
    )
    for name in SMPL_JOINT_NAMES
)


def descendants(joint: int) -> Tuple[int, ...]:
    """All joints below `joint` in the tree (not including itself)."""
    out = []
    for j in range(NUM_JOINTS):
        p = SMPL_PARENTS[j]
        while p >= 0:
            if p == joint:
                out.append(j)
                break
            p = SMPL_PARENTS[p]
    return tuple(out)
