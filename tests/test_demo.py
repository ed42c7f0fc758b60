"""The main job (training.demo) on the shipped defaults, and the release of shipped weights."""
from __future__ import annotations

import json
import math

import cv2
import pytest
import torch

import training.body.pose_sampler  # noqa: F401  (roma before any EGL context, see training/render.py)
from training import demo, release
from training.config import Config, config_to_dict


def test_default_weights_are_shipped_and_small():
    assert demo.DEFAULT_CHECKPOINT.is_file(), f"missing {demo.DEFAULT_CHECKPOINT}"
    assert demo.DEFAULT_CHECKPOINT.stat().st_size <= 25 * 2**20
    assert (demo.DEFAULT_CHECKPOINT.parent / "config.yaml").is_file()


def test_demo_runs_on_the_defaults(tmp_path):
    assert demo.main(["--out", str(tmp_path), "--num", "2"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert len(result["people"]) == 2
    for person in result["people"]:
        assert len(person["pose"]) == 72 and len(person["betas"]) == 10 and len(person["camera"]) == 3
        assert len(person["joints_3d"]) == 24
        # millimetres (not metres) and not absurd for a person of ~1.7 m
        assert math.isfinite(person["mpjpe_mm"]) and 1.0 < person["mpjpe_mm"] < 1000.0
        assert math.isfinite(person["pa_mpjpe_mm"]) and 1.0 < person["pa_mpjpe_mm"] < 1000.0
    image = cv2.imread(str(tmp_path / "person_0.png"))
    assert image is not None and image.shape[1] == 3 * image.shape[0]


def test_demo_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert demo.main(["--out", str(tmp_path), "--checkpoint", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_release_keeps_only_the_network_and_its_config(tmp_path):
    cfg = Config()
    model = torch.nn.Linear(4, 2)
    ckpt = tmp_path / "checkpoint_00000010.pt"
    torch.save({"model": model.state_dict(), "optimizer": {"big": torch.zeros(1000)}, "step": 10,
                "config": config_to_dict(cfg)}, ckpt)
    path = release.release(ckpt, tmp_path / "out")
    saved = torch.load(path, weights_only=False)
    assert set(saved) == {"model", "config", "step"} and saved["step"] == 10
    assert torch.equal(saved["model"]["weight"], model.weight)
    assert (tmp_path / "out" / "config.yaml").is_file()
    with pytest.raises(ValueError, match="over the"):
        release.release(ckpt, tmp_path / "small", max_mb=1e-6)
    with pytest.raises(FileNotFoundError, match="nope"):
        release.release(tmp_path / "nope.pt", tmp_path / "x")
