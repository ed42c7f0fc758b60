"""Training entry point: `python -m training.train --config training/configs/X.yaml`.

One `Config` describes a run. The loop: encoder + regressor (`build_model`), the losses of the
paper's equation (3) (`hkmr_loss`), a pose prior (the VAE encoder's KL, HMR's discriminator as an
ablation, or none), AdamW, mixed precision on a GPU, optional SMPLify in the loop (SPIN), TensorBoard
logs, checkpoints, exact resume, and DistributedDataParallel under `torchrun`.

Determinism: the data order is an infinite stream of per-epoch permutations (DistributedSampler's
split over processes), and every sample is loaded under its own seed derived from (seed, rank,
position in the stream). A sample's augmentation therefore depends neither on the number of loader
workers nor on where a run was interrupted, and a resumed run replays exactly the stream the
uninterrupted run would have seen.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from training.config import Config, DataConfig, config_to_dict, load_config, save_config
from training.datasets.augment import resize_images

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")
PRIOR_KINDS = ("vae", "discriminator", "none")
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("auto", "cuda", "cpu")


# ----------------------------------------------------------------------------- processes

@dataclass
class Process:
    """Where this process stands in a (possibly distributed) run."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_process(device: str = "auto") -> Process:
    """This process's device, and the process group when `torchrun` set WORLD_SIZE > 1
    (nccl on CUDA, gloo on CPU). device: 'auto' (CUDA when available), 'cuda' or 'cpu'."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    torch_device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Process(rank, world_size, local_rank, torch_device)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch and ask torch for deterministic kernels."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state(device: torch.device) -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# ----------------------------------------------------------------------------- data

def build_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Synthetic shard folders and SPIN npz datasets, mixed by `cfg.ratios` when there are several."""
    from training.datasets.augment import Augmentation

    augment = Augmentation(**cfg.augment_kwargs) if cfg.augment else None
    sources: List[Dataset] = []
    for root in cfg.synthetic_roots:
        from training.datasets.synthetic import SyntheticDataset

        if not Path(root).is_dir():
            raise FileNotFoundError(f"synthetic data root not found: {root}")
        sources.append(SyntheticDataset(root, augment=augment))
    if cfg.spin_datasets:
        from training.datasets.spin_npz import SpinNpzDataset

        if cfg.spin_root is None or not Path(cfg.spin_root).is_dir():
            raise FileNotFoundError(f"data.spin_root not found: {cfg.spin_root} (needed by {cfg.spin_datasets})")
        for name in cfg.spin_datasets:
            sources.append(SpinNpzDataset.from_root(cfg.spin_root, name, augment=augment, seed=seed,
                                                    image_size=cfg.image_size))
    if not sources:
        raise ValueError("no training data: set data.synthetic_roots and/or data.spin_datasets")
    for source, name in zip(sources, [*cfg.synthetic_roots, *cfg.spin_datasets]):
        if len(source) == 0:
            raise ValueError(f"training dataset {name!r} is empty")
    if cfg.ratios and len(cfg.ratios) != len(sources):
        raise ValueError(f"data.ratios has {len(cfg.ratios)} entries for {len(sources)} sources "
                         f"(synthetic roots first, then spin datasets)")
    if len(sources) == 1:
        return sources[0]
    from training.datasets.mixed import MixedDataset

    return MixedDataset(sources, cfg.ratios or None, seed=seed)


