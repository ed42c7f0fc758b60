"""ONNX Runtime backend: CPU, or the CUDA execution provider when the installed build has it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from hkmr_ros.inference.errors import BackendUnavailableError, ModelError, ModelNotFoundError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """Intra-op threads: the CPUs this process may use, at most 4 (more rarely helps a small
    network at batch 1 and takes cores from the camera driver and ROS executors)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, available))


def cuda_provider_available() -> bool:
    import onnxruntime
    return CUDA in onnxruntime.get_available_providers()


class OnnxRuntimeBackend:
    """One InferenceSession. `run(image Bx3xSxS float32) -> {output name: BxK...}`."""

    def __init__(self, onnx_path: Path, input_name: str, output_names: Sequence[str], device: str = "cpu",
                 threads: Optional[int] = None, cuda_device_id: int = 0, image_size: Optional[int] = None) -> None:
        import onnxruntime

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ModelNotFoundError(f"ONNX model not found: {onnx_path}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
        if device == "cuda":
            if not cuda_provider_available():
                raise BackendUnavailableError(
                    f"onnxruntime-cuda: this onnxruntime ({onnxruntime.__version__}) has no {CUDA} "
                    f"(providers: {onnxruntime.get_available_providers()}); install onnxruntime-gpu")
            providers = [(CUDA, {"device_id": cuda_device_id}), CPU]
        elif device == "cpu":
            providers = [CPU]
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ModelError(f"{onnx_path}: onnxruntime cannot load it: {type(e).__name__}: {e}") from e
        if device == "cuda" and CUDA not in self.session.get_providers():
            raise BackendUnavailableError(f"onnxruntime-cuda: {CUDA} failed to initialise (no usable GPU?)")
        self.threads = options.intra_op_num_threads
        self.device = device
        self.name = "onnxruntime-cuda" if device == "cuda" else "onnxruntime"
        inputs = {i.name: i for i in self.session.get_inputs()}
        if input_name not in inputs:
            raise ModelError(f"{onnx_path}: no input named {input_name!r} (graph inputs: {list(inputs)})")
        if len(inputs) != 1:
            raise ModelError(f"{onnx_path}: expected one input, the graph has {list(inputs)}")
        self.input_shape = list(inputs[input_name].shape)
        if image_size is not None:
            static = [d for d in self.input_shape[1:]]
            want = [3, image_size, image_size]
            if len(static) != 3 or any(isinstance(d, int) and d != w for d, w in zip(static, want)):
                raise ModelError(f"{onnx_path}: graph input {input_name!r} has shape {self.input_shape}, but the "
                                 f"sidecar's input.image_size is {image_size} (expected [batch, 3, {image_size}, "
                                 f"{image_size}])")
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in output_names if n not in graph_outputs]
        if missing:
            raise ModelError(f"{onnx_path}: outputs {missing} named by the sidecar are not in the graph "
                             f"(graph outputs: {sorted(graph_outputs)})")
        self.input_name = input_name
        self.output_names = list(output_names)
        self.max_batch: Optional[int] = None  # any batch

    def run(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: image})
        return dict(zip(self.output_names, values))
