"""Replay + localize + evaluate (synthetic demo, Aachen, RobotCar) from the same graph YAML as `imp_graph`
(config/graph_replay.yaml; `dataset` picks its parameters file config/<dataset>.yaml).

    ros2 launch imp replay_localize_evaluate.launch.py dataset:=synthetic source:=data/world map:=data/maps/x
"""
import os
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from imp_ros.graph import DATASETS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _graph_launch import discovery_argument, graph_actions, share_path  # noqa: E402


def _setup(context):
    get = lambda k: LaunchConfiguration(k).perform(context)  # noqa: E731
    over = {"localizer": {}, "replay": {}, "evaluator": {}}
    if get("map"):
        over["localizer"]["map"] = get("map")
    if get("source"):
        over["replay"]["source"] = get("source")
    if get("output_dir"):
        over["evaluator"]["output_dir"] = get("output_dir")
    return graph_actions(share_path("config", "graph_replay.yaml"), over, get("discovery_range"),
                         {"dataset": get("dataset")})


def generate_launch_description():
    return LaunchDescription([
        discovery_argument(),
        DeclareLaunchArgument("dataset", default_value="synthetic", choices=list(DATASETS),
                              description="config/<dataset>.yaml holds the nodes' parameters"),
        DeclareLaunchArgument("source", default_value="", description="dataset folder or bag to replay"),
        DeclareLaunchArgument("map", default_value="", description="map directory"),
        DeclareLaunchArgument("output_dir", default_value="", description="evaluator output folder"),
        OpaqueFunction(function=_setup),
    ])
