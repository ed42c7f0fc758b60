"""Training throughput per stage, before and after the speed-ups, measured in one run.

    python benchmarks/train_throughput.py [--encoder mobilenet_v3_small --image-size 96]
        [--batch-size 32] [--threads 2] [--repeats 5] [--out results.json]

Two pipelines train the same network (a training config's encoder + HKMR regressor, batch B):

- before: `training/configs/synthetic_hkmr.yaml` as it ran for the shipped weights: JPEG shards
  decoded and augmented at 224 px (`SyntheticDataset`), normalised to float at 224, resized to the
  input side in the step, NCHW, and the full body model (mesh skinning, pose blend shapes) in the loss;
- after: the pre-rendered store at the input side (`StoreDataset`: uint8 crops, augmented at the
  input side, normalised in the step), channels-last, the joints-only body path in the loss, the
  fused AdamW kernel, HKMR's collapsed passes (training used the joint-by-joint computation before),
  the 5x5 depthwise convolutions' weight gradients as grouped convolutions
  (`training/models/depthwise.py`) and glibc kept from unmapping freed memory (`training/allocator.py`).

Each pipeline runs in its own process (the allocator setting is per process), one thread pool of
`--threads` each; the parent asks them for one stage call at a time, in turn, so only one computes
at any moment.

Stages (samples/s, each timed alone, best of `--repeats` after a warm-up): data loading and
augmentation of a batch (one process), encoder forward + backward, regressor forward + backward,
the loss with its body model (forward + backward), the AdamW step; and the whole step end to end
(data in the same process). Both datasets (64 samples each) are rendered into a temporary folder
first, by the parent alone. Numbers depend on the machine's load: both pipelines are measured in
the same run, stage by stage, alternately, so their ratio is the meaningful figure.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import training.body.pose_sampler  # noqa: E402,F401  (roma before any EGL context)
from training.allocator import keep_freed_memory  # noqa: E402
from training.config import load_config  # noqa: E402
from training.datasets.augment import Augmentation  # noqa: E402
from training.losses import hkmr_loss  # noqa: E402
from training.models.depthwise import use_grouped_weight_grad  # noqa: E402
from training.models.encoders import encoder_normalisation  # noqa: E402
from training.models.mesh_regressor import build_model  # noqa: E402
from training.train import build_adamw, build_prior, loss_body_model, network_input  # noqa: E402
from machine import cpu_model

NUM_SAMPLES = 64


Timer = Callable[[], Tuple[float, float]]  # one call of a stage: (wall seconds, CPU seconds)


def best_rates(timers: Dict[str, Timer], batch: int, repeats: int) -> Dict[str, Dict[str, float]]:
    """Samples per second of each timer (one batch per call) by wall clock and by process CPU time
    (which waits for a core on a loaded machine do not inflate): best of `repeats` after a
    warm-up, the timers called in turn so that a change of the machine's load hits all."""
    times: Dict[str, Dict[str, List[float]]] = {name: {"wall": [], "cpu": []} for name in timers}
    for timer in timers.values():
        timer()
    for _ in range(repeats):
        for name, timer in timers.items():
            wall, cpu = timer()
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    return {name: {k: batch / max(min(v), 1e-9) for k, v in t.items()} for name, t in times.items()}


def make_data(folder: Path, image_size: int) -> None:
    """The JPEG shards at 224 (`folder/shards`) and the store at `image_size` (`folder/store`)."""
    from training.body.body_model import load_body_model
    from training.datasets.store import render_store
    from training.datasets.synthetic import generate_dataset

    generate_dataset(folder / "shards", NUM_SAMPLES, seed=0, body_model=load_body_model(), progress=False)
    render_store(folder / "store", NUM_SAMPLES, seed=0, image_size=image_size, shard_size=NUM_SAMPLES, progress=False)


def collate(dataset, batch: int, offset: int) -> Dict[str, torch.Tensor]:
    import numpy as np
    from torch.utils.data import default_collate

    items = [dataset.sample((offset + i) % len(dataset), np.random.default_rng([offset, i])) for i in range(batch)]
    return default_collate(items)


