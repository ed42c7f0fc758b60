"""TensorRT engine builder (TensorRT 10 and 11), torch-free: used by the runtime on first use and as a CLI.

    python -m hkmr_ros.inference.trt_build hkmr_ros/data/hkmr_default.onnx --precision fp16 --max-batch 16

The engine has one optimisation profile for the `image` input, batch 1..max (tuned at `--opt-batch`),
a persistent timing cache (`<engine folder>/tensorrt.timing-cache` by default, so rebuilds and
other precisions reuse kernel timings), progress output through `IProgressMonitor`, and a JSON
sidecar beside it (see engine_cache) that the runtime checks before using it.

Precision:
- fp32: the ONNX as is, with TF32 kernels disabled (TensorRT enables them by default on Ampere and
  later; they round matmul inputs to 10 mantissa bits).
- fp16: TensorRT 10 sets `BuilderFlag.FP16` on the fp32 network (weak typing). TensorRT 11 removed
  that flag: the ONNX is converted to fp16 with fp32 inputs and outputs (`keep_io_types=True`) by
  NVIDIA ModelOpt AutoCast when installed, else by onnxruntime's float16 tool
  (onnxruntime.transformers.float16, needs the `onnx` package), and built as a strongly typed
  network. The converter is recorded in the sidecar.
- int8: explicit quantization only: ModelOpt (`modelopt.onnx.quantization.quantize`) inserts Q/DQ
  nodes calibrated on `--calibration` crops (an `.npy` of network inputs `Nx3xSxS`), and the
  Q/DQ graph is built strongly typed. Without ModelOpt the build stops with a clear error (no
  implicit INT8 calibration: TensorRT 11 removed it, and it is deprecated in 10).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, TextIO, Tuple

import numpy as np

from hkmr_ros.inference.engine_cache import BuildSpec, Platform, candidate_paths, ensure_engine, writable_dir
from hkmr_ros.inference.errors import BackendUnavailableError, EngineError, EstimatorError
from hkmr_ros.inference.model_info import file_sha256, read_model_info

LOG = logging.getLogger("hkmr_ros.inference")
TIMING_CACHE_NAME = "tensorrt.timing-cache"
DEFAULT_WORKSPACE = 1 << 30


def import_tensorrt() -> Any:
    """The tensorrt module, version 10 or 11. Raises BackendUnavailableError otherwise."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as e:
        raise BackendUnavailableError(f"tensorrt is not installed ({e}); pip install tensorrt") from e
    if trt_major(trt) < 10:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} found; this runtime needs TensorRT 10 or 11")
    return trt


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def make_progress_monitor(trt: Any, out: Optional[TextIO] = None, min_interval_s: float = 1.0) -> Any:
    """An IProgressMonitor printing phase starts/ends and, at most every `min_interval_s`, step counts
    (to `out`, default stderr)."""
    out = out if out is not None else sys.stderr

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: Dict[str, int] = {}
            self.depth: Dict[str, int] = {}
            self.last = 0.0

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            self.depth[phase_name] = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            if self.depth[phase_name] <= 1:
                indent = "  " * self.depth[phase_name]
                print(f"[tensorrt] {indent}{phase_name} ({num_steps} steps)", file=out, flush=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            now = time.monotonic()
            if now - self.last >= min_interval_s and self.depth.get(phase_name, 0) <= 1:
                self.last = now
                total = self.steps.get(phase_name, 0)
                print(f"[tensorrt] {'  ' * self.depth.get(phase_name, 0)}{phase_name}: {step + 1}/{total}",
                      file=out, flush=True)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            if self.depth.get(phase_name, 0) == 0:
                print(f"[tensorrt] {phase_name} done", file=out, flush=True)

    return Progress()


def platform_info(trt: Any, cuda: Any) -> Platform:
    name, cc = cuda.device_info()
    return Platform(tensorrt_version=str(trt.__version__), gpu_name=name, compute_capability=cc)


def convert_fp16(onnx_path: Path, out_path: Path) -> str:
    """fp32 ONNX -> fp16 ONNX with fp32 inputs/outputs. Returns the converter used."""
    try:
        autocast = importlib.import_module("modelopt.onnx.autocast")
        onnx = importlib.import_module("onnx")
        model = autocast.convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16",
                                                    keep_io_types=True)
        onnx.save(model, str(out_path))
        return "modelopt.onnx.autocast (keep_io_types=True)"
    except ImportError:
        pass
    try:
        onnx = importlib.import_module("onnx")
        float16 = importlib.import_module("onnxruntime.transformers.float16")
    except ImportError as e:
        raise BackendUnavailableError(
            f"fp16 on TensorRT 11 needs an fp16 ONNX: install nvidia-modelopt[onnx] or onnx ({e})") from e
    model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return "onnxruntime.transformers.float16 (keep_io_types=True)"


