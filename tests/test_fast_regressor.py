"""The collapsed HKMR regressor equals the straightforward joint-by-joint one (values and gradients)."""
import pytest
import torch

from training.models.hkmr_regressor import HKMRRegressor

FEAT = 24
EMBED = 16
ABLATIONS = [
    ("aa", {}),
    ("6d", {}),
    ("aa", {"backward_pass": False}),
    ("6d", {"backward_pass": False}),
    ("aa", {"joint_hierarchy": False}),
    ("6d", {"joint_hierarchy": False}),
    ("6d", {"joint_hierarchy": False, "backward_pass": False}),
    ("aa", {"inner_iters": 3, "outer_iters": 2}),  # odd pass count: ends on a forward pass
]
IDS = ["aa", "6d", "aa-forward-only", "6d-forward-only", "aa-no-hierarchy", "6d-no-hierarchy",
       "6d-neither", "aa-3-inner"]


def random_hkmr(rotation: str, seed: int = 0, std: float = 0.05, **kwargs) -> HKMRRegressor:
    """Random weights everywhere, joint layers far above the near-zero init so every term matters."""
    torch.manual_seed(seed)
    model = HKMRRegressor(FEAT, embed_dim=EMBED, hidden_dim=16, rotation=rotation, **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_weights." in name or "_biases." in name:
                p.normal_(0.0, std)
    return model


def features(batch: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, FEAT, generator=torch.Generator().manual_seed(seed))


def assert_outputs_close(a, b, atol=1e-5):
    for key in ("rotmat", "betas", "cam", "pose"):
        if key == "pose" and a[key].shape[-1] == 72 and "rotmat" in a:
            continue  # axis-angle from 6-D is compared through rotmat (v and -v near pi)
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("rotation,kwargs", ABLATIONS, ids=IDS)
def test_collapsed_equals_stepwise_and_the_chain_by_chain_reference(rotation, kwargs):
    model = random_hkmr(rotation, **kwargs)
    x = features()
    with torch.no_grad():
        stepwise = model.forward_stepwise(x)
        collapsed = model.forward(x)
        reference = model.forward_reference(x)
    assert_outputs_close(collapsed, stepwise)
    assert_outputs_close(collapsed, reference)
    if rotation == "aa":
        torch.testing.assert_close(collapsed["pose"], stepwise["pose"], atol=1e-5, rtol=0)
    # the test means something: the joint layers move the pose far from the mean, per image
    assert (stepwise["rotmat"][:, -1] - stepwise["rotmat"][:1, -1]).abs().max() > 0.05


@pytest.mark.parametrize("rotation,kwargs", ABLATIONS[:2] + ABLATIONS[4:5], ids=IDS[:2] + IDS[4:5])
def test_collapsed_gradients_equal_stepwise_gradients(rotation, kwargs):
    model = random_hkmr(rotation, **kwargs)
    x = features(batch=3)
    grads = []
    for forward in (model.forward_stepwise, model.forward):
        model.zero_grad()
        out = forward(x)
        loss = sum((out[k] - 0.1).square().mean() for k in ("rotmat", "betas", "cam"))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_training_and_eval_mode_use_the_collapsed_passes(monkeypatch):
    model = random_hkmr("6d")
    calls = []
    original = model.root_chain.collapsed_pass

    def spy(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model.root_chain, "collapsed_pass", spy)
    x = features()
    model.train()
    model(x)
    assert set(calls) == {False, True}
    calls.clear()
    model.eval()
    with torch.no_grad():
        model(x)
    assert set(calls) == {False, True}
    calls.clear()
    model.forward_stepwise(x)
    assert calls == []


def test_cached_pass_matrices_follow_parameter_changes():
    model = random_hkmr("aa").eval()
    x = features()
    with torch.no_grad():
        before = model(x)["pose"]
        again = model(x)["pose"]  # from the cache
        torch.testing.assert_close(again, before, atol=0, rtol=0)
        model.root_chain.forward_weights[1].add_(0.2)  # in place, as an optimiser step
        after = model(x)["pose"]
        expected = model.forward_stepwise(x)["pose"]
        assert (after - before).abs().max() > 1e-3
        torch.testing.assert_close(after, expected, atol=1e-5, rtol=0)
        for p in (model.shape_net[0].weight, model.camera_net[0].bias, model.child_chains.phi_weight):
            p.add_(0.1)  # the cached head and feature-projection matrices follow too
            out, expected = model(x), model.forward_stepwise(x)
            for key in ("pose", "betas", "cam"):
                torch.testing.assert_close(out[key], expected[key], atol=1e-5, rtol=0)


def test_final_estimate_is_the_last_outer_iteration():
    model = random_hkmr("6d").eval()
    x = features()
    with torch.no_grad():
        full = model(x)
        final = model.final_estimate(x)
    assert final["pose_state"].shape == (5, 24, 6)
    torch.testing.assert_close(final["betas"], full["betas"][:, -1], atol=0, rtol=0)
    torch.testing.assert_close(final["cam"], full["cam"][:, -1], atol=0, rtol=0)
    from training.models.mean_params import state_to_rotmat

    torch.testing.assert_close(state_to_rotmat(final["pose_state"], "6d"), full["rotmat"][:, -1], atol=0, rtol=0)


def test_a_pass_is_one_affine_map_of_psi():
    """collapsed_pass gives exactly what the joint-by-joint pass adds to theta, padding and order included."""
    model = random_hkmr("aa")
    group = model.child_chains
    psi = torch.randn(5, 4, EMBED)
    for backward in (False, True):
        updates = group.pass_updates(psi, backward, group.length)  # CxBxKxR, pass order
        if backward:
            updates = torch.matmul(group.reverse, updates)
        updates = updates * group.mask
        mat, offset = group.collapsed_pass(backward, reverse=group.reverse, mask=group.mask)
        assert mat.shape == (5, EMBED, group.length * 3) and offset.shape == (5, 1, group.length * 3)
        torch.testing.assert_close(torch.baddbmm(offset, psi, mat), updates.flatten(2), atol=1e-5, rtol=0)
