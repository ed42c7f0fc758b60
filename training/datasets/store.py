"""A pre-rendered, compact store of synthetic people: uint8 crops at the network's input size + labels.

Rendering (~0.1 s per sample on a CPU) costs far more than a training step's share of a sample, so
the synthetic people are rendered once and then read many times. Each shard holds

    shard_XXXXX.images.npy   N x S x S x 3 uint8 RGB (memory-mapped when read)
    shard_XXXXX.labels.npz   the labels of `training.datasets.synthetic.LABEL_KEYS`

and `manifest.json` records the seed, the input side S, the generator settings and the planned
number of samples. Sample `i` is sample `i` of `SyntheticGenerator(seed)` (its own random draws),
rendered at the 224 px crop and resized to S exactly as training resizes a 224 px crop
(`resize_images`: bilinear, antialias), then rounded to uint8. So any sample can be re-rendered
alone and compared (tests/test_store.py), and shards can be rendered by several processes, in any
order, and resumed: a shard is written to temporary names and renamed when complete, labels last,
so a shard whose labels file exists is complete.

CLI:
    python -m training.datasets.store render --out DIR --num N --seed S [--image-size 128]
        [--shard-size 500] [--processes 2] [--msaa 4]
    python -m training.datasets.store info DIR [--ready]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

FORMAT_NAME = "hkmr-store"
FORMAT_VERSION = 1
DATASET_NAME = "synthetic"


# ---------------------------------------------------------------- layout (pure functions)

def shard_files(root: Path, shard: int) -> Dict[str, Path]:
    """Paths of shard `shard`: images (.npy) and labels (.npz)."""
    return {"images": root / f"shard_{shard:05d}.images.npy", "labels": root / f"shard_{shard:05d}.labels.npz"}


def shard_ranges(num: int, shard_size: int) -> List[range]:
    """Sample indices of each shard."""
    return [range(start, min(start + shard_size, num)) for start in range(0, num, shard_size)]


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """NxHxWx3 uint8 -> Nxsizexsizex3 uint8 with training's resize (bilinear, antialias), rounded."""
    from training.datasets.augment import resize_images

    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    y = resize_images(x, size).round().clamp(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


# ---------------------------------------------------------------- writing

def create_store(out: Union[str, Path], num: int, seed: int, image_size: int, shard_size: int = 500,
                 msaa_samples: int = 4, body_model_file: Optional[str] = None, bystander_prob: float = 0.0) -> Dict:
    """Write (or check against) the manifest of a store; returns it. An existing store with other
    settings raises ValueError, so a resumed render cannot mix two datasets."""
    from training.datasets.synthetic import GeneratorConfig

    if num < 1 or shard_size < 1 or image_size < 8:
        raise ValueError(f"num, shard_size must be positive and image_size >= 8, got {num}, {shard_size}, {image_size}")
    if not 0.0 <= bystander_prob <= 1.0:
        raise ValueError(f"bystander_prob is a probability in [0, 1], got {bystander_prob}")
    root = Path(out)
    cfg = GeneratorConfig(msaa_samples=msaa_samples, bystander_prob=bystander_prob)
    manifest = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "seed": int(seed), "count": int(num),
        "image_size": int(image_size), "shard_size": int(shard_size),
        "generator": json.loads(json.dumps(dataclasses.asdict(cfg))),
        "body_model": body_model_file, "keypoints": "spin24",
    }
    path = root / "manifest.json"
    if path.is_file():
        existing = json.loads(path.read_text())
        # a store written before a generator option existed was rendered with its default
        existing["generator"] = json.loads(json.dumps(dataclasses.asdict(generator_config(existing))))
        if existing != manifest:
            diff = sorted(k for k in manifest if existing.get(k) != manifest[k])
            raise ValueError(f"{path} exists with other settings ({', '.join(diff)}); use another folder")
        return existing
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return manifest


def generator_config(manifest: Dict):
    from training.datasets.synthetic import GeneratorConfig

    values = dict(manifest["generator"])
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return GeneratorConfig(**values)


def render_samples(generator, indices: Sequence[int], image_size: int) -> Dict[str, np.ndarray]:
    """Render `indices` with a `SyntheticGenerator`: {'images': NxSxSx3 uint8, label key: N x ...}."""
    from training.datasets.synthetic import LABEL_KEYS

    samples = []
    batch = generator.cfg.batch_size
    for start in range(0, len(indices), batch):
        samples.extend(generator.generate(list(indices[start:start + batch])))
    out = {key: np.stack([s[key] for s in samples]) for key in LABEL_KEYS}
    out["images"] = resize_uint8(np.stack([s["img"] for s in samples]), image_size)
    return out


