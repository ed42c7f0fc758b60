"""Crops -> the network's input batch, exactly as in training, in numpy.

Training makes every person crop at 224x224 (hkmr_ros.crops), turns it into float32
`(rgb / 255 - mean) / std`, then resizes 224 -> S (the network's side) with
`torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)`.
That resize is separable and linear: along each axis it is one `out x in` matrix of triangle
filter weights (stretched by the scale factor when shrinking, so every input pixel counts: the
"antialias"), each row normalised to sum to one. `resample_matrix` builds the same matrix as
PyTorch's CPU kernel (aten/src/ATen/native/cpu/UpSampleKernel.cpp, `_compute_weights_aa`);
`to_network_input` applies `Wy @ X @ Wx^T` per channel.

A crop that is not 224x224 is first resized to 224x224 the same way (PyTorch applied twice);
the two matrices are multiplied once and cached per input size. Non-square crops are stretched
to the square, so cut crops square (`hkmr_ros.crops.crop_image` does). Because each matrix row
sums to one, normalising before or after the resize gives the same result (up to float32
rounding); normalising first is what training does.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from hkmr_ros.crops import CROP_SIZE
from hkmr_ros.inference.errors import InputError

Crops = Union[np.ndarray, Sequence[np.ndarray]]
FLOAT_DTYPES = (np.float32, np.float64, np.float16)


def resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """`out_size x in_size` weights of PyTorch's float32 bilinear antialias resize along one axis.

    scale = in / out; output pixel i is centred at `scale * (i + 0.5)` in input pixels; the
    triangle filter has half-width `support = max(scale, 1)` input pixels; taps are the input
    pixels j in [int(center - support + 0.5), int(center + support + 0.5)) clipped to the image,
    weighted `max(0, 1 - |j - center + 0.5| / max(scale, 1))` and normalised to sum to one.
    Every step rounds to float32 (or widens to double) where PyTorch's C++ does for a float32
    tensor, so the weights are bit-identical to its kernel's, not just equal to ~1e-6.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    if in_size == out_size:
        return np.eye(out_size, dtype=np.float32)
    f32 = np.float32
    scale = f32(f32(in_size) / f32(out_size))
    support = scale if scale >= 1.0 else f32(1.0)
    invscale = f32(1.0 / float(scale)) if scale >= 1.0 else f32(1.0)
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    for i in range(out_size):
        center = f32(float(scale) * (i + 0.5))
        lo = max(int(float(f32(center - support)) + 0.5), 0)  # int() truncates toward 0, as static_cast
        hi = min(int(float(f32(center + support)) + 0.5), in_size)
        taps = np.arange(lo, hi)
        x = ((taps.astype(np.float32) - center).astype(np.float64) + 0.5) * float(invscale)
        x = np.abs(x.astype(np.float32)).astype(np.float64)
        w = np.where(x < 1.0, 1.0 - x, 0.0).astype(np.float32)
        total = f32(0.0)
        for v in w:  # sequential float32 sum, as the kernel's loop
            total = f32(total + v)
        if total != 0.0:
            w = (w / total).astype(np.float32)
        weights[i, lo:hi] = w
    return weights


@lru_cache(maxsize=64)
def _axis_matrix(in_size: int, out_size: int, crop_size: int) -> np.ndarray:
    """float32 `out x in`: in -> crop_size (when different) then crop_size -> out, composed in float64."""
    m = resample_matrix(crop_size, out_size).astype(np.float64) @ resample_matrix(in_size, crop_size)
    m = m.astype(np.float32)
    m.setflags(write=False)
    return m


