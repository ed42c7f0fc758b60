"""FrameResult -> ROS messages (PersonMeshArray, MarkerArray, overlay image).

Message classes come from a `types` mapping "pkg/msg/Name" -> class: a rosbags typestore's
`.types` offline, or the rclpy classes on the robot (hkmr_ros.ros_types has no rclpy; the node
passes e.g. {"visualization_msgs/msg/Marker": Marker, ...}). Both accept the same keyword
fields; we pass every field explicitly (rosbags classes have no defaults), Python int/float
scalars (rclpy checks types), float32 numpy arrays for fixed arrays, and byte sequences in the
form each kind wants (`_uint8`).
"""
from __future__ import annotations

import array
import colorsys
import dataclasses
from typing import List, Mapping, Optional, Tuple

import cv2
import numpy as np

from hkmr_ros.people import FrameResult, Person
from hkmr_ros.skeleton import BONE_COLOURS, BONES, CHAIN_COLOURS, JOINT_TO_CHAIN, NUM_JOINTS

Types = Mapping[str, type]

# Marker ids per person: track_id * MARKERS_PER_PERSON + one of these.
BONES_ID, JOINTS_ID, LABEL_ID, MESH_ID = 0, 1, 2, 3
MARKERS_PER_PERSON = 4
LINE_LIST, SPHERE_LIST, TEXT_VIEW_FACING, TRIANGLE_LIST = 5, 7, 9, 11
ADD, DELETE = 0, 2


def _cls(types: Types, name: str):
    try:
        return types[name]
    except KeyError:
        raise KeyError(f"message type {name!r} missing from the types mapping (have {len(types)} types)") from None


def _is_rosbags(cls) -> bool:
    return dataclasses.is_dataclass(cls)


def _uint8(cls, data) -> object:
    """Bytes for a uint8[] field: numpy for rosbags classes, array('B') for rclpy."""
    buf = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    return np.frombuffer(buf, dtype=np.uint8).copy() if _is_rosbags(cls) else array.array("B", buf)


