"""CPU latency of the HKMR and HMR regressors, and their parameter counts against the paper's.

Everything is measured in one run on one machine, so the ratios compare like with like:

    OMP_NUM_THREADS=2 python benchmarks/regressor_latency.py --encoders resnet50

Regressor rows take a 2048-D feature input (ResNet-50's Phi); encoder rows time a 224x224 crop
through the encoder and the regressor. Each row: `warmup` untimed calls, then the median of
`repeats` timed calls, in inference mode.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn
from tqdm import tqdm

from training.models.encoders import ENCODERS, build_encoder
from training.models.hkmr_regressor import HKMRRegressor
from training.models.hmr_regressor import HMRRegressor

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
            call = model.forward_reference if "loop" in name else model
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
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("\nParameters (ResNet-50 encoder, axis-angle regressors)\n")
    print(markdown(["model", "encoder", "regressor", "total", "paper"], parameter_rows()))
    rows = latency_rows(args.batch_sizes, args.encoders, args.warmup, args.repeats, args.encoder_repeats)
    print(f"\nCPU latency, median of {args.repeats} (encoder rows: {args.encoder_repeats}) "
          f"after {args.warmup} warmup calls\n")
    print(markdown(["model", "input", "batch", "ms per call", "ms per image", "vs HMR"], rows))


if __name__ == "__main__":
    main()
