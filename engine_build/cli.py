"""One command for the model artifact: export, simplify, check, validate (and TensorRT when asked).

    python -m engine_build                      # regenerate the shipped default (hkmr_ros/data/hkmr_default.onnx)
    python -m engine_build --checkpoint RUN/model.pt --out model.onnx [--vertices] [--body-model SMPL.pkl]

Exit status 0 when every step passed, 1 with the reason on stderr otherwise. See docs/engines.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = Path("training/weights/hkmr_default/model.pt")
DEFAULT_OUT = Path("hkmr_ros/data/hkmr_default.onnx")
DEFAULT_RENDERED = 8
DEFAULT_DISPLAY_FACES = 2000  # engine_build.body.DISPLAY_MESH_FACES (not imported here: no torch at parse time)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine_build",
        description="Export a trained mesh regressor with its body model to ONNX, check it and validate it "
                    "against PyTorch; optionally build TensorRT engines from it.")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help=f"training checkpoint (.pt with 'model' and 'config'; default {DEFAULT_CHECKPOINT})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output .onnx; the sidecar .json goes beside it (default {DEFAULT_OUT})")
    p.add_argument("--body-model", type=Path, default=None,
                   help="SMPL-format body model file (.pkl/.npz); default: the checkpoint's, else "
                        "$HKMR_SMPL_MODEL, else the open anny-smpl")
    p.add_argument("--vertices", action="store_true",
                   help="also output the mesh vertices (BxVx3) and write the faces (_faces.npy) beside")
    p.add_argument("--display-faces", type=int, default=DEFAULT_DISPLAY_FACES, metavar="N",
                   help=f"with --vertices, also write a display mesh of about N triangles over the same vertices "
                        f"(_display_faces.npy), which the markers draw (default {DEFAULT_DISPLAY_FACES}; 0 = none)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, at least 17 (default 17)")
    p.add_argument("--static-batch", type=int, default=None, metavar="B",
                   help="fix the batch axis to B instead of a dynamic one")
    p.add_argument("--rendered", type=int, default=DEFAULT_RENDERED, metavar="N",
                   help=f"also validate on N rendered synthetic crops (default {DEFAULT_RENDERED}; 0 = none; "
                        "needs the EGL renderer)")
    p.add_argument("--no-simplify", action="store_true", help="skip the ONNX simplifier")
    p.add_argument("--tensorrt", nargs="*", default=None, metavar="PRECISION",
                   help="after the export, build TensorRT engines (fp32, fp16; default both) with "
                        "hkmr_ros.inference's builder; needs tensorrt and a GPU")
    p.add_argument("--max-batch", type=int, default=16, help="TensorRT profile's largest batch (default 16)")
    p.add_argument("--calibration", type=Path, default=None, metavar="NPY",
                   help="INT8 calibration inputs (Nx3xSxS float32 .npy, normalised like the graph's input); "
                        "written from --calibration-count rendered crops when the file does not exist")
    p.add_argument("--calibration-count", type=int, default=128, metavar="N",
                   help="rendered crops for a new --calibration file (default 128)")
    return p


def calibration_inputs(path: Path, onnx_path: Path, count: int):
    """Nx3xSxS float32 network inputs for INT8 calibration: `path` if it exists, else rendered crops
    (normalised and resized as the sidecar says) saved there."""
    import json

    import numpy as np

    if path.is_file():
        data = np.load(path, allow_pickle=False)
        print(f"[calibration] {len(data)} inputs from {path}", flush=True)
        return data
    from engine_build.crops import rendered_crops
    from training.body.body_model import load_body_model

    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    print(f"[calibration] rendering {count} synthetic crops -> {path}", flush=True)
    data = rendered_crops(count, int(meta["input"]["image_size"]), load_body_model(),
                          (meta["input"]["mean"], meta["input"]["std"])).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, data)
    return data


def build_engines(onnx_path: Path, precisions: Sequence[str], max_batch: int,
                  calibration: Optional[Path] = None, calibration_count: int = 128) -> None:
    """TensorRT engines for the ONNX through the runtime's builder (hkmr_ros.inference), which
    owns the engine cache: beside the ONNX, or its cache folder when that is read-only. INT8 is
    explicit quantization only (the builder's ModelOpt Q/DQ path) with calibration inputs."""
    try:
        from hkmr_ros.inference import tensorrt_backend, trt_build
    except ImportError as e:
        raise RuntimeError(f"TensorRT engines need hkmr_ros.inference.tensorrt_backend ({e})") from e
    why = tensorrt_backend.tensorrt_unavailable_reason()
    if why is not None:
        raise RuntimeError(f"TensorRT cannot run here: {why}")
    for precision in precisions:
        print(f"[tensorrt] {precision} engine, batch 1..{max_batch}, from {onnx_path}", flush=True)
        if precision == "int8":
            data = calibration_inputs(calibration or onnx_path.with_name(onnx_path.stem + "_calibration.npy"),
                                      onnx_path, calibration_count)
            engine, status = trt_build.build_cached_engine(onnx_path, precision="int8", max_batch=max_batch,
                                                           calibration=data)
            print(f"[tensorrt] int8: {engine} ({status})", flush=True)
            continue
        engine = tensorrt_backend.build_engine(onnx_path, precision=precision, max_batch=max_batch)
        print(f"[tensorrt] {precision}: {engine}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    from engine_build.onnx_export import GraphError, OnnxValidationError, export_onnx

    precisions = None if args.tensorrt is None else (args.tensorrt or ["fp32", "fp16"])
    bad = [p for p in precisions or [] if p not in ("fp32", "fp16", "int8")]
    if bad:
        print(f"error: unknown TensorRT precision {bad}; known: fp32, fp16, int8", file=sys.stderr)
        return 1
    print(f"exporting {args.checkpoint} -> {args.out}", flush=True)
    try:
        out = export_onnx(
            args.checkpoint, args.out, body_model_path=args.body_model, vertices=args.vertices,
            opset=args.opset, dynamic_batch=args.static_batch is None, static_batch=args.static_batch or 1,
            rendered=args.rendered, simplifier=not args.no_simplify,
            progress=lambda message: print(message, flush=True), display_mesh_faces=args.display_faces)
    except (FileNotFoundError, ValueError, OnnxValidationError, GraphError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if precisions:
        try:
            build_engines(out, precisions, args.max_batch, args.calibration, args.calibration_count)
        except Exception as e:  # a TensorRT failure must not hide that the ONNX is fine
            print(f"error: TensorRT build failed: {e}", file=sys.stderr)
            return 1
    return 0
