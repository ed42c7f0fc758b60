"""Generate the open default body model: Anny (Apache-2.0 code, CC0 MakeHuman assets) in SMPL's format.

    python -m training.body.anny_smpl [--out PATH] [--shapes N] [--check]

SMPL's 24 joints are mapped onto Anny's bones; the weights of the other bones (toes, fingers,
extra spine and neck bones, eyes, ...) go to their mapped ancestor; the mesh is brought into
SMPL's frame (y up, face towards +z, metres) and into SMPL's T-pose; the shape space is the
PCA of T-posed meshes of adult Anny phenotypes; the joint regressor is fitted (non-negative
least squares) to Anny's joints over those shapes. See docs/body_model.md.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import roma
import torch
from scipy.optimize import nnls
from tqdm import tqdm

from hkmr_ros.skeleton import NUM_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS
from training.body.joint_sets import SMPLX_VERTEX_ID_KEYS

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "anny_smpl.npz"
NUM_BETAS = 10
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9
REGRESSOR_CANDIDATES = 300  # nearest template vertices each joint may draw on
SUM_TO_ONE_WEIGHT = 100.0
NNLS_TOLERANCE = 0.002  # metres of mean fit error above which a row falls back to ridge
RIDGE = 1e-5

LICENCE = (
    "Derived from Anny (NAVER Corp., code Apache-2.0) and its MakeHuman assets (CC0 1.0). "
    "This file: Apache-2.0, see THIRD_PARTY_LICENSES.md. Not SMPL; contains no SMPL data."
)

# Anny frame: z up, face towards -y, left = +x.  SMPL frame: y up, face towards +z, left = +x.
ANNY_TO_SMPL = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)

# The Anny bones whose heads are each SMPL joint (and which its rotation drives). SMPL's foot
# and hand joints have no single Anny bone: they drive the first toe / finger bones, and sit
# at the mean of their heads.
SMPL_JOINT_BONES: Dict[str, Tuple[str, ...]] = {
    "pelvis": ("root",),
    "spine1": ("spine03",),
    "spine2": ("spine02",),
    "spine3": ("spine01",),
    "neck": ("neck01",),
    "head": ("head",),
}
for _side, _s in (("left", "L"), ("right", "R")):
    SMPL_JOINT_BONES.update({
        f"{_side}_hip": (f"upperleg01.{_s}",),
        f"{_side}_knee": (f"lowerleg01.{_s}",),
        f"{_side}_ankle": (f"foot.{_s}",),
        f"{_side}_foot": tuple(f"toe{i}-1.{_s}" for i in range(1, 6)),
        f"{_side}_collar": (f"clavicle.{_s}",),
        f"{_side}_shoulder": (f"upperarm01.{_s}",),
        f"{_side}_elbow": (f"lowerarm01.{_s}",),
        f"{_side}_wrist": (f"wrist.{_s}",),
        f"{_side}_hand": tuple(f"finger{i}-1.{_s}" for i in range(2, 6)),
    })

# Adult phenotype ranges sampled for the shape space (Anny's age 2/3 = "young" adult, 1 = "old").
PHENOTYPE_RANGES: Dict[str, Tuple[float, float]] = {
    "gender": (0.0, 1.0),
    "age": (0.62, 0.95),
    "muscle": (0.15, 0.85),
    "weight": (0.15, 0.85),
    "height": (0.05, 0.95),
    "proportions": (0.2, 0.8),
}


def create_anny():
    """Anny's full body on CPU with plain torch skinning (no warp/GPU needed)."""
    import anny

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anny.Anny(skinning_method="lbs").to(torch.float64)


def sample_phenotypes(model, num: int, generator: torch.Generator) -> torch.Tensor:
    """Bxlen(model.phenotype_labels) adult phenotypes, uniform in PHENOTYPE_RANGES."""
    low = torch.tensor([PHENOTYPE_RANGES[k][0] for k in model.phenotype_labels], dtype=torch.float64)
    high = torch.tensor([PHENOTYPE_RANGES[k][1] for k in model.phenotype_labels], dtype=torch.float64)
    return low + (high - low) * torch.rand(num, len(low), generator=generator, dtype=torch.float64)


def mean_phenotype(model) -> torch.Tensor:
    """1xP: the middle of PHENOTYPE_RANGES."""
    return torch.tensor([[sum(PHENOTYPE_RANGES[k]) / 2 for k in model.phenotype_labels]], dtype=torch.float64)


def bone_to_joint(model) -> torch.Tensor:
    """(num_bones,) long: the SMPL joint each Anny bone follows (its nearest mapped ancestor or itself)."""
    owner = {bone: SMPL_JOINT_NAMES.index(joint) for joint, bones in SMPL_JOINT_BONES.items() for bone in bones}
    out = []
    for b in range(len(model.bone_labels)):
        while model.bone_labels[b] not in owner:
            b = model.bone_parents[b]
        out.append(owner[model.bone_labels[b]])
    return torch.tensor(out)


