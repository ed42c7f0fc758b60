"""Real data: SPIN's preprocessed `.npz` annotation files ("dataset_extras") and their images.

Each file holds, per person instance: `imgname` (image path relative to the dataset's image
folder), `center` (Nx2, pixels), `scale` (N, box side / 200, SPIN's 1.2 padding already
included: used as is), `part` (Nx24x3 spin24 keypoints in full-image pixels + visibility) and
optionally `S` (Nx24x4 3D joints in metres + confidence), `pose` (Nx72), `shape` (Nx10) and
`has_smpl` (N). Missing optional keys give zeros with `has_smpl` / `has_joints_3d` = 0; `openpose`,
`gender` and other keys are ignored. See docs/data.md for the folder layout.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import cv2
import numpy as np
from torch.utils.data import Dataset

from training.datasets.augment import Augmentation, AugmentationParams, sample_to_tensors
from training.datasets.crop import (CROP_SIZE, crop_transform, normalise_keypoints,
                                    transform_points)

log = logging.getLogger(__name__)

NUM_SPIN_JOINTS = 24
EXTRAS_DIR = "dataset_extras"  # SPIN's folder of npz files under the data root
REQUIRED_KEYS = ("imgname", "center", "scale")


@dataclass(frozen=True)
class SpinDatasetSpec:
    """Where one of SPIN's datasets lives under the data root."""
    npz_file: str  # under `<root>/dataset_extras/`
    image_dir: str  # under `<root>/`; `imgname` is relative to it
    split: str  # 'train' | 'test'


SPIN_DATASETS: Dict[str, SpinDatasetSpec] = {
    "h36m": SpinDatasetSpec("h36m_train.npz", "h36m", "train"),
    "mpi-inf-3dhp": SpinDatasetSpec("mpi_inf_3dhp_train.npz", "mpi_inf_3dhp", "train"),
    "lsp-orig": SpinDatasetSpec("lsp_dataset_original_train.npz", "lsp_dataset_original", "train"),
    "lspet": SpinDatasetSpec("hr-lspet_train.npz", "hr-lspet", "train"),
    "mpii": SpinDatasetSpec("mpii_train.npz", "mpii", "train"),
    "coco": SpinDatasetSpec("coco_2014_train.npz", "coco", "train"),
    "3dpw": SpinDatasetSpec("3dpw_test.npz", "3DPW", "test"),
    "h36m-p1": SpinDatasetSpec("h36m_valid_protocol1.npz", "h36m", "test"),
    "h36m-p2": SpinDatasetSpec("h36m_valid_protocol2.npz", "h36m", "test"),
    "lsp": SpinDatasetSpec("lsp_dataset_test.npz", "lsp_dataset", "test"),
    "mpi-inf-3dhp-test": SpinDatasetSpec("mpi_inf_3dhp_valid.npz", "mpi_inf_3dhp", "test"),
}


def spin_dataset_spec(name: str) -> SpinDatasetSpec:
    """The registry entry of `name`; ValueError listing the known names otherwise."""
    if name not in SPIN_DATASETS:
        raise ValueError(f"unknown SPIN dataset {name!r} (known: {', '.join(SPIN_DATASETS)})")
    return SPIN_DATASETS[name]


def spin_dataset_paths(root: Union[str, Path], name: str) -> Tuple[Path, Path]:
    """(npz file, image folder) of dataset `name` under the data root `root`."""
    spec = spin_dataset_spec(name)
    root = Path(root)
    return root / EXTRAS_DIR / spec.npz_file, root / spec.image_dir


