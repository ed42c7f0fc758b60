"""Encoder + regressor: an image crop to SMPL parameters at every iteration; built from ModelConfig."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

from training.config import ModelConfig
from training.models.encoders import build_encoder
from training.models.hkmr_regressor import HKMRRegressor
from training.models.hmr_regressor import HMRRegressor
from training.models.mean_params import ROTATION_DIMS

REGRESSORS: Dict[str, type] = {"hkmr": HKMRRegressor, "hmr": HMRRegressor}


class MeshRegressor(nn.Module):
    """image `Bx3xHxW` -> the regressor's dict (`rotmat` BxTx24x3x3, `pose` BxTx72, `betas` BxTx10, `cam` BxTx3)."""

    def __init__(self, encoder: nn.Module, regressor: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.regressor = regressor

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.regressor(self.encoder(image))


def build_model(cfg: ModelConfig) -> MeshRegressor:
    """The network a ModelConfig describes; unknown names and keyword arguments raise ValueError."""
    if cfg.regressor not in REGRESSORS:
        raise ValueError(f"unknown regressor {cfg.regressor!r}; known: {', '.join(REGRESSORS)}")
    if cfg.rotation not in ROTATION_DIMS:
        raise ValueError(f"unknown rotation {cfg.rotation!r}; known: {', '.join(ROTATION_DIMS)}")
    regressor_cls = REGRESSORS[cfg.regressor]
    known = [p for p in inspect.signature(regressor_cls.__init__).parameters
             if p not in ("self", "feat_dim", "rotation")]
    unknown = sorted(set(cfg.regressor_kwargs) - set(known))
    if unknown:
        raise ValueError(f"unknown regressor_kwargs {unknown} for {cfg.regressor!r}; known: {', '.join(known)}")
    encoder = build_encoder(cfg.encoder, cfg.encoder_weights)
    regressor = regressor_cls(encoder.out_dim, rotation=cfg.rotation, **cfg.regressor_kwargs)
    return MeshRegressor(encoder, regressor)


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """A training checkpoint or a released model.pt as its dict, the network's weights under
    'model'. FileNotFoundError names a missing file; anything else raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    # weights_only=False: train.py's checkpoints also hold RNG states; a checkpoint is a trusted file
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a training checkpoint: expected a dict with a 'model' state dict")
    return ckpt
