"""ONNX export of a trained mesh regressor with its body model inside, validated against PyTorch.

    python -m engine_build --checkpoint training/weights/hkmr_default/model.pt --out hkmr_ros/data/hkmr_default.onnx

One graph per network: input `image` (`Bx3xSxS` float32, normalised RGB, S the checkpoint's
`data.image_size`), outputs of the final outer iteration `pose` (Bx72 axis-angle), `rotmat`
(Bx24x3x3), `betas` (Bx10), `cam` (Bx3 weak perspective), `joints` (Bx24x3, metres, the body
model's posed joints) and, with `vertices=True`, `vertices` (BxVx3). The batch axis is dynamic.
The graph is straight (no If / Loop): the HKMR passes are collapsed (training/models/
hkmr_regressor.py), rotations are converted without branches (engine_build/rotations.py) and the
body model is plain tensor ops (engine_build/body.py).

Steps: trace (TorchScript exporter, `dynamo=False`: no data-dependent control flow, and the
dynamo exporter needs onnxscript), simplify (onnxslim, else onnxsim, when installed), check
(`onnx.checker` full check, strict shape inference, no control-flow node), validate (onnxruntime
CPU against PyTorch's straightforward path: the joint-by-joint regressor, roma's rotations and
smplx's body model, on random and optionally rendered crops, per-output largest error), then the
sidecar JSON beside the graph (format `hkmr-onnx/2`, see docs/engines.md). The sidecar is written
only after validation passes.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from engine_build.body import DISPLAY_MESH_FACES, ExportBody, display_faces, faces_array
from engine_build.rotations import rot6d_to_rotmat, rotmat_to_aa
from hkmr_ros.inference.model_info import file_sha256
from training.config import config_to_dict
from training.datasets.augment import IMAGENET_MEAN, IMAGENET_STD
from training.evaluate import Method, load_method
from training.geometry import aa_to_rotmat
from training.models.mean_params import state_to_rotmat

INPUT_NAME = "image"
OUTPUT_NAMES = ("pose", "rotmat", "betas", "cam", "joints")
VERTICES = "vertices"
# Per output trailing shape, after the batch axis ("V" = the body model's vertex count).
OUTPUT_SHAPES: Dict[str, List[Union[int, str]]] = {
    "pose": [72], "rotmat": [24, 3, 3], "betas": [10], "cam": [3], "joints": [24, 3], "vertices": ["V", 3]}
OUTPUT_DESCRIPTIONS = {
    "pose": "SMPL pose, 24 joints x axis-angle (radians), each relative to its parent; joint 0 the global "
            "orientation in the camera-aligned frame (x right, y down, z away)",
    "rotmat": "the pose as rotation matrices, SMPL joint order",
    "betas": "SMPL shape coefficients",
    "cam": "weak-perspective camera (s, tx, ty): x2d = s * X[:2] + (tx, ty) in the crop normalised to [-1, 1]",
    "joints": "the body model's 24 posed SMPL joints (metres, camera-aligned axes x right, y down, z away, "
              "body-model origin, no translation): the points whose projection the training loss fits",
    "vertices": "the body model's posed mesh vertices, same frame as joints",
}
# An output passes when max|onnx - torch| <= tol * max(1, max|torch|) (absolute for values of order
# one). float32 runtimes differ by ~1e-6 through the encoder and the unrolled iterations. 6-D ->
# matrix (Gram-Schmidt) can amplify a difference ~100x on random inputs and axis-angle is
# ill-conditioned near pi, so `pose` is compared as rotation matrices and both get 1e-3
# (< 0.06 degrees). Joints and vertices: 1e-4 m (0.1 mm), absolute whatever their size.
TOLERANCES = {"pose": 1e-3, "rotmat": 1e-3, "betas": 1e-4, "cam": 1e-4, "joints": 1e-4, "vertices": 1e-4}
ABSOLUTE = ("joints", "vertices")
VALIDATION_BATCHES = (1, 3, 8)
TRACE_BATCH = 2
PROVIDER = "CPUExecutionProvider"
SIDECAR_FORMAT = "hkmr-onnx/2"
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")
CROP_SIZE = 224
RESIZE_RULE = "bilinear-antialias"

Progress = Callable[[str], None]


class OnnxValidationError(RuntimeError):
    """onnxruntime and PyTorch disagree on an exported graph beyond the tolerance."""


class GraphError(RuntimeError):
    """The exported graph breaks a rule of the runtime interface (e.g. it holds an If node)."""


class ExportGraph(nn.Module):
    """image `Bx3xSxS` -> (pose Bx72, rotmat Bx24x3x3, betas Bx10, cam Bx3, joints Bx24x3[, vertices BxVx3]).

    The regressor's `final_estimate` (collapsed HKMR passes in eval mode), branch-free rotations and
    the plain-ops body model; outputs reshaped to static trailing sizes so that a TensorRT build
    sees no symbolic sizes but the batch.
    """

    def __init__(self, model: nn.Module, rotation: str, body: ExportBody) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.regressor = model.regressor
        self.rotation = rotation
        self.body = body

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        estimate = self.regressor.final_estimate(self.encoder(image))
        state = estimate["pose_state"]
        rotmat = (state_to_rotmat(state, "aa") if self.rotation == "aa" else rot6d_to_rotmat(state)).reshape(-1, 24, 3, 3)
        pose = state if self.rotation == "aa" else rotmat_to_aa(rotmat)
        body = self.body(rotmat, estimate["betas"])
        out = (pose.reshape(-1, 72), rotmat, estimate["betas"].reshape(-1, 10),
               estimate["cam"].reshape(-1, 3), body["joints"].reshape(-1, 24, 3))
        if self.body.with_vertices:
            out = out + (body["vertices"].reshape(-1, self.body.num_vertices, 3),)
        return out


@torch.no_grad()
def reference_outputs(method: Method, body_model: nn.Module, image: torch.Tensor,
                      vertices: bool) -> Dict[str, np.ndarray]:
    """PyTorch's straightforward path: joint-by-joint regressor, roma rotations, smplx's body model."""
    regressor = method.model.regressor
    features = method.model.encoder(image)
    forward = getattr(regressor, "forward_stepwise", regressor.forward)
    out = {k: v[:, -1] for k, v in forward(features).items()}
    body = body_model(out["rotmat"], out["betas"])
    ref = {"pose": out["pose"], "rotmat": out["rotmat"], "betas": out["betas"], "cam": out["cam"],
           "joints": body.joints}
    if vertices:
        ref["vertices"] = body.vertices
    return {k: v.float().numpy() for k, v in ref.items()}


def random_images(batch: int, image_size: int, seed: int) -> torch.Tensor:
    """`Bx3xSxS` standard-normal images: the statistics of normalised crops."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, image_size, image_size, generator=generator)


