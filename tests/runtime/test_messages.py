"""Messages from a FrameResult: built for rosbags and rclpy-style classes, CDR round trip through
the typestore registered from our own msg/ files, markers per person, DELETE for ended tracks."""
import array
import dataclasses

import numpy as np
import pytest

from hkmr_ros import messages as M
from hkmr_ros.people import FrameResult, Person
from hkmr_ros.ros_types import make_typestore
from hkmr_ros.skeleton import BONE_COLOURS, BONES, CHAIN_COLOURS, JOINT_TO_CHAIN

from pipeline_fakes import TEMPLATE_JOINTS, FakeEstimator, draw_people, gt_box


def _person(tid, shift=0.0, vertices=None):
    rng = np.random.default_rng(tid)
    from hkmr_ros.geometry import axis_angle_to_matrix, joint_orientations, matrix_to_axis_angle
    rot = axis_angle_to_matrix(rng.normal(0, 0.3, (24, 3)))
    joints = TEMPLATE_JOINTS + [shift, 0.0, 3.0]
    return Person(track_id=tid, score=0.75, box=np.array([10.0 + tid, 20, 110, 320]),
                  pose=matrix_to_axis_angle(rot).reshape(72).astype(np.float32), rotmat=rot.astype(np.float32),
                  betas=rng.normal(size=10).astype(np.float32), cam=np.array([0.9, 0.1, -0.05], np.float32),
                  translation=joints[0].copy(), joints=joints, joint_orientations=joint_orientations(rot),
                  joint_confidence=np.linspace(0, 1, 24).astype(np.float32),
                  joints_2d=(100 + 100 * joints[:, :2]).astype(np.float32), vertices=vertices)


@pytest.fixture
def result():
    return FrameResult(stamp_ns=1_700_000_000_123_456_789, frame_id="camera_color_optical_frame", width=640,
                       height=480, people=[_person(1), _person(4, shift=0.8)], ended_track_ids=[2, 3])


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_person_mesh_array_cdr_round_trip(result, distro):
    ts = make_typestore(distro)
    msg = M.person_mesh_array(result, ts.types, "anny-smpl")
    raw = ts.serialize_cdr(msg, "hkmr_ros/msg/PersonMeshArray")
    back = ts.deserialize_cdr(raw, "hkmr_ros/msg/PersonMeshArray")
    assert back.header.stamp.sec == 1_700_000_000 and back.header.stamp.nanosec == 123_456_789
    assert back.header.frame_id == "camera_color_optical_frame"
    assert [p.track_id for p in back.people] == [1, 4]
    for p, src in zip(back.people, result.people):
        assert p.body_model == "anny-smpl" and p.score == pytest.approx(0.75)
        np.testing.assert_allclose(p.pose, src.pose, rtol=1e-6)
        np.testing.assert_allclose(p.betas, src.betas, rtol=1e-6)
        np.testing.assert_allclose(p.camera, src.cam, rtol=1e-6)
        np.testing.assert_allclose(p.joint_confidence, src.joint_confidence)
        np.testing.assert_allclose([[q.x, q.y, q.z] for q in p.joints], src.joints)
        np.testing.assert_allclose([[q.x, q.y, q.z, q.w] for q in p.joint_orientations], src.joint_orientations)
        np.testing.assert_allclose([p.translation.x, p.translation.y, p.translation.z], src.translation)
        b = src.box
        assert p.bbox.center.position.x == pytest.approx((b[0] + b[2]) / 2) and p.bbox.size_y == pytest.approx(b[3] - b[1])
        assert p.bbox.center.theta == 0.0
    # raw CDR is what a bag stores: it must be stable across a second round trip
    assert ts.serialize_cdr(back, "hkmr_ros/msg/PersonMeshArray") == raw


