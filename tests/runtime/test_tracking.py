"""Tracking: stable ids, the detector only when needed, crops from the last joints, lost tracks end."""
import numpy as np
import pytest

from hkmr_ros.detection import DetectionBuffer, box_iou, detections_from_msg
from hkmr_ros.people import Detection
from hkmr_ros.pipeline import Pipeline, PipelineConfig
from hkmr_ros.tracking import TrackingConfig, joints_box

from pipeline_fakes import FakeEstimator, ListDetector, draw_people, gt_box, person_joints_2d

FRAME_NS = 33_333_333


def _scene(f, people):
    """people: list of (x0, y0, vx, vy, height, colour) -> (image, [(center, height, colour)])."""
    now = [((x + vx * f, y + vy * f), h, c) for x, y, vx, vy, h, c in people]
    return draw_people(now), now


def _match_ids(result, now):
    """track id per ground-truth person (None when nobody matches its box)."""
    ids = []
    for center, h, _ in now:
        g = gt_box(center, h)
        best = [(box_iou(g, p.box)[0, 0], p.track_id) for p in result.people]
        best = max(best, default=(0, None))
        ids.append(best[1] if best[0] > 0.4 else None)
    return ids


def _pipe(detector, **tracking):
    cfg = PipelineConfig(detector="none", tracking=TrackingConfig(**tracking))
    return Pipeline(FakeEstimator(), cfg, detector=detector)


def test_ids_stable_for_three_walking_people_and_detector_every_n():
    people = [(110, 240, 3, 0, 250, 0), (330, 250, 0, 1, 230, 1), (540, 230, -3, 0, 260, 2)]
    frame = {"f": 0}
    det = ListDetector(lambda call: [gt_box(c, h) for c, h, _ in _scene(frame["f"], people)[1]])
    pipe = _pipe(det, detect_every=10)
    seen = []
    for f in range(40):
        frame["f"] = f
        img, now = _scene(f, people)
        r = pipe.process(img, f * FRAME_NS, "cam")
        ids = _match_ids(r, now)
        assert None not in ids, f"frame {f}: somebody lost ({ids})"
        seen.append(ids)
        # the predicted joints follow the person between detections
        for p, (c, h, _) in zip(sorted(r.people, key=lambda p: p.track_id), now):
            assert np.abs(p.joints_2d - person_joints_2d(c, h)).max() < 0.12 * h
    assert all(s == seen[0] for s in seen) and len(set(seen[0])) == 3
    assert det.calls == 4                       # frames 0, 10, 20, 30 only
    assert pipe.estimator.calls == 40           # one batch per frame


@pytest.mark.parametrize("red_in_front", [True, False])
def test_ids_survive_people_passing_each_other(red_in_front):
    """Red walks right, green left; they overlap around frame 20 and one hides the other
    (the fake estimator, like the network, then fits the one in front)."""
    red, green = (150, 250, 10, 0, 260, 0), (500, 230, -8, 0, 220, 1)
    people = [green, red] if red_in_front else [red, green]     # drawn in this order
    frame = {"f": 0}
    det = ListDetector(lambda call: [gt_box(c, h) for c, h, _ in _scene(frame["f"], people)[1]])
    pipe = _pipe(det, detect_every=5)
    first, last = None, None
    for f in range(38):
        frame["f"] = f
        img, now = _scene(f, people)
        # draw the nearer (larger) person last, so it occludes the other
        r = pipe.process(img, f * FRAME_NS, "cam")
        ids = _match_ids(r, now)
        if f == 0:
            first = ids
        if f == 37:
            last = ids
    assert first == last and None not in first


def test_lost_track_ends_and_triggers_the_detector():
    people = [(560, 240, 14, 0, 240, 0)]           # walks out of the right edge
    frame = {"f": 0}
    det = ListDetector(lambda call: [gt_box(c, h) for c, h, _ in _scene(frame["f"], people)[1]
                                     if c[0] < 600])
    pipe = _pipe(det, detect_every=1000)
    ended_at = None
    for f in range(20):
        frame["f"] = f
        img, _ = _scene(f, people)
        r = pipe.process(img, f * FRAME_NS, "cam")
        if r.ended_track_ids:
            ended_at = f
            assert r.ended_track_ids == [1]
            break
    assert ended_at is not None and ended_at > 2
    calls = det.calls
    frame["f"] = ended_at + 1
    r = pipe.process(_scene(ended_at + 1, people)[0], (ended_at + 1) * FRAME_NS, "cam")
    assert det.calls == calls + 1 and r.detector_ran      # no tracks left: look again
    assert sum(pipe.stats["track_end_reasons"].values()) == 1
    assert set(pipe.stats["track_end_reasons"]) <= {"left_image", "scale_jump"}


def test_newcomer_found_at_next_periodic_detection():
    a = (200, 240, 0, 0, 250, 0)
    b = (450, 240, 0, 0, 250, 1)
    frame = {"f": 0}
    def boxes(call):
        ps = [a] if frame["f"] < 3 else [a, b]
        return [gt_box(c, h) for c, h, _ in _scene(frame["f"], ps)[1]]
    det = ListDetector(boxes)
    pipe = _pipe(det, detect_every=6)
    counts = []
    for f in range(8):
        frame["f"] = f
        img, _ = _scene(f, [a] if f < 3 else [a, b])
        counts.append(len(pipe.process(img, f * FRAME_NS, "cam").people))
    assert counts == [1, 1, 1, 1, 1, 1, 2, 2]      # b appears at frame 3, seen at detection frame 6