def comparable(name: str, value: np.ndarray) -> np.ndarray:
    """An output in the space it is compared in: `pose` as rotation matrices, the rest as is."""
    if name != "pose":
        return value
    aa = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return aa_to_rotmat(aa.reshape(*aa.shape[:-1], 24, 3)).numpy()


def validate_onnx(onnx_path: Union[str, Path], method: Method, body_model: nn.Module,
                  inputs: Sequence[Tuple[str, torch.Tensor]], vertices: bool = False,
                  progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Run onnxruntime and PyTorch on each (label, `Bx3xSxS`) input and compare every output.

    Returns {'provider', 'inputs': [{label, batch}], 'tolerances', 'outputs': {name: {'max_abs_diff',
    'max_abs_value', 'limit', 'worst_input'}}, 'passed'}; raises OnnxValidationError when an output
    differs by more than its limit, has the wrong shape or is not finite.
    """
    session = onnxruntime.InferenceSession(str(onnx_path), providers=[PROVIDER])
    names = list(OUTPUT_NAMES) + ([VERTICES] if vertices else [])
    diffs = {n: 0.0 for n in names}
    scales = {n: 0.0 for n in names}
    worst = {n: "" for n in names}
    problems: List[str] = []
    for label, image in inputs:
        expected = reference_outputs(method, body_model, image, vertices)
        actual = dict(zip(names, session.run(names, {INPUT_NAME: image.numpy()})))
        for name in names:
            ref, got = expected[name], actual[name]
            if got.shape != ref.shape:
                problems.append(f"{name} on {label}: shape {list(got.shape)}, PyTorch {list(ref.shape)}")
                continue
            if not (np.isfinite(got).all() and np.isfinite(ref).all()):
                problems.append(f"{name} on {label}: non-finite values")
                continue
            diff = float(np.abs(comparable(name, got) - comparable(name, ref)).max())
            if diff >= diffs[name]:
                diffs[name], worst[name] = diff, label
            scales[name] = max(scales[name], float(np.abs(comparable(name, ref)).max()))
        if progress:
            progress(f"  {label}: " + ", ".join(
                f"{n} {float(np.abs(comparable(n, actual[n]) - comparable(n, expected[n])).max()):.2g}"
                for n in names if actual[n].shape == expected[n].shape))
    outputs = {}
    for name in names:
        limit = TOLERANCES[name] * (1.0 if name in ABSOLUTE else max(1.0, scales[name]))
        outputs[name] = {"max_abs_diff": diffs[name], "max_abs_value": scales[name], "limit": limit,
                         "worst_input": worst[name]}
        if diffs[name] > limit:
            problems.append(f"{name}: max abs difference {diffs[name]:.3g} > {limit:.3g} (on {worst[name]})")
    report = {"provider": PROVIDER, "inputs": [{"label": l, "batch": int(x.shape[0])} for l, x in inputs],
              "tolerances": {n: TOLERANCES[n] for n in names}, "pose_compared_as": "rotation matrices",
              "reference": "PyTorch: joint-by-joint regressor (forward_stepwise), roma rotations, smplx body model",
              "outputs": outputs, "passed": not problems}
    if problems:
        raise OnnxValidationError(f"{onnx_path}: onnxruntime and PyTorch disagree: " + "; ".join(problems))
    return report


def format_report(report: Dict[str, Any]) -> str:
    """The validation figures as a small table."""
    batches = sorted({i["batch"] for i in report["inputs"]})
    lines = [f"validation ({report['provider']}, {len(report['inputs'])} inputs, batch sizes {batches}):",
             f"  {'output':<9} {'max |diff|':>11} {'max |value|':>12} {'limit':>9}  worst on"]
    for name, row in report["outputs"].items():
        label = name + (" *" if name == "pose" else "")
        lines.append(f"  {label:<9} {row['max_abs_diff']:>11.3g} {row['max_abs_value']:>12.3g} "
                     f"{row['limit']:>9.3g}  {row['worst_input']}")
    lines.append("  * pose compared as rotation matrices")
    return "\n".join(lines)


def op_counts(model: onnx.ModelProto) -> Dict[str, int]:
    """Node count per op type of the main graph (sub-graphs of If/Loop count as their parent)."""
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def simplify(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, str]:
    """onnxslim (preferred), else onnxsim, when installed; returns (model, 'tool version' or 'none')."""
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        return onnxslim.slim(model), f"onnxslim {getattr(onnxslim, '__version__', '')}".strip()
    try:
        import onnxsim
    except ImportError:
        return model, "none"
    simplified, ok = onnxsim.simplify(model)
    return (simplified, f"onnxsim {getattr(onnxsim, '__version__', '')}".strip()) if ok else (model, "none")


def finish_graph(path: Path, use_simplifier: bool = True) -> Dict[str, Any]:
    """Simplify, check, infer shapes and save; refuse control flow. Returns node statistics."""
    model = onnx.load(str(path))
    before = len(model.graph.node)
    tool = "none"
    if use_simplifier:
        model, tool = simplify(model)
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    counts = op_counts(model)
    flow = {op: counts[op] for op in CONTROL_FLOW_OPS if op in counts}
    if flow:
        raise GraphError(f"{path}: the graph holds control-flow nodes {flow}; the runtime needs a straight graph")
    onnx.save(model, str(path))
    return {"simplifier": tool, "nodes_traced": before, "nodes": len(model.graph.node), "op_counts": counts}


def input_normalisation(encoder: str) -> Tuple[List[float], List[float]]:
    """(mean, std) on the 0..1 scale of the encoder's input: `encoder_normalisation` when the
    encoders module has it, else ImageNet's (every torchvision encoder)."""
    from training.models import encoders

    lookup = getattr(encoders, "encoder_normalisation", None)
    mean, std = lookup(encoder) if lookup is not None else (IMAGENET_MEAN, IMAGENET_STD)
    return [round(float(v), 7) for v in mean], [round(float(v), 7) for v in std]


def display_path(path: Path) -> str:
    """A path for the sidecar: relative to the repository when inside it, else the file name."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return path.name


def body_model_name(body_model: nn.Module) -> str:
    """"anny-smpl" for the open default (or a file derived from Anny), else "smpl"."""
    from training.body.body_model import DEFAULT_MODEL_PATH

    source = Path(body_model.source)
    if source.resolve() == DEFAULT_MODEL_PATH.resolve() or "anny" in str(body_model.provenance).lower():
        return "anny-smpl"
    return "smpl"


def export_onnx(checkpoint: Union[str, Path], out_path: Union[str, Path], body_model_path: Optional[Union[str, Path]] = None,
                vertices: bool = False, opset: int = 17, dynamic_batch: bool = True,
                static_batch: int = 1, rendered: int = 0, simplifier: bool = True,
                validation_batches: Sequence[int] = VALIDATION_BATCHES,
                progress: Optional[Progress] = None, display_mesh_faces: int = DISPLAY_MESH_FACES) -> Path:
    """Export a training checkpoint with its body model to ONNX, check, validate, write the sidecar.

    body_model_path: an SMPL-format file; None = the checkpoint's `model.body_model` (itself None =
    $HKMR_SMPL_MODEL or the open anny-smpl, as in training). rendered: also validate on that many
    rendered synthetic crops (needs the EGL renderer). With `dynamic_batch=False` the batch is
    fixed to `static_batch` and validated at that size only. Returns the `.onnx` path; the sidecar
    (`.json`) and, with vertices, the faces (`_faces.npy`) and a decimated display mesh of about
    `display_mesh_faces` triangles over the same vertices (`_display_faces.npy`; 0 = none) are
    beside it. Raises FileNotFoundError
    for a missing checkpoint or body model, OnnxValidationError when onnxruntime and PyTorch
    disagree, GraphError for a graph with control flow.
    """
    say = progress or (lambda message: None)
    if opset < 17:
        raise ValueError(f"opset must be at least 17, got {opset}")
    checkpoint, out_path = Path(checkpoint), Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out_path}")
    start = time.perf_counter()
    step = _stepper(say, start)

    step("loading the checkpoint and the body model")
    method = load_method(checkpoint, "export", torch.device("cpu"))
    cfg, image_size = method.cfg, method.image_size
    from training.body.body_model import load_body_model, resolve_model_path

    body_source = resolve_model_path(body_model_path if body_model_path is not None else cfg.model.body_model)
    body_model = load_body_model(body_source).eval()
    body = ExportBody(body_model, vertices=vertices).eval()
    graph = ExportGraph(method.model, cfg.model.rotation, body).eval()
    names = list(OUTPUT_NAMES) + ([VERTICES] if vertices else [])
    say(f"  {cfg.model.encoder} + {cfg.model.regressor} ({cfg.model.rotation}), input {image_size}px, "
        f"body model {body_model_name(body_model)} ({body_model.num_vertices} vertices, "
        f"pose blend shapes {'yes' if body.has_pose_blend_shapes else 'none'})")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = out_path.with_suffix(".json")
    faces_path = out_path.with_name(out_path.stem + "_faces.npy")
    display_file = out_path.with_name(out_path.stem + "_display_faces.npy")
    display = vertices and display_mesh_faces > 0
    for stale in (sidecar, faces_path, display_file):  # an earlier export's files must not describe this graph
        stale.unlink(missing_ok=True)
    step(f"tracing to ONNX (opset {opset}, {'dynamic batch' if dynamic_batch else f'batch {static_batch}'})")
    trace_batch = TRACE_BATCH if dynamic_batch else static_batch
    axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # static shape asserts (roma)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # the simplifier folds them
        torch.onnx.export(graph, (random_images(trace_batch, image_size, seed=12345),), str(out_path),
                          dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=names, dynamic_axes=axes)
    step("simplifying and checking" if simplifier else "checking")
    stats = finish_graph(out_path, simplifier)
    say(f"  {stats['nodes']} nodes after {stats['simplifier']} ({stats['nodes_traced']} traced), "
        f"no {'/'.join(CONTROL_FLOW_OPS)}; {out_path.stat().st_size / 1e6:.1f} MB")

    step("validating against PyTorch (onnxruntime CPU)")
    batches = list(validation_batches) if dynamic_batch else [static_batch]
    inputs = [(f"random batch {b}", random_images(b, image_size, seed=100 + b)) for b in batches]
    skipped = None
    if rendered:
        from engine_build.crops import rendered_crops

        say(f"  rendering {rendered} synthetic crops")
        try:
            crops = rendered_crops(rendered, image_size, body_model, input_normalisation(cfg.model.encoder))
            inputs.append((f"rendered batch {len(crops)}", crops))
        except RuntimeError as e:  # no EGL here: random inputs still validate every op
            skipped = str(e)
            say(f"  warning: {skipped}")
    report = validate_onnx(out_path, method, body_model, inputs, vertices, progress=say)
    if skipped:
        report["rendered_skipped"] = skipped
    say(format_report(report))

    step("writing the sidecar")
    if vertices:
        np.save(faces_path, faces_array(body_model))
    if display:
        rest = body_model.rest().vertices[0].numpy()
        shown = display_faces(rest, faces_array(body_model), display_mesh_faces)
        np.save(display_file, shown)
        say(f"  display mesh: {len(shown)} of {len(body_model.faces)} triangles")
    batch_dim: Union[str, int] = "batch" if dynamic_batch else static_batch
    mean, std = input_normalisation(cfg.model.encoder)
    config = config_to_dict(cfg)
    meta = {
        "format": SIDECAR_FORMAT,
        "onnx": out_path.name,
        "onnx_sha256": file_sha256(out_path),
        "opset": opset,
        "dynamic_batch": dynamic_batch,
        "input": {
            "name": INPUT_NAME, "shape": [batch_dim, 3, image_size, image_size], "dtype": "float32",
            "layout": "NCHW", "channels": "RGB", "image_size": image_size,
            "normalisation": "x = (rgb / 255 - mean) / std, per channel, on the crop_size crop, then resized",
            "mean": mean, "std": std, "crop_size": CROP_SIZE, "resize": RESIZE_RULE,
        },
        "outputs": [{"name": n, "shape": [batch_dim] + [body.num_vertices if d == "V" else d for d in OUTPUT_SHAPES[n]],
                     "dtype": "float32", "description": OUTPUT_DESCRIPTIONS[n]} for n in names],
        "body_model": {
            "name": body_model_name(body_model),
            "source": display_path(Path(body_model.source)),
            "source_sha256": file_sha256(Path(body_model.source)),
            "provenance": str(body_model.provenance),
            "licence": str(body_model.licence),
            "num_vertices": body.num_vertices,
            "num_betas": body.num_betas,
            "pose_blend_shapes": body.has_pose_blend_shapes,
            **({"faces_file": faces_path.name, "num_faces": int(body_model.faces.shape[0])} if vertices else {}),
            **({"display_faces_file": display_file.name, "num_display_faces": len(shown)} if display else {}),
        },
        "model": {
            **{k: config["model"][k] for k in ("encoder", "regressor", "rotation", "regressor_kwargs")},
            "image_size": image_size,
            "checkpoint": display_path(checkpoint),
            "checkpoint_sha256": file_sha256(checkpoint),
        },
        "graph": {k: stats[k] for k in ("nodes", "nodes_traced", "op_counts")},
        "export": {"torch": torch.__version__, "onnx": onnx.__version__,
                   "onnxruntime": onnxruntime.__version__, "exporter": "torch.onnx (TorchScript, dynamo=False)",
                   "simplifier": stats["simplifier"]},
        "validation": report,
    }
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    step(f"done: {out_path}, {sidecar.name}" + (f", {faces_path.name}" if vertices else "")
         + (f", {display_file.name}" if display else ""))
    return out_path


def _stepper(say: Progress, start: float) -> Callable[[str], None]:
    """Numbered step lines with the elapsed time."""
    count = [0]

    def step(message: str) -> None:
        count[0] += 1
        say(f"[{count[0]}] {message} ({time.perf_counter() - start:.1f} s)")

    return step


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m engine_build.onnx_export`: the same command as `python -m engine_build`."""
    from engine_build.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
