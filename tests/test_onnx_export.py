"""ONNX export with the body model inside, checked against PyTorch's straightforward path.

Tiny HKMR / HMR checkpoints (MobileNetV3-small at 64 px); the reference is the joint-by-joint
regressor, roma's rotations and smplx's body model (training.body.body_model).
"""
import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import roma
import torch
from torch import nn

from engine_build import cli, onnx_export
from engine_build.body import DISPLAY_MESH_FACES, ExportBody, display_faces, faces_array, tree_levels
from engine_build.onnx_export import (
    CONTROL_FLOW_OPS,
    OUTPUT_NAMES,
    TOLERANCES,
    OnnxValidationError,
    export_onnx,
    random_images,
    reference_outputs,
    validate_onnx,
)
from engine_build.rotations import rot6d_to_rotmat, rotmat_to_aa, rotmat_to_quat
from training.body.body_model import DEFAULT_MODEL_PATH, load_body_model
from training.config import Config, config_to_dict
from training.datasets.augment import IMAGENET_MEAN, IMAGENET_STD
from training.evaluate import load_method
from training.geometry import aa_to_rotmat
from training.geometry import rot6d_to_rotmat as roma_rot6d_to_rotmat
from training.models.mesh_regressor import build_model

IMAGE_SIZE = 64
TINY_HKMR = {"inner_iters": 2, "outer_iters": 2, "embed_dim": 16, "hidden_dim": 16}
TINY_HMR = {"iters": 2, "hidden_dim": 32}
ALL_OUTPUTS = list(OUTPUT_NAMES) + ["vertices"]


def tiny_config(regressor: str, rotation: str = "6d", **kwargs) -> Config:
    cfg = Config()
    cfg.model.encoder = "mobilenet_v3_small"
    cfg.model.regressor = regressor
    cfg.model.rotation = rotation
    cfg.model.regressor_kwargs = {**(TINY_HKMR if regressor == "hkmr" else TINY_HMR), **kwargs}
    cfg.data.image_size = IMAGE_SIZE
    return cfg


def save_checkpoint(cfg: Config, path: Path, seed: int = 0) -> Path:
    """A checkpoint as train.py writes it, of a network whose outputs depend on the image.

    At initialisation they hardly do (unit BatchNorm statistics shrink a random encoder's features
    to ~1e-8, and small-gain heads keep the estimate at the mean), which would make any graph
    agree; so BatchNorm statistics are taken from random images and the regressor is perturbed.
    """
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE))
        for p in model.regressor.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "step": 0}, path)
    return path


def onnx_outputs(onnx_path: Path, image: torch.Tensor):
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": image.numpy()})))


def assert_matches(onnx_path: Path, checkpoint: Path, batch: int, body_model=None, seed: int = 0):
    """ONNX against the PyTorch reference on one random batch, every output, fp32 tolerances."""
    image = random_images(batch, IMAGE_SIZE, seed=1000 + batch + seed)
    method = load_method(checkpoint, "reference", torch.device("cpu"))
    body_model = body_model or load_body_model()
    actual = onnx_outputs(onnx_path, image)
    expected = reference_outputs(method, body_model, image, vertices="vertices" in actual)
    assert actual["pose"].shape == (batch, 72)
    assert actual["rotmat"].shape == (batch, 24, 3, 3)
    assert actual["betas"].shape == (batch, 10)
    assert actual["cam"].shape == (batch, 3)
    assert actual["joints"].shape == (batch, 24, 3)
    for name in ("rotmat", "betas", "cam"):
        np.testing.assert_allclose(actual[name], expected[name], atol=TOLERANCES[name], rtol=0, err_msg=name)
    np.testing.assert_allclose(actual["joints"], expected["joints"], atol=1e-4, rtol=0, err_msg="joints")
    if "vertices" in actual:
        np.testing.assert_allclose(actual["vertices"], expected["vertices"], atol=1e-4, rtol=0)
    pose_rotmat = aa_to_rotmat(torch.from_numpy(actual["pose"]).reshape(batch, 24, 3)).numpy()
    np.testing.assert_allclose(pose_rotmat, expected["rotmat"], atol=TOLERANCES["pose"], rtol=0)
    return expected


