"""Accuracy of recovered people against ground truth, from two bags of hkmr_ros/PersonMeshArray.

Frames are matched by header stamp. In each frame, predictions are matched one-to-one to the
ground-truth people by box IoU (greedy, highest IoU first, at least `iou`). Reported:

- MPJPE: mean Euclidean distance over the 24 SMPL joints (pelvis, hips, spine, knees, ...,
  hands; `hkmr_ros.skeleton.SMPL_JOINT_NAMES`) after moving both skeletons' pelvis to the origin,
  in millimetres, camera frame (so the predicted global orientation counts);
- PA-MPJPE: the same after the similarity (rotation, scale, translation) Procrustes alignment
  of the prediction to the truth;
- pelvis error: distance between the predicted and true pelvis positions (metric translation);
- detection recall and precision at the IoU threshold, and identity switches (a true person
  matched to another track id than the last time it was matched).

A true person counts only when at least `min_visible` of their joints are visible (the ground
truth's joint_confidence); predictions matched to people who do not count are ignored, neither
true nor false positives. Two baselines are scored on the same matched people every time:
the *mean skeleton* (the average pelvis-relative truth of the whole ground-truth bag, one
constant skeleton) and the *rest pose* (each person's own true shape in the T-pose, upright and
facing the camera; recovered from the true joints and joint orientations, no body model needed).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from hkmr_ros import bags
from hkmr_ros.skeleton import NUM_JOINTS, SMPL_PARENTS

GT_TOPIC = "/ground_truth/people"
RESULT_TOPIC = "/hkmr/people"
METHODS = ("network", "mean_skeleton", "rest_pose")
CROWD_BUCKETS = (("1", 1, 1), ("2-3", 2, 3), ("4-6", 4, 6), ("7+", 7, 10**9))  # people in view in the frame
METHOD_LABELS = {"network": "HKMR (this run)", "mean_skeleton": "baseline: constant mean skeleton",
                 "rest_pose": "baseline: rest pose (T-pose, upright, facing the camera)"}


@dataclass
class PersonRecord:
    """One person of a PersonMeshArray: box (4,) x0 y0 x1 y1 pixels, joints (24,3) metres,
    orientations (24,4) xyzw, confidence (24,)."""
    track_id: int
    score: float
    box: np.ndarray
    joints: np.ndarray
    orientations: np.ndarray
    confidence: np.ndarray


def people_from_msg(msg) -> List[PersonRecord]:
    """hkmr_ros/PersonMeshArray -> PersonRecords."""
    out = []
    for p in msg.people:
        out.append(PersonRecord(
            track_id=int(p.track_id), score=float(p.score), box=bags.box_from_msg(p.bbox),
            joints=np.array([[j.x, j.y, j.z] for j in p.joints], dtype=np.float64),
            orientations=np.array([[q.x, q.y, q.z, q.w] for q in p.joint_orientations], dtype=np.float64),
            confidence=np.asarray(p.joint_confidence, dtype=np.float64)))
    return out


def read_people(path: Union[str, Path], topic: Optional[str] = None,
                default_topic: str = RESULT_TOPIC) -> Tuple[Dict[int, List[PersonRecord]], str, bags.BagReader]:
    """{header stamp ns: people} of the PersonMeshArray topic of a bag; the topic and the reader.

    topic None: `default_topic` when the bag has it, else its only PersonMeshArray topic.
    """
    reader = bags.BagReader(path)
    if topic is None:
        candidates = sorted(t for t, m in reader.topics.items() if m == bags.PERSON_MESH_ARRAY)
        if default_topic in candidates:
            topic = default_topic
        elif len(candidates) == 1:
            topic = candidates[0]
        else:
            raise bags.TopicNotFoundError(
                f"{path}: {'no' if not candidates else 'several'} hkmr_ros/msg/PersonMeshArray topics "
                f"({', '.join(candidates)}); pass the topic. The bag's topics: {reader.describe_topics()}")
    reader.require_topic(topic, (bags.PERSON_MESH_ARRAY,))
    frames: Dict[int, List[PersonRecord]] = {}
    for m in reader.messages([topic]):
        frames[bags.stamp_to_ns(m.msg.header.stamp)] = people_from_msg(m.msg)
    reader.close()
    return frames, topic, reader


# ------------------------------------------------------------------------------------ maths

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Nx4 and Mx4 boxes -> NxM IoU."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return np.nan_to_num(iou, nan=0.0)


def match_boxes(pred: np.ndarray, gt: np.ndarray, threshold: float) -> List[Tuple[int, int, float]]:
    """Greedy one-to-one matching, highest IoU first: [(pred index, gt index, iou)] with iou >= threshold."""
    if len(pred) == 0 or len(gt) == 0:
        return []
    iou = box_iou(pred, gt)
    pairs = sorted(((iou[i, j], i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])
                    if iou[i, j] >= threshold), reverse=True)
    used_p, used_g, out = set(), set(), []
    for v, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            out.append((i, j, float(v)))
    return out


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Bx24x3, Bx24x3 (metres) -> B mean joint errors (mm) after pelvis alignment."""
    pred = np.asarray(pred, np.float64).reshape(-1, NUM_JOINTS, 3)
    gt = np.asarray(gt, np.float64).reshape(-1, NUM_JOINTS, 3)
    d = (pred - pred[:, :1]) - (gt - gt[:, :1])
    return 1000.0 * np.linalg.norm(d, axis=2).mean(axis=1)


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Bx24x3 -> Bx24x3: each prediction under the similarity transform that best fits it to gt."""
    pred = np.asarray(pred, np.float64).reshape(-1, NUM_JOINTS, 3)
    gt = np.asarray(gt, np.float64).reshape(-1, NUM_JOINTS, 3)
    mu_p, mu_g = pred.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    x, y = pred - mu_p, gt - mu_g
    cov = np.einsum("bji,bjk->bik", x, y)  # 3x3: x^T y
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(np.einsum("bij,bjk->bik", u, vt)))
    fix = np.ones_like(s)
    fix[:, 2] = d
    rot = np.einsum("bij,bj,bjk->bik", u, fix, vt)  # maps x onto y: x @ rot
    var = (x ** 2).sum(axis=(1, 2))
    scale = (s * fix).sum(1) / np.maximum(var, 1e-12)
    return scale[:, None, None] * np.einsum("bji,bik->bjk", x, rot) + mu_g


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Bx24x3, Bx24x3 -> B mean joint errors (mm) after Procrustes alignment."""
    aligned = procrustes_align(pred, gt)
    gt = np.asarray(gt, np.float64).reshape(-1, NUM_JOINTS, 3)
    return 1000.0 * np.linalg.norm(aligned - gt, axis=2).mean(axis=1)


