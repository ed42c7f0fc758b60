"""Training entry point: `python -m training.train --config training/configs/X.yaml`.

One `Config` describes a run. The loop: encoder + regressor (`build_model`), the losses of the
paper's equation (3) (`hkmr_loss`, on the joints-only body path by default), a pose prior (the VAE
encoder's KL, HMR's discriminator as an ablation, or none), AdamW with an optional warm-up and
cosine schedule, optionally frozen leading encoder stages, mixed precision on a GPU, optional
SMPLify in the loop (SPIN), TensorBoard logs, checkpoints, exact resume, and
DistributedDataParallel under `torchrun`. Images arrive as uint8 (pre-rendered stores) or
ImageNet-normalised floats and are normalised for the encoder in the step (`network_input`).

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from training.config import Config, DataConfig, OptimConfig, config_to_dict, load_config, save_config
from training.datasets.augment import normalise_batch, renormalise, resize_images
from training.models.encoders import IMAGENET_NORMALISATION

Normalisation = Tuple[Tuple[float, float, float], Tuple[float, float, float]]  # (mean, std), 0..1 scale

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")
PRIOR_KINDS = ("vae", "discriminator", "none")
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("auto", "cuda", "cpu")
LR_SCHEDULES = ("constant", "cosine")


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

def _store_sources(cfg: DataConfig, augment) -> List[Dataset]:
    """The pre-rendered stores of `cfg.store_roots`; fixes `cfg.store_samples` to the counts used."""
    from training.datasets.store import StoreDataset

    counts = list(cfg.store_samples) + [0] * (len(cfg.store_roots) - len(cfg.store_samples))
    if len(counts) != len(cfg.store_roots):
        raise ValueError(f"data.store_samples has {len(cfg.store_samples)} entries for {len(cfg.store_roots)} stores")
    sources = []
    for i, root in enumerate(cfg.store_roots):
        if not Path(root).is_dir():
            raise FileNotFoundError(f"store root not found: {root}")
        store = StoreDataset(root, augment=augment, num_samples=counts[i] or None)
        if store.image_size < cfg.image_size:
            raise ValueError(f"store {root} holds {store.image_size} px crops, smaller than data.image_size "
                             f"{cfg.image_size}")
        counts[i] = len(store)
        sources.append(store)
    cfg.store_samples = counts
    return sources


def build_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Synthetic shard folders, pre-rendered stores and SPIN npz datasets, mixed by `cfg.ratios`
    when there are several (in that order)."""
    from training.datasets.augment import Augmentation

    augment = Augmentation(**cfg.augment_kwargs) if cfg.augment else None
    sources: List[Dataset] = []
    for root in cfg.synthetic_roots:
        from training.datasets.synthetic import SyntheticDataset

        if not Path(root).is_dir():
            raise FileNotFoundError(f"synthetic data root not found: {root}")
        sources.append(SyntheticDataset(root, augment=augment))
    if cfg.store_roots and (cfg.synthetic_roots or cfg.spin_datasets):
        raise ValueError("data.store_roots hold uint8 crops at their own size and cannot share a batch with "
                         "data.synthetic_roots or data.spin_datasets; mix stores only with stores")
    stores = _store_sources(cfg, augment)
    if len({store.image_size for store in stores}) > 1:
        raise ValueError(f"data.store_roots have different image sizes: {[s.image_size for s in stores]}")
    sources.extend(stores)
    if cfg.spin_datasets:
        from training.datasets.spin_npz import SpinNpzDataset

        if cfg.spin_root is None or not Path(cfg.spin_root).is_dir():
            raise FileNotFoundError(f"data.spin_root not found: {cfg.spin_root} (needed by {cfg.spin_datasets})")
        for name in cfg.spin_datasets:
            sources.append(SpinNpzDataset.from_root(cfg.spin_root, name, augment=augment, seed=seed,
                                                    image_size=cfg.image_size))
    if not sources:
        raise ValueError("no training data: set data.synthetic_roots, data.store_roots and/or data.spin_datasets")
    for source, name in zip(sources, [*cfg.synthetic_roots, *cfg.store_roots, *cfg.spin_datasets]):
        if len(source) == 0:
            raise ValueError(f"training dataset {name!r} is empty")
    if cfg.ratios and len(cfg.ratios) != len(sources):
        raise ValueError(f"data.ratios has {len(cfg.ratios)} entries for {len(sources)} sources "
                         f"(synthetic roots first, then stores, then spin datasets)")
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


