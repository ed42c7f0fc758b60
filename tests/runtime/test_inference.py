"""The torch-free Estimator: preprocessing exactly as training, batching, backends, clear errors.

Most tests run a tiny linear ONNX graph written with the `onnx` helpers (outputs = W @ flattened
input), so the expected result of a crop is computable in numpy; the shipped default model is
run in a subprocess with torch made unimportable.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hkmr_ros.inference import (BACKENDS, DEFAULT_MODEL, BackendUnavailableError, EstimatorError, InputError,
                                MeshEstimate, ModelError, ModelNotFoundError, SidecarError, load_estimator)
from hkmr_ros.inference import estimator as estimator_module
from hkmr_ros.inference.preprocess import axis_matrices, resample_matrix, resize, to_network_input

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16  # the tiny graph's input side
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
OUT_DIMS = {"pose": [72], "betas": [10], "cam": [3], "rotmat": [24, 3, 3], "joints": [24, 3], "vertices": [5, 3]}


def tiny_weights(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal((3 * SIZE * SIZE, int(np.prod(d)))) * 0.01).astype(np.float32)
            for n, d in OUT_DIMS.items()}


# A minimal protobuf writer for the few ONNX messages the tiny graph needs, so that these tests run
# in a runtime-only install (onnxruntime, but not the `onnx` package). Field numbers: onnx/onnx.proto.
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    data_type = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[array.dtype]
    return (b"".join(_field(1, int(d)) for d in array.shape) + _field(2, data_type) + _field(8, name)
            + _field(9, np.ascontiguousarray(array).tobytes()))


def _value_info(name: str, dims) -> bytes:
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))  # elem_type FLOAT


def _node(op: str, inputs, outputs, **ints) -> bytes:
    attrs = b"".join(_field(5, _field(1, k) + _field(3, v) + _field(20, 2)) for k, v in ints.items())  # INT
    return b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op) + attrs


def write_tiny_model(folder: Path, outputs=("pose", "betas", "cam", "rotmat", "joints"), fmt: str = "hkmr-onnx/2",
                     seed: int = 0, name: str = "tiny") -> Path:
    """A linear graph `image Bx3xSxS -> Flatten -> MatMul -> Reshape -> outputs` (dynamic batch) and its sidecar."""
    weights = tiny_weights(seed)
    graph = _field(1, _node("Flatten", ["image"], ["flat"], axis=1))
    for n in outputs:
        graph += _field(1, _node("MatMul", ["flat", f"W_{n}"], [f"mm_{n}"]))
        graph += _field(1, _node("Reshape", [f"mm_{n}", f"shape_{n}"], [n]))
    graph += _field(2, "tiny")
    for n in outputs:
        graph += _field(5, _tensor(f"W_{n}", weights[n]))
        graph += _field(5, _tensor(f"shape_{n}", np.array([-1, *OUT_DIMS[n]], dtype=np.int64)))
    graph += _field(11, _value_info("image", ["batch", 3, SIZE, SIZE]))
    for n in outputs:
        graph += _field(12, _value_info(n, ["batch", *OUT_DIMS[n]]))
    model = _field(1, 8) + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))  # ir 8, opset 17
    path = folder / f"{name}.onnx"
    path.write_bytes(model)
    meta = {"format": fmt,
            "input": {"name": "image", "shape": ["batch", 3, SIZE, SIZE], "image_size": SIZE, "mean": MEAN,
                      "std": STD, "channels": "RGB", "layout": "NCHW", "crop_size": 224,
                      "resize": "bilinear-antialias"},
            "outputs": [{"name": n, "shape": ["batch", *OUT_DIMS[n]], "dtype": "float32"} for n in outputs],
            "body_model": {"name": "anny-smpl"}}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_tiny_model_is_a_valid_onnx_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(write_tiny_model(tmp_path)))
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["pose", "betas", "cam", "rotmat", "joints"]


def reference_input(crops: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Dense-matrix reference of the preprocessing, float64: normalise, then Wy @ X @ Wx^T via 224."""
    x = (crops.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    x = x.transpose(0, 3, 1, 2)
    wy = resample_matrix(224, size).astype(np.float64) @ resample_matrix(crops.shape[1], 224)
    wx = resample_matrix(224, size).astype(np.float64) @ resample_matrix(crops.shape[2], 224)
    return wy @ x @ wx.T


def expected_outputs(crops: np.ndarray, seed: int = 0) -> dict:
    """numpy reference: normalise, resize (via 224), flatten, multiply."""
    x = reference_input(crops).reshape(len(crops), -1)
    return {n: (x @ w.astype(np.float64)).reshape(len(crops), *OUT_DIMS[n]) for n, w in tiny_weights(seed).items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def est(tiny):
    return load_estimator(tiny, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def shipped():
    """The shipped default model (needs no `onnx` package, so these tests run in a runtime-only install)."""
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"the shipped default model is missing: {DEFAULT_MODEL}")
    return load_estimator(None, backend="onnxruntime", threads=1)


def crops_uint8(n: int, size: int = 224, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ----------------------------------------------------------------- results

def test_estimate_returns_one_float32_mesh_estimate_per_crop_matching_numpy(est):
    crops = crops_uint8(3)
    out = est.estimate(crops)
    ref = expected_outputs(crops)
    assert len(out) == 3 and all(isinstance(m, MeshEstimate) for m in out)
    for i, m in enumerate(out):
        assert m.pose.shape == (72,) and m.rotmat.shape == (24, 3, 3) and m.betas.shape == (10,)
        assert m.cam.shape == (3,) and m.joints.shape == (24, 3) and m.vertices is None
        for name in ("pose", "betas", "cam", "rotmat", "joints"):
            value = getattr(m, name)
            assert value.dtype == np.float32
            np.testing.assert_allclose(value, ref[name][i], atol=2e-5, rtol=1e-4)
    assert est.backend_name == "onnxruntime" and est.image_size == SIZE and est.body_model_name == "anny-smpl"


def test_batch_equals_crops_one_by_one(est):
    crops = crops_uint8(5, seed=7)
    batch = est.estimate(crops)
    for i, crop in enumerate(crops):
        single = est.estimate([crop])[0]
        for name in ("pose", "betas", "cam", "rotmat", "joints"):
            np.testing.assert_allclose(getattr(batch[i], name), getattr(single, name), atol=1e-5, rtol=0)


def test_shipped_model_batch_equals_crops_one_by_one_and_lists_equal_arrays(shipped):
    crops = crops_uint8(4, seed=11)
    batch = shipped.estimate(crops)
    listed = shipped.estimate(list(crops))
    for i, crop in enumerate(crops):
        single = shipped.estimate([crop])[0]
        for name in ("pose", "rotmat", "betas", "cam", "joints"):
            np.testing.assert_allclose(getattr(batch[i], name), getattr(single, name), atol=1e-5, rtol=0)
            np.testing.assert_allclose(getattr(batch[i], name), getattr(listed[i], name), atol=1e-6, rtol=0)
    sidecar = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert shipped.body_model_name == "anny-smpl" and shipped.image_size == sidecar["input"]["image_size"]


def test_list_of_mixed_sizes_keeps_order_and_resizes_each_via_224(est):
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (224, 100, 300, 224)]
    out = est.estimate(crops)
    for crop, m in zip(crops, out):
        ref = expected_outputs(crop[None])
        np.testing.assert_allclose(m.pose, ref["pose"][0], atol=2e-5, rtol=1e-4)


def test_float_crops_in_0_255_equal_uint8(est):
    crops = crops_uint8(2, seed=4)
    a = est.estimate(crops)
    b = est.estimate(crops.astype(np.float32))
    np.testing.assert_allclose(a[1].pose, b[1].pose, atol=1e-6)


def test_results_do_not_alias_each_other(est):
    out = est.estimate(crops_uint8(2))
    out[0].pose[:] = 0
    assert np.abs(out[1].pose).sum() > 0


def test_graph_with_vertices_gives_vertices_and_the_sidecar_faces(tmp_path):
    path = write_tiny_model(tmp_path, outputs=("pose", "betas", "cam", "rotmat", "joints", "vertices"))
    faces = np.array([[0, 1, 2], [2, 3, 4]], dtype=np.int64)
    np.save(tmp_path / "tiny_faces.npy", faces)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["body_model"]["faces_file"] = "tiny_faces.npy"
    path.with_suffix(".json").write_text(json.dumps(meta))
    est = load_estimator(path, backend="onnxruntime", threads=1)
    crops = crops_uint8(2)
    out = est.estimate(crops)
    assert out[1].vertices.shape == (5, 3) and out[1].vertices.dtype == np.float32
    np.testing.assert_allclose(out[1].vertices, expected_outputs(crops)["vertices"][1], atol=2e-5, rtol=1e-4)
    assert est.faces.dtype == np.int32 and est.faces.tolist() == faces.tolist()
    assert est.display_faces is None and est.marker_faces is est.faces  # no display mesh: the full one
    (tmp_path / "tiny_faces.npy").unlink()
    with pytest.raises(FileNotFoundError, match="tiny_faces.npy"):
        load_estimator(path, backend="onnxruntime")


def test_markers_draw_the_display_mesh_when_the_sidecar_names_one(tmp_path):
    path = write_tiny_model(tmp_path, outputs=("pose", "betas", "cam", "rotmat", "joints", "vertices"))
    np.save(tmp_path / "tiny_faces.npy", np.array([[0, 1, 2], [2, 3, 4], [0, 2, 4]]))
    np.save(tmp_path / "tiny_display_faces.npy", np.array([[0, 2, 4]], dtype=np.int32))
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["body_model"].update(faces_file="tiny_faces.npy", display_faces_file="tiny_display_faces.npy")
    path.with_suffix(".json").write_text(json.dumps(meta))
    est = load_estimator(path, backend="onnxruntime", threads=1)
    assert len(est.faces) == 3 and est.marker_faces.tolist() == [[0, 2, 4]]
    np.save(tmp_path / "tiny_display_faces.npy", np.zeros((2, 2), np.int32))
    with pytest.raises(SidecarError, match="Fx3"):
        load_estimator(path, backend="onnxruntime")
    (tmp_path / "tiny_display_faces.npy").unlink()
    with pytest.raises(FileNotFoundError, match="tiny_display_faces.npy"):
        load_estimator(path, backend="onnxruntime")


def test_graph_without_joints_gives_none_joints(tmp_path):
    path = write_tiny_model(tmp_path, outputs=("pose", "betas", "cam", "rotmat"), fmt="hkmr-onnx/1")
    m = load_estimator(path, backend="onnxruntime", threads=1).estimate(crops_uint8(1))[0]
    assert m.joints is None and m.pose.shape == (72,)


# ----------------------------------------------------------------- preprocessing

def test_resample_matrix_rows_sum_to_one_and_identity_at_same_size():
    for n, s in [(224, 96), (224, 160), (100, 224), (37, 224)]:
        m = resample_matrix(n, s)
        assert m.shape == (s, n)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
        assert (m >= 0).all()
    np.testing.assert_array_equal(resample_matrix(224, 224), np.eye(224))


def test_preprocessing_equals_the_dense_matrix_reference_for_any_crop_size():
    rng = np.random.default_rng(2)
    for size in (224, 100, 300, 97):
        crops = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
        for s in (96, 160, 224):
            np.testing.assert_allclose(to_network_input(crops, s, MEAN, STD), reference_input(crops, s), atol=2e-5)
    wy, wx = axis_matrices(300, 200, 96)
    np.testing.assert_allclose(wy, resample_matrix(224, 96).astype(np.float64) @ resample_matrix(300, 224), atol=1e-6)
    assert wx.shape == (96, 200) and axis_matrices(300, 200, 96)[0] is wy  # cached per input size


def test_preprocessing_does_not_modify_the_callers_crops():
    crops = crops_uint8(2)
    floats = crops.astype(np.float32)
    before = floats.copy()
    to_network_input(floats, SIZE, MEAN, STD)
    np.testing.assert_array_equal(floats, before)


def test_downsampling_is_antialiased_every_input_pixel_counts():
    m = resample_matrix(224, 96)
    assert (m > 0).any(axis=0).all()  # plain bilinear would skip pixels at 2.33x
    assert (np.count_nonzero(m[1:-1], axis=1) >= 4).all()  # borders: the window is clipped


def test_resize_matches_torch_interpolate_exactly():
    torch = pytest.importorskip("torch")
    f = torch.nn.functional.interpolate
    rng = np.random.default_rng(0)
    for h, w, s in [(224, 224, 96), (224, 224, 160), (224, 224, 256), (100, 100, 96), (300, 300, 96),
                    (640, 480, 96), (96, 96, 96), (224, 224, 224)]:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        t = torch.from_numpy(x)
        if (h, w) != (224, 224):
            t = f(t, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        if s != 224:
            t = f(t, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        np.testing.assert_allclose(resize(x, s), t.numpy(), atol=1e-6, rtol=0, err_msg=f"{h}x{w} -> {s}")
    for n, s in [(224, 96), (224, 160), (300, 224), (100, 224)]:  # the weights themselves are bit-identical
        eye = torch.eye(n).reshape(n, 1, 1, n)
        t = f(eye, size=(1, s), mode="bilinear", align_corners=False, antialias=True).reshape(n, s).T.numpy()
        np.testing.assert_array_equal(resample_matrix(n, s), t)


def test_network_input_matches_training_image_to_tensor_and_resize_images():
    pytest.importorskip("torch")
    augment = pytest.importorskip("training.datasets.augment")
    import torch

    crops = crops_uint8(3, seed=9)
    want = augment.resize_images(torch.stack([augment.image_to_tensor(c) for c in crops]), 96).numpy()
    got = to_network_input(crops, 96, augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


# ----------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("crops, message", [
    ([], "empty batch"),
    (np.zeros((0, 224, 224, 3), np.uint8), "empty batch"),
    ([np.zeros((224, 224, 3), np.int32)], "dtype"),
    ([np.zeros((224, 224, 3), bool)], "dtype"),
    ([np.zeros((224, 224, 4), np.uint8)], "3 channels"),
    ([np.zeros((224, 224), np.uint8)], "HxWx3"),
    ([np.zeros((3, 224, 224), np.uint8)], "channels first"),
    (np.zeros((224, 224, 3), np.uint8), "one image"),
    ([np.full((224, 224, 3), np.nan, np.float32)], "NaN"),
    ([np.zeros((224, 224, 3), np.uint8), [[1, 2, 3]]], "crop 1"),
    ("image.png", "got str"),
])
def test_bad_inputs_raise_input_error_naming_the_problem(shipped, crops, message):
    with pytest.raises(InputError, match=message):
        shipped.estimate(crops)


def test_missing_onnx_raises_file_not_found_naming_the_path(tmp_path):
    path = tmp_path / "nothing.onnx"
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        load_estimator(path, backend="onnxruntime")


def test_corrupt_onnx_raises_model_error(tmp_path, tiny):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 100)
    bad.with_suffix(".json").write_text(tiny.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="bad.onnx.*cannot load"):
        load_estimator(bad, backend="onnxruntime")


def test_missing_sidecar_raises_naming_the_sidecar(tmp_path, tiny):
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(tiny.read_bytes())
    with pytest.raises(ModelNotFoundError, match="lone.json"):
        load_estimator(lone, backend="onnxruntime")


def _sidecar_variant(tmp_path: Path, tiny: Path, edit) -> Path:
    path = tmp_path / "variant.onnx"
    path.write_bytes(tiny.read_bytes())
    meta = json.loads(tiny.with_suffix(".json").read_text())
    edit(meta)
    path.with_suffix(".json").write_text(json.dumps(meta) if isinstance(meta, dict) else meta)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format="hkmr-onnx/9"), "format 'hkmr-onnx/9' not supported"),
    (lambda m: m["input"].pop("mean"), "input.mean"),
    (lambda m: m["input"].update(std=[0.2, 0.0, 0.2]), "input.std"),
    (lambda m: m["input"].update(image_size="96"), "input.image_size"),
    (lambda m: m["input"].update(layout="NHWC"), "input.layout"),
    (lambda m: m["input"].update(crop_size=256), "input.crop_size"),
    (lambda m: m.update(outputs=[o for o in m["outputs"] if o["name"] != "cam"]), "cam"),
    (lambda m: m.update(onnx_sha256="0" * 64), "onnx_sha256"),
    (lambda m: m["input"].update(name="pixels"), "no input named 'pixels'"),
    (lambda m: m["input"].update(image_size=32), "input.image_size is 32"),
])
def test_incompatible_sidecar_raises_naming_the_field(tmp_path, tiny, edit, message):
    with pytest.raises((SidecarError, ModelError), match=message):
        load_estimator(_sidecar_variant(tmp_path, tiny, edit), backend="onnxruntime")


