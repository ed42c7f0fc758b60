"""rosbag2 reading and writing without ROS (hkmr_ros.bags): both storages, embedded definitions,
an independent MCAP reader, faults (exceptions, killed writers, truncation, garbage), missing
topics and undecodable messages."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hkmr_ros import bags

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "hkmr_ros" / "data" / "sample" / "people"
STAMP0 = 1_700_000_000 * 10**9


def _person_array(types, stamp, n_people=2, seed=0):
    rng = np.random.default_rng(seed)
    point = types["geometry_msgs/msg/Point"]
    quat = types["geometry_msgs/msg/Quaternion"]
    people = []
    for i in range(n_people):
        joints = rng.normal(size=(24, 3))
        people.append(types["hkmr_ros/msg/PersonMesh"](
            track_id=i + 1, score=0.5, bbox=bags.bounding_box(types, np.array([10.0, 20.0, 110.0, 320.0])),
            pose=rng.normal(size=72).astype(np.float32), betas=rng.normal(size=10).astype(np.float32),
            camera=np.array([0.9, 0.1, -0.1], np.float32), translation=point(x=0.1, y=0.2, z=3.0),
            joints=[point(x=float(a), y=float(b), z=float(c)) for a, b, c in joints],
            joint_orientations=[quat(x=0.0, y=0.0, z=0.0, w=1.0)] * 24,
            joint_confidence=np.ones(24, np.float32), body_model="anny-smpl"))
    return types["hkmr_ros/msg/PersonMeshArray"](header=bags.header(types, stamp, "cam"), people=people)


def _write_bag(path: Path, storage: str, frames: int = 5, image_size=(48, 64)):
    rng = np.random.default_rng(1)
    with bags.BagWriter(path, storage=storage) as w:
        types = w.types
        for i in range(frames):
            t = STAMP0 + i * 66_666_667
            img = rng.integers(0, 255, image_size + (3,), dtype=np.uint8)
            w.write("/camera/image_raw/compressed", t, bags.compressed_image(types, img, t, "cam", fmt="png"))
            w.write("/camera/image_raw", t, bags.raw_image(types, img, t, "cam"))
            w.write("/camera/camera_info", t, bags.camera_info(types, np.array([[500, 0, 32], [0, 500, 24], [0, 0, 1]]),
                                                               image_size[1], image_size[0], t, "cam"))
            w.write("/detections", t, bags.detection_array(types, t, "cam", [np.array([1.0, 2.0, 30.0, 40.0])], [0.8]))
            w.write("/people", t, _person_array(types, t, seed=i))
    return path


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_round_trip_both_storages(tmp_path, storage):
    path = _write_bag(tmp_path / "bag", storage)
    with bags.BagReader(path) as r:
        assert r.topics == {"/camera/image_raw/compressed": bags.COMPRESSED_IMAGE, "/camera/image_raw": bags.IMAGE,
                            "/camera/camera_info": bags.CAMERA_INFO, "/detections": bags.DETECTION_ARRAY,
                            "/people": bags.PERSON_MESH_ARRAY}
        assert r.message_counts() == {t: 5 for t in r.topics}
        assert not r.truncated
        msgs = list(r.messages(["/people", "/detections", "/camera/camera_info"]))
    assert len(msgs) == 15
    assert [m.log_time_ns for m in msgs] == sorted(m.log_time_ns for m in msgs)
    people = [m.msg for m in msgs if m.topic == "/people"]
    expected = _person_array(bags.make_typestore().types, STAMP0, seed=0)
    got = people[0].people[1]
    assert got.track_id == 2 and got.body_model == "anny-smpl"
    np.testing.assert_allclose(got.pose, expected.people[1].pose)
    np.testing.assert_allclose(bags.box_from_msg(got.bbox), [10, 20, 110, 320])
    assert bags.stamp_to_ns(people[3].header.stamp) == STAMP0 + 3 * 66_666_667
    det = next(m.msg for m in msgs if m.topic == "/detections")
    assert det.detections[0].results[0].hypothesis.class_id == "person"
    info = next(m.msg for m in msgs if m.topic == "/camera/camera_info")
    np.testing.assert_allclose(bags.camera_k(info), [[500, 0, 32], [0, 500, 24], [0, 0, 1]])


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_definitions_are_embedded(tmp_path, storage):
    """Every connection carries its full ros2msg definition, our messages and their dependencies
    included, so ROS tools and Foxglove need not have hkmr_ros installed."""
    path = _write_bag(tmp_path / "bag", storage, frames=1)
    with bags.BagReader(path) as r:
        defs = {c.msgtype: c.msgdef.data for c in r.connections}
    people = defs[bags.PERSON_MESH_ARRAY]
    for part in ("hkmr_ros/PersonMesh[] people", "MSG: hkmr_ros/PersonMesh", "MSG: vision_msgs/BoundingBox2D",
                 "MSG: vision_msgs/Pose2D", "MSG: vision_msgs/Point2D", "MSG: geometry_msgs/Quaternion",
                 "float32[24] joint_confidence"):
        assert part in people, part
    assert "MSG: vision_msgs/ObjectHypothesisWithPose" in defs[bags.DETECTION_ARRAY]
    # a reader that knows none of our types still decodes the bag from the embedded text alone
    from rosbags.highlevel import AnyReader
    with AnyReader([path]) as reader:
        conn = next(c for c in reader.connections if c.topic == "/people")
        raw = next(reader.messages(connections=[conn]))[2]
        msg = reader.deserialize(raw, conn.msgtype)
    assert len(msg.people) == 2 and msg.people[0].body_model == "anny-smpl"


def test_independent_mcap_reader_decodes_our_bag(tmp_path):
    """The `mcap` package's ROS 2 decoder (not rosbags) reads the bag we write."""
    reader_mod = pytest.importorskip("mcap.reader")
    decoder = pytest.importorskip("mcap_ros2.decoder")
    path = _write_bag(tmp_path / "bag", "mcap", frames=3)
    seen = {}
    with open(next(path.glob("*.mcap")), "rb") as f:
        reader = reader_mod.make_reader(f, decoder_factories=[decoder.DecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            seen.setdefault(channel.topic, []).append(msg)
    assert {t: len(v) for t, v in seen.items()} == {t: 3 for t in (
        "/camera/image_raw/compressed", "/camera/image_raw", "/camera/camera_info", "/detections", "/people")}
    p = seen["/people"][0].people[0]
    assert p.track_id == 1 and len(p.joints) == 24 and p.body_model == "anny-smpl"
    assert abs(seen["/detections"][0].detections[0].bbox.size_x - 29.0) < 1e-9


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_exception_while_writing_keeps_what_was_written(tmp_path, storage):
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="boom"):
        with bags.BagWriter(path, storage=storage) as w:
            for i in range(7):
                w.write("/people", STAMP0 + i, _person_array(w.types, STAMP0 + i))
            raise RuntimeError("boom")
    assert (path / "metadata.yaml").is_file()
    with bags.BagReader(path) as r:
        assert r.message_counts() == {"/people": 7}
        assert len(list(r.messages())) == 7


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from hkmr_ros import bags
    path, storage, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    w = bags.BagWriter(path, storage=storage, commit_every=10)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)  # ~230 kB PNG: chunks fill fast
        w.write("/img", 10**18 + i, bags.compressed_image(w.types, img, 10**18 + i, "cam", fmt="png"))
    w.flush()
    os._exit(0)  # killed: no close, no metadata.yaml, no MCAP summary
