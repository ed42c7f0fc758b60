"""What RViz shows for a recorded run, drawn without RViz: the overlay image beside the
MarkerArray seen by an orbiting 3D view (with a ground grid and the camera's axes).

    python -m hkmr_ros.rviz_view OUTPUT_BAG --out view.png [--frame N]

The bag is one recorded from the node (hkmr_play --record, ros2 bag record) or written by
`hkmr-bag process`. Markers are replayed in order as RViz would (ADD replaces, DELETE and
DELETEALL remove) up to the overlay frame chosen, so an ended track's skeleton is gone there too.
OpenCV only (no display, no ROS).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from hkmr_ros.bags import BagReader
from hkmr_ros.images import decode_compressed, decode_image

MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
LINE_LIST, SPHERE_LIST, TEXT_VIEW_FACING, TRIANGLE_LIST = 5, 7, 9, 11
DELETE, DELETEALL = 2, 3


def view_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """3x3 rotation from the camera optical frame (x right, y down, z forward) to the view's."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return rx @ ry


class View:
    """A pinhole looking at `target` from `distance`, rotated by yaw/pitch about the target."""

    def __init__(self, target: np.ndarray, distance: float, yaw: float, pitch: float, size: Tuple[int, int]):
        self.r = view_rotation(yaw, pitch)
        self.target = np.asarray(target, dtype=np.float64)
        self.distance = float(distance)
        self.w, self.h = size
        self.f = 0.9 * self.w

    def project(self, pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Nx3 points -> (Nx2 pixels, N depths)."""
        q = (np.asarray(pts, dtype=np.float64).reshape(-1, 3) - self.target) @ self.r.T
        z = q[:, 2] + self.distance
        zc = np.maximum(z, 1e-3)
        uv = np.stack([self.w / 2 + self.f * q[:, 0] / zc, self.h / 2 + self.f * q[:, 1] / zc], 1)
        return uv, z


def _bgr(rgba) -> Tuple[int, int, int]:
    return int(255 * rgba.b), int(255 * rgba.g), int(255 * rgba.r)


def _pt(uv) -> Tuple[int, int]:
    x, y = np.clip(np.nan_to_num(uv, nan=-1e4), -1e4, 1e4)
    return int(round(x)), int(round(y))


def replay_markers(msgs: Sequence, upto_stamp_ns: int) -> Dict[Tuple[str, int], object]:
    """The markers alive after every MarkerArray stamped up to `upto_stamp_ns`."""
    alive: Dict[Tuple[str, int], object] = {}
    for arr in msgs:
        for m in arr.markers:
            t = int(m.header.stamp.sec) * 1_000_000_000 + int(m.header.stamp.nanosec)
            if t > upto_stamp_ns:
                continue
            key = (m.ns, int(m.id))
            if m.action == DELETEALL:
                alive.clear()
            elif m.action == DELETE:
                alive.pop(key, None)
            else:
                alive[key] = m
    return alive


def draw_markers(markers: Sequence, size: Tuple[int, int], yaw: float = -40.0, pitch: float = 25.0) -> np.ndarray:
    """An RViz-like 3D view (BGR) of LINE_LIST / SPHERE_LIST / TEXT / TRIANGLE_LIST markers."""
    w, h = size
    img = np.full((h, w, 3), 48, np.uint8)
    pts_all = [np.array([[p.x, p.y, p.z] for p in m.points]) for m in markers if len(m.points)]
    cloud = np.concatenate(pts_all) if pts_all else np.array([[0.0, 0.0, 4.0]])
    cloud = cloud[np.all(np.isfinite(cloud), 1)] if np.isfinite(cloud).any() else np.array([[0.0, 0.0, 4.0]])
    target = np.median(cloud, 0)
    extent = float(np.percentile(np.linalg.norm(cloud - target, axis=1), 95)) if len(cloud) > 1 else 1.0
    view = View(target, max(3.0 * extent, 2.5), yaw, pitch, size)
    floor = float(np.max(cloud[:, 1])) if len(cloud) else 1.0
    # ground grid (y down: the floor is at the lowest joints), 0.5 m cells
    for k in range(-10, 11):
        for a, b in (((target[0] + 0.5 * k, floor, target[2] - 5), (target[0] + 0.5 * k, floor, target[2] + 5)),
                     ((target[0] - 5, floor, target[2] + 0.5 * k), (target[0] + 5, floor, target[2] + 0.5 * k))):
            uv, z = view.project(np.array([a, b]))
            if np.all(z > 0.05):
                cv2.line(img, _pt(uv[0]), _pt(uv[1]), (90, 90, 94), 1, cv2.LINE_AA)
    # the camera (origin of the optical frame): x red, y green, z blue, as RViz's TF axes
    uv, z = view.project(np.array([[0, 0, 0], [0.3, 0, 0], [0, 0.3, 0], [0, 0, 0.3]]))
    if np.all(z > 0.05):
        for k, col in ((1, (0, 0, 255)), (2, (0, 255, 0)), (3, (255, 0, 0))):
            cv2.line(img, _pt(uv[0]), _pt(uv[k]), col, 2, cv2.LINE_AA)
        cv2.putText(img, "camera", _pt(uv[0] + [4, -6]), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220, 220, 220), 1, cv2.LINE_AA)
    # far to near, so nearer people cover farther ones
    order = sorted(markers, key=lambda m: -float(np.mean([p.z for p in m.points])) if len(m.points) else 0.0)
    for m in order:
        pts = np.array([[p.x, p.y, p.z] for p in m.points]) if len(m.points) else np.zeros((0, 3))
        cols = list(m.colors) if len(m.colors) == len(pts) else [m.color] * len(pts)
        if m.type == TRIANGLE_LIST and len(pts) >= 3:
            uv, z = view.project(pts)
            for i in range(0, len(pts) - 2, 3):
                if np.all(z[i:i + 3] > 0.05):
                    cv2.fillConvexPoly(img, np.round(uv[i:i + 3]).astype(np.int32), _bgr(cols[i]), cv2.LINE_AA)
        elif m.type == LINE_LIST and len(pts) >= 2:
            uv, z = view.project(pts)
            for i in range(0, len(pts) - 1, 2):
                if z[i] > 0.05 and z[i + 1] > 0.05:
                    cv2.line(img, _pt(uv[i]), _pt(uv[i + 1]), _bgr(cols[i]), 3, cv2.LINE_AA)
        elif m.type == SPHERE_LIST and len(pts):
            uv, z = view.project(pts)
            for i in range(len(pts)):
                if z[i] > 0.05:
                    r = max(2, int(round(view.f * float(m.scale.x) / 2 / z[i])))
                    cv2.circle(img, _pt(uv[i]), r, _bgr(cols[i]), -1, cv2.LINE_AA)
        elif m.type == TEXT_VIEW_FACING:
            uv, z = view.project(np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z]]))
            if z[0] > 0.05:
                cv2.putText(img, m.text, _pt(uv[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _bgr(m.color), 1, cv2.LINE_AA)
    return img


def frame_image(msg, msgtype: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        return decode_compressed(msg.format, msg.data)
    return decode_image(msg.encoding, msg.width, msg.height, msg.step, msg.data, msg.is_bigendian)


def render(bag: Path, out: Path, frame: Optional[int] = None, overlay_topic: Optional[str] = None,
           markers_topic: Optional[str] = None, title: str = "") -> Path:
    """Write the side-by-side picture of one frame (default: the middle overlay) to `out`."""
    with BagReader(bag) as reader:
        topics = reader.topics
        overlay_topic = overlay_topic or _pick(topics, IMAGE_TYPES, "overlay", bag)
        markers_topic = markers_topic or _pick(topics, (MARKER_ARRAY,), "markers", bag)
        overlays, arrays = [], []
        for m in reader.messages([overlay_topic, markers_topic]):
            (overlays if m.topic == overlay_topic else arrays).append(m)
    if not overlays:
        raise ValueError(f"no messages on {overlay_topic} in {bag}")
    idx = len(overlays) // 2 if frame is None else min(max(int(frame), 0), len(overlays) - 1)
    om = overlays[idx]
    stamp = int(om.msg.header.stamp.sec) * 1_000_000_000 + int(om.msg.header.stamp.nanosec)
    rgb = frame_image(om.msg, om.msgtype)
    h = rgb.shape[0]
    left = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    alive = replay_markers([a.msg for a in arrays], stamp)
    right = draw_markers(list(alive.values()), (int(h * 4 / 3), h))
    bar = np.full((28, left.shape[1] + right.shape[1], 3), 30, np.uint8)
    label = title or f"{bag.name}: {overlay_topic} and {markers_topic}, stamp {stamp / 1e9:.3f} s"
    cv2.putText(bar, label, (8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA)
    img = np.vstack([bar, np.hstack([left, right])])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img):
        raise ValueError(f"cannot write {out}")
    return out


def _pick(topics: Dict[str, str], types: Sequence[str], hint: str, bag: Path) -> str:
    cands = [t for t, m in topics.items() if m in types]
    named = [t for t in cands if hint in t]
    if named or cands:
        return (named or cands)[0]
    raise ValueError(f"{bag} has no {'/'.join(types)} topic; it has: {', '.join(sorted(topics))}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hkmr_ros.rviz_view", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--frame", type=int, help="overlay frame index (default: the middle one)")
    ap.add_argument("--overlay-topic")
    ap.add_argument("--markers-topic")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    try:
        path = render(args.bag, args.out, args.frame, args.overlay_topic, args.markers_topic, args.title)
    except (FileNotFoundError, ValueError) as e:
        print(f"rviz_view: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