# ----------------------------------------------------------------------------- network input

def network_input(img: torch.Tensor, image_size: int, normalisation: Normalisation,
                  channels_last: bool = False) -> torch.Tensor:
    """A batch of crops as the encoder's input, Bx3xSxS float32.

    img: Bx3xHxW uint8 RGB (stores), or float32 normalised with ImageNet mean/std (the shard and
    SPIN datasets). Normalised with the encoder's (mean, std), then resized to S (normalising is a
    per-channel affine map, so it commutes with the resize)."""
    if img.dtype == torch.uint8:
        x = normalise_batch(img, *normalisation)
    else:
        x = renormalise(img, IMAGENET_NORMALISATION, normalisation)
    x = resize_images(x, image_size)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def loss_body_model(body_model: nn.Module, joints_only: bool) -> nn.Module:
    """The body model the losses call: the joints-only path (same joints, no mesh) or the model."""
    if not joints_only:
        return body_model
    from training.body.joints_only import JointsOnlyBody

    return JointsOnlyBody(body_model).to(next(iter(body_model.buffers())).device)


# ----------------------------------------------------------------------------- validation

@torch.no_grad()
def validate(model: nn.Module, body_model: nn.Module, root: str, cfg: Config,
             device: torch.device) -> Dict[str, float]:
    """MPJPE (hips-centred) and PA-MPJPE in mm on the LSP-14 joints of a held-out synthetic set
    (its first `log.val_samples` samples when set)."""
    from torch.utils.data import Subset

    from training.datasets.synthetic import SyntheticDataset
    from training.metrics import M_TO_MM, mpjpe, pa_mpjpe
    from training.models.encoders import encoder_normalisation

    if not Path(root).is_dir():
        raise FileNotFoundError(f"validation data root not found: {root}")
    dataset: Dataset = SyntheticDataset(root)
    if cfg.log.val_samples > 0:
        dataset = Subset(dataset, range(min(cfg.log.val_samples, len(dataset))))
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=False)
    normalisation = encoder_normalisation(cfg.model.encoder)
    was_training = model.training
    model.eval()
    errors: Dict[str, List[torch.Tensor]] = {"mpjpe": [], "pa_mpjpe": []}
    for batch in loader:
        out = model(network_input(batch["img"].to(device), cfg.data.image_size, normalisation))
        body = body_model(out["pose"][:, -1].float(), out["betas"][:, -1].float())
        pred = body_model.joint_set("lsp14", body)
        gt = batch["joints_3d"][:, :14, :3].to(pred)  # spin24 starts with LSP-14
        errors["mpjpe"].append(mpjpe(pred, gt, root="lsp14") * M_TO_MM)
        errors["pa_mpjpe"].append(pa_mpjpe(pred, gt) * M_TO_MM)
    model.train(was_training)
    return {k: float(torch.cat(v).mean()) for k, v in errors.items()}


# ----------------------------------------------------------------------------- schedules