def write_shard(root: Path, shard: int, rendered: Dict[str, np.ndarray]) -> None:
    """Write one shard atomically: images then labels (the completion marker), each renamed into place."""
    files = shard_files(root, shard)
    tmp_images = files["images"].with_name(files["images"].name + f".tmp{os.getpid()}")
    with open(tmp_images, "wb") as f:
        np.save(f, rendered["images"])
    os.replace(tmp_images, files["images"])
    tmp_labels = files["labels"].with_name(files["labels"].name + f".tmp{os.getpid()}")
    with open(tmp_labels, "wb") as f:
        np.savez(f, **{k: v for k, v in rendered.items() if k != "images"})
    os.replace(tmp_labels, files["labels"])


def complete_shards(root: Union[str, Path], manifest: Dict) -> List[int]:
    """Shards whose labels file exists (written last, so the shard is complete), in order."""
    root = Path(root)
    n = len(shard_ranges(manifest["count"], manifest["shard_size"]))
    return [s for s in range(n) if shard_files(root, s)["labels"].is_file()]


def ready_samples(root: Union[str, Path], manifest: Dict) -> int:
    """Samples in the gap-free prefix of complete shards: what a `StoreDataset` can read while
    other shards are still being rendered."""
    ranges = shard_ranges(manifest["count"], manifest["shard_size"])
    done = complete_shards(root, manifest)
    prefix = 0
    while prefix < len(done) and done[prefix] == prefix:
        prefix += 1
    return sum(len(ranges[s]) for s in range(prefix))


