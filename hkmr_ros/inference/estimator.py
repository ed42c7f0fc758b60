"""The Estimator: person crops in, one MeshEstimate per crop out, on the backend that can run here.

    est = load_estimator()                                  # the shipped default, backend "auto"
    est = load_estimator("model.onnx", backend="onnxruntime", threads=2)
    meshes = est.estimate(crops)                            # crops: NxHxWx3 uint8 RGB, or a list

Backends: "onnxruntime" (CPU), "onnxruntime-cuda" (ONNX Runtime's CUDA provider), "tensorrt"
(an engine built from the ONNX on first use and cached, see engine_cache), and "auto": TensorRT,
then ONNX Runtime CUDA, then ONNX Runtime CPU, the first that can run; one log line says which
runs and why the ones before it could not. The network is run once before `load_estimator`
returns (warm-up), so the first camera frame does not pay for allocation and kernel selection.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from hkmr_ros.inference import preprocess
from hkmr_ros.inference.engine_cache import PRECISIONS
from hkmr_ros.inference.errors import BackendUnavailableError, EstimatorError, ModelError, ModelNotFoundError
from hkmr_ros.inference.model_info import ModelInfo, load_display_faces, load_faces, read_model_info

LOG = logging.getLogger("hkmr_ros.inference")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = PACKAGE_DIR / "data" / "hkmr_default.onnx"
REGENERATE_COMMAND = "python -m engine_build"  # from the repository root, with the training extras
BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime")


@dataclass
class MeshEstimate:
    """One crop's result, float32. Frames and units as the ONNX sidecar describes them.

    pose (72,) SMPL axis-angle, joint 0 the global orientation; rotmat (24, 3, 3); betas (10,);
    cam (3,) weak perspective (s, tx, ty) in the crop normalised to [-1, 1]; joints (24, 3) the
    body model's posed joints in metres, camera-aligned axes (None only for graphs exported
    without the body model, sidecar format hkmr-onnx/1); vertices (V, 3) when the graph has them.
    """
    pose: np.ndarray
    rotmat: np.ndarray
    betas: np.ndarray
    cam: np.ndarray
    joints: Optional[np.ndarray] = None
    vertices: Optional[np.ndarray] = None


class Estimator:
    """Preprocessing (exactly training's) + one backend. Use `load_estimator` to make one."""

    def __init__(self, info: ModelInfo, backend: object, faces: Optional[np.ndarray] = None,
                 reason: str = "", display_faces: Optional[np.ndarray] = None) -> None:
        self.info = info
        self.backend = backend
        self.backend_name: str = getattr(backend, "name")
        self.image_size: int = info.image_size
        self.body_model_name: str = info.body_model_name
        self.faces = faces  # Fx3, the full mesh
        self.display_faces = display_faces  # Fx3 over the same vertices, decimated for markers
        self.output_names: List[str] = list(getattr(backend, "output_names"))
        self.reason = reason
        self.warmup_ms: Optional[float] = None

    @property
    def marker_faces(self) -> Optional[np.ndarray]:
        """The triangles to draw as markers: the display mesh when the model ships one (a full
        mesh is about 80,000 marker points per person), else the full mesh."""
        return self.display_faces if self.display_faces is not None else self.faces

    def preprocess(self, crops: preprocess.Crops) -> np.ndarray:
        """Crops -> `Nx3xSxS` float32 network input (see hkmr_ros.inference.preprocess)."""
        return preprocess.to_network_input(crops, self.image_size, self.info.mean, self.info.std,
                                           self.info.crop_size)

    def run_network(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """`Nx3xSxS` float32 -> {output: N x ...}, in chunks of the backend's largest batch."""
        limit = getattr(self.backend, "max_batch", None) or len(image)
        parts = [self.backend.run(np.ascontiguousarray(image[i:i + limit])) for i in range(0, len(image), limit)]
        out = {n: np.concatenate([p[n] for p in parts]) if len(parts) > 1 else parts[0][n]
               for n in self.output_names}
        for name, value in out.items():
            want = self.info.outputs[name]
            ok = (value.shape[0] == len(image) and len(value.shape) == len(want) + 1
                  and all(w is None or w == v for w, v in zip(want, value.shape[1:])))
            if not ok:
                raise ModelError(f"{self.info.onnx_path}: output {name!r} has shape {list(value.shape)} for "
                                 f"{len(image)} crops, expected [N, {', '.join(str(w or 'V') for w in want)}]")
        return out

    def estimate_arrays(self, crops: preprocess.Crops) -> Dict[str, np.ndarray]:
        """Crops -> {output name: N x ...} float32 arrays (the batched form of `estimate`)."""
        return self.run_network(self.preprocess(crops))

    def estimate(self, crops: preprocess.Crops) -> List[MeshEstimate]:
        """Crops (`NxHxWx3` or a list of `HxWx3`, uint8 RGB) -> one MeshEstimate per crop, in order."""
        out = self.estimate_arrays(crops)
        n = len(out["pose"])

        def item(name: str, i: int) -> Optional[np.ndarray]:
            return np.array(out[name][i], dtype=np.float32) if name in out else None

        return [MeshEstimate(pose=item("pose", i), rotmat=item("rotmat", i), betas=item("betas", i),
                             cam=item("cam", i), joints=item("joints", i), vertices=item("vertices", i))
                for i in range(n)]

    def close(self) -> None:
        """Release the backend's resources (TensorRT: device buffers and stream). Idempotent."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Estimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warmup(self, runs: int = 1) -> float:
        """Run a mid-grey crop `runs` times; returns the first run's milliseconds."""
        crop = np.full((1, self.info.crop_size, self.info.crop_size, 3), 128, dtype=np.uint8)
        first = 0.0
        for k in range(max(1, runs)):
            start = time.perf_counter()
            self.estimate_arrays(crop)
            if k == 0:
                first = 1000.0 * (time.perf_counter() - start)
        self.warmup_ms = first
        return first


def resolve_model(model: Union[str, Path, None]) -> Path:
    if model is None:
        if not DEFAULT_MODEL.is_file():
            raise ModelNotFoundError(f"default model not found: {DEFAULT_MODEL}; regenerate it from the "
                                     f"repository root with: {REGENERATE_COMMAND}")
        return DEFAULT_MODEL
    path = Path(model)
    if not path.is_file():
        raise ModelNotFoundError(f"ONNX model not found: {path}")
    return path


def _onnxruntime(info: ModelInfo, device: str, threads: Optional[int]) -> object:
    from hkmr_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
    return OnnxRuntimeBackend(info.onnx_path, info.input_name, list(info.outputs), device=device, threads=threads,
                              image_size=info.image_size)


def _tensorrt(info: ModelInfo, precision: str, max_batch: int, cache_dir: Optional[Path],
              progress: bool) -> object:
    from hkmr_ros.inference import tensorrt_backend
    why = tensorrt_backend.tensorrt_unavailable_reason()
    if why is not None:
        raise BackendUnavailableError(f"tensorrt backend: {why}")
    return tensorrt_backend.TensorRTBackend.from_onnx(info, precision=precision, max_batch=max_batch,
                                                      cache_dir=cache_dir, progress=progress)


def make_backend(info: ModelInfo, backend: str, threads: Optional[int] = None, precision: str = "fp32",
                 max_batch: int = 16, cache_dir: Optional[Path] = None, progress: bool = True):
    """(backend object, why it was chosen). Raises BackendUnavailableError for a named backend
    that cannot run here; "auto" falls through to the next and says why."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if backend == "onnxruntime":
        return _onnxruntime(info, "cpu", threads), "requested"
    if backend == "onnxruntime-cuda":
        return _onnxruntime(info, "cuda", threads), "requested"
    if backend == "tensorrt":
        chosen = _tensorrt(info, precision, max_batch, cache_dir, progress)
        return chosen, f"requested; {precision} engine {getattr(chosen, 'status', '')}"
    skipped: List[str] = []
    from hkmr_ros.inference.tensorrt_backend import tensorrt_unavailable_reason
    why = tensorrt_unavailable_reason()
    if why is None:
        try:
            chosen = _tensorrt(info, precision, max_batch, cache_dir, progress)
            return chosen, f"auto: TensorRT and a GPU found; {precision} engine {getattr(chosen, 'status', '')}"
        except EstimatorError as e:
            skipped.append(f"tensorrt failed ({e})")
        except ValueError:
            raise  # a bad setting, not a missing capability
        except Exception as e:  # an unexpected TensorRT/CUDA failure must not stop a robot that has a CPU
            skipped.append(f"tensorrt failed ({type(e).__name__}: {e})")
    else:
        skipped.append(f"tensorrt: {why}")
    try:
        return _onnxruntime(info, "cuda", threads), "auto: " + "; ".join(skipped)
    except BackendUnavailableError as e:
        skipped.append(str(e))
    return _onnxruntime(info, "cpu", threads), "auto: " + "; ".join(skipped)


def load_estimator(model: Union[str, Path, None] = None, backend: str = "auto", threads: Optional[int] = None,
                   precision: str = "fp32", max_batch: int = 16, cache_dir: Union[str, Path, None] = None,
                   warmup: bool = True, progress: bool = True) -> Estimator:
    """An Estimator for `model` (an .onnx with its .json sidecar; None = the shipped default).

    threads: ONNX Runtime intra-op threads (None: the usable CPUs, at most 4). precision, max_batch,
    cache_dir, progress: TensorRT engine settings (the engine's optimisation profile is batch
    1..max_batch; larger batches run in chunks). Raises ModelNotFoundError (FileNotFoundError),
    SidecarError, ModelError or BackendUnavailableError, all EstimatorError.
    """
    path = resolve_model(model)
    info = read_model_info(path)
    faces = load_faces(info)
    chosen, reason = make_backend(info, backend, threads=threads, precision=precision, max_batch=max_batch,
                                  cache_dir=Path(cache_dir) if cache_dir is not None else None, progress=progress)
    est = Estimator(info, chosen, faces=faces, reason=reason, display_faces=load_display_faces(info))
    detail = f", {chosen.threads} threads" if getattr(chosen, "threads", None) else ""
    if warmup:
        est.warmup()
        detail += f", warm-up {est.warmup_ms:.0f} ms"
    LOG.info("hkmr inference: %s runs %s (%s%s)", est.backend_name, path.name, reason, detail)
    return est