@dataclass(frozen=True)
class Speedups:
    """What a pipeline uses of the training loop's speed-ups (all off: the loop as it was)."""
    store: bool  # uint8 crops at the input side, else JPEG shards at 224 resized in the step
    joints_only: bool
    channels_last: bool
    fused_adamw: bool
    collapsed: bool
    grouped_depthwise: bool
    keep_freed_memory: bool


PIPELINES = {"before": Speedups(*[False] * 7), "after": Speedups(*[True] * 7)}


class Pipeline:
    """One configuration of the training step, with each stage callable alone."""

    def __init__(self, cfg, dataset, body_model, prior, speedups: Speedups):
        torch.manual_seed(0)
        self.cfg = cfg
        self.dataset = dataset
        self.batch = cfg.optim.batch_size
        self.channels_last = channels_last = speedups.channels_last
        self.model = build_model(cfg.model).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if speedups.grouped_depthwise:
            use_grouped_weight_grad(self.model)
        self.loss_body = loss_body_model(body_model, speedups.joints_only)
        self.prior = prior
        if speedups.fused_adamw:
            self.optimizer = build_adamw(self.model.parameters(), 1e-4, cfg.optim)
        else:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.normalisation = encoder_normalisation(cfg.model.encoder)
        regressor = self.model.regressor
        self.regress = regressor.forward if speedups.collapsed else getattr(regressor, "forward_stepwise",
                                                                             regressor.forward)
        self.offset = 0
        self.sample = collate(dataset, self.batch, 0)
        self.img = network_input(self.sample["img"], cfg.data.image_size, self.normalisation, channels_last)
        with torch.no_grad():
            self.features = self.model.encoder(self.img)
            self.outputs = {k: v.detach() for k, v in self.regress(self.features).items()}

    def data(self) -> None:
        self.offset += self.batch
        batch = collate(self.dataset, self.batch, self.offset)
        network_input(batch["img"], self.cfg.data.image_size, self.normalisation, self.channels_last)

    def encoder(self) -> None:
        self.model.zero_grad(set_to_none=True)
        self.model.encoder(self.img).sum().backward()

    def regressor(self) -> None:
        self.model.zero_grad(set_to_none=True)
        features = self.features.clone().requires_grad_(True)
        out = self.regress(features)
        (out["rotmat"].sum() + out["betas"].sum() + out["cam"].sum()).backward()

    def loss(self) -> None:
        outputs = {k: v.clone().requires_grad_(True) for k, v in self.outputs.items()}
        total, _ = hkmr_loss(outputs, self.sample, self.loss_body, self.prior, self.cfg.loss)
        total.backward()

    def optimiser(self) -> None:
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        self.optimizer.step()

    def step(self) -> None:
        self.offset += self.batch
        batch = collate(self.dataset, self.batch, self.offset)
        img = network_input(batch["img"], self.cfg.data.image_size, self.normalisation, self.channels_last)
        outputs = self.regress(self.model.encoder(img))
        total, _ = hkmr_loss(outputs, batch, self.loss_body, self.prior, self.cfg.loss)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()


STAGES = ("data", "encoder", "regressor", "loss", "optimiser", "step")


def benchmark_config(args: argparse.Namespace):
    """The training config with the command line's network overrides, random weights, on the CPU."""
    overrides = ["model.encoder_weights=null", "device=cpu"]
    if args.encoder:
        overrides.append(f"model.encoder={args.encoder}")
    if args.image_size:
        overrides.append(f"data.image_size={args.image_size}")
    if args.batch_size:
        overrides.append(f"optim.batch_size={args.batch_size}")
    return load_config(args.config, overrides)