class StreamSampler(Sampler):
    """Infinite stream of `(dataset index, epoch, stream position)` for one process, from `start` on.

    Epoch e is DistributedSampler's shuffled split for (seed, e); position p of the stream is item
    `p % n` of epoch `p // n`, n being the per-process epoch length, so the stream can be restarted
    at any position.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.split = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                        seed=seed, drop_last=False)
        self.start = start

    def __iter__(self) -> Iterator[Tuple[int, int, int]]:
        n = len(self.split)
        position = self.start
        while True:
            epoch, offset = divmod(position, n)
            self.split.set_epoch(epoch)
            for index in list(self.split)[offset:]:
                yield index, epoch, position
                position += 1


class SeededSamples(Dataset):
    """Loads item `index` of an epoch under a seed of its own, from (seed, rank, stream position).

    A dataset with `sample(index, rng)` gets a generator with that seed; any other is indexed with
    python's, numpy's and torch's generators seeded with it. Datasets that draw by epoch
    (`set_epoch`: the mixed and SPIN datasets) are told the epoch of each item, so this works the
    same in the main process and in loader workers. The caller's
    random states are restored afterwards, so loading in the main process (num_workers=0) does not
    disturb the training RNG. Adds `index` to the sample.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int, int]) -> Dict[str, Any]:
        index, epoch, position = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        sample_seed = int(np.random.SeedSequence([self.seed, self.rank, position]).generate_state(1)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(sample_seed)
                np.random.seed(sample_seed)
                torch.manual_seed(sample_seed)
                if hasattr(self.dataset, "sample"):  # draws its augmentation from the generator given
                    sample = dict(self.dataset.sample(index, np.random.default_rng(sample_seed)))
                else:
                    sample = dict(self.dataset[index])
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        sample["index"] = index
        return sample


def build_loader(dataset: Dataset, cfg: Config, proc: Process, batch_per_process: int,
                 start: int) -> DataLoader:
    sampler = StreamSampler(dataset, cfg.seed, proc.rank, proc.world_size, start)
    return DataLoader(SeededSamples(dataset, cfg.seed, proc.rank), batch_size=batch_per_process,
                      sampler=sampler, num_workers=cfg.data.num_workers, drop_last=True,
                      pin_memory=proc.device.type == "cuda",
                      generator=torch.Generator().manual_seed(cfg.seed))


def to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ----------------------------------------------------------------------------- prior and SMPLify

def build_prior(cfg: Config, device: torch.device) -> Tuple[Optional[nn.Module], Optional[nn.Module]]:
    """(VAE encoder or None, discriminator or None) for `cfg.prior.kind`."""
    kind = cfg.prior.kind
    if kind not in PRIOR_KINDS:
        raise ValueError(f"unknown prior.kind {kind!r}; known: {', '.join(PRIOR_KINDS)}")
    if kind == "vae":
        from training.models.pose_prior import load_pose_prior

        encoder = load_pose_prior(cfg.prior.vae_path).to(device).eval()
        encoder.requires_grad_(False)
        return encoder, None
    if kind == "discriminator":
        from training.models.discriminator import PoseShapeDiscriminator

        return None, PoseShapeDiscriminator().to(device)
    return None, None


def smplify_supervision(fitter: nn.Module, outputs: Dict[str, torch.Tensor], batch: Dict[str, Any],
                        threshold: float) -> Tuple[Dict[str, Any], int]:
    """SPIN's in-the-loop step for the samples without SMPL ground truth.

    The regressor's final estimate initialises SMPLify on the sample's 2D keypoints; a fit whose
    reprojection loss is below `threshold` and below that of the regressor's own estimate becomes the
    sample's pseudo ground truth (`pose`, `betas`, `has_smpl` = 1) for this step. Returns the new
    batch and the number of samples that took a fit.
    """
    from training.smplify import weak_perspective_to_translation

    visible = batch["keypoints_2d"][..., 2].sum(-1) > 0
    todo = torch.nonzero((batch["has_smpl"] < 0.5) & visible).flatten()
    if todo.numel() == 0:
        return batch, 0
    pose = outputs["pose"][todo, -1].detach().float()
    betas = outputs["betas"][todo, -1].detach().float()
    cam = outputs["cam"][todo, -1].detach().float()
    keypoints = batch["keypoints_2d"][todo].float()
    with torch.autocast(device_type=pose.device.type, enabled=False):
        fit = fitter(pose, betas, cam, keypoints)
        initial = fitter.fitting_loss(
            pose, betas, weak_perspective_to_translation(cam, fitter.focal_length, fitter.image_res), keypoints)
    good = (fit.reprojection_loss < threshold) & (fit.reprojection_loss < initial)
    chosen = todo[good]
    batch = dict(batch)
    batch["pose"] = batch["pose"].clone()
    batch["betas"] = batch["betas"].clone()
    batch["has_smpl"] = batch["has_smpl"].clone()
    batch["pose"][chosen] = fit.pose[good].to(batch["pose"].dtype)
    batch["betas"][chosen] = fit.betas[good].to(batch["betas"].dtype)
    batch["has_smpl"][chosen] = 1.0
    return batch, int(chosen.numel())


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"checkpoint_{step:08d}.pt"


def list_checkpoints(out_dir: Path) -> List[Tuple[int, Path]]:
    """(step, path) of the checkpoints in `out_dir`, oldest first."""
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    found = list_checkpoints(Path(out_dir))
    return found[-1][1] if found else None


def unwrap(module: Optional[nn.Module]) -> Optional[nn.Module]:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed), so an interruption never leaves half a file."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- validation

