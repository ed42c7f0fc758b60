"""Train the VAE pose prior and save its encoder.

    python -m training.train_prior [--amass DIR_OR_FILE ...] [--steps N] [--out PATH] [--seed S]

With `--amass`, trains on AMASS-style npz files (key `poses`, one row per frame); without it,
on poses from the built-in plausible-pose sampler (`training.body.pose_sampler`). Prints the
reconstruction error and the KL divergence on held-out poses, and how much higher the KL is for
random rotations; saves the encoder only (the decoder is discarded, as in the paper).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import roma
import torch
from tqdm import tqdm

from training.body.pose_sampler import sample_poses
from training.models.pose_prior import (
    DEFAULT_PRIOR_PATH,
    PosePriorConfig,
    PoseVAE,
    body_rotmats,
    kl_divergence,
    save_pose_prior,
)

SMPL_POSE_DIM = 72
BODY_JOINTS_3 = 66  # 22 body joints x 3, shared by SMPL, SMPL-H and SMPL-X


def amass_files(paths: Sequence[str]) -> List[Path]:
    """The npz files named, and those under the folders named (recursively), sorted."""
    files: List[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files += sorted(p.rglob("*.npz"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"AMASS path not found: {p}")
    return files


def smpl_poses_from_array(poses: np.ndarray, source: Path) -> np.ndarray:
    """Nx72 SMPL poses from an AMASS-style `poses` array.

    Nx72 is SMPL already. Wider rows (SMPL-H Nx156, SMPL-X Nx165) share SMPL's first 22 joints,
    but their joints 22 and 23 are finger joints, not SMPL's hands: those are set to zero.
    """
    if poses.ndim != 2 or poses.shape[1] < BODY_JOINTS_3:
        raise ValueError(f"{source}: 'poses' has shape {poses.shape}; expected Nx72 (SMPL) or wider "
                         "(Nx156 SMPL-H, Nx165 SMPL-X)")
    if poses.shape[1] == SMPL_POSE_DIM:
        return poses.astype(np.float32)
    out = np.zeros((poses.shape[0], SMPL_POSE_DIM), dtype=np.float32)
    out[:, :BODY_JOINTS_3] = poses[:, :BODY_JOINTS_3]
    return out


def load_amass_poses(paths: Sequence[str], frame_step: int = 1) -> torch.Tensor:
    """All frames (every `frame_step`-th) of the AMASS-style files, Nx72 float32.

    Files without a `poses` array (AMASS's per-subject `shape.npz`) are skipped.
    """
    files = amass_files(paths)
    chunks = []
    for f in tqdm(files, desc="reading poses", unit="file", disable=len(files) < 20):
        try:
            with np.load(f, allow_pickle=False) as data:
                if "poses" not in data:
                    continue
                chunks.append(smpl_poses_from_array(np.asarray(data["poses"]), f)[::frame_step])
        except (OSError, ValueError) as e:
            if "'poses' has shape" in str(e):
                raise
            raise ValueError(f"{f}: not a readable npz file ({e})") from None
    if not chunks:
        raise ValueError(f"no npz file with a 'poses' array found in {list(paths)}")
    return torch.from_numpy(np.concatenate(chunks))


def random_rotation_poses(n: int, generator: torch.Generator) -> torch.Tensor:
    """Nx72 poses whose body joints are uniformly random rotations: implausible on purpose."""
    quat = torch.randn(n, 24, 4, generator=generator)
    pose = roma.unitquat_to_rotvec(quat / quat.norm(dim=-1, keepdim=True))
    pose[:, 0] = 0.0
    return pose.reshape(n, SMPL_POSE_DIM)


@torch.no_grad()
def evaluate(vae: PoseVAE, poses: torch.Tensor) -> Dict[str, float]:
    """Held-out figures: reconstruction (decoding the mean) in squared error and in degrees, KL."""
    vae.eval()
    out = vae(poses, sample=False)
    target = body_rotmats(poses)
    recon = (out["rotmat"] - target).pow(2).flatten(1).sum(-1).mean().item()
    angle = roma.rotmat_geodesic_distance(out["rotmat"], target).mean().item()
    kl = kl_divergence(out["mu"], out["logvar"]).mean().item()
    vae.train()
    return {"reconstruction": recon, "mean_joint_error_deg": math.degrees(angle), "kl": kl}


def train(poses: torch.Tensor, steps: int, seed: int, config: PosePriorConfig, batch_size: int = 256,
          lr: float = 1e-3, kl_weight: float = 0.05, progress: bool = True) -> tuple:
    """Fit the VAE on Nx72 poses (10% held out, at most 2000). Returns (vae, figures)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(poses), generator=g)
    n_val = min(2000, max(1, len(poses) // 10)) if len(poses) > 1 else 0
    val, train_set = poses[order[:n_val]], poses[order[n_val:]]
    if len(train_set) == 0:
        raise ValueError("need at least 2 poses to train the prior")
    vae = PoseVAE(config)
    vae.encoder.set_input_statistics(train_set)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * 0.05)
    bar = tqdm(range(steps), desc="training pose prior", disable=not progress, file=sys.stdout)
    for _ in bar:
        batch = train_set[torch.randint(len(train_set), (batch_size,), generator=g)]
        terms = vae.losses(batch)
        loss = terms["reconstruction"] + kl_weight * terms["kl"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(recon=f"{terms['reconstruction'].item():.3f}", kl=f"{terms['kl'].item():.1f}")
    figures = evaluate(vae, val if n_val else train_set)
    random_poses = random_rotation_poses(len(val) if n_val else 256, g)
    with torch.no_grad():
        figures["kl_random_rotations"] = vae.encoder.kl(random_poses).mean().item()
    return vae, figures


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train_prior", description=__doc__.split("\n\n")[0])
    parser.add_argument("--amass", nargs="+", metavar="DIR_OR_FILE",
                        help="AMASS-style npz files or folders of them (key 'poses'); default: the pose sampler")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--out", default=str(DEFAULT_PRIOR_PATH), help="where to save the encoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=0.05, help="beta of the VAE objective")
    parser.add_argument("--num-sampled", type=int, default=100000,
                        help="poses drawn from the sampler when no --amass is given")
    parser.add_argument("--frame-step", type=int, default=1, help="use every k-th AMASS frame")
    parser.add_argument("--latent-dim", type=int, default=PosePriorConfig.latent_dim)
    parser.add_argument("--hidden-dim", type=int, default=PosePriorConfig.hidden_dim)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.frame_step < 1:
        parser.error("--steps, --batch-size and --frame-step must be >= 1")

    if args.amass:
        poses = load_amass_poses(args.amass, args.frame_step)
        source = f"AMASS-style npz files: {' '.join(args.amass)}"
    else:
        poses = sample_poses(args.num_sampled, torch.Generator().manual_seed(args.seed))
        source = f"pose sampler: {args.num_sampled} poses, seed {args.seed}"
    print(f"training the pose prior on {len(poses)} poses ({source})")
    config = PosePriorConfig(latent_dim=args.latent_dim, hidden_dim=args.hidden_dim)
    start = time.time()
    vae, figures = train(poses, args.steps, args.seed, config, args.batch_size, args.lr,
                         args.kl_weight, progress=not args.no_progress)
    print(f"held-out reconstruction {figures['reconstruction']:.4f} (squared rotation-matrix error, "
          f"summed over 23 joints), mean joint error {figures['mean_joint_error_deg']:.2f} deg")
    print(f"held-out KL {figures['kl']:.2f} nats; KL of random rotations {figures['kl_random_rotations']:.1f} nats")
    training = {"source": source, "steps": args.steps, "seed": args.seed, "batch_size": args.batch_size,
                "lr": args.lr, "kl_weight": args.kl_weight, "seconds": round(time.time() - start, 1),
                **{k: round(v, 4) for k, v in figures.items()}}
    out = save_pose_prior(vae.encoder, args.out, training)
    print(f"saved the encoder ({out.stat().st_size / 1024:.0f} KiB) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
