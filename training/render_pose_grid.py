"""Draw a grid of sampled poses on the body model, to judge the pose sampler by eye.

    python -m training.render_pose_grid --out docs/images/pose_grid.png --n 16 --seed 0

Each cell shows one pose from the front and from the person's left side, the mesh coloured by
kinematic chain (`hkmr_ros.skeleton.CHAIN_COLOURS`: the left arm blue, the right arm red...)
and shaded by a fixed light. Drawn with matplotlib polygons sorted by depth (painter's
algorithm, orthographic camera), so no OpenGL is needed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from hkmr_ros.skeleton import CHAIN_COLOURS, JOINT_TO_CHAIN
from training.body.pose_sampler import ACTIVITIES, PoseSampler

LIGHT = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])


def face_colours(faces: np.ndarray, skinning_weights: np.ndarray) -> np.ndarray:
    """Fx3 RGB: each face takes the chain colour of its first vertex's dominant joint."""
    joint = skinning_weights.argmax(1)[faces[:, 0]]
    table = np.array([CHAIN_COLOURS[JOINT_TO_CHAIN[j]] for j in range(len(JOINT_TO_CHAIN))])
    return table[joint]


def draw_mesh(ax, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, view: str) -> None:
    """Orthographic view of a mesh on a matplotlib axis. view: 'front' (from +z) or 'side' (from +x)."""
    from matplotlib.collections import PolyCollection

    if view == "front":
        rotation = np.eye(3)
    else:  # camera on the person's left, looking along -x: image right is -z
        rotation = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    v = vertices @ rotation.T
    tri = v[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    facing = normals[:, 2] > 0  # towards the camera (+z after the view rotation)
    shade = 0.35 + 0.65 * np.clip(normals @ LIGHT, 0.0, 1.0)
    order = np.argsort(tri[:, :, 2].mean(1))  # far to near
    order = order[facing[order]]
    ax.add_collection(PolyCollection(tri[order, :, :2], facecolors=colours[order] * shade[order, None],
                                     edgecolors="none", antialiased=False))


def render_pose_grid(out: Path, n: int = 16, seed: int = 0, model_path: Optional[str] = None,
                     columns: int = 4) -> Path:
    """Sample `n` poses with `seed`, draw them on the body model and save a PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.body.body_model import load_body_model

    body = load_body_model(model_path)
    poses, activity = PoseSampler().sample(n, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        vertices = body(poses, torch.zeros(n, body.num_betas)).vertices.numpy()
    faces = np.asarray(body.faces)
    colours = face_colours(faces, body.smpl.lbs_weights.numpy())
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.0 * 2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        v = vertices[i] - vertices[i].mean(0)
        for k, view in enumerate(("front", "side")):
            ax = axes[i // columns, 2 * (i % columns) + k]
            draw_mesh(ax, v, faces, colours, view)
            ax.set_xlim(-1.0, 1.0)
            ax.set_ylim(-1.05, 1.05)
            ax.set_aspect("equal")
            ax.set_title(f"{i}: {ACTIVITIES[activity[i]]}" if k == 0 else "side", fontsize=9)
    fig.suptitle(f"pose sampler, seed {seed} (front and left side; left arm blue, right arm red, "
                 "left leg green, right leg pink)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=75)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.render_pose_grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/images/pose_grid.png")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="SMPL-format model file (default: the open default)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    out = render_pose_grid(Path(args.out), args.n, args.seed, args.model)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
