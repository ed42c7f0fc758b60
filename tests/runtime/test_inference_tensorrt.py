"""TensorRT backend, builder and engine cache.

Without TensorRT (this CPU machine), a fake `tensorrt` module and a fake CUDA runtime exercise the
real code paths: the builder's calls (profile, timing cache, progress monitor, FP16 flag on 10,
strongly typed fp16 ONNX on 11, INT8 refusal without ModelOpt), the engine sidecar (stale, foreign,
other TensorRT, corrupt: rejected with the differing field named, then rebuilt), and inference
through name-based tensors, set_input_shape, set_tensor_address and execute_async_v3 (the fake
engine computes with onnxruntime, so results must equal the ONNX Runtime backend's). The tests at
the end use the real TensorRT and a GPU, and skip cleanly where either is missing.
"""
from __future__ import annotations

import enum
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from hkmr_ros.inference import BackendUnavailableError, EngineError, load_estimator
from hkmr_ros.inference import cuda_runtime, engine_cache, trt_build
from hkmr_ros.inference.engine_cache import (BuildSpec, Platform, check_engine, ensure_engine, expected_sidecar,
                                             sidecar_of)
from hkmr_ros.inference.model_info import read_model_info
from hkmr_ros.inference.tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_inference import crops_uint8, write_tiny_model  # noqa: E402

MAGIC = b"FAKE-TRT-ENGINE\n"


# ----------------------------------------------------------------- fakes

class FakeCuda:
    """Device memory as bytearrays keyed by fake pointers; records calls."""

    name = "fake-cuda"

    def __init__(self, gpu: str = "Fake GPU", cc: str = "8.7") -> None:
        self.gpu, self.cc = gpu, cc
        self.mem: dict = {}
        self.next_ptr = 0x1000
        self.calls: list = []

    def device_info(self):
        return self.gpu, self.cc

    def malloc(self, nbytes):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 256
        self.mem[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr):
        del self.mem[ptr]

    def stream_create(self):
        return "stream"

    def stream_destroy(self, stream):
        self.calls.append("stream_destroy")

    def stream_handle(self, stream):
        return 42

    def synchronize(self, stream):
        self.calls.append("sync")

    def htod(self, ptr, host, stream):
        assert host.nbytes <= len(self.mem[ptr])
        self.mem[ptr][:host.nbytes] = host.tobytes()

    def dtoh(self, host, ptr, stream):
        host.view(np.uint8).reshape(-1)[:] = np.frombuffer(bytes(self.mem[ptr][:host.nbytes]), np.uint8)


