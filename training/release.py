"""Turn a training checkpoint into shipped weights: the network's state dict and its config only.

A training checkpoint also holds optimizer moments and RNG states (three times the network's
size); the runtime and the demo need neither. The released file loads with
`training.evaluate.load_method` like any checkpoint.

    python -m training.release --checkpoint runs/synthetic_hkmr/checkpoint_00001200.pt \
        --out training/weights/hkmr_default [--max-mb 25]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from training.config import config_from_dict, save_config


def release(checkpoint: Path, out_dir: Path, max_mb: float = 25.0) -> Path:
    """Write `out_dir/model.pt` and `out_dir/config.yaml`; raise if the weights exceed `max_mb`."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{checkpoint} is not a training checkpoint (expected 'model' and 'config')")
    cfg = config_from_dict(ckpt["config"], str(checkpoint))
    cfg.model.encoder_weights = None  # every weight is in the released file
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.pt"
    state = {k: v.contiguous() for k, v in ckpt["model"].items()}
    torch.save({"model": state, "config": ckpt["config"], "step": ckpt.get("step")}, path)
    save_config(cfg, out_dir / "config.yaml")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_mb:
        path.unlink()
        raise ValueError(f"released weights are {size_mb:.1f} MB, over the {max_mb} MB limit")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    print(f"wrote {path} ({size_mb:.1f} MB, sha256 {digest}…, step {ckpt.get('step')}) and its config.yaml")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-mb", type=float, default=25.0)
    args = parser.parse_args(argv)
    try:
        release(args.checkpoint, args.out, args.max_mb)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