def lr_at(cfg: OptimConfig, step: int) -> float:
    """Learning rate of the step after `step` steps: linear warm-up, then constant or cosine to
    `lr * min_lr_ratio` at `cfg.steps`. A function of the step only, so a resumed run follows it."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown optim.lr_schedule {cfg.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1.0 + math.cos(math.pi * progress))


def frozen_stages_at(cfg: OptimConfig, step: int) -> int:
    """How many leading encoder stages are frozen at `step`."""
    if cfg.frozen_encoder_stages <= 0 or (cfg.frozen_steps > 0 and step >= cfg.frozen_steps):
        return 0
    return cfg.frozen_encoder_stages


# ----------------------------------------------------------------------------- the run

@dataclass
class TrainResult:
    model: nn.Module  # the trained network (unwrapped from DistributedDataParallel)
    step: int
    losses: List[float]  # total loss of each step this invocation ran (main process)
    checkpoint: Optional[Path]
    metrics: Dict[str, float]


@dataclass
class Run:
    """Everything a training run holds between steps."""
    cfg: Config
    proc: Process
    model: nn.Module
    body_model: nn.Module
    loss_body: nn.Module  # what the losses call (the joints-only path by default)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: bool
    amp_dtype: torch.dtype
    normalisation: Normalisation
    batch_per_process: int
    prior_encoder: Optional[nn.Module] = None
    discriminator: Optional[nn.Module] = None
    disc_optimizer: Optional[torch.optim.Optimizer] = None
    fitter: Optional[nn.Module] = None
    step: int = 0
    frozen: int = -1  # encoder stages frozen now (-1: not applied yet)


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


def check_config(cfg: Config, proc: Process) -> None:
    """Errors a run would otherwise hit later."""
    if cfg.optim.batch_size % proc.world_size:
        raise ValueError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by the "
                         f"{proc.world_size} processes")
    if cfg.optim.amp_dtype not in AMP_DTYPES:
        raise ValueError(f"unknown optim.amp_dtype {cfg.optim.amp_dtype!r}; known: {', '.join(AMP_DTYPES)}")
    lr_at(cfg.optim, 0)  # checks the schedule's name
    if proc.distributed and cfg.optim.frozen_encoder_stages > 0 and cfg.optim.frozen_steps > 0:
        raise ValueError("unfreezing encoder stages during a distributed run is not supported "
                         "(set optim.frozen_steps=0 to keep them frozen)")
    if cfg.model.init_ablation and not cfg.model.init_checkpoint:
        raise ValueError("model.init_ablation needs model.init_checkpoint, the full HKMR it starts from")


def load_initial_weights(model: nn.Module, path: str, ablation: bool = False) -> None:
    """Start a fresh run from the network weights of a released model.pt or a run checkpoint
    (both store them under 'model'); the architecture must match exactly, or with `ablation` be an
    ablation of the checkpoint's full HKMR (`HKMRRegressor.state_from_full`)."""
    from training.models.hkmr_regressor import HKMRRegressor
    from training.models.mesh_regressor import read_checkpoint

    state = read_checkpoint(path)["model"]
    if ablation:
        if not isinstance(model.regressor, HKMRRegressor):
            raise ValueError("model.init_ablation starts an ablated HKMR from a full one; "
                             f"model.regressor is {type(model.regressor).__name__}")
        state = model.regressor.state_from_full(state, "regressor.")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"model.init_checkpoint {path} does not fit model.* of this config: {err}") from None


def build_adamw(params, lr: float, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over all parameters): on a CPU it takes a quarter of
    the per-parameter loop's time, about 5% of a MobileNetV3-small training step."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=True)


def build_run(cfg: Config, proc: Process) -> Run:
    """Network, body model, prior, optimisers and SMPLify of a fresh run (seeded)."""
    from training.body.body_model import load_body_model
    from training.allocator import keep_freed_memory
    from training.models.depthwise import use_grouped_weight_grad
    from training.models.encoders import encoder_normalisation
    from training.models.mesh_regressor import build_model

    check_config(cfg, proc)
    if cfg.optim.threads > 0:
        torch.set_num_threads(cfg.optim.threads)
    if cfg.optim.keep_freed_memory and proc.device.type == "cpu":
        keep_freed_memory()
    seed_everything(cfg.seed)
    device = proc.device
    model = build_model(cfg.model).to(device)
    if cfg.model.init_checkpoint:
        load_initial_weights(model, cfg.model.init_checkpoint, cfg.model.init_ablation)
    if cfg.optim.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.optim.grouped_depthwise_grad and device.type == "cpu":
        use_grouped_weight_grad(model)
    body_model = load_body_model(cfg.model.body_model).to(device)
    body_model.requires_grad_(False)
    prior_encoder, discriminator = build_prior(cfg, device)
    optimizer = build_adamw(model.parameters(), cfg.optim.lr, cfg.optim)
    disc_optimizer = None
    if discriminator is not None:
        disc_optimizer = build_adamw(discriminator.parameters(), cfg.optim.disc_lr, cfg.optim)
    amp = cfg.optim.amp and device.type == "cuda"
    amp_dtype = AMP_DTYPES[cfg.optim.amp_dtype]
    fitter = None
    if cfg.smplify.in_the_loop:
        from training.smplify import build_smplify

        fitter = build_smplify(cfg.smplify, body_model, prior_encoder)
    return Run(cfg=cfg, proc=proc, model=model, body_model=body_model,
               loss_body=loss_body_model(body_model, cfg.loss.joints_only), optimizer=optimizer,
               scaler=torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16),
               amp=amp, amp_dtype=amp_dtype, normalisation=encoder_normalisation(cfg.model.encoder),
               batch_per_process=cfg.optim.batch_size // proc.world_size, prior_encoder=prior_encoder,
               discriminator=discriminator, disc_optimizer=disc_optimizer, fitter=fitter)


