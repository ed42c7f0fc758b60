"""Our messages in a rosbags typestore, so offline tools read and write real CDR without ROS.

The typestore is a stock ROS 2 one (Humble or Jazzy) plus vision_msgs (not shipped by rosbags)
and hkmr_ros/msg/*.msg, parsed from the same .msg files that colcon builds.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Optional

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "hkmr_ros"
MESSAGE_NAMES = ("PersonMesh", "PersonMeshArray")

# vision_msgs 4.x (Humble, Jazzy): the subset our messages use.
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
}

_STORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}


def _candidate_msg_dirs() -> Iterable[Path]:
    here = Path(__file__).resolve().parent
    yield here.parent / "msg"                       # source checkout, editable install
    yield Path(sys.prefix) / "share" / PACKAGE / "msg"  # pip install (data_files)
    for parent in here.parents:                      # colcon install: <prefix>/share/hkmr_ros/msg
        yield parent / "share" / PACKAGE / "msg"


def find_msg_dir() -> Path:
    """The folder holding PersonMesh.msg and PersonMeshArray.msg."""
    tried = []
    for d in _candidate_msg_dirs():
        tried.append(str(d))
        if all((d / f"{name}.msg").is_file() for name in MESSAGE_NAMES):
            return d
    raise FileNotFoundError(
        "hkmr_ros message definitions (PersonMesh.msg, PersonMeshArray.msg) not found; looked in: "
        + ", ".join(tried)
    )


def make_typestore(distro: str = "humble", msg_dir: Optional[Path] = None) -> Typestore:
    """A rosbags typestore for `distro` ('humble' or 'jazzy') with vision_msgs and our messages."""
    if distro not in _STORES:
        raise ValueError(f"unknown ROS 2 distro {distro!r}; expected one of {sorted(_STORES)}")
    store = get_typestore(_STORES[distro])
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    msg_dir = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    for name in MESSAGE_NAMES:
        path = msg_dir / f"{name}.msg"
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{name}"))
    store.register(types)
    return store