def op_types(onnx_path: Path):
    return [n.op_type for n in onnx.load(str(onnx_path)).graph.node]


@pytest.fixture(scope="module")
def hkmr_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("hkmr")
    checkpoint = save_checkpoint(tiny_config("hkmr"), root / "model.pt")
    return checkpoint, export_onnx(checkpoint, root / "hkmr.onnx")


# ---------------------------------------------------------------- the shipped-style graph


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_hkmr_export_matches_pytorch_with_joints(hkmr_export, batch):
    checkpoint, onnx_path = hkmr_export
    expected = assert_matches(onnx_path, checkpoint, batch)
    if batch > 1:  # the comparison means something: the estimate differs between images
        assert expected["rotmat"].std(axis=0).max() > 0.01
        assert expected["joints"].std(axis=0).max() > 0.005


def test_graph_is_straight_small_and_has_a_dynamic_batch(hkmr_export):
    _, onnx_path = hkmr_export
    model = onnx.load(str(onnx_path))
    ops = [n.op_type for n in model.graph.node]
    assert not set(ops) & set(CONTROL_FLOW_OPS)
    # the collapsed regressor and the level-wise body model: no per-joint Concat storm
    assert ops.count("Concat") < 40 and len(ops) < 600, (len(ops), ops.count("Concat"))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(model.graph.input) + list(model.graph.output)}
    assert dims == {"image": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE], "pose": ["batch", 72],
                    "rotmat": ["batch", 24, 3, 3], "betas": ["batch", 10], "cam": ["batch", 3],
                    "joints": ["batch", 24, 3]}
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 17


def test_sidecar_describes_the_graph(hkmr_export):
    checkpoint, onnx_path = hkmr_export
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["format"] == "hkmr-onnx/2" and meta["onnx"] == onnx_path.name
    assert meta["onnx_sha256"] == onnx_export.file_sha256(onnx_path)
    inp = meta["input"]
    assert inp["name"] == "image" and inp["shape"] == ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]
    assert (inp["layout"], inp["channels"], inp["image_size"], inp["crop_size"], inp["resize"]) == (
        "NCHW", "RGB", IMAGE_SIZE, 224, "bilinear-antialias")
    np.testing.assert_allclose(inp["mean"], IMAGENET_MEAN, atol=1e-6)
    np.testing.assert_allclose(inp["std"], IMAGENET_STD, atol=1e-6)
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [
        ("pose", ["batch", 72]), ("rotmat", ["batch", 24, 3, 3]), ("betas", ["batch", 10]),
        ("cam", ["batch", 3]), ("joints", ["batch", 24, 3])]
    body = meta["body_model"]
    assert body["name"] == "anny-smpl" and body["num_vertices"] == load_body_model().num_vertices
    assert "faces_file" not in body and body["pose_blend_shapes"] is False
    model = meta["model"]
    assert (model["encoder"], model["regressor"], model["rotation"]) == ("mobilenet_v3_small", "hkmr", "6d")
    assert model["regressor_kwargs"] == TINY_HKMR and model["image_size"] == IMAGE_SIZE
    assert model["checkpoint_sha256"] == onnx_export.file_sha256(checkpoint)
    assert not Path(model["checkpoint"]).is_absolute() and not Path(body["source"]).is_absolute()
    validation = meta["validation"]
    assert validation["passed"] and [i["batch"] for i in validation["inputs"]] == [1, 3, 8]
    assert set(validation["outputs"]) == set(OUTPUT_NAMES)
    for name, row in validation["outputs"].items():
        assert 0.0 <= row["max_abs_diff"] <= row["limit"]
    assert validation["outputs"]["joints"]["limit"] == pytest.approx(1e-4)  # absolute, metres
    assert meta["graph"]["nodes"] == len(op_types(onnx_path))


def test_validation_rejects_a_graph_that_disagrees(hkmr_export, tmp_path):
    _, onnx_path = hkmr_export
    other = save_checkpoint(tiny_config("hkmr"), tmp_path / "other.pt", seed=7)
    method = load_method(other, "other", torch.device("cpu"))
    with pytest.raises(OnnxValidationError, match="disagree"):
        validate_onnx(onnx_path, method, load_body_model(), [("random", random_images(2, IMAGE_SIZE, 0))])