def test_marker_array_per_person_and_deletes(result):
    ts = make_typestore()
    msg = M.marker_array(result, ts.types, ns="hkmr")
    raw = ts.serialize_cdr(msg, "visualization_msgs/msg/MarkerArray")
    back = ts.deserialize_cdr(raw, "visualization_msgs/msg/MarkerArray")
    by_id = {m.id: m for m in back.markers}
    for tid in (1, 4):
        base = tid * M.MARKERS_PER_PERSON
        bones, joints, label = by_id[base + M.BONES_ID], by_id[base + M.JOINTS_ID], by_id[base + M.LABEL_ID]
        assert bones.type == M.LINE_LIST and len(bones.points) == 2 * len(BONES) == len(bones.colors)
        assert joints.type == M.SPHERE_LIST and len(joints.points) == 24
        for k, c in enumerate(joints.colors):          # coloured by chain
            assert (c.r, c.g, c.b) == pytest.approx(CHAIN_COLOURS[JOINT_TO_CHAIN[k]])
        assert (bones.colors[0].r, bones.colors[0].g) == pytest.approx(BONE_COLOURS[0][:2])
        assert label.type == M.TEXT_VIEW_FACING and label.text == f"id {tid}"
        assert (label.color.r, label.color.g, label.color.b) == pytest.approx(M.track_colour(tid))
        assert bones.header.frame_id == "camera_color_optical_frame" and bones.action == M.ADD
        assert bones.lifetime.nanosec > 0 or bones.lifetime.sec > 0
    assert M.track_colour(1) != M.track_colour(4)
    deletes = [m for m in back.markers if m.action == M.DELETE]
    deleted_ids = {m.id for m in deletes}
    for tid in (2, 3):                                  # every marker of an ended track goes
        assert {tid * M.MARKERS_PER_PERSON + k for k in range(M.MARKERS_PER_PERSON)} <= deleted_ids
    # no mesh was drawn: the mesh slot is deleted so an older mesh cannot linger
    assert {1 * 4 + M.MESH_ID, 4 * 4 + M.MESH_ID} <= deleted_ids


def test_mesh_triangle_list(result):
    verts = np.array([[0, 0, 3], [0.1, 0, 3], [0, 0.1, 3], [0.1, 0.1, 3]], np.float32)
    faces = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    result.people[0].vertices = verts
    ts = make_typestore()
    msg = M.marker_array(result, ts.types, mesh_faces=faces)
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, "visualization_msgs/msg/MarkerArray"),
                              "visualization_msgs/msg/MarkerArray")
    mesh = [m for m in back.markers if m.type == M.TRIANGLE_LIST and m.action == M.ADD]
    assert len(mesh) == 1 and mesh[0].id == 1 * 4 + M.MESH_ID and len(mesh[0].points) == 6
    np.testing.assert_allclose([mesh[0].points[4].x, mesh[0].points[4].y], [0.1, 0.1], rtol=1e-6)


def test_same_code_builds_rclpy_style_messages(result):
    """rclpy classes: keyword constructors with defaults, uint8[] as array('B'), not dataclasses."""
    ts = make_typestore()

    def plain(cls):
        names = [f.name for f in dataclasses.fields(cls)]

        class Msg:
            __slots__ = names

            def __init__(self, **kw):
                assert set(kw) <= set(names), set(kw) - set(names)
                for n in names:
                    setattr(self, n, kw.get(n))
        Msg.__name__ = cls.__name__
        return Msg
    types = {k: plain(v) for k, v in ts.types.items()}
    pm = M.person_mesh_array(result, types, "smpl")
    assert type(pm).__name__.endswith("PersonMeshArray") and len(pm.people) == 2
    assert isinstance(pm.people[0].track_id, int) and isinstance(pm.people[0].score, float)
    ma = M.marker_array(result, types)
    assert isinstance(ma.markers[0].texture.data, array.array) and ma.markers[0].texture.data.typecode == "B"
    img = M.compressed_image(types, np.zeros((8, 8, 3), np.uint8), 0, "c", "png")
    assert isinstance(img.data, array.array) and bytes(img.data[:4]) == b"\x89PNG"