""")


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_killed_writer_leaves_a_readable_bag(tmp_path, storage):
    """A process that dies without closing (power loss, kill -9) still leaves the messages
    committed (sqlite3) or in complete chunks (MCAP, 1 MiB each) readable."""
    path = tmp_path / "bag"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), storage, "23"], check=True, cwd=ROOT)
    assert not (path / "metadata.yaml").exists()
    with bags.BagReader(path) as r:
        assert r.warnings  # says the recording was not closed
        n = len(list(r.messages(["/img"])))
    if storage == "sqlite3":
        assert n == 23  # flushed = committed
    else:
        assert r.truncated and 4 <= n < 23  # the chunks completed before the kill


def test_truncated_mcap_recovers_the_complete_chunks(tmp_path):
    path = tmp_path / "bag"
    with bags.BagWriter(path, storage="mcap") as w:
        rng = np.random.default_rng(0)
        for i in range(30):
            img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            w.write("/img", STAMP0 + i, bags.compressed_image(w.types, img, STAMP0 + i, "cam", fmt="png"))
    data = next(path.glob("*.mcap")).read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with bags.BagReader(cut) as r:
        assert r.truncated and "truncated" in r.warnings[0]
        msgs = list(r.messages())
    assert 5 <= len(msgs) < 30
    assert [m.log_time_ns for m in msgs] == [STAMP0 + i for i in range(len(msgs))]  # the first ones, in order
    assert all(m.msg.format == "png" for m in msgs)


@pytest.mark.parametrize("make", ["missing", "empty_dir", "empty_file", "garbage_mcap", "garbage_db3",
                                  "garbage_metadata", "wrong_suffix", "header_only_mcap"])
def test_corrupt_bags_raise_clear_errors(tmp_path, make):
    p = tmp_path / "bag"
    if make == "empty_dir":
        p.mkdir()
    elif make == "empty_file":
        p = tmp_path / "bag.mcap"
        p.write_bytes(b"")
    elif make == "garbage_mcap":
        p = tmp_path / "bag.mcap"
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif make == "garbage_db3":
        p = tmp_path / "bag.db3"
        p.write_bytes(b"SQLite format 3\x00" + bytes(3000))
    elif make == "garbage_metadata":
        p.mkdir()
        (p / "metadata.yaml").write_text("rosbag2_bagfile_information: [this is: not, a bag")
    elif make == "wrong_suffix":
        p = tmp_path / "bag.txt"
        p.write_text("hello")
    elif make == "header_only_mcap":
        p = tmp_path / "bag.mcap"
        p.write_bytes(b"\x89MCAP0\r\n\x01\x10\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00ros2\x04\x00\x00\x00test")
    expected = FileNotFoundError if make == "missing" else bags.BagError
    with pytest.raises(expected, match=str(p.name)):
        bags.BagReader(p)


def test_missing_topic_lists_the_topics(tmp_path):
    path = _write_bag(tmp_path / "bag", "mcap", frames=2)
    with bags.BagReader(path) as r:
        with pytest.raises(bags.TopicNotFoundError) as err:
            r.require_topic("/camera/color/image_raw", bags.IMAGE_TYPES)
        text = str(err.value)
        assert "/camera/color/image_raw" in text and "/camera/image_raw/compressed" in text and "/people" in text
        with pytest.raises(bags.TopicNotFoundError, match="has type sensor_msgs/msg/CameraInfo"):
            r.require_topic("/camera/camera_info", bags.IMAGE_TYPES)
        assert r.find_topic(bags.IMAGE_TYPES) == "/camera/image_raw"


def test_empty_bag_has_no_topics(tmp_path):
    path = tmp_path / "bag"
    with bags.BagWriter(path):
        pass
    with bags.BagReader(path) as r:
        assert r.topics == {} and list(r.messages()) == []
        with pytest.raises(bags.TopicNotFoundError, match="none"):
            r.require_topic("/x")


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_undecodable_messages_are_skipped_and_counted(tmp_path, storage):
    path = tmp_path / "bag"
    with bags.BagWriter(path, storage=storage) as w:
        good = w.typestore.serialize_cdr(_person_array(w.types, STAMP0), bags.PERSON_MESH_ARRAY)
        w.write_raw("/people", bags.PERSON_MESH_ARRAY, STAMP0, good)
        w.write_raw("/people", bags.PERSON_MESH_ARRAY, STAMP0 + 1, good[: len(good) // 3])  # cut short
        w.write_raw("/people", bags.PERSON_MESH_ARRAY, STAMP0 + 2, b"\x00\x01")
        w.write_raw("/people", bags.PERSON_MESH_ARRAY, STAMP0 + 3, good)
    with bags.BagReader(path) as r:
        msgs = list(r.messages())
        assert len(msgs) == 2 and r.skipped["/people"] == 2


def test_writer_refuses_to_overwrite_and_checks_names(tmp_path):
    path = _write_bag(tmp_path / "bag", "mcap", frames=1)
    with pytest.raises(FileExistsError, match="bag"):
        bags.BagWriter(path)
    with bags.BagWriter(path, overwrite=True) as w:  # a bag may be replaced
        w.write("/people", STAMP0, _person_array(w.types, STAMP0))
    other = tmp_path / "notabag"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="precious.txt"):
        bags.BagWriter(other, overwrite=True)
    assert (other / "precious.txt").exists()
    with pytest.raises(ValueError, match="storage"):
        bags.BagWriter(tmp_path / "x", storage="rosbag1")
    with bags.BagWriter(tmp_path / "y") as w:
        with pytest.raises(ValueError, match="not in the typestore"):
            w.add_topic("/x", "nonexistent_msgs/msg/Nothing")


def test_fuzzed_bags_never_crash(tmp_path):
    """1,000 damaged copies of a small bag (cut, bytes flipped, zeroed, spliced): each opens and
    reads to the end, or fails with BagError/FileNotFoundError; never anything else."""
    path = _write_bag(tmp_path / "bag", "mcap", frames=3, image_size=(8, 8))
    data = next(path.glob("*.mcap")).read_bytes()
    rng = np.random.default_rng(123)
    outcomes = {"read": 0, "error": 0}
    target = tmp_path / "fuzz.mcap"
    for k in range(1000):
        buf = bytearray(data)
        kind = k % 4
        if kind == 0:
            buf = buf[: int(rng.integers(0, len(buf)))]
        elif kind == 1:
            for _ in range(int(rng.integers(1, 20))):
                buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        elif kind == 2:
            a = int(rng.integers(0, len(buf)))
            buf[a:a + int(rng.integers(1, 200))] = bytes(min(200, len(buf) - a))[: len(buf[a:a + 200])]
        else:
            a, b = sorted(rng.integers(0, len(buf), 2))
            buf = buf[:a] + buf[b:]
        target.write_bytes(bytes(buf))
        try:
            with bags.BagReader(target) as r:
                for _ in r.messages():
                    pass
            outcomes["read"] += 1
        except (bags.BagError, FileNotFoundError):
            outcomes["error"] += 1
    assert outcomes["read"] + outcomes["error"] == 1000
    assert outcomes["read"] > 100 and outcomes["error"] > 50  # both paths exercised


def test_committed_sample_bag():
    """The sample bag: 640x480 JPEG frames with CameraInfo, ground truth and detections, a few MB."""
    assert SAMPLE.is_dir(), SAMPLE
    size = sum(p.stat().st_size for p in SAMPLE.iterdir())
    assert size < 8 * 2**20
    with bags.BagReader(SAMPLE) as r:
        assert r.topics == {"/camera/image_raw/compressed": bags.COMPRESSED_IMAGE,
                            "/camera/camera_info": bags.CAMERA_INFO,
                            "/ground_truth/people": bags.PERSON_MESH_ARRAY,
                            "/detections": bags.DETECTION_ARRAY}
        counts = r.message_counts()
        assert len(set(counts.values())) == 1 and counts["/camera/camera_info"] >= 60
        people = [len(m.msg.people) for m in r.messages(["/ground_truth/people"])]
        img = next(r.messages(["/camera/image_raw/compressed"])).msg
        info = next(r.messages(["/camera/camera_info"])).msg
    assert img.format == "jpeg" and (info.width, info.height) == (640, 480)
    assert {1, 3, 6} <= set(people)  # frames with one, three and six people in view


def test_sqlite3_bag_without_definitions_uses_the_built_in_types(tmp_path):
    """Humble's sqlite3 bags store no message definitions: our typestore decodes them."""
    import sqlite3
    path = _write_bag(tmp_path / "bag", "sqlite3", frames=2)
    db = next(path.glob("*.db3"))
    con = sqlite3.connect(db)
    con.execute("DELETE FROM message_definitions")
    con.commit()
    con.close()
    with bags.BagReader(path) as r:
        assert all(not c.msgdef.data for c in r.connections)
        people = [m.msg for m in r.messages(["/people"])]
        dets = [m.msg for m in r.messages(["/detections"])]
    assert len(people) == 2 and people[0].people[0].body_model == "anny-smpl"
    assert dets[0].detections[0].results[0].hypothesis.score == pytest.approx(0.8)