def test_failed_validation_leaves_no_sidecar(hkmr_export, tmp_path, monkeypatch, capsys):
    checkpoint, _ = hkmr_export
    out = tmp_path / "strict.onnx"
    out.with_suffix(".json").write_text("{}")  # stale, from an earlier export
    monkeypatch.setitem(TOLERANCES, "joints", 0.0)  # float32 runtimes never agree to the last bit
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--rendered", "0"]) == 1
    assert "joints: max abs difference" in capsys.readouterr().err
    assert not out.with_suffix(".json").exists()


# ---------------------------------------------------------------- variants


def test_vertices_and_faces_with_the_flag(tmp_path):
    checkpoint = save_checkpoint(tiny_config("hkmr", rotation="aa"), tmp_path / "m.pt", seed=3)
    onnx_path = export_onnx(checkpoint, tmp_path / "mesh.onnx", vertices=True, validation_batches=(2,))
    body_model = load_body_model()
    assert_matches(onnx_path, checkpoint, 3, body_model)
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["outputs"][-1]["name"] == "vertices"
    assert meta["outputs"][-1]["shape"] == ["batch", body_model.num_vertices, 3]
    faces = np.load(tmp_path / meta["body_model"]["faces_file"])
    assert faces.dtype == np.int32 and np.array_equal(faces, body_model.faces)
    shown = np.load(tmp_path / meta["body_model"]["display_faces_file"])
    assert meta["body_model"]["num_display_faces"] == len(shown) and shown.dtype == np.int32
    assert 0.9 * DISPLAY_MESH_FACES <= len(shown) <= DISPLAY_MESH_FACES and shown.max() < body_model.num_vertices
    assert not set(op_types(onnx_path)) & set(CONTROL_FLOW_OPS)
    # exported again to the same path without a display mesh: the earlier one is gone with it
    export_onnx(checkpoint, onnx_path, vertices=True, validation_batches=(2,), display_mesh_faces=0)
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert "display_faces_file" not in meta["body_model"]
    assert not (tmp_path / "mesh_display_faces.npy").exists() and (tmp_path / meta["body_model"]["faces_file"]).exists()