def test_overlay_draws_skeletons_and_ids():
    from hkmr_ros.pipeline import Pipeline, PipelineConfig
    from hkmr_ros.people import Detection
    people = [((200, 240), 260, 0), ((450, 240), 240, 1)]
    img = draw_people(people)
    pipe = Pipeline(FakeEstimator(), PipelineConfig(detector="none"))
    r = pipe.process(img, 0, "cam", detections=[Detection(gt_box(c, h), 0.9) for c, h, _ in people])
    out = M.overlay_image(img, r)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, img) and (img == draw_people(people)).all()   # input untouched
    for p in r.people:
        x0, y0, x1, y1 = p.box.astype(int)
        changed = (out[y0:y1, x0:x1] != img[y0:y1, x0:x1]).any(axis=2).mean()
        assert changed > 0.02                           # skeleton drawn inside each box
        # the pelvis pixel carries the root chain colour (joint 0)
        px = np.round(p.joints_2d[0]).astype(int)
        assert tuple(out[px[1], px[0]]) != tuple(img[px[1], px[0]])
    # id labels above the boxes
    y0 = int(r.people[0].box[1])
    assert (out[max(y0 - 20, 0):y0, :] != img[max(y0 - 20, 0):y0, :]).any()


def test_overlay_survives_absurd_coordinates():
    p = _person(1)
    p.joints_2d = np.full((24, 2), np.nan, np.float32)
    p.box = np.array([-1e12, 5, 1e12, np.inf])
    r = FrameResult(0, "c", 64, 48, [p])
    out = M.overlay_image(np.zeros((48, 64, 3), np.uint8), r)
    assert out.shape == (48, 64, 3)


def test_missing_type_named():
    with pytest.raises(KeyError, match="hkmr_ros/msg/PersonMeshArray"):
        M.person_mesh_array(FrameResult(0, "c", 1, 1), {}, "smpl")


def test_mesh_markers_with_the_shipped_mesh_model():
    """The mesh variant of the shipped network: vertices in the camera frame, a TRIANGLE_LIST
    with every face or with the display mesh's, serialisable."""
    from pathlib import Path

    import pytest as _pytest
    inference = _pytest.importorskip("hkmr_ros.inference")
    model = Path(__file__).resolve().parents[2] / "hkmr_ros" / "data" / "hkmr_default_mesh.onnx"
    if not model.is_file():
        _pytest.skip(f"mesh model missing: {model}")
    est = inference.load_estimator(model, backend="onnxruntime", threads=1)
    if est.faces is None:
        _pytest.skip("mesh model without faces")
    from hkmr_ros.people import Detection
    from hkmr_ros.pipeline import Pipeline, PipelineConfig
    img = draw_people([((320, 240), 300, 0)])
    r = Pipeline(est, PipelineConfig(detector="none")).process(
        img, 0, "cam", detections=[Detection(gt_box((320, 240), 300), 0.9)])
    p = r.people[0]
    assert p.vertices is not None and p.vertices.shape[1] == 3 and np.all(np.isfinite(p.vertices))
    # the mesh sits around the joints, in the same camera frame
    assert np.linalg.norm(p.vertices.mean(0) - p.joints.mean(0)) < 0.5
    ts = make_typestore()
    # the shipped model's display mesh: a tenth of the triangles, over the same vertices
    assert est.display_faces is not None and len(est.marker_faces) < len(est.faces) / 10
    assert est.marker_faces.max() < len(p.vertices)
    for faces in (est.faces, est.marker_faces):
        msg = M.marker_array(r, ts.types, mesh_faces=faces)
        mesh = [m for m in msg.markers if m.type == M.TRIANGLE_LIST and m.action == M.ADD]
        assert len(mesh) == 1 and len(mesh[0].points) == 3 * len(faces)
        back = ts.deserialize_cdr(ts.serialize_cdr(msg, "visualization_msgs/msg/MarkerArray"),
                                  "visualization_msgs/msg/MarkerArray")
        assert len([m for m in back.markers if m.type == M.TRIANGLE_LIST and m.action == M.ADD][0].points) == 3 * len(faces)
