"""HMR's regressor (Kanazawa et al. 2018): iterative error feedback, the paper's baseline.

At each of T iterations a structure-agnostic MLP reads [Phi, Theta, beta, cam] and predicts the
residual of all parameters at once: two 1024-unit fully-connected layers with ReLU and dropout 0.5
(HMR's; SPIN's copy drops the ReLUs), then a linear head initialised with small-gain Xavier so the
first estimate is the mean.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from training.body.chains import NUM_JOINTS
from training.models.mean_params import SMALL_GAIN, NUM_BETAS, mean_params, regressor_outputs, rotation_dim


class HMRRegressor(nn.Module):
    """Features `BxF` -> per iteration rotmat, axis-angle pose, betas and camera (T = `iters`)."""

    def __init__(self, feat_dim: int, iters: int = 3, hidden_dim: int = 1024, dropout: float = 0.5,
                 rotation: str = "aa") -> None:
        super().__init__()
        for name, value in (("feat_dim", feat_dim), ("iters", iters), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.rotation = rotation
        self.rot_dim = rotation_dim(rotation)
        self.iters = iters
        self.pose_dim = NUM_JOINTS * self.rot_dim
        params_dim = self.pose_dim + NUM_BETAS + 3
        self.mlp = nn.Sequential(
            nn.Linear(feat_dim + params_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden_dim, params_dim)
        nn.init.xavier_uniform_(self.head.weight, gain=SMALL_GAIN)
        nn.init.zeros_(self.head.bias)
        mean = mean_params(rotation)
        self.register_buffer("mean_state", torch.cat([mean["pose_state"].flatten(), mean["betas"], mean["cam"]]))

    def forward(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """features `BxF` -> dict of `rotmat` BxTx24x3x3, `pose` BxTx72, `betas` BxTx10, `cam` BxTx3."""
        return regressor_outputs(*self._iterate(features), self.rotation)

    def final_estimate(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The last iteration only, as exported: `pose_state` Bx24xR, `betas` Bx10, `cam` Bx3."""
        states, betas, cams = self._iterate(features)
        return {"pose_state": states[-1], "betas": betas[-1], "cam": cams[-1]}

    def _iterate(self, features: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """Per iteration: pose states Bx24xR, betas Bx10, cameras Bx3."""
        batch = features.shape[0]
        state = self.mean_state.expand(batch, -1)
        pose_states: List[torch.Tensor] = []
        betas: List[torch.Tensor] = []
        cams: List[torch.Tensor] = []
        for _ in range(self.iters):
            state = state + self.head(self.mlp(torch.cat([features, state], dim=-1)))
            pose_states.append(state[:, : self.pose_dim].reshape(batch, NUM_JOINTS, self.rot_dim))
            betas.append(state[:, self.pose_dim: self.pose_dim + NUM_BETAS])
            cams.append(state[:, self.pose_dim + NUM_BETAS:])
        return pose_states, betas, cams
