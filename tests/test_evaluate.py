"""The evaluation CLI end to end on tiny networks, a tiny body model and a few samples."""
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from hkmr_ros.skeleton import SMPL_PARENTS
from training import evaluate
from training.body.body_model import load_body_model
from training.body.joint_sets import SMPLX_VERTEX_ID_KEYS
from training.config import Config, config_to_dict, save_config
from training.datasets.synthetic import SyntheticDataset, generate_dataset
from training.models.mesh_regressor import build_model

NUM_SAMPLES = 3


def write_tiny_smpl(path: Path) -> Path:
    """A 48-vertex SMPL-format npz (two vertices per joint) that `load_body_model` accepts."""
    rng = np.random.default_rng(0)
    rest = np.zeros((24, 3))
    for j in range(1, 24):  # a spread-out tree: each joint 15 cm from its parent
        rest[j] = rest[SMPL_PARENTS[j]] + rng.normal(size=3) * 0.15
    v_template = (rest[:, None, :] + np.array([[0.0, 0.0, 0.03], [0.0, 0.0, -0.03]])).reshape(48, 3)
    weights = np.repeat(np.eye(24), 2, axis=0)
    np.savez(
        path, v_template=v_template, shapedirs=rng.normal(scale=0.01, size=(48, 3, 10)),
        posedirs=np.zeros((48, 3, 207)), J_regressor=weights.T / 2.0, weights=weights,
        kintree_table=np.array([[max(p, 0) if j else 4294967295 for j, p in enumerate(SMPL_PARENTS)],
                                list(range(24))], dtype=np.int64),
        f=np.array([[2 * j, 2 * j + 1, 2 * SMPL_PARENTS[j]] for j in range(1, 24)]),
        vertex_ids_head_top=np.array(30),
        **{f"vertex_ids_{k}": np.array(2 * (i % 24)) for i, k in enumerate(SMPLX_VERTEX_ID_KEYS)},
    )
    return path