def test_unconfirmed_track_ends_after_max_unconfirmed_detector_runs():
    img = draw_people([((320, 240), 250, 0)])
    det = ListDetector(lambda call: [gt_box((320, 240), 250)] if call == 0 else [])
    pipe = _pipe(det, detect_every=2, max_unconfirmed=3)
    alive = []
    for f in range(12):
        r = pipe.process(img, f * FRAME_NS, "cam")
        alive.append(len(r.people))
    # detector runs at frames 0, 2, 4, 6: misses at 2, 4 and the third miss (6) ends the track
    assert alive[:6] == [1] * 6 and alive[6] == 0
    assert pipe.stats["track_end_reasons"] == {"unconfirmed": 1}


def test_max_people_and_tracking_off():
    people = [((80 + 100 * i, 240), 200, i) for i in range(6)]
    img = draw_people(people)
    dets = [Detection(gt_box(c, h), 0.5 + 0.05 * i) for i, (c, h, _) in enumerate(people)]
    pipe = Pipeline(FakeEstimator(), PipelineConfig(detector="none", max_people=3))
    r = pipe.process(img, 0, "cam", detections=dets)
    assert len(r.people) == 3
    assert sorted(round(p.score, 2) for p in r.people) == [0.65, 0.7, 0.75]    # the best three
    off = Pipeline(FakeEstimator(), PipelineConfig(detector="none", tracking=TrackingConfig(enabled=False)))
    r = off.process(img, 0, "cam", detections=dets)
    assert len(r.people) == 6 and {p.track_id for p in r.people} == {0}


def test_duplicate_tracks_merge():
    img = draw_people([((320, 240), 250, 0)])
    box = gt_box((320, 240), 250)
    pipe = _pipe(None)
    # two detections on one figure, too different to be taken for one box (IoU 0.44 < 0.5):
    # two tracks; cropped from their joints next frame, both land on the figure: one is hidden
    c, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * 1.5
    r = pipe.process(img, 0, "cam", detections=[Detection(box, 0.9), Detection(np.r_[c - half, c + half], 0.8)])
    assert len(r.people) == 2
    for f in range(1, 4):
        r = pipe.process(img, f * FRAME_NS, "cam")
        assert [p.track_id for p in r.people] == [1]
    # and a duplicate born from a detection ends at once (never published twice)
    pipe2 = _pipe(None)
    pipe2.process(img, 0, "cam", detections=[Detection(box, 0.9)])
    r = pipe2.process(img, FRAME_NS, "cam", detections=[Detection(box, 0.9), Detection(box + [0, 60, 0, 60], 0.5)])
    assert [p.track_id for p in r.people] == [1]


def test_upstream_detections_stamp_matching_and_class_filter():
    from hkmr_ros.bags import make_typestore       # ros_types' store plus Detection2DArray
    ts = make_typestore()
    T = ts.types
    def d2d(cls_id, score, cx, cy, w, h):
        hyp = T["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id=cls_id, score=score),
            pose=T["geometry_msgs/msg/PoseWithCovariance"](
                pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                                 orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
                covariance=np.zeros(36)))
        return T["vision_msgs/msg/Detection2D"](
            header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
            results=[hyp], bbox=T["vision_msgs/msg/BoundingBox2D"](
                center=T["vision_msgs/msg/Pose2D"](position=T["vision_msgs/msg/Point2D"](x=cx, y=cy), theta=0.0),
                size_x=w, size_y=h), id="")
    msg = T["vision_msgs/msg/Detection2DArray"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam"),
        detections=[d2d("person", 0.9, 100, 200, 50, 150), d2d("car", 0.99, 300, 200, 80, 40),
                    d2d("PERSON", 0.4, 400, 200, float("nan"), 100)])
    dets = detections_from_msg(msg)
    assert len(dets) == 1 and dets[0].label == "person"
    np.testing.assert_allclose(dets[0].box, [75, 125, 125, 275])
    assert len(detections_from_msg(msg, classes=None)) == 2          # NaN box always dropped
    buf = DetectionBuffer(capacity=3, tolerance_ns=5_000_000)
    for k in range(5):
        buf.add(k * FRAME_NS, [Detection([k, 0, k + 10, 10])])
    assert buf.match(0) is None                                     # evicted (capacity 3)
    assert buf.match(4 * FRAME_NS + 4_000_000)[0].box[0] == 4
    assert buf.match(3 * FRAME_NS - 1_000_000)[0].box[0] == 3
    assert buf.match(3 * FRAME_NS + 15_000_000) is None             # between frames: no match
    assert len(buf) == 3


def test_joints_box_covers_the_figure():
    j = person_joints_2d((320, 240), 300)
    b = joints_box(j)
    g = gt_box((320, 240), 300)
    assert box_iou(b, g)[0, 0] > 0.6


@pytest.mark.parametrize("bad", [dict(detect_every=0), dict(iou_threshold=1.5), dict(max_unconfirmed=0),
                                 dict(joint_box_pad=(0.1, 2.0, 0.0)), dict(motion=-1.0), dict(min_box_side=0.0)])
def test_absurd_tracking_rejected(bad):
    with pytest.raises(ValueError, match="tracking"):
        TrackingConfig(**bad).validate()
