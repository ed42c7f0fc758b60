"""`hkmr-bag synth | process | eval` on a tiny rendered bag, in mcap and in sqlite3, and the
synthetic stream's ground truth: consistent with the images, the body model and the motion."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training import bag_synth  # imports the pose sampler before any EGL context
from hkmr_ros import bag_cli, bags, evaluation

TINY = ["--seconds", "2", "--fps", "3", "--width", "320", "--height", "240", "--people", "3", "--quiet"]


@pytest.fixture(scope="module")
def body_model():
    from training.body.body_model import load_body_model
    return load_body_model()


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_synth_process_eval(tmp_path, storage, capsys):
    gt = tmp_path / "synth"
    assert bag_cli.main(["synth", str(gt), "--storage", storage] + TINY) == 0
    text = capsys.readouterr().out
    assert "wrote 6 frames (320x240, 3 fps)" in text
    assert next(gt.glob("*.mcap" if storage == "mcap" else "*.db3"))
    with bags.BagReader(gt) as r:
        assert set(r.topics) == {"/camera/image_raw/compressed", "/camera/camera_info", "/ground_truth/people",
                                 "/detections"}
        assert set(r.message_counts().values()) == {6}
    out = tmp_path / ("out.db3" if storage == "sqlite3" else "out")
    assert bag_cli.main(["process", str(gt), str(out), "--quiet"]) == 0
    assert next(out.glob("*.db3" if storage == "sqlite3" else "*.mcap"))
    assert bag_cli.main(["eval", str(out), str(gt), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["frames"] == 6 and metrics["counted"] >= 6 and metrics["matched"] >= 1
    assert all(np.isfinite(metrics["metrics"][m]["mpjpe_mm"]) for m in evaluation.METHODS)


def test_raw_images_and_no_detections(tmp_path):
    gt = tmp_path / "raw"
    assert bag_cli.main(["synth", str(gt), "--raw", "--no-detections"] + TINY) == 0
    with bags.BagReader(gt) as r:
        assert r.topics["/camera/image_raw"] == bags.IMAGE and "/detections" not in r.topics
        img = next(r.messages(["/camera/image_raw"])).msg
    assert (img.encoding, img.width, img.height, img.step) == ("rgb8", 320, 240, 960)


def test_ground_truth_matches_images_and_motion(body_model):
    cfg = bag_synth.SceneConfig(width=320, height=240, fps=2, seconds=8.0, people=6)
    scene = bag_synth.SceneRenderer(body_model, cfg)
    frames = [scene.frame(i) for i in (0, 6, 12, 15)]
    counts = [len(f.people) for f in frames]
    assert counts[0] == 1 and counts[-1] >= 5  # one person at first, then they walk in
    cam = scene.camera
    rest_by_person = {}
    for f in frames:
        for p in f.people:
            px = bag_synth.project(p.joints, cam)
            inside = (px[:, 0] >= p.box[0] - 2) & (px[:, 0] <= p.box[2] + 2) & \
                     (px[:, 1] >= p.box[1] - 2) & (px[:, 1] <= p.box[3] + 2)
            assert inside[p.visible].all()  # visible joints project inside the person's box
            # joints are rigidly posed from the orientations: the rest skeleton is the same every frame
            rest = evaluation.rest_skeleton(p.joints.astype(np.float64), p.orientations)
            if p.person_id in rest_by_person:
                np.testing.assert_allclose(rest, rest_by_person[p.person_id], atol=2e-4)
            rest_by_person[p.person_id] = rest
            # upright: the head above the pelvis, the feet below it (y down in the image)
            assert p.joints[15, 1] < p.joints[0, 1] < p.joints[10, 1]
            # the weak-perspective camera maps the model joints near their true projection in the crop
            assert 0.3 < p.camera[0] < 3.0
    # the person walks where the script says, facing the way they walk
    w = scene.walkers[0]
    p0 = next(p for p in frames[0].people if p.person_id == 1)
    x, z = bag_synth.walker_position(w, 0.0)
    world = bag_synth.pitch_rotation(cfg.pitch).T @ p0.joints[0]
    assert abs(world[0] - x) < 1e-3 and abs(world[2] - z) < 1e-3
    toes = (p0.joints[10] + p0.joints[11] - p0.joints[7] - p0.joints[8]) / 2
    heading = bag_synth.walker_heading(w, 0.0)
    forward_world = bag_synth.pitch_rotation(cfg.pitch).T @ toes
    assert forward_world[0] * math.sin(heading) + forward_world[2] * math.cos(heading) > 0


def test_gait_moves_the_legs_and_is_deterministic(body_model):
    phases = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    poses = bag_synth.gait_pose(phases, np.ones(8), np.ones(8))
    left_hip = poses[:, 3:6]
    assert np.ptp(left_hip[:, 0]) > math.radians(30)  # the hip swings over the cycle
    still = bag_synth.gait_pose(phases, np.zeros(8), np.ones(8))
    assert np.ptp(still, axis=0).max() < 1e-6  # standing: no motion
    cfg = bag_synth.SceneConfig(width=160, height=120, fps=2, seconds=2.0, people=2)
    a = bag_synth.SceneRenderer(body_model, cfg).frame(3)
    b = bag_synth.SceneRenderer(body_model, cfg).frame(3)
    np.testing.assert_array_equal(a.image, b.image)
    assert [p.person_id for p in a.people] == [p.person_id for p in b.people]


def test_bad_scene_settings(body_model, tmp_path):
    with pytest.raises(ValueError, match="people"):
        bag_synth.SceneRenderer(body_model, bag_synth.SceneConfig(people=9))
    with pytest.raises(ValueError, match="fps"):
        bag_synth.SceneRenderer(body_model, bag_synth.SceneConfig(fps=0))
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "notes.txt").write_text("x")
    assert bag_cli.main(["synth", str(existing)] + TINY) == 1


def test_runtime_metrics_equal_the_training_metrics():
    """hkmr_ros.evaluation (numpy, runtime) computes what training.metrics computes."""
    from training import metrics
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(6, 24, 3))
    pred = gt + rng.normal(scale=0.1, size=gt.shape)
    np.testing.assert_allclose(evaluation.pa_mpjpe(pred, gt) / 1000, metrics.pa_mpjpe(pred, gt), rtol=1e-9)
    np.testing.assert_allclose(evaluation.mpjpe(pred, gt) / 1000, metrics.mpjpe(pred, gt, root=[0]), rtol=1e-9)
