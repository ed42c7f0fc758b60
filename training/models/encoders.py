"""Image encoders: torchvision backbones cut before their classifier, giving the pooled feature Phi.

ResNet-50 is the paper's (2048-D); ResNet-18/34 and MobileNetV3 are lighter choices for robots.
Nothing is downloaded: networks start random, or from an ImageNet state dict in a local file
(torchvision's own checkpoint files, with or without the classifier weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torchvision
from torch import nn

# name -> (torchvision constructor, the classifier attribute to cut, pooled feature size)
ENCODERS: Dict[str, Tuple[Callable[..., nn.Module], str, int]] = {
    "resnet18": (torchvision.models.resnet18, "fc", 512),
    "resnet34": (torchvision.models.resnet34, "fc", 512),
    "resnet50": (torchvision.models.resnet50, "fc", 2048),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, "classifier", 576),
    "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large, "classifier", 960),
}


class Encoder(nn.Module):
    """A backbone whose classifier is an identity: image `Bx3xHxW` -> globally pooled `BxF`."""

    def __init__(self, backbone: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)


def load_imagenet_weights(backbone: nn.Module, path: Union[str, Path], name: str, head: str) -> None:
    """Load a torchvision state dict from `path` into `backbone`; classifier keys are optional."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of {name}, got {type(state).__name__}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not hold {name} weights: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}")


def build_encoder(name: str, weights: Optional[Union[str, Path]] = None) -> Encoder:
    """Encoder `name` (see ENCODERS), random or with ImageNet weights from the local file `weights`."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    constructor, head, out_dim = ENCODERS[name]
    backbone = constructor(weights=None)
    if weights is not None:
        try:
            load_imagenet_weights(backbone, weights, name, head)
        except RuntimeError as e:  # shape mismatch inside load_state_dict
            raise ValueError(f"{weights} does not hold {name} weights: {e}") from None
    setattr(backbone, head, nn.Identity())
    return Encoder(backbone, out_dim)
