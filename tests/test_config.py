"""The one config system: YAML + overrides, strict keys, and a saved config that round-trips."""
from pathlib import Path

import pytest
import yaml

from training.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_defaults_are_the_papers_setting():
    cfg = Config()
    assert cfg.model.encoder == "resnet50" and cfg.model.regressor == "hkmr"
    assert cfg.data.image_size == 224


@pytest.mark.parametrize("values, key", [
    ({"modle": {}}, "modle"),
    ({"model": {"encodr": "resnet18"}}, "model.encodr"),
    ({"optim": {"lr": 1e-4, "momentum": 0.9}}, "optim.momentum"),
])
def test_unknown_keys_raise_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        config_from_dict(values, "run.yaml")


@pytest.mark.parametrize("values", [
    {"optim": {"steps": "many"}},
    {"optim": {"amp": 1}},
    {"data": {"synthetic_roots": "not/a/list"}},
    {"model": "resnet18"},
])
def test_wrong_types_raise(values):
    with pytest.raises(ConfigError):
        config_from_dict(values)


def test_overrides_parse_yaml_values_and_nest():
    cfg = apply_overrides(Config(), ["optim.lr=1e-3", "optim.amp=false", "data.ratios=[0.3, 0.7]",
                                     "model.regressor_kwargs={outer_iters: 2}", "seed=7",
                                     "prior.vae_path="])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.optim.amp is False
    assert cfg.data.ratios == [0.3, 0.7]
    assert cfg.model.regressor_kwargs == {"outer_iters": 2}
    assert cfg.seed == 7
    assert cfg.prior.vae_path is None


def test_ints_widen_to_floats():
    cfg = apply_overrides(Config(), ["optim.lr=1"])
    assert isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize("override", ["optim.lr", "optim.nope=1", "nope.lr=1", "optim.steps=1.5"])
def test_bad_overrides_raise(override):
    with pytest.raises(ConfigError):
        apply_overrides(Config(), [override])


def test_saved_config_round_trips(tmp_path):
    cfg = apply_overrides(Config(), ["optim.lr=3e-4", "data.synthetic_roots=[a, b]", "prior.kind=none",
                                     "model.regressor_kwargs={inner_iters: 2, joint_hierarchy: false}"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config_to_dict(cfg)


def test_load_config_applies_overrides_after_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 0.01\n  steps: 5\n")
    cfg = load_config(path, ["optim.steps=9"])
    assert cfg.optim.lr == pytest.approx(0.01) and cfg.optim.steps == 9


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config(tmp_path / "nowhere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


@pytest.mark.parametrize("name", ["smoke", "synthetic_hkmr", "synthetic_hmr", "resnet50_hkmr"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.regressor in ("hkmr", "hmr")


def test_synthetic_hkmr_and_hmr_share_the_budget():
    hkmr = config_to_dict(load_config(CONFIGS / "synthetic_hkmr.yaml"))
    hmr = config_to_dict(load_config(CONFIGS / "synthetic_hmr.yaml"))
    assert hkmr["model"]["regressor"] == "hkmr" and hmr["model"]["regressor"] == "hmr"
    for section in ("data", "optim", "loss", "log"):
        assert hkmr[section] == hmr[section], section
    assert hkmr["seed"] == hmr["seed"]


def test_exponent_notation_without_a_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-4` as a string; a learning rate written that way must still work
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  disc_lr: 2E-5\n")
    cfg = load_config(path)
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.disc_lr == pytest.approx(2e-5)
