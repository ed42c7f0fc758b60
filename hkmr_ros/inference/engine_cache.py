"""Where TensorRT engines live, and whether a cached one may be used: the engine's JSON sidecar.

An engine is only valid for the ONNX it was built from, the TensorRT version that built it, the
GPU model (and its compute capability), the precision and the optimisation profile. Each engine
`X.engine` has a sidecar `X.engine.json` recording those, plus the engine file's own sha256 so a
truncated or replaced file is caught before TensorRT deserialises it. `check_engine` compares a
cached engine with what this machine would build and says which field differs;
`ensure_engine` uses a valid one or builds a new one (via a callback, so this module needs no
TensorRT and is tested without it) beside the ONNX, or in a cache folder when that is read-only.

Cache folder: `cache_dir` if given, else $HKMR_ENGINE_CACHE, else $XDG_CACHE_HOME/hkmr_ros/engines
(~/.cache/hkmr_ros/engines).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hkmr_ros.inference.errors import EngineError
from hkmr_ros.inference.model_info import file_sha256

LOG = logging.getLogger("hkmr_ros.inference")
ENGINE_FORMAT = "hkmr-trt/1"
PRECISIONS = ("fp32", "fp16", "int8")
# Fields that must equal this machine's for a cached engine to be used, in the order reported.
CHECKED_FIELDS = ("format", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision",
                  "input_name", "input_shape", "profile")


@dataclass(frozen=True)
class BuildSpec:
    """What an engine is built for. Profile: batch min..max, tuned at opt; input `Bx3xSxS`."""
    onnx_path: Path
    onnx_sha256: str
    input_name: str
    image_size: int
    precision: str = "fp32"
    max_batch: int = 16
    opt_batch: int = 1
    min_batch: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("max_batch", "min_batch", "opt_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}, "
                             f"{self.opt_batch}, {self.max_batch}")

    def shape(self, batch: int) -> List[int]:
        return [batch, 3, self.image_size, self.image_size]

    def profile(self) -> Dict[str, List[int]]:
        return {"min": self.shape(self.min_batch), "opt": self.shape(self.opt_batch), "max": self.shape(self.max_batch)}


@dataclass(frozen=True)
class Platform:
    """The TensorRT and GPU an engine is built with or run on."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"


def expected_sidecar(spec: BuildSpec, platform: Platform) -> Dict[str, Any]:
    """The sidecar an engine built here for `spec` would have (without the engine's own sha256)."""
    return {
        "format": ENGINE_FORMAT,
        "onnx": spec.onnx_path.name,
        "onnx_sha256": spec.onnx_sha256,
        "tensorrt_version": platform.tensorrt_version,
        "gpu_name": platform.gpu_name,
        "compute_capability": platform.compute_capability,
        "precision": spec.precision,
        "input_name": spec.input_name,
        "input_shape": ["batch", 3, spec.image_size, spec.image_size],
        "profile": spec.profile(),
    }


def sidecar_of(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    if isinstance(value, str) and len(value) == 64:  # a sha256
        text = repr(value[:12] + "...")
    return text


def check_engine(engine_path: Path, expected: Dict[str, Any]) -> Optional[str]:
    """None when `engine_path` may be used, else why not (naming the field that differs)."""
    if not engine_path.is_file():
        return f"no engine at {engine_path}"
    sidecar = sidecar_of(engine_path)
    if not sidecar.is_file():
        return f"{engine_path.name} has no sidecar {sidecar.name} (foreign or from an interrupted build)"
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"sidecar {sidecar.name} is corrupt ({e})"
    if not isinstance(meta, dict):
        return f"sidecar {sidecar.name} is corrupt (not a JSON object)"
    for field in CHECKED_FIELDS:
        if meta.get(field) != expected.get(field):
            what = {"onnx_sha256": "stale: the ONNX changed since the engine was built",
                    "tensorrt_version": "built by another TensorRT",
                    "gpu_name": "built on another GPU",
                    "compute_capability": "built for another GPU architecture"}.get(field, "built with other settings")
            return (f"field '{field}' differs: engine has {_short(meta.get(field))}, "
                    f"here {_short(expected.get(field))} ({what})")
    want = meta.get("engine_sha256")
    if not want or file_sha256(engine_path) != want:
        return f"{engine_path.name} does not match its sidecar's engine_sha256 (corrupt or replaced)"
    return None


def default_cache_dir() -> Path:
    env = os.environ.get("HKMR_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hkmr_ros" / "engines"


def engine_name(spec: BuildSpec, in_cache: bool) -> str:
    """`<stem>.<precision>.b<max>.engine` beside the ONNX; with the ONNX's sha prefix in the shared cache."""
    stem = spec.onnx_path.stem + (f"-{spec.onnx_sha256[:12]}" if in_cache else "")
    return f"{stem}.{spec.precision}.b{spec.max_batch}.engine"


def candidate_paths(spec: BuildSpec, cache_dir: Optional[Path] = None) -> List[Path]:
    """Beside the ONNX first, then the cache folder."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return [spec.onnx_path.parent / engine_name(spec, False), folder / engine_name(spec, True)]


def writable_dir(folder: Path) -> bool:
    """True when a file can be created in `folder` (made if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hkmr-write-test-"):
            pass
        return True
    except OSError:
        return False


def write_engine(engine_path: Path, engine: bytes, meta: Dict[str, Any]) -> None:
    """Write engine then sidecar, each atomically (temp file + rename): a crash leaves no valid pair."""
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_of(engine_path)
    sidecar.unlink(missing_ok=True)  # an old sidecar must not vouch for a half-written engine
    for path, data in ((engine_path, engine), (sidecar, (json.dumps(meta, indent=2) + "\n").encode())):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


BuildFn = Callable[[BuildSpec], Tuple[bytes, Dict[str, Any]]]


def ensure_engine(spec: BuildSpec, platform: Platform, build: BuildFn, cache_dir: Optional[Path] = None,
                  reject: Sequence[Path] = (), reject_reason: str = "") -> Tuple[Path, str]:
    """(path of a valid engine for `spec`, what happened: 'cached' or 'built (<why>)').

    `build(spec)` returns the serialised engine and extra sidecar fields (e.g. the fp16 converter).
    `reject`: engines already found unusable by the caller (e.g. deserialisation failed) with
    `reject_reason`. Raises EngineError when no location is writable.
    """
    expected = expected_sidecar(spec, platform)
    reasons: List[str] = []
    candidates = candidate_paths(spec, cache_dir)
    for path in candidates:
        if path in reject:
            reasons.append(f"{path.name}: {reject_reason}")
            continue
        why = check_engine(path, expected)
        if why is None:
            return path, "cached"
        if path.exists() or sidecar_of(path).exists():
            LOG.warning("hkmr inference: rejecting TensorRT engine %s: %s", path, why)
        reasons.append(why)
    target = next((p for p in candidates if writable_dir(p.parent)), None)
    if target is None:
        raise EngineError(f"no writable folder for the TensorRT engine (tried {[str(p.parent) for p in candidates]}); "
                          f"pass cache_dir or set HKMR_ENGINE_CACHE")
    why = "; ".join(r for r in reasons if not r.startswith("no engine at")) or "no cached engine"
    LOG.info("hkmr inference: building TensorRT engine %s (%s)", target, why)
    engine, extra = build(spec)
    if not engine:
        raise EngineError(f"TensorRT build of {spec.onnx_path} returned an empty engine")
    meta = {**expected, **extra, "engine_sha256": hashlib.sha256(engine).hexdigest()}
    write_engine(target, engine, meta)
    return target, f"built ({why})"
