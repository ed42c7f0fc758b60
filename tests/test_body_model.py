"""Body model layer: the SMPL-format loader, the anny-smpl default, joint sets, bad files, the CLI."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import roma
import torch

from hkmr_ros.skeleton import CHAINS, NUM_JOINTS, SMPL_PARENTS, descendants
from training.body import anny_smpl
from training.body.body_model import DEFAULT_MODEL_PATH, ENV_VAR, BodyModelError, load_body_model
from training.body.cli import main as cli_main
from training.body.joint_sets import JOINT_SETS, SMPLX_VERTEX_ID_KEYS, joint_names


@pytest.fixture(scope="module")
def body():
    return load_body_model()


def tiny_smpl_arrays(num_vertices: int = 30, seed: int = 0) -> dict:
    """A made-up SMPL-format model: random template, weights and regressor."""
    rng = np.random.default_rng(seed)
    weights = rng.random((num_vertices, NUM_JOINTS))
    regressor = rng.random((NUM_JOINTS, num_vertices))
    data = {
        "v_template": rng.normal(size=(num_vertices, 3)),
        "shapedirs": 0.01 * rng.normal(size=(num_vertices, 3, 10)),
        "J_regressor": regressor / regressor.sum(axis=1, keepdims=True),
        "weights": weights / weights.sum(axis=1, keepdims=True),
        "kintree_table": np.stack([np.array(SMPL_PARENTS), np.arange(NUM_JOINTS)]),
        "f": rng.integers(0, num_vertices, size=(40, 3)),
        "posedirs": np.zeros((num_vertices, 3, 207)),
    }
    for i, key in enumerate(SMPLX_VERTEX_ID_KEYS):
        data[f"vertex_ids_{key}"] = np.array(i)
    return data


def test_chains_cover_the_tree_once_and_follow_it():
    joints = [j for chain in CHAINS.values() for j in chain]
    assert sorted(joints) == list(range(NUM_JOINTS))
    for name, chain in CHAINS.items():
        for previous, joint in zip(chain[:-1], chain[1:]):
            assert SMPL_PARENTS[joint] == previous, (name, joint)
        if name != "root":
            assert SMPL_PARENTS[chain[0]] in CHAINS["root"], name  # child chains hang off the root chain


def test_zero_pose_gives_template_joints(body):
    betas = torch.randn(2, 10)
    out = body(torch.zeros(2, 72), betas)
    shaped = body.smpl.v_template + torch.einsum("bl,vcl->bvc", betas, body.smpl.shapedirs)
    expected = torch.einsum("jv,bvc->bjc", body.smpl.J_regressor, shaped)
    assert torch.allclose(out.joints, expected, atol=1e-5)
    assert out.vertices.shape == (2, body.num_vertices, 3)
    assert out.keypoints.shape[1] > NUM_JOINTS


def test_pose_formats_agree(body):
    rotvec = 0.5 * torch.randn(2, NUM_JOINTS, 3)
    betas = torch.randn(2, 10)
    a = body(rotvec.reshape(2, 72), betas).vertices
    b = body(rotvec, betas).vertices
    c = body(roma.rotvec_to_rotmat(rotvec), betas).vertices
    assert torch.allclose(a, b) and torch.allclose(a, c, atol=1e-5)
    with pytest.raises(ValueError, match="Bx72"):
        body(torch.zeros(2, 70), betas)
    with pytest.raises(ValueError, match="betas"):
        body(torch.zeros(2, 72), torch.zeros(2, 7))


@pytest.mark.parametrize("joint", [1, 4, 9, 16, 19])
def test_rotating_a_joint_moves_only_its_descendants(body, joint):
    pose = torch.zeros(1, NUM_JOINTS, 3)
    rest = body(pose, torch.zeros(1, 10)).joints[0]
    pose[0, joint] = torch.tensor([0.3, -0.4, 0.5])
    moved = (body(pose, torch.zeros(1, 10)).joints[0] - rest).norm(dim=-1) > 1e-5
    assert set(torch.nonzero(moved).flatten().tolist()) == set(descendants(joint))


def test_beta_zero_is_a_plausible_adult(body):
    vertices = body(torch.zeros(1, 72), torch.zeros(1, 10)).vertices[0]
    height = float(vertices[:, 1].max() - vertices[:, 1].min())
    print(f"\nbeta=0 height: {height:.3f} m")
    assert 1.55 <= height <= 1.90
    assert float(vertices[:, 0].max() - vertices[:, 0].min()) > 0.9 * height  # T-pose: arm span ~ height


def test_keypoint_vertices_are_on_the_right_body_parts(body):
    out = body(torch.zeros(1, 72), torch.zeros(1, 10))
    names = joint_names("coco17")
    coco = dict(zip(names, body.joint_set("coco17", out)[0]))
    smpl = out.joints[0]
    head, neck = smpl[15], smpl[12]
    assert coco["nose"][2] > head[2] + 0.05  # in front of the head (+z)
    assert coco["left_eye"][0] > 0 > coco["right_eye"][0]  # left is +x
    assert coco["left_ear"][0] > coco["left_eye"][0] and coco["right_ear"][0] < coco["right_eye"][0]
    assert coco["nose"][1] > neck[1]
    spin = body.joint_set("spin24", out)[0]
    assert spin[13][1] == out.vertices[0, :, 1].max()  # head top
    feet = out.keypoints[0, 29:35]  # LBigToe, LSmallToe, LHeel, RBigToe, RSmallToe, RHeel
    assert feet[0, 2] > feet[2, 2] + 0.1 and feet[3, 2] > feet[5, 2] + 0.1  # toes in front of heels
    assert (feet[:, 1] < smpl[7, 1]).all()


def test_joint_sets(body):
    out = body(0.3 * torch.randn(2, 72), torch.randn(2, 10))
    sizes = {"smpl24": 24, "spin24": 24, "h36m17": 17, "coco17": 17, "lsp14": 14, "limbs12": 12}
    assert set(sizes) == set(JOINT_SETS)
    for name, size in sizes.items():
        assert body.joint_set(name, out).shape == (2, size, 3)
    assert torch.equal(body.joint_set("smpl24", out), out.joints)
    assert torch.allclose(body.joint_set("lsp14", out), body.joint_set("spin24", out)[:, :14])
    assert torch.equal(body.joint_set("limbs12", out), body.joint_set("lsp14", out)[:, :12])
    h36m = body.joint_set("h36m17", out)
    assert torch.allclose(h36m[:, 0], (out.joints[:, 1] + out.joints[:, 2]) / 2)
    with pytest.raises(ValueError, match="spin24"):
        body.joint_set("mpii16", out)


def test_agrees_with_anny(body):
    vertex_mm, joint_mm = anny_smpl.compare_with_anny(body, num_shapes=3, seed=7)
    print(f"\nagreement with Anny: mean vertex distance {vertex_mm:.2f} mm, mean joint distance {joint_mm:.2f} mm")
    assert vertex_mm < 15.0
    assert joint_mm < 10.0


def test_default_file_is_small_and_documented(body):
    assert DEFAULT_MODEL_PATH.stat().st_size < 10 * 1024 * 1024
    assert "Apache-2.0" in body.licence and "CC0" in body.licence
    assert body.faces.shape[1] == 3 and body.faces.max() < body.num_vertices


def test_tiny_npz_loads_and_runs(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, **tiny_smpl_arrays())
    model = load_body_model(path)
    out = model(0.2 * torch.randn(3, 72), torch.randn(3, 10))
    assert out.vertices.shape == (3, 30, 3) and torch.isfinite(out.vertices).all()
    assert model.source == str(path) and "not stated" in model.licence


def test_tiny_pickle_and_env_var(tmp_path, monkeypatch):
    path = tmp_path / "tiny.pkl"
    with open(path, "wb") as f:
        pickle.dump(tiny_smpl_arrays(num_vertices=25), f)
    monkeypatch.setenv(ENV_VAR, str(path))
    model = load_body_model()
    assert model.source == str(path) and model.num_vertices == 25
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.pkl"))
    with pytest.raises(FileNotFoundError, match="absent.pkl"):
        load_body_model()


def _write_bad(tmp_path, case: str):
    path = tmp_path / f"{case}.npz"
    data = tiny_smpl_arrays()
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"this is neither a zip nor a pickle")
    elif case == "missing_keys":
        del data["J_regressor"], data["weights"]
        np.savez(path, **data)
    elif case == "wrong_shape":
        data["weights"] = data["weights"][:, :20]
        np.savez(path, **data)
    elif case == "truncated_zip":
        np.savez(path, **data)
        path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "empty"),
        ("garbage", "neither an .npz"),
        ("missing_keys", "missing J_regressor, weights"),
        ("wrong_shape", "weights has shape (30, 20), expected 30x24"),
        ("truncated_zip", "not a readable .npz"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, case, message):
    path = _write_bad(tmp_path, case)
    with pytest.raises(BodyModelError) as info:
        load_body_model(path)
    text = str(info.value)
    assert message in text and str(path) in text
    assert "expected an SMPL-format model file" in text and "v_template" in text


def test_missing_file_names_path_and_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_body_model(tmp_path / "nope.npz")
    assert "nope.npz" in str(info.value) and ENV_VAR in str(info.value)


def test_missing_default_says_how_to_generate(monkeypatch, tmp_path):
    import training.body.body_model as body_model_module

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(body_model_module, "DEFAULT_MODEL_PATH", tmp_path / "anny_smpl.npz")
    with pytest.raises(FileNotFoundError, match="python -m training.body.anny_smpl"):
        body_model_module.load_body_model()


def test_cli(capsys, tmp_path):
    assert cli_main([]) == 0
    text = capsys.readouterr().out
    for field in ("vertices:", "faces:", "joints:", "shape components:", "source file:", "licence:", "beta=0 height:"):
        assert field in text
    assert str(DEFAULT_MODEL_PATH) in text
    assert cli_main(["--model", str(tmp_path / "nope.pkl")]) == 1
    assert "nope.pkl" in capsys.readouterr().err
