"""TensorRT backend (optional: tensorrt, and cuda-python or pycuda)."""
from __future__ import annotations

import importlib
from typing import Optional


def tensorrt_unavailable_reason() -> Optional[str]:
    """None when TensorRT can run here, else why not (package or GPU missing)."""
    try:
        importlib.import_module("tensorrt")
    except ImportError:
        return "tensorrt is not installed"
    return None