def test_unreadable_sidecar_json(tmp_path, tiny):
    path = tmp_path / "broken.onnx"
    path.write_bytes(tiny.read_bytes())
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(SidecarError, match="not readable JSON"):
        load_estimator(path, backend="onnxruntime")


def test_sidecar_output_missing_from_graph(tmp_path):
    path = write_tiny_model(tmp_path, outputs=("pose", "betas", "cam", "rotmat"))
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["outputs"].append({"name": "joints", "shape": ["batch", 24, 3]})
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="joints"):
        load_estimator(path, backend="onnxruntime")


def test_every_error_is_an_estimator_error():
    for cls in (InputError, ModelError, ModelNotFoundError, SidecarError, BackendUnavailableError):
        assert issubclass(cls, EstimatorError)
    assert issubclass(ModelNotFoundError, FileNotFoundError) and issubclass(InputError, ValueError)


# ----------------------------------------------------------------- backends

def test_unknown_backend_is_a_value_error(tiny):
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        load_estimator(tiny, backend="cuda")


def test_threads_are_settable_and_validated(tiny):
    assert load_estimator(tiny, backend="onnxruntime", threads=2, warmup=False).backend.threads == 2
    with pytest.raises(ValueError, match="threads"):
        load_estimator(tiny, backend="onnxruntime", threads=0)


