"""CPU latency of the HKMR and HMR regressors, and their parameter counts against the paper's.

Everything is measured in one run on one machine, so the ratios compare like with like:

    OMP_NUM_THREADS=2 python benchmarks/regressor_latency.py --encoders resnet50
    OMP_NUM_THREADS=1 python benchmarks/regressor_latency.py --batch-sizes 1 --onnx --encoders resnet50 mobilenet_v3_small

Regressor rows take a 2048-D feature input (ResNet-50's Phi); encoder rows time a 224x224 crop
through the encoder and the regressor. Each row: `warmup` untimed calls, then the median of
`repeats` timed calls, in inference mode. In eval mode the HKMR regressor runs its collapsed
passes (one matrix per pass, training/models/hkmr_regressor.py); "joint by joint" is the
straightforward computation that training mode keeps.

`--onnx` adds ONNX Runtime rows (CPU, one thread, graphs exported here with the exporter of
engine_build): the regressors alone (features in, final rotations, betas and camera out), and per
encoder the encoder alone against the whole exported graph (encoder, regressor, rotations and the
body model's joints: engine_build.onnx_export.ExportGraph), with node counts.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.models.encoders import ENCODERS, build_encoder  # noqa: E402
from training.models.hkmr_regressor import HKMRRegressor  # noqa: E402
from training.models.hmr_regressor import HMRRegressor  # noqa: E402

FEAT_DIM = 2048
PAPER_PARAMS = {"HKMR": 26.2e6, "HMR": 26.8e6}  # ResNet-50 + regressor, the paper's Table 1


def median_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def regressors() -> Dict[str, nn.Module]:
    torch.manual_seed(0)
    hkmr = HKMRRegressor(FEAT_DIM).eval()
    return {
        "HKMR (batched child chains)": hkmr,
        "HKMR (joint by joint)": hkmr,
        "HKMR (chain-by-chain loop)": hkmr,
        "HKMR 6-D": HKMRRegressor(FEAT_DIM, rotation="6d").eval(),
        "HMR": HMRRegressor(FEAT_DIM).eval(),
    }


def latency_rows(batch_sizes: Sequence[int], encoders: Sequence[str], warmup: int, repeats: int,
                 encoder_repeats: int) -> List[List[str]]:
    models = regressors()
    jobs = []
    for batch in batch_sizes:
        for name, model in models.items():
            call = (model.forward_reference if "loop" in name
                    else model.forward_stepwise if "joint by joint" in name else model)
            jobs.append((name, "features 2048", batch, call, None, repeats))
        for enc_name in encoders:
            encoder = build_encoder(enc_name).eval()
            for name in ("HKMR (batched child chains)", "HMR"):
                reg = HKMRRegressor(encoder.out_dim) if name.startswith("HKMR") else HMRRegressor(encoder.out_dim)
                jobs.append((name, f"{enc_name} 224x224", batch, nn.Sequential(encoder, reg.eval()), encoder,
                             encoder_repeats))
    results = {}
    for name, inp, batch, call, encoder, reps in tqdm(jobs, desc="timing", unit="row"):
        shape = (batch, 3, 224, 224) if encoder is not None else (batch, FEAT_DIM)
        x = torch.randn(*shape)
        results[(name, inp, batch)] = median_ms(lambda: call(x), warmup, reps)
    rows = []
    for (name, inp, batch), ms in results.items():
        hmr = results[("HMR", inp, batch)]
        rows.append([name, inp, str(batch), f"{ms:.2f}", f"{ms / batch:.2f}", f"{ms / hmr:.1f}x"])
    return rows


class FinalOutputs(nn.Module):
    """A regressor's final iteration as exported: features -> rotmat, betas, cam."""

    def __init__(self, regressor: nn.Module, stepwise: bool = False) -> None:
        super().__init__()
        self.regressor = regressor
        self.stepwise = stepwise

    def forward(self, features: torch.Tensor):
        from training.models.mean_params import state_to_rotmat

        if self.stepwise:
            out = self.regressor.forward_stepwise(features)
            return out["rotmat"][:, -1], out["betas"][:, -1], out["cam"][:, -1]
        est = self.regressor.final_estimate(features)
        return state_to_rotmat(est["pose_state"], self.regressor.rotation), est["betas"], est["cam"]


def export_graph(module: nn.Module, example: torch.Tensor, path: str) -> int:
    """Trace `module` to ONNX (dynamic batch), simplify when onnxslim is installed; returns the node count."""
    import warnings

    import onnx

    from engine_build.onnx_export import simplify

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), path, dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    model, _ = simplify(onnx.load(path))
    onnx.save(model, path)
    return len(model.graph.node)