def axis_matrices(height: int, width: int, out_size: int,
                  crop_size: int = CROP_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """(Wy `S x H`, Wx `S x W`) float32, cached per input size."""
    return _axis_matrix(height, out_size, crop_size), _axis_matrix(width, out_size, crop_size)


def describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return type(x).__name__


def check_crop(crop: object, where: str) -> np.ndarray:
    """One crop `HxWx3`: uint8 RGB, or float (0..255 RGB, finite). Raises InputError naming the problem."""
    if not isinstance(crop, np.ndarray):
        raise InputError(f"{where}: expected a numpy array HxWx3 uint8 RGB, got {describe(crop)}")
    if crop.ndim != 3:
        raise InputError(f"{where}: expected an HxWx3 RGB image, got {crop.ndim} dimensions (shape {crop.shape})")
    if crop.shape[2] != 3:
        hint = " (channels first? pass HxWx3)" if crop.shape[0] == 3 else ""
        raise InputError(f"{where}: expected 3 channels (RGB) in the last axis, got {crop.shape[2]} "
                         f"(shape {crop.shape}){hint}")
    if crop.shape[0] < 1 or crop.shape[1] < 1:
        raise InputError(f"{where}: empty image of shape {crop.shape}")
    if crop.dtype == np.uint8:
        return crop
    if crop.dtype in FLOAT_DTYPES:
        if not np.isfinite(crop).all():
            bad = int(np.count_nonzero(~np.isfinite(crop)))
            raise InputError(f"{where}: {bad} NaN or infinite values in a float image")
        return crop
    raise InputError(f"{where}: expected dtype uint8 (or float32/float64 in 0..255), got {crop.dtype}")


def check_crops(crops: Crops) -> List[np.ndarray]:
    """A batch `NxHxWx3` array or a sequence of `HxWx3` arrays -> list of checked crops."""
    if isinstance(crops, np.ndarray):
        if crops.ndim == 3:
            raise InputError(f"expected a batch NxHxWx3 or a list of HxWx3 crops, got one image of shape "
                             f"{crops.shape}; pass [crop] or crop[None]")
        if crops.ndim != 4:
            raise InputError(f"expected a batch NxHxWx3, got shape {crops.shape}")
        items: Sequence[object] = list(crops)
    elif isinstance(crops, (list, tuple)):
        items = crops
    else:
        raise InputError(f"expected a batch NxHxWx3 array or a list of HxWx3 arrays, got {describe(crops)}")
    if len(items) == 0:
        raise InputError("empty batch: no crops given")
    return [check_crop(c, f"crop {i}") for i, c in enumerate(items)]


def normalise(crops: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """`NxHxWx3` uint8/float (0..255) -> `Nx3xHxW` float32 `(rgb / 255 - mean) / std` (training's op order).

    The channel axis moves first while the data is still small (uint8), so every float pass is contiguous.
    """
    x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2)).astype(np.float32)  # always a new array
    np.divide(x, np.float32(255.0), out=x)
    np.subtract(x, mean.astype(np.float32).reshape(3, 1, 1), out=x)
    np.divide(x, std.astype(np.float32).reshape(3, 1, 1), out=x)
    return x


def resize(x: np.ndarray, out_size: int, crop_size: int = CROP_SIZE) -> np.ndarray:
    """`NxCxHxW` float32 -> `NxCxSxS`: PyTorch's antialiased bilinear, via 224 when H, W != 224.

    Width first (one GEMM over all rows), then height (one small GEMM per channel).
    """
    n, c, h, w = x.shape
    if h == out_size and w == out_size and (h == crop_size or out_size == crop_size):
        return np.ascontiguousarray(x, dtype=np.float32)
    wy, wx = axis_matrices(h, w, out_size, crop_size)
    y = (np.ascontiguousarray(x, dtype=np.float32).reshape(n * c * h, w) @ wx.T).reshape(n, c, h, out_size)
    return np.ascontiguousarray(np.matmul(wy, y), dtype=np.float32)


def to_network_input(crops: Crops, image_size: int, mean: Sequence[float], std: Sequence[float],
                     crop_size: int = CROP_SIZE) -> np.ndarray:
    """Crops -> `Nx3xSxS` float32, the ONNX `image` input; order kept. Raises InputError on bad crops."""
    checked = check_crops(crops)
    mean_a = np.asarray(mean, dtype=np.float32)
    std_a = np.asarray(std, dtype=np.float32)
    if isinstance(crops, np.ndarray):
        return resize(normalise(crops, mean_a, std_a), image_size, crop_size)
    groups: Dict[Tuple[Tuple[int, ...], str], List[int]] = {}
    for i, c in enumerate(checked):
        groups.setdefault((c.shape, c.dtype.str), []).append(i)
    if len(groups) == 1:
        return resize(normalise(np.stack(checked), mean_a, std_a), image_size, crop_size)
    out = np.empty((len(checked), 3, image_size, image_size), dtype=np.float32)
    for idx in groups.values():
        out[idx] = resize(normalise(np.stack([checked[i] for i in idx]), mean_a, std_a), image_size, crop_size)
    return out