def test_onnxruntime_cuda_without_provider_is_unavailable(tiny):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        load_estimator(tiny, backend="onnxruntime-cuda")


def test_auto_logs_one_line_saying_which_backend_runs_and_why(tiny, caplog, monkeypatch):
    monkeypatch.setattr("hkmr_ros.inference.tensorrt_backend.tensorrt_unavailable_reason",
                        lambda: "tensorrt is not installed")
    with caplog.at_level(logging.INFO, logger="hkmr_ros.inference"):
        est = load_estimator(tiny, backend="auto", threads=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "hkmr_ros.inference"]
    assert len(lines) == 1
    assert est.backend_name in lines[0] and "tensorrt is not installed" in lines[0] and "warm-up" in lines[0]
    assert est.backend_name in ("onnxruntime", "onnxruntime-cuda")
    assert set(BACKENDS) == {"auto", "tensorrt", "onnxruntime-cuda", "onnxruntime"}


def test_onnxruntime_estimator_closes_as_a_context_manager(tiny):
    with load_estimator(tiny, backend="onnxruntime", threads=1, warmup=False) as est:
        assert len(est.estimate(crops_uint8(1))) == 1
    est.close()


def test_warmup_runs_before_the_first_frame(tiny, monkeypatch):
    est = load_estimator(tiny, backend="onnxruntime", threads=1)
    assert est.warmup_ms is not None and est.warmup_ms > 0
    assert load_estimator(tiny, backend="onnxruntime", threads=1, warmup=False).warmup_ms is None


