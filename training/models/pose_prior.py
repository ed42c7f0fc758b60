"""The VAE pose prior of the paper's section 3.2 (after Pavlakos et al.'s VPoser).

The VAE encodes the 69-D body pose (23 joints, no global orientation) to a latent z and decodes
it back. Joints enter as 6-D rotations (the first two columns of each rotation matrix; Zhou et
al. 2019), which are continuous where axis-angle wraps around at pi, so 23 x 6 = 138 inputs.
After training only the encoder is kept: `PosePriorEncoder.kl(pose)` is KL(q(z | pose) || N(0, I)),
the loss that keeps a regressed pose plausible.

The saved file (`training/models/data/pose_vae.pt` by default) holds the encoder's state dict,
its configuration and how it was trained, nothing else.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from training.geometry import aa_to_rotmat, rot6d_to_rotmat, rotmat_to_rot6d

DEFAULT_PRIOR_PATH = Path(__file__).resolve().parent / "data" / "pose_vae.pt"
FILE_FORMAT = "hkmr_pose_prior"
FILE_VERSION = 1
NUM_BODY_JOINTS = 23
INPUT_DIM = NUM_BODY_JOINTS * 6
# logvar is kept in a range where exp() neither overflows nor makes the KL degenerate
LOGVAR_RANGE = (-12.0, 6.0)
# floor of the per-input std used to standardise the encoder's input (entries that never vary
# in the training data, such as SMPL's hands in SMPL-H files, would otherwise divide by zero)
MIN_INPUT_STD = 0.05


class PosePriorError(ValueError):
    """A pose prior file that exists but cannot be used (corrupt, or not a pose prior)."""


@dataclass
class PosePriorConfig:
    """Sizes of the VAE's two MLPs."""
    latent_dim: int = 32
    hidden_dim: int = 256
    num_hidden_layers: int = 2


def body_rotmats(pose: torch.Tensor) -> torch.Tensor:
    """The 23 body joints' rotation matrices, Bx23x3x3, from any accepted pose format.

    pose: Bx72 / Bx24x3 (axis-angle with global orientation), Bx69 / Bx23x3 (axis-angle, body
    only), Bx24x3x3 or Bx23x3x3 (rotation matrices). The global orientation is dropped.
    """
    shape = tuple(pose.shape)
    if pose.dim() == 2 and shape[1] in (72, 69):
        pose = pose.reshape(shape[0], -1, 3)
    if pose.dim() == 3 and pose.shape[1:] in ((24, 3), (23, 3)):
        pose = aa_to_rotmat(pose)
    if pose.dim() == 4 and pose.shape[1:] in ((24, 3, 3), (23, 3, 3)):
        return pose[:, -NUM_BODY_JOINTS:]
    raise ValueError(
        f"pose of shape {shape} not understood; expected Bx72 or Bx69 axis-angle, Bx24x3 or Bx23x3 "
        "axis-angle, or Bx24x3x3 or Bx23x3x3 rotation matrices")


def _mlp(in_dim: int, hidden_dim: int, num_hidden_layers: int, out_dim: int) -> nn.Sequential:
    layers = []
    for i in range(num_hidden_layers):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(hidden_dim if num_hidden_layers else in_dim, out_dim))
    return nn.Sequential(*layers)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample: BxZ, BxZ -> B (nats)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


