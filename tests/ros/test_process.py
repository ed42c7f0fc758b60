"""The installed node as a process: `ros2 run` with a missing model (FATAL, exit 1), Ctrl-C in
the middle of a stream (clean exit 0), and `ros2 launch` + `ros2 lifecycle` driving it."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from ros_helpers import SKIP_NO_ROS, require_built_package, sample_frames

rclpy = pytest.importorskip("rclpy", reason=SKIP_NO_ROS)
require_built_package()
if shutil.which("ros2") is None:
    pytest.skip("the ros2 command is not on PATH (source the workspace's install/setup.bash)",
                allow_module_level=True)

from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from hkmr_ros.msg import PersonMeshArray  # noqa: E402


class Output:
    """A process's merged stdout/stderr, read on a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines, self.lock = proc, [], threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line)

    def text(self) -> str:
        with self.lock:
            return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.text():
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)
                return needle in self.text()
            time.sleep(0.1)
        return False


def start(cmd, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    return proc, Output(proc)


def stop(proc, sig=signal.SIGINT, timeout=20.0):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_missing_model_is_fatal_with_exit_status_1(tmp_path):
    missing = tmp_path / "missing_model.onnx"
    proc, out = start(["ros2", "run", "hkmr_ros", "hkmr_node", "--ros-args", "-r", "__node:=hkmr_missing",
                       "-p", f"model:={missing}", "-p", "autostart:=true"], tmp_path)
    try:
        proc.wait(60)
    finally:
        stop(proc)
    text = out.text()
    assert proc.returncode == 1, text
    assert "FATAL" in text and "missing_model.onnx" in text, text
    assert "Traceback" not in text, text


def feed(node: Node, topic: str, frames, stop_event: threading.Event, period: float = 0.1):
    pub = node.create_publisher(CompressedImage, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    images = [d for _, t, _, d in frames if t.endswith("CompressedImage")]
    i = 0
    while not stop_event.is_set():
        pub.publish(images[i % len(images)])
        i += 1
        time.sleep(period)


def test_ctrl_c_mid_stream_exits_cleanly(ros, tmp_path):
    frames = sample_frames(limit=10)
    proc, out = start(["ros2", "run", "hkmr_ros", "hkmr_node", "--ros-args", "-r", "__node:=hkmr_sigint",
                       "-p", "autostart:=true", "-p", "compressed:=true", "-p", "detector:=whole_image",
                       "-p", "image_topic:=/sigint/image_raw", "-p", "camera_info_topic:=/sigint/camera_info"], tmp_path)
    node = Node("hkmr_sigint_feeder")
    got = []
    node.create_subscription(PersonMeshArray, "/hkmr_sigint/people", got.append, QoSProfile(depth=50))
    halt = threading.Event()
    feeder = threading.Thread(target=feed, args=(node, "/sigint/image_raw/compressed", frames, halt), daemon=True)
    try:
        assert out.wait_for("active", 90), out.text()
        feeder.start()
        end = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert len(got) >= 5, out.text()
        code = stop(proc, signal.SIGINT)              # while frames keep coming
    finally:
        halt.set()
        stop(proc, signal.SIGKILL)
        node.destroy_node()
    text = out.text()
    assert code == 0, text
    assert "Traceback" not in text, text


def run(cmd, timeout=60):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_launch_brings_the_node_to_active_and_ros2_lifecycle_drives_it(tmp_path):
    proc, out = start(["ros2", "launch", "hkmr_ros", "hkmr.launch.py", "node_name:=hkmr_launch",
                       "image_topic:=/launch/image_raw", "camera_info_topic:=/launch/camera_info", "detector:=whole_image"], tmp_path)
    try:
        assert out.wait_for("active:", 120), out.text()
        got = run(["ros2", "lifecycle", "get", "/hkmr_launch"])
        assert "active [3]" in got.stdout, got.stdout + got.stderr
        got = run(["ros2", "lifecycle", "set", "/hkmr_launch", "deactivate"])
        assert "Transitioning successful" in got.stdout, got.stdout + got.stderr
        got = run(["ros2", "lifecycle", "get", "/hkmr_launch"])
        assert "inactive [2]" in got.stdout
        got = run(["ros2", "lifecycle", "set", "/hkmr_launch", "activate"])
        assert "Transitioning successful" in got.stdout
        got = run(["ros2", "param", "set", "/hkmr_launch", "max_people", "0"])
        assert "Setting parameter failed" in got.stdout + got.stderr, got.stdout + got.stderr
        got = run(["ros2", "lifecycle", "set", "/hkmr_launch", "shutdown"])
        assert "Transitioning successful" in got.stdout
        proc.wait(30)                                      # the node exits, so does the launch
    finally:
        stop(proc)
    assert "shut down" in out.text()
    assert "Traceback" not in out.text(), out.text()


def test_launch_exits_non_zero_when_the_model_cannot_load(tmp_path):
    proc, out = start(["ros2", "launch", "hkmr_ros", "hkmr.launch.py", "node_name:=hkmr_launch_missing",
                       f"model:={tmp_path / 'absent.onnx'}"], tmp_path)
    try:
        proc.wait(90)
    finally:
        stop(proc)
    text = out.text()
    assert proc.returncode == 1, text
    assert "FATAL" in text and "absent.onnx" in text and "exited with status 1" in text, text