def test_sample_ground_truth_is_consistent():
    """The sample's ground truth agrees with its CameraInfo and with itself over time: visible
    joints project inside the person's box, each person keeps one rest skeleton (bone lengths)
    in every frame, detections are boxes of the true people."""
    from hkmr_ros import evaluation
    from hkmr_ros.detection import box_iou
    with bags.BagReader(SAMPLE) as r:
        k = bags.camera_k(next(r.messages(["/camera/camera_info"])).msg)
        truth = {bags.stamp_to_ns(m.msg.header.stamp): evaluation.people_from_msg(m.msg)
                 for m in r.messages(["/ground_truth/people"])}
        dets = {bags.stamp_to_ns(m.msg.header.stamp): m.msg for m in r.messages(["/detections"])}
    rest = {}
    for stamp, people in truth.items():
        for p in people:
            assert np.allclose(np.linalg.norm(p.orientations, axis=1), 1.0, atol=1e-5)
            uv = p.joints @ k.T
            uv = uv[:, :2] / uv[:, 2:]
            vis = p.confidence > 0.5
            assert np.all((uv[vis] >= p.box[:2] - 2) & (uv[vis] <= p.box[2:] + 2))
            skeleton = evaluation.rest_skeleton(p.joints, p.orientations)
            rest.setdefault(p.track_id, []).append(skeleton)
        boxes = np.array([bags.box_from_msg(d.bbox) for d in dets[stamp].detections]).reshape(-1, 4)
        if len(boxes):
            iou = box_iou(boxes, np.array([p.box for p in people]))
            assert np.all(iou.max(axis=1) > 0.8)  # every detection is one of the true people, jittered
    assert sorted(rest) == [1, 2, 3, 4, 5, 6]
    for skeletons in rest.values():
        s = np.stack(skeletons)
        assert np.abs(s - s[0]).max() < 2e-3  # float32 joints: rigid bones to 2 mm


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_every_topic_records_an_offered_qos(tmp_path, storage):
    """As `ros2 bag record` does: a YAML list of profiles per topic, never an empty string."""
    import yaml
    path = _write_bag(tmp_path / "bag", storage, frames=1)
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    for entry in info["topics_with_message_count"]:
        profiles = yaml.safe_load(entry["topic_metadata"]["offered_qos_profiles"])
        assert isinstance(profiles, list) and profiles[0]["reliability"] == 1 and profiles[0]["depth"] == 10
    assert isinstance(info["custom_data"], dict)  # a map, never null (rosbag2 reads it as one)
    sample = yaml.safe_load((SAMPLE / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert all(e["topic_metadata"]["offered_qos_profiles"] for e in sample["topics_with_message_count"])
    assert sample["custom_data"]["hkmr.generator"] == "hkmr-bag synth"
