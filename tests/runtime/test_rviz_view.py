"""rviz_view: markers replayed as RViz would, and the picture drawn from a bag, without ROS."""
from __future__ import annotations

import cv2
import numpy as np

from hkmr_ros import messages, rviz_view
from hkmr_ros.bags import BagWriter
from hkmr_ros.people import FrameResult, Person

from pipeline_fakes import TEMPLATE_JOINTS


def person(track_id: int, x: float) -> Person:
    joints = TEMPLATE_JOINTS + [x, 0.0, 4.0]
    q = np.tile([0.0, 0.0, 0.0, 1.0], (24, 1))
    return Person(track_id=track_id, score=1.0, box=np.array([100.0, 100.0, 200.0, 400.0]),
                  pose=np.zeros(72, np.float32), rotmat=np.tile(np.eye(3, dtype=np.float32), (24, 1, 1)),
                  betas=np.zeros(10, np.float32), cam=np.array([1.0, 0.0, 0.0], np.float32),
                  translation=joints[0].copy(), joints=joints, joint_orientations=q,
                  joint_confidence=np.ones(24, np.float32),
                  joints_2d=(joints[:, :2] / joints[:, 2:] * 500 + [320, 240]).astype(np.float32))


def write_bag(path, store_frames):
    with BagWriter(path, storage="mcap") as w:
        t = w.types
        for stamp, result in store_frames:
            rgb = np.full((240, 320, 3), 120, np.uint8)
            w.write("/hkmr/overlay/compressed", stamp, messages.compressed_image(t, rgb, stamp, "cam"))
            w.write("/hkmr/markers", stamp, messages.marker_array(result, t))


def test_replay_drops_the_markers_of_ended_tracks(tmp_path):
    s1, s2 = 1_000_000_000, 2_000_000_000
    frames = [(s1, FrameResult(s1, "cam", 320, 240, [person(1, -0.5), person(2, 0.5)])),
              (s2, FrameResult(s2, "cam", 320, 240, [person(1, -0.4)], ended_track_ids=[2]))]
    bag = tmp_path / "out"
    write_bag(bag, frames)
    from hkmr_ros.bags import BagReader
    with BagReader(bag) as r:
        arrays = [m.msg for m in r.messages(["/hkmr/markers"])]
    first = rviz_view.replay_markers(arrays, s1)
    later = rviz_view.replay_markers(arrays, s2)
    ids_first = {i // messages.MARKERS_PER_PERSON for _, i in first}
    ids_later = {i // messages.MARKERS_PER_PERSON for _, i in later}
    assert ids_first == {1, 2} and ids_later == {1}

    out = rviz_view.render(bag, tmp_path / "view.png", frame=0)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] == 240 + 28
    right = img[28:, 320:]
    # two skeletons drawn in colour on the grey background (not only the grid)
    saturated = (right.max(axis=2).astype(int) - right.min(axis=2)) > 80
    assert saturated.sum() > 200


def test_render_names_the_topics_when_one_is_missing(tmp_path):
    bag = tmp_path / "only_markers"
    with BagWriter(bag, storage="mcap") as w:
        w.write("/hkmr/markers", 1, messages.marker_array(FrameResult(1, "cam", 10, 10, []), w.types))
    try:
        rviz_view.render(bag, tmp_path / "x.png")
    except ValueError as e:
        assert "/hkmr/markers" in str(e)
    else:
        raise AssertionError("expected a ValueError")