def make_fake_trt(version: str = "10.9.0", cuda: FakeCuda = None):
    """A module with the TensorRT 10/11 Python API surface the runtime uses."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.log = []

    class Logger:
        WARNING, INFO = 2, 3

        def __init__(self, severity):
            self.severity = severity

    class IProgressMonitor:
        def __init__(self):
            pass

    class TensorIOMode(enum.Enum):
        INPUT = 1
        OUTPUT = 2

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 5

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    flags = ["TF32"] + (["FP16", "INT8"] if major < 11 else [])
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags)

    class Input:
        def __init__(self, name):
            self.name = name

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.onnx = flags, [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return Input(self.inputs[i])

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            try:
                session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            except Exception as e:
                self.errors.append(f"parse error: {e}")
                return False
            self.network.inputs = [i.name for i in session.get_inputs()]
            self.network.onnx = Path(path).read_bytes()
            self.network.input_types = [i.type for i in session.get_inputs()]
            self.network.graph_types = sorted({t for t in _initializer_types(path)})
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"fresh-cache"

        def serialize(self):
            return self.data + b"+timings"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pools, self.progress_monitor, self.cache = set(), [], {}, None, None

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            self.flags.discard(flag.name)
            self.cleared = getattr(self, "cleared", set()) | {flag.name}

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 3)
                for step in range(3):
                    monitor.step_complete("Building engine", step)
                monitor.phase_finish("Building engine")
            meta = {"flags": network.flags, "builder_flags": sorted(config.flags),
                    "cleared_flags": sorted(getattr(config, "cleared", set())),
                    "profile": config.profiles[0].shapes, "graph_types": network.graph_types,
                    "input_types": network.input_types}
            trt.log.append(meta)
            header = json.dumps(meta).encode()
            return MAGIC + len(header).to_bytes(8, "little") + header + network.onnx

    class Engine:
        def __init__(self, meta, onnx_bytes):
            self.meta = meta
            self.session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = {o.name: o.shape for o in self.session.get_outputs()}
            self.names = self.inputs + list(self.outputs)

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_profile_shape(self, name, index):
            return tuple(self.meta["profile"][name])

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}
            trt.contexts.append(self)
            self.executions = 0

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = list(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.engine.inputs:
                return self.shapes[name]
            batch = self.shapes[self.engine.inputs[0]][0]
            return [batch] + list(self.engine.outputs[name][1:])

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            assert stream_handle == 42
            self.executions += 1
            name = self.engine.inputs[0]
            shape = self.shapes[name]
            raw = bytes(cuda.mem[self.addresses[name]][:int(np.prod(shape)) * 4])
            x = np.frombuffer(raw, np.float32).reshape(shape)
            values = self.engine.session.run(list(self.engine.outputs), {name: x})
            for out, v in zip(self.engine.outputs, values):
                data = np.ascontiguousarray(v, np.float32).tobytes()
                cuda.mem[self.addresses[out]][:len(data)] = data
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(MAGIC):
                return None
            n = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "little")
            meta = json.loads(data[len(MAGIC) + 8:len(MAGIC) + 8 + n])
            try:
                return Engine(meta, data[len(MAGIC) + 8 + n:])
            except Exception:
                return None

    trt.contexts = []
    trt.Logger, trt.IProgressMonitor, trt.TensorIOMode = Logger, IProgressMonitor, TensorIOMode
    trt.NetworkDefinitionCreationFlag, trt.MemoryPoolType = NetworkDefinitionCreationFlag, MemoryPoolType
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.nptype = lambda dtype: np.float32
    return trt


def _initializer_types(path):
    try:
        import onnx
    except ImportError:  # only the fp16 test looks at them, and it needs onnx anyway
        return []
    model = onnx.load(path)
    return [onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]


@pytest.fixture()
def tiny(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    return write_tiny_model(folder)


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


def build(tiny, cache, trt, cuda, **kw):
    return trt_build.build_cached_engine(tiny, cache_dir=cache, trt=trt, cuda=cuda, **kw)


# ----------------------------------------------------------------- builder

def test_build_writes_engine_and_sidecar_with_every_field_beside_the_onnx(tiny, cache, capsys):
    cuda, trt = FakeCuda(), None
    trt = make_fake_trt("10.9.0", cuda)
    path, status = build(tiny, cache, trt, cuda, max_batch=8)
    assert status.startswith("built") and path.parent == tiny.parent and path.name == "tiny.fp32.b8.engine"
    meta = json.loads(sidecar_of(path).read_text())
    assert meta["tensorrt_version"] == "10.9.0" and meta["gpu_name"] == "Fake GPU"
    assert meta["compute_capability"] == "8.7" and meta["precision"] == "fp32"
    assert meta["profile"] == {"min": [1, 3, 16, 16], "opt": [1, 3, 16, 16], "max": [8, 3, 16, 16]}
    assert meta["input_shape"] == ["batch", 3, 16, 16] and len(meta["onnx_sha256"]) == 64
    assert meta["engine_sha256"] == engine_cache.hashlib.sha256(path.read_bytes()).hexdigest()
    err = capsys.readouterr().err
    assert "Building engine (3 steps)" in err and "Building engine done" in err  # progress monitor output
    assert (tiny.parent / trt_build.TIMING_CACHE_NAME).read_bytes() == b"fresh-cache+timings"
    assert trt.log[-1]["builder_flags"] == [] and trt.log[-1]["flags"] == 0
    assert trt.log[-1]["cleared_flags"] == ["TF32"]  # fp32 means fp32


def test_second_build_uses_the_cache_and_the_timing_cache(tiny, cache):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    build(tiny, cache, trt, cuda)
    path, status = build(tiny, cache, trt, cuda)
    assert status == "cached" and len(trt.log) == 1
    _, status = build(tiny, cache, trt, cuda, force=True)
    assert status.startswith("built") and len(trt.log) == 2
    assert (tiny.parent / trt_build.TIMING_CACHE_NAME).read_bytes() == b"fresh-cache+timings+timings"


def test_fp16_on_tensorrt_10_sets_the_builder_flag(tiny, cache):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    path, _ = build(tiny, cache, trt, cuda, precision="fp16")
    assert trt.log[-1]["builder_flags"] == ["FP16"] and trt.log[-1]["flags"] == 0
    assert json.loads(sidecar_of(path).read_text())["fp16"] == "BuilderFlag.FP16"


def test_fp16_on_tensorrt_11_builds_a_strongly_typed_fp16_onnx_with_fp32_io(tiny, cache):
    pytest.importorskip("onnx")
    cuda = FakeCuda()
    trt = make_fake_trt("11.1.0", cuda)
    assert not hasattr(trt.BuilderFlag, "FP16")
    path, _ = build(tiny, cache, trt, cuda, precision="fp16")
    log = trt.log[-1]
    assert log["builder_flags"] == [] and "float16" in log["graph_types"] and "float32" not in log["graph_types"]
    assert log["input_types"] == ["tensor(float)"]  # keep_io_types: fp32 in and out
    meta = json.loads(sidecar_of(path).read_text())
    assert "keep_io_types=True" in meta["fp16"] and meta["strongly_typed"] is True
    # and it runs: fp16 weights, fp32 I/O, close to the fp32 result
    info = read_model_info(tiny)
    backend = TensorRTBackend(path.read_bytes(), info, trt, cuda, engine_path=path)
    ort = load_estimator(tiny, backend="onnxruntime", threads=1, warmup=False)
    x = ort.preprocess(crops_uint8(2))
    np.testing.assert_allclose(backend.run(x)["pose"], ort.run_network(x)["pose"], atol=5e-3)


def test_fp32_on_tensorrt_11_is_strongly_typed_without_builder_flags(tiny, cache):
    cuda = FakeCuda()
    trt = make_fake_trt("11.1.0", cuda)
    build(tiny, cache, trt, cuda)
    assert trt.log[-1]["builder_flags"] == [] and trt.log[-1]["flags"] == 0


def test_int8_without_modelopt_is_a_clear_not_available_error(tiny, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "modelopt", None)
    monkeypatch.setitem(sys.modules, "modelopt.onnx", None)
    monkeypatch.setitem(sys.modules, "modelopt.onnx.quantization", None)
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    with pytest.raises(BackendUnavailableError, match="int8 is not available.*ModelOpt"):
        build(tiny, cache, trt, cuda, precision="int8")


def test_bad_profile_and_precision_are_value_errors(tiny, cache):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    with pytest.raises(ValueError, match="precision"):
        build(tiny, cache, trt, cuda, precision="fp8")
    with pytest.raises(ValueError, match="max_batch"):
        build(tiny, cache, trt, cuda, max_batch=0)


def test_tensorrt_9_is_refused(monkeypatch):
    old = types.ModuleType("tensorrt")
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    assert "needs TensorRT 10 or 11" in tensorrt_unavailable_reason()
    with pytest.raises(BackendUnavailableError, match="10 or 11"):
        trt_build.import_tensorrt()


# ----------------------------------------------------------------- engine lifecycle

def _rebuilt(caplog, fn):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hkmr_ros.inference"):
        path, status = fn()
    return path, status, " ".join(r.getMessage() for r in caplog.records)


def test_stale_onnx_is_rejected_naming_onnx_sha256_and_rebuilt(tiny, cache, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    build(tiny, cache, trt, cuda)
    write_tiny_model(tiny.parent, seed=5)  # new weights, same file name
    path, status, log = _rebuilt(caplog, lambda: build(tiny, cache, trt, cuda))
    assert status.startswith("built") and "field 'onnx_sha256' differs" in log and "stale" in log
    assert check_engine(path, json.loads(sidecar_of(path).read_text())) is None


def test_engine_from_another_gpu_is_rejected_naming_gpu_name(tiny, cache, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    build(tiny, cache, trt, cuda)
    other = FakeCuda(gpu="NVIDIA Jetson AGX Orin", cc="8.7")
    _, status, log = _rebuilt(caplog, lambda: build(tiny, cache, trt, other))
    assert status.startswith("built") and "field 'gpu_name' differs" in log and "Jetson" in log


def test_engine_from_another_architecture_is_rejected_naming_compute_capability(tiny, cache, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    build(tiny, cache, trt, cuda)
    _, status, log = _rebuilt(caplog, lambda: build(tiny, cache, trt, FakeCuda(cc="9.0")))
    assert "field 'compute_capability' differs" in log


def test_engine_from_another_tensorrt_is_rejected_naming_tensorrt_version(tiny, cache, caplog):
    cuda = FakeCuda()
    build(tiny, cache, make_fake_trt("10.3.0", cuda), cuda)
    _, status, log = _rebuilt(caplog, lambda: build(tiny, cache, make_fake_trt("10.9.0", cuda), cuda))
    assert status.startswith("built") and "field 'tensorrt_version' differs" in log and "10.3.0" in log


def test_other_precision_or_profile_gets_its_own_engine(tiny, cache):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    a, _ = build(tiny, cache, trt, cuda)
    b, _ = build(tiny, cache, trt, cuda, precision="fp16")
    c, _ = build(tiny, cache, trt, cuda, max_batch=4)
    assert len({a, b, c}) == 3 and all(p.is_file() for p in (a, b, c))


def test_corrupt_engine_file_is_rejected_by_its_sha256_and_rebuilt(tiny, cache, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    path, _ = build(tiny, cache, trt, cuda)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    _, status, log = _rebuilt(caplog, lambda: build(tiny, cache, trt, cuda))
    assert status.startswith("built") and "engine_sha256 (corrupt or replaced)" in log


def test_corrupt_or_missing_sidecar_is_rejected_and_rebuilt(tiny, cache, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    path, _ = build(tiny, cache, trt, cuda)
    sidecar_of(path).write_text("{truncated")
    _, status, log = _rebuilt(caplog, lambda: build(tiny, cache, trt, cuda))
    assert status.startswith("built") and "corrupt" in log
    sidecar_of(path).unlink()
    _, status, log = _rebuilt(caplog, lambda: build(tiny, cache, trt, cuda))
    assert status.startswith("built") and "has no sidecar" in log


def test_engine_that_passes_the_sidecar_but_does_not_deserialise_is_rebuilt_once(tiny, cache, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    path, _ = build(tiny, cache, trt, cuda)
    garbage = b"not an engine" * 10
    meta = json.loads(sidecar_of(path).read_text())
    meta["engine_sha256"] = engine_cache.hashlib.sha256(garbage).hexdigest()
    path.write_bytes(garbage)
    sidecar_of(path).write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="hkmr_ros.inference"):
        backend = TensorRTBackend.from_onnx(read_model_info(tiny), cache_dir=cache, trt=trt, cuda=cuda)
    log = " ".join(r.getMessage() for r in caplog.records)
    assert "could not deserialise" in log and backend.status.startswith("built")
    assert path.read_bytes().startswith(MAGIC)


def test_read_only_onnx_folder_puts_the_engine_in_the_cache_folder(tiny, cache, monkeypatch):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    real = engine_cache.writable_dir
    monkeypatch.setattr(engine_cache, "writable_dir", lambda d: d != tiny.parent and real(d))
    monkeypatch.setattr(trt_build, "writable_dir", engine_cache.writable_dir)
    path, status = build(tiny, cache, trt, cuda)
    assert path.parent == cache and path.name.startswith("tiny-") and status.startswith("built")
    assert not list(tiny.parent.glob("*.engine"))
    assert build(tiny, cache, trt, cuda)[1] == "cached"


def test_no_writable_folder_is_a_clear_error(tiny, cache, monkeypatch):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    monkeypatch.setattr(engine_cache, "writable_dir", lambda d: False)
    monkeypatch.setattr(trt_build, "writable_dir", lambda d: False)
    with pytest.raises(EngineError, match="no writable folder.*HKMR_ENGINE_CACHE"):
        build(tiny, cache, trt, cuda)


def test_default_cache_folder_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HKMR_ENGINE_CACHE", str(tmp_path / "x"))
    assert engine_cache.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("HKMR_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache.default_cache_dir() == tmp_path / "xdg" / "hkmr_ros" / "engines"


def test_ensure_engine_with_a_callback_needs_no_tensorrt(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    spec = BuildSpec(onnx_path=onnx, onnx_sha256="a" * 64, input_name="image", image_size=96)
    platform = Platform("10.9.0", "GPU", "8.6")
    calls = []
    path, status = ensure_engine(spec, platform, lambda s: (calls.append(s) or b"engine", {"note": 1}), tmp_path / "c")
    assert status == "built (no cached engine)" and calls == [spec]
    assert json.loads(sidecar_of(path).read_text())["note"] == 1
    assert ensure_engine(spec, platform, lambda s: pytest.fail("rebuilt"), tmp_path / "c") == (path, "cached")
    assert check_engine(path, expected_sidecar(spec, Platform("10.9.0", "GPU", "8.7"))).startswith(
        "field 'compute_capability' differs")


# ----------------------------------------------------------------- inference through the fake engine

def test_tensorrt_backend_equals_onnxruntime_and_chunks_batches_above_the_profile(tiny, cache, monkeypatch):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_runtime, "open_cuda", lambda device=0: cuda)
    assert tensorrt_unavailable_reason() is None
    est = load_estimator(tiny, backend="tensorrt", max_batch=4, cache_dir=cache)
    ort = load_estimator(tiny, backend="onnxruntime", threads=1)
    assert est.backend_name == "tensorrt" and est.backend.max_batch == 4
    crops = crops_uint8(10, seed=3)
    got, want = est.estimate(crops), ort.estimate(crops)
    for a, b in zip(got, want):
        for name in ("pose", "rotmat", "betas", "cam", "joints"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-5)
    context = trt.contexts[-1]
    assert context.executions == 1 + 3  # warm-up, then 10 crops as 4 + 4 + 2
    with est:
        pass  # leaving the block closes the estimator
    assert not cuda.mem and "stream_destroy" in cuda.calls
    est.close()  # idempotent


def test_auto_prefers_tensorrt_when_it_can_run(tiny, cache, monkeypatch, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_runtime, "open_cuda", lambda device=0: cuda)
    with caplog.at_level(logging.INFO, logger="hkmr_ros.inference"):
        est = load_estimator(tiny, backend="auto", cache_dir=cache)
    assert est.backend_name == "tensorrt"
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hkmr inference: tensorrt runs")]
    assert len(line) == 1 and "TensorRT and a GPU found" in line[0]


def test_auto_falls_back_when_tensorrt_raises_something_unexpected(tiny, cache, monkeypatch):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)

    def broken(self, logger):
        raise TypeError("incompatible function arguments")

    trt.Runtime.__init__ = broken
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_runtime, "open_cuda", lambda device=0: cuda)
    est = load_estimator(tiny, backend="auto", cache_dir=cache, threads=1)
    assert est.backend_name.startswith("onnxruntime") and "TypeError: incompatible" in est.reason
    with pytest.raises(ValueError, match="precision"):
        load_estimator(tiny, backend="auto", precision="fp64")


def test_auto_falls_back_to_onnxruntime_when_the_engine_build_fails(tiny, cache, monkeypatch, caplog):
    cuda = FakeCuda()
    trt = make_fake_trt("10.9.0", cuda)
    trt.Builder.build_serialized_network = lambda self, network, config: None
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_runtime, "open_cuda", lambda device=0: cuda)
    with caplog.at_level(logging.INFO, logger="hkmr_ros.inference"):
        est = load_estimator(tiny, backend="auto", cache_dir=cache, threads=1)
    assert est.backend_name.startswith("onnxruntime")
    assert "tensorrt failed (TensorRT failed to build an engine" in est.reason


def test_cuda_call_raises_naming_the_call_and_the_error():
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) not installed")
    count = cudart.cudaGetDeviceCount()
    if count[0] == cudart.cudaError_t.cudaSuccess and count[1] > 0:
        pytest.skip("a CUDA device is present: no failing call to check")
    with pytest.raises(EngineError, match=r"CUDA call cudaGetDeviceCount failed: cudaError\w+ \(\d+\)"):
        cuda_runtime.cuda_call(cudart, count, "cudaGetDeviceCount")
    assert "CUDA" in str(cuda_runtime.cuda_unavailable_reason())


def test_cuda_call_returns_values_on_success():
    fake = types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0))
    assert cuda_runtime.cuda_call(fake, (0, 7), "x") == 7
    assert cuda_runtime.cuda_call(fake, (0,), "x") is None
    assert cuda_runtime.cuda_call(fake, (0, 1, 2), "x") == (1, 2)


# ----------------------------------------------------------------- the real TensorRT (GPU machines)

def _real_trt():
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed")
    why = tensorrt_unavailable_reason()
    if why is not None:
        pytest.skip(f"TensorRT cannot run here: {why}")
    return trt


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_real_tensorrt_engine_matches_onnxruntime(tmp_path, precision, atol):
    _real_trt()
    tiny = write_tiny_model(tmp_path)
    est = load_estimator(tiny, backend="tensorrt", precision=precision, max_batch=8, cache_dir=tmp_path / "cache")
    ort = load_estimator(tiny, backend="onnxruntime", threads=1)
    crops = crops_uint8(5)
    for a, b in zip(est.estimate(crops), ort.estimate(crops)):
        np.testing.assert_allclose(a.pose, b.pose, atol=atol)
    again = load_estimator(tiny, backend="tensorrt", precision=precision, max_batch=8, cache_dir=tmp_path / "cache")
    assert again.backend.status == "cached"


def test_real_tensorrt_runs_the_shipped_default_model(tmp_path):
    _real_trt()
    from hkmr_ros.inference import DEFAULT_MODEL
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"{DEFAULT_MODEL} missing")
    est = load_estimator(None, backend="tensorrt", cache_dir=tmp_path)
    ort = load_estimator(None, backend="onnxruntime")
    crops = crops_uint8(3)
    for a, b in zip(est.estimate(crops), ort.estimate(crops)):
        np.testing.assert_allclose(a.rotmat, b.rotmat, atol=1e-3)
        if a.joints is not None:
            np.testing.assert_allclose(a.joints, b.joints, atol=1e-3)


def test_build_engine_for_export_tools_returns_the_engine_path(tiny, monkeypatch):
    from hkmr_ros.inference import tensorrt_backend
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.9.0", cuda))
    monkeypatch.setattr(cuda_runtime, "open_cuda", lambda device=0: cuda)
    path = tensorrt_backend.build_engine(tiny, precision="fp16")
    assert path == tiny.parent / "tiny.fp16.b16.engine" and sidecar_of(path).is_file()


def test_cli_builds_then_finds_the_cached_engine(tiny, monkeypatch, capsys):
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.9.0", cuda))
    monkeypatch.setattr(cuda_runtime, "open_cuda", lambda device=0: cuda)
    assert trt_build.main([str(tiny), "--precision", "fp16", "--max-batch", "4"]) == 0
    assert "tiny.fp16.b4.engine (built" in capsys.readouterr().out
    assert trt_build.main([str(tiny), "--precision", "fp16", "--max-batch", "4"]) == 0
    assert "(cached)" in capsys.readouterr().out


def test_cli_without_tensorrt_fails_with_the_reason(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert trt_build.main([str(tiny)]) == 1
    assert "tensorrt is not installed" in capsys.readouterr().err


def test_fp16_onnx_for_tensorrt_11_keeps_fp32_io_and_stays_close_on_the_shipped_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from hkmr_ros.inference import DEFAULT_MODEL
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"{DEFAULT_MODEL} missing")
    out = tmp_path / "fp16.onnx"
    assert "keep_io_types=True" in trt_build.convert_fp16(DEFAULT_MODEL, out)
    model = onnx.load(str(out))
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in [*model.graph.input, *model.graph.output])
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    half = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    full = onnxruntime.InferenceSession(str(DEFAULT_MODEL), providers=["CPUExecutionProvider"])
    side = full.get_inputs()[0].shape[-1]
    x = np.random.default_rng(0).standard_normal((2, 3, side, side)).astype(np.float32)
    names = [o.name for o in full.get_outputs()]
    got = dict(zip(names, half.run(names, {"image": x})))
    want = dict(zip(names, full.run(names, {"image": x})))
    assert np.abs(got["rotmat"] - want["rotmat"]).max() < 2e-2
    assert np.abs(got["joints"] - want["joints"]).max() < 5e-3  # metres
