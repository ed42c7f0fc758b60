"""Runtime latency: encoder, regressor and end-to-end, HKMR against HMR, torch eager against ONNX Runtime.

One run on one machine, so the ratios compare like with like:

    OMP_NUM_THREADS=1 python benchmarks/runtime.py --threads 1 --out docs/performance_table.md

HKMR is the shipped default network (training/weights/hkmr_default); HMR is the same encoder
(same weights) with HMR's iterative regressor (untrained: latency does not depend on the weights).
Parts, each as one torch module and one ONNX graph exported from it here (TorchScript exporter,
dynamic batch):
- encoder: image `Bx3xSxS` -> features;
- regressor: features -> final pose state, betas, camera (`final_estimate`: for HKMR the collapsed
  passes that the exported graph uses); for HKMR also "regressor, joint by joint": the last
  iteration of `forward_stepwise`, the straightforward computation (with its rotation conversion);
- end-to-end: image -> pose, rotmat, betas, cam, joints (engine_build's ExportGraph: encoder,
  regressor, rotations and the body model, i.e. the graph the runtime ships).
Plus the runtime's whole path on the shipped ONNX: `Estimator.estimate` on uint8 224x224 crops
(preprocessing included). Each row: `--warmup` untimed calls, then `--repeats` timed calls, taken
round-robin over all rows (one call per row per round: load bursts on a shared machine hit every
row alike);
per-crop latency = call time / batch (median and 90th percentile of wall-clock time, and median
process CPU time, which other processes' load does not inflate), crops/s = batch / median call.
ONNX Runtime CUDA rows (every part) and TensorRT fp32 rows (end-to-end) are added where they can
run. Peak memory: the maximum
resident set size of a fresh process that loads the shipped model and runs 16-crop batches, once
with the torch-free runtime (torch made unimportable) and once in torch eager.
The GPU paths' agreement with the CPU result is checked by `python -m engine_build.gpu_check`.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from machine import cpu_model, usable_cores

DEFAULT_CHECKPOINT = ROOT / "training/weights/hkmr_default/model.pt"
PARTS = ("encoder", "regressor", "end-to-end")


# ----------------------------------------------------------------- networks and parts

class RegressorPart(nn.Module):
    """features `BxD` -> (pose state `Bx24xR`, betas `Bx10`, cam `Bx3`): the final estimate."""

    def __init__(self, regressor: nn.Module) -> None:
        super().__init__()
        self.regressor = regressor

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.regressor.final_estimate(features)
        return out["pose_state"], out["betas"], out["cam"]


class StepwisePart(nn.Module):
    """features -> last iteration of HKMR's joint-by-joint `forward_stepwise` (pose, betas, cam):
    the straightforward regressor the collapsed passes replace (it also converts rotations)."""

    def __init__(self, regressor: nn.Module) -> None:
        super().__init__()
        self.regressor = regressor

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.regressor.forward_stepwise(features)
        return out["pose"][:, -1], out["betas"][:, -1], out["cam"][:, -1]


def load_networks(checkpoint: Path) -> Tuple[Dict[str, nn.Module], object, int]:
    """{'HKMR': model, 'HMR': model} (same encoder weights), the config, the input side."""
    from training.evaluate import load_method
    from training.models.mesh_regressor import build_model

    method = load_method(checkpoint, "HKMR", torch.device("cpu"))
    hmr_cfg = copy.deepcopy(method.cfg.model)
    hmr_cfg.regressor, hmr_cfg.regressor_kwargs, hmr_cfg.encoder_weights = "hmr", {}, None
    torch.manual_seed(0)
    hmr = build_model(hmr_cfg)
    hmr.encoder.load_state_dict(method.model.encoder.state_dict())
    return {"HKMR": method.model.eval(), "HMR": hmr.eval()}, method.cfg, method.image_size


def part_modules(model: nn.Module, rotation: str, body: nn.Module) -> Dict[str, nn.Module]:
    from engine_build.onnx_export import ExportGraph

    parts = {"encoder": model.encoder, "regressor": RegressorPart(model.regressor),
             "end-to-end": ExportGraph(model, rotation, body)}
    if hasattr(model.regressor, "forward_stepwise"):
        parts["regressor, joint by joint"] = StepwisePart(model.regressor)
    return parts


def export_part(module: nn.Module, example: torch.Tensor, path: Path, input_name: str) -> List[str]:
    """Trace `module` to ONNX (dynamic batch); returns its output names."""
    with torch.no_grad():
        out = module(example)
    n_out = len(out) if isinstance(out, tuple) else 1
    names = [f"out{i}" for i in range(n_out)]
    if isinstance(module, nn.Module) and type(module).__name__ == "ExportGraph":
        names = ["pose", "rotmat", "betas", "cam", "joints"][:n_out]
    axes = {n: {0: "batch"} for n in [input_name, *names]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, do_constant_folding=True,
                          input_names=[input_name], output_names=names, dynamic_axes=axes)
    try:
        from engine_build.onnx_export import finish_graph  # the exporter's check + simplifier, as shipped
        finish_graph(path, True)
    except (ImportError, TypeError):
        pass
    return names


def write_sidecar(onnx_path: Path, template: Dict) -> None:
    """A runtime sidecar for an exported end-to-end graph (the shipped one's, minus its sha256)."""
    meta = {k: v for k, v in template.items() if k not in ("onnx_sha256", "validation")}
    meta["onnx"] = onnx_path.name
    onnx_path.with_suffix(".json").write_text(json.dumps(meta))


# ----------------------------------------------------------------- timing

def summarise(times: Sequence[float], cpu_times: Sequence[float], batch: int) -> Dict[str, float]:
    """Per-crop wall-clock median and p90, per-crop CPU-time median, crops/s at the median wall time."""
    per_crop = np.asarray(times) * 1000.0 / batch
    median_call = statistics.median(times)
    return {"median_ms": float(np.median(per_crop)), "p90_ms": float(np.percentile(per_crop, 90)),
            "cpu_ms": float(np.median(cpu_times)) * 1000.0 / batch, "crops_per_s": batch / median_call}


def ort_session(path: Path, threads: int, providers: Sequence[str]) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=list(providers))


