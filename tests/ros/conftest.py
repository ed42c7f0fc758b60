"""Shared pieces of the rclpy tests. They run where ROS 2 is sourced and hkmr_ros is built with
colcon (its generated hkmr_ros.msg importable); each test module skips cleanly otherwise.

Every pytest run gets its own ROS domain and stays on localhost, so parallel runs and other
ROS processes on the machine do not see each other.
"""
from __future__ import annotations

import os
import random

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(100, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