def quantize_int8(onnx_path: Path, out_path: Path, calibration: Optional[np.ndarray]) -> str:
    """Q/DQ INT8 ONNX by ModelOpt. Raises BackendUnavailableError without ModelOpt or calibration data."""
    try:
        quantization = importlib.import_module("modelopt.onnx.quantization")
    except ImportError as e:
        raise BackendUnavailableError(
            "int8 is not available: it needs explicit quantization (Q/DQ nodes) by NVIDIA ModelOpt, which is not "
            f"installed ({e}); pip install 'nvidia-modelopt[onnx]', or use fp16") from e
    if calibration is None or len(calibration) == 0:
        raise BackendUnavailableError("int8 needs calibration crops: an .npy of network inputs Nx3xSxS "
                                      "(--calibration), e.g. Estimator.preprocess of a few hundred person crops")
    quantization.quantize(onnx_path=str(onnx_path), quantize_mode="int8",
                          calibration_data=np.ascontiguousarray(calibration, dtype=np.float32),
                          output_path=str(out_path))
    return "modelopt.onnx.quantization (int8, entropy calibration)"


def prepare_onnx(trt: Any, spec: BuildSpec, work: Path,
                 calibration: Optional[np.ndarray]) -> Tuple[Path, bool, Dict[str, Any]]:
    """(ONNX to parse, strongly typed?, sidecar notes) for the precision and TensorRT version."""
    major = trt_major(trt)
    if spec.precision == "fp32":
        return spec.onnx_path, major >= 11, {}
    if spec.precision == "fp16":
        if major < 11:
            return spec.onnx_path, False, {"fp16": "BuilderFlag.FP16"}
        out = work / "model.fp16.onnx"
        return out, True, {"fp16": convert_fp16(spec.onnx_path, out)}
    out = work / "model.int8.onnx"
    return out, True, {"int8": quantize_int8(spec.onnx_path, out, calibration)}


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """TensorRT 10: explicit batch is the default; STRONGLY_TYPED on request. 11: always strongly typed."""
    if strongly_typed and trt_major(trt) < 11:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def build_serialized(trt: Any, spec: BuildSpec, timing_cache: Optional[Path] = None,
                     calibration: Optional[np.ndarray] = None, progress: bool = True,
                     workspace: int = DEFAULT_WORKSPACE, out: Optional[TextIO] = None) -> Tuple[bytes, Dict[str, Any]]:
    """Parse, configure and build; returns (serialised engine, sidecar notes). Raises EngineError."""
    out = out if out is not None else sys.stderr
    logger = trt.Logger(trt.Logger.WARNING)
    with tempfile.TemporaryDirectory(prefix="hkmr-trt-") as tmp:
        onnx_file, strongly_typed, notes = prepare_onnx(trt, spec, Path(tmp), calibration)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt, strongly_typed))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_file)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {spec.onnx_path}: {errors or 'unknown error'}")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [spec.input_name]:
        raise EngineError(f"{spec.onnx_path}: network inputs {names}, expected [{spec.input_name!r}]")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if spec.precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if spec.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 means fp32 (joints to 1e-4 m)
    profile = builder.create_optimization_profile()
    p = spec.profile()
    profile.set_shape(spec.input_name, p["min"], p["opt"], p["max"])
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    if progress:
        monitor = make_progress_monitor(trt, out)
        config.progress_monitor = monitor  # kept referenced until the build returns
    print(f"[tensorrt] building {spec.onnx_path.name}: {spec.precision}, batch {spec.min_batch}..{spec.max_batch}, "
          f"TensorRT {trt.__version__}" + (", timing cache found" if cache_bytes else ""), file=out, flush=True)
    start = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {spec.onnx_path} ({spec.precision}); "
                          f"see the TensorRT messages above")
    if timing_cache is not None:
        try:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError as e:  # a read-only folder loses the cache, not the engine
            LOG.warning("hkmr inference: cannot write the TensorRT timing cache %s: %s", timing_cache, e)
    seconds = time.monotonic() - start
    print(f"[tensorrt] built in {seconds:.0f} s", file=out, flush=True)
    notes = {**notes, "strongly_typed": strongly_typed, "build_seconds": round(seconds, 1),
             "timing_cache": timing_cache.name if timing_cache is not None else None}
    return bytes(memoryview(serialized)), notes


