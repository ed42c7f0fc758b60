"""Synthetic camera streams of several people walking, as rosbag2 bags with exact ground truth.

The renderer side of `hkmr-bag synth`. A fixed camera (pinhole, no distortion, pitched down)
watches a room; people with their own shape (betas) and clothing colours walk scripted paths on
the floor: across the view, turning back, towards the camera, passing in front of each other,
stopping and turning on the spot. The walking pose is a gait cycle built from the anatomical
angles of `training.body.pose_sampler` (legs in anti-phase, arms swinging against the legs), its
phase advancing with the distance walked, so feet and arms move like a walk, not like noise.
All people are drawn in one pass of the headless renderer (`training.render`), so people hide
each other correctly and the depth buffer gives per-joint visibility.

Topics (frame_id `camera_optical_frame`, one message of each per frame, stamps from
`START_NS`):
- /camera/image_raw/compressed  sensor_msgs/CompressedImage (JPEG), or with `raw`
  /camera/image_raw sensor_msgs/Image (rgb8);
- /camera/camera_info           sensor_msgs/CameraInfo;
- /ground_truth/people          hkmr_ros/PersonMeshArray: per person in view track_id = the
  person's id (stable), bbox = the box of the projected mesh clipped to the image, pose (global
  orientation in the camera optical frame), betas, camera = the weak-perspective camera that
  best maps the model's joints onto their projection in the 1.2x square crop of the box,
  translation = pelvis, joints = the 24 SMPL joints (metres, camera optical frame),
  joint_orientations, joint_confidence = 1 for a joint inside the image and not hidden (by the
  body itself or by someone in front), else 0, and score = the fraction of visible joints;
- /detections (optional)        vision_msgs/Detection2DArray: the true boxes of people with at
  least a quarter of their joints visible, slightly jittered, class "person".

The choreography is written for 8 s and stretched to other durations. Import order: this
module imports `training.datasets.synthetic` (the pose sampler, hence roma) before creating an
EGL context, as `training/render.py` requires.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm import tqdm

# imports roma (pose sampler) before any EGL context, see training/render.py
from training.body.pose_sampler import CENTRAL_ANGLES, SIDE_ANGLES, angles_to_pose, clamp_to_ranges
from training.datasets.crop import box_to_center_scale, normalise_keypoints, transform_points
from training.datasets.synthetic import (
    GeneratorConfig,
    global_orientation,
    keypoint_visibility,
    skinning_weights,
    vertex_colours,
    vertex_materials,
    HEAD_JOINT,
)
from hkmr_ros.camera import CameraModel
from training.render import Light, MeshRenderer

from hkmr_ros import bags
from hkmr_ros.skeleton import NUM_JOINTS, SMPL_PARENTS

START_NS = 1_700_000_000 * 1_000_000_000
FRAME_ID = "camera_optical_frame"
IMAGE_TOPIC = "/camera/image_raw/compressed"
RAW_IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GROUND_TRUTH_TOPIC = "/ground_truth/people"
DETECTIONS_TOPIC = "/detections"
SCRIPT_SECONDS = 8.0  # the choreography below is written for this duration


@dataclass(frozen=True)
class SceneConfig:
    """Camera and stream. Angles in degrees, lengths in metres."""
    width: int = 640
    height: int = 480
    fps: float = 15.0
    seconds: float = 8.0
    hfov: float = 60.0
    camera_height: float = 1.5  # above the floor
    pitch: float = 10.0  # camera looks down by this much
    people: int = 6  # the first N walkers of the script
    seed: int = 0
    jpeg_quality: int = 85
    detection_jitter: float = 0.02  # std of the detection box jitter, fraction of the box size

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    @property
    def camera(self) -> CameraModel:
        fx = self.width / 2.0 / math.tan(math.radians(self.hfov) / 2.0)
        return CameraModel(fx=fx, fy=fx, cx=(self.width - 1) / 2.0, cy=(self.height - 1) / 2.0,
                           width=self.width, height=self.height)


@dataclass(frozen=True)
class Walker:
    """A scripted person: floor positions (x right, z away from the camera, metres) at times (s).

    Before the first and after the last waypoint the person stands still; between waypoints
    they walk in a straight line at constant speed.
    """
    waypoints: Tuple[Tuple[float, float, float], ...]  # (t, x, z)
    arm_swing: float = 1.0
    shape_scale: float = 0.8  # betas ~ N(0, shape_scale^2)
    stride_length: float = 1.35  # metres per gait cycle (two steps)


# Entries are staggered so that the 8 s stream has 1 person (0-2 s), then 3 (from ~2.7 s),
# then 6 (from ~5.5 s) in full view, with crossings in depth.
DEFAULT_SCRIPT: Tuple[Walker, ...] = (
    Walker(((0.0, -1.7, 4.0), (3.2, 1.6, 4.5), (6.2, -0.9, 3.7), (8.0, -1.5, 4.0))),
    Walker(((1.9, 4.3, 6.0), (8.0, -2.6, 5.4)), arm_swing=0.8),
    Walker(((1.9, -3.9, 5.0), (5.0, -0.6, 3.3), (8.0, 1.2, 3.3)), arm_swing=1.2),
    Walker(((4.6, 3.3, 3.7), (8.0, -0.5, 4.8))),
    Walker(((4.5, -4.6, 7.0), (8.0, -0.4, 6.4)), arm_swing=0.7),
    Walker(((4.4, 5.4, 7.6), (6.4, 2.5, 7.2), (7.1, 2.5, 7.2), (8.0, 3.4, 6.8))),
)


# ------------------------------------------------------------------------------ motion (pure functions)

def walker_position(walker: Walker, t: float) -> np.ndarray:
    """(2,) floor position (x, z) at time t, linear between waypoints, held outside them."""
    times = np.array([w[0] for w in walker.waypoints])
    xs = np.array([w[1] for w in walker.waypoints])
    zs = np.array([w[2] for w in walker.waypoints])
    return np.array([np.interp(t, times, xs), np.interp(t, times, zs)])


def walker_distance(walker: Walker, t: float) -> float:
    """Path length walked up to time t (metres)."""
    distance = 0.0
    for (t0, x0, z0), (t1, x1, z1) in zip(walker.waypoints[:-1], walker.waypoints[1:]):
        if t <= t0:
            break
        frac = min(1.0, (t - t0) / max(t1 - t0, 1e-9))
        distance += frac * math.hypot(x1 - x0, z1 - z0)
    return distance


def walker_heading(walker: Walker, t: float, window: float = 0.35) -> float:
    """Walking direction (radians, atan2(dx, dz)) smoothed over +-window s, so turns are gradual.

    When standing, the direction of the nearest movement (earlier first) is kept.
    """
    step = walker_position(walker, t + window) - walker_position(walker, t - window)
    if np.linalg.norm(step) > 0.02:
        return float(math.atan2(step[0], step[1]))
    for dt in np.arange(window, 10.0, 0.1):
        for sign in (-1.0, 1.0):
            tc = t + sign * dt
            step = walker_position(walker, tc + window) - walker_position(walker, tc - window)
            if np.linalg.norm(step) > 0.02:
                return float(math.atan2(step[0], step[1]))
    return math.pi  # facing the camera


def walker_speed(walker: Walker, t: float, window: float = 0.2) -> float:
    """Speed (m/s), smoothed like the heading so the gait starts and stops gradually."""
    step = walker_position(walker, t + window) - walker_position(walker, t - window)
    return float(np.linalg.norm(step) / (2 * window))


def gait_angles(phase: np.ndarray, stride: np.ndarray, arm_swing: np.ndarray) -> Dict[str, torch.Tensor]:
    """Anatomical angles (degrees) of a walk, N people: phase (radians), stride amplitude 0 (standing) .. ~1.3.

    The same gait model as `pose_sampler._walking`, without its noise: legs in anti-phase, the
    knee flexing in swing, each arm swinging against its own leg.
    """
    n = len(phase)
    p_left = torch.as_tensor(phase, dtype=torch.float64)
    s = torch.as_tensor(stride, dtype=torch.float64)
    arm = torch.as_tensor(arm_swing, dtype=torch.float64)
    a = {f"{side}:{k}": torch.zeros(n, dtype=torch.float64) for side in ("left", "right") for k in SIDE_ANGLES}
    a.update({k: torch.zeros(n, dtype=torch.float64) for k in CENTRAL_ANGLES})
    for side, p in (("left", p_left), ("right", p_left + math.pi)):
        a[f"{side}:hip_flexion"] = 3.0 + s * 22.0 * torch.sin(p)
        a[f"{side}:knee_flexion"] = 4.0 + s * 50.0 * torch.cos(p).clamp(min=0) ** 1.5
        a[f"{side}:ankle_dorsiflexion"] = s * (5.0 * torch.sin(p) - 10.0 * torch.cos(p).clamp(min=0))
        a[f"{side}:hip_abduction"] = torch.full((n,), 3.0, dtype=torch.float64)
        a[f"{side}:hip_external_rotation"] = torch.full((n,), 5.0, dtype=torch.float64)
        forward = -s * arm * 20.0 * torch.sin(p)
        sideways = torch.full((n,), 10.0, dtype=torch.float64)
        a[f"{side}:shoulder_elevation"] = torch.sqrt(forward ** 2 + sideways ** 2)
        a[f"{side}:shoulder_plane"] = torch.rad2deg(torch.atan2(forward, sideways))
        a[f"{side}:elbow_flexion"] = 12.0 + s * arm * 10.0 * (1 + torch.sin(-p))
        a[f"{side}:wrist_flexion"] = torch.full((n,), 5.0, dtype=torch.float64)
    a["spine_rotation_left"] = 6.0 * s * torch.sin(p_left)
    a["spine_flexion"] = 2.0 + 2.0 * s
    a["neck_flexion"] = torch.full((n,), 5.0, dtype=torch.float64)
    return a


def gait_pose(phase: np.ndarray, stride: np.ndarray, arm_swing: np.ndarray) -> np.ndarray:
    """Nx72 SMPL axis-angle body pose of the gait (zero global orientation)."""
    return angles_to_pose(clamp_to_ranges(gait_angles(phase, stride, arm_swing))).numpy()


def joint_orientations(pose: np.ndarray) -> np.ndarray:
    """24x4 quaternions (x, y, z, w): each joint's global rotation, the product root -> joint."""
    local = Rotation.from_rotvec(np.asarray(pose, dtype=np.float64).reshape(NUM_JOINTS, 3))
    globals_: List[Rotation] = []
    for j in range(NUM_JOINTS):
        parent = SMPL_PARENTS[j]
        globals_.append(local[j] if parent < 0 else globals_[parent] * local[j])
    return np.stack([g.as_quat() for g in globals_])


