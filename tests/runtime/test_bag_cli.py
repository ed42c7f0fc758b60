"""`hkmr-bag process` and `eval` on the committed sample bag with the shipped ONNX model (no torch),
in mcap and sqlite3; the evaluation maths; faults: missing topics, corrupt bags, undecodable
frames, an estimator failing mid-way, the training extras missing for `synth`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hkmr_ros import bag_cli, bags, evaluation
from hkmr_ros.skeleton import NUM_JOINTS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "hkmr_ros" / "data" / "sample" / "people"
OUT_TOPICS = {bag_cli.OUT_PEOPLE_TOPIC: bags.PERSON_MESH_ARRAY, bag_cli.OUT_MARKERS_TOPIC: bags.MARKER_ARRAY,
              bag_cli.OUT_OVERLAY_TOPIC: bags.COMPRESSED_IMAGE, "/camera/camera_info": bags.CAMERA_INFO}


@pytest.fixture(scope="module")
def estimator():
    from hkmr_ros.inference import load_estimator
    return load_estimator(None, backend="onnxruntime", threads=1)


def _copy_frames(src: Path, dst: Path, storage: str, frames: int) -> Path:
    """The first `frames` frames of every topic of `src` into a new bag (raw CDR copy)."""
    with bags.BagReader(src) as r, bags.BagWriter(dst, storage=storage) as w:
        seen = {}
        for topic, msgtype, t, data in r.raw_messages():
            seen[topic] = seen.get(topic, 0) + 1
            if seen[topic] <= frames:
                w.write_raw(topic, msgtype, t, data)
    return dst


def test_process_and_eval_sample_bag_mcap(tmp_path, estimator, monkeypatch, capsys):
    """The main job's path: process the sample bag with the default network, then evaluate."""
    out = tmp_path / "out"
    monkeypatch.setattr("hkmr_ros.inference.load_estimator", lambda *a, **k: estimator)
    rc = bag_cli.main(["process", str(SAMPLE), str(out), "--max-frames", "60", "--quiet",
                       "--summary-json", str(tmp_path / "summary.json")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "processed 60 of 60 frames" in text and "upstream /detections" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 60 and summary["skipped_frames"] == 0 and summary["people"] > 70
    with bags.BagReader(out) as r:
        assert r.topics == OUT_TOPICS
        assert set(r.message_counts().values()) == {60}
        arrays = [m.msg for m in r.messages([bag_cli.OUT_PEOPLE_TOPIC])]
        markers = [m.msg for m in r.messages([bag_cli.OUT_MARKERS_TOPIC])]
        overlay = next(r.messages([bag_cli.OUT_OVERLAY_TOPIC])).msg
    assert arrays[0].header.frame_id == "camera_optical_frame"
    assert any(len(a.people) >= 3 for a in arrays)
    assert all(m.header.frame_id == "camera_optical_frame" for a in markers for m in a.markers)
    img = cv2.imdecode(np.asarray(overlay.data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    import yaml
    custom = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    assert custom["hkmr.model"] == "hkmr_default.onnx" and custom["hkmr.boxes"] == "/detections"
    assert custom["hkmr.source_bag"] == "people" and custom["hkmr.backend"] == "onnxruntime"
    # the overlay video and the contact sheet
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 60
    sheet = cv2.imread(str(tmp_path / "out_contact_sheet.png"))
    assert sheet is not None and sheet.shape[1] == 4 * 320

    rc = bag_cli.main(["eval", str(out), str(SAMPLE), "--out", str(tmp_path / "eval")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "HKMR (this run)" in text and "constant mean skeleton" in text and "rest pose" in text
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["frames"] == 60 and metrics["frames_outside_results"] == 60
    assert metrics["matched"] > 0.3 * metrics["counted"]
    net, rest = metrics["metrics"]["network"], metrics["metrics"]["rest_pose"]
    assert 0 < net["pa_mpjpe_mm"] < rest["pa_mpjpe_mm"]  # the network beats a T-pose
    assert (tmp_path / "eval" / "metrics.md").read_text().startswith("| method |")
    assert len((tmp_path / "eval" / "per_frame.csv").read_text().splitlines()) == 61


def test_output_bag_decodes_with_the_mcap_package(tmp_path, estimator):
    reader_mod = pytest.importorskip("mcap.reader")
    decoder = pytest.importorskip("mcap_ros2.decoder")
    out = tmp_path / "out"
    bag_cli.process_bag(SAMPLE, out, estimator=estimator, max_frames=5, progress=False)
    topics = {}
    with open(next(out.glob("*.mcap")), "rb") as f:
        for schema, channel, _, msg in reader_mod.make_reader(
                f, decoder_factories=[decoder.DecoderFactory()]).iter_decoded_messages():
            assert schema.name == OUT_TOPICS[channel.topic] and schema.encoding == "ros2msg"
            topics.setdefault(channel.topic, []).append(msg)
    assert {t: len(v) for t, v in topics.items()} == {t: 5 for t in OUT_TOPICS}
    person = next(p for a in topics[bag_cli.OUT_PEOPLE_TOPIC] for p in a.people)
    assert len(person.joints) == 24 and len(person.joint_orientations) == 24 and person.body_model
    assert topics[bag_cli.OUT_MARKERS_TOPIC][0].markers[0].ns == "hkmr"


def test_process_and_eval_sqlite3(tmp_path, estimator):
    src = _copy_frames(SAMPLE, tmp_path / "in_db", "sqlite3", 12)
    assert next(src.glob("*.db3"))
    out = tmp_path / "out_db"
    summary = bag_cli.process_bag(src, out, estimator=estimator, storage="sqlite3", progress=False,
                                  video=tmp_path / "v.mp4", contact_sheet=tmp_path / "s.png")
    assert summary.frames == 12 and summary.video and summary.contact_sheet
    assert next(out.glob("*.db3"))
    results, _, _ = evaluation.read_people(out)
    truth, topic, _ = evaluation.read_people(src, None, evaluation.GT_TOPIC)
    assert topic == evaluation.GT_TOPIC and len(results) == len(truth) == 12
    report = evaluation.evaluate(results, truth)
    assert report.frames == 12 and report.matched > 0
    assert np.isfinite(report.metrics["network"]["mpjpe_mm"])


def test_embedded_detector_path(tmp_path, estimator):
    """Without upstream detections the embedded detector (or a whole-image box when OpenCV has no
    HOG) supplies the boxes; frames are never dropped offline."""
    detector = "hog" if hasattr(cv2, "HOGDescriptor") else "whole_image"
    out = tmp_path / "out"
    s = bag_cli.process_bag(SAMPLE, out, estimator=estimator, detections_topic="none", detector=detector,
                            max_frames=6, progress=False)
    assert s.detections_topic is None and s.detector == detector and s.frames == 6
    assert s.detector_runs >= 1


def test_missing_topic_lists_the_topics(tmp_path, capsys):
    out = tmp_path / "out"
    rc = bag_cli.main(["process", str(SAMPLE), str(out), "--image-topic", "/camera/color/image_raw", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "/camera/color/image_raw" in err and "/camera/image_raw/compressed" in err and "/ground_truth/people" in err
    assert not out.exists()
    rc = bag_cli.main(["process", str(SAMPLE), str(out), "--detections-topic", "/yolo", "--quiet"])
    assert rc == 1 and "/yolo" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"\x89MCAP0\r\n" + bytes(100), b"not a bag at all" * 50])
def test_corrupt_input_bag_is_a_clear_error(tmp_path, capsys, content):
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(content)
    rc = bag_cli.main(["process", str(bad), str(tmp_path / "out"), "--quiet"])
    assert rc == 1 and "bad.mcap" in capsys.readouterr().err
    rc = bag_cli.main(["process", str(tmp_path / "nothing"), str(tmp_path / "out"), "--quiet"])
    assert rc == 1 and "not found" in capsys.readouterr().err


def test_undecodable_frames_are_counted_skips(tmp_path, estimator):
    """Garbage JPEG bytes, an unknown compressed format, a raw image with an unknown encoding and a
    message cut short are skipped and counted; the good frames around them are processed."""
    with bags.BagReader(SAMPLE) as r:
        good = [m.msg for m, _ in zip(r.messages(["/camera/image_raw/compressed"]), range(4))]
    src = tmp_path / "in"
    with bags.BagWriter(src) as w:
        types = w.types
        t0 = bags.stamp_to_ns(good[0].header.stamp)
        stamps = [t0 + i * 10**8 for i in range(8)]

        def jpeg(i, data, fmt="jpeg"):
            return types[bags.COMPRESSED_IMAGE](header=bags.header(types, stamps[i], "cam"), format=fmt,
                                                data=np.frombuffer(data, np.uint8).copy())
        w.write("/img", stamps[0], jpeg(0, bytes(good[0].data)))
        w.write("/img", stamps[1], jpeg(1, b"\xff\xd8\xff garbage, not a jpeg"))
        w.write("/img", stamps[2], jpeg(2, bytes(good[1].data)))
        w.write("/img", stamps[3], jpeg(3, bytes(good[2].data), fmt="webp2; exotic"))
        w.write("/img", stamps[4], jpeg(4, bytes(good[2].data)[:4000]))  # truncated JPEG
        cut = w.typestore.serialize_cdr(jpeg(5, bytes(good[3].data)), bags.COMPRESSED_IMAGE)
        w.write_raw("/img", bags.COMPRESSED_IMAGE, stamps[5], cut[:50])  # CDR cut short
        w.write("/img", stamps[6], jpeg(6, bytes(good[3].data)))
    s = bag_cli.process_bag(src, tmp_path / "out", estimator=estimator, detector="whole_image", progress=False)
    assert s.undecodable_messages == 1
    assert s.frames + s.skipped_frames == 6
    assert 3 <= s.frames <= 4 and s.skipped_frames >= 2  # a cut JPEG may still decode (partly grey)
    assert s.skip_reasons
    with bags.BagReader(tmp_path / "out") as r:
        assert r.message_counts()[bag_cli.OUT_PEOPLE_TOPIC] == s.frames

    raw = tmp_path / "raw"
    with bags.BagWriter(raw) as w:
        img = np.zeros((48, 64, 3), np.uint8)
        msg = bags.raw_image(w.types, img, t0, "cam")
        msg.encoding = "bayer_gggg42"
        w.write("/raw", t0, msg)
        w.write("/raw", t0 + 1, bags.raw_image(w.types, img, t0 + 1, "cam"))
    s = bag_cli.process_bag(raw, tmp_path / "out_raw", estimator=estimator, detector="whole_image",
                            progress=False)
    assert s.frames == 1 and s.skipped_frames == 1 and s.camera_info_topic is None
    assert any("bayer_gggg42" in k or "encoding" in k.lower() for k in s.skip_reasons), s.skip_reasons


class _FailingEstimator:
    """The real estimator, until call `fail_at` raises (a fault in the middle of a run)."""

    def __init__(self, real, fail_at: int):
        self.real, self.fail_at, self.calls = real, fail_at, 0
        self.backend_name, self.body_model_name = real.backend_name, real.body_model_name
        self.faces, self.marker_faces, self.image_size = real.faces, real.marker_faces, real.image_size

    def estimate(self, crops):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("simulated inference fault")
        return self.real.estimate(crops)


def test_a_fault_mid_run_leaves_a_readable_output(tmp_path, estimator):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        bag_cli.process_bag(SAMPLE, out, estimator=_FailingEstimator(estimator, 6), progress=False,
                            video=tmp_path / "v.mp4", contact_sheet=tmp_path / "s.png")
    with bags.BagReader(out) as r:
        assert not r.truncated
        assert r.message_counts()[bag_cli.OUT_PEOPLE_TOPIC] == 5
        assert len(list(r.messages([bag_cli.OUT_PEOPLE_TOPIC]))) == 5
    assert (tmp_path / "v.mp4").stat().st_size > 0


def test_synth_without_training_extras_is_a_clear_error(monkeypatch, capsys, tmp_path):
    # the import fails like a missing extra, also where the training code was imported before
    monkeypatch.setitem(sys.modules, "training", None)
    monkeypatch.setitem(sys.modules, "training.bag_synth", None)
    rc = bag_cli.main(["synth", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "training extras" in err and "pip install" in err
    assert not (tmp_path / "x").exists()


def test_eval_needs_person_arrays(tmp_path, capsys):
    plain = tmp_path / "plain"
    with bags.BagWriter(plain) as w:
        w.write("/camera/camera_info", 1, bags.camera_info(w.types, np.eye(3), 64, 48, 1, "cam"))
    rc = bag_cli.main(["eval", str(plain), str(SAMPLE)])
    err = capsys.readouterr().err
    assert rc == 1 and "PersonMeshArray" in err and "/camera/camera_info" in err


def test_help_describes_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        bag_cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "synth" in text and "process" in text and "eval" in text
    with pytest.raises(SystemExit):
        bag_cli.main(["process", "--help"])
    assert "--image-topic" in capsys.readouterr().out


# ------------------------------------------------------------------------------ evaluation maths

def _record(tid, joints, box=(100, 100, 200, 400), conf=1.0, orientations=None):
    q = np.tile([0.0, 0.0, 0.0, 1.0], (NUM_JOINTS, 1)) if orientations is None else orientations
    return evaluation.PersonRecord(tid, 1.0, np.asarray(box, float), np.asarray(joints, float), q,
                                   np.full(NUM_JOINTS, conf))


def _skeleton(seed):
    return np.random.default_rng(seed).normal(0, 0.3, (NUM_JOINTS, 3)) + [0, 0, 4]


def test_mpjpe_and_pa_mpjpe_known_values():
    gt = np.stack([_skeleton(i) for i in range(3)])
    shifted = gt + [0.5, -0.2, 1.0]  # translation only: pelvis alignment removes it
    np.testing.assert_allclose(evaluation.mpjpe(shifted, gt), 0, atol=1e-9)
    offset = gt.copy()
    offset[:, 1:] += [0.0, 0.01, 0.0]  # every joint but the pelvis 10 mm off
    np.testing.assert_allclose(evaluation.mpjpe(offset, gt), 10.0 * 23 / 24, rtol=1e-9)
    c, s = np.cos(0.7), np.sin(0.7)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    similar = 1.3 * (gt - gt.mean(1, keepdims=True)) @ rot.T + 2.0
    assert np.all(evaluation.mpjpe(similar, gt) > 50)
    np.testing.assert_allclose(evaluation.pa_mpjpe(similar, gt), 0, atol=1e-6)
    mirrored = gt * [-1, 1, 1]  # a reflection is not a rotation: PA must not undo it
    assert np.all(evaluation.pa_mpjpe(mirrored, gt) > 1)


def test_matching_recall_precision_and_id_switches():
    truth, results = {}, {}
    for f in range(6):
        a, b = _skeleton(f), _skeleton(f + 100)
        truth[f] = [_record(1, a, (0, 0, 100, 300)), _record(2, b, (300, 0, 400, 300)),
                    _record(3, b, (500, 0, 600, 300), conf=0.2)]  # mostly hidden: does not count
        # tracks 7 and 8 swap people at frame 3; a false positive in frame 5; person 2 missed in frame 4
        ids = (7, 8) if f < 3 else (8, 7)
        results[f] = [_record(ids[0], a + [0, 0, 0.1], (2, 0, 100, 300)), _record(ids[1], b, (300, 5, 400, 300)),
                      _record(9, b, (500, 0, 600, 300))]  # matched to the hidden one: ignored
        if f == 4:
            results[f].pop(1)
        if f == 5:
            results[f].append(_record(10, a, (200, 200, 260, 260)))
    report = evaluation.evaluate(results, truth, iou=0.5, min_visible=0.5)
    assert report.counted == 12 and report.matched == 11
    assert report.recall == pytest.approx(11 / 12)
    assert report.precision == pytest.approx(11 / 12)  # one false positive; the ignored match not counted
    assert report.id_switches == 2
    assert report.metrics["network"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert report.pelvis_error_mm == pytest.approx(100.0 * 6 / 11)
    assert report.metrics["mean_skeleton"]["mpjpe_mm"] > 10 and report.metrics["rest_pose"]["mpjpe_mm"] > 10
    md = evaluation.markdown_table(report)
    assert "| 6 | 18 | 12 | 11 | 0.917 | 0.917 | 2 |" in md


def test_rest_skeleton_undoes_the_pose():
    """Posed joints from known global rotations -> the rest skeleton they came from."""
    from hkmr_ros.skeleton import SMPL_PARENTS
    rng = np.random.default_rng(0)
    rest = rng.normal(0, 0.2, (NUM_JOINTS, 3))
    rest -= rest[0]
    rot = []
    for _ in range(NUM_JOINTS):
        q = rng.normal(size=4)
        rot.append(q / np.linalg.norm(q))
    quats = np.array(rot)
    g = evaluation.quaternion_matrices(quats)
    posed = np.zeros_like(rest)
    for j in range(1, NUM_JOINTS):
        p = SMPL_PARENTS[j]
        posed[j] = posed[p] + g[p] @ (rest[j] - rest[p])
    np.testing.assert_allclose(evaluation.rest_skeleton(posed + 3.0, quats), rest, atol=1e-9)


def test_eval_reports_without_matplotlib(tmp_path, monkeypatch):
    truth = {0: [_record(1, _skeleton(0))]}
    report = evaluation.evaluate(truth, truth)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    paths = evaluation.write_reports(report, tmp_path)
    assert "plot" not in paths and paths["markdown"].exists() and paths["json"].exists()


class _SlowEstimator(_FailingEstimator):
    """The real estimator, 0.2 s slower per batch (a robot's overloaded CPU)."""

    def __init__(self, real):
        super().__init__(real, fail_at=10**9)

    def estimate(self, crops):
        import time
        time.sleep(0.2)
        return self.real.estimate(crops)


def test_realtime_replay_drops_stale_frames(tmp_path, estimator):
    """--realtime feeds the images at their recorded pace (15 frames/s) into the newest-frame
    worker: with 0.2 s per frame most frames are dropped, none queues, latency stays bounded."""
    s = bag_cli.process_bag(SAMPLE, tmp_path / "out", estimator=_SlowEstimator(estimator), max_frames=15,
                            realtime=1.0, progress=False, contact_sheet=tmp_path / "s.png")
    assert s.dropped_frames >= 5 and s.frames >= 3
    assert s.frames + s.dropped_frames + s.skipped_frames == 15
    assert s.latency_ms["max"] < 2000.0  # one frame in progress plus the newest waiting (a queue: ~2.8 s)
    with bags.BagReader(tmp_path / "out") as r:
        assert r.message_counts()[bag_cli.OUT_PEOPLE_TOPIC] == s.frames
    assert s.contact_sheet is not None
    with pytest.raises(ValueError, match="realtime"):
        bag_cli.process_bag(SAMPLE, tmp_path / "out2", estimator=estimator, realtime=0.0, progress=False)
