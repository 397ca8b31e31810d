"""Launch the AVS-Net nodes on a ROS 2 installation (ros2 launch avsnet_ros avsnet.launch.py).

Arguments:
    source:=replay|hardware   replay: replay_source + depth_node (recorded data, no sensors);
                              hardware: chirp_emitter (sounddevice) + depth_node, camera from your
                              driver on camera/image_raw + camera/camera_info (remap as needed)
    data:=PATH                replay data (BV2-layout folder or rosbag; '' = bundled demo data)
    config:=YAML              parameter file (default: share/avsnet_ros/config/avsnet.yaml)
    device:=auto|cpu|cuda     depth_node inference device
    use_sim_time:=true|false  nodes follow /clock; the replay then publishes /clock from the
                              recorded stamps
    namespace:=NS             every node and topic under NS (/NS/avsnet/metric_depth, /NS/camera/image_raw);
                              /diagnostics and /clock stay global

Fast DDS: every node process applies avsnet_ros's profile for camera-sized messages itself
(avsnet_ros/nodes/transport.py); this file also sets it for the processes it starts, unless you chose a
Fast DDS configuration yourself (FASTDDS_DEFAULT_PROFILES_FILE, FASTDDS_BUILTIN_TRANSPORTS, ...).

Without a ROS 2 distribution, `avsnet-launch` starts the same nodes with the same arguments and
parameter file in one process (avsnet_ros/nodes/launcher.py). Wiring only: no logic here.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description():
    # importing avsnet_ros.nodes applied the profile to this process (unless the user chose); pass it on
    from avsnet_ros.nodes.transport import APPLIED as fastdds_env

    share = get_package_share_directory("avsnet_ros")
    namespace = LaunchConfiguration("namespace")
    source = LaunchConfiguration("source")
    config = LaunchConfiguration("config")
    use_sim_time = LaunchConfiguration("use_sim_time")
    is_replay = IfCondition(PythonExpression(["'", source, "' == 'replay'"]))
    is_hardware = IfCondition(PythonExpression(["'", source, "' == 'hardware'"]))
    sim_time = PythonExpression(["'", use_sim_time, "'.lower() == 'true'"])
    return LaunchDescription([SetEnvironmentVariable(k, v) for k, v in fastdds_env.items()] + [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node and topic"),
        DeclareLaunchArgument("source", default_value="replay", choices=["replay", "hardware"],
                              description="replay: recorded data; hardware: chirp emitter + camera driver"),
        DeclareLaunchArgument("data", default_value="", description="replay data folder or rosbag ('' = bundled)"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "avsnet.yaml"),
                              description="ROS 2 parameter file"),
        DeclareLaunchArgument("device", default_value="auto", choices=["auto", "cpu", "cuda"],
                              description="depth_node inference device"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="follow /clock (published by the replay)"),
        Node(
            package="avsnet_ros", executable="replay_source", name="replay_source", namespace=namespace,
            output="screen",
            condition=is_replay,
            parameters=[config, {"data_path": LaunchConfiguration("data"), "publish_clock": sim_time,
                                 "stamp_mode": PythonExpression(["'recorded' if ", sim_time, " else 'now'"])}],
        ),
        Node(
            package="avsnet_ros", executable="chirp_emitter", name="chirp_emitter", namespace=namespace,
            output="screen",
            condition=is_hardware,
            parameters=[config, {"use_sim_time": sim_time}],
        ),
        Node(
            package="avsnet_ros", executable="depth_node", name="depth_node", namespace=namespace, output="screen",
            parameters=[config, {"device": LaunchConfiguration("device"), "use_sim_time": sim_time}],
        ),
    ])
