"""The main job on the embedded defaults: render synthetic people, recover their meshes, score them.

Everything it uses ships with the repository (the open body model, the pose sampler, the default
HKMR weights), so it runs on a fresh machine without downloads and without a GPU. Because the
people are synthetic, the true 3D joints are known and the recovered ones are scored against them.

    python -m training.demo [--out outputs/demo] [--num 4] [--seed 1000000] [--checkpoint CKPT]

Writes per person `person_<i>.png` (input crop | predicted skeleton and mesh over it | ground
truth), and `results.json` with the parameters, 3D joints and errors.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch

from hkmr_ros.skeleton import BONE_COLOURS, BONES
from training.datasets.augment import image_to_tensor
from training.geometry import weak_perspective_project
from training.metrics import M_TO_MM, mpjpe, pa_mpjpe

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "hkmr_default" / "model.pt"
# Seeds from here on are never used for training data (training uses seeds below 1,000,000).
DEMO_SEED = 1_000_000


def draw_skeleton(image: np.ndarray, joints_px: np.ndarray) -> np.ndarray:
    """Draw SMPL's 24-joint skeleton (24x2 crop pixels) with the chain colours, in place."""
    for (a, b), colour in zip(BONES, BONE_COLOURS):
        pa = tuple(int(round(v)) for v in joints_px[a])
        pb = tuple(int(round(v)) for v in joints_px[b])
        cv2.line(image, pa, pb, tuple(int(255 * c) for c in colour[:3]), 2, cv2.LINE_AA)
    for p in joints_px:
        cv2.circle(image, tuple(int(round(v)) for v in p), 2, (255, 255, 255), -1, cv2.LINE_AA)
    return image


def to_crop_pixels(points_2d: np.ndarray, res: int) -> np.ndarray:
    """Normalised crop coordinates [-1, 1] -> pixels of a `res` crop."""
    return (points_2d + 1.0) * 0.5 * res


def overlay_mesh(image: np.ndarray, vertices_2d: np.ndarray, faces: np.ndarray,
                 colour=(120, 170, 255), alpha: float = 0.45) -> np.ndarray:
    """Blend the projected mesh's silhouette (filled triangles) over the image."""
    layer = image.copy()
    tris = np.round(vertices_2d[faces]).astype(np.int32)
    cv2.fillPoly(layer, list(tris), colour, cv2.LINE_AA)
    return cv2.addWeighted(layer, alpha, image, 1 - alpha, 0)


@torch.no_grad()
def true_joints_px(sample: Dict[str, np.ndarray], body_model: torch.nn.Module) -> np.ndarray:
    """The sample's true 24 SMPL joints in crop pixels (24x2), through its crop camera."""
    body = body_model(torch.as_tensor(sample["pose"])[None], torch.as_tensor(sample["betas"])[None])
    spin24 = body_model.joint_set("spin24", body)[0].numpy()
    # the sample's joints are the model's, translated into the camera frame
    joints = body.joints[0].numpy() + (sample["joints_spin24"] - spin24).mean(axis=0)
    projected = joints @ sample["crop_K"].T
    return projected[:, :2] / projected[:, 2:3]


def run(out_dir: Path, num: int, seed: int, checkpoint: Path) -> Dict:
    from training.body.body_model import load_body_model
    from training.datasets.synthetic import SyntheticGenerator
    from training.evaluate import load_method, predict

    device = torch.device("cpu")
    print(f"[demo] body model: loading the default (or HKMR_SMPL_MODEL)")
    body_model = load_body_model()
    print(f"[demo] body model: {body_model.source}")
    method = load_method(checkpoint, "HKMR", device)
    print(f"[demo] network: {checkpoint} ({method.cfg.model.encoder} + {method.cfg.model.regressor}, "
          f"input {method.image_size}px)")
    print(f"[demo] rendering {num} synthetic people (seed {seed})")
    samples = SyntheticGenerator(body_model, seed=seed).generate(range(num))

    images = np.stack([s["img"] for s in samples])
    batch = torch.stack([image_to_tensor(im) for im in images])
    start = time.perf_counter()
    estimate = predict(method, batch)  # final outer iteration, input resized to the network's side
    elapsed = time.perf_counter() - start
    rotmat, betas, cam = estimate["rotmat"], estimate["betas"], estimate["cam"]
    with torch.no_grad():
        body = body_model(rotmat, betas)
        pred_h36m = body_model.joint_set("h36m17", body).numpy()
    gt_h36m = np.stack([s["joints_h36m17"] for s in samples])
    errors = mpjpe(pred_h36m, gt_h36m) * M_TO_MM
    pa_errors = pa_mpjpe(pred_h36m, gt_h36m) * M_TO_MM

    res = images.shape[1]
    joints_2d = weak_perspective_project(body.joints, cam).numpy()
    verts_2d = weak_perspective_project(body.vertices, cam).numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    people = []
    for i, sample in enumerate(samples):
        image = sample["img"].copy()
        pred = overlay_mesh(image, to_crop_pixels(verts_2d[i], res), np.asarray(body_model.faces))
        draw_skeleton(pred, to_crop_pixels(joints_2d[i], res))
        gt = image.copy()
        draw_skeleton(gt, true_joints_px(sample, body_model))
        panel = np.concatenate([image, pred, gt], axis=1)
        cv2.imwrite(str(out_dir / f"person_{i}.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        people.append({
            "pose": estimate["pose"][i].tolist(),
            "betas": betas[i].tolist(),
            "camera": cam[i].tolist(),
            "joints_3d": body.joints[i].tolist(),
            "mpjpe_mm": float(errors[i]),
            "pa_mpjpe_mm": float(pa_errors[i]),
        })
        print(f"[demo] person {i}: MPJPE {errors[i]:.1f} mm, PA-MPJPE {pa_errors[i]:.1f} mm "
              f"-> {out_dir / f'person_{i}.png'}")
    result = {
        "checkpoint": str(checkpoint),
        "body_model": str(body_model.source),
        "seed": seed,
        "network_seconds": elapsed,
        "mean_mpjpe_mm": float(errors.mean()),
        "mean_pa_mpjpe_mm": float(pa_errors.mean()),
        "people": people,
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    print(f"[demo] mean MPJPE {errors.mean():.1f} mm, PA-MPJPE {pa_errors.mean():.1f} mm "
          f"(Human3.6M-17 joints) over {num} people; network {1000 * elapsed / num:.1f} ms/person "
          f"on the CPU; results in {out_dir}")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--num", type=int, default=4, help="number of synthetic people")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error("--num must be at least 1")
    try:
        run(args.out, args.num, args.seed, args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"[demo] error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