def tiny_config(regressor: str) -> Config:
    cfg = Config()
    cfg.model.encoder = "resnet18"
    cfg.model.regressor = regressor
    cfg.model.regressor_kwargs = (dict(inner_iters=1, outer_iters=2, embed_dim=16, hidden_dim=16)
                                  if regressor == "hkmr" else dict(iters=2, hidden_dim=32))
    cfg.data.image_size = 64  # the evaluation resizes the 224 crops (occluders drawn before)
    cfg.prior.kind = "none"  # SMPLify at evaluation then fits without the VAE file
    cfg.smplify.camera_iters, cfg.smplify.body_iters = 2, 3
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two checkpoints written as train.py writes them (config stored / config.yaml beside), a tiny
    body model and a few synthetic samples rendered with it."""
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    hkmr_dir, hmr_dir = root / "hkmr_run", root / "hmr_run"
    hkmr_dir.mkdir()
    hmr_dir.mkdir()
    cfg = tiny_config("hkmr")
    torch.save({"model": build_model(cfg.model).state_dict(), "step": 1, "config": config_to_dict(cfg)},
               hkmr_dir / "checkpoint_00000001.pt")
    cfg = tiny_config("hmr")
    torch.save({"model": build_model(cfg.model).state_dict(), "step": 1}, hmr_dir / "checkpoint_00000001.pt")
    save_config(cfg, hmr_dir / "config.yaml")
    body = write_tiny_smpl(root / "tiny_smpl.npz")
    generate_dataset(root / "test_set", NUM_SAMPLES, seed=5, body_model=load_body_model(body), progress=False)
    return root, hkmr_dir / "checkpoint_00000001.pt", hmr_dir / "checkpoint_00000001.pt", body


def _batch(dataset, n):
    items = [dataset[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "dataset_name"}


def test_cli_end_to_end_with_occlusion(setup, capsys):
    root, hkmr_ckpt, hmr_ckpt, body = setup
    out = root / "out"
    rc = evaluate.main([
        "--checkpoint", str(hkmr_ckpt), "--checkpoint", str(hmr_ckpt), "--names", "HKMR", "HMR",
        "--data", f"synthetic:{root / 'test_set'}", "--occlusion", "--kinds", "circle", "--docs", "1", "5",
        "--joint-stride", "8", "--body-model", str(body), "--out", str(out), "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--smplify",
    ])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    res = results["datasets"]["test_set"]
    assert res["num_samples"] == NUM_SAMPLES
    assert set(res["clean"]) == {"HKMR", "HMR", *evaluate.BASELINES}
    assert res["baselines"] == list(evaluate.BASELINES)
    for name in ("HKMR", "HMR"):  # facing scores of every network, none for the baselines
        facing = res["clean"][name]["facing"]
        assert 0.0 <= facing["front_back"] <= 1.0 and 0.0 <= facing["median_yaw_error"] <= 180.0
    assert all("facing" not in res["clean"][b] for b in evaluate.BASELINES)
    for b in evaluate.BASELINES:
        assert np.isfinite(res["clean"][b]["h36m17"]["mpjpe"]) and res["clean"][b]["h36m17"]["count"] == NUM_SAMPLES
    for name in ("HKMR", "HMR"):
        for s in ("h36m17", "lsp14"):
            m = res["clean"][name][s]
            assert m["count"] == NUM_SAMPLES
            assert np.isfinite(m["mpjpe"]) and np.isfinite(m["pa_mpjpe"])
            assert 0 < m["pa_mpjpe"] < m["mpjpe"] * 1.5  # Procrustes removes scale/rotation error
            assert len(m["per_joint"]["mpjpe"]) == len(m["per_joint"]["names"]) == (17 if s == "h36m17" else 14)
            assert np.isclose(np.mean(m["per_joint"]["mpjpe"]), m["mpjpe"])  # all joints have ground truth

    # occluders go on the visible joints 0, 8, 16 inside the crop
    keypoints = _batch(SyntheticDataset(root / "test_set"), NUM_SAMPLES)["keypoints_2d"]
    px = (keypoints[..., :2] + 1) * 112
    placed = (keypoints[:, ::8, 2] > 0) & ((px[:, ::8] >= 0) & (px[:, ::8] < 224)).all(-1)
    assert 0 < int(placed.sum()) <= 3 * NUM_SAMPLES
    for name in ("HKMR", "HMR"):  # SMPLify moved the estimate
        refined = res["smplify"][name]["lsp14"]
        assert np.isfinite(refined["mpjpe"]) and refined["mpjpe"] != pytest.approx(res["clean"][name]["lsp14"]["mpjpe"])
    occ = res["occlusion"]
    assert occ["joint_set"] == "h36m17"
    for name in ("HKMR", "HMR"):
        row = occ["mpjpe_by_doc"][name]["circle"]
        assert list(row) == ["0", "1", "5"]
        assert row["0"]["mpjpe"] == pytest.approx(res["clean"][name]["h36m17"]["mpjpe"])
        assert row["1"]["count"] == row["5"]["count"] == int(placed.sum())
        values = [row[d]["mpjpe"] for d in ("0", "1", "5")]
        assert all(np.isfinite(values))
        assert values[2] != pytest.approx(values[0], abs=1e-6)  # a 50 px circle changes the prediction

    md = (out / "results.md").read_text()
    assert "| method | occluder | DoC 0 | DoC 1 | DoC 5 |" in md
    occ_rows = [line for line in md.splitlines() if line.startswith(("| HKMR | circle", "| HMR | circle"))]
    assert len(occ_rows) == 2 and all(len(r.strip().strip("|").split("|")) == 5 for r in occ_rows)
    assert "| method | H36M-17 MPJPE | H36M-17 PA-MPJPE | LSP-14 MPJPE | LSP-14 PA-MPJPE |" in md
    rows = [line for line in md.splitlines() if line.startswith(("| HKMR ", "| HMR "))]
    assert [r.split("|")[1].strip() for r in rows[:4]] == ["HKMR", "HMR", "HKMR + SMPLify", "HMR + SMPLify"]
    assert all(float(c) > 0 for r in rows[:4] for c in r.strip().strip("|").split("|")[1:])

    png = out / "occlusion_test_set.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[0] > 100
    assert "results written to" in capsys.readouterr().out


def test_occluded_images_cover_the_joint_and_are_reproducible(setup):
    batch = _batch(SyntheticDataset(setup[0] / "test_set"), 2)
    img, kp = batch["img"], batch["keypoints_2d"].clone()
    kp[0, 5, 2] = 0.0  # an invisible joint is never occluded
    kp[1, 7, :2] = 1.5  # nor is one outside the crop
    targets = evaluate.occlusion_targets(kp, joint_stride=1)
    visible = (kp[..., 2] > 0) & (kp[..., :2].abs() < 1).all(-1)
    assert [(i, j) for i, j, _ in targets] == [tuple(x) for x in torch.nonzero(visible).tolist()]
    assert (0, 5) not in [(i, j) for i, j, _ in targets] and (1, 7) not in [(i, j) for i, j, _ in targets]
    variants = evaluate.occluded_images(img, targets, "circle", 2, [0, 1], seed=0, fill="grey")
    assert variants.shape == (len(targets), 3, 224, 224)
    grey = evaluate.fill_image("grey", np.random.default_rng(0), torch.device("cpu"))
    for v in (0, len(targets) - 1):
        i, _, (x, y) = targets[v]
        changed = (variants[v] != img[i]).any(0)
        assert torch.allclose(variants[v][:, int(round(y)), int(round(x))], grey[:, 0, 0])  # the joint is covered
        assert 0 < changed.sum() <= np.pi * 20 ** 2 + 200  # a radius-20 disc (DoC 2), nothing more
    second = [(0, j, c) for i, j, c in targets if i == 1]
    alone = evaluate.occluded_images(img[1:], second, "bar", 3, [1], 0, "texture")
    together = evaluate.occluded_images(img, targets, "bar", 3, [0, 1], 0, "texture")
    assert torch.equal(alone, together[-len(second):])  # the same occluders whatever the batch
    assert not torch.equal(alone, evaluate.occluded_images(img[1:], second, "bar", 3, [1], 1, "texture"))


def test_ground_truth_falls_back_to_the_body_model(setup):
    body_model = load_body_model(setup[3])
    batch = _batch(SyntheticDataset(setup[0] / "test_set", eval_keys=True), 2)
    gt = evaluate.ground_truth(batch, body_model, torch.device("cpu"))
    assert torch.equal(gt["h36m17"][0], batch["joints_h36m17"]) and gt["h36m17"][1].all()
    del batch["joints_h36m17"]
    batch["has_smpl"] = torch.tensor([1.0, 0.0])
    batch["has_joints_3d"] = torch.tensor([0.0, 1.0])
    gt = evaluate.ground_truth(batch, body_model, torch.device("cpu"))
    ref = evaluate.model_joints(body_model, batch["pose"], batch["betas"])
    h36m, mask = gt["h36m17"]
    assert mask.tolist() == [[True] * 17, [False] * 17]
    assert torch.allclose(h36m[0], ref["h36m17"][0])
    lsp, mask = gt["lsp14"]
    assert torch.allclose(lsp[0], ref["lsp14"][0]) and torch.allclose(lsp[1], batch["joints_3d"][1, :14, :3])
    assert mask.all()
    # a perfect prediction scores 0; samples without ground truth score NaN
    scores = evaluate.score({s: gt[s][0] for s in gt}, gt)
    assert scores["h36m17"]["mpjpe"][0] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(scores["h36m17"]["mpjpe"][1]) and np.isnan(scores["h36m17"]["joint_mpjpe"][1]).all()
    assert np.allclose(scores["lsp14"]["pa_mpjpe"], 0.0, atol=1e-6)
    # and a wrong one scores its error in millimetres: 10 cm on one joint of 14
    moved = {s: gt[s][0].clone() for s in gt}
    moved["lsp14"][:, 0, 2] += 0.1
    assert np.allclose(evaluate.score(moved, gt)["lsp14"]["mpjpe"], 100.0 / 14)


def test_bad_input_gives_clear_errors(setup, tmp_path, capsys):
    _, hkmr_ckpt, _, _ = setup
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        evaluate.load_method(tmp_path / "nowhere.pt", "x", torch.device("cpu"))
    lonely = tmp_path / "lonely.pt"
    torch.save({"model": {}}, lonely)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        evaluate.load_method(lonely, "x", torch.device("cpu"))
    torch.save([1, 2], tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="'model' state dict"):
        evaluate.load_method(tmp_path / "junk.pt", "x", torch.device("cpu"))
    with pytest.raises(ValueError, match="synthetic:DIR or spin"):
        evaluate.build_eval_dataset("h36m")
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        evaluate.build_eval_dataset(f"synthetic:{tmp_path / 'missing_dir'}")
    with pytest.raises(ValueError, match="2 checkpoints"):
        evaluate.unique_names(["a/c.pt", "b/c.pt"], ["only"])
    assert evaluate.unique_names(["run/c.pt", "run/d.pt"], None) == ["run", "run-2"]
    rc = evaluate.main(["--checkpoint", str(hkmr_ckpt), "--data", "nope:x", "--out", str(tmp_path / "o")])
    assert rc == 2 and "expected synthetic:DIR" in capsys.readouterr().err


def test_constant_skeleton_is_the_mean_of_the_aligned_truth():
    from training.metrics import M_TO_MM, mpjpe, root_align

    g = torch.Generator().manual_seed(0)
    truth = {s: [(torch.randn(5, n, 3, generator=g), torch.ones(5, n, dtype=torch.bool))]
             for s, n in (("h36m17", 17), ("lsp14", 14), ("limbs12", 12))}
    scores = evaluate.constant_skeleton_scores(truth)
    joints = truth["h36m17"][0][0]
    mean = root_align(joints, "h36m17").mean(0, keepdim=True).expand(5, -1, -1)
    expected = mpjpe(mean.double(), joints.double(), root="h36m17") * M_TO_MM
    assert np.allclose(scores["h36m17"]["mpjpe"], expected.numpy())


def test_facing_scores():
    from training.geometry import aa_to_rotmat

    upright = torch.tensor([[np.pi, 0.0, 0.0]])  # facing the camera
    turned = aa_to_rotmat(torch.tensor([[0.0, np.pi, 0.0]]).reshape(1, 1, 3))[:, 0] @ aa_to_rotmat(upright.reshape(1, 1, 3))[:, 0]
    same = facing_scores_of(aa_to_rotmat(upright.reshape(1, 1, 3))[:, 0], upright)
    assert same["front_back"][0] == 1.0 and same["yaw_error"][0] < 1e-6
    back = facing_scores_of(turned, upright)
    assert back["front_back"][0] == 0.0 and abs(back["yaw_error"][0] - 180.0) < 1e-4
    assert np.allclose(evaluate.facing_direction(aa_to_rotmat(upright.reshape(1, 1, 3))[:, 0]).numpy(), [[0.0, -1.0]])


def facing_scores_of(global_rotmat, gt_global_aa):
    pred = torch.eye(3).repeat(1, 24, 1, 1)
    pred[:, 0] = global_rotmat
    gt_pose = torch.zeros(1, 72)
    gt_pose[:, :3] = gt_global_aa
    return evaluate.facing_scores(pred, gt_pose)


def test_predict_renormalises_for_the_encoder(setup):
    """An input normalised with ImageNet's statistics or with the encoder's own gives one estimate."""
    from training.datasets.augment import normalise_batch
    from training.models.encoders import IMAGENET_NORMALISATION, TFLITE_NORMALISATION

    cfg = tiny_config("hkmr")
    cfg.model.encoder = "efficientnet_lite0"
    torch.manual_seed(0)
    method = evaluate.Method("lite0", build_model(cfg.model).eval(), cfg, "none")
    crops = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = evaluate.predict(method, normalise_batch(crops, *IMAGENET_NORMALISATION))
    b = evaluate.predict(method, normalise_batch(crops, *TFLITE_NORMALISATION), input_normalisation=TFLITE_NORMALISATION)
    x = torch.nn.functional.interpolate(normalise_batch(crops, *TFLITE_NORMALISATION), size=(64, 64), mode="bilinear",
                                        align_corners=False, antialias=True)
    with torch.no_grad():
        direct = method.model(x)["cam"][:, -1]
    assert torch.allclose(a["cam"], b["cam"], atol=1e-5) and torch.allclose(a["rotmat"], b["rotmat"], atol=1e-5)
    assert torch.allclose(b["cam"], direct, atol=1e-5)


def test_iterations_run_the_trained_hkmr_at_other_counts(setup, capsys):
    root, hkmr_ckpt, hmr_ckpt, body = setup
    out = root / "out_iterations"
    rc = evaluate.main(["--checkpoint", str(hkmr_ckpt), "--names", "HKMR", "--iterations", "1x2", "2x1",
                        "--data", f"synthetic:{root / 'test_set'}", "--body-model", str(body), "--out", str(out),
                        "--batch-size", "4", "--workers", "0", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    clean = results["datasets"]["test_set"]["clean"]
    same, other = "HKMR, 1x2 iterations", "HKMR, 2x1 iterations"  # the checkpoint's own counts are 1x2
    assert results["methods"][other]["regressor_kwargs"]["inner_iters"] == 2
    assert results["methods"][other]["regressor_kwargs"]["outer_iters"] == 1
    assert clean[same]["h36m17"]["mpjpe"] == pytest.approx(clean["HKMR"]["h36m17"]["mpjpe"])
    assert clean[other]["h36m17"]["mpjpe"] != pytest.approx(clean["HKMR"]["h36m17"]["mpjpe"])
    with pytest.raises(ValueError, match="applies to HKMR"):
        evaluate.load_method(hmr_ckpt, "HMR", torch.device("cpu"), (2, 1))
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--checkpoint", "c.pt", "--data", "synthetic:x", "--iterations", "2by3"])
    assert "INNERxOUTER" in capsys.readouterr().err
