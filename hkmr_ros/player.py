"""Play a rosbag2 bag (mcap or sqlite3) into ROS 2, and record topics to a bag, without rosbag2.

`ros2 bag play` needs rosbag2, which a minimal ROS install may lack; this reads the bag with
rosbags (hkmr_ros.bags) and publishes each message's CDR bytes unchanged at the recorded pace,
so the node sees exactly what `ros2 bag play` would send. With --record it also subscribes
the given topics and writes what arrives to an output bag (our message definitions embedded),
which is how an offline run through the node is captured.

    ros2 run hkmr_ros hkmr_play BAG [--rate 1] [--loop] [--clock] [--record OUT --record-topics /hkmr/people ...]
"""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from hkmr_ros.bags import BagReader, BagWriter

PLAYED_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
                "vision_msgs/msg/Detection2DArray")


def message_class(msgtype: str):
    """'pkg/msg/Name' -> the rclpy message class (ImportError naming the package if missing)."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"message type {msgtype} is not available in this ROS install ({e})") from e


def qos(reliable: bool = True, depth: int = 10) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


class BagPlayer(Node):
    """Publishes a bag's messages at their recorded log times (scaled by `rate`) on a thread."""

    def __init__(self, bag: Path, topics: Optional[Sequence[str]], rate: float, loop: bool,
                 start_delay: float, record: Optional[Path], record_topics: Sequence[str],
                 wait_for: int = 0, clock: bool = False):
        super().__init__("hkmr_player")
        if not rate > 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        self.reader = BagReader(bag)
        available = self.reader.topics
        if topics:
            for t in topics:
                self.reader.require_topic(t)
            self.topics = {t: available[t] for t in topics}
        else:
            self.topics = {t: m for t, m in available.items() if m in PLAYED_TYPES}
        if not self.topics:
            raise ValueError(f"nothing to play in {bag}; it has: {self.reader.describe_topics()}")
        self.pubs = {t: self.create_publisher(message_class(m), t, qos()) for t, m in self.topics.items()}
        self.rate, self.loop, self.start_delay, self.wait_for = float(rate), bool(loop), float(start_delay), int(wait_for)
        self.published: Dict[str, int] = {t: 0 for t in self.topics}
        self.clock_pub = None
        if clock:   # bag time on /clock, for nodes with use_sim_time (as `ros2 bag play --clock`)
            from rosgraph_msgs.msg import Clock
            self.clock_pub = self.create_publisher(Clock, "/clock", qos(True, 10))
        self.done = threading.Event()
        self.writer: Optional[BagWriter] = None
        self.received: Dict[str, int] = {}
        if record is not None:
            self.writer = BagWriter(record, storage="mcap", overwrite=True)
            self._lock = threading.Lock()
            for topic in record_topics:
                self._record(topic)
        self.thread = threading.Thread(target=self._play, name="hkmr-player", daemon=True)

    def _record(self, topic: str) -> None:
        """Subscribe `topic` raw, with the type its publisher advertises (waits for it up to 30 s)."""
        deadline = time.monotonic() + 30.0
        msgtype = None
        while msgtype is None and time.monotonic() < deadline:
            for name, types in self.get_topic_names_and_types():
                if name == self.resolve_topic_name(topic) and types:
                    msgtype = types[0]
            if msgtype is None:
                time.sleep(0.2)
        if msgtype is None:
            raise RuntimeError(f"--record: no publisher of {topic} appeared within 30 s")
        name = self.resolve_topic_name(topic)
        self.writer.add_topic(name, msgtype)
        self.received[name] = 0
        store = self.writer.typestore

        def on_msg(raw: bytes, name=name, msgtype=msgtype) -> None:
            msg = store.deserialize_cdr(raw, msgtype)
            with self._lock:
                if self.writer is not None and not self.writer.closed:
                    self.writer.write(name, self.get_clock().now().nanoseconds, msg)
                    self.received[name] += 1
        self.create_subscription(message_class(msgtype), name, on_msg, qos(True, 100), raw=True)

    def start(self) -> None:
        self.thread.start()

    def _play(self) -> None:
        try:
            deadline = time.monotonic() + 30.0
            images = [p for t, p in self.pubs.items() if self.topics[t] in PLAYED_TYPES[:2]] or list(self.pubs.values())
            while self.wait_for and time.monotonic() < deadline and rclpy.ok():
                if min(p.get_subscription_count() for p in images) >= self.wait_for:
                    break
                time.sleep(0.1)
            time.sleep(self.start_delay)
            while rclpy.ok():
                t_bag0 = t_wall0 = None
                for topic, _, t_ns, data in self.reader.raw_messages(self.topics):
                    if not rclpy.ok():
                        return
                    if t_bag0 is None:
                        t_bag0, t_wall0 = t_ns, time.monotonic()
                    wait = t_wall0 + (t_ns - t_bag0) * 1e-9 / self.rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if self.clock_pub is not None:
                        self._publish_clock(t_ns)
                    self.pubs[topic].publish(data)
                    self.published[topic] += 1
                if not self.loop:
                    break
        finally:
            self.done.set()

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock
        self.clock_pub.publish(Clock(clock=Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))))

    def close(self) -> None:
        if self.writer is not None:
            with self._lock:
                self.writer.close()
        self.reader.close()


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    rclpy.init(args=argv)
    from rclpy.utilities import remove_ros_args
    ap = argparse.ArgumentParser(prog="hkmr_play", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path, help="rosbag2 folder or .mcap/.db3 file")
    ap.add_argument("--topics", nargs="*", help="topics to play (default: images, camera info, detections)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    ap.add_argument("--loop", action="store_true", help="play again from the start when done")
    ap.add_argument("--start-delay", type=float, default=1.0, help="seconds before the first message")
    ap.add_argument("--wait-for-subscribers", type=int, default=0,
                    help="wait (up to 30 s) until the image topics have this many subscribers")
    ap.add_argument("--clock", action="store_true", help="publish the bag's time on /clock (use_sim_time)")
    ap.add_argument("--record", type=Path, help="write the --record-topics that arrive to this bag (mcap)")
    ap.add_argument("--record-topics", nargs="*", default=[], help="topics to record")
    ap.add_argument("--linger", type=float, default=2.0, help="seconds to keep recording after the last message")
    args = ap.parse_args(remove_ros_args(argv)[1:])
    node = None
    try:
        node = BagPlayer(args.bag, args.topics, args.rate, args.loop, args.start_delay, args.record,
                         args.record_topics, args.wait_for_subscribers, args.clock)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.start()
        while rclpy.ok() and not node.done.is_set():
            executor.spin_once(timeout_sec=0.1)
        end = time.monotonic() + args.linger
        while rclpy.ok() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info(f"played {node.published}" + (f", recorded {node.received}" if args.record else ""))
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as e:
        print(f"hkmr_play: {e}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
