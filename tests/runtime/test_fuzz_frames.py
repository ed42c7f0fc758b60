"""1,000 fuzzed frames through Pipeline.process_msg: random bytes, truncated data, wrong sizes,
steps and encodings, NaN and absurd detections, NaN network outputs. Nothing may raise; every
undecodable frame is counted, every decodable one gives a result."""
import cv2
import numpy as np

from hkmr_ros.images import RAW_ENCODINGS
from hkmr_ros.people import Detection
from hkmr_ros.pipeline import Pipeline, PipelineConfig
from hkmr_ros.ros_types import make_typestore

from pipeline_fakes import FakeEstimator, draw_people

N_FRAMES = 1000
BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "rgb16": 6, "bgr16": 6,
       "rgba16": 8, "bgra16": 8, "8uc1": 1, "8uc3": 3, "16uc1": 2, "yuv422": 2, "uyvy": 2,
       "yuv422_yuy2": 2, "yuyv": 2}


class NaNSometimes(FakeEstimator):
    """A network that now and then returns NaN or a negative scale."""

    def estimate(self, crops):
        out = super().estimate(crops)
        for m in out:
            u = self.rng.random()
            if u < 0.1:
                m.cam[:] = np.nan
            elif u < 0.2:
                m.joints[3] = np.inf
            elif u < 0.25:
                m.cam[0] = -1.0
            elif u < 0.3:
                m.rotmat[5] = np.nan
        return out


def _header(T, k):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=k // 30, nanosec=(k % 30) * 33_000_000),
                                    frame_id="cam")


def _frame(rng, T, k, scene):
    """-> (message, expected_ok: True / False / None = either)."""
    kind = rng.integers(0, 10)
    h, w = int(rng.integers(1, 120)), int(rng.integers(1, 160))
    if kind <= 2:                                                    # valid raw frame
        enc = str(rng.choice(RAW_ENCODINGS))
        if BPP[enc] == 2 and enc not in ("mono16", "16uc1") and w % 2:
            w += 1
        step = w * BPP[enc] + int(rng.integers(0, 8))
        data = rng.integers(0, 256, step * h, dtype=np.uint8)
        if rng.random() < 0.5 and h >= 48 and w >= 64 and BPP[enc] == 3:
            img = cv2.resize(scene, (w, h))
            rows = np.zeros((h, step), np.uint8)
            rows[:, :w * 3] = img.reshape(h, -1)
            data = rows.reshape(-1)
        msg = T["sensor_msgs/msg/Image"](header=_header(T, k), height=h, width=w, encoding=enc,
                                         is_bigendian=int(rng.integers(0, 2)), step=step, data=data)
        return msg, True
    if kind == 3:                                                    # random bytes, random size claims
        enc = str(rng.choice(RAW_ENCODINGS + ("bayer_rggb8", "", "RGB8 ", "32FC1", "h264")))
        data = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8)
        msg = T["sensor_msgs/msg/Image"](header=_header(T, k), height=int(rng.integers(-2, 3000)),
                                         width=int(rng.integers(-2, 3000)), encoding=enc,
                                         is_bigendian=1, step=int(rng.integers(-5, 10000)), data=data)
        return msg, None
    if kind == 4:                                                    # truncated or padded raw data
        step = w * 3
        n = step * h + int(rng.choice([-1, 1, -step, 17]))
        data = rng.integers(0, 256, max(n, 0), dtype=np.uint8)
        return T["sensor_msgs/msg/Image"](header=_header(T, k), height=h, width=w, encoding="rgb8",
                                          is_bigendian=0, step=step, data=data), False
    if kind == 5:                                                    # step too small
        return T["sensor_msgs/msg/Image"](header=_header(T, k), height=h, width=w, encoding="bgra8",
                                          is_bigendian=0, step=w * 4 - 1, data=np.zeros((w * 4 - 1) * h, np.uint8)), False
    if kind == 6:                                                    # odd width packed YUV
        w = w | 1
        return T["sensor_msgs/msg/Image"](header=_header(T, k), height=h, width=w, encoding="yuv422",
                                          is_bigendian=0, step=2 * w, data=np.zeros(2 * w * h, np.uint8)), False
    img = cv2.resize(scene, (max(w, 8), max(h, 8)))
    fmt = str(rng.choice(["jpeg", "png"]))
    ok, enc = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", img)
    data = enc.reshape(-1)
    if kind == 7:                                                    # valid compressed
        return T["sensor_msgs/msg/CompressedImage"](header=_header(T, k), format=fmt, data=data), True
    if kind == 8:                                                    # truncated / corrupted compressed
        data = data[: int(rng.integers(0, len(data)))].copy()
        if len(data) > 20 and rng.random() < 0.5:
            data[10:] = rng.integers(0, 256, len(data) - 10, dtype=np.uint8)
        return T["sensor_msgs/msg/CompressedImage"](header=_header(T, k), format=fmt, data=data), None
    bad_fmt = str(rng.choice(["tiff", "16UC1; compressedDepth", "jpeg", "png", ""]))  # wrong/odd formats
    return T["sensor_msgs/msg/CompressedImage"](header=_header(T, k), format=bad_fmt,
                                                data=rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8)), None


def _detections(rng, w, h):
    if rng.random() < 0.4:
        return None
    out = []
    for _ in range(int(rng.integers(0, 9))):
        b = rng.uniform(-50, 250, 4)
        u = rng.random()
        if u < 0.2:
            b[int(rng.integers(0, 4))] = np.nan
        elif u < 0.3:
            b[int(rng.integers(0, 4))] = np.inf
        elif u < 0.4:
            b = b[[2, 3, 0, 1]]                                       # reversed corners
        out.append(Detection(b, float(rng.choice([0.9, np.nan, -3.0, 7.0, 0.5]))))
    return out


def test_thousand_fuzzed_frames_never_crash_and_are_counted():
    rng = np.random.default_rng(12345)
    T = make_typestore().types
    scene = draw_people([((200, 240), 260, 0), ((450, 240), 240, 1)])
    pipe = Pipeline(NaNSometimes(seed=1), PipelineConfig(detector="whole_image", max_people=4))
    none = ok = 0
    for k in range(N_FRAMES):
        msg, expected = _frame(rng, T, k, scene)
        result = pipe.process_msg(msg, detections=_detections(rng, 160, 120))
        if result is None:
            none += 1
            assert expected is not True, f"frame {k}: a valid frame was skipped: {pipe.stats['last_error']}"
        else:
            ok += 1
            assert expected is not False, f"frame {k}: an invalid frame was accepted"
            for p in result.people:
                assert np.all(np.isfinite(p.joints)) and np.all(np.isfinite(p.translation))
                assert np.all(np.isfinite(p.joint_orientations)) and np.all((0 <= p.joint_confidence) & (p.joint_confidence <= 1))
    assert none + ok == N_FRAMES
    assert pipe.stats["skipped_frames"] == none and pipe.stats["frames"] == ok
    assert none > 300 and ok > 300                      # both sides really exercised
    assert pipe.stats["failed_estimates"] > 0 and pipe.stats["invalid_detections"] > 0