def serve_pipeline(conn: Connection, args: argparse.Namespace, speedups: Speedups, data: Path) -> None:
    """A pipeline's own process (its own allocator settings): builds it, then runs and times one
    stage call per request until it receives None."""
    from training.body.body_model import load_body_model
    from training.datasets.store import StoreDataset
    from training.datasets.synthetic import SyntheticDataset

    torch.set_num_threads(args.threads)
    if speedups.keep_freed_memory:
        keep_freed_memory()
    cfg = benchmark_config(args)
    body_model = load_body_model(cfg.model.body_model)
    body_model.requires_grad_(False)
    dataset = (StoreDataset(data / "store", augment=Augmentation()) if speedups.store
               else SyntheticDataset(data / "shards", augment=Augmentation()))
    pipeline = Pipeline(cfg, dataset, body_model, build_prior(cfg, torch.device("cpu"))[0], speedups)
    conn.send("ready")
    for stage in iter(conn.recv, None):
        wall, cpu = time.perf_counter(), time.process_time()
        getattr(pipeline, stage)()
        conn.send((time.perf_counter() - wall, time.process_time() - cpu))


def stage_timer(conn: Connection, stage: str) -> Timer:
    def timer() -> Tuple[float, float]:
        conn.send(stage)
        return conn.recv()
    return timer


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "training/configs/synthetic_hkmr.yaml"))
    parser.add_argument("--encoder", help="override the config's encoder (e.g. efficientnet_lite0)")
    parser.add_argument("--image-size", type=int, help="override the config's input side")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args(argv)
    cfg = benchmark_config(args)
    context = multiprocessing.get_context("spawn")  # no EGL context or torch threads inherited
    with tempfile.TemporaryDirectory() as tmp:
        make_data(Path(tmp), cfg.data.image_size)
        conns, procs = {}, []
        for name, speedups in PIPELINES.items():
            conns[name], child = context.Pipe()
            procs.append(context.Process(target=serve_pipeline, args=(child, args, speedups, Path(tmp)), daemon=True))
            procs[-1].start()
        for conn in conns.values():
            if conn.recv() != "ready":
                raise RuntimeError("a pipeline process failed to start")
        rates: Dict[str, Dict[str, Dict[str, float]]] = {clock: {name: {} for name in PIPELINES}
                                                         for clock in ("cpu", "wall")}
        for stage in STAGES:  # the pipelines alternate within each stage: both see the same load
            stage_rates = best_rates({n: stage_timer(c, stage) for n, c in conns.items()},
                                     cfg.optim.batch_size, args.repeats)
            for name, by_clock in stage_rates.items():
                for clock, rate in by_clock.items():
                    rates[clock][name][stage] = rate
        for conn, proc in zip(conns.values(), procs):
            conn.send(None)
            proc.join()
    result = {
        "machine": f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads",
        "network": f"{cfg.model.encoder} + {cfg.model.regressor} {cfg.model.regressor_kwargs}, "
                   f"{cfg.data.image_size} px, batch {cfg.optim.batch_size}",
        "samples_per_s": rates,
        "speedup": {clock: {s: r["after"][s] / r["before"][s] for s in STAGES} for clock, r in rates.items()},
        "compute_only_samples_per_s": {clock: {n: 1.0 / sum(1.0 / v[s] for s in STAGES[1:-1]) for n, v in r.items()}
                                       for clock, r in rates.items()},
    }
    print(f"{result['network']}; {result['machine']}")
    for clock, title in (("cpu", "by process CPU time"), ("wall", "by wall clock")):
        r = rates[clock]
        print(f"\nsamples/s {title}\n{'stage':<10} {'before':>10} {'after':>10} {'ratio':>8}")
        for s in STAGES:
            print(f"{s:<10} {r['before'][s]:>10.1f} {r['after'][s]:>10.1f} {result['speedup'][clock][s]:>7.2f}x")
        c = result["compute_only_samples_per_s"][clock]
        print(f"{'compute':<10} {c['before']:>10.1f} {c['after']:>10.1f} {c['after'] / c['before']:>7.2f}x"
              "   (encoder + regressor + loss + optimiser: the step with data in a loader worker)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
