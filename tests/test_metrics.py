"""MPJPE / PA-MPJPE against hand-computed values and scipy's Procrustes."""
import numpy as np
import pytest
import torch
from scipy.spatial import procrustes
from scipy.spatial.transform import Rotation

from training.metrics import (M_TO_MM, joint_errors, mpjpe, pa_mpjpe, per_joint_errors,
                              procrustes_align, root_align)


def _skeletons(b=4, j=17, seed=0):
    return np.random.default_rng(seed).normal(scale=0.3, size=(b, j, 3))


def _similarity(x, seed=1):
    """A random rotation, scale and translation of each sample of `x` BxJx3."""
    rng = np.random.default_rng(seed)
    rots = Rotation.random(len(x), random_state=seed).as_matrix()
    scales = rng.uniform(0.5, 2.0, size=(len(x), 1, 1))
    shifts = rng.normal(size=(len(x), 1, 3))
    return scales * x @ rots.transpose(0, 2, 1) + shifts


def test_translated_copy_has_zero_error_after_root_alignment():
    gt = _skeletons()
    pred = gt + np.array([0.1, -2.0, 3.0])
    assert np.allclose(mpjpe(pred, gt, root="h36m17"), 0.0, atol=1e-12)
    assert np.allclose(mpjpe(pred[:, :14], gt[:, :14], root="lsp14"), 0.0, atol=1e-12)
    # without alignment the translation is the error
    assert np.allclose(mpjpe(pred, gt, root=None), np.linalg.norm([0.1, -2.0, 3.0]))


def test_offset_on_one_joint_gives_exact_mean():
    gt = _skeletons(b=2)
    pred = gt.copy()
    pred[:, 5] += [0.03, 0.04, 0.0]  # 5 cm on one non-root joint
    assert np.allclose(mpjpe(pred, gt), 0.05 / 17)
    errs = per_joint_errors(pred, gt)
    assert errs.shape == (2, 17)
    assert np.allclose(errs[:, 5], 0.05) and np.allclose(np.delete(errs, 5, axis=1), 0.0)
    # moving the pelvis (h36m17 root) shifts the 16 others by the same 5 cm relative to it
    pred = gt.copy()
    pred[:, 0] += [0.0, 0.03, 0.04]
    assert np.allclose(mpjpe(pred, gt), 16 * 0.05 / 17)
    # LSP-14: moving one hip moves the root (hips' midpoint) by half: every joint is off by 2.5 cm
    gt14, pred14 = gt[:, :14], gt[:, :14].copy()
    pred14[:, 2] += [0.03, 0.04, 0.0]
    assert np.allclose(per_joint_errors(pred14, gt14, root="lsp14"), 0.025)


def test_similarity_copy_has_zero_pa_mpjpe_but_not_mpjpe():
    gt = _skeletons()
    pred = _similarity(gt)
    assert np.all(mpjpe(pred, gt) > 0.01)
    assert np.allclose(pa_mpjpe(pred, gt), 0.0, atol=1e-9)
    assert np.allclose(procrustes_align(pred, gt), gt, atol=1e-9)


def test_torch_matches_numpy_and_batch_matches_loop():
    gt = _skeletons(b=5, seed=3)
    pred = gt + np.random.default_rng(4).normal(scale=0.05, size=gt.shape)
    for fn in (mpjpe, pa_mpjpe):
        ref = fn(pred, gt)
        got = fn(torch.from_numpy(pred), torch.from_numpy(gt))
        assert isinstance(got, torch.Tensor) and got.shape == (5,)
        assert np.allclose(got.numpy(), ref, atol=1e-12)
        loop = np.array([fn(pred[i:i + 1], gt[i:i + 1])[0] for i in range(5)])
        assert np.allclose(loop, ref, atol=1e-12)
    # float32 tensors stay float32
    assert pa_mpjpe(torch.from_numpy(pred).float(), torch.from_numpy(gt).float()).dtype == torch.float32


def test_procrustes_matches_scipy_on_random_data():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(20):
        gt, pred = rng.normal(size=(17, 3)), rng.normal(size=(17, 3))
        g0, p0 = gt - gt.mean(0), pred - pred.mean(0)
        u, _, vh = np.linalg.svd(p0.T @ g0)
        if np.linalg.det(u @ vh) < 0:
            continue  # scipy would reflect here; that case has its own test
        mtx1, mtx2, disparity = procrustes(gt, pred)
        aligned = procrustes_align(pred[None], gt[None])[0]
        standardised = (aligned - gt.mean(0)) / np.linalg.norm(g0)
        assert np.allclose(standardised, mtx2, atol=1e-10)
        assert np.isclose(((standardised - mtx1) ** 2).sum(), disparity)
        checked += 1
    assert checked >= 5


def test_reflection_is_not_used_to_explain_a_mirrored_pose():
    gt = _skeletons(b=1, seed=7)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a left/right mirror image: no rotation reaches it
    # scipy's orthogonal Procrustes allows reflections and explains the mirror away entirely
    assert procrustes(gt[0], mirrored[0])[2] < 1e-20
    # ours keeps a proper rotation: the mirror stays an error
    assert pa_mpjpe(mirrored, gt)[0] > 0.05
    # and it is the best proper similarity: the same as Kabsch (scipy's align_vectors) + optimal scale
    g0, p0 = gt[0] - gt[0].mean(0), mirrored[0] - mirrored[0].mean(0)
    rot, _ = Rotation.align_vectors(g0, p0)
    rotated = rot.apply(p0)
    scale = (rotated * g0).sum() / (p0 ** 2).sum()
    expected = scale * rotated + gt[0].mean(0)
    assert np.allclose(procrustes_align(mirrored, gt)[0], expected, atol=1e-9)


def test_mask_excludes_joints_without_ground_truth():
    gt = _skeletons(b=2)
    pred = _similarity(gt)
    pred[:, 9] += 5.0  # a wild joint whose ground truth is missing
    mask = np.ones((2, 17), dtype=bool)
    mask[:, 9] = False
    assert np.allclose(pa_mpjpe(pred, gt, mask=mask), 0.0, atol=1e-9)
    assert np.all(pa_mpjpe(pred, gt) > 0.1)
    # root-aligned: one joint off by 5 cm, masked -> 0; torch bool masks work the same
    pred = gt.copy()
    pred[:, 9] += [0.0, 0.0, 0.05]
    assert np.allclose(mpjpe(pred, gt, mask=mask), 0.0)
    assert np.allclose(mpjpe(torch.tensor(pred), torch.tensor(gt), mask=torch.tensor(mask)).numpy(), 0.0)
    assert np.allclose(mpjpe(pred, gt, mask=~mask), 0.05)


def test_units_and_helpers():
    gt = _skeletons(b=1)
    pred = gt.copy()
    pred[:, 3] += [0.017, 0.0, 0.0]
    assert np.allclose(joint_errors(pred, gt)[0, 3], 0.017)
    assert np.isclose(M_TO_MM * mpjpe(pred, gt)[0], 1.0)  # 17 mm on one of 17 joints
    assert np.allclose(root_align(gt, (0,))[:, 0], 0.0)
    with pytest.raises(ValueError, match="h36m17"):
        mpjpe(pred, gt, root="coco")
