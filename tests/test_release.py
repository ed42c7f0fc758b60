"""Released weights name the documented data folders, not the machine's (`--relocate`)."""
import torch

from training import release
from training.config import Config, config_to_dict, load_config


def test_relocate_rewrites_data_paths_and_the_initial_weights(tmp_path):
    cfg = Config()
    cfg.data.store_roots = ["/scratch/run7/store/train_s0_128"]
    cfg.data.val_root = "/scratch/run7/val"
    cfg.model.body_model = "/scratch/run7/not_data.npz"
    cfg.model.init_checkpoint = "/scratch/run7/init/stage1.pt"
    ckpt = tmp_path / "checkpoint_00000010.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "step": 10, "config": config_to_dict(cfg)}, ckpt)
    path = release.release(ckpt, tmp_path / "out", relocate=[("/scratch/run7/store", "data/store"),
                                                             ("/scratch/run7/val", "data/synthetic/val"),
                                                             ("/scratch/run7/init", "weights")])
    saved = torch.load(path, weights_only=False)["config"]
    assert saved["data"]["store_roots"] == ["data/store/train_s0_128"]
    assert saved["data"]["val_root"] == "data/synthetic/val"
    assert saved["model"]["body_model"] == "/scratch/run7/not_data.npz"  # only data.* and the start moves
    assert saved["model"]["init_checkpoint"] == "weights/stage1.pt"
    assert load_config(tmp_path / "out" / "config.yaml").data.store_roots == ["data/store/train_s0_128"]
    assert release.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o2"), "--relocate", "nope"]) == 2
