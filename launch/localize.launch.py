"""Localize-only: the imp localizer lifecycle node (autostart) on a live camera.

    ros2 launch imp localize.launch.py map:=/path/to/map image_topic:=/camera/image_raw
"""
import os
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _graph_launch import discovery_argument, graph_actions, share_path  # noqa: E402


def _setup(context):
    get = lambda k: LaunchConfiguration(k).perform(context)  # noqa: E731
    over = {"localizer": {"autostart": True}}
    for key in ("map", "image_topic", "camera_info_topic", "device"):
        if get(key):
            over["localizer"][key] = get(key)
    over["localizer"]["publish_tf"] = get("publish_tf").lower() == "true"
    return graph_actions(share_path("config", "graph_localize.yaml"), over, get("discovery_range"))


def generate_launch_description():
    return LaunchDescription([
        discovery_argument(),
        DeclareLaunchArgument("map", default_value="", description="map directory (imp map build)"),
        DeclareLaunchArgument("image_topic", default_value="", description="camera image topic"),
        DeclareLaunchArgument("camera_info_topic", default_value="", description="CameraInfo topic"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu or cuda"),
        DeclareLaunchArgument("publish_tf", default_value="true", description="false when an EKF owns map->odom"),
        OpaqueFunction(function=_setup),
    ])