def face_cross_products(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Fx3: each triangle's (b - a) x (c - a), twice its area in length."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return np.cross(b - a, c - a)


def test_display_mesh_follows_the_full_mesh_in_any_pose():
    body_model = load_body_model()
    full = faces_array(body_model)
    rest = body_model.rest().vertices[0].numpy()
    shown = display_faces(rest, full, 2000)
    assert 1800 <= len(shown) <= 2000 and set(np.unique(shown)) <= set(range(body_model.num_vertices))
    assert len(np.unique(np.sort(shown, axis=1), axis=0)) == len(shown)  # no repeated triangle
    pose = torch.zeros(1, 72)
    pose[0, 3:] = torch.from_numpy(np.random.default_rng(0).normal(0.0, 0.3, 69).astype(np.float32))
    with torch.no_grad():
        posed = body_model(pose, torch.zeros(1, body_model.num_betas)).vertices[0].numpy().astype(np.float64)
    for vertices in (rest.astype(np.float64), posed):
        full_n, shown_n = face_cross_products(vertices, full), face_cross_products(vertices, shown)
        full_area = 0.5 * np.linalg.norm(full_n, axis=1).sum()
        shown_area = 0.5 * np.linalg.norm(shown_n, axis=1).sum()
        assert abs(shown_area - full_area) < 0.05 * full_area  # the same surface, coarser
        # every full vertex lies near a vertex of the display mesh
        kept = vertices[np.unique(shown)]
        nearest = np.min(np.linalg.norm(vertices[::7, None] - kept[None], axis=2), axis=1)
        assert nearest.max() < 0.15 and nearest.mean() < 0.03
    # the winding stays outward: the enclosed volume (divergence theorem) keeps its sign and size
    volume = lambda f: np.einsum("ij,ij->", rest[f[:, 0]], np.cross(rest[f[:, 1]], rest[f[:, 2]])) / 6  # noqa: E731
    assert np.sign(volume(shown)) == np.sign(volume(full)) and abs(volume(shown) / volume(full) - 1) < 0.1
    with pytest.raises(ValueError, match="target_faces"):
        display_faces(rest, full, len(full))


def test_the_cli_default_display_mesh_is_the_export_default():
    assert cli.DEFAULT_DISPLAY_FACES == DISPLAY_MESH_FACES


def test_a_user_smpl_file_with_pose_blend_shapes(tmp_path):
    """Pose blend shapes (zero in anny-smpl, SMPL's are not) reach the vertices; joints ignore them."""
    with np.load(DEFAULT_MODEL_PATH) as npz:
        data = {k: npz[k] for k in npz.files}
    rng = np.random.default_rng(0)
    data["posedirs"] = (rng.standard_normal(data["posedirs"].shape) * 2e-3).astype(np.float32)
    data["source"] = np.array("an SMPL-format test file")
    smpl_path = tmp_path / "SMPL_TEST.npz"
    np.savez(smpl_path, **data)
    checkpoint = save_checkpoint(tiny_config("hkmr"), tmp_path / "m.pt", seed=4)
    onnx_path = export_onnx(checkpoint, tmp_path / "smpl.onnx", body_model_path=smpl_path, vertices=True,
                            validation_batches=(2,))
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["body_model"]["name"] == "smpl" and meta["body_model"]["pose_blend_shapes"] is True
    body_model = load_body_model(smpl_path)
    expected = assert_matches(onnx_path, checkpoint, 3, body_model)
    without = load_body_model()(torch.from_numpy(expected["rotmat"]), torch.from_numpy(expected["betas"]))
    assert np.abs(without.vertices.numpy() - expected["vertices"]).max() > 1e-3  # the blend shapes matter
    np.testing.assert_allclose(without.joints.numpy(), expected["joints"], atol=1e-5)


def test_hmr_export_matches_pytorch(tmp_path):
    checkpoint = save_checkpoint(tiny_config("hmr", rotation="aa"), tmp_path / "hmr.pt")
    onnx_path = export_onnx(checkpoint, tmp_path / "hmr.onnx", validation_batches=(1, 3))
    for batch in (1, 3):
        assert_matches(onnx_path, checkpoint, batch)
    assert json.loads(onnx_path.with_suffix(".json").read_text())["model"]["regressor"] == "hmr"


@pytest.mark.parametrize("rotation, kwargs", [
    ("aa", {}),
    ("6d", {"backward_pass": False}),
    ("6d", {"joint_hierarchy": False}),
], ids=["aa", "forward-only", "no-joint-hierarchy"])
def test_hkmr_ablations_export(tmp_path, rotation, kwargs):
    checkpoint = save_checkpoint(tiny_config("hkmr", rotation=rotation, **kwargs), tmp_path / "m.pt", seed=1)
    onnx_path = export_onnx(checkpoint, tmp_path / "m.onnx", validation_batches=(2,))
    assert_matches(onnx_path, checkpoint, 3)
    assert not set(op_types(onnx_path)) & set(CONTROL_FLOW_OPS)


def test_static_batch_through_the_cli(tmp_path, capsys):
    checkpoint = save_checkpoint(tiny_config("hkmr", joint_hierarchy=False), tmp_path / "m.pt", seed=2)
    out = tmp_path / "sub" / "static.onnx"
    code = cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--opset", "18",
                     "--static-batch", "3", "--rendered", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "[1]" in printed and "joints" in printed and "no If/Loop/Scan" in printed
    assert_matches(out, checkpoint, 3)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["opset"] == 18 and not meta["dynamic_batch"] and meta["input"]["shape"][0] == 3
    with pytest.raises(Exception):  # the batch is fixed: onnxruntime refuses another one
        onnx_outputs(out, random_images(1, IMAGE_SIZE, seed=0))


def test_missing_files_are_named(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        export_onnx(missing, tmp_path / "m.onnx")
    assert cli.main(["--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    checkpoint = save_checkpoint(tiny_config("hkmr"), tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="no_such_smpl"):
        export_onnx(checkpoint, tmp_path / "m.onnx", body_model_path=tmp_path / "no_such_smpl.pkl")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(checkpoint, tmp_path / "m.onnx", opset=13)


# ---------------------------------------------------------------- graph pieces in torch


def random_rotations(n: int, angles: torch.Tensor) -> torch.Tensor:
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=torch.Generator().manual_seed(n)), dim=-1)
    return roma.rotvec_to_rotmat(axis * angles[:, None])


@pytest.mark.parametrize("kind", ["random", "near-0", "zero", "near-pi", "pi"])
def test_branch_free_rotmat_to_aa_agrees_with_roma(kind):
    n = 4000
    g = torch.Generator().manual_seed(5)
    if kind == "random":
        rotmat = roma.random_rotmat(n)
    else:
        angles = {"near-0": torch.rand(n, generator=g) * 1e-4, "zero": torch.zeros(n),
                  "near-pi": math.pi - torch.rand(n, generator=g) * 1e-3, "pi": torch.full((n,), math.pi)}[kind]
        rotmat = random_rotations(n, angles)
    aa = rotmat_to_aa(rotmat)
    assert torch.isfinite(aa).all()
    torch.testing.assert_close(roma.rotvec_to_rotmat(aa), rotmat, atol=2e-6, rtol=0)
    assert (aa.norm(dim=-1) <= math.pi + 1e-6).all()
    expected = roma.rotmat_to_rotvec(rotmat)
    away = expected.norm(dim=-1) < math.pi - 1e-2  # at pi, v and -v are the same rotation
    torch.testing.assert_close(aa[away], expected[away], atol=2e-6, rtol=0)
    quat = rotmat_to_quat(rotmat)
    torch.testing.assert_close(quat.norm(dim=-1), torch.ones(n), atol=1e-6, rtol=0)
    assert (quat[:, 3] >= 0).all()


def test_compact_6d_to_rotmat_equals_roma_gram_schmidt():
    x = torch.randn(5000, 6, generator=torch.Generator().manual_seed(3))
    x[:10, 1::2] = x[:10, 0::2] * 2 + 1e-2 * x[:10, 1::2]  # second column (x reads as 3x2) nearly parallel
    rotmat = rot6d_to_rotmat(x)
    torch.testing.assert_close(rotmat, roma_rot6d_to_rotmat(x), atol=1e-5, rtol=0)
    rotmat = rotmat[10:]  # float32 Gram-Schmidt (roma's too) loses ~1e-4 of orthogonality on the degenerate ones
    torch.testing.assert_close(rotmat @ rotmat.transpose(-1, -2), torch.eye(3).expand(4990, 3, 3), atol=5e-6, rtol=0)
    assert torch.allclose(torch.linalg.det(rotmat), torch.ones(4990), atol=1e-5)


def test_export_body_equals_smplx():
    body_model = load_body_model()
    g = torch.Generator().manual_seed(0)
    rotmat = roma.random_rotmat((5, 24))
    betas = torch.randn(5, 10, generator=g) * 2
    expected = body_model(rotmat, betas)
    out = ExportBody(body_model, vertices=True)(rotmat, betas)
    torch.testing.assert_close(out["joints"], expected.joints, atol=2e-5, rtol=0)
    torch.testing.assert_close(out["vertices"], expected.vertices, atol=2e-5, rtol=0)
    assert set(ExportBody(body_model)(rotmat, betas)) == {"joints"}


def test_tree_levels_of_smpl():
    levels = tree_levels(load_body_model().smpl.parents.tolist())
    assert levels[0] == [0] and len(levels) == 9 and sum(map(len, levels)) == 24
    with pytest.raises(ValueError, match="parents"):
        tree_levels([-1, 2, 0])


def test_tensorrt_step_fails_clearly_without_tensorrt(hkmr_export, tmp_path, capsys, monkeypatch):
    from hkmr_ros.inference import tensorrt_backend

    monkeypatch.setattr(tensorrt_backend, "tensorrt_unavailable_reason", lambda: "tensorrt is not installed")
    checkpoint, _ = hkmr_export
    out = tmp_path / "m.onnx"
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--rendered", "0", "--tensorrt", "fp16"]) == 1
    err = capsys.readouterr().err
    assert "TensorRT cannot run here: tensorrt is not installed" in err
    assert out.with_suffix(".json").is_file()  # the ONNX step itself passed and stays
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--tensorrt", "fp8"]) == 1
    assert "unknown TensorRT precision" in capsys.readouterr().err


def test_gpu_check_skips_every_missing_piece(hkmr_export, tmp_path, capsys):
    import engine_build.gpu_check as gpu_check

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run, not skip")
    checkpoint, onnx_path = hkmr_export
    out = tmp_path / "report.json"
    code = gpu_check.main(["--onnx", str(onnx_path), "--checkpoint", str(checkpoint), "--batch", "2",
                           "--repeats", "2", "--out", str(out)])
    assert code == 1 and "nothing checked on a GPU" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["paths"][0]["status"] == "ok" and report["paths"][0]["gpu"] is False
    assert [r["status"] for r in report["paths"][1:]] == ["SKIP"] * 4
    assert all(r["reason"] for r in report["paths"][1:])


REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"hkmr_default.onnx": False, "hkmr_default_mesh.onnx": True}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_graph_is_the_default_weights_exported(name):
    """The shipped ONNX comes from the current default weights (else: re-run `python -m engine_build`)."""
    onnx_path = REPO / "hkmr_ros" / "data" / name
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    checkpoint = REPO / meta["model"]["checkpoint"]
    regenerate = "regenerate with `python -m engine_build` (see docs/engines.md)"
    assert meta["model"]["checkpoint_sha256"] == onnx_export.file_sha256(checkpoint), regenerate
    assert meta["onnx_sha256"] == onnx_export.file_sha256(onnx_path), regenerate
    assert meta["format"] == "hkmr-onnx/2" and meta["validation"]["passed"]
    assert ("faces_file" in meta["body_model"]) == SHIPPED[name]
    assert ("display_faces_file" in meta["body_model"]) == SHIPPED[name]
    assert not set(op_types(onnx_path)) & set(CONTROL_FLOW_OPS)
    method = load_method(checkpoint, "default", torch.device("cpu"))
    image = random_images(3, method.image_size, seed=77)
    actual = onnx_outputs(onnx_path, image)
    expected = reference_outputs(method, load_body_model(), image, vertices=SHIPPED[name])
    assert set(actual) == set(expected)
    np.testing.assert_allclose(actual["joints"], expected["joints"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(actual["rotmat"], expected["rotmat"], atol=1e-3, rtol=0)


def test_runtime_estimator_on_uint8_crops_equals_training_prediction():
    """The sidecar's input rules, as the torch-free runtime applies them, are training's: uint8 crops
    through hkmr_ros.inference and through training.evaluate.predict give the same joints."""
    from hkmr_ros.inference import load_estimator
    from training.datasets.augment import normalise_batch
    from training.evaluate import predict

    onnx_path = REPO / "hkmr_ros" / "data" / "hkmr_default.onnx"
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    crops[:, 60:180, 80:150] = rng.integers(0, 80, size=3, dtype=np.uint8)  # a dark "person" block
    got = load_estimator(onnx_path, backend="onnxruntime", threads=1).estimate_arrays(crops)
    method = load_method(REPO / meta["model"]["checkpoint"], "default", torch.device("cpu"))
    normalisation = (meta["input"]["mean"], meta["input"]["std"])
    images = normalise_batch(torch.from_numpy(crops).permute(0, 3, 1, 2), *normalisation)
    ref = predict(method, images, normalisation)
    joints = load_body_model()(ref["rotmat"], ref["betas"]).joints.numpy()
    np.testing.assert_allclose(got["joints"], joints, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["cam"], ref["cam"].numpy(), atol=1e-4, rtol=0)


def test_int8_calibration_inputs_are_rendered_once_and_reused(hkmr_export, tmp_path):
    _, onnx_path = hkmr_export
    path = tmp_path / "calibration.npy"
    try:
        data = cli.calibration_inputs(path, onnx_path, 2)
    except RuntimeError as e:  # no EGL renderer here
        pytest.skip(str(e))
    assert data.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and data.dtype == np.float32 and path.is_file()
    assert abs(float(data.mean())) < 1.5 and 0.2 < float(data.std()) < 3  # normalised like the graph's input
    np.testing.assert_array_equal(cli.calibration_inputs(path, onnx_path, 99), data)  # reused, not re-rendered
