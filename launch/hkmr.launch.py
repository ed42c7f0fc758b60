"""Human mesh recovery on a camera: `ros2 launch hkmr_ros hkmr.launch.py image_topic:=/camera/image_raw`.

The node is a managed lifecycle node; with autostart:=true (the default) it configures and
activates itself, which works the same on Humble and Jazzy. With autostart:=false it waits in
'unconfigured' for `ros2 lifecycle set /hkmr configure` (or a lifecycle manager). If the node
exits, the launch shuts down; if it failed (e.g. the model cannot load: FATAL in the log, node
exit status 1), `ros2 launch` exits with status 1 too.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent
from launch.conditions import IfCondition
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGS = [
    ("image_topic", "/camera/image_raw", "image topic (the node adds /compressed when compressed:=true)"),
    ("compressed", "false", "subscribe sensor_msgs/CompressedImage on <image_topic>/compressed"),
    ("camera_info_topic", "/camera/camera_info", "sensor_msgs/CameraInfo topic ('' for none)"),
    ("detections_topic", "", "upstream vision_msgs/Detection2DArray topic ('' for the embedded detector)"),
    ("detector", "hog", "embedded detector: hog, blazepose, whole_image, fixed, none"),
    ("model", "", "ONNX model path ('' for the shipped default); tensorrt builds and caches its engine"),
    ("engine_cache_dir", "", "folder of built TensorRT engines ('' for beside the model)"),
    ("backend", "auto", "auto, onnxruntime, onnxruntime-cuda or tensorrt"),
    ("publish_tf", "false", "broadcast a TF frame per tracked person"),
    ("publish_mesh", "false", "add the mesh to the markers (a model exported with vertices)"),
    ("autostart", "true", "configure and activate the node at start"),
    ("use_sim_time", "false", "use /clock (bag replay with --clock)"),
    ("rviz", "false", "start RViz with launch/hkmr.rviz"),
    ("node_name", "hkmr", "node name (topics are ~/people, ~/markers, ~/overlay)"),
    ("namespace", "", "node namespace"),
    ("log_level", "info", "node log level"),
]


def on_node_exit(event, context):
    """The node ended: a failure (e.g. the model cannot load) makes `ros2 launch` exit non-zero;
    otherwise shut the launch down, unless it already is (a second Shutdown makes launch_ros raise)."""
    if event.returncode not in (0, None) and not context.is_shutdown:
        raise RuntimeError(f"the hkmr node exited with status {event.returncode} (see its FATAL line above)")
    return [] if context.is_shutdown else [EmitEvent(event=Shutdown(reason="the hkmr node exited"))]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("hkmr_ros")
    args = [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGS]
    args.append(DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "hkmr.yaml"]),
                                      description="parameters YAML (see config/hkmr.yaml)"))
    c = LaunchConfiguration
    overrides = {
        "image_topic": ParameterValue(c("image_topic"), value_type=str),
        "compressed": ParameterValue(c("compressed"), value_type=bool),
        "camera_info_topic": ParameterValue(c("camera_info_topic"), value_type=str),
        "detections_topic": ParameterValue(c("detections_topic"), value_type=str),
        "detector": ParameterValue(c("detector"), value_type=str),
        "model": ParameterValue(c("model"), value_type=str),
        "engine_cache_dir": ParameterValue(c("engine_cache_dir"), value_type=str),
        "backend": ParameterValue(c("backend"), value_type=str),
        "publish_tf": ParameterValue(c("publish_tf"), value_type=bool),
        "publish_mesh": ParameterValue(c("publish_mesh"), value_type=bool),
        "autostart": ParameterValue(c("autostart"), value_type=bool),
        "use_sim_time": ParameterValue(c("use_sim_time"), value_type=bool),
    }
    node = LifecycleNode(
        package="hkmr_ros", executable="hkmr_node", name=c("node_name"), namespace=c("namespace"),
        parameters=[c("params_file"), overrides], output="screen", emulate_tty=True,
        arguments=["--ros-args", "--log-level", c("log_level")],
        on_exit=on_node_exit)
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", output="screen",
        arguments=["-d", PathJoinSubstitution([share, "launch", "hkmr.rviz"])],
        parameters=[{"use_sim_time": ParameterValue(c("use_sim_time"), value_type=bool)}],
        condition=IfCondition(c("rviz")))
    return LaunchDescription(args + [node, rviz])