def gpu_runtimes() -> List[str]:
    names = []
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        names.append("onnxruntime-cuda")
    from hkmr_ros.inference.tensorrt_backend import tensorrt_unavailable_reason
    if tensorrt_unavailable_reason() is None:
        names.append("tensorrt")
    return names


# ----------------------------------------------------------------- peak memory

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "torchvision", "smplx", "roma", "training", "engine_build"}:
                raise ImportError(name + " blocked")
            return None
    sys.meta_path.insert(0, Block())
""")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report its parent's size.
PEAK = textwrap.dedent("""
    def peak_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
""")
RSS_RUNTIME = BLOCK_TORCH + PEAK + textwrap.dedent("""
    import numpy as np
    from hkmr_ros.inference import load_estimator
    est = load_estimator(None, backend="onnxruntime", threads=THREADS)
    crops = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    for _ in range(5):
        est.estimate(crops)
    print(peak_kib())
""")
RSS_TORCH = PEAK + textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, ROOT)
    torch.set_num_threads(THREADS)
    from training.evaluate import load_method, predict
    method = load_method(CHECKPOINT, "HKMR", torch.device("cpu"))
    x = torch.randn(16, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(5):
            predict(method, x)
    print(peak_kib())
""")


def substitute(code: str, values: Dict[str, str]) -> str:
    for key, value in values.items():
        code = code.replace(key, value)
    return code