def restore(run: Run, out_dir: Path) -> None:
    """Load the latest checkpoint of `out_dir` into the run (weights, optimisers, step, RNG)."""
    ckpt_file = latest_checkpoint(out_dir)
    if ckpt_file is None:
        raise FileNotFoundError(f"--resume: no checkpoint_*.pt in {out_dir}")
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.discriminator is not None:
        if "discriminator" not in ckpt:
            raise ValueError(f"{ckpt_file} has no discriminator, but prior.kind is 'discriminator'")
        run.discriminator.load_state_dict(ckpt["discriminator"])
        run.disc_optimizer.load_state_dict(ckpt["disc_optimizer"])
    run.step = int(ckpt["step"])
    proc = run.proc
    if ckpt["world_size"] != proc.world_size and proc.is_main:
        print(f"resuming a {ckpt['world_size']}-process run with {proc.world_size} processes: "
              "the data order will differ from the uninterrupted run", file=sys.stderr)
    states = ckpt["rng"]
    set_rng_state(states[proc.rank] if proc.rank < len(states) else states[0], proc.device)
    if proc.is_main:
        print(f"resumed from {ckpt_file} at step {run.step}")


def wrap_distributed(run: Run) -> None:
    """DistributedDataParallel around the networks of a multi-process run."""
    if not run.proc.distributed:
        return
    # static graph: the networks have no data-dependent control flow, and some configurations
    # leave parameters unused every step (e.g. HKMR's backward layers with one inner iteration)
    device = run.proc.device
    ids = [device.index] if device.type == "cuda" else None
    run.model = nn.parallel.DistributedDataParallel(run.model, device_ids=ids, static_graph=True)
    if run.discriminator is not None:
        run.discriminator = nn.parallel.DistributedDataParallel(run.discriminator, device_ids=ids, static_graph=True)


def write_checkpoint(run: Run, out_dir: Path) -> Optional[Path]:
    """Save the run at its step (main process) and prune old checkpoints; all processes call it."""
    proc, cfg = run.proc, run.cfg
    states = [None] * proc.world_size
    if proc.distributed:
        dist.all_gather_object(states, rng_state(proc.device))
    else:
        states = [rng_state(proc.device)]
    if not proc.is_main:
        return None
    state = {
        "model": unwrap(run.model).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": run.step,
        "rng": states,
        "world_size": proc.world_size,
        "sampler": {"position": run.step * run.batch_per_process, "batch_per_process": run.batch_per_process},
        "config": config_to_dict(cfg),
    }
    if run.discriminator is not None:
        state["discriminator"] = unwrap(run.discriminator).state_dict()
        state["disc_optimizer"] = run.disc_optimizer.state_dict()
    path = checkpoint_path(out_dir, run.step)
    save_checkpoint(path, state)
    periodic = [p for s, p in list_checkpoints(out_dir) if s != run.step]
    for old in periodic[: max(0, len(periodic) - max(cfg.log.keep_checkpoints - 1, 0))]:
        old.unlink()
    return path


