"""ONNX export of tiny HKMR / HMR checkpoints, checked against PyTorch with onnxruntime."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from engine_build import onnx_export
from engine_build.onnx_export import (OUTPUT_NAMES, TOLERANCES, ExportHead, OnnxValidationError,
                                      count_iterations, export_onnx, random_images, validate_onnx)
from training.config import Config, config_to_dict
from training.datasets.augment import IMAGENET_MEAN, IMAGENET_STD
from training.evaluate import load_method
from training.geometry import aa_to_rotmat
from training.models.mesh_regressor import build_model

IMAGE_SIZE = 64
TINY_HKMR = {"inner_iters": 2, "outer_iters": 2, "embed_dim": 16, "hidden_dim": 16}
TINY_HMR = {"iters": 2, "hidden_dim": 32}


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
            p.add_(torch.randn_like(p) * 0.02)
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "step": 0}, path)
    return path


def torch_outputs(checkpoint: Path, image: torch.Tensor, all_iterations: bool = False):
    model = load_method(checkpoint, "reference", torch.device("cpu")).model
    head = ExportHead(model, count_iterations(model, IMAGE_SIZE), all_iterations)
    with torch.no_grad():
        return dict(zip(OUTPUT_NAMES, (t.numpy() for t in head(image))))


def onnx_outputs(onnx_path: Path, image: torch.Tensor):
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"image": image.numpy()})))


def assert_matches(onnx_path: Path, checkpoint: Path, batch: int, all_iterations: bool = False):
    image = random_images(batch, IMAGE_SIZE, seed=100 + batch)
    expected = torch_outputs(checkpoint, image, all_iterations)
    actual = onnx_outputs(onnx_path, image)
    lead = (batch, 2) if all_iterations else (batch,)
    assert actual["pose"].shape == lead + (72,)
    assert actual["betas"].shape == lead + (10,)
    assert actual["cam"].shape == lead + (3,)
    assert actual["rotmat"].shape == lead + (24, 3, 3)
    for name in ("betas", "cam", "rotmat"):
        np.testing.assert_allclose(actual[name], expected[name], atol=TOLERANCES[name], rtol=0)
    pose_rotmat = aa_to_rotmat(torch.from_numpy(actual["pose"]).reshape(*lead, 24, 3)).numpy()
    np.testing.assert_allclose(pose_rotmat, expected["rotmat"], atol=TOLERANCES["pose"], rtol=0)
    return expected


@pytest.fixture(scope="module")
def hkmr_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("hkmr")
    checkpoint = save_checkpoint(tiny_config("hkmr"), root / "model.pt")
    return checkpoint, export_onnx(checkpoint, root / "hkmr.onnx", batch_size=3)


def test_hkmr_export_matches_pytorch_at_batch_1_and_3(hkmr_export):
    checkpoint, onnx_path = hkmr_export
    assert onnx_path.is_file()
    assert [i.name for i in onnx.load(str(onnx_path)).graph.input] == ["image"]
    for batch in (1, 3):
        expected = assert_matches(onnx_path, checkpoint, batch)
    # the comparison means something: the estimate differs between images, and from the mean pose
    assert expected["rotmat"].std(axis=0).max() > 0.01
    assert expected["betas"].std(axis=0).max() > 0.01


def test_graph_interface_has_a_dynamic_batch_axis(hkmr_export):
    _, onnx_path = hkmr_export
    graph = onnx.load(str(onnx_path)).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}
    assert dims == {"image": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE], "pose": ["batch", 72],
                    "betas": ["batch", 10], "cam": ["batch", 3], "rotmat": ["batch", 24, 3, 3]}
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)


def test_sidecar_describes_the_graph(hkmr_export):
    checkpoint, onnx_path = hkmr_export
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["onnx"] == onnx_path.name
    assert meta["opset"] == 17
    assert {o.domain or "ai.onnx": o.version for o in onnx.load(str(onnx_path)).opset_import}["ai.onnx"] == 17
    assert meta["input"]["name"] == "image"
    assert meta["input"]["shape"] == ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]
    np.testing.assert_allclose(meta["input"]["mean"], IMAGENET_MEAN, atol=1e-6)
    np.testing.assert_allclose(meta["input"]["std"], IMAGENET_STD, atol=1e-6)
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [
        ("pose", ["batch", 72]), ("betas", ["batch", 10]), ("cam", ["batch", 3]), ("rotmat", ["batch", 24, 3, 3])]
    assert meta["iterations"] == 2 and meta["dynamic_batch"] and not meta["all_iterations"]
    model = meta["model"]
    assert (model["encoder"], model["regressor"], model["rotation"]) == ("mobilenet_v3_small", "hkmr", "6d")
    assert model["regressor_kwargs"] == TINY_HKMR and model["image_size"] == IMAGE_SIZE
    assert model["checkpoint"] == str(checkpoint)
    validation = meta["validation"]
    assert validation["passed"] and validation["batch_sizes"] == [1, 3]
    assert set(validation["outputs"]) == set(OUTPUT_NAMES)
    for name, row in validation["outputs"].items():
        assert 0.0 <= row["max_abs_diff"] <= row["limit"]
        assert row["limit"] == pytest.approx(TOLERANCES[name] * max(1.0, row["max_abs_value"]))


def test_hmr_export_matches_pytorch(tmp_path):
    checkpoint = save_checkpoint(tiny_config("hmr", rotation="aa"), tmp_path / "hmr.pt")
    onnx_path = export_onnx(checkpoint, tmp_path / "hmr.onnx")
    for batch in (1, 3):
        assert_matches(onnx_path, checkpoint, batch)
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["model"]["regressor"] == "hmr" and meta["validation"]["batch_sizes"] == [1, 4]


@pytest.mark.parametrize("rotation, kwargs", [
    ("aa", {}),
    ("6d", {"backward_pass": False}),
    ("6d", {"joint_hierarchy": False}),
], ids=["aa", "forward-only", "no-joint-hierarchy"])
def test_hkmr_ablations_export(tmp_path, rotation, kwargs):
    checkpoint = save_checkpoint(tiny_config("hkmr", rotation=rotation, **kwargs), tmp_path / "m.pt", seed=1)
    onnx_path = export_onnx(checkpoint, tmp_path / "m.onnx", batch_size=2)
    assert_matches(onnx_path, checkpoint, 3)


def test_all_iterations_with_a_static_batch_through_the_cli(tmp_path, capsys):
    checkpoint = save_checkpoint(tiny_config("hkmr", joint_hierarchy=False), tmp_path / "m.pt", seed=2)
    out = tmp_path / "sub" / "all.onnx"
    code = onnx_export.main(["--checkpoint", str(checkpoint), "--out", str(out), "--opset", "18",
                             "--batch-size", "3", "--static-batch", "--all-iterations"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rotmat" in printed and str(out) in printed
    assert_matches(out, checkpoint, 3, all_iterations=True)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["opset"] == 18 and meta["all_iterations"] and not meta["dynamic_batch"]
    assert meta["input"]["shape"][0] == 3 and meta["outputs"][3]["shape"] == [3, 2, 24, 3, 3]
    with pytest.raises(Exception):  # the batch is fixed: onnxruntime refuses another one
        onnx_outputs(out, random_images(1, IMAGE_SIZE, seed=0))


def test_validation_rejects_a_graph_that_disagrees(hkmr_export, tmp_path):
    checkpoint, onnx_path = hkmr_export
    other = save_checkpoint(tiny_config("hkmr"), tmp_path / "other.pt", seed=7)
    model = load_method(other, "other", torch.device("cpu")).model
    head = ExportHead(model, count_iterations(model, IMAGE_SIZE))
    with pytest.raises(OnnxValidationError, match="disagree"):
        validate_onnx(onnx_path, head, IMAGE_SIZE, [1, 2])


def test_missing_checkpoint_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        export_onnx(missing, tmp_path / "m.onnx")
    assert onnx_export.main(["--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_failed_validation_leaves_no_sidecar(hkmr_export, tmp_path, monkeypatch, capsys):
    checkpoint, _ = hkmr_export
    out = tmp_path / "strict.onnx"
    out.with_suffix(".json").write_text("{}")  # stale, from an earlier export
    monkeypatch.setitem(TOLERANCES, "rotmat", 0.0)  # float32 runtimes never agree to the last bit
    assert onnx_export.main(["--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "3"]) == 1
    assert "rotmat: max abs difference" in capsys.readouterr().err
    assert not out.with_suffix(".json").exists()
