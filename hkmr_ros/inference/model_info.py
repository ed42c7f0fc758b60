"""The model's JSON sidecar (beside the `.onnx`, same stem): what the runtime needs to feed the graph.

Formats read: "hkmr-onnx/1" (pose, betas, cam, rotmat) and "hkmr-onnx/2" (adds joints, optional
vertices, the body model, the crop side and the ONNX's sha256). Checked here: the format, the input
(name, NCHW, RGB, square side, mean/std), the outputs' names and trailing shapes, and, when the
sidecar records it, that the ONNX file is the one it describes (sha256).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from hkmr_ros.crops import CROP_SIZE
from hkmr_ros.inference.errors import ModelNotFoundError, SidecarError

SUPPORTED_FORMATS = ("hkmr-onnx/1", "hkmr-onnx/2")
REQUIRED_OUTPUTS = ("pose", "rotmat", "betas", "cam")
OPTIONAL_OUTPUTS = ("joints", "vertices")
# Trailing (per-crop) shape of each output; None = any size (vertices: V x 3).
OUTPUT_SHAPES: Dict[str, Tuple[Optional[int], ...]] = {
    "pose": (72,), "rotmat": (24, 3, 3), "betas": (10,), "cam": (3,), "joints": (24, 3), "vertices": (None, 3)}
RESIZE_RULE = "bilinear-antialias"


@dataclass(frozen=True)
class ModelInfo:
    """The parts of a sidecar the runtime uses. `outputs`: name -> per-crop shape (None = any)."""
    onnx_path: Path
    sidecar_path: Path
    format: str
    input_name: str
    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    crop_size: int
    outputs: Dict[str, Tuple[Optional[int], ...]]
    body_model_name: str
    faces_path: Optional[Path]
    display_faces_path: Optional[Path]  # a decimated mesh over the same vertices, for markers
    onnx_sha256: Optional[str]
    raw: Dict[str, Any]


def sidecar_path_for(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _field(meta: Dict[str, Any], path: str, where: Path) -> Any:
    node: Any = meta
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise SidecarError(f"{where}: missing field '{path}'")
        node = node[key]
    return node


def _triple(value: Any, name: str, where: Path, positive: bool = False) -> Tuple[float, float, float]:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (3,) or not np.isfinite(arr).all() or (positive and (arr <= 0).any()):
        kind = "3 positive numbers" if positive else "3 numbers"
        raise SidecarError(f"{where}: field 'input.{name}' must be {kind} (R, G, B), got {value!r}")
    return tuple(float(v) for v in arr)  # type: ignore[return-value]


def _outputs(meta: Dict[str, Any], where: Path) -> Dict[str, Tuple[Optional[int], ...]]:
    entries = _field(meta, "outputs", where)
    if not isinstance(entries, list):
        raise SidecarError(f"{where}: field 'outputs' must be a list")
    names = [e.get("name") if isinstance(e, dict) else None for e in entries]
    missing = [n for n in REQUIRED_OUTPUTS if n not in names]
    if missing:
        raise SidecarError(f"{where}: outputs {missing} missing (has {names}); "
                           f"the runtime needs {list(REQUIRED_OUTPUTS)}")
    if meta.get("all_iterations"):
        raise SidecarError(f"{where}: the graph outputs every iteration (all_iterations); "
                           f"export it without --all-iterations for the runtime")
    return {n: OUTPUT_SHAPES[n] for n in names if n in OUTPUT_SHAPES}


def read_model_info(onnx_path: Path, verify_sha256: bool = True) -> ModelInfo:
    """Read and check the sidecar of `onnx_path`. Raises ModelNotFoundError, SidecarError."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelNotFoundError(f"ONNX model not found: {onnx_path}")
    sidecar = sidecar_path_for(onnx_path)
    if not sidecar.is_file():
        raise ModelNotFoundError(f"sidecar not found: {sidecar} (the exporter writes it beside the .onnx; "
                                 f"the runtime needs it for the input normalisation)")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SidecarError(f"{sidecar}: not readable JSON ({e})") from e
    if not isinstance(meta, dict):
        raise SidecarError(f"{sidecar}: expected a JSON object")
    fmt = meta.get("format")
    if fmt not in SUPPORTED_FORMATS:
        raise SidecarError(f"{sidecar}: format {fmt!r} not supported (this runtime reads {list(SUPPORTED_FORMATS)})")
    inp = _field(meta, "input", sidecar)
    name = _field(meta, "input.name", sidecar)
    size = _field(meta, "input.image_size", sidecar)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SidecarError(f"{sidecar}: field 'input.image_size' must be a positive integer, got {size!r}")
    for key, want in (("layout", "NCHW"), ("channels", "RGB")):
        if key in inp and inp[key] != want:
            raise SidecarError(f"{sidecar}: field 'input.{key}' is {inp[key]!r}; the runtime feeds {want}")
    crop_size = inp.get("crop_size", CROP_SIZE)
    if crop_size != CROP_SIZE:
        raise SidecarError(f"{sidecar}: field 'input.crop_size' is {crop_size!r}; the runtime crops at {CROP_SIZE}")
    if inp.get("resize", RESIZE_RULE) != RESIZE_RULE:
        raise SidecarError(f"{sidecar}: field 'input.resize' is {inp['resize']!r}; "
                           f"the runtime implements {RESIZE_RULE!r}")
    mean = _triple(_field(meta, "input.mean", sidecar), "mean", sidecar)
    std = _triple(_field(meta, "input.std", sidecar), "std", sidecar, positive=True)
    outputs = _outputs(meta, sidecar)

    body = meta.get("body_model") if isinstance(meta.get("body_model"), dict) else {}
    faces_file, display_file = body.get("faces_file"), body.get("display_faces_file")
    faces_path = onnx_path.parent / faces_file if faces_file else None
    display_faces_path = onnx_path.parent / display_file if display_file else None
    sha = meta.get("onnx_sha256")
    if sha is not None and verify_sha256:
        actual = file_sha256(onnx_path)
        if actual != sha:
            raise SidecarError(f"{sidecar}: field 'onnx_sha256' is {sha[:12]}..., but {onnx_path.name} has "
                               f"{actual[:12]}...: the sidecar describes another graph (re-export both together)")
    return ModelInfo(onnx_path=onnx_path, sidecar_path=sidecar, format=fmt, input_name=str(name),
                     image_size=int(size), mean=mean, std=std, crop_size=int(crop_size), outputs=outputs,
                     body_model_name=str(body.get("name", "smpl")), faces_path=faces_path,
                     display_faces_path=display_faces_path, onnx_sha256=sha, raw=meta)


def _read_faces(path: Optional[Path], sidecar: Path) -> Optional[np.ndarray]:
    if path is None:
        return None
    if not path.is_file():
        raise ModelNotFoundError(f"faces file named by {sidecar} not found: {path}")
    try:
        faces = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SidecarError(f"{path}: not a readable .npy file ({e})") from e
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise SidecarError(f"{path}: expected Fx3 integer faces, got {faces.shape} {faces.dtype}")
    return faces.astype(np.int32)


def load_faces(info: ModelInfo) -> Optional[np.ndarray]:
    """`Fx3` int32 triangle indices from the sidecar's faces file, or None when it names none."""
    return _read_faces(info.faces_path, info.sidecar_path)


def load_display_faces(info: ModelInfo) -> Optional[np.ndarray]:
    """`Fx3` int32 triangles of the decimated display mesh (indices into the full mesh's vertices),
    or None when the sidecar names none."""
    return _read_faces(info.display_faces_path, info.sidecar_path)