def peak_rss_mb(code: str) -> Optional[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return int(proc.stdout.strip().splitlines()[-1]) / 1024.0  # KiB -> MiB


# ----------------------------------------------------------------- main

Runner = Tuple[Dict[str, object], Callable[[], object]]


def make_runners(args: argparse.Namespace) -> List[Runner]:
    """Every (row key, zero-argument call) to time: networks x parts x batches x runtimes."""
    from engine_build.body import ExportBody
    from hkmr_ros.inference import DEFAULT_MODEL, load_estimator
    from training.body.body_model import load_body_model, resolve_model_path

    networks, cfg, size = load_networks(args.checkpoint)
    body = ExportBody(load_body_model(resolve_model_path(cfg.model.body_model)).eval()).eval()
    template = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    work = Path(tempfile.mkdtemp(prefix="hkmr-bench-"))
    extra = gpu_runtimes()
    runners: List[Runner] = []
    for name, model in networks.items():
        for part, module in part_modules(model, cfg.model.rotation, body).items():
            module.eval()
            regressor = part.startswith("regressor")
            example = torch.randn(2, 3, size, size)
            with torch.no_grad():
                example = model.encoder(example) if regressor else example
            input_name = "features" if regressor else "image"
            path = work / f"{name.lower()}_{part.replace(', ', '_').replace(' ', '_')}.onnx"
            print(f"exporting {name} {part} -> {path.name}", file=sys.stderr, flush=True)
            export_part(module, example, path, input_name)
            sessions = {"onnxruntime": ort_session(path, args.threads, ["CPUExecutionProvider"])}
            if "onnxruntime-cuda" in extra:
                sessions["onnxruntime-cuda"] = ort_session(path, args.threads,
                                                           ["CUDAExecutionProvider", "CPUExecutionProvider"])
            trt_backend = None
            if part == "end-to-end" and "tensorrt" in extra:
                write_sidecar(path, template)
                trt_backend = load_estimator(path, backend="tensorrt", max_batch=max(args.batches),
                                             cache_dir=work / "engines").backend
            for batch in args.batches:
                image = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
                with torch.no_grad():
                    x = model.encoder(image) if regressor else image
                key = {"network": name, "part": part, "batch": batch}

                def torch_call(m=module, t=x):
                    with torch.inference_mode():
                        return m(t)

                runners.append(({**key, "runtime": "torch eager"}, torch_call))
                for runtime, session in sessions.items():
                    runners.append(({**key, "runtime": runtime},
                                    lambda s=session, f={input_name: x.numpy()}: s.run(None, f)))
                if trt_backend is not None:
                    runners.append(({**key, "runtime": "tensorrt fp32"}, lambda b=trt_backend, a=x.numpy(): b.run(a)))
    # the runtime's whole path on the shipped ONNX, uint8 crops in
    est = load_estimator(None, backend="onnxruntime", threads=args.threads)
    for batch in args.batches:
        crops = np.random.default_rng(batch).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
        runners.append(({"network": "HKMR", "part": "Estimator (224 crop, preprocessing included)",
                         "runtime": "onnxruntime", "batch": batch}, lambda e=est, c=crops: e.estimate(c)))
    return runners


def run(args: argparse.Namespace) -> Tuple[List[Dict], Dict[str, Optional[float]]]:
    """Time every runner round-robin (one call each per round), so load bursts on a shared machine
    hit all rows alike and the ratios stay fair; then the peak-memory processes."""
    torch.set_num_threads(args.threads)
    runners = make_runners(args)
    print(f"timing {len(runners)} rows: {args.warmup} warm-up + {args.repeats} rounds", file=sys.stderr, flush=True)
    for _, fn in runners:
        for _ in range(args.warmup):
            fn()
    times: List[List[float]] = [[] for _ in runners]
    cpu: List[List[float]] = [[] for _ in runners]
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for i, (_, fn) in enumerate(runners):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[i].append(time.process_time() - start_cpu)
            times[i].append(time.perf_counter() - start)
    args.load = (load_before, os.getloadavg()[0])
    rows = [{**key, **summarise(t, c, int(key["batch"]))} for (key, _), t, c in zip(runners, times, cpu)]
    values = {"THREADS": str(args.threads), "ROOT": repr(str(ROOT)), "CHECKPOINT": repr(str(args.checkpoint))}
    memory = {"runtime": peak_rss_mb(substitute(RSS_RUNTIME, values)),
              "torch": peak_rss_mb(substitute(RSS_TORCH, values))}
    return rows, memory


def lookup(rows: List[Dict], network: str, part: str, runtime: str, batch: int,
           field: str = "cpu_ms") -> Optional[float]:
    for r in rows:
        if (r["network"], r["part"], r["runtime"], r["batch"]) == (network, part, runtime, batch):
            return r[field]
    return None


def markdown(rows: List[Dict], memory: Dict[str, Optional[float]], args: argparse.Namespace) -> str:
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    shown, skip = [], False
    for a in sys.argv[1:]:  # the table's own destination is not part of what was measured
        if skip or a == "--out" or a.startswith("--out="):
            skip = a == "--out"
            continue
        shown.append(a)
    command = f"{env}python benchmarks/runtime.py" + "".join(f" {a}" for a in shown)
    lines = [f"Machine: {cpu_model()}, {usable_cores()} usable cores ({os.cpu_count()} logical), "
             f"{'GPU runtimes: ' + ', '.join(gpu_runtimes()) if gpu_runtimes() else 'no GPU'}; "
             f"{args.threads} thread(s); torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
             f"{args.repeats} timed calls per row after {args.warmup} warm-up calls.",
             "", f"Command: `{command}`", "",
             f"Load average (1 min) {args.load[0]:.1f} at the start of the timing, {args.load[1]:.1f} at the end. "
             "Wall-clock columns include time the process was descheduled on a shared machine; "
             "'CPU ms/crop' is the process CPU time of the call (insensitive to other processes' load), "
             "and the ratios below use it.", "",
             "| network | part | runtime | batch | median ms/crop | p90 ms/crop | CPU ms/crop | crops/s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['part']} | {r['runtime']} | {r['batch']} | {r['median_ms']:.3f} | "
                     f"{r['p90_ms']:.3f} | {r['cpu_ms']:.3f} | {r['crops_per_s']:.0f} |")
    lines += ["", "Ratios (median CPU time per crop):", ""]
    for b in args.batches:
        for runtime in ("onnxruntime", "torch eager"):
            hk, hm = lookup(rows, "HKMR", "regressor", runtime, b), lookup(rows, "HMR", "regressor", runtime, b)
            if hk and hm:
                lines.append(f"- batch {b}: HKMR regressor / HMR regressor, {runtime}: {hk / hm:.2f}x")
        for net in ("HKMR", "HMR"):
            e2e = lookup(rows, net, "end-to-end", "onnxruntime", b)
            enc = lookup(rows, net, "encoder", "onnxruntime", b)
            if e2e and enc:
                lines.append(f"- batch {b}: {net} end-to-end / encoder alone, onnxruntime: {e2e / enc:.2f}x")
        for part in (*PARTS, "regressor, joint by joint"):
            ort, pt = lookup(rows, "HKMR", part, "onnxruntime", b), lookup(rows, "HKMR", part, "torch eager", b)
            if ort and pt:
                lines.append(f"- batch {b}: HKMR {part}, onnxruntime / torch eager: {ort / pt:.2f}x")
    lines += ["", "Peak resident memory of a fresh process running 16-crop batches of the shipped model:", ""]
    for key, label in (("runtime", "torch-free runtime (hkmr_ros.inference, onnxruntime; torch unimportable)"),
                       ("torch", "torch eager (training.evaluate.predict)")):
        value = memory.get(key)
        lines.append(f"- {label}: {value:.0f} MB" if value is not None else f"- {label}: not measured (failed)")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads (default 1)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows, memory = run(args)
    text = markdown(rows, memory, args)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    print(f"benchmark took {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
