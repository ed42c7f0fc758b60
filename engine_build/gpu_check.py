"""GPU check of an exported graph: every GPU path against ONNX Runtime CPU, with timings.

    python -m engine_build.gpu_check                         # the shipped default, a few minutes
    python -m engine_build.gpu_check --onnx model.onnx --checkpoint RUN/model.pt --out gpu_check.json

Paths, each compared output by output with ONNX Runtime's CPU result on the same inputs (rendered
synthetic crops when the EGL renderer works, else random normalised images) and timed (median of
`--repeats` calls at batch 1 and at `--batch`):
- torch CUDA: the checkpoint's exported module (engine_build.onnx_export.ExportGraph) on the GPU;
- ONNX Runtime CUDA: the graph with CUDAExecutionProvider;
- TensorRT fp32 and fp16: engines built by the runtime's builder (hkmr_ros.inference, cached in
  `--cache-dir`), run through its TensorRT backend.
A path whose pieces are missing (no CUDA, no CUDA provider, no tensorrt) is SKIPPED with the reason;
a path over its tolerance FAILS. Exit status: 0 when at least one GPU path ran and none failed,
1 otherwise (so a machine without a GPU exits 1 with "nothing checked on a GPU").
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

DEFAULT_ONNX = Path("hkmr_ros/data/hkmr_default.onnx")
DEFAULT_CHECKPOINT = Path("training/weights/hkmr_default/model.pt")
# Max abs difference from ONNX Runtime CPU. fp32 GPU paths may use TF32 convolutions (cuDNN,
# TensorRT default): ~1e-3 relative in the features. fp16: ~1e-2.
TOLERANCES = {
    "fp32": {"pose": 5e-3, "rotmat": 5e-3, "betas": 5e-3, "cam": 5e-3, "joints": 5e-3, "vertices": 5e-3},
    "fp16": {"pose": 5e-2, "rotmat": 5e-2, "betas": 5e-2, "cam": 5e-2, "joints": 2e-2, "vertices": 2e-2},
}
Run = Callable[[np.ndarray], Dict[str, np.ndarray]]


def compare(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Max abs difference per output (pose as rotation matrices: v and -v near pi)."""
    out = {}
    for name, value in ref.items():
        if name not in got:
            continue
        a, b = value, got[name]
        if name == "pose":
            a, b = (rotvec_to_rotmat(x.reshape(-1, 3)) for x in (a, b))
        out[name] = float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    return out


def rotvec_to_rotmat(v: np.ndarray) -> np.ndarray:
    """`Nx3` axis-angle -> `Nx3x3` (Rodrigues, numpy)."""
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = v / np.maximum(angle, 1e-12)
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def median_ms(run: Run, image: np.ndarray, repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    for _ in range(3):
        run(image)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(image)
        sync()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def test_inputs(image_size: int, batch: int, normalisation, body_model=None) -> tuple[str, np.ndarray]:
    """(what, `Bx3xSxS` float32): rendered crops where EGL works, else standard-normal images."""
    if body_model is not None:
        try:
            from engine_build.crops import rendered_crops

            return "rendered crops", rendered_crops(batch, image_size, body_model, normalisation).numpy()
        except Exception as e:  # noqa: BLE001 - any renderer failure falls back to random inputs
            print(f"  (no rendered crops: {e})", flush=True)
    rng = np.random.default_rng(0)
    return "random images", rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32)


def ort_runner(onnx_path: Path, provider: str) -> Run:
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        raise RuntimeError(f"this onnxruntime has no {provider} (has {onnxruntime.get_available_providers()}; "
                           "the CUDA provider comes with the onnxruntime-gpu package)")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=[provider])
    if provider not in session.get_providers():
        raise RuntimeError(f"onnxruntime fell back from {provider} to {session.get_providers()}")
    names = [o.name for o in session.get_outputs()]
    return lambda image: dict(zip(names, session.run(names, {"image": image})))


def torch_cuda_runner(checkpoint: Path, onnx_meta: Dict[str, Any]) -> tuple[Run, Callable[[], None]]:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    from engine_build.body import ExportBody
    from engine_build.onnx_export import OUTPUT_NAMES, ExportGraph
    from training.body.body_model import load_body_model
    from training.evaluate import load_method

    method = load_method(checkpoint, "gpu-check", torch.device("cpu"))
    source = onnx_meta.get("body_model", {}).get("source")
    body_model = load_body_model(source if source and Path(source).is_file() else None)
    vertices = any(o["name"] == "vertices" for o in onnx_meta.get("outputs", []))
    graph = ExportGraph(method.model, method.cfg.model.rotation, ExportBody(body_model, vertices)).eval().cuda()
    names = list(OUTPUT_NAMES) + (["vertices"] if vertices else [])

    @torch.no_grad()
    def run(image: np.ndarray) -> Dict[str, np.ndarray]:
        out = graph(torch.from_numpy(image).cuda())
        return {n: t.float().cpu().numpy() for n, t in zip(names, out)}

    return run, torch.cuda.synchronize


def tensorrt_runner(onnx_path: Path, precision: str, max_batch: int, cache_dir: Path) -> Run:
    from hkmr_ros.inference import load_estimator
    from hkmr_ros.inference.tensorrt_backend import tensorrt_unavailable_reason

    why = tensorrt_unavailable_reason()
    if why is not None:
        raise RuntimeError(why)
    est = load_estimator(onnx_path, backend="tensorrt", precision=precision, max_batch=max_batch,
                         cache_dir=cache_dir, warmup=True, progress=True)
    return est.run_network


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if env["gpu"]:
            env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except ImportError:
        env["torch"] = None
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    return env


