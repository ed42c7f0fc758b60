"""TensorRT backend (optional: tensorrt 10 or 11, and cuda-python or pycuda).

The engine comes from `trt_build.build_cached_engine` (cached beside the ONNX or in the cache
folder, checked against its sidecar, rebuilt with progress output when stale, foreign or
corrupt). Inference uses the name-based tensor API of TensorRT 10/11: `set_input_shape`,
`set_tensor_address`, `execute_async_v3` on one CUDA stream, device buffers allocated once at the
profile's largest batch; every CUDA call is checked (cuda_runtime.cuda_call).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from hkmr_ros.inference.errors import EngineError, ModelError
from hkmr_ros.inference.model_info import ModelInfo

LOG = logging.getLogger("hkmr_ros.inference")


def tensorrt_unavailable_reason() -> Optional[str]:
    """None when TensorRT can run here, else why not (package, version, CUDA bindings or GPU missing)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return "tensorrt is not installed"
    try:
        major = int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return "tensorrt has no readable __version__"
    if major < 10:
        return f"TensorRT {trt.__version__} found, this runtime needs TensorRT 10 or 11"
    from hkmr_ros.inference.cuda_runtime import cuda_unavailable_reason
    return cuda_unavailable_reason()


def build_engine(onnx_path: Path, precision: str = "fp32", max_batch: int = 16, cache_dir: Optional[Path] = None,
                 force: bool = False, progress: bool = True) -> Path:
    """Build (or find valid in the cache) the engine for `onnx_path`; returns its path. For export tools."""
    from hkmr_ros.inference import trt_build
    path, status = trt_build.build_cached_engine(Path(onnx_path), precision=precision, max_batch=max_batch,
                                                 cache_dir=cache_dir, force=force, progress=progress)
    LOG.info("hkmr inference: TensorRT engine %s (%s)", path, status)
    return path


class TensorRTBackend:
    """One engine, one execution context, one stream. `run(image Bx3xSxS float32) -> {name: array}`."""

    name = "tensorrt"

    def __init__(self, engine_bytes: bytes, info: ModelInfo, trt: Any, cuda: Any, engine_path: Optional[Path] = None,
                 precision: str = "fp32") -> None:
        self.trt, self.cuda, self.info = trt, cuda, info
        self.engine_path = engine_path
        self.precision = precision
        self._buffers: Dict[str, int] = {}
        self._stream = None
        self.logger = trt.Logger(trt.Logger.WARNING)  # INFO is a page per engine
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialise the engine {engine_path or ''} (corrupt, or built by "
                              f"another TensorRT version)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        inputs = [n for n in names if modes[n] == trt.TensorIOMode.INPUT]
        if inputs != [info.input_name]:
            raise ModelError(f"engine inputs {inputs}, expected [{info.input_name!r}]")
        self.input_name = info.input_name
        missing = [n for n in info.outputs if n not in names]
        if missing:
            raise ModelError(f"engine has no outputs {missing} (tensors: {names})")
        self.output_names: List[str] = list(info.outputs)
        self.extra_outputs = [n for n in names if n not in inputs and n not in self.output_names]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        if list(hi)[1:] != [3, info.image_size, info.image_size]:
            raise ModelError(f"engine input {list(hi)} does not match the sidecar's input.image_size {info.image_size}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        self._allocate(list(hi))

    def _allocate(self, max_input_shape: List[int]) -> None:
        """Device buffers for every I/O tensor at the largest profile batch; addresses bound once."""
        self._stream = self.cuda.stream_create()
        if not self.context.set_input_shape(self.input_name, max_input_shape):
            raise EngineError(f"engine rejects input shape {max_input_shape}")
        for name in [self.input_name, *self.output_names, *self.extra_outputs]:
            shape = list(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"tensor {name!r} has unresolved shape {shape} at batch {self.max_batch}")
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self._buffers[name] = self.cuda.malloc(nbytes)
            if not self.context.set_tensor_address(name, self._buffers[name]):
                raise EngineError(f"set_tensor_address failed for {name!r}")

    def run(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        n = int(image.shape[0])
        if not self.min_batch <= n <= self.max_batch:
            raise EngineError(f"batch {n} outside the engine's profile {self.min_batch}..{self.max_batch}")
        host_in = np.ascontiguousarray(image, dtype=self.dtypes[self.input_name])
        if not self.context.set_input_shape(self.input_name, list(host_in.shape)):
            raise EngineError(f"engine rejects input shape {list(host_in.shape)}")
        self.cuda.htod(self._buffers[self.input_name], host_in, self._stream)
        if not self.context.execute_async_v3(self.cuda.stream_handle(self._stream)):
            raise EngineError("TensorRT execute_async_v3 failed")
        out: Dict[str, np.ndarray] = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=self.dtypes[name])
            self.cuda.dtoh(host, self._buffers[name], self._stream)
            out[name] = host
        self.cuda.synchronize(self._stream)
        return {k: v.astype(np.float32, copy=False) for k, v in out.items()}

    def close(self) -> None:
        """Free device buffers and the stream (idempotent)."""
        buffers, self._buffers = self._buffers, {}
        for ptr in buffers.values():
            self.cuda.free(ptr)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self.cuda.stream_destroy(stream)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass

    @classmethod
    def from_onnx(cls, info: ModelInfo, precision: str = "fp32", max_batch: int = 16, cache_dir: Optional[Path] = None,
                  progress: bool = True, trt: Any = None, cuda: Any = None) -> "TensorRTBackend":
        """Engine for `info.onnx_path` from the cache, or built now; one rebuild when TensorRT cannot
        deserialise a cached engine that passed the sidecar checks."""
        from hkmr_ros.inference import trt_build
        from hkmr_ros.inference.cuda_runtime import open_cuda

        trt = trt if trt is not None else trt_build.import_tensorrt()
        cuda = cuda if cuda is not None else open_cuda()
        kwargs = dict(precision=precision, max_batch=max_batch, cache_dir=cache_dir, progress=progress, trt=trt,
                      cuda=cuda)
        path, status = trt_build.build_cached_engine(info.onnx_path, **kwargs)
        try:
            backend = cls(path.read_bytes(), info, trt, cuda, engine_path=path, precision=precision)
        except EngineError as e:
            if status != "cached":
                raise
            LOG.warning("hkmr inference: %s; rebuilding", e)
            path, status = trt_build.build_cached_engine(info.onnx_path, reject_paths=[path],
                                                         reject_reason="TensorRT could not deserialise it", **kwargs)
            backend = cls(path.read_bytes(), info, trt, cuda, engine_path=path, precision=precision)
        backend.status = status
        LOG.info("hkmr inference: TensorRT engine %s (%s)", path, status)
        return backend
