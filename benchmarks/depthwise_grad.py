"""The weight gradient of each large-kernel depthwise convolution of an encoder: oneDNN's (aten) against
`training.models.depthwise.depthwise_weight_grad`, at the layer's own input in training.

    python benchmarks/depthwise_grad.py [--encoder mobilenet_v3_small --image-size 96]
        [--batch-size 32] [--threads 1] [--repeats 10] [--min-kernel 3]

Per layer: milliseconds per call (best of `--repeats` after a warm-up, the two called in turn) of
the forward pass, aten's weight gradient and the grouped one, channels-last and with glibc keeping
freed memory (`training.allocator`) as training runs, and whether training uses the grouped one
(`grouped_grad_pays`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.allocator import keep_freed_memory  # noqa: E402
from training.models.depthwise import depthwise_weight_grad, grouped_grad_pays, is_large_depthwise  # noqa: E402
from training.models.encoders import build_encoder  # noqa: E402
from machine import cpu_model


def best_ms(fns: List[Callable[[], object]], repeats: int) -> List[float]:
    """Best wall time per call of each function in milliseconds, the functions called in turn."""
    for fn in fns:
        fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [1e3 * min(t) for t in times]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--min-kernel", type=int, default=3, help="smallest kernel to time (3: all depthwise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    encoder = build_encoder(args.encoder).train().to(memory_format=torch.channels_last)
    inputs: Dict[nn.Module, torch.Tensor] = {}

    def keep_input(module: nn.Module, layer_inputs: tuple, output: torch.Tensor) -> None:
        inputs[module] = layer_inputs[0].detach()

    hooks = [m.register_forward_hook(keep_input) for m in encoder.modules() if is_large_depthwise(m, args.min_kernel)]
    with torch.no_grad():
        encoder(torch.randn(args.batch_size, 3, args.image_size, args.image_size).to(memory_format=torch.channels_last))
    for hook in hooks:
        hook.remove()
    print(f"{args.encoder} at {args.image_size} px, batch {args.batch_size}; {cpu_model()}, torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"{'input':<18} {'kernel':>6} {'stride':>6} {'forward':>8} {'aten':>8} {'grouped':>8} {'ratio':>6}"
          "  training uses (ms)")
    totals = [0.0, 0.0, 0.0]
    for conv, x in inputs.items():
        grad_out = torch.randn_like(conv(x))
        aten = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
            grad_out, x, conv.weight, None, list(conv.stride), list(conv.padding), [1, 1], False, [0, 0],
            conv.groups, [False, True, False])
        grouped = lambda: depthwise_weight_grad(x, grad_out, conv.kernel_size, conv.stride, conv.padding)  # noqa: E731
        forward = lambda: F.conv2d(x, conv.weight, None, conv.stride, conv.padding, 1, conv.groups)  # noqa: E731
        fwd, a, g = best_ms([forward, aten, grouped], args.repeats)
        used = is_large_depthwise(conv) and grouped_grad_pays(conv, x.shape[-2:])
        totals[0] += a
        totals[1] += g
        totals[2] += g if used else a
        shape = "x".join(map(str, x.shape[1:]))
        print(f"{shape:<18} {conv.kernel_size[0]:>6} {conv.stride[0]:>6} {fwd:>8.2f} {a:>8.2f} {g:>8.2f} {a / g:>5.2f}x"
              f"  {'grouped' if used else 'aten'}")
    print(f"{'all layers':<32} {'':>8} {totals[0]:>8.2f} {totals[1]:>8.2f} {totals[0] / totals[1]:>5.2f}x")
    print(f"weight gradients as training computes them: {totals[2]:.2f} ms against aten's {totals[0]:.2f} ms "
          f"({totals[0] / totals[2]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