def check(onnx_path: Path, checkpoint: Optional[Path], batch: int, repeats: int, precisions: Sequence[str],
          cache_dir: Path) -> Dict[str, Any]:
    """All paths; returns {'environment', 'inputs', 'paths': [{name, status, reason|diffs, ms_batch1, ms_batchN}]}."""
    meta_path = onnx_path.with_suffix(".json")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if not meta_path.is_file():
        raise FileNotFoundError(f"sidecar not found: {meta_path}")
    meta = json.loads(meta_path.read_text())
    size = int(meta["input"]["image_size"])
    env = environment()
    print("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    body_model = None
    try:
        from training.body.body_model import load_body_model

        body_model = load_body_model()
    except Exception as e:  # noqa: BLE001 - training extras absent: random inputs only
        print(f"  (no body model for rendering: {e})", flush=True)
    what, images = test_inputs(size, batch, (meta["input"]["mean"], meta["input"]["std"]), body_model)
    one = images[:1]
    print(f"inputs: {what}, batch {batch} and 1, {size}x{size}", flush=True)

    print("[cpu] ONNX Runtime CPU reference", flush=True)
    cpu = ort_runner(onnx_path, "CPUExecutionProvider")
    ref = cpu(images)
    results: List[Dict[str, Any]] = [{
        "name": "onnxruntime CPU (reference)", "status": "ok", "precision": "fp32", "gpu": False,
        "ms_batch1": median_ms(cpu, one, repeats), f"ms_batch{batch}": median_ms(cpu, images, repeats)}]

    def attempt(name: str, precision: str, make: Callable[[], Any]) -> None:
        print(f"[gpu] {name}", flush=True)
        row: Dict[str, Any] = {"name": name, "precision": precision, "gpu": True}
        try:
            made = make()
            run, sync = made if isinstance(made, tuple) else (made, lambda: None)
            got = run(images)
        except Exception as e:  # noqa: BLE001 - every missing piece is reported, not raised
            row.update(status="SKIP", reason=f"{type(e).__name__}: {e}")
            print(f"  SKIP: {row['reason']}", flush=True)
            results.append(row)
            return
        diffs = compare(ref, got)
        limits = TOLERANCES[precision]
        over = {k: v for k, v in diffs.items() if v > limits.get(k, 0.0)}
        finite = all(np.isfinite(v).all() for v in got.values())
        row.update(status="ok" if not over and finite else "FAIL", max_abs_diff=diffs,
                   ms_batch1=median_ms(run, one, repeats, sync), **{f"ms_batch{batch}": median_ms(run, images, repeats, sync)})
        if over or not finite:
            row["reason"] = ("non-finite outputs; " if not finite else "") + ", ".join(
                f"{k} {v:.3g} > {limits[k]:.3g}" for k, v in over.items())
        print(f"  {row['status']}: " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
              + (f" ({row['reason']})" if "reason" in row else ""), flush=True)
        results.append(row)

    if checkpoint is not None:
        attempt("torch CUDA (eager)", "fp32", lambda: torch_cuda_runner(checkpoint, meta))
    attempt("onnxruntime CUDA", "fp32", lambda: ort_runner(onnx_path, "CUDAExecutionProvider"))
    for precision in precisions:
        attempt(f"TensorRT {precision}", precision,
                lambda p=precision: tensorrt_runner(onnx_path, p, max(batch, 1), cache_dir))
    return {"environment": env, "onnx": str(onnx_path), "onnx_sha256": meta.get("onnx_sha256"),
            "inputs": what, "batch": batch, "repeats": repeats, "tolerances": TOLERANCES, "paths": results}


def table(report: Dict[str, Any]) -> str:
    batch = report["batch"]
    outputs = sorted({k for r in report["paths"] for k in r.get("max_abs_diff", {})})
    header = ["path", "status", f"ms batch 1", f"ms batch {batch}"] + [f"max diff {o}" for o in outputs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report["paths"]:
        cells = [r["name"], r["status"] + (f" ({r['reason']})" if r["status"] == "SKIP" else ""),
                 f"{r['ms_batch1']:.2f}" if "ms_batch1" in r else "",
                 f"{r[f'ms_batch{batch}']:.2f}" if f"ms_batch{batch}" in r else ""]
        cells += [f"{r['max_abs_diff'][o]:.2g}" if o in r.get("max_abs_diff", {}) else "" for o in outputs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine_build.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help=f"graph with its sidecar (default {DEFAULT_ONNX})")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help="checkpoint the graph came from, for the torch CUDA path ('none' to skip it)")
    p.add_argument("--batch", type=int, default=8, help="the larger batch (default 8)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default 50)")
    p.add_argument("--precisions", nargs="*", default=["fp32", "fp16"], choices=["fp32", "fp16", "int8"])
    p.add_argument("--cache-dir", type=Path, default=None, help="TensorRT engine folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    args = p.parse_args(argv)
    checkpoint = None if str(args.checkpoint).lower() == "none" else args.checkpoint
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = check(args.onnx, checkpoint, args.batch, args.repeats, args.precisions,
                           args.cache_dir or Path(tmp))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    report["seconds"] = round(time.perf_counter() - start, 1)
    print()
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    gpu_rows = [r for r in report["paths"] if r["gpu"]]
    if any(r["status"] == "FAIL" for r in gpu_rows):
        print("error: a GPU path disagrees with ONNX Runtime CPU beyond its tolerance", file=sys.stderr)
        return 1
    if not any(r["status"] == "ok" for r in gpu_rows):
        print("error: nothing checked on a GPU (every GPU path was skipped, see the reasons above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