def quaternion_matrices(q: np.ndarray) -> np.ndarray:
    """Nx4 (x, y, z, w) -> Nx3x3 rotation matrices (normalised first)."""
    q = np.asarray(q, np.float64).reshape(-1, 4)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    x, y, z, w = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def rest_skeleton(joints: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    """24x3 posed joints and 24x4 global joint orientations -> 24x3 rest-pose (T-pose) joints
    in the body model's own frame (y up, facing +z), pelvis at the origin.

    Forward kinematics moves each joint by its parent's global rotation: J_j - J_p = G_p (R_j - R_p)
    for the rest joints R, so the rest offsets are G_p^T (J_j - J_p).
    """
    g = quaternion_matrices(orientations)
    rest = np.zeros((NUM_JOINTS, 3))
    for j in range(1, NUM_JOINTS):
        p = SMPL_PARENTS[j]
        rest[j] = rest[p] + g[p].T @ (joints[j] - joints[p])
    return rest


UPRIGHT_FACING_CAMERA = np.diag([1.0, -1.0, -1.0])  # 180 degrees about x: SMPL's y-up to the optical frame


# ------------------------------------------------------------------------------------ evaluation

@dataclass
class FrameEval:
    stamp_ns: int
    gt_people: int
    counted: int
    predictions: int
    matched: int
    mpjpe_mm: float
    pa_mpjpe_mm: float
    mean_skeleton_mpjpe_mm: float
    rest_pose_mpjpe_mm: float


@dataclass
class EvalReport:
    """Overall numbers (mm) and the per-frame table."""
    frames: int
    frames_without_result: int
    frames_outside_results: int
    gt_people: int
    counted: int
    matched: int
    unmatched_predictions: int
    recall: float
    precision: float
    id_switches: int
    metrics: Dict[str, Dict[str, float]]  # method -> {mpjpe_mm, pa_mpjpe_mm, mpjpe_median_mm, ...}
    by_crowd: Dict[str, Dict[str, float]]  # people in view ("1", "2-3", "4-6", "7+") -> errors per method
    pelvis_error_mm: float
    settings: Dict[str, float]
    per_frame: List[FrameEval] = field(default_factory=list)

    def to_json(self) -> Dict:
        d = asdict(self)
        d["per_frame"] = [asdict(f) for f in self.per_frame]
        return d


def _nanmean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()) if v.size else float("nan")


