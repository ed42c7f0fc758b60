"""ONNX export of a trained mesh regressor, validated against PyTorch with onnxruntime.

    python -m engine_build.onnx_export --checkpoint training/weights/hkmr_default/model.pt --out model.onnx

The graph has one input, `image` (`Bx3xSxS` float32, ImageNet-normalised RGB, S the checkpoint's
`data.image_size`), and four outputs, the final outer iteration's estimate: `pose` (`Bx72` SMPL
axis-angle), `betas` (`Bx10`), `cam` (`Bx3` weak perspective) and `rotmat` (`Bx24x3x3`); with
`--all-iterations` every outer iteration (`BxTx72`, ...). The batch axis is dynamic unless
`--static-batch`. After `onnx.checker` and shape inference, onnxruntime (CPU) and PyTorch run the
same random inputs and every output must agree (see `TOLERANCES`); a JSON sidecar beside the
`.onnx` (same name, `.json`) records the interface, the normalisation, the model's config and the
validation figures, for the runtime that loads the graph. See docs/engines.md.

The exporter is the TorchScript tracer (`dynamo=False`): the networks have no data-dependent
control flow (the loops over iterations, chains and joints have fixed lengths and unroll), and the
torch.export-based exporter needs onnxscript, which is not a dependency.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from training.config import config_to_dict
from training.datasets.augment import IMAGENET_MEAN, IMAGENET_STD
from training.evaluate import load_method
from training.geometry import aa_to_rotmat

INPUT_NAME = "image"
OUTPUT_NAMES = ("pose", "betas", "cam", "rotmat")
# Per output trailing shape (after the batch axis, and the iteration axis with all_iterations).
OUTPUT_SHAPES = {"pose": [72], "betas": [10], "cam": [3], "rotmat": [24, 3, 3]}
OUTPUT_DESCRIPTIONS = {
    "pose": "SMPL pose, 24 joints x axis-angle, joint 0 the global orientation (radians)",
    "betas": "SMPL shape coefficients",
    "cam": "weak-perspective camera (s, tx, ty): x2d = s * X[:2] + (tx, ty) in the crop normalised to [-1, 1]",
    "rotmat": "per-joint rotation matrices of the pose, SMPL order",
}
# An output passes when max|onnx - torch| <= TOLERANCES[name] * max(1, max|torch|): absolute for
# values of order one, relative for larger ones. float32 through the encoder and the unrolled
# iterations differs by ~1e-6 between runtimes. Betas and camera are smooth in the features: 1e-4.
# Rotations are not: 6-D -> matrix (Gram-Schmidt) amplifies a difference by about 1 / |the second
# column's part orthogonal to the first|, which reaches ~100 on random inputs (measured 6e-5 on
# rotmat where betas differed by 1e-6), and axis-angle is ill-conditioned near pi (v and -v are the
# same rotation); so `pose` is compared as rotation matrices and both get 1e-3 (< 0.06 degrees).
# A graph checked against other weights differs by 0.1 to 2.
TOLERANCES = {"pose": 1e-3, "betas": 1e-4, "cam": 1e-4, "rotmat": 1e-3}
DEFAULT_BATCH_SIZE = 4
PROVIDER = "CPUExecutionProvider"
SIDECAR_FORMAT = "hkmr-onnx/1"


class OnnxValidationError(RuntimeError):
    """onnxruntime and PyTorch disagree on an exported graph beyond the tolerance."""


class ExportHead(nn.Module):
    """A MeshRegressor whose output is a tuple in OUTPUT_NAMES order (ONNX outputs are positional).

    Final iteration: `pose` Bx72, `betas` Bx10, `cam` Bx3, `rotmat` Bx24x3x3; all iterations: BxTx...
    The outputs are reshaped to their static sizes (T = `iterations`): roma's conversions reshape
    by traced shapes, which would otherwise leave the graph's output sizes symbolic.
    """

    def __init__(self, model: nn.Module, iterations: int, all_iterations: bool = False) -> None:
        super().__init__()
        self.model = model
        self.iterations = iterations
        self.all_iterations = all_iterations

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.model(image)
        if self.all_iterations:
            return tuple(out[n].reshape(-1, self.iterations, *OUTPUT_SHAPES[n]) for n in OUTPUT_NAMES)
        return tuple(out[n][:, -1].reshape(-1, *OUTPUT_SHAPES[n]) for n in OUTPUT_NAMES)


def random_images(batch: int, image_size: int, seed: int) -> torch.Tensor:
    """`Bx3xSxS` standard-normal images: the statistics of ImageNet-normalised crops."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, image_size, image_size, generator=generator)