def ort_times_ms(paths: Sequence[str], shape: Sequence[int], warmup: int, repeats: int) -> List[Tuple[float, float]]:
    """(minimum, median) ms per call of each graph. Calls are interleaved, so that other load on the
    machine hits all graphs alike; the minimum is the cost without interference, the ratios use it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    sessions = [onnxruntime.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for p in paths]
    x = {"x": torch.randn(*shape).numpy()}
    for _ in range(warmup):
        for session in sessions:
            session.run(None, x)
    times: List[List[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for session, t in zip(sessions, times):
            start = time.perf_counter()
            session.run(None, x)
            t.append(time.perf_counter() - start)
    return [(1000.0 * min(t), 1000.0 * statistics.median(t)) for t in times]


def onnx_rows(encoders: Sequence[str], warmup: int, repeats: int, encoder_repeats: int) -> List[List[str]]:
    """ONNX Runtime CPU, batch 1: HKMR (collapsed / joint by joint) and HMR regressors; encoder
    alone against encoder + HKMR regressor + body model joints (the shipped graph's structure)."""
    import tempfile

    from engine_build.body import ExportBody
    from engine_build.onnx_export import ExportGraph
    from training.body.body_model import load_body_model
    from training.models.mesh_regressor import MeshRegressor

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hkmr = HKMRRegressor(FEAT_DIM, rotation="6d").eval()
        graphs = {"HKMR 6-D (collapsed passes)": FinalOutputs(hkmr),
                  "HKMR 6-D (joint by joint)": FinalOutputs(hkmr, stepwise=True),
                  "HMR 6-D": FinalOutputs(HMRRegressor(FEAT_DIM, rotation="6d").eval())}
        paths = [f"{tmp}/regressor_{i}.onnx" for i in range(len(graphs))]
        nodes = [export_graph(module, torch.randn(2, FEAT_DIM), path)
                 for module, path in zip(tqdm(graphs.values(), desc="onnx regressors", unit="graph"), paths)]
        times = ort_times_ms(paths, (1, FEAT_DIM), warmup, repeats)
        hmr_ms = times[-1][0]
        for name, n, (low, mid) in zip(graphs, nodes, times):
            rows.append([name, f"features {FEAT_DIM}", str(n), f"{low:.2f}", f"{mid:.2f}", f"{low / hmr_ms:.2f}x HMR"])
        body = ExportBody(load_body_model()).eval()
        for enc_name in encoders:
            encoder = build_encoder(enc_name).eval()
            full = ExportGraph(MeshRegressor(encoder, HKMRRegressor(encoder.out_dim, rotation="6d")), "6d", body)
            example = torch.randn(2, 3, 224, 224)
            enc_path, full_path = f"{tmp}/{enc_name}_enc.onnx", f"{tmp}/{enc_name}_full.onnx"
            enc_nodes = export_graph(encoder, example, enc_path)
            full_nodes = export_graph(full, example, full_path)
            enc, full_t = ort_times_ms([enc_path, full_path], (1, 3, 224, 224), warmup, encoder_repeats)
            rows.append([f"{enc_name} alone", "224x224", str(enc_nodes), f"{enc[0]:.2f}", f"{enc[1]:.2f}",
                         "1.00x encoder"])
            rows.append([f"{enc_name} + HKMR + body joints", "224x224", str(full_nodes), f"{full_t[0]:.2f}",
                         f"{full_t[1]:.2f}", f"{full_t[0] / enc[0]:.2f}x encoder"])
    return rows


def parameter_rows() -> List[List[str]]:
    encoder = build_encoder("resnet50")
    enc = count(encoder)
    hkmr = HKMRRegressor(FEAT_DIM)
    hmr = HMRRegressor(FEAT_DIM)
    unused = hkmr.root_chain.unused_parameter_count() + hkmr.child_chains.unused_parameter_count()
    rows = []
    for name, reg in (("HKMR", hkmr), ("HMR", hmr)):
        total = enc + count(reg)
        rows.append([name, f"{enc / 1e6:.2f}M", f"{count(reg) / 1e6:.3f}M", f"{total / 1e6:.2f}M",
                     f"{PAPER_PARAMS[name] / 1e6:.1f}M"])
    rows.append(["HKMR padding slots (in the HKMR count, never used)", "", f"{unused / 1e6:.4f}M", "", ""])
    return rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--encoders", nargs="*", default=[], choices=list(ENCODERS),
                        help="also time encoder + regressor on 224x224 crops")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--encoder-repeats", type=int, default=10)
    parser.add_argument("--onnx", action="store_true",
                        help="add ONNX Runtime rows (batch 1): regressors, and encoder alone vs the whole graph")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("\nParameters (ResNet-50 encoder, axis-angle regressors)\n")
    print(markdown(["model", "encoder", "regressor", "total", "paper"], parameter_rows()))
    rows = latency_rows(args.batch_sizes, args.encoders, args.warmup, args.repeats, args.encoder_repeats)
    print(f"\nCPU latency, median of {args.repeats} (encoder rows: {args.encoder_repeats}) "
          f"after {args.warmup} warmup calls\n")
    print(markdown(["model", "input", "batch", "ms per call", "ms per image", "vs HMR"], rows))
    if args.onnx:
        rows = onnx_rows(args.encoders, args.warmup, args.repeats, args.encoder_repeats)
        print(f"\nONNX Runtime {__import__('onnxruntime').__version__} CPU, batch 1, {torch.get_num_threads()} "
              f"thread(s), {args.repeats} interleaved calls per graph (encoder rows: {args.encoder_repeats}); "
              "ratios of the minima\n")
        print(markdown(["graph", "input", "nodes", "ms min", "ms median", "ratio"], rows))


if __name__ == "__main__":
    main()