def evaluate(results: Dict[int, List[PersonRecord]], truth: Dict[int, List[PersonRecord]],
             iou: float = 0.5, min_visible: float = 0.5) -> EvalReport:
    """Score `results` against `truth` (both {stamp ns: people}); see the module docstring."""
    if not truth:
        raise ValueError("the ground truth has no frames")
    outside = 0
    if results:  # a run over part of the bag (--max-frames) is scored on the part it covered
        lo, hi = min(results), max(results)
        kept = {s: p for s, p in truth.items() if lo <= s <= hi}
        outside = len(truth) - len(kept)
        truth = kept
        if not truth:
            raise ValueError("no ground-truth frame has a stamp within the results' stamps: "
                             "are these results of this bag?")
    all_gt = [p for people in truth.values() for p in people if p.confidence.mean() >= min_visible]
    mean_skeleton = (np.mean([p.joints - p.joints[0] for p in all_gt], axis=0) if all_gt
                     else np.zeros((NUM_JOINTS, 3)))
    pred_j, gt_j, mean_j, rest_j, pelvis_err, crowd = [], [], [], [], [], []
    per_frame: List[FrameEval] = []
    last_track: Dict[int, int] = {}
    switches = counted_total = gt_total = matched_total = unmatched = missing = 0
    for stamp in sorted(truth):
        gt = truth[stamp]
        pred = results.get(stamp)
        if pred is None:
            missing += 1
            pred = []
        counts = [p.confidence.mean() >= min_visible for p in gt]
        matches = match_boxes(np.array([p.box for p in pred]).reshape(-1, 4),
                              np.array([p.box for p in gt]).reshape(-1, 4), iou)
        matched_pred = {i for i, _, _ in matches}
        frame_pred, frame_gt, frame_mean, frame_rest = [], [], [], []
        for i, j, _ in matches:
            if not counts[j]:
                continue
            g, p = gt[j], pred[i]
            if not (np.all(np.isfinite(p.joints))):
                continue
            frame_pred.append(p.joints)
            frame_gt.append(g.joints)
            frame_mean.append(mean_skeleton + g.joints[0])
            frame_rest.append(rest_skeleton(g.joints, g.orientations) @ UPRIGHT_FACING_CAMERA.T + g.joints[0])
            pelvis_err.append(1000.0 * float(np.linalg.norm(p.joints[0] - g.joints[0])))
            if g.track_id in last_track and last_track[g.track_id] != p.track_id:
                switches += 1
            last_track[g.track_id] = p.track_id
        # predictions matched to people who do not count are neither hits nor false positives
        unmatched += len(pred) - len(matched_pred)
        counted = int(sum(counts))
        n_matched = len(frame_pred)
        counted_total += counted
        gt_total += len(gt)
        matched_total += n_matched
        pred_j += frame_pred
        gt_j += frame_gt
        mean_j += frame_mean
        rest_j += frame_rest
        crowd += [len(gt)] * len(frame_pred)
        if frame_pred:
            e = mpjpe(frame_pred, frame_gt)
            pa = pa_mpjpe(frame_pred, frame_gt)
            em = mpjpe(frame_mean, frame_gt)
            er = mpjpe(frame_rest, frame_gt)
            row = (float(e.mean()), float(pa.mean()), float(em.mean()), float(er.mean()))
        else:
            row = (float("nan"),) * 4
        per_frame.append(FrameEval(int(stamp), len(gt), counted, len(pred), n_matched, *row))

    metrics: Dict[str, Dict[str, float]] = {}
    for name, preds in (("network", pred_j), ("mean_skeleton", mean_j), ("rest_pose", rest_j)):
        if preds:
            e, pa = mpjpe(preds, gt_j), pa_mpjpe(preds, gt_j)
            metrics[name] = {"mpjpe_mm": float(e.mean()), "mpjpe_median_mm": float(np.median(e)),
                             "pa_mpjpe_mm": float(pa.mean()), "pa_mpjpe_median_mm": float(np.median(pa))}
        else:
            metrics[name] = {k: float("nan") for k in ("mpjpe_mm", "mpjpe_median_mm", "pa_mpjpe_mm",
                                                        "pa_mpjpe_median_mm")}
    by_crowd: Dict[str, Dict[str, float]] = {}
    crowd_arr = np.asarray(crowd)
    for label, lo, hi in CROWD_BUCKETS:
        sel = np.flatnonzero((crowd_arr >= lo) & (crowd_arr <= hi))
        if sel.size == 0:
            continue
        g = [gt_j[i] for i in sel]
        by_crowd[label] = {"people": int(sel.size),
                           "network_mpjpe_mm": float(mpjpe([pred_j[i] for i in sel], g).mean()),
                           "network_pa_mpjpe_mm": float(pa_mpjpe([pred_j[i] for i in sel], g).mean()),
                           "mean_skeleton_mpjpe_mm": float(mpjpe([mean_j[i] for i in sel], g).mean()),
                           "mean_skeleton_pa_mpjpe_mm": float(pa_mpjpe([mean_j[i] for i in sel], g).mean()),
                           "rest_pose_mpjpe_mm": float(mpjpe([rest_j[i] for i in sel], g).mean()),
                           "rest_pose_pa_mpjpe_mm": float(pa_mpjpe([rest_j[i] for i in sel], g).mean())}
    predictions_scored = matched_total + unmatched
    return EvalReport(
        frames=len(truth), frames_without_result=missing, frames_outside_results=outside, gt_people=gt_total, counted=counted_total,
        matched=matched_total, unmatched_predictions=unmatched,
        recall=matched_total / counted_total if counted_total else float("nan"),
        precision=matched_total / predictions_scored if predictions_scored else float("nan"),
        id_switches=switches, metrics=metrics, by_crowd=by_crowd,
        pelvis_error_mm=_nanmean(pelvis_err), settings={"iou": iou, "min_visible": min_visible},
        per_frame=per_frame)