def count_iterations(model: nn.Module, image_size: int) -> int:
    """T, the outer iterations a MeshRegressor outputs."""
    with torch.no_grad():
        return int(model(random_images(1, image_size, seed=0))["pose"].shape[1])


def comparable(name: str, value: np.ndarray) -> np.ndarray:
    """An output in the space it is compared in: `pose` as rotation matrices, the rest as is."""
    if name != "pose":
        return value
    aa = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return aa_to_rotmat(aa.reshape(*aa.shape[:-1], 24, 3)).numpy()


def validate_onnx(onnx_path: Union[str, Path], head: nn.Module, image_size: int,
                  batch_sizes: Sequence[int], seed: int = 0) -> Dict[str, Any]:
    """Run onnxruntime and PyTorch on the same random images at each batch size and compare.

    Returns {'provider', 'batch_sizes', 'tolerance', 'outputs': {name: {'max_abs_diff',
    'max_abs_value', 'limit'}}, 'passed'}; raises OnnxValidationError when an output differs by
    more than its limit or is not finite.
    """
    session = onnxruntime.InferenceSession(str(onnx_path), providers=[PROVIDER])
    head = head.eval()
    diffs = {name: 0.0 for name in OUTPUT_NAMES}
    scales = {name: 0.0 for name in OUTPUT_NAMES}
    problems: List[str] = []
    for i, batch in enumerate(batch_sizes):
        image = random_images(batch, image_size, seed + i)
        with torch.no_grad():
            expected = [t.numpy() for t in head(image)]
        actual = session.run(list(OUTPUT_NAMES), {INPUT_NAME: image.numpy()})
        for name, ref, got in zip(OUTPUT_NAMES, expected, actual):
            if got.shape != ref.shape:
                problems.append(f"{name} at batch {batch}: shape {list(got.shape)}, PyTorch {list(ref.shape)}")
                continue
            if not (np.isfinite(got).all() and np.isfinite(ref).all()):
                problems.append(f"{name} at batch {batch}: non-finite values")
                continue
            ref, got = comparable(name, ref), comparable(name, got)
            diffs[name] = max(diffs[name], float(np.abs(got - ref).max()))
            scales[name] = max(scales[name], float(np.abs(ref).max()))
    outputs = {}
    for name in OUTPUT_NAMES:
        limit = TOLERANCES[name] * max(1.0, scales[name])
        outputs[name] = {"max_abs_diff": diffs[name], "max_abs_value": scales[name], "limit": limit}
        if diffs[name] > limit:
            problems.append(f"{name}: max abs difference {diffs[name]:.3g} > {limit:.3g}")
    report = {"provider": PROVIDER, "batch_sizes": list(batch_sizes), "tolerances": TOLERANCES,
              "pose_compared_as": "rotation matrices", "outputs": outputs, "passed": not problems}
    if problems:
        raise OnnxValidationError(f"{onnx_path}: onnxruntime and PyTorch disagree: " + "; ".join(problems))
    return report


def format_report(report: Dict[str, Any]) -> str:
    """The validation figures as a small table."""
    lines = [f"validation ({report['provider']}, batch sizes {report['batch_sizes']}):",
             f"  {'output':<8} {'max |diff|':>11} {'max |value|':>12} {'limit':>9}"]
    for name, row in report["outputs"].items():
        label = name + (" *" if name == "pose" else "")
        lines.append(f"  {label:<8} {row['max_abs_diff']:>11.3g} {row['max_abs_value']:>12.3g} {row['limit']:>9.3g}")
    lines.append("  * pose compared as rotation matrices")
    return "\n".join(lines)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def finish_graph(path: Path) -> str:
    """Check the saved graph, store inferred shapes and simplify it when onnxsim is installed.

    Returns the tool that simplified it, or 'none'.
    """
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    simplifier = "none"
    try:
        import onnxsim  # optional
    except ImportError:
        onnxsim = None
    if onnxsim is not None:
        simplified, ok = onnxsim.simplify(model)
        if ok:
            model, simplifier = simplified, f"onnxsim {getattr(onnxsim, '__version__', '')}".strip()
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return simplifier


