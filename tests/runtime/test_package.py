"""The ROS 2 package files: package.xml, CMakeLists.txt, messages, and a torch-free runtime."""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from hkmr_ros.ros_types import make_typestore

ROOT = Path(__file__).resolve().parents[2]


def test_package_xml_is_format_3_ament_cmake_with_real_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "hkmr_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for needed in ["rclpy", "lifecycle_msgs", "sensor_msgs", "visualization_msgs", "geometry_msgs",
                   "std_msgs", "vision_msgs", "diagnostic_msgs", "tf2_msgs", "launch_ros",
                   "rosidl_default_generators", "rosidl_default_runtime"]:
        assert needed in deps, needed
    groups = [e.text for e in root.findall("member_of_group")]
    assert "rosidl_interface_packages" in groups


def test_cmakelists_generates_every_message_and_installs_python_without_second_package_call():
    text = (ROOT / "CMakeLists.txt").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    for msg in sorted((ROOT / "msg").glob("*.msg")):
        assert f'"msg/{msg.name}"' in code, msg.name
    # rosidl_generate_interfaces already calls ament_python_install_package (rosidl_python#141)
    assert "ament_python_install_package" not in code
    assert "install(DIRECTORY hkmr_ros/" in code and "${PYTHON_INSTALL_DIR}/${PROJECT_NAME}" in code
    assert "DESTINATION share/${PROJECT_NAME}" in code


def test_init_does_not_hide_generated_msg_subpackage():
    text = (ROOT / "hkmr_ros" / "__init__.py").read_text()
    code = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", '"""'))]
    assert code == [], "hkmr_ros/__init__.py must stay free of code"
    assert not (ROOT / "hkmr_ros" / "msg").exists()


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_messages_parse_and_round_trip_through_cdr(distro):
    store = make_typestore(distro)
    PersonMesh = store.types["hkmr_ros/msg/PersonMesh"]
    PersonMeshArray = store.types["hkmr_ros/msg/PersonMeshArray"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Point = store.types["geometry_msgs/msg/Point"]
    Quaternion = store.types["geometry_msgs/msg/Quaternion"]
    Box = store.types["vision_msgs/msg/BoundingBox2D"]
    Pose2D = store.types["vision_msgs/msg/Pose2D"]
    Point2D = store.types["vision_msgs/msg/Point2D"]
    rng = np.random.default_rng(0)
    person = PersonMesh(
        track_id=3, score=0.9,
        bbox=Box(center=Pose2D(position=Point2D(x=10.0, y=20.0), theta=0.0), size_x=5.0, size_y=7.0),
        pose=rng.normal(size=72).astype(np.float32), betas=rng.normal(size=10).astype(np.float32),
        camera=np.array([0.9, 0.1, -0.1], np.float32),
        translation=Point(x=0.1, y=0.2, z=3.0),
        joints=[Point(x=float(i), y=0.5, z=2.0) for i in range(24)],
        joint_orientations=[Quaternion(x=0.0, y=0.0, z=0.0, w=1.0) for _ in range(24)],
        joint_confidence=np.linspace(0, 1, 24).astype(np.float32),
        body_model="anny-smpl",
    )
    msg = PersonMeshArray(header=Header(stamp=Time(sec=12, nanosec=34), frame_id="camera"), people=[person])
    raw = store.serialize_cdr(msg, "hkmr_ros/msg/PersonMeshArray")
    back = store.deserialize_cdr(raw, "hkmr_ros/msg/PersonMeshArray")
    assert back.header.frame_id == "camera" and back.header.stamp.nanosec == 34
    np.testing.assert_array_equal(back.people[0].pose, person.pose)
    np.testing.assert_array_equal(back.people[0].joint_confidence, person.joint_confidence)
    assert [p.x for p in back.people[0].joints] == list(range(24))
    assert back.people[0].body_model == "anny-smpl" and back.people[0].track_id == 3


def test_unknown_distro_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown ROS 2 distro"):
        make_typestore("rolling-2099")


def test_runtime_package_imports_without_torch():
    code = ("import sys, hkmr_ros, hkmr_ros.skeleton, hkmr_ros.ros_types;"
            "assert 'torch' not in sys.modules, 'runtime imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
