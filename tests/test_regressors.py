"""The HKMR and HMR regressors, encoders, the discriminator and build_model (tiny sizes, CPU)."""
import io
import math

import numpy as np
import pytest
import torch

from training.body.chains import CHAINS, CHILD_CHAIN_NAMES
from training.config import ModelConfig
from training.geometry import aa_to_rotmat
from training.models.discriminator import (
    NUM_LOGITS,
    PoseShapeDiscriminator,
    adversarial_loss,
    discriminator_loss,
)
from training.models.encoders import ENCODERS, build_encoder
from training.models.hkmr_regressor import HKMRRegressor
from training.models.hmr_regressor import HMRRegressor
from training.models.mean_params import mean_params, state_to_rotmat
from training.models.mesh_regressor import MeshRegressor, build_model

FEAT = 24
EMBED = 16


def tiny_hkmr(**kwargs) -> HKMRRegressor:
    torch.manual_seed(0)
    return HKMRRegressor(FEAT, embed_dim=EMBED, hidden_dim=16, **kwargs)


def scale_joint_layers(model: HKMRRegressor, std: float = 0.3) -> None:
    """Larger joint-layer weights than the near-zero init, so conditioning effects are clear."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_weights." in name:
                p.normal_(0.0, std)


def features(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, FEAT, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("rotation", ["aa", "6d"])
@pytest.mark.parametrize("kind", ["hkmr", "hmr"])
def test_outputs_every_outer_iteration_have_the_contract_shapes(kind, rotation):
    if kind == "hkmr":
        model, T = tiny_hkmr(rotation=rotation, outer_iters=2, inner_iters=2), 2
    else:
        torch.manual_seed(0)
        model, T = HMRRegressor(FEAT, hidden_dim=32, rotation=rotation).eval(), 3
    out = model(features(batch=4))
    assert set(out) == {"rotmat", "pose", "betas", "cam"}
    assert out["rotmat"].shape == (4, T, 24, 3, 3)
    assert out["pose"].shape == (4, T, 72)
    assert out["betas"].shape == (4, T, 10)
    assert out["cam"].shape == (4, T, 3)
    rotmat = out["rotmat"].detach()
    eye = torch.eye(3).expand_as(rotmat)
    assert torch.allclose(rotmat @ rotmat.transpose(-1, -2), eye, atol=1e-5)
    # the axis-angle pose and the matrices describe the same rotations
    assert torch.allclose(aa_to_rotmat(out["pose"].detach().reshape(4, T, 24, 3)), rotmat, atol=1e-4)
    # iterations refine: consecutive outer estimates differ
    assert not torch.allclose(out["betas"][:, 0], out["betas"][:, 1])


@pytest.mark.parametrize("rotation", ["aa", "6d"])
def test_mean_pose_turns_a_y_up_body_to_face_a_camera_looking_down_z(rotation):
    mean = mean_params(rotation)
    R = state_to_rotmat(mean["pose_state"][0], rotation)
    assert torch.allclose(R @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)
    assert torch.allclose(R @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    assert torch.allclose(state_to_rotmat(mean["pose_state"][1:], rotation), torch.eye(3).expand(23, 3, 3))
    assert mean["betas"].abs().sum() == 0 and mean["cam"].tolist() == pytest.approx([0.9, 0.0, 0.0])


def test_untrained_regressors_start_near_the_mean():
    mean_R = state_to_rotmat(mean_params("aa")["pose_state"], "aa")
    torch.manual_seed(0)
    for model in (HKMRRegressor(FEAT, embed_dim=EMBED), HMRRegressor(FEAT).eval()):
        out = model(features())
        assert (out["rotmat"][:, 0] - mean_R).abs().max() < 0.1
        assert (out["cam"][:, 0] - torch.tensor([0.9, 0.0, 0.0])).abs().max() < 0.1


# ---------------------------------------------------------------- kinematic conditioning


def first_pass_psi(model: HKMRRegressor, group_name: str) -> torch.Tensor:
    group = getattr(model, group_name)
    return torch.rand(len(group.chain_lengths), 2, EMBED, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("group_name", ["root_chain", "child_chains"])
def test_each_joint_update_sees_all_earlier_updates_of_its_pass(group_name, backward):
    model = tiny_hkmr(rotation="aa")
    scale_joint_layers(model)
    group = getattr(model, group_name)
    psi = first_pass_psi(model, group_name)
    d0, d1 = torch.randn(2, *psi.shape[:2], 3, generator=torch.Generator().manual_seed(4))
    base = group.joint_update(psi, [d0, d1], 2, backward)
    assert (group.joint_update(psi, [d0 + 1.0, d1], 2, backward) - base).abs().min() > 1e-6
    assert (group.joint_update(psi, [d0, d1 + 1.0], 2, backward) - base).abs().min() > 1e-6
    # the first joint reads [psi, 0]: only the psi rows of its layer act
    weights, biases = ((group.backward_weights, group.backward_biases) if backward
                       else (group.forward_weights, group.forward_biases))
    torch.testing.assert_close(group.joint_update(psi, [], 0, backward),
                               torch.baddbmm(biases[0], psi, weights[0][:, :EMBED]))


@pytest.mark.parametrize("backward", [False, True])
def test_without_joint_hierarchy_a_joint_sees_only_its_predecessor(backward):
    model = tiny_hkmr(rotation="aa", joint_hierarchy=False)
    scale_joint_layers(model)
    group = model.child_chains
    psi = first_pass_psi(model, "child_chains")
    d0, d1 = torch.randn(2, *psi.shape[:2], 3, generator=torch.Generator().manual_seed(4))
    base = group.joint_update(psi, [d0, d1], 2, backward)
    assert torch.equal(group.joint_update(psi, [d0 + 1.0, d1], 2, backward), base)
    assert (group.joint_update(psi, [d0, d1 + 1.0], 2, backward) - base).abs().min() > 1e-6
    assert all(w.shape[1] == EMBED + 3 for w in group.forward_weights)


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("joint_hierarchy", [True, False])
def test_a_perturbed_first_update_propagates_through_the_pass(monkeypatch, joint_hierarchy, backward):
    """Inject a change into dtheta_0 during a real pass: later joints of the same pass follow it."""
    model = tiny_hkmr(rotation="aa", joint_hierarchy=joint_hierarchy)
    scale_joint_layers(model)
    group = model.root_chain
    psi = first_pass_psi(model, "root_chain")
    clean = group.pass_updates(psi, backward, group.length)
    original = group.joint_update

    def perturbed(psi, previous, position, backward, chains=slice(None)):
        update = original(psi, previous, position, backward, chains)
        return update + 0.5 if position == 0 else update

    monkeypatch.setattr(group, "joint_update", perturbed)
    changed = group.pass_updates(psi, backward, group.length)
    assert torch.allclose(changed[:, :, 0], clean[:, :, 0] + 0.5)
    for position in (1, 2, 3):  # through dtheta_1 even without the hierarchy
        assert (changed[:, :, position] - clean[:, :, position]).abs().min() > 1e-6


def test_backward_pass_visits_each_chain_from_its_last_joint():
    model = tiny_hkmr(rotation="aa")
    group = model.child_chains
    lengths = torch.tensor(group.chain_lengths)
    # pass step j of chain c lands on chain position K_c - 1 - j
    updates = torch.arange(group.length, dtype=torch.float).expand(len(lengths), 1, -1)[..., None]
    in_chain_order = torch.matmul(group.reverse, updates)[:, 0, :, 0] * group.mask[:, 0, :, 0]
    for c, k in enumerate(lengths.tolist()):
        assert in_chain_order[c, :k].tolist() == list(range(k - 1, -1, -1))
        assert in_chain_order[c, k:].abs().sum() == 0


def test_child_chains_depend_on_theta_root(monkeypatch):
    model = tiny_hkmr(rotation="aa", outer_iters=1)
    x = features()
    clean = model(x)["pose"].reshape(3, 24, 3)
    original = model.root_chain.refine

    def shifted_root(*args):
        return original(*args) + 0.3

    monkeypatch.setattr(model.root_chain, "refine", shifted_root)
    shifted = model(x)["pose"].reshape(3, 24, 3)
    for name in CHILD_CHAIN_NAMES:
        joints = list(CHAINS[name])
        assert (shifted[:, joints] - clean[:, joints]).abs().max() > 1e-6, name
    # the child-chain embeddings read theta_root directly
    group = model.child_chains
    phi = group.project_features(x)
    theta = torch.zeros(5, 3, group.length, 3)
    context = torch.zeros(5, 3, group.context_dim)
    bumped = context.clone()
    bumped[..., 10:] += 0.3
    assert not torch.allclose(group.refine(phi, context, theta, 2), group.refine(phi, bumped, theta, 2))


def test_gradients_reach_every_joint_layer_embedding_and_head():
    model = tiny_hkmr(rotation="aa")
    out = model(features())
    loss = sum((v - 0.1).square().mean() for v in out.values())
    loss.backward()
    for group in (model.root_chain, model.child_chains):
        for c, k in enumerate(group.chain_lengths):
            for layers in (group.forward_weights, group.backward_weights):
                for i in range(group.length):
                    grad = layers[i].grad[c]
                    if i < k:
                        assert grad.abs().sum() > 0, (c, i)
                    else:  # padded joints are masked out entirely
                        assert grad.abs().sum() == 0, (c, i)
            assert group.phi_weight.grad[c].abs().sum() > 0
            assert group.state_weight.grad[c, : group.context_dim + 3 * k].abs().sum() > 0
            assert group.embed_bias.grad[c].abs().sum() > 0
    for head in (model.shape_net, model.camera_net):
        assert all(p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("rotation", ["aa", "6d"])
@pytest.mark.parametrize("joint_hierarchy,backward_pass", [(True, True), (False, True), (True, False)])
def test_batched_chains_equal_the_chain_by_chain_loop(rotation, joint_hierarchy, backward_pass):
    model = tiny_hkmr(rotation=rotation, joint_hierarchy=joint_hierarchy, backward_pass=backward_pass)
    scale_joint_layers(model, std=0.05)
    x = features(batch=5)
    batched, loop = model(x), model.forward_reference(x)
    for key in ("rotmat", "betas", "cam"):
        torch.testing.assert_close(batched[key], loop[key], atol=1e-5, rtol=0)
    assert (batched["rotmat"][:, -1] - model(x.flip(0))["rotmat"][:, -1].flip(0)).abs().max() < 1e-5


# ---------------------------------------------------------------- ablations


def test_forward_only_ablation_has_no_backward_layers_and_changes_the_output(monkeypatch):
    full = tiny_hkmr(rotation="aa")
    scale_joint_layers(full, std=0.1)
    forward_only = tiny_hkmr(rotation="aa", backward_pass=False)
    missing, unexpected = forward_only.load_state_dict(full.state_dict(), strict=False)
    assert not missing and unexpected and all("backward_" in k for k in unexpected)
    assert not any("backward_" in name for name, _ in forward_only.named_parameters())
    directions = []
    original = forward_only.root_chain.pass_updates

    def spy(psi, backward, length, chains=slice(None)):
        directions.append(backward)
        return original(psi, backward, length, chains)

    monkeypatch.setattr(forward_only.root_chain, "pass_updates", spy)
    x = features()
    assert not torch.allclose(forward_only.forward_stepwise(x)["pose"], full.forward_stepwise(x)["pose"])
    assert directions == [False] * (forward_only.inner_iters * forward_only.outer_iters)


def test_no_joint_hierarchy_ablation_changes_the_output_with_shared_weights():
    full = tiny_hkmr(rotation="aa")
    scale_joint_layers(full, std=0.1)
    flat = tiny_hkmr(rotation="aa", joint_hierarchy=False)
    # keep [psi, dtheta_{i-1}] rows: only the hierarchy differs (a strict load: nothing missing or left over)
    flat.load_state_dict(flat.state_from_full(full.state_dict()))
    x = features()
    assert not torch.allclose(flat(x)["pose"], full(x)["pose"])
    assert not torch.allclose(flat.forward_stepwise(x)["pose"], full.forward_stepwise(x)["pose"])
    # with the earlier-joint weights zeroed the full model reduces to the ablation
    with torch.no_grad():
        for name, p in full.named_parameters():
            if "_weights." in name:
                p[:, EMBED + 3:] = 0
    torch.testing.assert_close(flat(x)["pose"], full(x)["pose"])
    torch.testing.assert_close(flat.forward_stepwise(x)["pose"], full.forward_stepwise(x)["pose"])


@pytest.mark.parametrize("inner,outer", [(2, 1), (6, 4)])
def test_iteration_counts_change_the_computation(inner, outer):
    model = tiny_hkmr(rotation="aa", inner_iters=inner, outer_iters=outer)
    reference = tiny_hkmr(rotation="aa")
    model.load_state_dict(reference.state_dict())
    out = model(features())
    assert out["rotmat"].shape[1] == outer
    assert not torch.allclose(out["pose"][:, 0], reference(features())["pose"][:, 0])


def test_discriminator_scores_joints_pose_and_shape_with_lsgan_losses():
    torch.manual_seed(0)
    disc = PoseShapeDiscriminator(joint_channels=8, pose_hidden=16)
    rotmat = aa_to_rotmat(torch.randn(4, 24, 3) * 0.3)
    betas = torch.randn(4, 10)
    logits = disc(rotmat, betas)
    assert logits.shape == (4, NUM_LOGITS) == (4, 25)
    torch.testing.assert_close(disc(rotmat[:, 1:], betas), logits)  # global orientation ignored
    changed = rotmat.clone()
    changed[:, 5] = torch.eye(3)
    moved = disc(changed, betas) - logits
    assert moved[:, 4].abs().min() > 0 and moved[:, :4].abs().max() == 0  # joint 5 = body joint 4
    assert discriminator_loss(torch.ones(4, 25), torch.zeros(4, 25)) == 0
    assert discriminator_loss(torch.zeros(4, 25), torch.ones(4, 25)) == pytest.approx(50.0)
    assert adversarial_loss(torch.ones(4, 25)) == 0 and adversarial_loss(torch.zeros(4, 25)) == pytest.approx(25.0)
    (discriminator_loss(logits, disc(rotmat.flip(0), betas)) + adversarial_loss(logits)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())
    with pytest.raises(ValueError, match="rotmat"):
        disc(rotmat[:, :10], betas)
    with pytest.raises(ValueError, match="betas"):
        disc(rotmat, betas[:, :5])


# ---------------------------------------------------------------- training signal


def overfit(model: torch.nn.Module, steps: int, lr: float) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, FEAT, generator=gen)
    target_R = aa_to_rotmat(torch.randn(4, 24, 3, generator=gen) * 0.4)
    target_betas = torch.randn(4, 10, generator=gen)
    target_cam = torch.tensor([0.9, 0.0, 0.0]) + 0.1 * torch.randn(4, 3, generator=gen)

    def loss_fn(out):  # summed over outer iterations as the paper's equation (3)
        return ((out["rotmat"] - target_R[:, None]).square().mean()
                + (out["betas"] - target_betas[:, None]).abs().mean()
                + (out["cam"] - target_cam[:, None]).abs().mean())

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.eval()
    with torch.no_grad():
        start = loss_fn(model(x)).item()
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        end = loss_fn(model(x)).item()
    return start, end


def test_hkmr_overfits_a_tiny_batch():
    torch.manual_seed(0)
    start, end = overfit(HKMRRegressor(FEAT, embed_dim=32, hidden_dim=32, inner_iters=2, outer_iters=2), 100, 5e-3)
    assert end < start / 10, (start, end)


def test_hmr_overfits_a_tiny_batch():
    torch.manual_seed(0)  # dropout off: this checks the training signal, not regularisation
    start, end = overfit(HMRRegressor(FEAT, hidden_dim=128, dropout=0.0), 100, 1e-3)
    assert end < start / 10, (start, end)


def test_hmr_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = HMRRegressor(FEAT, hidden_dim=64)
    x = features()
    assert not torch.allclose(model(x)["betas"], model(x)["betas"])
    model.eval()
    assert torch.equal(model(x)["betas"], model(x)["betas"])


# ---------------------------------------------------------------- encoders and build_model


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoders_pool_to_their_out_dim(name):
    encoder = build_encoder(name).eval()
    with torch.no_grad():
        feats = encoder(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, encoder.out_dim)


def test_encoder_loads_local_imagenet_weights_and_reports_bad_files(tmp_path):
    import torchvision

    source = torchvision.models.mobilenet_v3_small(weights=None)
    path = tmp_path / "mobilenet.pth"
    torch.save(source.state_dict(), path)
    encoder = build_encoder("mobilenet_v3_small", path)
    torch.testing.assert_close(encoder.backbone.features[0][0].weight, source.features[0][0].weight)
    torch.testing.assert_close(encoder.backbone.features[-1][1].running_var, source.features[-1][1].running_var)
    trunk_only = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    torch.save(trunk_only, tmp_path / "trunk.pth")
    build_encoder("mobilenet_v3_small", tmp_path / "trunk.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_encoder("mobilenet_v3_small", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="mobilenet.pth.*resnet18"):
        build_encoder("resnet18", path)
    trunk_only["features.0.0.weight"] = trunk_only["features.0.0.weight"][:8]
    torch.save(trunk_only, tmp_path / "wrong_shape.pth")
    with pytest.raises(ValueError, match="wrong_shape.pth.*mobilenet_v3_small"):
        build_encoder("mobilenet_v3_small", tmp_path / "wrong_shape.pth")
    with pytest.raises(ValueError, match="resnet18.*resnet50.*mobilenet_v3_large"):
        build_encoder("vgg16")


def test_build_model_builds_both_regressors_and_rejects_unknown_names():
    for regressor in ("hkmr", "hmr"):
        cfg = ModelConfig(encoder="resnet18", regressor=regressor, rotation="aa",
                          regressor_kwargs={"outer_iters": 2} if regressor == "hkmr" else {"iters": 2})
        model = build_model(cfg).eval()
        assert isinstance(model, MeshRegressor) and model.encoder.out_dim == 512
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 64))
        assert out["rotmat"].shape == (1, 2, 24, 3, 3)
    with pytest.raises(ValueError, match="hkmr, hmr"):
        build_model(ModelConfig(regressor="spin"))
    with pytest.raises(ValueError, match="resnet50"):
        build_model(ModelConfig(encoder="resnet51"))
    with pytest.raises(ValueError, match="aa, 6d"):
        build_model(ModelConfig(rotation="quat"))
    with pytest.raises(ValueError, match="joint_hierarchy"):
        build_model(ModelConfig(regressor_kwargs={"joint_hierachy": False}))
    with pytest.raises(ValueError, match="positive integer"):
        HKMRRegressor(FEAT, inner_iters=0)


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("rotation", ["aa", "6d"])
def test_hkmr_exports_to_onnx_and_onnxruntime_agrees(rotation):
    import onnxruntime as ort

    model = tiny_hkmr(rotation=rotation, inner_iters=2, outer_iters=2).eval()  # F, B passes; small graph
    names = ["rotmat", "pose", "betas", "cam"]
    buffer = io.BytesIO()
    torch.onnx.export(model, (features(batch=2),), buffer, input_names=["features"], output_names=names,
                      dynamic_axes={"features": {0: "batch"}}, opset_version=17, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = features(batch=5, seed=9)  # another batch size than the traced one
    with torch.no_grad():
        expected = model(x)
    for name, value in zip(names, session.run(names, {"features": x.numpy()})):
        np.testing.assert_allclose(value, expected[name].numpy(), atol=1e-4, rtol=0)
    assert math.isfinite(float(np.abs(value).sum()))


def test_forward_only_started_from_full_weights_keeps_the_forward_layers():
    full = tiny_hkmr(rotation="6d", inner_iters=1)  # one pass: a forward pass in both
    scale_joint_layers(full)
    ablated = tiny_hkmr(rotation="6d", inner_iters=1, backward_pass=False)
    ablated.load_state_dict(ablated.state_from_full(full.state_dict()))  # strict: nothing missing or left over
    assert not hasattr(ablated.child_chains, "backward_weights")
    features = torch.randn(3, FEAT, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ablated.forward_stepwise(features)["pose"], full.forward_stepwise(features)["pose"])


def test_iteration_counts_share_the_full_weights():
    full = tiny_hkmr(rotation="6d")
    fewer = tiny_hkmr(rotation="6d", inner_iters=2, outer_iters=1)
    fewer.load_state_dict(fewer.state_from_full(full.state_dict()))
    assert fewer.state_from_full(full.state_dict()).keys() == full.state_dict().keys()