def export_onnx(checkpoint: Union[str, Path], out_path: Union[str, Path], opset: int = 17,
                dynamic_batch: bool = True, all_iterations: bool = False,
                batch_size: int = DEFAULT_BATCH_SIZE) -> Path:
    """Export a training checkpoint to ONNX, check and validate it, write its JSON sidecar.

    batch_size: the graph's batch with `dynamic_batch=False`; otherwise the larger of the two
    validation batches (the other is 1). Returns the `.onnx` path; the sidecar is beside it with a
    `.json` suffix and is only written once validation passes. Raises FileNotFoundError for a
    missing checkpoint, OnnxValidationError when onnxruntime and PyTorch disagree.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    checkpoint, out_path = Path(checkpoint), Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out_path}")
    method = load_method(checkpoint, "export", torch.device("cpu"))
    cfg, image_size = method.cfg, method.image_size
    iterations = count_iterations(method.model, image_size)
    head = ExportHead(method.model, iterations, all_iterations).eval()
    if dynamic_batch:
        # trace at a batch above 1 so that no op is specialised to a single image
        trace_batch, batch_sizes = max(batch_size, 2), sorted({1, max(batch_size, 2)})
    else:
        trace_batch, batch_sizes = batch_size, [batch_size]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = out_path.with_suffix(".json")
    sidecar.unlink(missing_ok=True)  # a stale sidecar must not describe a new graph
    batch_axis = {0: "batch"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        # roma asserts static tensor shapes (e.g. `R.shape[-2:] == (3, 3)`): constant, as traced
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"roma\.")
        torch.onnx.export(
            head, (random_images(trace_batch, image_size, seed=12345),), str(out_path),
            dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={n: batch_axis for n in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None)
    simplifier = finish_graph(out_path)
    report = validate_onnx(out_path, head, image_size, batch_sizes)

    batch_dim: Union[str, int] = "batch" if dynamic_batch else batch_size
    lead = [batch_dim, iterations] if all_iterations else [batch_dim]
    config = config_to_dict(cfg)
    meta = {
        "format": SIDECAR_FORMAT,
        "onnx": out_path.name,
        "opset": opset,
        "dynamic_batch": dynamic_batch,
        "all_iterations": all_iterations,
        "iterations": iterations,
        "input": {
            "name": INPUT_NAME, "shape": [batch_dim, 3, image_size, image_size], "dtype": "float32",
            "layout": "NCHW", "channels": "RGB", "image_size": image_size,
            "normalisation": "x = (rgb / 255 - mean) / std, per channel",
            "mean": [round(float(v), 6) for v in IMAGENET_MEAN], "std": [round(float(v), 6) for v in IMAGENET_STD],
        },
        "outputs": [{"name": n, "shape": lead + OUTPUT_SHAPES[n], "dtype": "float32",
                     "description": OUTPUT_DESCRIPTIONS[n]} for n in OUTPUT_NAMES],
        "model": {
            **{k: config["model"][k] for k in ("encoder", "regressor", "rotation", "regressor_kwargs")},
            "image_size": image_size,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": file_sha256(checkpoint),
        },
        "export": {"torch": torch.__version__, "onnx": onnx.__version__,
                   "onnxruntime": onnxruntime.__version__, "exporter": "torch.onnx (TorchScript, dynamo=False)",
                   "simplifier": simplifier},
        "validation": report,
    }
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return out_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine_build.onnx_export",
        description="Export a trained mesh regressor to ONNX and validate it against PyTorch.")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (.pt with 'model' and 'config')")
    parser.add_argument("--out", required=True, help="output .onnx file; the sidecar .json goes beside it")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="larger validation batch; the fixed batch with --static-batch (default 4)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch axis to --batch-size")
    parser.add_argument("--all-iterations", action="store_true",
                        help="output every outer iteration (BxTx...) instead of the final one")
    args = parser.parse_args(argv)
    print(f"exporting {args.checkpoint} -> {args.out} (opset {args.opset}, "
          f"{'static batch ' + str(args.batch_size) if args.static_batch else 'dynamic batch'})", flush=True)
    try:
        out = export_onnx(args.checkpoint, args.out, opset=args.opset, dynamic_batch=not args.static_batch,
                          all_iterations=args.all_iterations, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError, OnnxValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    meta = json.loads(out.with_suffix(".json").read_text())
    print(format_report(meta["validation"]))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
