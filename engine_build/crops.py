"""Rendered person crops for validating an exported graph on images like the training data.

The synthetic generator (training.datasets.synthetic) renders body-model people at 224x224 with
the EGL renderer; each crop is normalised with the encoder's mean/std and resized to the network
input exactly as training and evaluation do (`training.datasets.augment.resize_images`).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from torch import nn

RENDER_SEED = 2026


def rendered_rgb(count: int, body_model: nn.Module, seed: int = RENDER_SEED) -> np.ndarray:
    """`Nx224x224x3` uint8 RGB renders of random synthetic people (needs EGL; raises RuntimeError without)."""
    try:
        from training.datasets.synthetic import SyntheticGenerator

        generator = SyntheticGenerator(body_model, seed=seed)
        samples = generator.generate(list(range(count)))
    except Exception as e:  # moderngl / EGL errors have many types
        raise RuntimeError(f"cannot render synthetic crops here ({type(e).__name__}: {e}); "
                           "validate with --rendered 0") from e
    return np.stack([s["img"] for s in samples])


def normalise_crops(rgb: np.ndarray, image_size: int,
                    normalisation: Tuple[Sequence[float], Sequence[float]]) -> torch.Tensor:
    """`NxHxWx3` uint8 RGB -> `Nx3xSxS` network input: (rgb / 255 - mean) / std, then resized to S."""
    from training.datasets.augment import normalise_batch, resize_images

    images = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)
    mean, std = normalisation
    return resize_images(normalise_batch(images, mean, std), image_size).contiguous()


def rendered_crops(count: int, image_size: int, body_model: nn.Module,
                   normalisation: Tuple[Sequence[float], Sequence[float]], seed: int = RENDER_SEED) -> torch.Tensor:
    """`Nx3xSxS` normalised, resized renders."""
    return normalise_crops(rendered_rgb(count, body_model, seed), image_size, normalisation)