def render_worker(root: str, worker: int, processes: int, progress: bool = True) -> int:
    """Render the missing shards `worker, worker + processes, ...` of the store in `root`."""
    from training.body.body_model import load_body_model
    from training.datasets.synthetic import SyntheticGenerator

    root_path = Path(root)
    manifest = json.loads((root_path / "manifest.json").read_text())
    done = set(complete_shards(root_path, manifest))
    todo = [s for s in range(worker, len(shard_ranges(manifest["count"], manifest["shard_size"])), processes)
            if s not in done]
    if not todo:
        return 0
    generator = SyntheticGenerator(load_body_model(manifest["body_model"]), manifest["seed"], generator_config(manifest))
    ranges = shard_ranges(manifest["count"], manifest["shard_size"])
    for shard in todo:
        start = time.perf_counter()
        write_shard(root_path, shard, render_samples(generator, ranges[shard], manifest["image_size"]))
        if progress:
            rate = len(ranges[shard]) / (time.perf_counter() - start)
            print(f"worker {worker}: shard {shard} ({len(ranges[shard])} samples, {rate:.1f} samples/s)", flush=True)
    return len(todo)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stopped_with(workers: Sequence[multiprocessing.process.BaseProcess]):
    """Terminate `workers` when the block ends early, by an error, Ctrl-C or SIGTERM: the parent
    killed alone (by `kill`, a job scheduler or a timeout) must not leave orphaned renderers
    holding the CPUs. Complete shards are kept; a rerun renders only the missing ones."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        yield
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
        for w in workers:
            if w.pid is not None:
                w.join()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def render_store(out: Union[str, Path], num: int, seed: int, image_size: int, shard_size: int = 500,
                 processes: int = 1, msaa_samples: int = 4, body_model_file: Optional[str] = None,
                 progress: bool = True, bystander_prob: float = 0.0) -> Dict:
    """Create (or resume) a store and render its missing shards with `processes` processes
    (each its own EGL context). Returns the manifest."""
    manifest = create_store(out, num, seed, image_size, shard_size, msaa_samples, body_model_file, bystander_prob)
    if processes <= 1:
        render_worker(str(out), 0, 1, progress)
    else:
        ctx = multiprocessing.get_context("spawn")  # a fresh EGL context per process
        workers = [ctx.Process(target=render_worker, args=(str(out), k, processes, progress)) for k in range(processes)]
        with stopped_with(workers):
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        failed = [k for k, w in enumerate(workers) if w.exitcode != 0]
        if failed:
            raise RuntimeError(f"render workers {failed} failed; rerun the command to resume")
    return manifest


# ---------------------------------------------------------------- reading

def read_store_manifest(root: Union[str, Path]) -> Dict:
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no store manifest: {path}; render one with "
                                "`python -m training.datasets.store render --out DIR --num N --seed S`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a {FORMAT_NAME} v{FORMAT_VERSION} manifest")
    return manifest


class StoreDataset(torch.utils.data.Dataset):
    """The first `num_samples` samples of a store (all complete shards' samples when None), as the
    training sample dict (`sample_to_tensors`) with `img` a 3xSxS **uint8** tensor: the training
    step normalises for its encoder (`training.models.encoders.encoder_normalisation`).

    A fixed `num_samples` keeps a run exactly resumable while more shards are still being rendered.
    augment: `Augmentation` (or any `augment(sample, rng)`), applied at the store's resolution.
    """

    def __init__(self, root: Union[str, Path], augment: Optional[Callable] = None,
                 num_samples: Optional[int] = None):
        self.root = Path(root)
        self.manifest = read_store_manifest(self.root)
        self.augment = augment
        self.image_size = int(self.manifest["image_size"])
        available = ready_samples(self.root, self.manifest)  # a gap-free prefix defines the indices
        if num_samples is None or num_samples <= 0:
            num_samples = available
        if num_samples > available or num_samples == 0:
            raise ValueError(f"store {self.root} has {available} complete samples in its first shards, "
                             f"{num_samples} requested")
        self.num_samples = int(num_samples)
        self.shard_size = int(self.manifest["shard_size"])
        self.shards = (self.num_samples + self.shard_size - 1) // self.shard_size
        self._images: Dict[int, np.ndarray] = {}
        self._labels: Dict[int, Dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.num_samples

    def _shard(self, shard: int):
        if shard not in self._images:
            files = shard_files(self.root, shard)
            self._images[shard] = np.load(files["images"], mmap_mode="r")
            with np.load(files["labels"], allow_pickle=False) as npz:
                self._labels[shard] = {k: npz[k] for k in npz.files}
        return self._images[shard], self._labels[shard]

    def raw_sample(self, index: int) -> Dict[str, np.ndarray]:
        """Sample `index` as numpy arrays (img SxSx3 uint8), before augmentation."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        shard, offset = divmod(index, self.shard_size)
        images, labels = self._shard(shard)
        return {
            "img": np.array(images[offset]),
            "keypoints_2d": labels["keypoints_2d"][offset],
            "joints_3d": np.concatenate([labels["joints_spin24"][offset], np.ones((24, 1), np.float32)], axis=1),
            "pose": labels["pose"][offset], "betas": labels["betas"][offset],
            "center": labels["center"][offset], "scale": labels["scale"][offset],
            "joints_h36m17": labels["joints_h36m17"][offset],
        }

    def sample(self, index: int, rng: Optional[np.random.Generator] = None) -> Dict[str, object]:
        """Sample `index` with its augmentation drawn from `rng` (one generator per stream position)."""
        from training.datasets.augment import sample_to_tensors

        sample = self.raw_sample(index)
        if self.augment is not None:
            if rng is None:
                raise ValueError("an augmenting StoreDataset needs a random generator per sample")
            sample = self.augment(sample, rng)
        item = sample_to_tensors(sample["img"], sample["keypoints_2d"], sample["joints_3d"], sample["pose"],
                                 sample["betas"], 1.0, 1.0, sample["center"], float(sample["scale"]), DATASET_NAME,
                                 normalise=False)
        return item

    def __getitem__(self, index: int) -> Dict[str, object]:
        return self.sample(index, np.random.default_rng([torch.initial_seed(), index]) if self.augment else None)


# ---------------------------------------------------------------- CLI

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.datasets.store", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render (or resume rendering) a store")
    r.add_argument("--out", required=True)
    r.add_argument("--num", type=int, required=True)
    r.add_argument("--seed", type=int, required=True, help="dataset seed (keep test seeds apart)")
    r.add_argument("--image-size", type=int, default=128, help="stored side S (the network input)")
    r.add_argument("--shard-size", type=int, default=500)
    r.add_argument("--processes", type=int, default=1, help="render processes (one EGL context each)")
    r.add_argument("--msaa", type=int, default=4, help="multisampling of the renderer")
    r.add_argument("--model", help="SMPL-format body model file (default: $HKMR_SMPL_MODEL or anny-smpl)")
    r.add_argument("--bystanders", type=float, default=0.0, metavar="P",
                   help="probability of another person beside the one cropped (default 0)")
    i = sub.add_parser("info", help="print a store's manifest and how many shards are complete")
    i.add_argument("root")
    i.add_argument("--ready", action="store_true",
                   help="print only the number of samples a training run can read now")
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            start = time.perf_counter()
            m = render_store(args.out, args.num, args.seed, args.image_size, args.shard_size, args.processes,
                             args.msaa, args.model, bystander_prob=args.bystanders)
            print(f"{args.out}: {len(complete_shards(args.out, m))} complete shards in "
                  f"{time.perf_counter() - start:.0f} s")
        else:
            m = read_store_manifest(args.root)
            if args.ready:
                print(ready_samples(args.root, m))
                return 0
            done = complete_shards(args.root, m)
            n = len(shard_ranges(m["count"], m["shard_size"]))
            print(json.dumps({**m, "complete_shards": len(done), "shards": n}, indent=2))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