def _load_annotations(npz_path: Path) -> Dict[str, np.ndarray]:
    """Read and check one SPIN npz file; every error names the file."""
    if not npz_path.is_file():
        raise FileNotFoundError(f"SPIN annotation file not found: {npz_path}")
    try:
        with np.load(npz_path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # zip, header and pickle errors all mean an unreadable file
        raise ValueError(f"{npz_path}: not a readable npz file ({e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{npz_path}: missing required key(s) {', '.join(missing)} "
                         f"(found: {', '.join(sorted(data)) or 'none'})")
    n = len(data["imgname"])
    expected = {"center": (n, 2), "scale": (n,), "part": (n, NUM_SPIN_JOINTS, 3),
                "pose": (n, 72), "shape": (n, 10), "has_smpl": (n,)}
    if "scale" in data and data["scale"].ndim == 2 and data["scale"].shape[1] == 1:
        data["scale"] = data["scale"][:, 0]
    if "S" in data and data["S"].shape == (n, NUM_SPIN_JOINTS, 3):  # no confidence column
        data["S"] = np.concatenate([data["S"], np.ones((n, NUM_SPIN_JOINTS, 1))], axis=2)
    expected["S"] = (n, NUM_SPIN_JOINTS, 4)
    for key, shape in expected.items():
        if key in data and data[key].shape != shape:
            raise ValueError(f"{npz_path}: key {key!r} has shape {data[key].shape}, expected "
                             f"{shape} for {n} images")
    return data


class SpinNpzDataset(Dataset):
    """One SPIN-preprocessed dataset; items are the sample dicts of docs/architecture.md.

    Training augmentation (`augment`, only when `is_train`) is drawn from a generator seeded by
    `(seed, epoch, index)`, so a resumed run sees the same data; call `set_epoch` each epoch.
    An image that is missing or does not decode raises (FileNotFoundError / ValueError naming
    it); with `skip_bad_images=True` it is logged and the next index is used instead.
    """

    def __init__(self, npz_path: Union[str, Path], img_root: Union[str, Path], dataset_name: str,
                 augment: Optional[Augmentation] = None, is_train: bool = True, seed: int = 0,
                 skip_bad_images: bool = False, image_size: int = CROP_SIZE):
        spin_dataset_spec(dataset_name)  # validates the name
        self.npz_path = Path(npz_path)
        self.img_root = Path(img_root)
        self.dataset_name = dataset_name
        self.augment = augment
        self.is_train = is_train
        self.seed = int(seed)
        self.epoch = 0
        self.skip_bad_images = skip_bad_images
        self.image_size = int(image_size)
        data = _load_annotations(self.npz_path)
        if not self.img_root.is_dir():
            raise FileNotFoundError(f"image folder of {dataset_name!r} not found: {self.img_root}")
        n = len(data["imgname"])
        self.imgname = [x.decode() if isinstance(x, bytes) else str(x) for x in data["imgname"]]
        self.center = data["center"].astype(np.float64)
        self.scale = data["scale"].astype(np.float64)
        self.keypoints = (data["part"].astype(np.float64) if "part" in data
                          else np.zeros((n, NUM_SPIN_JOINTS, 3)))
        if "S" in data:
            self.joints_3d = data["S"].astype(np.float64)
            self.has_joints_3d = (self.joints_3d[:, :, 3] > 0).any(axis=1).astype(np.float32)
        else:
            self.joints_3d = np.zeros((n, NUM_SPIN_JOINTS, 4))
            self.has_joints_3d = np.zeros(n, dtype=np.float32)
        has_params = "pose" in data and "shape" in data
        self.pose = data["pose"].astype(np.float64) if "pose" in data else np.zeros((n, 72))
        self.betas = data["shape"].astype(np.float64) if "shape" in data else np.zeros((n, 10))
        if has_params:
            self.has_smpl = (data["has_smpl"].astype(np.float32) if "has_smpl" in data
                             else np.ones(n, dtype=np.float32))
        else:
            self.has_smpl = np.zeros(n, dtype=np.float32)

    @classmethod
    def from_root(cls, root: Union[str, Path], dataset_name: str, **kwargs) -> "SpinNpzDataset":
        """The dataset `dataset_name` in SPIN's layout under `root` (docs/data.md)."""
        npz_path, img_root = spin_dataset_paths(root, dataset_name)
        return cls(npz_path, img_root, dataset_name, **kwargs)

    def __len__(self) -> int:
        return len(self.imgname)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> Dict[str, object]:
        return self.sample(index, np.random.default_rng([self.seed, self.epoch, int(index)]))

    def sample(self, index: int, rng: Optional[np.random.Generator] = None) -> Dict[str, object]:
        """Item `index` with its augmentation drawn from `rng` (MixedDataset passes its own)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.dataset_name} ({n} samples)")
        index = int(index) % n
        params = AugmentationParams()
        if self.is_train and self.augment is not None:
            params = self.augment.sample_params(rng if rng is not None else np.random.default_rng())
        for _ in range(min(n, 100)):
            try:
                return self._load(index, params)
            except (FileNotFoundError, ValueError) as e:
                if not self.skip_bad_images:
                    raise
                log.warning("skipping sample %d of %s: %s", index, self.dataset_name, e)
                index = (index + 1) % n
        raise RuntimeError(f"{self.dataset_name}: no readable image found near index {index} "
                           f"(images under {self.img_root})")

    def read_image(self, index: int) -> np.ndarray:
        """The full image of sample `index`, `HxWx3` uint8 RGB."""
        path = self.img_root / self.imgname[index]
        if not path.is_file():
            raise FileNotFoundError(
                f"image of {self.dataset_name} sample {index} not found: {path}")
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"image of {self.dataset_name} sample {index} could not be decoded "
                             f"(corrupt or not an image): {path}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def _load(self, index: int, params: AugmentationParams) -> Dict[str, object]:
        image = self.read_image(index)
        center, scale = self.center[index], float(self.scale[index])
        try:
            crop_matrix = crop_transform(center, scale, CROP_SIZE)
        except ValueError as e:
            raise ValueError(f"{self.npz_path}: sample {index}: {e}") from None
        keypoints = self.keypoints[index].copy()
        keypoints[:, :2] = normalise_keypoints(
            transform_points(keypoints[:, :2], center, scale, CROP_SIZE), CROP_SIZE)
        raw = {"keypoints_2d": keypoints, "joints_3d": self.joints_3d[index],
               "pose": self.pose[index]}
        out = Augmentation.apply(raw, params, source=(image, crop_matrix), res=CROP_SIZE)
        # no annotation stays zeros (a rotated zero pose would not be zero)
        keypoints = out["keypoints_2d"]
        keypoints[keypoints[:, 2] <= 0] = 0.0
        has_smpl, has_joints_3d = self.has_smpl[index], self.has_joints_3d[index]
        pose = out["pose"] if has_smpl > 0 else np.zeros(72)
        joints_3d = out["joints_3d"] if has_joints_3d > 0 else np.zeros((NUM_SPIN_JOINTS, 4))
        img = out["img"]
        if self.image_size != CROP_SIZE:
            img = cv2.resize(img, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return sample_to_tensors(
            img, keypoints, joints_3d, pose, self.betas[index], has_smpl, has_joints_3d, center,
            scale * params.scale, self.dataset_name)