def apply_freezing(run: Run) -> None:
    """Freeze / unfreeze the leading encoder stages the schedule asks for at this step."""
    frozen = frozen_stages_at(run.cfg.optim, run.step)
    if frozen == run.frozen:
        return
    from training.models.encoders import set_frozen_stages

    set_frozen_stages(unwrap(run.model).encoder, frozen)
    run.frozen = frozen


def discriminator_step(run: Run, outputs: Dict[str, torch.Tensor]) -> float:
    """One least-squares GAN step of the discriminator on sampler bodies against the estimates."""
    from training.models.discriminator import discriminator_loss

    cfg, n = run.cfg, run.batch_per_process
    real_rotmat, real_betas = plausible_bodies(n, cfg.seed, run.step, run.proc.rank, run.proc.device)
    # one forward over real and fake together: DDP expects one forward per backward
    logits = run.discriminator(torch.cat([real_rotmat, outputs["rotmat"][:, -1].detach()]),
                               torch.cat([real_betas, outputs["betas"][:, -1].detach()]))
    disc_loss = discriminator_loss(logits[:n], logits[n:])
    run.disc_optimizer.zero_grad(set_to_none=True)
    disc_loss.backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.discriminator.parameters(), cfg.optim.grad_clip)
    run.disc_optimizer.step()
    return float(disc_loss.detach())


def train_step(run: Run, batch: Dict[str, Any]) -> Tuple[float, Dict[str, float], int]:
    """One optimisation step on `batch` (already on the device): (total loss, terms, SMPLify fits used)."""
    from training.losses import hkmr_loss

    cfg = run.cfg
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(cfg.optim, run.step)
    img = network_input(batch["img"], cfg.data.image_size, run.normalisation, cfg.optim.channels_last)
    with torch.autocast(device_type=run.proc.device.type, dtype=run.amp_dtype, enabled=run.amp):
        outputs = run.model(img)
    outputs = {k: v.float() for k, v in outputs.items()}
    fitted = 0
    if run.fitter is not None:
        batch, fitted = smplify_supervision(run.fitter, outputs, batch, cfg.smplify.threshold)
    total, terms = hkmr_loss(outputs, batch, run.loss_body, run.prior_encoder, cfg.loss)
    terms = {k: float(v) for k, v in terms.items()}
    if run.discriminator is not None:
        from training.models.discriminator import adversarial_loss

        disc = unwrap(run.discriminator)
        disc.requires_grad_(False)
        adv = adversarial_loss(disc(outputs["rotmat"][:, -1], outputs["betas"][:, -1]))
        disc.requires_grad_(True)
        total = total + cfg.loss.lambda_adv * adv
        terms["adv"] = float(adv.detach())
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    if cfg.optim.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.discriminator is not None:
        terms["disc"] = discriminator_step(run, outputs)
    run.step += 1
    loss_value = float(total.detach())
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value} at step {run.step}; terms: {terms}")
    return loss_value, terms, fitted


