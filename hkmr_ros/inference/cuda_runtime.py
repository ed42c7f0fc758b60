"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python or pycuda.

cuda-python: `cuda.bindings.runtime` (13.x, also in late 12.x), else `cuda.cudart` (12.x). Every
call returns `(error, *values)`; `cuda_call` raises EngineError naming the call and the error, as
`cuda_call` in NVIDIA's samples/python/common_runtime.py does. pycuda raises by itself; its
errors are wrapped the same way. Imported lazily: nothing here runs without a TensorRT backend.
"""
from __future__ import annotations

import importlib
from typing import Any, Optional, Tuple

import numpy as np

from hkmr_ros.inference.errors import BackendUnavailableError, EngineError


def import_cudart() -> Any:
    """cuda-python's runtime module, new layout first. Raises ImportError when neither imports."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


def cuda_call(cudart: Any, result: Any, what: str) -> Any:
    """Check a cuda-python result `(err, *values)`; returns the value (or tuple of values)."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            name = cudart.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # the error name is a nicety; the code is what matters
            name = str(err)
        raise EngineError(f"CUDA call {what} failed: {name} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class CudaPython:
    """cuda-python runtime: device memory, one stream, copies."""

    name = "cuda-python"

    def __init__(self, cudart: Any = None, device: int = 0) -> None:
        self.rt = cudart if cudart is not None else import_cudart()
        count = self.call(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1:
            raise BackendUnavailableError("no CUDA device found")
        if device >= count:
            raise BackendUnavailableError(f"CUDA device {device} requested, {count} present")
        self.call(self.rt.cudaSetDevice(device), "cudaSetDevice")
        self.device = device

    def call(self, result: Any, what: str) -> Any:
        return cuda_call(self.rt, result, what)

    def device_info(self) -> Tuple[str, str]:
        """(GPU name, compute capability 'major.minor')."""
        prop = self.call(self.rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = prop.name
        name = name.split(b"\0", 1)[0].decode() if isinstance(name, (bytes, bytearray)) else str(name)
        return name.strip(), f"{prop.major}.{prop.minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self.call(self.rt.cudaMalloc(max(1, nbytes)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.call(self.rt.cudaFree(ptr), "cudaFree")

    def stream_create(self) -> Any:
        return self.call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_destroy(self, stream: Any) -> None:
        self.call(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def synchronize(self, stream: Any) -> None:
        self.call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream), "cudaMemcpyAsync(HtoD)")

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, stream), "cudaMemcpyAsync(DtoH)")


class PyCuda:
    """pycuda (its own context on the device): the same surface as CudaPython."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        self.drv = importlib.import_module("pycuda.driver")
        self._wrap(self.drv.init, "cuInit")
        count = self._wrap(self.drv.Device.count, "cuDeviceGetCount")
        if count < 1:
            raise BackendUnavailableError("no CUDA device found")
        self.dev = self._wrap(lambda: self.drv.Device(device), "cuDeviceGet")
        self.ctx = self._wrap(self.dev.retain_primary_context, "cuDevicePrimaryCtxRetain")
        self._wrap(self.ctx.push, "cuCtxPushCurrent")
        self._allocations: dict = {}

    def _wrap(self, fn: Any, what: str) -> Any:
        try:
            return fn()
        except Exception as e:  # pycuda.driver.Error and subclasses
            raise EngineError(f"CUDA call {what} failed: {e}") from e

    def device_info(self) -> Tuple[str, str]:
        major, minor = self.dev.compute_capability()
        return self.dev.name(), f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        mem = self._wrap(lambda: self.drv.mem_alloc(max(1, nbytes)), "cuMemAlloc")
        self._allocations[int(mem)] = mem
        return int(mem)

    def free(self, ptr: int) -> None:
        mem = self._allocations.pop(ptr, None)
        if mem is not None:
            self._wrap(mem.free, "cuMemFree")

    def stream_create(self) -> Any:
        return self._wrap(self.drv.Stream, "cuStreamCreate")

    def stream_destroy(self, stream: Any) -> None:
        return None  # freed with the object

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def synchronize(self, stream: Any) -> None:
        self._wrap(stream.synchronize, "cuStreamSynchronize")

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        self._wrap(lambda: self.drv.memcpy_htod_async(ptr, host, stream), "cuMemcpyHtoDAsync")

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        self._wrap(lambda: self.drv.memcpy_dtoh_async(host, ptr, stream), "cuMemcpyDtoHAsync")


def open_cuda(device: int = 0) -> Any:
    """cuda-python if installed, else pycuda. Raises BackendUnavailableError when neither works."""
    errors = []
    try:
        return CudaPython(device=device)
    except ImportError as e:
        errors.append(f"cuda-python not installed ({e})")
    except EngineError as e:
        errors.append(f"cuda-python: {e}")
    try:
        return PyCuda(device=device)
    except ImportError as e:
        errors.append(f"pycuda not installed ({e})")
    except EngineError as e:
        errors.append(f"pycuda: {e}")
    raise BackendUnavailableError("no usable CUDA runtime: " + "; ".join(errors))


def cuda_unavailable_reason(device: int = 0) -> Optional[str]:
    """None when a CUDA device can be opened, else why not."""
    try:
        open_cuda(device)
    except BackendUnavailableError as e:
        return str(e)
    return None