def joint_anchor_matrix(model) -> torch.Tensor:
    """24 x num_bones: each SMPL joint as the mean of its bones' heads."""
    matrix = torch.zeros(NUM_JOINTS, len(model.bone_labels), dtype=torch.float64)
    for joint, bones in SMPL_JOINT_BONES.items():
        for bone in bones:
            matrix[SMPL_JOINT_NAMES.index(joint), model.bone_labels.index(bone)] = 1.0 / len(bones)
    return matrix


def global_rotations(local: torch.Tensor) -> torch.Tensor:
    """Bx24x3x3 global rotations from SMPL's local ones (forward kinematics on the tree)."""
    out = [local[:, 0]]
    for j in range(1, NUM_JOINTS):
        out.append(out[SMPL_PARENTS[j]] @ local[:, j])
    return torch.stack(out, dim=1)


def pose_anny(model, phenotypes: torch.Tensor, deltas: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anny's own forward pass with each bone turned by its SMPL joint's global rotation.

    phenotypes: BxP; deltas: Bx24x3x3 global rotations in Anny's frame, relative to Anny's rest
    pose, about each bone's own head. Returns (vertices BxVx3, SMPL joints Bx24x3), Anny's frame.
    """
    batch = phenotypes.shape[0]
    rest = model(phenotype_kwargs=phenotypes)
    rest_poses = rest["rest_bone_poses"].expand(batch, -1, -1, -1)
    world = torch.eye(4, dtype=torch.float64).repeat(batch, len(model.bone_labels), 1, 1)
    world[:, :, :3, :3] = deltas[:, bone_to_joint(model)] @ rest_poses[:, :, :3, :3]
    world[:, 0, :3, 3] = rest_poses[:, 0, :3, 3]
    out = model(pose_parameters=world, phenotype_kwargs=phenotypes, pose_parameterization="world-orient")
    joints = joint_anchor_matrix(model) @ out["bone_poses"][:, :, :3, 3]
    return out["vertices"], joints


def _arc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The shortest rotation taking direction a to direction b (3x3)."""
    a, b = a / a.norm(), b / b.norm()
    axis = torch.linalg.cross(a, b)
    angle = torch.atan2(axis.norm(), a @ b)
    return roma.rotvec_to_rotmat(axis / axis.norm() * angle)


def tpose_deltas(model) -> torch.Tensor:
    """24x3x3 global rotations (Anny frame) that lift Anny's A-pose arms into SMPL's T-pose.

    Shoulder, elbow and wrist each point their segment along the body's left/right axis
    (shortest-arc rotations, applied down the arm); the rest of the body keeps Anny's rest pose.
    """
    eye = torch.eye(3, dtype=torch.float64)
    deltas = eye.repeat(NUM_JOINTS, 1, 1)
    _, joints = pose_anny(model, mean_phenotype(model), deltas[None])
    joints = joints[0]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        target = torch.tensor([sign, 0.0, 0.0], dtype=torch.float64)
        chain = [SMPL_JOINT_NAMES.index(f"{side}_{n}") for n in ("shoulder", "elbow", "wrist", "hand")]
        accumulated = eye
        for joint, child in zip(chain[:-1], chain[1:]):
            direction = accumulated @ (joints[child] - joints[joint])
            accumulated = _arc(direction, target) @ accumulated
            deltas[joint] = accumulated
        deltas[chain[-1]] = accumulated
    return deltas


def tposed_shapes(model, phenotypes: torch.Tensor, tpose: torch.Tensor, batch: int = 25):
    """T-posed meshes and joints of many phenotypes, SMPL frame: (NxVx3, Nx24x3) float64."""
    vertices, joints = [], []
    for start in tqdm(range(0, len(phenotypes), batch), desc="anny shapes", unit="batch"):
        chunk = phenotypes[start : start + batch]
        with torch.no_grad():
            v, j = pose_anny(model, chunk, tpose.expand(len(chunk), -1, -1, -1))
        vertices.append(v @ ANNY_TO_SMPL.T)
        joints.append(j @ ANNY_TO_SMPL.T)
    return torch.cat(vertices), torch.cat(joints)


def fit_joint_regressor(vertices: np.ndarray, joints: np.ndarray, template: np.ndarray) -> np.ndarray:
    """24xV sparse regressor, rows summing to 1: regressed joints match `joints` over all shapes.

    vertices NxVx3, joints Nx24x3, template Vx3 (picks each joint's candidate vertices).
    Non-negative least squares first; where a surface cannot pin the joint down that way
    (e.g. the knee slides along a cylinder-like thigh as the proportions change) the row falls
    back to ridge least squares over the same vertices, which is exact within the shape space.
    """
    num_vertices = vertices.shape[1]
    regressor = np.zeros((NUM_JOINTS, num_vertices))
    for j in tqdm(range(NUM_JOINTS), desc="joint regressor", unit="joint"):
        mean_joint = joints[:, j].mean(axis=0)
        candidates = np.argsort(np.linalg.norm(template - mean_joint, axis=1))[:REGRESSOR_CANDIDATES]
        a = vertices[:, candidates].transpose(0, 2, 1).reshape(-1, len(candidates))
        b = joints[:, j].reshape(-1)
        sum_row = SUM_TO_ONE_WEIGHT * np.ones((1, len(candidates)))
        weights, _ = nnls(np.vstack([a, sum_row]), np.append(b, SUM_TO_ONE_WEIGHT), maxiter=50 * len(candidates))
        weights /= weights.sum()
        if np.abs(a @ weights - b).reshape(-1, 3).sum(axis=1).mean() > NNLS_TOLERANCE:
            ridge = np.sqrt(RIDGE) * np.eye(len(candidates))
            weights = np.linalg.lstsq(
                np.vstack([a, sum_row, ridge]),
                np.concatenate([b, [SUM_TO_ONE_WEIGHT], np.zeros(len(candidates))]),
                rcond=None,
            )[0]
            weights /= weights.sum()
        regressor[j, candidates] = weights
    return regressor


def keypoint_vertices(model, template: np.ndarray) -> Dict[str, int]:
    """smplx's extra keypoint vertices (nose, eyes, ears, toes, heels, finger tips) and the head top.

    template: Vx3 T-posed mesh in SMPL's frame. Each keypoint is the extreme vertex of the
    region skinned to the matching Anny bones.
    """
    weights = model.dense_vertex_bone_weights
    dominant = weights.argmax(dim=1).numpy()
    labels = model.bone_labels

    def region(*bones: str) -> np.ndarray:
        idx = np.flatnonzero(np.isin(dominant, [labels.index(b) for b in bones]))
        if idx.size == 0:
            raise RuntimeError(f"no vertices skinned to {bones}")
        return idx

    def extreme(idx: np.ndarray, direction) -> int:
        return int(idx[np.argmax(template[idx] @ np.asarray(direction, dtype=np.float64))])

    forward, up, left = (0, 0, 1), (0, 1, 0), (1, 0, 0)
    head = region("head")
    eye_height = template[region("eye.L"), 1].mean()
    midline = head[np.abs(template[head, 0]) < 0.01]
    ear_band = head[np.abs(template[head, 1] - (eye_height - 0.03)) < 0.02]
    ids = {
        "nose": extreme(midline, forward),
        "leye": extreme(region("eye.L"), forward),
        "reye": extreme(region("eye.R"), forward),
        "lear": extreme(ear_band, left),
        "rear": extreme(ear_band, (-1, 0, 0)),
        "head_top": extreme(np.arange(len(template)), up),
    }
    for side, s, outward in (("L", "L", 1.0), ("R", "R", -1.0)):
        ids[f"{side}BigToe"] = extreme(region(f"toe1-1.{s}", f"toe1-2.{s}"), forward)
        ids[f"{side}SmallToe"] = extreme(region(f"toe5-1.{s}", f"toe5-2.{s}", f"toe5-3.{s}"), forward)
        foot = region(f"foot.{s}")
        ids[f"{side}Heel"] = extreme(foot, (0, -0.5, -1))
        for finger, name in enumerate(("thumb", "index", "middle", "ring", "pinky"), start=1):
            ids[f"{side.lower()}{name}"] = extreme(region(f"finger{finger}-3.{s}"), (outward, 0, 0))
    return ids


def build(num_shapes: int = 400, seed: int = 0) -> Dict[str, np.ndarray]:
    """All arrays of the SMPL-format file."""
    print("loading Anny (the first run builds its cache, which takes a few minutes)")
    model = create_anny()
    generator = torch.Generator().manual_seed(seed)
    tpose = tpose_deltas(model)
    phenotypes = sample_phenotypes(model, num_shapes, generator)
    vertices, joints = tposed_shapes(model, phenotypes, tpose)
    flat = vertices.reshape(num_shapes, -1)
    mean = flat.mean(dim=0)
    _, singular, components = torch.linalg.svd(flat - mean, full_matrices=False)
    scale = singular[:NUM_BETAS] / np.sqrt(num_shapes - 1)
    explained = (singular[:NUM_BETAS] ** 2).sum() / (singular**2).sum()
    print(f"shape space: {NUM_BETAS} components explain {100 * float(explained):.2f}% of the variance")
    shapedirs = (components[:NUM_BETAS] * scale[:, None]).T.reshape(-1, 3, NUM_BETAS)
    template = mean.reshape(-1, 3).numpy()
    regressor = fit_joint_regressor(vertices.numpy(), joints.numpy(), template)
    residual = np.linalg.norm(np.einsum("jv,nvc->njc", regressor, vertices.numpy()) - joints.numpy(), axis=-1)
    print(f"joint regressor: mean error {1000 * residual.mean():.2f} mm, max {1000 * residual.max():.2f} mm")
    bone_joint = bone_to_joint(model)
    merge = torch.zeros(len(model.bone_labels), NUM_JOINTS, dtype=torch.float64)
    merge[torch.arange(len(bone_joint)), bone_joint] = 1.0
    weights = model.dense_vertex_bone_weights @ merge
    parents = np.array(SMPL_PARENTS, dtype=np.int64)
    data = {
        "v_template": template.astype(np.float32),
        "shapedirs": shapedirs.numpy().astype(np.float32),
        "J_regressor": regressor.astype(np.float32),
        "weights": weights.numpy().astype(np.float32),
        "kintree_table": np.stack([parents, np.arange(NUM_JOINTS)]),
        "f": model.get_triangular_faces().numpy().astype(np.int32),
        "posedirs": np.zeros((template.shape[0], 3, NUM_POSE_BASIS), dtype=np.float32),
        "licence": np.array(LICENCE),
        "source": np.array(
            f"anny {_anny_version()} full body (rig 'anny', topology 'anny'), {num_shapes} adult phenotypes "
            f"(seed {seed}), generated by training/body/anny_smpl.py"
        ),
    }
    for key, vertex in keypoint_vertices(model, template).items():
        data[f"vertex_ids_{key}"] = np.array(vertex, dtype=np.int64)
    missing = [k for k in SMPLX_VERTEX_ID_KEYS if f"vertex_ids_{k}" not in data]
    if missing:
        raise RuntimeError(f"keypoint vertices not found: {missing}")
    return data


def _anny_version() -> str:
    import anny

    return anny.__version__


def compare_with_anny(body_model, num_shapes: int = 4, seed: int = 1, pose_sigma: float = 0.4, model=None):
    """Mean vertex and joint distances (metres) between Anny and the SMPL-format body model.

    Random adult Anny phenotypes and random rotations of the 24 mapped joints (all other bones
    at identity). Anny is posed by its own forward pass (its blendshapes, rest skeleton and
    skinning, starting from the same T-pose lift); the body model gets the PCA projection of
    the T-posed Anny mesh as betas and the same rotations. Returns (vertex_mm, joint_mm).
    """
    model = model or create_anny()
    generator = torch.Generator().manual_seed(seed)
    phenotypes = sample_phenotypes(model, num_shapes, generator)
    tpose = tpose_deltas(model)
    with torch.no_grad():
        rest_vertices, _ = pose_anny(model, phenotypes, tpose.expand(num_shapes, -1, -1, -1))
        rest_vertices = rest_vertices @ ANNY_TO_SMPL.T
        template = body_model.smpl.v_template.double()
        shapedirs = body_model.smpl.shapedirs.double().reshape(-1, body_model.num_betas)
        betas = torch.linalg.lstsq(shapedirs, (rest_vertices - template).reshape(num_shapes, -1).T).solution.T
        rotvecs = pose_sigma * torch.randn(num_shapes, NUM_JOINTS, 3, generator=generator, dtype=torch.float64)
        local = roma.rotvec_to_rotmat(rotvecs)
        smpl_global = global_rotations(local)
        anny_global = ANNY_TO_SMPL.T @ smpl_global @ ANNY_TO_SMPL @ tpose
        anny_vertices, anny_joints = pose_anny(model, phenotypes, anny_global)
        out = body_model(local.float(), betas.float())
    vertex_error = (anny_vertices @ ANNY_TO_SMPL.T - out.vertices.double()).norm(dim=-1).mean()
    joint_error = (anny_joints @ ANNY_TO_SMPL.T - out.joints.double()).norm(dim=-1).mean()
    return 1000 * float(vertex_error), 1000 * float(joint_error)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    parser.add_argument("--shapes", type=int, default=400, help="Anny phenotypes sampled for the PCA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="only compare an existing file with Anny")
    args = parser.parse_args(argv)
    if not args.check:
        data = build(args.shapes, args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, **data)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    from training.body.body_model import load_body_model

    vertex_mm, joint_mm = compare_with_anny(load_body_model(args.out), num_shapes=8)
    print(f"agreement with Anny (8 shapes, random poses): mean vertex {vertex_mm:.2f} mm, mean joint {joint_mm:.2f} mm")


if __name__ == "__main__":
    main()
