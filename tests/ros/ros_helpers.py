"""Helpers of the rclpy tests (imported by name: tests/ros is on sys.path under pytest)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_BAG = ROOT / "hkmr_ros" / "data" / "sample" / "people"
SKIP_NO_ROS = "ROS 2 (rclpy) is not available: these tests run in a sourced ROS 2 workspace (docs/ros.md)"


def require_built_package() -> None:
    """Make the colcon-generated hkmr_ros.msg importable beside the sources under test, or skip.

    Run from a source checkout, `hkmr_ros` is the repository's folder, which has no msg/; the
    installed package (colcon build) has it, so its folder joins the package path.
    """
    import hkmr_ros
    try:
        import hkmr_ros.msg  # noqa: F401
        return
    except ImportError:
        pass
    for entry in sys.path:
        cand = Path(entry) / "hkmr_ros"
        if (cand / "msg" / "__init__.py").is_file():
            hkmr_ros.__path__.append(str(cand))
            import hkmr_ros.msg  # noqa: F401
            return
    pytest.skip("hkmr_ros is not built with colcon here (no generated hkmr_ros.msg): run "
                "`colcon build --packages-select hkmr_ros` and source its install/setup.bash")


def sample_frames(limit: int = 40, start: int = 0):
    """(topic, type, log time ns, CDR bytes) of the sample bag's images, CameraInfo and detections,
    for `limit` images from image number `start` (people walk in over the first ~3 s)."""
    from hkmr_ros.bags import BagReader
    if not SAMPLE_BAG.exists():
        pytest.skip(f"sample bag not found: {SAMPLE_BAG}")
    out = []
    with BagReader(SAMPLE_BAG) as reader:
        times = sorted(t for _, mt, t, _ in reader.raw_messages(["/camera/image_raw/compressed"]))
        if len(times) <= start:
            pytest.skip(f"sample bag has only {len(times)} images")
        first, last = times[start], times[min(start + limit, len(times)) - 1]
        for topic, msgtype, t_ns, data in reader.raw_messages(
                ["/camera/image_raw/compressed", "/camera/camera_info", "/detections"]):
            if first <= t_ns <= last:
                out.append((topic, msgtype, t_ns, data))
    return out