def build_cached_engine(onnx_path: Path, precision: str = "fp32", max_batch: int = 16, opt_batch: int = 1,
                        cache_dir: Optional[Path] = None, calibration: Optional[np.ndarray] = None,
                        progress: bool = True, force: bool = False, trt: Any = None, cuda: Any = None,
                        reject_paths: Sequence[Path] = (), reject_reason: str = "") -> Tuple[Path, str]:
    """A valid engine for `onnx_path` (built if none is cached); returns (engine path, 'cached' or 'built (why)').

    force: rebuild even if a valid engine exists. reject_paths: engines the caller found unusable
    (`reject_reason`, e.g. TensorRT could not deserialise it). trt, cuda: injected modules (tests).
    """
    onnx_path = Path(onnx_path)
    info = read_model_info(onnx_path)
    trt = trt if trt is not None else import_tensorrt()
    if cuda is None:
        from hkmr_ros.inference.cuda_runtime import open_cuda
        cuda = open_cuda()
    spec = BuildSpec(onnx_path=onnx_path, onnx_sha256=info.onnx_sha256 or file_sha256(onnx_path),
                     input_name=info.input_name, image_size=info.image_size, precision=precision,
                     max_batch=max_batch, opt_batch=min(opt_batch, max_batch))
    platform = platform_info(trt, cuda)
    candidates = candidate_paths(spec, cache_dir)
    target_dir = next((c.parent for c in candidates if writable_dir(c.parent)), None)
    timing_cache = target_dir / TIMING_CACHE_NAME if target_dir is not None else None

    def build(s: BuildSpec) -> Tuple[bytes, Dict[str, Any]]:
        return build_serialized(trt, s, timing_cache=timing_cache, calibration=calibration, progress=progress)

    reject = list(candidates) if force else list(reject_paths)
    return ensure_engine(spec, platform, build, cache_dir=cache_dir, reject=reject,
                         reject_reason=reject_reason or "rebuild requested")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hkmr_ros.inference.trt_build",
                                     description="Build (or find cached) a TensorRT engine for an hkmr ONNX model.")
    parser.add_argument("onnx", type=Path, help=".onnx with its .json sidecar beside it")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    parser.add_argument("--max-batch", type=int, default=16, help="largest batch of the profile (default 16)")
    parser.add_argument("--opt-batch", type=int, default=1, help="batch the kernels are tuned for (default 1)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="engine folder when the ONNX's folder is read-only (default $HKMR_ENGINE_CACHE "
                             "or ~/.cache/hkmr_ros/engines)")
    parser.add_argument("--calibration", type=Path, default=None, help="int8: .npy of network inputs Nx3xSxS")
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid engine is cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        calibration = np.load(args.calibration) if args.calibration is not None else None
        path, status = build_cached_engine(args.onnx, precision=args.precision, max_batch=args.max_batch,
                                           opt_batch=args.opt_batch, cache_dir=args.cache_dir,
                                           calibration=calibration, force=args.force)
    except (EstimatorError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{path} ({status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