def test_default_model_missing_names_path_and_regeneration_command(monkeypatch, tmp_path):
    monkeypatch.setattr(estimator_module, "DEFAULT_MODEL", tmp_path / "hkmr_default.onnx")
    with pytest.raises(FileNotFoundError, match="hkmr_default.onnx.*python -m engine_build"):
        load_estimator(None)


# ----------------------------------------------------------------- the shipped model without torch

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "torchvision", "smplx", "roma", "training", "engine_build"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the runtime must not import it")
            return None
    sys.meta_path.insert(0, Block())
""")

RUN_DEFAULT = BLOCKER + textwrap.dedent("""
    import numpy as np
    import hkmr_ros.crops, hkmr_ros.inference.trt_build, hkmr_ros.inference.tensorrt_backend  # all importable
    import hkmr_ros.inference.engine_cache, hkmr_ros.inference.cuda_runtime
    from hkmr_ros.inference import load_estimator
    est = load_estimator(None, backend="onnxruntime", threads=1)
    crops = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = est.estimate(crops)
    m = out[0]
    assert len(out) == 2 and m.pose.shape == (72,) and m.rotmat.shape == (24, 3, 3)
    assert m.betas.shape == (10,) and m.cam.shape == (3,)
    assert m.joints is not None and m.joints.shape == (24, 3), "the shipped graph must output joints"
    assert all(np.isfinite(getattr(m, k)).all() for k in ("pose", "rotmat", "betas", "cam", "joints"))
    assert np.allclose(m.rotmat @ m.rotmat.transpose(0, 2, 1), np.eye(3), atol=1e-4)
    assert not any(k.split(".")[0] in BLOCKED for k in sys.modules), sorted(sys.modules)
    print("ok", est.backend_name, est.body_model_name, est.image_size)
""")


def test_runtime_runs_the_shipped_default_onnx_with_torch_unimportable():
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"the shipped default model is missing: {DEFAULT_MODEL}; "
                    f"regenerate it with {estimator_module.REGENERATE_COMMAND}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUN_DEFAULT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok onnxruntime")


def test_blocker_really_blocks_torch():
    proc = subprocess.run([sys.executable, "-c", BLOCKER + "import torch"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_tensorrt_requested_where_it_cannot_run_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setattr("hkmr_ros.inference.tensorrt_backend.tensorrt_unavailable_reason",
                        lambda: "tensorrt is not installed")
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        load_estimator(tiny, backend="tensorrt")
