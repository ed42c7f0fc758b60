"""Plot a training run's curves from its TensorBoard events: validation MPJPE / PA-MPJPE, the
training loss and the learning rate against the step, one PNG a person can read without
starting TensorBoard.

    python -m training.plot_run RUN_DIR [RUN_DIR ...] --out curves.png [--names A B] [--smooth 50]

Several runs share the axes (e.g. HKMR against HMR, or two seeds).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Curve = Tuple[np.ndarray, np.ndarray]  # steps, values
PANELS = (("val/mpjpe", "validation MPJPE (mm)"), ("val/pa_mpjpe", "validation PA-MPJPE (mm)"),
          ("loss/total", "training loss"), ("lr", "learning rate"))


def read_scalars(run_dir: Path) -> Dict[str, Curve]:
    """Every scalar tag of a run's `tb/` events: {tag: (steps, values)}, sorted by step; a step
    written twice (a resumed run) keeps its last value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((run_dir / "tb").glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard events in {run_dir / 'tb'}")
    by_tag: Dict[str, Dict[int, float]] = {}
    for f in files:  # in the order they were written: later files override earlier steps
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                by_tag.setdefault(tag, {})[int(event.step)] = float(event.value)
    return {tag: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)])) for tag, v in by_tag.items()}


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points (fewer at the start)."""
    if window <= 1 or len(values) == 0:
        return values
    c = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_runs(runs: Sequence[Tuple[str, Dict[str, Curve]]], out: Path, smooth: int = 50) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (tag, title) in zip(axes.ravel(), PANELS):
        for name, curves in runs:
            if tag not in curves:
                continue
            steps, values = curves[tag]
            if tag == "loss/total":
                values = running_mean(values, smooth)
            ax.plot(steps, values, marker="o" if tag.startswith("val/") else None, ms=3, label=name)
        ax.set_title(title + (f", mean of {smooth} logged steps" if tag == "loss/total" and smooth > 1 else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.plot_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with tb/)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--names", nargs="+", help="legend names (default: the folders' names)")
    parser.add_argument("--smooth", type=int, default=50, help="running mean of the training loss, in logged steps")
    args = parser.parse_args(argv)
    names: List[str] = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        print(f"error: {len(names)} names for {len(args.runs)} runs", file=sys.stderr)
        return 2
    try:
        runs = [(n, read_scalars(r)) for n, r in zip(names, args.runs)]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {plot_runs(runs, args.out, args.smooth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
