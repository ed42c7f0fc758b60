"""Evaluation entry point: `python -m training.evaluate --checkpoint CKPT --data synthetic:DIR ...`.

Scores one or more trained checkpoints side by side (HKMR against HMR, or the ablations) on the
same samples: MPJPE and PA-MPJPE in millimetres on Human3.6M-17, LSP-14 and LSP-14's 12 limb
joints, per-joint errors, and optionally the occlusion protocol of the paper's section 4 (Sárándi et al.): one
occluder of a kind and degree of occlusion (DoC) centred on one 2D joint at a time, MPJPE averaged
over the occluded joints and the samples. Writes `results.json`, `results.md` and one plot of MPJPE
against DoC per dataset (the paper's figure 6) to `--out`. See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from training.config import Config, config_from_dict, load_config
from training.datasets.augment import renormalise, resize_images
from training.metrics import M_TO_MM, masked_mean, per_joint_errors
from training.occlusion import DOC_LEVELS, OCCLUDER_KINDS, occluder_mask, random_texture

CROP_SIZE = 224
JOINT_SETS = ("h36m17", "lsp14", "limbs12")
JOINT_SET_TITLES = {"h36m17": "H36M-17", "lsp14": "LSP-14", "limbs12": "Limbs-12"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY = (0.5, 0.5, 0.5)  # the occluders' fill unless --fill texture: a flat mid-grey
FILLS = ("grey", "texture")


@dataclass
class Method:
    """A trained network under evaluation."""
    name: str
    model: nn.Module
    cfg: Config
    checkpoint: str

    @property
    def image_size(self) -> int:
        return int(self.cfg.data.image_size)


# ----------------------------------------------------------------------------- loading

def _checkpoint_config(path: Path, ckpt: Dict[str, Any]) -> Config:
    """The run's config: stored in the checkpoint (train.py), else config.yaml beside it or one up."""
    if isinstance(ckpt.get("config"), dict):
        return config_from_dict(ckpt["config"], f"{path} (stored config)")
    candidates = [path.parent / "config.yaml", path.parent.parent / "config.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return load_config(candidate)
    raise FileNotFoundError(f"no config for checkpoint {path}: it stores none and none of "
                            f"{', '.join(str(c) for c in candidates)} exists")


def load_method(checkpoint: str | Path, name: str, device: torch.device,
                iterations: Optional[Tuple[int, int]] = None) -> Method:
    """Build the network of a checkpoint from its config and load its weights, in eval mode.

    iterations: (inner, outer) counts to run an HKMR checkpoint with instead of its own (its layers
    are the same at every iteration, so any count runs on the trained weights).
    """
    from training.models.mesh_regressor import build_model, read_checkpoint

    path = Path(checkpoint)
    ckpt = read_checkpoint(path)
    cfg = _checkpoint_config(path, ckpt)
    cfg.model.encoder_weights = None  # every weight comes from the checkpoint
    if iterations is not None:
        if cfg.model.regressor != "hkmr":
            raise ValueError(f"--iterations applies to HKMR checkpoints; {path} is {cfg.model.regressor!r}")
        cfg.model.regressor_kwargs = {**cfg.model.regressor_kwargs, "inner_iters": iterations[0],
                                      "outer_iters": iterations[1]}
    model = build_model(cfg.model)
    model.load_state_dict(ckpt["model"])
    return Method(name=name, model=model.to(device).eval(), cfg=cfg, checkpoint=str(path))


def iteration_counts(text: str) -> Tuple[int, int]:
    """'INNERxOUTER', e.g. '2x3' -> (2, 3)."""
    inner, sep, outer = text.partition("x")
    if not (sep and inner.isdigit() and outer.isdigit() and int(inner) > 0 and int(outer) > 0):
        raise argparse.ArgumentTypeError(f"expected INNERxOUTER with positive counts, e.g. 2x3; got {text!r}")
    return int(inner), int(outer)


def load_methods(checkpoints: Sequence[str], names: Sequence[str], device: torch.device,
                 iterations: Sequence[Tuple[int, int]] = ()) -> List[Method]:
    """Each checkpoint as trained, then each again at every `iterations` count ('NAME, 2x3 iterations')."""
    methods = [load_method(c, n, device) for c, n in zip(checkpoints, names)]
    for counts in iterations:
        methods += [load_method(c, f"{n}, {counts[0]}x{counts[1]} iterations", device, counts)
                    for c, n in zip(checkpoints, names)]
    return methods


def build_eval_dataset(spec: str) -> Tuple[str, Dataset]:
    """`synthetic:DIR` or `spin:NAME:NPZ:IMGROOT` -> (dataset name, dataset without augmentation)."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic" and rest:
        root = Path(rest)
        if not root.is_dir():
            raise FileNotFoundError(f"synthetic data folder not found: {root}")
        from training.datasets.synthetic import SyntheticDataset

        return root.name or str(root), SyntheticDataset(root, eval_keys=True)
    if kind == "spin":
        parts = rest.split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"--data {spec!r}: expected spin:NAME:NPZ:IMGROOT")
        name, npz, img_root = parts
        from training.datasets.spin_npz import SpinNpzDataset

        # NAME is one of SPIN's dataset names (h36m-p1, h36m-p2, 3dpw, ...); unknown ones raise
        return name, SpinNpzDataset(npz, img_root, name, is_train=False)
    raise ValueError(f"--data {spec!r}: expected synthetic:DIR or spin:NAME:NPZ:IMGROOT")


# ----------------------------------------------------------------------------- prediction and scoring

@torch.no_grad()
def predict(method: Method, img: torch.Tensor,
            input_normalisation: Optional[Tuple[Sequence[float], Sequence[float]]] = None) -> Dict[str, torch.Tensor]:
    """The final outer iteration's estimate: rotmat Bx24x3x3, pose Bx72, betas Bx10, cam Bx3.

    img: Bx3xHxW crops normalised with `input_normalisation` (mean, std), by default ImageNet's
    (the evaluation datasets' convention); they are renormalised for the method's encoder
    (`encoder_normalisation`) and resized."""
    from training.models.encoders import encoder_normalisation

    source = input_normalisation or (IMAGENET_MEAN, IMAGENET_STD)
    x = renormalise(img, source, encoder_normalisation(method.cfg.model.encoder))
    out = method.model(resize_images(x, method.image_size))
    return {k: out[k][:, -1].float() for k in ("rotmat", "pose", "betas", "cam")}


# ----------------------------------------------------------------------------- facing and baselines

BASELINES = ("constant mean skeleton", "rest pose, mean shape")
FACING = "facing"  # the pseudo joint set under which facing scores are kept


def facing_direction(global_rotmat: torch.Tensor) -> torch.Tensor:
    """Bx3x3 global orientation -> Bx2 unit facing direction (x, z) in the camera's ground plane:
    the body's forward axis (SMPL's +z) turned into the camera frame, its height dropped."""
    forward = global_rotmat[..., :, 2]
    xz = torch.stack([forward[:, 0], forward[:, 2]], dim=-1)
    return xz / xz.norm(dim=-1, keepdim=True).clamp(min=1e-9)


def facing_scores(pred_rotmat: torch.Tensor, gt_pose: torch.Tensor) -> Dict[str, np.ndarray]:
    """Per sample: `front_back` 1 when the estimate faces the camera exactly when the truth does
    (the sign of the facing's depth component), `yaw_error` degrees between the two facings."""
    from training.geometry import aa_to_rotmat

    pred = facing_direction(pred_rotmat[:, 0].double())
    gt = facing_direction(aa_to_rotmat(gt_pose[:, :3].double().reshape(-1, 1, 3))[:, 0])
    same_side = (pred[:, 1] < 0) == (gt[:, 1] < 0)  # forward z < 0: towards the camera
    cos = (pred * gt).sum(-1).clamp(-1.0, 1.0)
    return {"front_back": same_side.double().cpu().numpy(), "yaw_error": torch.rad2deg(torch.acos(cos)).cpu().numpy()}


def rest_pose_joints(body_model: nn.Module, n: int, device: torch.device) -> Dict[str, torch.Tensor]:
    """Joint sets of the rest pose with the mean shape, upright and facing the camera (SMPL's y up
    turned to the camera's -y: 180 degrees about x), repeated n times."""
    pose = torch.zeros(1, 72, device=device)
    pose[0, 0] = float(np.pi)
    joints = model_joints(body_model, pose, torch.zeros(1, body_model.num_betas, device=device))
    return {s: j.expand(n, -1, -1) for s, j in joints.items()}


def root_aligned(s: str, joints: torch.Tensor) -> torch.Tensor:
    """BxJx3 aligned on the root `per_joint_errors` uses for joint set s."""
    from training.metrics import root_align

    return root_align(joints, s)


@torch.no_grad()
def model_joints(body_model: nn.Module, pose: torch.Tensor, betas: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The evaluation joint sets (BxJx3, metres) of a body: pose Bx24x3x3 or Bx72, betas Bx10."""
    out = body_model(pose, betas)
    return {s: body_model.joint_set(s, out) for s in JOINT_SETS}


@torch.no_grad()
def ground_truth(batch: Dict[str, Any], body_model: nn.Module,
                 device: torch.device) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Ground-truth joints and a BxJ mask of the joints that have one, per evaluation joint set.

    H36M-17: the sample's `joints_h36m17`, else the body model on its SMPL parameters.
    LSP-14: the sample's 3D joints (spin24 starts with LSP-14), else the body model.
    Limbs-12: the first 12 of LSP-14 (no neck and head top).
    """
    has_smpl = batch["has_smpl"].to(device) > 0.5
    b = has_smpl.shape[0]
    from_smpl = model_joints(body_model, batch["pose"].to(device).float(), batch["betas"].to(device).float())
    gt: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    if "joints_h36m17" in batch:
        joints = batch["joints_h36m17"].to(device).float()[..., :3]
        gt["h36m17"] = (joints, torch.ones(joints.shape[:2], dtype=torch.bool, device=device))
    else:
        gt["h36m17"] = (from_smpl["h36m17"], has_smpl[:, None].expand(b, 17))
    joints_3d = batch["joints_3d"].to(device).float()[:, :14]
    has_3d = (batch["has_joints_3d"].to(device) > 0.5)[:, None] & (joints_3d[..., 3] > 0)
    use_3d = has_3d.any(-1)
    joints = torch.where(use_3d[:, None, None], joints_3d[..., :3], from_smpl["lsp14"])
    mask = torch.where(use_3d[:, None], has_3d, has_smpl[:, None].expand(b, 14))
    gt["lsp14"] = (joints, mask)
    gt["limbs12"] = (joints[:, :12], mask[:, :12])
    return gt


def score(pred: Dict[str, torch.Tensor], gt: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
          keep: Optional[torch.Tensor] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """Per-sample MPJPE / PA-MPJPE and per-joint errors (mm, NaN where no ground truth), per set.

    `keep` (B, long) picks which ground-truth row each prediction is scored against.
    """
    scores = {}
    for s in JOINT_SETS:
        joints, mask = gt[s]
        if keep is not None:
            joints, mask = joints[keep], mask[keep]
        p = pred[s].double()
        g = joints.double()
        root_err = per_joint_errors(p, g, root=s) * M_TO_MM
        valid = mask.sum(-1) >= 3  # Procrustes needs three points
        pa_err = torch.full_like(root_err, float("nan"))
        if valid.any():
            pa_err[valid] = per_joint_errors(p[valid], g[valid], procrustes=True, mask=mask[valid]) * M_TO_MM
        nan = torch.tensor(float("nan"), dtype=root_err.dtype, device=root_err.device)
        scores[s] = {
            "mpjpe": masked_mean(root_err, mask).cpu().numpy(),
            "pa_mpjpe": torch.where(valid, masked_mean(pa_err.nan_to_num(), mask), nan).cpu().numpy(),
            "joint_mpjpe": torch.where(mask, root_err, nan).cpu().numpy(),
            "joint_pa_mpjpe": torch.where(mask, pa_err, nan).cpu().numpy(),
        }
    return scores


# ----------------------------------------------------------------------------- occlusion

def fill_image(fill: str, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """The occluder's content as a normalised 3x224x224 image: flat mid-grey or a random texture."""
    if fill == "grey":
        rgb = torch.tensor(GREY, dtype=torch.float32)[:, None, None].expand(3, CROP_SIZE, CROP_SIZE)
    else:
        rgb = torch.from_numpy(random_texture(rng, (CROP_SIZE, CROP_SIZE))).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((rgb - mean) / std).to(device)


def occlusion_targets(keypoints_2d: torch.Tensor, joint_stride: int) -> List[Tuple[int, int, np.ndarray]]:
    """(sample, spin24 joint, centre in crop pixels) of every occluder to place in a batch.

    Visible joints inside the crop only; every `joint_stride`-th of the 24 joints.
    """
    kp = keypoints_2d.cpu().numpy()
    px = (kp[..., :2] + 1.0) * CROP_SIZE / 2.0
    targets = []
    for i in range(kp.shape[0]):
        for j in range(0, kp.shape[1], joint_stride):
            inside = np.all((px[i, j] >= 0) & (px[i, j] < CROP_SIZE))
            if kp[i, j, 2] > 0 and inside:
                targets.append((i, j, px[i, j]))
    return targets


def occluded_images(img: torch.Tensor, targets: Sequence[Tuple[int, int, np.ndarray]], kind: str, doc: int,
                    sample_ids: Sequence[int], seed: int, fill: str) -> torch.Tensor:
    """All occluded variants of a batch stacked: Vx3x224x224, one per target.

    Each occluder's random parts (bar angle, rectangle aspect, texture) come from a generator seeded
    by (seed, sample, kind, DoC, joint), so results do not depend on the batch size.
    """
    out = img[[i for i, _, _ in targets]].clone()
    grey = fill_image("grey", np.random.default_rng(0), img.device)
    for v, (i, j, centre) in enumerate(targets):
        rng = np.random.default_rng([seed, int(sample_ids[i]), OCCLUDER_KINDS.index(kind), doc, j])
        mask = torch.from_numpy(occluder_mask(kind, doc, centre, (CROP_SIZE, CROP_SIZE), rng)).to(img.device)
        content = grey if fill == "grey" else fill_image(fill, rng, img.device)
        out[v] = torch.where(mask, content, out[v])
    return out


# ----------------------------------------------------------------------------- the evaluation

class Scores:
    """Per-sample scores collected over batches, keyed by (method, condition, joint set, metric)."""

    def __init__(self) -> None:
        self.values: Dict[Tuple[str, str, str, str], List[np.ndarray]] = defaultdict(list)

    def add(self, method: str, condition: str, scores: Dict[str, Dict[str, np.ndarray]]) -> None:
        for s, metrics in scores.items():
            for metric, v in metrics.items():
                self.values[(method, condition, s, metric)].append(v)

    def get(self, method: str, condition: str, s: str, metric: str) -> np.ndarray:
        return np.concatenate(self.values[(method, condition, s, metric)], axis=0)

    def summary(self, method: str, condition: str, s: str) -> Dict[str, Any]:
        """Means over the samples (and joints) that have ground truth."""
        mp, pa = self.get(method, condition, s, "mpjpe"), self.get(method, condition, s, "pa_mpjpe")
        scored = np.isfinite(mp)
        return {"mpjpe": _nanmean(mp), "pa_mpjpe": _nanmean(pa), "count": int(scored.sum())}


def _nanmean(x: np.ndarray, axis: Optional[int] = None):
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(x).sum(axis=axis)
        mean = np.nansum(x, axis=axis) / np.maximum(counts, 1)
    if axis is None:
        return float(mean) if counts else None
    return [float(m) if c else None for m, c in zip(mean, counts)]


def evaluate_dataset(methods: Sequence[Method], body_model: nn.Module, dataset: Dataset,
                     device: torch.device, batch_size: int = 16, workers: int = 0,
                     occlusion: bool = False, kinds: Sequence[str] = OCCLUDER_KINDS,
                     docs: Sequence[int] = DOC_LEVELS, joint_stride: int = 1, fill: str = "grey",
                     smplify: Optional[nn.Module] = None, seed: int = 0,
                     desc: str = "evaluate", baselines: bool = True) -> Scores:
    """Run every method on every sample (clean, then each occluder kind x DoC) and score it.

    Conditions: 'clean', 'smplify' (clean with the fit refined, when `smplify` is given) and
    '<kind>/<doc>' for the occlusion protocol. With `baselines`, two networks-free estimates are
    scored on the clean samples too (BASELINES): the constant mean root-aligned skeleton of the
    evaluated ground truth (the best constant a network could learn), and the rest pose with the
    mean shape. Every method also gets its facing scores (front/back, yaw error).
    """
    scores = Scores()
    truth: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    first = 0
    for batch in tqdm(loader, desc=desc, dynamic_ncols=True):
        img = batch["img"].to(device).float()
        sample_ids = list(range(first, first + img.shape[0]))
        first += img.shape[0]
        gt = ground_truth(batch, body_model, device)
        if baselines:
            scores.add(BASELINES[1], "clean", score(rest_pose_joints(body_model, img.shape[0], device), gt))
            for s in JOINT_SETS:
                truth[s].append(gt[s])
        for m in methods:
            est = predict(m, img)
            scores.add(m.name, "clean", score(model_joints(body_model, est["rotmat"], est["betas"]), gt))
            if batch["has_smpl"].min() > 0.5:
                for metric, v in facing_scores(est["rotmat"], batch["pose"].to(device)).items():
                    scores.values[(m.name, "clean", FACING, metric)].append(v)
            if smplify is not None:
                fit = smplify(est["pose"], est["betas"], est["cam"], batch["keypoints_2d"].to(device).float())
                scores.add(m.name, "smplify", score(model_joints(body_model, fit.pose, fit.betas), gt))
        if not occlusion:
            continue
        targets = occlusion_targets(batch["keypoints_2d"], joint_stride)
        if not targets:
            continue
        keep = torch.tensor([i for i, _, _ in targets], device=device)
        for kind in kinds:
            for doc in docs:
                variants = occluded_images(img, targets, kind, doc, sample_ids, seed, fill)
                for m in methods:
                    for chunk in torch.split(torch.arange(len(targets), device=device), batch_size):
                        est = predict(m, variants[chunk])
                        pred = model_joints(body_model, est["rotmat"], est["betas"])
                        scores.add(m.name, f"{kind}/{doc}", score(pred, gt, keep=keep[chunk]))
    if baselines:
        scores.add(BASELINES[0], "clean", constant_skeleton_scores(truth))
    return scores


def constant_skeleton_scores(truth: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]]
                             ) -> Dict[str, Dict[str, np.ndarray]]:
    """Scores of one constant skeleton for every sample: the mean of the root-aligned ground truth
    (per joint, over the samples that have it)."""
    gt = {s: (torch.cat([j for j, _ in v]), torch.cat([m for _, m in v])) for s, v in truth.items()}
    pred = {}
    for s, (joints, mask) in gt.items():
        aligned = root_aligned(s, joints).double() * mask[..., None]
        mean = aligned.sum(0) / mask.sum(0).clamp(min=1)[:, None]
        pred[s] = mean[None].expand(joints.shape[0], -1, -1).to(joints.dtype)
    return score(pred, gt)


def primary_joint_set(scores: Scores, methods: Sequence[str]) -> str:
    """H36M-17 when the data has its ground truth (the paper's metric), else LSP-14."""
    h36m = scores.summary(methods[0], "clean", "h36m17")
    return "h36m17" if h36m["count"] > 0 else "lsp14"


def summarise(scores: Scores, methods: Sequence[str], occlusion: bool, kinds: Sequence[str],
              docs: Sequence[int], smplify: bool) -> Dict[str, Any]:
    """The JSON-ready results of one dataset."""
    from training.body.joint_sets import joint_names

    conditions = ["clean"] + (["smplify"] if smplify else [])
    result: Dict[str, Any] = {"num_samples": int(len(scores.get(methods[0], "clean", "lsp14", "mpjpe")))}
    present = [b for b in BASELINES if (b, "clean", "lsp14", "mpjpe") in scores.values]
    for condition in conditions:
        result[condition] = {}
        for name in list(methods) + (present if condition == "clean" else []):
            per_set = {}
            for s in JOINT_SETS:
                summary = scores.summary(name, condition, s)
                summary["per_joint"] = {
                    "names": list(joint_names(s)),
                    "mpjpe": _nanmean(scores.get(name, condition, s, "joint_mpjpe"), axis=0),
                    "pa_mpjpe": _nanmean(scores.get(name, condition, s, "joint_pa_mpjpe"), axis=0),
                }
                per_set[s] = summary
            if (name, condition, FACING, "front_back") in scores.values:
                per_set[FACING] = {"front_back": _nanmean(scores.get(name, condition, FACING, "front_back")),
                                   "median_yaw_error": float(np.median(scores.get(name, condition, FACING, "yaw_error"))),
                                   "within_45": _nanmean((scores.get(name, condition, FACING, "yaw_error") <= 45.0)
                                                         .astype(np.float64))}
            result[condition][name] = per_set
    if present:
        result["baselines"] = present
    if occlusion:
        s = primary_joint_set(scores, methods)
        table: Dict[str, Any] = {}
        for name in methods:
            table[name] = {}
            for kind in kinds:
                row = {"0": scores.summary(name, "clean", s)}
                for doc in docs:
                    row[str(doc)] = scores.summary(name, f"{kind}/{doc}", s)
                table[name][kind] = row
        result["occlusion"] = {"joint_set": s, "mpjpe_by_doc": table}
    return result


# ----------------------------------------------------------------------------- reports

def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown_report(results: Dict[str, Any]) -> str:
    """results.md: per dataset, methods x metrics, per-joint MPJPE, and the occlusion table."""
    lines = ["# Evaluation results", "",
             "MPJPE: mean per-joint position error in mm after root alignment (H36M-17: pelvis; "
             "LSP-14 and its 12 limb joints, Limbs-12: hips' midpoint). PA-MPJPE: after similarity Procrustes alignment. "
             "See docs/evaluation.md.", ""]
    for ds, res in results["datasets"].items():
        lines += [f"## {ds} ({res['num_samples']} samples)", ""]
        header = ["method"] + [f"{JOINT_SET_TITLES[s]} {m}" for s in JOINT_SETS for m in ("MPJPE", "PA-MPJPE")]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for condition, suffix in (("clean", ""), ("smplify", " + SMPLify")):
            for name, per_set in res.get(condition, {}).items():
                cells = [name + suffix] + [_fmt(per_set[s][m]) for s in JOINT_SETS for m in ("mpjpe", "pa_mpjpe")]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        facing = {n: v[FACING] for n, v in res["clean"].items() if FACING in v}
        if facing:
            lines += ["Facing (global orientation about the vertical): front/back right = the estimate faces "
                      "towards or away from the camera as the truth does.", "",
                      "| method | front/back right | yaw error median (deg) | yaw within 45 deg |", "|---|---|---|---|"]
            for n, f in facing.items():
                lines.append(f"| {n} | {100 * f['front_back']:.1f}% | {f['median_yaw_error']:.1f} | "
                             f"{100 * f['within_45']:.1f}% |")
            lines.append("")
        if res.get("baselines"):
            lines += ["Baselines (no network): " + "; ".join(
                [f"*{BASELINES[0]}*: the mean root-aligned ground-truth skeleton of these samples for every image",
                 f"*{BASELINES[1]}*: zero pose and betas, upright, facing the camera"]) + ".", ""]
        for s in JOINT_SETS:
            names = list(res["clean"])
            joints = res["clean"][names[0]][s]["per_joint"]["names"]
            if res["clean"][names[0]][s]["count"] == 0:
                continue
            lines += [f"Per-joint MPJPE (mm), {JOINT_SET_TITLES[s]}:", "",
                      "| joint | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for j, joint in enumerate(joints):
                cells = [_fmt(res["clean"][n][s]["per_joint"]["mpjpe"][j]) for n in names]
                lines.append(f"| {joint} | " + " | ".join(cells) + " |")
            lines.append("")
        if "occlusion" in res:
            occ = res["occlusion"]
            any_row = next(iter(next(iter(occ["mpjpe_by_doc"].values())).values()))
            docs = list(any_row)
            lines += [f"Occlusion: MPJPE (mm, {JOINT_SET_TITLES[occ['joint_set']]}) against the degree of "
                      "occlusion (DoC 0 = no occluder), one occluder centred on one joint at a time:", "",
                      "| method | occluder | " + " | ".join(f"DoC {d}" for d in docs) + " |",
                      "|---|---|" + "---|" * len(docs)]
            for name, by_kind in occ["mpjpe_by_doc"].items():
                for kind, row in by_kind.items():
                    lines.append(f"| {name} | {kind} | " + " | ".join(_fmt(row[d]["mpjpe"]) for d in docs) + " |")
            lines.append("")
    return "\n".join(lines)


def occlusion_plot(occ: Dict[str, Any], path: Path, title: str) -> None:
    """MPJPE against DoC, one subplot per occluder kind and one line per method (paper's figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method = occ["mpjpe_by_doc"]
    kinds = list(next(iter(by_method.values())))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        for name, by_kind in by_method.items():
            docs = [int(d) for d in by_kind[kind]]
            values = [by_kind[kind][str(d)]["mpjpe"] for d in docs]
            ax.plot(docs, [np.nan if v is None else v for v in values], marker="o", label=name)
        ax.set_title(kind.capitalize())
        ax.set_xlabel("degree of occlusion (DoC)")
        ax.set_xticks(docs)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"MPJPE (mm, {JOINT_SET_TITLES[occ['joint_set']]})")
    axes[0][-1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line

def unique_names(checkpoints: Sequence[str], names: Optional[Sequence[str]]) -> List[str]:
    """The methods' names: given, else the checkpoint's run folder (or file stem)."""
    if names:
        if len(names) != len(checkpoints):
            raise ValueError(f"--names has {len(names)} names for {len(checkpoints)} checkpoints")
        if len(set(names)) != len(names):
            raise ValueError(f"--names must be distinct, got {list(names)}")
        return list(names)
    out: List[str] = []
    for c in checkpoints:
        p = Path(c)
        base = p.parent.name or p.stem
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[1])
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a checkpoint .pt (its config is stored in it or in config.yaml beside it); repeat")
    parser.add_argument("--names", nargs="+", help="one name per checkpoint for the tables (e.g. HKMR HMR)")
    parser.add_argument("--data", action="append", required=True,
                        help="synthetic:DIR or spin:NAME:NPZ:IMGROOT (e.g. spin:h36m-p1:h36m_valid_protocol1.npz:"
                             "IMAGES); repeat for several")
    parser.add_argument("--iterations", nargs="+", type=iteration_counts, default=[], metavar="INNERxOUTER",
                        help="also run each HKMR checkpoint with these inner x outer iteration counts, "
                             "e.g. 2x3 4x1 (the trained network without retraining)")
    parser.add_argument("--occlusion", action="store_true", help="also run the occlusion protocol")
    parser.add_argument("--kinds", nargs="+", default=list(OCCLUDER_KINDS), choices=OCCLUDER_KINDS)
    parser.add_argument("--docs", nargs="+", type=int, default=list(DOC_LEVELS), choices=DOC_LEVELS)
    parser.add_argument("--joint-stride", type=int, default=1,
                        help="occlude every K-th of the 24 joints only (K=1: all of them)")
    parser.add_argument("--fill", default="grey", choices=FILLS, help="occluder content: flat mid-grey or a "
                        "random texture per occluder")
    parser.add_argument("--smplify", action="store_true",
                        help="also score the predictions refined by SMPLify on the samples' 2D keypoints")
    parser.add_argument("--body-model", help="SMPL-format model file (default: $HKMR_SMPL_MODEL, else the "
                        "open anny-smpl model)")
    parser.add_argument("--out", default="runs/eval", help="output folder: results.json, results.md, plots")
    parser.add_argument("--max-samples", type=int, help="evaluate the first N samples of each dataset only")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="data loader processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help="seeds the occluders' random orientation/texture")
    args = parser.parse_args(argv)
    if args.joint_stride < 1:
        parser.error("--joint-stride must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error("--max-samples must be at least 1")
    return args


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Evaluate the checkpoints on every dataset and write the reports; returns the results."""
    from training.body.body_model import load_body_model

    device = torch.device(args.device)
    names = unique_names(args.checkpoint, args.names)
    datasets = [build_eval_dataset(spec) for spec in args.data]
    methods = load_methods(args.checkpoint, names, device, args.iterations)
    names = [m.name for m in methods]
    body_model = load_body_model(args.body_model).to(device).eval()
    smplify = None
    if args.smplify:
        from training.smplify import build_smplify
        from training.train import build_prior

        cfg = methods[0].cfg
        prior_encoder = build_prior(cfg, device)[0] if cfg.prior.kind == "vae" else None
        smplify = build_smplify(cfg.smplify, body_model, prior_encoder).to(device)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items()},
        "methods": {m.name: {"checkpoint": m.checkpoint, "encoder": m.cfg.model.encoder,
                             "regressor": m.cfg.model.regressor, "regressor_kwargs": m.cfg.model.regressor_kwargs,
                             "image_size": m.image_size, "prior": m.cfg.prior.kind} for m in methods},
        "units": "millimetres",
        "datasets": {},
    }
    for ds_name, dataset in datasets:
        if args.max_samples is not None:
            dataset = Subset(dataset, range(min(args.max_samples, len(dataset))))
        if len(dataset) == 0:
            raise ValueError(f"dataset {ds_name!r} is empty")
        scores = evaluate_dataset(methods, body_model, dataset, device, batch_size=args.batch_size,
                                  workers=args.workers, occlusion=args.occlusion, kinds=args.kinds,
                                  docs=args.docs, joint_stride=args.joint_stride, fill=args.fill,
                                  smplify=smplify, seed=args.seed, desc=ds_name)
        res = summarise(scores, names, args.occlusion, args.kinds, args.docs, smplify is not None)
        results["datasets"][ds_name] = res
        if args.occlusion:
            plot = out / f"occlusion_{ds_name}.png"
            occlusion_plot(res["occlusion"], plot, f"Robustness to occlusion: {ds_name}")
            res["occlusion"]["plot"] = plot.name
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_report(results))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "results.md").read_text())
    print(f"results written to {args.out}/ (results.json, results.md"
          f"{', occlusion plots' if args.occlusion else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