class Logger:
    """TensorBoard scalars (main process), a text line per log step when there is no progress bar."""

    def __init__(self, run: Run, out_dir: Path):
        self.run = run
        self.writer = None
        self.last_time, self.last_step = time.perf_counter(), run.step
        if run.proc.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"))

    def step(self, loss: float, terms: Dict[str, float], fitted: int) -> None:
        run, cfg = self.run, self.run.cfg
        if self.writer is None or not (run.step % cfg.log.log_every == 0 or run.step == cfg.optim.steps):
            return
        now = time.perf_counter()
        rate = (run.step - self.last_step) * cfg.optim.batch_size / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, run.step
        self.writer.add_scalar("loss/total", loss, run.step)
        for name, value in terms.items():
            self.writer.add_scalar(f"loss/{name}", value, run.step)
        lr = run.optimizer.param_groups[0]["lr"]
        self.writer.add_scalar("lr", lr, run.step)
        self.writer.add_scalar("perf/samples_per_s", rate, run.step)
        if run.fitter is not None:
            self.writer.add_scalar("smplify/fits_used", fitted, run.step)
        if not cfg.log.progress:
            print(f"step {run.step} loss {loss:.4f} 3d {terms.get('joints_3d_last', float('nan')):.4f} "
                  f"2d {terms.get('keypoints_2d_last', float('nan')):.4f} lr {lr:.2e} {rate:.1f} samples/s",
                  flush=True)

    def metrics(self, metrics: Dict[str, float]) -> None:
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"val/{name}", value, self.run.step)

    def close(self, metrics: Dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.close()
            if metrics:
                print("validation: " + ", ".join(f"{k} {v:.1f} mm" for k, v in metrics.items()), flush=True)


def due_for_checkpoint(run: Run, last_time: float, stop_at: Optional[int] = None) -> bool:
    cfg = run.cfg
    if run.step % cfg.log.checkpoint_every == 0 or run.step in (cfg.optim.steps, stop_at):
        return True
    return cfg.log.checkpoint_minutes > 0 and time.perf_counter() - last_time >= 60.0 * cfg.log.checkpoint_minutes


def train(cfg: Config, out_dir: str | Path, resume: bool = False, stop_at: Optional[int] = None) -> TrainResult:
    """Run (or continue) the training described by `cfg`, writing into `out_dir`.

    stop_at: stop (with a checkpoint) after this many steps without changing the schedule, which
    still runs to `optim.steps`: a later `resume` continues exactly as if never stopped."""
    out_dir = Path(out_dir)
    proc = setup_process(cfg.device)
    run = build_run(cfg, proc)
    dataset = build_dataset(cfg.data, cfg.seed)  # fixes data.store_samples before the config is saved
    if resume:
        restore(run, out_dir)
    wrap_distributed(run)
    if proc.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    logger = Logger(run, out_dir)
    batches = iter(build_loader(dataset, cfg, proc, run.batch_per_process, start=run.step * run.batch_per_process))
    from tqdm import tqdm

    bar = tqdm(total=cfg.optim.steps, initial=run.step, desc="train", dynamic_ncols=True,
               disable=not (cfg.log.progress and proc.is_main))
    losses: List[float] = []
    metrics: Dict[str, float] = {}
    last_saved: Optional[Path] = None
    saved_time = time.perf_counter()
    run.model.train()
    end = cfg.optim.steps if stop_at is None else min(stop_at, cfg.optim.steps)
    while run.step < end:
        apply_freezing(run)
        loss, terms, fitted = train_step(run, to_device(next(batches), proc.device))
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        logger.step(loss, terms, fitted)
        if cfg.data.val_root and proc.is_main and cfg.log.val_every > 0 and run.step % cfg.log.val_every == 0:
            metrics = validate(unwrap(run.model), run.loss_body, cfg.data.val_root, cfg, proc.device)
            logger.metrics(metrics)
        if due_for_checkpoint(run, saved_time, stop_at):
            last_saved = write_checkpoint(run, out_dir) or last_saved
            saved_time = time.perf_counter()
    bar.close()
    if cfg.data.val_root and proc.is_main and (cfg.log.val_every <= 0 or run.step % cfg.log.val_every):
        metrics = validate(unwrap(run.model), run.loss_body, cfg.data.val_root, cfg, proc.device)
        logger.metrics(metrics)
    logger.close(metrics)
    if proc.distributed:
        dist.barrier()
    return TrainResult(unwrap(run.model), run.step, losses, last_saved, metrics)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train",
                                     description="Train the HKMR or HMR mesh regressor from a YAML config.")
    parser.add_argument("--config", help="YAML config (with --resume, defaults to OUT/config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set optim.lr=1e-4")
    parser.add_argument("--out", default="runs/train", help="output folder: checkpoints, config.yaml, tb/")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--stop-at", type=int, help="stop after this step (checkpointed); the schedule still "
                        "targets optim.steps, so a later --resume continues it exactly")
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
        train(cfg, args.out, resume=args.resume, stop_at=args.stop_at)
    except (FileNotFoundError, ValueError) as e:  # missing files, bad config or data: the message says it
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
