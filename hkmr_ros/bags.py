"""Reading and writing rosbag2 bags (mcap and sqlite3) without ROS, on `rosbags`.

Writing: `BagWriter` serialises our messages and the stock ones through the typestore of
`hkmr_ros.ros_types` (plus the vision_msgs detection messages), and every connection carries its
full message definition (ros2msg text with dependencies), so `ros2 bag play`, RViz and Foxglove
read the bag without our package installed. The writer always finalises the bag -- also when the
code writing it raises -- so what was written before a fault stays readable; sqlite3 bags are
committed every `commit_every` messages and MCAP bags are written in 1 MiB chunks, so even a
killed process leaves everything but the last chunk or transaction readable (`BagReader`
recovers a truncated MCAP file by scanning it record by record).

Reading: `BagReader` opens a bag folder (with or without metadata.yaml) or a single .mcap/.db3
file, lists its topics, raises `TopicNotFoundError` naming the topics that exist, and yields
deserialised messages; a message that cannot be deserialised is skipped and counted per topic.
"""
from __future__ import annotations

import logging
import sqlite3
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from rosbags.interfaces import (Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat, Qos,
                                QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from hkmr_ros import ros_types

LOG = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DETECTION_ARRAY = "vision_msgs/msg/Detection2DArray"
PERSON_MESH_ARRAY = "hkmr_ros/msg/PersonMeshArray"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 8  # rosbag2 metadata version 8 (Jazzy); Humble's rosbag2 reads the files alike

# vision_msgs 4.x (Humble, Jazzy): the detection messages, beyond the box types of ros_types.
VISION_DETECTION_MSGS = {
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}

_MCAP_MAGIC = b"\x89MCAP0\r\n"

# What an ordinary ROS 2 publisher offers (reliable, volatile, keep last 10, default deadlines), recorded
# with every topic as `ros2 bag record` does: an empty offer list is written as '' in metadata.yaml,
# which rosbag2's QoS parsing does not expect.
DEFAULT_QOS = Qos(history=QosHistory.KEEP_LAST, depth=10, reliability=QosReliability.RELIABLE,
                  durability=QosDurability.VOLATILE, deadline=QosTime(0, 0), lifespan=QosTime(0, 0),
                  liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=QosTime(0, 0),
                  avoid_ros_namespace_conventions=False)


class BagError(ValueError):
    """A bag that exists but cannot be read or written (corrupt, truncated, not a rosbag2 bag)."""


class TopicNotFoundError(BagError):
    """A requested topic is not in the bag; the message lists the topics that are."""


def make_typestore(distro: str = "humble") -> Typestore:
    """`hkmr_ros.ros_types.make_typestore(distro)` plus vision_msgs' Detection2DArray and its parts."""
    store = ros_types.make_typestore(distro)
    missing = {}
    for name, text in VISION_DETECTION_MSGS.items():
        if name not in store.types:
            missing.update(get_types_from_msg(text, name))
    if missing:
        store.register(missing)
    return store


_DEFAULT_STORES: Dict[str, Typestore] = {}
_DEFINITION_STORES: Dict[Tuple[str, str], Typestore] = {}


def default_typestore(distro: str = "humble") -> Typestore:
    """A shared `make_typestore(distro)` (building one takes a while); do not register into it."""
    if distro not in _DEFAULT_STORES:
        _DEFAULT_STORES[distro] = make_typestore(distro)
    return _DEFAULT_STORES[distro]


def _store_from_definition(msgtype: str, text: str) -> Typestore:
    """A typestore of one embedded ros2msg definition (with its dependencies), cached by text."""
    key = (msgtype, text)
    if key not in _DEFINITION_STORES:
        store = get_typestore(Stores.EMPTY)
        store.register(get_types_from_msg(text, msgtype))
        if len(_DEFINITION_STORES) > 256:
            _DEFINITION_STORES.pop(next(iter(_DEFINITION_STORES)))
        _DEFINITION_STORES[key] = store
    return _DEFINITION_STORES[key]


def storage_of(path: Union[str, Path]) -> str:
    """'mcap' or 'sqlite3' from an output path's suffix (a folder name without suffix: 'mcap')."""
    suffix = Path(path).suffix.lower()
    return "sqlite3" if suffix in (".db3", ".sqlite3") else "mcap"


# ------------------------------------------------------------------------------------ writing

class BagWriter:
    """A rosbag2 bag being written; use as a context manager.

    path: the bag folder to create (it must not exist unless `overwrite`); the storage file inside
    is `<name>.mcap` or `<name>.db3`. On leaving the context -- normally or by an exception --
    the bag is closed properly (metadata.yaml, MCAP summary), so the messages written before the
    fault stay readable.
    """

    def __init__(self, path: Union[str, Path], storage: str = "mcap", distro: str = "humble",
                 overwrite: bool = False, commit_every: int = 50,
                 typestore: Optional[Typestore] = None):
        if storage not in STORAGES:
            raise ValueError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise FileExistsError(f"output bag exists: {self.path} (remove it or pass overwrite)")
            _remove_bag(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = storage
        self.typestore = typestore if typestore is not None else default_typestore(distro)
        self.types = self.typestore.types
        self.commit_every = int(commit_every)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        # never an empty (null) custom_data: rosbag2 reads it as a map from metadata version 6 on
        self._writer.set_custom_data("hkmr.writer", "hkmr_ros.bags")
        self._connections: Dict[str, Connection] = {}
        self.counts: Counter = Counter()
        self._since_commit = 0
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, qos: Optional[Sequence[Qos]] = None) -> None:
        """Declare `topic` with `msgtype` (e.g. 'sensor_msgs/msg/CameraInfo'); its definition is embedded.

        qos: the offered QoS profiles to record (default: one reliable, volatile profile).
        """
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise ValueError(f"topic {topic} already has type {self._connections[topic].msgtype}")
            return
        if msgtype not in self.types:
            raise ValueError(f"message type {msgtype} is not in the typestore")
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(qos) if qos is not None else [DEFAULT_QOS])

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialise `msg` (a typestore class instance) to CDR and append it at log time `stamp_ns`."""
        if self.closed:
            raise BagError(f"bag {self.path} is already closed")
        if topic not in self._connections:
            self.add_topic(topic, msg.__msgtype__)
        conn = self._connections[topic]
        data = self.typestore.serialize_cdr(msg, conn.msgtype)
        self._writer.write(conn, int(stamp_ns), data)
        self.counts[topic] += 1
        self._since_commit += 1
        if self._since_commit >= self.commit_every:
            self.flush()

    def set_custom_data(self, key: str, value: str) -> None:
        """A key/value string pair in metadata.yaml's custom_data (provenance: model, source bag)."""
        self._writer.set_custom_data(str(key), str(value))

    def write_raw(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        """Append already-serialised CDR bytes (e.g. a message copied from another bag)."""
        if self.closed:
            raise BagError(f"bag {self.path} is already closed")
        self.add_topic(topic, msgtype)
        self._writer.write(self._connections[topic], int(stamp_ns), bytes(data))
        self.counts[topic] += 1
        self._since_commit += 1
        if self._since_commit >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        """Make what was written so far durable (sqlite3 commit; MCAP file buffer flush)."""
        self._since_commit = 0
        storage = getattr(self._writer, "storage", None)
        conn = getattr(storage, "conn", None)
        if isinstance(conn, sqlite3.Connection):
            conn.commit()
        bio = getattr(storage, "bio", None)
        if bio is not None and hasattr(bio, "flush"):
            bio.flush()

    def close(self) -> None:
        """Finish the bag (idempotent)."""
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.close()
        except Exception:
            if exc_type is None:
                raise
            LOG.exception("closing %s after an error failed", self.path)
        return False


def _remove_bag(path: Path) -> None:
    """Remove an existing output bag folder (only files a rosbag2 bag holds) or file."""
    if path.is_file():
        path.unlink()
        return
    for child in path.iterdir():
        if child.is_dir() or child.suffix not in (".mcap", ".db3", ".yaml", ".db3-journal", ".db3-wal",
                                                  ".db3-shm", ".zstd"):
            raise FileExistsError(f"{path} holds {child.name}, which is not part of a rosbag2 bag; "
                                  "not removing it")
        child.unlink()
    path.rmdir()


# ------------------------------------------------------------------------------------ message helpers

def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(types: Mapping[str, Any], stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header for a stamp in nanoseconds."""
    time = types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                nanosec=int(stamp_ns % 1_000_000_000))
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def compressed_image(types: Mapping[str, Any], image_rgb: np.ndarray, stamp_ns: int, frame_id: str,
                     fmt: str = "jpeg", quality: int = 85) -> Any:
    """sensor_msgs/CompressedImage of an HxWx3 uint8 RGB image (JPEG or PNG)."""
    import cv2

    bgr = np.ascontiguousarray(image_rgb[..., ::-1])
    if fmt == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"unknown compressed format {fmt!r}; expected 'jpeg' or 'png'")
    if not ok:
        raise RuntimeError(f"{fmt} encoding failed for an image of shape {image_rgb.shape}")
    return types[COMPRESSED_IMAGE](header=header(types, stamp_ns, frame_id), format=fmt,
                                   data=np.asarray(data, dtype=np.uint8).reshape(-1))


def raw_image(types: Mapping[str, Any], image_rgb: np.ndarray, stamp_ns: int, frame_id: str,
              encoding: str = "rgb8") -> Any:
    """sensor_msgs/Image (rgb8 or bgr8) of an HxWx3 uint8 RGB image."""
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"raw_image writes rgb8 or bgr8, not {encoding!r}")
    data = image_rgb if encoding == "rgb8" else image_rgb[..., ::-1]
    h, w = image_rgb.shape[:2]
    return types[IMAGE](header=header(types, stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                        is_bigendian=0, step=3 * w,
                        data=np.ascontiguousarray(data, dtype=np.uint8).reshape(-1))


def camera_info(types: Mapping[str, Any], k: np.ndarray, width: int, height: int, stamp_ns: int,
                frame_id: str) -> Any:
    """sensor_msgs/CameraInfo of an undistorted pinhole camera with 3x3 intrinsics `k`."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    p = np.zeros((3, 4))
    p[:, :3] = k
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    return types[CAMERA_INFO](header=header(types, stamp_ns, frame_id), height=int(height), width=int(width),
                              distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1),
                              r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def bounding_box(types: Mapping[str, Any], box: np.ndarray) -> Any:
    """vision_msgs/BoundingBox2D (centre, size) of a box [x0, y0, x1, y1] in pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    point = types["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2.0, y=(y0 + y1) / 2.0)
    return types["vision_msgs/msg/BoundingBox2D"](
        center=types["vision_msgs/msg/Pose2D"](position=point, theta=0.0),
        size_x=x1 - x0, size_y=y1 - y0)


def box_from_msg(bbox: Any) -> np.ndarray:
    """vision_msgs/BoundingBox2D -> (4,) float64 [x0, y0, x1, y1]."""
    cx, cy = float(bbox.center.position.x), float(bbox.center.position.y)
    hw, hh = float(bbox.size_x) / 2.0, float(bbox.size_y) / 2.0
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def detection_array(types: Mapping[str, Any], stamp_ns: int, frame_id: str, boxes: Sequence[np.ndarray],
                    scores: Sequence[float], class_id: str = "person",
                    ids: Optional[Sequence[str]] = None) -> Any:
    """vision_msgs/Detection2DArray of person boxes (pixels, [x0, y0, x1, y1])."""
    hdr = header(types, stamp_ns, frame_id)
    detections = []
    for i, (box, score) in enumerate(zip(boxes, scores)):
        covariance = np.zeros(36)
        pose = types["geometry_msgs/msg/PoseWithCovariance"](
            pose=types["geometry_msgs/msg/Pose"](
                position=types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=covariance)
        hypothesis = types["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=types["vision_msgs/msg/ObjectHypothesis"](class_id=class_id, score=float(score)),
            pose=pose)
        detections.append(types["vision_msgs/msg/Detection2D"](
            header=hdr, results=[hypothesis], bbox=bounding_box(types, box),
            id="" if ids is None else str(ids[i])))
    return types[DETECTION_ARRAY](header=hdr, detections=detections)


def camera_k(msg: Any) -> np.ndarray:
    """3x3 intrinsics of a CameraInfo (K)."""
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3)


# ------------------------------------------------------------------------------------ reading

@dataclass
class BagMessage:
    """One deserialised message: topic, type, log time (ns), the message object."""
    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any


@dataclass
class _RawMessage:
    connection: Connection
    log_time_ns: int
    data: bytes


class BagReader:
    """A rosbag2 bag opened for reading: a bag folder, or one .mcap / .db3 file.

    Raises FileNotFoundError for a missing path and BagError for anything that is not a readable
    bag. A truncated MCAP file (a recording that was killed) is read up to the last complete
    record; `truncated` says so and `warnings` explains. `skipped[topic]` counts messages that
    could not be deserialised.
    """

    def __init__(self, path: Union[str, Path], distro: str = "humble"):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag not found: {self.path}")
        self.default_typestore = default_typestore(distro)
        self.truncated = False
        self.warnings: List[str] = []
        self.skipped: Counter = Counter()
        self._reader: Optional[Reader] = None
        self._scan: Optional[_McapScan] = None
        self._open()
        self.typestore = self._bag_typestore()

    # -- opening
    def _storage_file(self) -> Path:
        if self.path.is_file():
            return self.path
        files = sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3"))
        if not files:
            raise BagError(f"{self.path} is not a rosbag2 bag: no metadata.yaml and no .mcap or .db3 "
                           f"file in it (it holds: {', '.join(sorted(p.name for p in self.path.iterdir())) or 'nothing'})")
        if len(files) > 1:
            self.warnings.append(f"{self.path} has no metadata.yaml; reading only {files[0].name} "
                                 f"of {len(files)} storage files")
        return files[0]

    def _open(self) -> None:
        target = self.path
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            target = self._storage_file()
            self.warnings.append(f"{self.path} has no metadata.yaml (the recording was not closed); "
                                 f"reading {target.name} directly")
        if target.is_file() and target.suffix not in (".mcap", ".db3"):
            raise BagError(f"{target}: not a rosbag2 storage file (expected a bag folder, .mcap or .db3)")
        try:
            reader = Reader(target)
            reader.open()
            self._reader = reader
            return
        except Exception as err:  # rosbags raises ReaderError, sqlite/apsw errors, yaml errors...
            first_error = err
        mcap = target if target.suffix == ".mcap" else None
        if mcap is None and target.is_dir():
            candidates = sorted(target.glob("*.mcap"))
            mcap = candidates[0] if candidates else None
        if mcap is not None:
            scan = _McapScan(mcap)
            if scan.connections:
                self._scan = scan
                self.truncated = True
                self.warnings.append(
                    f"{mcap} is truncated or damaged ({first_error}); recovered {scan.message_count} "
                    f"messages from its first {scan.good_bytes} of {scan.size} bytes")
                return
        raise BagError(f"cannot read bag {target}: {first_error}") from None

    def _bag_typestore(self) -> Typestore:
        """The default typestore; per connection, the bag's embedded definition when it has one."""
        self._stores: Dict[int, Typestore] = {}
        for conn in self.connections:
            text = conn.msgdef.data if conn.msgdef.format == MessageDefinitionFormat.MSG else ""
            if not text:
                continue
            try:
                self._stores[conn.id] = _store_from_definition(conn.msgtype, text)
            except Exception as err:  # a damaged or conflicting definition: keep ours
                self.warnings.append(f"definition of {conn.msgtype} on {conn.topic} in the bag is unreadable "
                                     f"({err}); using the built-in one")
        return self.default_typestore

    def _deserialize(self, conn: Connection, data: bytes) -> Any:
        store = self._stores.get(conn.id, self.default_typestore)
        return store.deserialize_cdr(data, conn.msgtype)

    def deserialize(self, topic: str, msgtype: str, data: bytes) -> Any:
        """CDR bytes of `topic` (from `raw_messages`) -> message object; raises on bad data."""
        conn = next((c for c in self.connections if c.topic == topic and c.msgtype == msgtype), None)
        if conn is None:
            raise BagError(f"no connection {topic} ({msgtype}) in {self.path}")
        return self._deserialize(conn, data)

    # -- contents
    @property
    def connections(self) -> List[Connection]:
        return list(self._reader.connections) if self._reader is not None else list(self._scan.connections)

    @property
    def topics(self) -> Dict[str, str]:
        """topic -> message type."""
        return {c.topic: c.msgtype for c in self.connections}

    def message_counts(self) -> Dict[str, int]:
        """topic -> number of messages (as the bag's index says)."""
        if self._scan is not None:
            return dict(self._scan.counts)
        counts: Counter = Counter()
        for c in self.connections:
            counts[c.topic] += int(c.msgcount)
        return dict(counts)

    @property
    def duration_ns(self) -> int:
        """Time from the first to the last message (0 when unknown or recovered from a damaged file)."""
        try:
            return max(0, int(self._reader.duration)) if self._reader is not None else 0
        except Exception:  # an empty bag has no duration
            return 0

    def describe_topics(self) -> str:
        """'topic (type, N msgs), ...' for error messages and the CLI."""
        counts = self.message_counts()
        if not self.topics:
            return "none (the bag is empty)"
        return ", ".join(f"{t} ({m}, {counts.get(t, 0)} msgs)" for t, m in sorted(self.topics.items()))

    def require_topic(self, topic: str, msgtypes: Optional[Sequence[str]] = None) -> str:
        """The type of `topic`; TopicNotFoundError (listing the bag's topics) if absent or of another type."""
        topics = self.topics
        if topic not in topics:
            raise TopicNotFoundError(f"topic {topic} not in bag {self.path}; its topics: {self.describe_topics()}")
        if msgtypes is not None and topics[topic] not in msgtypes:
            raise TopicNotFoundError(f"topic {topic} in bag {self.path} has type {topics[topic]}, expected "
                                     f"{' or '.join(msgtypes)}; its topics: {self.describe_topics()}")
        return topics[topic]

    def find_topic(self, msgtypes: Sequence[str]) -> Optional[str]:
        """The first topic (sorted) of one of `msgtypes`, or None."""
        for topic, msgtype in sorted(self.topics.items()):
            if msgtype in msgtypes:
                return topic
        return None

    def _raw(self, topics: Optional[Iterable[str]]) -> Iterator[_RawMessage]:
        wanted = None if topics is None else set(topics)
        conns = [c for c in self.connections if wanted is None or c.topic in wanted]
        if self._scan is not None:
            ids = {c.id for c in conns}
            for conn, t, data in self._scan.messages():
                if conn.id in ids:
                    yield _RawMessage(conn, t, data)
            return
        if not conns:
            return
        try:
            for conn, t, data in self._reader.messages(connections=conns):
                yield _RawMessage(conn, int(t), bytes(data))
        except Exception as err:  # damaged data inside an indexed bag
            self.truncated = True
            self.warnings.append(f"reading {self.path} stopped early: {err}")

    def messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
        """Deserialised messages of `topics` (None: all) in log-time order; bad ones are counted in `skipped`."""
        for raw in self._raw(topics):
            try:
                msg = self._deserialize(raw.connection, raw.data)
            except Exception:  # truncated/garbled CDR raises many types
                self.skipped[raw.connection.topic] += 1
                continue
            yield BagMessage(raw.connection.topic, raw.connection.msgtype, raw.log_time_ns, msg)

    def raw_messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[Tuple[str, str, int, bytes]]:
        """(topic, type, log time ns, CDR bytes), without deserialising."""
        for raw in self._raw(topics):
            yield raw.connection.topic, raw.connection.msgtype, raw.log_time_ns, raw.data

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


# ------------------------------------------------------------------------------------ MCAP recovery

def _u16(b: bytes, o: int) -> int:
    return struct.unpack_from("<H", b, o)[0]


def _u32(b: bytes, o: int) -> int:
    return struct.unpack_from("<I", b, o)[0]


def _u64(b: bytes, o: int) -> int:
    return struct.unpack_from("<Q", b, o)[0]


def _string(b: bytes, o: int) -> Tuple[str, int]:
    n = _u32(b, o)
    return b[o + 4:o + 4 + n].decode("utf8"), o + 4 + n


def _decompress(compression: str, data: bytes, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd  # what rosbags installs
        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame
        return lz4.frame.decompress(data)
    raise BagError(f"unknown MCAP chunk compression {compression!r}")


class _McapScan:
    """Sequential scan of an MCAP file without using its summary: recovers a truncated recording.

    Reads records from the start and stops at the first incomplete or malformed one; keeps the
    schemas, channels and messages seen before it (messages in memory: only for recovery).
    """

    def __init__(self, path: Path):
        self.path = path
        data = path.read_bytes()
        self.size = len(data)
        self.schemas: Dict[int, Tuple[str, str, str]] = {}
        self._channels: Dict[int, Tuple[int, str, str]] = {}
        self._messages: List[Tuple[int, int, bytes]] = []
        self.good_bytes = 0
        self.connections: List[Connection] = []
        self.counts: Counter = Counter()
        if data[:8] != _MCAP_MAGIC:
            return
        try:
            self._records(data, 8, len(data), top=True)
        except Exception:  # a damaged record (bad lengths, bad UTF-8, bad compression) ends the scan
            pass
        self.connections = [
            Connection(id=cid, topic=topic, msgtype=self.schemas.get(sid, ("", "", ""))[0],
                       msgdef=MessageDefinition(MessageDefinitionFormat.MSG, self.schemas.get(sid, ("", "", ""))[2]),
                       digest="", msgcount=0,
                       ext=ConnectionExtRosbag2(serialization_format=enc, offered_qos_profiles=[]), owner=None)
            for cid, (sid, topic, enc) in sorted(self._channels.items()) if sid in self.schemas
        ]
        known = {c.id for c in self.connections}
        self._messages = [m for m in self._messages if m[0] in known]
        self._messages.sort(key=lambda m: m[1])
        by_id = {c.id: c for c in self.connections}
        for cid, _, _ in self._messages:
            self.counts[by_id[cid].topic] += 1

    @property
    def message_count(self) -> int:
        return len(self._messages)

    def _records(self, data: bytes, start: int, end: int, top: bool) -> None:
        o = start
        while o + 9 <= end:
            op = data[o]
            length = _u64(data, o + 1)
            body_start, body_end = o + 9, o + 9 + length
            if body_end > end:
                return  # incomplete record: the file was cut here
            body = data[body_start:body_end]
            if op == 0x03:  # schema
                sid = _u16(body, 0)
                name, p = _string(body, 2)
                enc, p = _string(body, p)
                n = _u32(body, p)
                self.schemas[sid] = (name, enc, body[p + 4:p + 4 + n].decode("utf8"))
            elif op == 0x04:  # channel
                cid, sid = _u16(body, 0), _u16(body, 2)
                topic, p = _string(body, 4)
                enc, p = _string(body, p)
                self._channels[cid] = (sid, topic, enc)
            elif op == 0x05:  # message
                self._messages.append((_u16(body, 0), _u64(body, 14), bytes(body[22:])))
            elif op == 0x06:  # chunk
                size = _u64(body, 16)
                compression, p = _string(body, 28)
                n = _u64(body, p)
                inner = _decompress(compression, body[p + 8:p + 8 + n], size)
                self._records(inner, 0, len(inner), top=False)
            elif op == 0x02 and top:  # footer
                return
            o = body_end
            if top:
                self.good_bytes = o

    def messages(self) -> Iterator[Tuple[Connection, int, bytes]]:
        by_id = {c.id: c for c in self.connections}
        for cid, t, data in self._messages:
            yield by_id[cid], t, data