def header(types: Types, stamp_ns: int, frame_id: str):
    t = _cls(types, "builtin_interfaces/msg/Time")(sec=int(stamp_ns // 1_000_000_000),
                                                     nanosec=int(stamp_ns % 1_000_000_000))
    return _cls(types, "std_msgs/msg/Header")(stamp=t, frame_id=str(frame_id))


def _point(types: Types, p) -> object:
    return _cls(types, "geometry_msgs/msg/Point")(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _points(types: Types, arr) -> List[object]:
    """Nx3 array -> geometry_msgs/Point list (Python floats via tolist: fast, and what rclpy wants)."""
    cls = _cls(types, "geometry_msgs/msg/Point")
    return [cls(x=a, y=b, z=c) for a, b, c in np.asarray(arr, dtype=np.float64).reshape(-1, 3).tolist()]


def _f32(values, n: int) -> np.ndarray:
    a = np.asarray(values, dtype=np.float32).reshape(-1)
    if a.size != n:
        raise ValueError(f"expected {n} values, got {a.size}")
    return np.ascontiguousarray(a)


# --- PersonMeshArray ----------------------------------------------------------------------------

def person_mesh(person: Person, types: Types, body_model: str):
    """One Person -> hkmr_ros/msg/PersonMesh."""
    b = np.asarray(person.box, dtype=np.float64)
    bbox = _cls(types, "vision_msgs/msg/BoundingBox2D")(
        center=_cls(types, "vision_msgs/msg/Pose2D")(
            position=_cls(types, "vision_msgs/msg/Point2D")(x=float((b[0] + b[2]) / 2), y=float((b[1] + b[3]) / 2)),
            theta=0.0),
        size_x=float(b[2] - b[0]), size_y=float(b[3] - b[1]))
    quat = _cls(types, "geometry_msgs/msg/Quaternion")
    return _cls(types, "hkmr_ros/msg/PersonMesh")(
        track_id=int(person.track_id), score=float(person.score), bbox=bbox,
        pose=_f32(person.pose, 72), betas=_f32(person.betas, 10), camera=_f32(person.cam, 3),
        translation=_point(types, person.translation),
        joints=_points(types, np.asarray(person.joints).reshape(NUM_JOINTS, 3)),
        joint_orientations=[quat(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
                            for q in np.asarray(person.joint_orientations).reshape(NUM_JOINTS, 4)],
        joint_confidence=_f32(person.joint_confidence, NUM_JOINTS), body_model=str(body_model))


def person_mesh_array(result: FrameResult, types: Types, body_model: str):
    """FrameResult -> hkmr_ros/msg/PersonMeshArray with the image's stamp and frame_id."""
    return _cls(types, "hkmr_ros/msg/PersonMeshArray")(
        header=header(types, result.stamp_ns, result.frame_id),
        people=[person_mesh(p, types, body_model) for p in result.people])


# --- MarkerArray --------------------------------------------------------------------------------

def track_colour(track_id: int) -> Tuple[float, float, float]:
    """A distinct, stable RGB in [0, 1] per track id (golden-ratio hues)."""
    h = (int(track_id) * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(h, 0.75, 0.95)


def _colour(types: Types, rgb, a: float = 1.0):
    return _cls(types, "std_msgs/msg/ColorRGBA")(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=float(a))


def _marker(types: Types, hdr, ns: str, mid: int, mtype: int, action: int, *, scale=(0.0, 0.0, 0.0),
            colour=(1.0, 1.0, 1.0), alpha: float = 1.0, points=(), colors=(), text: str = "",
            position=(0.0, 0.0, 0.0), lifetime_s: float = 0.0):
    g = lambda n: _cls(types, n)  # noqa: E731
    pose = g("geometry_msgs/msg/Pose")(
        position=_point(types, position),
        orientation=g("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=0.0, w=1.0))
    img_cls = g("sensor_msgs/msg/CompressedImage")
    texture = img_cls(header=header(types, 0, ""), format="", data=_uint8(img_cls, b""))
    mesh_cls = g("visualization_msgs/msg/MeshFile")
    life_ns = int(round(max(lifetime_s, 0.0) * 1e9))
    return g("visualization_msgs/msg/Marker")(
        header=hdr, ns=str(ns), id=int(mid), type=int(mtype), action=int(action), pose=pose,
        scale=g("geometry_msgs/msg/Vector3")(x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
        color=_colour(types, colour, alpha),
        lifetime=g("builtin_interfaces/msg/Duration")(sec=life_ns // 1_000_000_000, nanosec=life_ns % 1_000_000_000),
        frame_locked=False, points=list(points), colors=list(colors), texture_resource="", texture=texture,
        uv_coordinates=[], text=str(text), mesh_resource="",
        mesh_file=mesh_cls(filename="", data=_uint8(mesh_cls, b"")), mesh_use_embedded_materials=False)


def person_markers(person: Person, types: Types, hdr, ns: str = "hkmr",
                   mesh_faces: Optional[np.ndarray] = None, line_width: float = 0.02,
                   joint_size: float = 0.04, lifetime_s: float = 0.5) -> List[object]:
    """One person's markers: bones (LINE_LIST, chain colours), joints (SPHERE_LIST, chain
    colours), an id label in the track's colour above the head, and the mesh (TRIANGLE_LIST in
    the track's colour) when `mesh_faces` (Fx3) and the person's vertices are given."""
    base = int(person.track_id) * MARKERS_PER_PERSON
    j = np.asarray(person.joints, dtype=np.float64).reshape(NUM_JOINTS, 3)
    col = track_colour(person.track_id)
    bone_pts = _points(types, j[np.asarray(BONES).reshape(-1)])
    bone_cols = [_colour(types, c) for c in BONE_COLOURS for _ in (0, 1)]
    out = [
        _marker(types, hdr, ns, base + BONES_ID, LINE_LIST, ADD, scale=(line_width, 0, 0),
                points=bone_pts, colors=bone_cols, lifetime_s=lifetime_s),
        _marker(types, hdr, ns, base + JOINTS_ID, SPHERE_LIST, ADD, scale=(joint_size,) * 3,
                points=_points(types, j),
                colors=[_colour(types, CHAIN_COLOURS[JOINT_TO_CHAIN[k]]) for k in range(NUM_JOINTS)],
                lifetime_s=lifetime_s),
        _marker(types, hdr, ns, base + LABEL_ID, TEXT_VIEW_FACING, ADD, scale=(0, 0, 0.12), colour=col,
                text=f"id {person.track_id}", position=j[15] - np.array([0.0, 0.25, 0.0]),
                lifetime_s=lifetime_s),
    ]
    if mesh_faces is not None and person.vertices is not None:
        faces = np.asarray(mesh_faces, dtype=np.int64).reshape(-1, 3)
        v = np.asarray(person.vertices, dtype=np.float64)
        if faces.size and faces.max() < len(v) and faces.min() >= 0:
            tri = v[faces.reshape(-1)]
            out.append(_marker(types, hdr, ns, base + MESH_ID, TRIANGLE_LIST, ADD, scale=(1, 1, 1),
                               colour=col, alpha=0.6, points=_points(types, tri),
                               lifetime_s=lifetime_s))
    return out


def marker_array(result: FrameResult, types: Types, ns: str = "hkmr",
                 mesh_faces: Optional[np.ndarray] = None, lifetime_s: float = 0.5):
    """FrameResult -> visualization_msgs/MarkerArray: every person's markers, and DELETE for all
    markers of the tracks that ended this frame (so no stale skeleton stays in RViz)."""
    hdr = header(types, result.stamp_ns, result.frame_id)
    markers: List[object] = []
    for p in result.people:
        markers += person_markers(p, types, hdr, ns, mesh_faces, lifetime_s=lifetime_s)
        if mesh_faces is None or p.vertices is None:   # a mesh shown earlier must not linger
            markers.append(_marker(types, hdr, ns, p.track_id * MARKERS_PER_PERSON + MESH_ID, TRIANGLE_LIST, DELETE))
    for tid in result.ended_track_ids:
        for k in range(MARKERS_PER_PERSON):
            markers.append(_marker(types, hdr, ns, int(tid) * MARKERS_PER_PERSON + k, LINE_LIST, DELETE))
    return _cls(types, "visualization_msgs/msg/MarkerArray")(markers=markers)


# --- images -------------------------------------------------------------------------------------

def _pixels(points) -> List[Tuple[int, int]]:
    """Nx2 image points -> integer pixels OpenCV can draw (NaN and far-off points clipped away)."""
    xy = np.clip(np.nan_to_num(np.asarray(points, dtype=np.float64).reshape(-1, 2), nan=-1e4), -1e4, 1e4)
    return [(int(x), int(y)) for x, y in np.rint(xy)]


def _pt(p) -> Tuple[int, int]:
    return _pixels(p)[0]


# Drawing colours as 0..255 tuples, computed once.
_BONE_RGB = tuple(tuple(int(255 * v) for v in c) for c in BONE_COLOURS)
_JOINT_RGB = tuple(tuple(int(255 * v) for v in CHAIN_COLOURS[JOINT_TO_CHAIN[k]]) for k in range(NUM_JOINTS))


def overlay_image(image_rgb: np.ndarray, result: FrameResult, boxes: bool = True) -> np.ndarray:
    """A copy of the frame with each person's skeleton (chain colours), box and id drawn."""
    img = np.ascontiguousarray(np.array(image_rgb, dtype=np.uint8, copy=True))
    scale = max(img.shape[0], img.shape[1]) / 640.0
    th = max(1, int(round(2 * scale)))
    for p in result.people:
        col = tuple(int(255 * c) for c in track_colour(p.track_id))
        if p.joints_2d is not None:
            j = _pixels(p.joints_2d)
            for (a, b), c in zip(BONES, _BONE_RGB):
                cv2.line(img, j[a], j[b], c, th, cv2.LINE_AA)
            for k in range(NUM_JOINTS):
                cv2.circle(img, j[k], th + 1, _JOINT_RGB[k], -1, cv2.LINE_AA)
        b = np.asarray(p.box, dtype=np.float64)
        if boxes:
            cv2.rectangle(img, _pt(b[:2]), _pt(b[2:]), col, th)
        org = _pt((b[0], b[1] - 4 * scale))
        cv2.putText(img, f"id {p.track_id}", org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), th + 2, cv2.LINE_AA)
        cv2.putText(img, f"id {p.track_id}", org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, col, th, cv2.LINE_AA)
    return img


def compressed_image(types: Types, image_rgb: np.ndarray, stamp_ns: int, frame_id: str,
                     fmt: str = "jpeg", quality: int = 85):
    """HxWx3 RGB -> sensor_msgs/CompressedImage (jpeg or png)."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.lower())
    if ext is None:
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    ok, enc = cv2.imencode(ext, cv2.cvtColor(np.asarray(image_rgb, np.uint8), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else [])
    if not ok:
        raise ValueError("image encoding failed")
    cls = _cls(types, "sensor_msgs/msg/CompressedImage")
    return cls(header=header(types, stamp_ns, frame_id), format="jpeg" if ext == ".jpg" else "png",
               data=_uint8(cls, enc))


def raw_image(types: Types, image_rgb: np.ndarray, stamp_ns: int, frame_id: str):
    """HxWx3 RGB -> sensor_msgs/Image rgb8."""
    img = np.ascontiguousarray(np.asarray(image_rgb, np.uint8))
    h, w = img.shape[:2]
    cls = _cls(types, "sensor_msgs/msg/Image")
    return cls(header=header(types, stamp_ns, frame_id), height=int(h), width=int(w), encoding="rgb8",
               is_bigendian=0, step=int(3 * w), data=_uint8(cls, img))
