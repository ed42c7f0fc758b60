"""The SMPL-format body model: SMPL's own file if the user has it, else the open anny-smpl default.

`load_body_model` validates the file itself (keys, shapes, index ranges) so that a bad file
fails with one clear `BodyModelError` instead of a deep stack trace inside smplx, then wraps
`smplx.SMPL`. See docs/body_model.md for how the default file is derived.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import smplx
import torch
from smplx.utils import Struct
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS
from torch import nn

from hkmr_ros.skeleton import NUM_JOINTS
from training.body.joint_sets import (
    JOINT_SETS,
    SMPLX_VERTEX_ID_KEYS,
    joint_set_matrix,
)

ENV_VAR = "HKMR_SMPL_MODEL"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "data" / "anny_smpl.npz"
SMPL_NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 207
SMPL_VERTEX_COUNT = 6890

REQUIRED_KEYS = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f", "posedirs")

EXPECTED = (
    "expected an SMPL-format model file (.pkl or .npz) with the arrays "
    "v_template (Vx3), shapedirs (Vx3xS), J_regressor (24xV), weights (Vx24), "
    "kintree_table (2x24), f (Fx3) and posedirs (Vx3x207)"
)
HOW_TO_SUPPLY = (
    "to use SMPL, download its model file from https://smpl.is.tue.mpg.de and pass its path "
    f"(load_body_model(path) / --model PATH) or set {ENV_VAR}=/path/to/SMPL_NEUTRAL.pkl"
)
HOW_TO_GENERATE = "generate the open default with `python -m training.body.anny_smpl`"


class BodyModelError(ValueError):
    """A body model file that exists but cannot be used (corrupt or not SMPL-format)."""


@dataclass
class BodyOutput:
    """One forward pass: vertices BxVx3, joints Bx24x3 (SMPL), keypoints BxKx3 (smplx's joints)."""

    vertices: torch.Tensor
    joints: torch.Tensor
    keypoints: torch.Tensor


class BodyModel(nn.Module):
    """smplx.SMPL plus the joint sets, the file's provenance and a pose-format-agnostic forward."""

    def __init__(self, data: Dict[str, np.ndarray], source: Path, num_betas: int = 10):
        super().__init__()
        self.source = str(source)
        self.licence = data["licence"]
        self.provenance = data["provenance"]
        self.num_betas = num_betas
        arrays = {key: data[key] for key in REQUIRED_KEYS}
        arrays["shapedirs"] = arrays["shapedirs"][:, :, :num_betas]
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note on 10-component files
            self.smpl = smplx.SMPL(
                model_path=self.source,
                data_struct=Struct(**arrays),
                num_betas=num_betas,
                vertex_ids=data["vertex_ids"],
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
            )
        self.faces: np.ndarray = np.asarray(data["f"], dtype=np.int64)
        self.num_vertices: int = int(data["v_template"].shape[0])
        self.head_top_vertex: int = int(data["head_top"])
        for name in JOINT_SETS:
            self.register_buffer(f"joint_set_{name}", joint_set_matrix(name), persistent=False)

    def forward(self, pose: torch.Tensor, betas: torch.Tensor) -> BodyOutput:
        """pose: Bx72 / Bx24x3 axis-angle or Bx24x3x3 rotation matrices; betas: Bxnum_betas."""
        if betas.dim() != 2 or betas.shape[1] != self.num_betas:
            raise ValueError(f"betas must be Bx{self.num_betas}, got {tuple(betas.shape)}")
        batch = pose.shape[0]
        if pose.dim() == 4 and pose.shape[1:] == (NUM_JOINTS, 3, 3):
            rotmats = pose
            out = self.smpl(
                betas=betas, global_orient=rotmats[:, :1], body_pose=rotmats[:, 1:], pose2rot=False
            )
        elif pose.shape[1:] in ((NUM_JOINTS * 3,), (NUM_JOINTS, 3)):
            axis_angle = pose.reshape(batch, NUM_JOINTS * 3)
            out = self.smpl(betas=betas, global_orient=axis_angle[:, :3], body_pose=axis_angle[:, 3:])
        else:
            raise ValueError(
                f"pose must be Bx72 or Bx24x3 (axis-angle) or Bx24x3x3 (rotation matrices), "
                f"got {tuple(pose.shape)}"
            )
        return BodyOutput(vertices=out.vertices, joints=out.joints[:, :NUM_JOINTS], keypoints=out.joints)

    @torch.no_grad()
    def rest(self) -> BodyOutput:
        """The mean shape in the rest pose (batch 1, no gradient): what colouring, meshes and summaries start from."""
        template = self.smpl.v_template
        return self(template.new_zeros(1, NUM_JOINTS * 3), template.new_zeros(1, self.num_betas))

    def joint_set(self, name: str, out: BodyOutput) -> torch.Tensor:
        """BxJx3 joints of a named set (smpl24, spin24, h36m17, coco17, lsp14); see joint_sets.py."""
        if name not in JOINT_SETS:
            raise ValueError(f"unknown joint set {name!r}; known joint sets: {', '.join(JOINT_SETS)}")
        head_top = out.vertices[:, self.head_top_vertex : self.head_top_vertex + 1]
        keypoints = torch.cat([out.keypoints, head_top], dim=1)
        return torch.einsum("jk,bkc->bjc", getattr(self, f"joint_set_{name}"), keypoints)


def resolve_model_path(path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The file to load: the argument, else $HKMR_SMPL_MODEL, else the shipped anny-smpl default."""
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_MODEL_PATH


def load_body_model(path: Optional[Union[str, os.PathLike]] = None, num_betas: int = 10) -> BodyModel:
    """Load an SMPL-format body model (see resolve_model_path for which file)."""
    model_path = resolve_model_path(path)
    data = read_smpl_file(model_path)
    num_components = data["shapedirs"].shape[2]
    if num_components < num_betas:
        raise BodyModelError(
            f"{model_path}: shapedirs has {num_components} shape components but {num_betas} "
            f"were requested; {EXPECTED}"
        )
    return BodyModel(data, model_path, num_betas=num_betas)


def read_smpl_file(path: Path) -> Dict:
    """Read and validate an SMPL-format .pkl/.npz; returns the arrays plus vertex ids and provenance."""
    if not path.is_file():
        hint = HOW_TO_GENERATE + "; or " + HOW_TO_SUPPLY if path == DEFAULT_MODEL_PATH else HOW_TO_SUPPLY
        raise FileNotFoundError(f"body model file not found: {path}; {hint}")
    if path.stat().st_size == 0:
        raise BodyModelError(f"{path}: the file is empty; {EXPECTED}; {HOW_TO_SUPPLY}")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    raw = _read_npz(path) if is_zip else _read_pickle(path)
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise BodyModelError(f"{path}: missing {', '.join(missing)}; {EXPECTED}; {HOW_TO_SUPPLY}")
    try:
        data = {key: _to_numpy(raw[key]) for key in REQUIRED_KEYS}
    except (TypeError, ValueError) as err:
        raise BodyModelError(f"{path}: an array could not be read ({err}); {EXPECTED}") from err
    _check_shapes(path, data)
    data["vertex_ids"] = _vertex_ids(path, raw, data["v_template"].shape[0])
    data["head_top"] = (
        int(_to_numpy(raw["vertex_ids_head_top"]))
        if "vertex_ids_head_top" in raw
        else int(np.argmax(data["v_template"][:, 1]))  # y is up in SMPL's frame
    )
    data["licence"] = (
        str(_to_numpy(raw["licence"]))
        if "licence" in raw
        else f"not stated in the file; see the licence that came with {path.name}"
    )
    data["provenance"] = str(_to_numpy(raw["source"])) if "source" in raw else "SMPL-format file"
    return data


def _read_npz(path: Path) -> Dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise BodyModelError(f"{path}: not a readable .npz ({err}); {EXPECTED}; {HOW_TO_SUPPLY}") from err


def _read_pickle(path: Path) -> Dict:
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except ModuleNotFoundError as err:
        raise BodyModelError(
            f"{path}: the pickle needs the module {err.name!r} (SMPL's original .pkl stores chumpy "
            "arrays); install chumpy or convert the file to plain numpy with smplx's "
            "tools/clean_ch.py; " + EXPECTED
        ) from err
    except Exception as err:  # pickle raises many types on garbage input
        raise BodyModelError(
            f"{path}: neither an .npz (zip) nor a readable pickle ({type(err).__name__}: {err}); "
            f"{EXPECTED}; {HOW_TO_SUPPLY}"
        ) from err
    if not isinstance(raw, dict):
        raise BodyModelError(f"{path}: the pickle holds a {type(raw).__name__}, not a dict; {EXPECTED}")
    return raw


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "todense"):  # SMPL's J_regressor is a scipy sparse matrix
        value = value.todense()
    if hasattr(value, "r"):  # chumpy array
        value = value.r
    return np.asarray(value)


def _check_shapes(path: Path, data: Dict[str, np.ndarray]) -> None:
    v_template = data["v_template"]
    if v_template.ndim != 2 or v_template.shape[1] != 3 or v_template.shape[0] < 1:
        raise BodyModelError(f"{path}: v_template has shape {v_template.shape}, not Vx3; {EXPECTED}")
    num_vertices = v_template.shape[0]
    expected_shapes = {
        "shapedirs": (num_vertices, 3, None),
        "J_regressor": (NUM_JOINTS, num_vertices),
        "weights": (num_vertices, NUM_JOINTS),
        "kintree_table": (2, NUM_JOINTS),
        "f": (None, 3),
        "posedirs": (num_vertices, 3, SMPL_NUM_POSE_BASIS),
    }
    for key, shape in expected_shapes.items():
        actual = data[key].shape
        if len(actual) != len(shape) or any(e is not None and e != a for e, a in zip(shape, actual)):
            wanted = "x".join("*" if e is None else str(e) for e in shape)
            raise BodyModelError(f"{path}: {key} has shape {actual}, expected {wanted} (V={num_vertices}); {EXPECTED}")
    for key in ("v_template", "shapedirs", "J_regressor", "weights", "posedirs"):
        if not np.issubdtype(data[key].dtype, np.number) or not np.isfinite(data[key]).all():
            raise BodyModelError(f"{path}: {key} is not a finite numeric array; {EXPECTED}")
    faces = data["f"]
    if faces.shape[0] < 1 or not np.issubdtype(faces.dtype, np.number) or np.any(faces != np.round(faces)):
        raise BodyModelError(f"{path}: f must hold integer vertex indices; {EXPECTED}")
    if faces.min() < 0 or faces.max() >= num_vertices:
        raise BodyModelError(f"{path}: f indexes vertices outside 0..{num_vertices - 1}; {EXPECTED}")
    parents = data["kintree_table"][0].astype(np.int64)
    if any(not 0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise BodyModelError(f"{path}: kintree_table row 0 is not a parent list (parent index < child); {EXPECTED}")


def _vertex_ids(path: Path, raw: Dict, num_vertices: int) -> Dict[str, int]:
    """smplx's extra keypoint vertices: from `vertex_ids_<key>` arrays, else SMPL's own if V=6890."""
    stored = {key: int(_to_numpy(raw[f"vertex_ids_{key}"])) for key in SMPLX_VERTEX_ID_KEYS if f"vertex_ids_{key}" in raw}
    if not stored and num_vertices == SMPL_VERTEX_COUNT:
        return dict(SMPLX_VERTEX_IDS["smplh"])
    missing = [key for key in SMPLX_VERTEX_ID_KEYS if key not in stored]
    if missing:
        raise BodyModelError(
            f"{path}: has {num_vertices} vertices (not SMPL's {SMPL_VERTEX_COUNT}) and lacks the keypoint "
            f"vertex ids {', '.join('vertex_ids_' + k for k in missing)}; {EXPECTED}"
        )
    bad = {key: v for key, v in stored.items() if not 0 <= v < num_vertices}
    if bad:
        raise BodyModelError(f"{path}: keypoint vertex ids out of range 0..{num_vertices - 1}: {bad}")
    return stored