def pitch_rotation(pitch_deg: float) -> np.ndarray:
    """3x3 world (camera-level: x right, y down, z forward) -> camera optical frame, camera looking down."""
    return Rotation.from_euler("x", pitch_deg, degrees=True).as_matrix()


def project(points: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Nx3 camera-frame points -> Nx2 pixels."""
    z = np.maximum(points[:, 2:3], 1e-6)
    return points[:, :2] / z * np.array([camera.fx, camera.fy]) + np.array([camera.cx, camera.cy])


def weak_perspective_camera(model_joints: np.ndarray, joints_px: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(s, tx, ty) that best maps the model's joints (24x3, as the body model outputs them) onto
    their pixels in the 1.2x square crop of `box`, normalised to [-1, 1] (least squares)."""
    center, scale = box_to_center_scale(*box, rescale=1.2)
    target = normalise_keypoints(transform_points(joints_px, center, scale))
    xy = model_joints[:, :2]
    xy_c, target_c = xy - xy.mean(0), target - target.mean(0)
    s = float((xy_c * target_c).sum() / max((xy_c ** 2).sum(), 1e-12))
    t = target.mean(0) - s * xy.mean(0)
    return np.array([s, t[0], t[1]])


def room_background(cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 uint8: a wall and a tiled floor seen by the pitched camera (the floor in perspective)."""
    cam = cfg.camera
    h, w = cfg.height, cfg.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(xx - cam.cx) / cam.fx, (yy - cam.cy) / cam.fy, np.ones_like(xx)], -1)
    world = rays @ pitch_rotation(cfg.pitch)  # R^T applied to each ray (rows)
    wall_colour = np.array([200.0, 196.0, 186.0]) * rng.uniform(0.85, 1.05)
    floor_a = np.array([150.0, 122.0, 96.0]) * rng.uniform(0.85, 1.1)
    floor_b = floor_a * 0.86
    image = np.broadcast_to(wall_colour, (h, w, 3)).copy()
    # a soft vertical gradient on the wall
    image *= (0.9 + 0.1 * (yy / h))[..., None]
    down = world[..., 1]
    floor = down > 1e-3
    depth = np.where(floor, cfg.camera_height / np.maximum(down, 1e-3), 0.0)
    fx, fz = world[..., 0] * depth, world[..., 2] * depth
    tiles = ((np.floor(fx / 0.6) + np.floor(fz / 0.6)) % 2)[..., None]
    floor_colour = floor_a + tiles * (floor_b - floor_a)
    fade = np.clip(depth / 25.0, 0, 1)[..., None]  # tiles blur into the mean far away
    floor_colour = floor_colour * (1 - fade) + (floor_a + floor_b) / 2 * fade
    image = np.where(floor[..., None] & (depth < 60)[..., None], floor_colour, image)
    return np.clip(image, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ the stream

@dataclass
class PersonTruth:
    """Ground truth of one person in one frame (camera optical frame, metres, pixels)."""
    person_id: int
    box: np.ndarray  # (4,) x0, y0, x1, y1, clipped to the image
    pose: np.ndarray  # (72,)
    betas: np.ndarray  # (10,)
    camera: np.ndarray  # (3,)
    joints: np.ndarray  # (24, 3)
    orientations: np.ndarray  # (24, 4) xyzw
    visible: np.ndarray  # (24,) bool

    @property
    def visible_fraction(self) -> float:
        return float(self.visible.mean())


@dataclass
class Frame:
    """One rendered frame: image HxWx3 uint8 RGB, stamp, the people in view."""
    index: int
    stamp_ns: int
    image: np.ndarray
    people: List[PersonTruth] = field(default_factory=list)


def body_model_name(body_model) -> str:
    """'anny-smpl' for the shipped default file, else 'smpl'."""
    return "anny-smpl" if "anny" in Path(getattr(body_model, "source", "")).name.lower() else "smpl"


class SceneRenderer:
    """Renders the frames of a scripted scene with one body model and one renderer."""

    def __init__(self, body_model, cfg: SceneConfig = SceneConfig(),
                 script: Sequence[Walker] = DEFAULT_SCRIPT):
        if not 1 <= cfg.people <= len(script):
            raise ValueError(f"people must be between 1 and {len(script)} (the walkers of the script), "
                             f"got {cfg.people}")
        if cfg.width < 16 or cfg.height < 16 or cfg.fps <= 0 or cfg.seconds <= 0:
            raise ValueError(f"bad stream size {cfg.width}x{cfg.height} at {cfg.fps} fps for {cfg.seconds} s")
        self.body_model = body_model.eval()
        self.cfg = cfg
        self.walkers = list(script[:cfg.people])
        rng = np.random.default_rng([cfg.seed, 7])
        self.betas = np.stack([rng.standard_normal(body_model.num_betas) * w.shape_scale for w in self.walkers])
        faces = np.asarray(body_model.faces)
        rest = body_model.rest()
        self.num_vertices = int(rest.vertices.shape[1])
        materials = vertex_materials(skinning_weights(body_model), rest.vertices[0].numpy(),
                                     rest.joints[0, HEAD_JOINT].numpy())
        gen_cfg = GeneratorConfig()
        self.colours = np.concatenate([vertex_colours(materials, np.random.default_rng([cfg.seed, 11, i]), gen_cfg)
                                       for i in range(len(self.walkers))])
        n = len(self.walkers)
        all_faces = np.concatenate([faces + i * self.num_vertices for i in range(n)])
        self.renderer = MeshRenderer(all_faces, n * self.num_vertices, samples=4)
        self.background = room_background(cfg, np.random.default_rng([cfg.seed, 13]))
        self.light = Light(direction=(0.35, -0.7, -0.6), ambient=0.45, diffuse=0.6, specular=0.04)
        self.rotation = pitch_rotation(cfg.pitch)
        self.camera = cfg.camera
        self.model_name = body_model_name(body_model)
        self._jitter_rng = np.random.default_rng([cfg.seed, 17])

    def script_time(self, frame: int) -> float:
        """Time in the 8 s script of frame `frame` (the script is stretched to the duration)."""
        return frame / self.cfg.fps * SCRIPT_SECONDS / self.cfg.seconds

    def frame(self, index: int) -> Frame:
        """Render frame `index` and its ground truth."""
        cfg, cam = self.cfg, self.camera
        t = self.script_time(index)
        n = len(self.walkers)
        phase = np.array([2 * math.pi * walker_distance(w, t) / w.stride_length for w in self.walkers])
        stride = np.array([min(walker_speed(w, t) / 1.1, 1.3) for w in self.walkers])
        arm = np.array([w.arm_swing for w in self.walkers])
        pose = gait_pose(phase, stride, arm)
        for i, w in enumerate(self.walkers):
            heading = walker_heading(w, t)
            # SMPL upright faces -z (the camera); yaw turns it to face the walking direction
            yaw = math.degrees(math.atan2(-math.sin(heading), -math.cos(heading)))
            pose[i, :3] = global_orientation(yaw, (0.0, 0.0), cfg.pitch)
        with torch.no_grad():
            out = self.body_model(torch.as_tensor(pose, dtype=torch.float32),
                                  torch.as_tensor(self.betas, dtype=torch.float32))
        verts = out.vertices.numpy().astype(np.float64)
        joints = out.joints.numpy().astype(np.float64)
        placed_v, placed_j = [], []
        for i, w in enumerate(self.walkers):
            x, z = walker_position(w, t)
            v_world = verts[i] @ self.rotation  # R^T v for row vectors
            j0_world = joints[i, 0] @ self.rotation
            shift_world = np.array([x - j0_world[0], cfg.camera_height - v_world[:, 1].max(), z - j0_world[2]])
            shift = self.rotation @ shift_world
            placed_v.append(verts[i] + shift)
            placed_j.append(joints[i] + shift)
        rendered = self.renderer.render(np.concatenate(placed_v), self.colours, cam, self.background, self.light)
        people = []
        for i in range(n):
            if placed_j[i][:, 2].min() < 0.3:
                continue
            px = project(placed_v[i], cam)
            box = np.array([*px.min(0), *px.max(0)])
            clipped = np.array([max(box[0], 0), max(box[1], 0), min(box[2], cfg.width - 1), min(box[3], cfg.height - 1)])
            if clipped[2] <= clipped[0] + 1 or clipped[3] <= clipped[1] + 1:
                continue
            jpx = project(placed_j[i], cam)
            visible = keypoint_visibility(placed_j[i], jpx, rendered.depth, 0.15)
            if not visible.any():
                continue
            people.append(PersonTruth(
                person_id=i + 1, box=clipped, pose=pose[i].astype(np.float32),
                betas=self.betas[i].astype(np.float32),
                camera=weak_perspective_camera(joints[i], jpx, clipped).astype(np.float32),
                joints=placed_j[i].astype(np.float32), orientations=joint_orientations(pose[i]),
                visible=visible))
        stamp = START_NS + int(round(index * 1e9 / cfg.fps))
        return Frame(index=index, stamp_ns=stamp, image=rendered.image, people=people)

    def detections(self, frame: Frame, min_visible: float = 0.25) -> Tuple[List[np.ndarray], List[float]]:
        """Upstream-detector-like boxes: true boxes of people with enough visible joints, jittered."""
        boxes, scores = [], []
        for p in frame.people:
            if p.visible_fraction < min_visible:
                continue
            size = np.array([p.box[2] - p.box[0], p.box[3] - p.box[1]] * 2)
            jitter = self._jitter_rng.normal(0.0, self.cfg.detection_jitter, 4) * size
            box = p.box + jitter
            box = np.clip(box, [0, 0, 0, 0], [self.cfg.width - 1, self.cfg.height - 1] * 2)
            boxes.append(box)
            scores.append(float(np.clip(0.5 + 0.5 * p.visible_fraction, 0, 1)))
        return boxes, scores


# ------------------------------------------------------------------------------ messages and the bag

def person_truth_messages(types, frame: Frame, body_model: str) -> object:
    """hkmr_ros/PersonMeshArray of a frame's ground truth (see the module docstring)."""
    point = types["geometry_msgs/msg/Point"]
    quat = types["geometry_msgs/msg/Quaternion"]
    people = []
    for p in frame.people:
        people.append(types["hkmr_ros/msg/PersonMesh"](
            track_id=int(p.person_id), score=float(p.visible_fraction), bbox=bags.bounding_box(types, p.box),
            pose=np.asarray(p.pose, np.float32), betas=np.asarray(p.betas, np.float32),
            camera=np.asarray(p.camera, np.float32),
            translation=point(x=float(p.joints[0, 0]), y=float(p.joints[0, 1]), z=float(p.joints[0, 2])),
            joints=[point(x=float(a), y=float(b), z=float(c)) for a, b, c in p.joints],
            joint_orientations=[quat(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
                                for q in p.orientations],
            joint_confidence=p.visible.astype(np.float32), body_model=body_model))
    return types["hkmr_ros/msg/PersonMeshArray"](header=bags.header(types, frame.stamp_ns, FRAME_ID),
                                                  people=people)


@dataclass
class SynthSummary:
    """What `synthesise_bag` wrote."""
    path: Path
    frames: int
    people_per_frame: List[int]
    topics: Dict[str, int]
    seconds: float


def synthesise_bag(out: Union[str, Path], cfg: SceneConfig = SceneConfig(), storage: str = "mcap",
                   raw: bool = False, detections: bool = True, overwrite: bool = False,
                   model: Optional[str] = None, distro: str = "humble", progress: bool = True,
                   body_model=None) -> SynthSummary:
    """Render the scene into a rosbag2 bag at `out` (a folder); returns what was written."""
    import time

    if body_model is None:
        from training.body.body_model import load_body_model
        body_model = load_body_model(model)
    start = time.perf_counter()
    scene = SceneRenderer(body_model, cfg)
    k = scene.camera.matrix
    image_topic = RAW_IMAGE_TOPIC if raw else IMAGE_TOPIC
    people_counts = []
    with bags.BagWriter(out, storage=storage, distro=distro, overwrite=overwrite) as writer:
        types = writer.types
        for key, value in (("generator", "hkmr-bag synth"), ("seed", cfg.seed), ("people", cfg.people),
                           ("fps", cfg.fps), ("seconds", cfg.seconds), ("size", f"{cfg.width}x{cfg.height}"),
                           ("body_model", scene.model_name)):
            writer.set_custom_data(f"hkmr.{key}", str(value))
        writer.add_topic(image_topic, bags.IMAGE if raw else bags.COMPRESSED_IMAGE)
        writer.add_topic(CAMERA_INFO_TOPIC, bags.CAMERA_INFO)
        writer.add_topic(GROUND_TRUTH_TOPIC, bags.PERSON_MESH_ARRAY)
        if detections:
            writer.add_topic(DETECTIONS_TOPIC, bags.DETECTION_ARRAY)
        for index in tqdm(range(cfg.num_frames), desc="rendering", unit="frame", disable=not progress):
            frame = scene.frame(index)
            t = frame.stamp_ns
            if raw:
                writer.write(image_topic, t, bags.raw_image(types, frame.image, t, FRAME_ID))
            else:
                writer.write(image_topic, t, bags.compressed_image(types, frame.image, t, FRAME_ID,
                                                                   quality=cfg.jpeg_quality))
            writer.write(CAMERA_INFO_TOPIC, t, bags.camera_info(types, k, cfg.width, cfg.height, t, FRAME_ID))
            writer.write(GROUND_TRUTH_TOPIC, t, person_truth_messages(types, frame, scene.model_name))
            if detections:
                boxes, scores = scene.detections(frame)
                writer.write(DETECTIONS_TOPIC, t, bags.detection_array(types, t, FRAME_ID, boxes, scores))
            people_counts.append(sum(p.visible_fraction >= 0.5 for p in frame.people))
        counts = dict(writer.counts)
    return SynthSummary(path=Path(out), frames=cfg.num_frames, people_per_frame=people_counts,
                        topics=counts, seconds=time.perf_counter() - start)
