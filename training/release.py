"""Turn a training checkpoint into shipped weights: the network's state dict and its config only.

A training checkpoint also holds optimizer moments and RNG states (three times the network's
size); the runtime and the demo need neither. The released file loads with
`training.evaluate.load_method` like any checkpoint.

    python -m training.release --checkpoint runs/synthetic_hkmr/checkpoint_00001200.pt \
        --out training/weights/hkmr_default [--max-mb 25] [--relocate /scratch/acc=data ...]

`--relocate OLD=NEW` rewrites the data paths of the stored config (`data.*`, and the weights a
run started from, `model.init_checkpoint`) that start with OLD, so that shipped weights name the
documented folders rather than the machine the run used.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from training.config import config_from_dict, save_config
from training.models.mesh_regressor import read_checkpoint


def relocate_paths(config: Dict[str, Any], moves: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
    """A copy of a config dict whose `data` string values (and `model.init_checkpoint`) starting
    with OLD start with NEW instead."""
    def move(value):
        if isinstance(value, str):
            for old, new in moves:
                if value == old or value.startswith(old.rstrip("/") + "/"):
                    return new + value[len(old.rstrip("/")):] if value != old else new
            return value
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    out = dict(config)
    out["data"] = {k: move(v) for k, v in config.get("data", {}).items()}
    if "model" in config:
        out["model"] = {k: move(v) if k == "init_checkpoint" else v for k, v in config["model"].items()}
    return out


def release(checkpoint: Path, out_dir: Path, max_mb: float = 25.0,
            relocate: Sequence[Tuple[str, str]] = ()) -> Path:
    """Write `out_dir/model.pt` and `out_dir/config.yaml`; raise if the weights exceed `max_mb`."""
    ckpt = read_checkpoint(checkpoint)
    if not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{checkpoint} is not a training checkpoint (expected 'model' and 'config')")
    config = relocate_paths(ckpt["config"], relocate)
    cfg = config_from_dict(config, str(checkpoint))
    cfg.model.encoder_weights = None  # every weight is in the released file
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.pt"
    state = {k: v.contiguous() for k, v in ckpt["model"].items()}
    torch.save({"model": state, "config": config, "step": ckpt.get("step")}, path)
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
    parser.add_argument("--relocate", action="append", default=[], metavar="OLD=NEW",
                        help="rewrite data paths of the stored config starting with OLD (repeatable)")
    args = parser.parse_args(argv)
    try:
        moves = []
        for item in args.relocate:
            if "=" not in item:
                raise ValueError(f"--relocate {item!r}: expected OLD=NEW")
            moves.append(tuple(item.split("=", 1)))
        release(args.checkpoint, args.out, args.max_mb, moves)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
