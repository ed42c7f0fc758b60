"""Replay a bag through the node: `ros2 launch hkmr_ros hkmr_bag.launch.py bag:=BAG [record:=OUT]`.

Plays BAG (rosbag2 folder, mcap or sqlite3) with hkmr_play, which needs no rosbag2 (it reads the
bag with rosbags and publishes the recorded CDR unchanged at the recorded pace), into the node
from hkmr.launch.py. With record:=OUT the node's outputs are written to the bag OUT (mcap);
with player:=ros2bag `ros2 bag play` is used instead (record with `ros2 bag record`). When the
bag has been played, the launch ends.
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# The sample bag's topics (hkmr-bag synth); override for other bags.
ARGS = [
    ("bag", "", "bag to play (folder, .mcap or .db3)"),
    ("image_topic", "/camera/image_raw", "image topic of the bag (without /compressed)"),
    ("compressed", "true", "the bag has sensor_msgs/CompressedImage on <image_topic>/compressed"),
    ("camera_info_topic", "/camera/camera_info", "CameraInfo topic of the bag ('' for none)"),
    ("detections_topic", "", "Detection2DArray topic of the bag to use ('' for the embedded detector)"),
    ("detector", "hog", "embedded detector when no detections are used"),
    ("model", "", "ONNX model ('' for the shipped default)"),
    ("backend", "auto", "inference backend"),
    ("publish_tf", "false", "broadcast a TF frame per tracked person"),
    ("publish_mesh", "false", "add the mesh to the markers (a model exported with vertices)"),
    ("rate", "1.0", "playback speed factor"),
    ("loop", "false", "play the bag in a loop"),
    ("record", "", "write the node's outputs to this bag (mcap) ('' for none)"),
    ("player", "hkmr", "hkmr (hkmr_play, no rosbag2 needed) or ros2bag (ros2 bag play)"),
    ("use_sim_time", "false", "publish the bag's time on /clock and run the node on it"),
    ("rviz", "false", "start RViz"),
    ("node_name", "hkmr", "node name"),
]

ROS2BAG_START_DELAY_S = "3.0"  # the node is active within about a second on a 2-core CPU


def _player(context):
    c = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGS}
    if not c["bag"]:
        raise RuntimeError("hkmr_bag.launch.py needs bag:=PATH")
    node = "/" + c["node_name"]
    if c["player"] == "ros2bag":
        # without a loop, wait for the node to come up (ros2 bag play publishes at once)
        cmd = (["ros2", "bag", "play", c["bag"], "--rate", c["rate"]]
               + (["--loop"] if c["loop"] == "true" else ["--delay", ROS2BAG_START_DELAY_S])
               + (["--clock"] if c["use_sim_time"] == "true" else []))
        play = ExecuteProcess(cmd=cmd, output="screen")
    elif c["player"] == "hkmr":
        extra = ["--rate", c["rate"], "--start-delay", "1.0", "--wait-for-subscribers", "1"]
        if c["loop"] == "true":
            extra.append("--loop")
        if c["use_sim_time"] == "true":
            extra.append("--clock")
        if c["record"]:
            extra += ["--record", c["record"], "--record-topics", f"{node}/people", f"{node}/markers",
                      f"{node}/overlay", "/diagnostics"] + (["/tf"] if c["publish_tf"] == "true" else [])
        play = Node(package="hkmr_ros", executable="hkmr_play", output="screen", arguments=[c["bag"]] + extra)
    else:
        raise RuntimeError(f"player must be hkmr or ros2bag, got {c['player']!r}")
    done = RegisterEventHandler(OnProcessExit(target_action=play, on_exit=[OpaqueFunction(
        function=lambda context: [] if context.is_shutdown else [EmitEvent(event=Shutdown(reason="bag played"))])]))
    return [play, done]


def generate_launch_description() -> LaunchDescription:
    args = [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGS]
    c = LaunchConfiguration
    hkmr = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("hkmr_ros"), "launch", "hkmr.launch.py"])),
        launch_arguments={"image_topic": c("image_topic"), "compressed": c("compressed"),
                          "camera_info_topic": c("camera_info_topic"), "detections_topic": c("detections_topic"),
                          "detector": c("detector"), "rviz": c("rviz"), "node_name": c("node_name"),
                          "use_sim_time": c("use_sim_time"), "model": c("model"), "backend": c("backend"),
                          "publish_tf": c("publish_tf"), "publish_mesh": c("publish_mesh"),
                          "autostart": "true"}.items())
    return LaunchDescription(args + [hkmr, OpaqueFunction(function=_player)])
