"""HKMR's six kinematic chains as torch index tensors (the tree itself lives in hkmr_ros.skeleton)."""
from __future__ import annotations

from typing import Tuple

import torch

from hkmr_ros.skeleton import (  # noqa: F401  (re-exported for the training code)
    BONES,
    CHAIN_NAMES,
    CHAINS,
    NUM_JOINTS,
    SMPL_FLIP_PERMUTATION,
    SMPL_JOINT_NAMES,
    SMPL_PARENTS,
    descendants,
)

CHILD_CHAIN_NAMES: Tuple[str, ...] = CHAIN_NAMES[1:]
MAX_CHILD_CHAIN_LENGTH = max(len(CHAINS[c]) for c in CHILD_CHAIN_NAMES)


def chain_indices(name: str) -> torch.Tensor:
    """SMPL joint indices of one chain, base first: (K_c,) long."""
    if name not in CHAINS:
        raise KeyError(f"unknown chain {name!r}; expected one of {CHAIN_NAMES}")
    return torch.tensor(CHAINS[name], dtype=torch.long)


def padded_child_chains() -> Tuple[torch.Tensor, torch.Tensor]:
    """The five child chains padded to the longest one, for batched computation.

    Returns (indices, mask), both 5 x K_max: indices are SMPL joints (0 where padded),
    mask is True on real joints.
    """
    k = MAX_CHILD_CHAIN_LENGTH
    idx = torch.zeros(len(CHILD_CHAIN_NAMES), k, dtype=torch.long)
    mask = torch.zeros(len(CHILD_CHAIN_NAMES), k, dtype=torch.bool)
    for c, name in enumerate(CHILD_CHAIN_NAMES):
        joints = CHAINS[name]
        idx[c, : len(joints)] = torch.tensor(joints)
        mask[c, : len(joints)] = True
    return idx, mask