class PosePriorEncoder(nn.Module):
    """q(z | pose): the part of the VAE kept after training."""

    def __init__(self, config: Optional[PosePriorConfig] = None):
        super().__init__()
        self.config = config or PosePriorConfig()
        c = self.config
        self.net = _mlp(INPUT_DIM, c.hidden_dim, c.num_hidden_layers, 2 * c.latent_dim)
        # input standardisation (VPoser normalises its input with batch norm): poses far from the
        # training data give large standardised inputs, hence a large KL
        self.register_buffer("input_mean", torch.zeros(INPUT_DIM))
        self.register_buffer("input_std", torch.ones(INPUT_DIM))
        self.training_info: Dict[str, Any] = {}  # how a loaded prior was trained (from its file)

    @staticmethod
    def features(pose: torch.Tensor) -> torch.Tensor:
        """The network's input before standardisation: Bx138 6-D rotations of the 23 body joints."""
        return rotmat_to_rot6d(body_rotmats(pose)).flatten(1)

    @torch.no_grad()
    def set_input_statistics(self, poses: torch.Tensor, min_std: float = MIN_INPUT_STD) -> None:
        """Standardise inputs with the mean and std (floored at `min_std`) of training poses."""
        x = self.features(poses).to(self.input_mean)
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0).clamp(min=min_std) if len(x) > 1 else torch.ones_like(x[0]))

    def forward(self, pose: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """pose (any format of `body_rotmats`) -> (mu BxZ, logvar BxZ)."""
        x = (self.features(pose) - self.input_mean) / self.input_std
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def kl(self, pose: torch.Tensor) -> torch.Tensor:
        """KL(q(z | pose) || N(0, I)) per sample, B: low for plausible poses."""
        return kl_divergence(*self(pose))


class PosePriorDecoder(nn.Module):
    """p(pose | z): z BxZ -> body rotation matrices Bx23x3x3 (through 6-D rotations)."""

    def __init__(self, config: Optional[PosePriorConfig] = None):
        super().__init__()
        c = config or PosePriorConfig()
        self.net = _mlp(c.latent_dim, c.hidden_dim, c.num_hidden_layers, INPUT_DIM)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return rot6d_to_rotmat(self.net(z).reshape(-1, NUM_BODY_JOINTS, 6))


class PoseVAE(nn.Module):
    """Encoder + decoder, trained with the standard objective (reconstruction + beta * KL)."""

    def __init__(self, config: Optional[PosePriorConfig] = None):
        super().__init__()
        self.config = config or PosePriorConfig()
        self.encoder = PosePriorEncoder(self.config)
        self.decoder = PosePriorDecoder(self.config)

    def forward(self, pose: torch.Tensor, sample: bool = True) -> Dict[str, torch.Tensor]:
        """pose -> dict(mu, logvar BxZ, z BxZ, rotmat Bx23x3x3 reconstruction).

        sample: draw z by re-parameterisation (training); False decodes the mean.
        """
        mu, logvar = self.encoder(pose)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return {"mu": mu, "logvar": logvar, "z": z, "rotmat": self.decoder(z)}

    def losses(self, pose: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Batch means of the reconstruction error (squared, summed over the 23 rotation
        matrices' entries) and of the KL divergence."""
        out = self(pose)
        target = body_rotmats(pose)
        recon = (out["rotmat"] - target).pow(2).flatten(1).sum(-1).mean()
        return {"reconstruction": recon, "kl": kl_divergence(out["mu"], out["logvar"]).mean()}


def save_pose_prior(encoder: PosePriorEncoder, path: Union[str, os.PathLike],
                    training: Optional[Dict[str, Any]] = None) -> Path:
    """Write the encoder only (state dict + config + training notes) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "config": asdict(encoder.config),
        "encoder": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
        "training": dict(training or {}),
    }, path)
    return path


def load_pose_prior(path: Optional[Union[str, os.PathLike]] = None,
                    map_location: Union[str, torch.device] = "cpu") -> PosePriorEncoder:
    """The trained encoder, frozen and in eval mode (gradients still flow to the pose).

    path: None = the package's default `training/models/data/pose_vae.pt`.
    """
    path = Path(path) if path is not None else DEFAULT_PRIOR_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"pose prior file not found: {path} (train one with `python -m training.train_prior "
            f"--out {path}`)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise PosePriorError(f"{path}: not a readable pose prior file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise PosePriorError(f"{path}: not a pose prior file (expected format {FILE_FORMAT!r})")
    if data.get("version") != FILE_VERSION:
        raise PosePriorError(f"{path}: pose prior file version {data.get('version')!r}, "
                             f"this code reads version {FILE_VERSION}")
    known = {f.name for f in fields(PosePriorConfig)}
    config_values = data.get("config")
    if not isinstance(config_values, dict) or set(config_values) - known:
        raise PosePriorError(f"{path}: invalid config {config_values!r} (known keys: {sorted(known)})")
    encoder = PosePriorEncoder(PosePriorConfig(**config_values))
    try:
        encoder.load_state_dict(data["encoder"])
    except (KeyError, RuntimeError) as e:
        raise PosePriorError(f"{path}: encoder weights do not match its config: {e}") from None
    encoder.training_info = data.get("training", {})
    return encoder.eval().requires_grad_(False).to(map_location)