# ------------------------------------------------------------------------------------ reports

def _fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown_table(report: EvalReport) -> str:
    """The accuracy table (network beside the two baselines) and the detection/tracking table."""
    lines = ["| method | MPJPE (mm) | PA-MPJPE (mm) | MPJPE median (mm) | PA-MPJPE median (mm) |",
             "|---|---:|---:|---:|---:|"]
    for name in METHODS:
        m = report.metrics[name]
        lines.append(f"| {METHOD_LABELS[name]} | {_fmt(m['mpjpe_mm'])} | {_fmt(m['pa_mpjpe_mm'])} | "
                     f"{_fmt(m['mpjpe_median_mm'])} | {_fmt(m['pa_mpjpe_median_mm'])} |")
    lines += ["", "| frames | people in view | counted (visible >= {:.0%}) | matched (IoU >= {:g}) | recall | "
              "precision | id switches | pelvis error (mm) |".format(report.settings["min_visible"],
                                                                      report.settings["iou"]),
              "|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| {report.frames} | {report.gt_people} | {report.counted} | {report.matched} | "
              f"{_fmt(report.recall, 3)} | {_fmt(report.precision, 3)} | {report.id_switches} | "
              f"{_fmt(report.pelvis_error_mm)} |"]
    if report.by_crowd:
        lines += ["", "| people in view | people scored | HKMR MPJPE / PA-MPJPE (mm) | mean skeleton | rest pose |",
                  "|---|---:|---:|---:|---:|"]
        for label, m in report.by_crowd.items():
            lines.append(f"| {label} | {m['people']} | {_fmt(m['network_mpjpe_mm'])} / {_fmt(m['network_pa_mpjpe_mm'])} | "
                         f"{_fmt(m['mean_skeleton_mpjpe_mm'])} / {_fmt(m['mean_skeleton_pa_mpjpe_mm'])} | "
                         f"{_fmt(m['rest_pose_mpjpe_mm'])} / {_fmt(m['rest_pose_pa_mpjpe_mm'])} |")
    if report.frames_outside_results:
        lines.append(f"\n{report.frames_outside_results} ground-truth frames lie outside the processed stamps "
                     "and are not scored.")
    if report.frames_without_result:
        lines.append(f"\n{report.frames_without_result} ground-truth frames had no result message "
                     "(skipped frames: all their people count as missed).")
    lines.append("\nJoints: the 24 SMPL joints, pelvis-aligned (MPJPE) or Procrustes-aligned (PA-MPJPE); "
                 "baselines scored on the same matched people.")
    return "\n".join(lines) + "\n"