@torch.no_grad()
def validate(model: nn.Module, body_model: nn.Module, root: str, cfg: Config,
             device: torch.device) -> Dict[str, float]:
    """MPJPE (hips-centred) and PA-MPJPE in mm on the LSP-14 joints of a held-out synthetic set."""
    from training.datasets.synthetic import SyntheticDataset
    from training.metrics import M_TO_MM, mpjpe, pa_mpjpe

    if not Path(root).is_dir():
        raise FileNotFoundError(f"validation data root not found: {root}")
    loader = DataLoader(SyntheticDataset(root), batch_size=cfg.optim.batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    errors: Dict[str, List[torch.Tensor]] = {"mpjpe": [], "pa_mpjpe": []}
    for batch in loader:
        out = model(resize_images(batch["img"].to(device), cfg.data.image_size))
        body = body_model(out["pose"][:, -1].float(), out["betas"][:, -1].float())
        pred = body_model.joint_set("lsp14", body)
        gt = batch["joints_3d"][:, :14, :3].to(pred)  # spin24 starts with LSP-14
        errors["mpjpe"].append(mpjpe(pred, gt, root="lsp14") * M_TO_MM)
        errors["pa_mpjpe"].append(pa_mpjpe(pred, gt) * M_TO_MM)
    model.train(was_training)
    return {k: float(torch.cat(v).mean()) for k, v in errors.items()}


# ----------------------------------------------------------------------------- training

@dataclass
class TrainResult:
    model: nn.Module  # the trained network (unwrapped from DistributedDataParallel)
    step: int
    losses: List[float]  # total loss of each step this invocation ran (main process)
    checkpoint: Optional[Path]
    metrics: Dict[str, float]


def plausible_bodies(n: int, seed: int, step: int, rank: int, device: torch.device
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's "real" examples: rotmat Nx24x3x3 from the plausible-pose sampler (the
    poses the VAE prior learns) and betas ~ N(0, I), drawn from (seed, step, rank) alone."""
    from training.body.pose_sampler import sample_poses
    from training.geometry import aa_to_rotmat

    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank, 1]).generate_state(1)[0]))
    pose = sample_poses(n, generator)
    betas = torch.randn(n, 10, generator=generator)
    return aa_to_rotmat(pose.reshape(n, 24, 3)).to(device), betas.to(device)


def train(cfg: Config, out_dir: str | Path, resume: bool = False) -> TrainResult:
    """Run (or continue) the training described by `cfg`, writing into `out_dir`."""
    from training.body.body_model import load_body_model
    from training.losses import hkmr_loss
    from training.models.mesh_regressor import build_model

    out_dir = Path(out_dir)
    proc = setup_process(cfg.device)
    if cfg.optim.batch_size % proc.world_size:
        raise ValueError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by the "
                         f"{proc.world_size} processes")
    batch_per_process = cfg.optim.batch_size // proc.world_size
    if cfg.optim.amp_dtype not in AMP_DTYPES:
        raise ValueError(f"unknown optim.amp_dtype {cfg.optim.amp_dtype!r}; known: {', '.join(AMP_DTYPES)}")
    seed_everything(cfg.seed)
    device = proc.device

    model = build_model(cfg.model).to(device)
    body_model = load_body_model(cfg.model.body_model).to(device)
    body_model.requires_grad_(False)
    prior_encoder, discriminator = build_prior(cfg, device)
    dataset = build_dataset(cfg.data, cfg.seed)

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay)
    disc_optimizer = None
    if discriminator is not None:
        disc_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=cfg.optim.disc_lr,
                                           betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
    amp = cfg.optim.amp and device.type == "cuda"
    amp_dtype = AMP_DTYPES[cfg.optim.amp_dtype]
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)

    fitter = None
    if cfg.smplify.in_the_loop:
        from training.smplify import build_smplify

        fitter = build_smplify(cfg.smplify, body_model, prior_encoder)

    step = 0
    if resume:
        ckpt_file = latest_checkpoint(out_dir)
        if ckpt_file is None:
            raise FileNotFoundError(f"--resume: no checkpoint_*.pt in {out_dir}")
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if discriminator is not None:
            if "discriminator" not in ckpt:
                raise ValueError(f"{ckpt_file} has no discriminator, but prior.kind is 'discriminator'")
            discriminator.load_state_dict(ckpt["discriminator"])
            disc_optimizer.load_state_dict(ckpt["disc_optimizer"])
        step = int(ckpt["step"])
        if ckpt["world_size"] != proc.world_size and proc.is_main:
            print(f"resuming a {ckpt['world_size']}-process run with {proc.world_size} processes: "
                  "the data order will differ from the uninterrupted run", file=sys.stderr)
        states = ckpt["rng"]
        set_rng_state(states[proc.rank] if proc.rank < len(states) else states[0], device)
        if proc.is_main:
            print(f"resumed from {ckpt_file} at step {step}")

    if proc.distributed:
        # static graph: the networks have no data-dependent control flow, and some configurations
        # leave parameters unused every step (e.g. HKMR's backward layers with one inner iteration)
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)
        if discriminator is not None:
            discriminator = nn.parallel.DistributedDataParallel(discriminator, device_ids=ids, static_graph=True)

    writer = None
    if proc.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))

    loader = build_loader(dataset, cfg, proc, batch_per_process, start=step * batch_per_process)
    batches = iter(loader)
    from tqdm import tqdm

    bar = tqdm(total=cfg.optim.steps, initial=step, desc="train", dynamic_ncols=True,
               disable=not (cfg.log.progress and proc.is_main))
    losses: List[float] = []
    metrics: Dict[str, float] = {}
    last_saved: Optional[Path] = None
    model.train()

    def checkpoint() -> Optional[Path]:
        states = [None] * proc.world_size
        if proc.distributed:
            dist.all_gather_object(states, rng_state(device))
        else:
            states = [rng_state(device)]
        if not proc.is_main:
            return None
        state = {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "rng": states,
            "world_size": proc.world_size,
            "sampler": {"position": step * batch_per_process, "batch_per_process": batch_per_process},
            "config": config_to_dict(cfg),
        }
        if discriminator is not None:
            state["discriminator"] = unwrap(discriminator).state_dict()
            state["disc_optimizer"] = disc_optimizer.state_dict()
        path = checkpoint_path(out_dir, step)
        save_checkpoint(path, state)
        periodic = [p for s, p in list_checkpoints(out_dir) if s != step]
        for old in periodic[: max(0, len(periodic) - max(cfg.log.keep_checkpoints - 1, 0))]:
            old.unlink()
        return path

    while step < cfg.optim.steps:
        batch = to_device(next(batches), device)
        img = resize_images(batch["img"], cfg.data.image_size)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp):
            outputs = model(img)
        outputs = {k: v.float() for k, v in outputs.items()}

        fitted = 0
        if fitter is not None:
            batch, fitted = smplify_supervision(fitter, outputs, batch, cfg.smplify.threshold)

        total, terms = hkmr_loss(outputs, batch, unwrap(body_model), prior_encoder, cfg.loss)
        terms = {k: float(v) for k, v in terms.items()}
        if discriminator is not None:
            from training.models.discriminator import adversarial_loss

            disc = unwrap(discriminator)
            disc.requires_grad_(False)
            adv = adversarial_loss(disc(outputs["rotmat"][:, -1], outputs["betas"][:, -1]))
            disc.requires_grad_(True)
            total = total + cfg.loss.lambda_adv * adv
            terms["adv"] = float(adv.detach())

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()

        if discriminator is not None:
            from training.models.discriminator import discriminator_loss

            real_rotmat, real_betas = plausible_bodies(batch_per_process, cfg.seed, step, proc.rank, device)
            # one forward over real and fake together: DDP expects one forward per backward
            logits = discriminator(torch.cat([real_rotmat, outputs["rotmat"][:, -1].detach()]),
                                   torch.cat([real_betas, outputs["betas"][:, -1].detach()]))
            disc_loss = discriminator_loss(logits[:batch_per_process], logits[batch_per_process:])
            disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(discriminator.parameters(), cfg.optim.grad_clip)
            disc_optimizer.step()
            terms["disc"] = float(disc_loss.detach())

        step += 1
        loss_value = float(total.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at step {step}; terms: {terms}")
        losses.append(loss_value)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if writer is not None and (step % cfg.log.log_every == 0 or step == cfg.optim.steps):
            writer.add_scalar("loss/total", loss_value, step)
            for name, value in terms.items():
                writer.add_scalar(f"loss/{name}", value, step)
            writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
            if fitter is not None:
                writer.add_scalar("smplify/fits_used", fitted, step)
        if cfg.data.val_root and proc.is_main and cfg.log.val_every > 0 and step % cfg.log.val_every == 0:
            metrics = validate(unwrap(model), body_model, cfg.data.val_root, cfg, device)
            for name, value in metrics.items():
                writer.add_scalar(f"val/{name}", value, step)
        if step % cfg.log.checkpoint_every == 0 or step == cfg.optim.steps:
            last_saved = checkpoint() or last_saved
    bar.close()

    if cfg.data.val_root and proc.is_main and (cfg.log.val_every <= 0 or step % cfg.log.val_every):
        metrics = validate(unwrap(model), body_model, cfg.data.val_root, cfg, device)
        for name, value in metrics.items():
            writer.add_scalar(f"val/{name}", value, step)
    if writer is not None:
        writer.close()
        if metrics:
            print("validation: " + ", ".join(f"{k} {v:.1f} mm" for k, v in metrics.items()))
    if proc.distributed:
        dist.barrier()
    return TrainResult(unwrap(model), step, losses, last_saved, metrics)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train",
                                     description="Train the HKMR or HMR mesh regressor from a YAML config.")
    parser.add_argument("--config", help="YAML config (with --resume, defaults to OUT/config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set optim.lr=1e-4")
    parser.add_argument("--out", default="runs/train", help="output folder: checkpoints, config.yaml, tb/")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    config_path = args.config
    if config_path is None:
        if not args.resume:
            raise SystemExit("--config is required (or --resume with an OUT/config.yaml)")
        config_path = Path(args.out) / "config.yaml"
    try:
        cfg = load_config(config_path, args.overrides)
        train(cfg, args.out, resume=args.resume)
    except (FileNotFoundError, ValueError) as e:  # missing files, bad config or data: the message says it
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
