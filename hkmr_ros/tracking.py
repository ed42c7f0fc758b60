"""Tracks with stable ids: boxes matched by IoU and by the previous frame's joints.

Between detections a track's next crop comes from its last predicted 2D joints (as MediaPipe's
pose tracker does), so the detector only runs when a track is lost, every N frames to find
newcomers, or when upstream detections arrive. A track ends when it leaves the image, when its
box degenerates, or when detections stop confirming it. When two tracks land on the same person
(one walked behind the other: the network then fits the one in front), the track whose box
jumped less keeps the person and the other is hidden: it coasts on its last velocity without
output until a detection matches it again (the detector then runs every few frames), or ends
after `max_hidden` frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from hkmr_ros.detection import box_iou
from hkmr_ros.people import Detection
from hkmr_ros.smoothing import PersonSmoother, SmoothingConfig


@dataclass
class TrackingConfig:
    """enabled: False runs the detector on every frame and reports track id 0.
    detect_every: frames between detector runs while every track is fine (newcomers).
    iou_threshold: least match quality (0.5 IoU + 0.5 share of the track's joints in the box).
    max_unconfirmed: detector runs in a row that miss a track before it ends.
    joint_box_pad: joints' extent -> person box padding (each side, top, bottom) as fractions of
    the extent (see joints_box). motion: share of last frame's box motion extrapolated.
    duplicate_iou: two tracks overlapping more than this are one person (see above).
    max_hidden: frames a hidden (occluded) track waits for a detection before it ends;
    detect_every_hidden: detector period while a track is hidden.
    confirm_detections: detections a track needs before it may hide behind someone; a younger
    duplicate (typically a false detection on part of a person) ends instead.
    min_inside: least share of the person box inside the image to keep a track.
    max_scale_change: largest factor by which a tracked person's box side may change from one
    frame to the next; a bigger jump means the crop no longer holds the person (lost).
    """

    enabled: bool = True
    detect_every: int = 10
    iou_threshold: float = 0.3
    max_unconfirmed: int = 4
    joint_box_pad: Tuple[float, float, float] = (0.07, 0.09, 0.03)
    motion: float = 0.5
    duplicate_iou: float = 0.6
    max_hidden: int = 45
    detect_every_hidden: int = 3
    confirm_detections: int = 2
    min_inside: float = 0.3
    min_box_side: float = 16.0
    max_scale_change: float = 1.5

    def validate(self) -> None:
        checks = [
            (isinstance(self.detect_every, int) and 1 <= self.detect_every <= 100_000, "detect_every must be an integer in [1, 100000]"),
            (0.0 < self.iou_threshold < 1.0, "iou_threshold must be in (0, 1)"),
            (isinstance(self.max_unconfirmed, int) and 1 <= self.max_unconfirmed <= 1000, "max_unconfirmed must be an integer in [1, 1000]"),
            (len(self.joint_box_pad) == 3 and all(0.0 <= float(v) <= 1.0 for v in self.joint_box_pad),
             "joint_box_pad must be three fractions in [0, 1]"),
            (0.0 <= self.motion <= 1.0, "motion must be in [0, 1]"),
            (0.0 < self.duplicate_iou <= 1.0, "duplicate_iou must be in (0, 1]"),
            (isinstance(self.max_hidden, int) and 0 <= self.max_hidden <= 100_000, "max_hidden must be an integer in [0, 100000]"),
            (isinstance(self.detect_every_hidden, int) and 1 <= self.detect_every_hidden <= 100_000, "detect_every_hidden must be an integer in [1, 100000]"),
            (isinstance(self.confirm_detections, int) and 1 <= self.confirm_detections <= 1000, "confirm_detections must be an integer in [1, 1000]"),
            (0.0 <= self.min_inside <= 1.0, "min_inside must be in [0, 1]"),
            (0.0 < self.min_box_side < 10_000, "min_box_side must be in (0, 10000) pixels"),
            (1.0 < self.max_scale_change <= 100.0, "max_scale_change must be in (1, 100]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"tracking.{msg}, got {self}")


def joints_box(joints_2d: np.ndarray, pad: Tuple[float, float, float] = (0.07, 0.09, 0.03)) -> np.ndarray:
    """24x2 image joints -> person box (x0, y0, x1, y1): the joints' extent L = max(w, h)
    padded by pad = (each side, top, bottom) x L, since the skin reaches past the joints (most
    above the head joint). Defaults fit the sample bag's true boxes (median over 68 people)."""
    lo, hi = np.min(joints_2d, axis=0), np.max(joints_2d, axis=0)
    ext = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    side, top, bottom = pad
    return np.array([lo[0] - side * ext, lo[1] - top * ext, hi[0] + side * ext, hi[1] + bottom * ext])


def inside_fraction(box: np.ndarray, width: int, height: int) -> float:
    """Share of the box's area inside the image."""
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    ix = max(0.0, min(box[2], width) - max(box[0], 0.0))
    iy = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return float(ix * iy / area)


def _side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


class Track:
    """One person followed over frames."""

    def __init__(self, track_id: int, box: np.ndarray, score: float, smoothing: SmoothingConfig):
        self.track_id = track_id
        self.box = np.asarray(box, dtype=np.float64)   # last person box: detected, else from joints
        self.prev_box: Optional[np.ndarray] = None
        self.box_from_detection = False
        self.joint_box = self.box.copy()                # this frame's box from the joints alone
        self.joints_2d: Optional[np.ndarray] = None
        self.score = float(score)
        self.hits = 0
        self.detections = 0                              # detections matched to it (or that began it)
        self.unconfirmed = 0
        self.hidden = 0                                  # frames since it was hidden (0 = visible)
        self.velocity = np.zeros(4)                      # box change per frame (pixels)
        self.prev_velocity = self.velocity
        self.smoother = PersonSmoother(smoothing)

    def predicted_box(self, motion: float) -> np.ndarray:
        """Where the person should be now: the last box moved on by `motion` of its velocity
        (a hidden track coasts at full velocity for every frame it has been hidden). A box that
        the extrapolation would turn inside out keeps its size and only moves its centre."""
        out = self.box + (self.velocity * self.hidden if self.hidden else motion * self.velocity)
        if out[2] - out[0] >= 1.0 and out[3] - out[1] >= 1.0 and np.all(np.isfinite(out)):
            return out
        shift = (out[:2] + out[2:]) / 2.0 - (self.box[:2] + self.box[2:]) / 2.0
        return self.box + np.tile(np.nan_to_num(shift), 2)

    def continuity(self) -> float:
        """IoU of the last box with the one before (1 = no jump)."""
        if self.prev_box is None:
            return 0.0
        return float(box_iou(self.box, self.prev_box)[0, 0])


@dataclass
class Candidate:
    """A crop to run the estimator on: its person box, and which track (None = new) it feeds."""

    box: np.ndarray
    score: float
    track: Optional[Track]
    from_detection: bool


class Tracker:
    """Decides where to crop and keeps ids; the pipeline runs the estimator in between."""

    def __init__(self, config: TrackingConfig, smoothing: SmoothingConfig, max_people: int):
        config.validate()
        self.config = config
        self.smoothing = smoothing
        self.max_people = max_people
        self.tracks: List[Track] = []
        self.next_id = 1
        self.frames_since_detection = 10 ** 9
        self.force_detection = True
        # why tracks ended, for diagnostics: unconfirmed, hidden_too_long, lost_estimate,
        # left_image, scale_jump, duplicate, max_people, reset
        self.end_reasons: Dict[str, int] = {}

    def _ended(self, reason: str, n: int = 1) -> None:
        if n:
            self.end_reasons[reason] = self.end_reasons.get(reason, 0) + n

    def reset(self) -> List[int]:
        ended = [t.track_id for t in self.tracks]
        self._ended("reset", len(ended))
        self.tracks = []
        self.force_detection = True
        return ended

    def needs_detection(self) -> bool:
        """Run the detector this frame? (no tracks, a track was lost, or N frames since the last)."""
        if not self.config.enabled:
            return True
        period = self.config.detect_every
        if any(t.hidden for t in self.tracks):
            period = min(period, self.config.detect_every_hidden)
        return (self.force_detection or not self.visible()
                or self.frames_since_detection + 1 >= period)

    def visible(self) -> List[Track]:
        return [t for t in self.tracks if not t.hidden]

    def _match_cost(self, det: Detection, track: Track) -> float:
        """Match quality in [0, 1]: half box IoU, half share of the track's joints inside the box."""
        pred = track.predicted_box(self.config.motion)
        iou = float(box_iou(det.box, pred)[0, 0])
        if track.joints_2d is None:
            return iou
        j = track.joints_2d
        b = det.box
        inside = np.mean((j[:, 0] >= b[0]) & (j[:, 0] <= b[2]) & (j[:, 1] >= b[1]) & (j[:, 1] <= b[3]))
        return 0.5 * iou + 0.5 * float(inside)

    def candidates(self, detections: Optional[List[Detection]]) -> Tuple[List[Candidate], List[int]]:
        """Crops for this frame. `detections` None = the detector did not run.

        Returns the candidates and the ids of tracks that ended here (unconfirmed too long).
        """
        ended: List[int] = []
        if not self.config.enabled:
            dets = detections or []
            return [Candidate(d.box, d.score, None, True) for d in dets[:self.max_people]], ended
        for t in self.tracks:
            if t.hidden:
                t.hidden += 1
                if t.hidden > self.config.max_hidden + 1:
                    ended.append(t.track_id)
                    self._ended("hidden_too_long")
        if ended:
            self.tracks = [t for t in self.tracks if t.track_id not in set(ended)]
        if detections is None:
            self.frames_since_detection += 1
            return [Candidate(t.predicted_box(self.config.motion), t.score, t, False)
                    for t in self.visible()], ended
        self.frames_since_detection = 0
        self.force_detection = False
        # greedy assignment on match quality (few people: greedy equals Hungarian in practice)
        pairs = sorted(((self._match_cost(d, t), i, k) for i, d in enumerate(detections)
                        for k, t in enumerate(self.tracks)), reverse=True)
        used_d, used_t = set(), set()
        out: List[Candidate] = []
        for q, i, k in pairs:
            if q < self.config.iou_threshold or i in used_d or k in used_t:
                continue
            used_d.add(i)
            used_t.add(k)
            t = self.tracks[k]
            t.unconfirmed = 0
            if t.hidden:                 # back from behind someone: restart its motion
                t.box = t.predicted_box(self.config.motion)
                t.prev_box, t.hidden = None, 0
            t.score = detections[i].score
            out.append(Candidate(detections[i].box, detections[i].score, t, True))
        keep: List[Track] = []
        for k, t in enumerate(self.tracks):
            if k in used_t or t.hidden:
                keep.append(t)
                continue
            t.unconfirmed += 1
            if t.unconfirmed >= self.config.max_unconfirmed:
                ended.append(t.track_id)
                self._ended("unconfirmed")
                continue
            keep.append(t)
            out.append(Candidate(t.predicted_box(self.config.motion), t.score, t, False))
        self.tracks = keep
        room = self.max_people - len(self.visible())
        for i, d in enumerate(detections):
            if i in used_d or room <= 0:
                continue
            # a detection over a track that kept its own crop is that track, not a newcomer
            if any(float(box_iou(d.box, c.box)[0, 0]) > 0.5 for c in out):
                continue
            out.append(Candidate(d.box, d.score, None, True))
            room -= 1
        if ended:
            self.force_detection = True
        return out, ended

    def commit(self, cand: Candidate, joints_2d: Optional[np.ndarray], width: int, height: int) -> Optional[Track]:
        """Record the estimate of a candidate (its image joints, None = unusable). Returns the
        track it belongs to, or None if the track ended (or no new track was started)."""
        c = self.config
        ok = joints_2d is not None and np.all(np.isfinite(joints_2d))
        reason = "lost_estimate"
        box = joints_box(joints_2d, tuple(c.joint_box_pad)) if ok else None
        if ok and (min(box[2] - box[0], box[3] - box[1]) < c.min_box_side
                   or inside_fraction(box, width, height) < c.min_inside):
            ok, reason = False, "left_image"
        if ok and cand.track is not None and not cand.from_detection and cand.track.hits > 0:
            ratio = _side(box) / max(_side(cand.track.joint_box), 1e-9)   # joints to joints
            if not (1.0 / c.max_scale_change <= ratio <= c.max_scale_change):
                ok, reason = False, "scale_jump"
        if not c.enabled:
            if not ok:
                return None
            t = Track(0, box, cand.score, self.smoothing)
            t.joints_2d = joints_2d
            return t
        t = cand.track
        if not ok:
            if t is not None:
                self.tracks = [x for x in self.tracks if x is not t]
                self.force_detection = True
                self._ended(reason)
            return None
        if t is None:
            t = Track(self.next_id, box, cand.score, self.smoothing)
            self.next_id += 1
            self.tracks.append(t)
        t.joint_box = box
        t.detections += int(cand.from_detection)
        if cand.from_detection:          # a fresh detector box beats one derived from joints
            box = np.asarray(cand.box, dtype=np.float64).copy()
        # velocity only between boxes of one source (detector and joint boxes differ in framing)
        t.prev_velocity = t.velocity
        if t.hits > 0 and t.box_from_detection == cand.from_detection:
            step = box - t.box
            t.velocity = step if t.prev_box is None else 0.5 * t.velocity + 0.5 * step
        t.box_from_detection = cand.from_detection
        t.prev_box, t.box = (t.box if t.hits > 0 else None), box
        t.joints_2d = joints_2d
        t.hits += 1
        return t

    def drop(self, track: Track) -> None:
        self.tracks = [x for x in self.tracks if x is not track]
        self.force_detection = True

    def resolve_duplicates(self) -> List[int]:
        """Two visible tracks on one person: the one whose box jumped less keeps it (ties: the
        older), the other is hidden (or ended if it was born this frame). Returns ended ids."""
        ended: List[int] = []
        order = sorted(self.visible(), key=lambda t: (-t.continuity(), -t.hits, t.track_id))
        kept: List[Track] = []
        for t in order:
            # boxes of this frame: two distinct fresh detections are two people (trust the
            # detector); tracks cropped from their joints that land on one figure overlap
            if any(float(box_iou(t.box, k.box)[0, 0]) > self.config.duplicate_iou for k in kept):
                if t.detections < self.config.confirm_detections or self.config.max_hidden == 0:
                    ended.append(t.track_id)
                    self._ended("duplicate")
                else:                        # undo this frame's jump and coast from before it
                    if t.prev_box is not None:
                        t.box = t.prev_box
                    t.velocity = t.prev_velocity
                    t.hidden = 1
            else:
                kept.append(t)
        if ended:
            self.tracks = [t for t in self.tracks if t.track_id not in set(ended)]
        return ended

    def enforce_max(self) -> List[int]:
        """Keep at most max_people tracks (visible first, then the longest-lived)."""
        if len(self.tracks) <= self.max_people:
            return []
        order = sorted(self.tracks, key=lambda t: (t.hidden > 0, -t.hits, t.track_id))
        ended = [t.track_id for t in order[self.max_people:]]
        self._ended("max_people", len(ended))
        self.tracks = order[:self.max_people]
        return ended
