"""Several datasets drawn by ratio, as SPIN's MixedDataset, but reproducible.

Item `index` of epoch `epoch` picks its source dataset with probability `ratio / sum(ratios)` and
a sample in it uniformly, from a generator seeded by `(seed, epoch, index)`: the data order depends
only on the seed, the epoch and the sampler, not on workers or processes, so a resumed run sees
the same data. A source with a `sample(index, rng)` method (SpinNpzDataset, and any dataset that
follows the same protocol) gets that generator for its augmentation too; others are indexed.

With DistributedDataParallel, wrap it in a `DistributedSampler` (over `len(mixed)`) and call
`mixed.set_epoch(epoch)` with `sampler.set_epoch(epoch)` before each epoch (DataLoader workers
copy the dataset when an epoch's iteration starts, so do not use `persistent_workers=True`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset


def normalise_ratios(ratios: Optional[Sequence[float]], count: int) -> np.ndarray:
    """Sampling probabilities from `ratios` (None or empty = uniform); ValueError when invalid."""
    if count <= 0:
        raise ValueError("a mixed dataset needs at least one source dataset")
    if ratios is None or len(ratios) == 0:
        return np.full(count, 1.0 / count)
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (count,):
        raise ValueError(f"got {len(r)} ratio(s) for {count} dataset(s): one ratio per dataset")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"ratios must be finite and non-negative, got {list(ratios)}")
    if r.sum() <= 0:
        raise ValueError(f"ratios must not all be zero, got {list(ratios)}")
    return r / r.sum()


class MixedDataset(Dataset):
    """Draws each item from one of `datasets` with probabilities proportional to `ratios`.

    `length` (the items of one epoch) defaults to the largest source's length, as SPIN.
    """

    def __init__(self, datasets: Sequence[Dataset], ratios: Optional[Sequence[float]] = None,
                 length: Optional[int] = None, seed: int = 0):
        self.datasets = list(datasets)
        self.probabilities = normalise_ratios(ratios, len(self.datasets))
        for i, (ds, p) in enumerate(zip(self.datasets, self.probabilities)):
            if p > 0 and len(ds) == 0:
                raise ValueError(f"source dataset {i} ({type(ds).__name__}) is empty but has "
                                 f"ratio {p:.3g}")
        self.length = int(length) if length is not None else max(len(ds) for ds in self.datasets)
        if self.length <= 0:
            raise ValueError(f"a mixed dataset needs a positive length, got {self.length}")
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Changes the draws of every index; passed on to sources that have `set_epoch`."""
        self.epoch = int(epoch)
        for ds in self.datasets:
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mixed dataset of {self.length}")
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def locate(self, index: int) -> tuple[int, int]:
        """(source dataset, index in it) of item `index` in this epoch, without loading it."""
        return self._draw(self._rng(index))

    def _draw(self, rng: np.random.Generator) -> tuple[int, int]:
        source = int(rng.choice(len(self.datasets), p=self.probabilities))
        return source, int(rng.integers(len(self.datasets[source])))

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = self._rng(index)
        source, sub_index = self._draw(rng)
        ds = self.datasets[source]
        if hasattr(ds, "sample"):
            return ds.sample(sub_index, rng)
        return ds[sub_index]