def write_per_frame_csv(report: EvalReport, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(asdict(report.per_frame[0]).keys()) if report.per_frame else ["stamp_ns"])
        for row in report.per_frame:
            writer.writerow([f"{v:.3f}" if isinstance(v, float) else v for v in asdict(row).values()])


def plot(report: EvalReport, path: Path) -> bool:
    """Per-frame MPJPE (network and baselines) and people counts; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not report.per_frame:
        return False
    t0 = report.per_frame[0].stamp_ns
    t = np.array([(f.stamp_ns - t0) * 1e-9 for f in report.per_frame])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for attr, label in (("mpjpe_mm", "HKMR"), ("mean_skeleton_mpjpe_mm", "mean skeleton"),
                        ("rest_pose_mpjpe_mm", "rest pose")):
        ax1.plot(t, [getattr(f, attr) for f in report.per_frame], label=label)
    ax1.set_ylabel("MPJPE (mm)")
    ax1.legend(loc="upper right")
    ax1.grid(alpha=0.3)
    ax2.step(t, [f.counted for f in report.per_frame], where="mid", label="people counted")
    ax2.step(t, [f.matched for f in report.per_frame], where="mid", label="matched")
    ax2.step(t, [f.predictions for f in report.per_frame], where="mid", label="predictions", alpha=0.6)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("people")
    ax2.legend(loc="upper left")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_reports(report: EvalReport, out_dir: Union[str, Path]) -> Dict[str, Path]:
    """metrics.md, metrics.json, per_frame.csv and (with matplotlib) metrics.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "metrics.md", "json": out / "metrics.json", "csv": out / "per_frame.csv"}
    paths["markdown"].write_text(markdown_table(report))
    paths["json"].write_text(json.dumps(report.to_json(), indent=2, allow_nan=True) + "\n")
    write_per_frame_csv(report, paths["csv"])
    if plot(report, out / "metrics.png"):
        paths["plot"] = out / "metrics.png"
    return paths
