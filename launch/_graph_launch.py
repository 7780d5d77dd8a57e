"""Shared helper for the launch files: turn an imp graph YAML (config/graph_*.yaml) into launch_ros Nodes,
so `ros2 launch` and the pip-environment runner `imp_graph` start the same processes with the same parameters."""
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch_ros.actions import Node

from imp_ros.graph import DEFAULT_DISCOVERY_RANGE, DISCOVERY_RANGES, load_graph
from imp_ros.share import share_dir


def share_path(*parts):
    """A file of the installed package (imp_ros.share: the ament index first, as everywhere else)."""
    return str(share_dir().joinpath(*parts))


def discovery_argument():
    """The DDS discovery range as a launch argument: SUBNET by default (a camera driver on another host of the
    vehicle is found); LOCALHOST for tests and demos on one machine."""
    return DeclareLaunchArgument("discovery_range", default_value=DEFAULT_DISCOVERY_RANGE,
                                 choices=list(DISCOVERY_RANGES),
                                 description="ROS_AUTOMATIC_DISCOVERY_RANGE of the imp nodes")


def graph_actions(graph_yaml, overrides=None, discovery_range=None, args=None):
    """Launch actions for every node of the graph (``args``: the graph's arguments, e.g. {"dataset": "aachen"});
    the launch ends when all required nodes have exited."""
    spec = load_graph(graph_yaml, overrides, args)
    actions = [SetEnvironmentVariable(k, v) for k, v in spec.env.items()]
    if discovery_range:
        actions.append(SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", discovery_range))
    if spec.fastdds_profile is not None:
        actions.append(SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", str(spec.fastdds_profile)))
    nodes = []
    for n in spec.nodes:
        params = ([str(spec.params_file)] if spec.params_file else []) + ([n.parameters] if n.parameters else [])
        node = Node(package="imp", executable=n.executable, name=n.name, output="screen", parameters=params,
                    remappings=list(n.remappings.items()))
        nodes.append((n, node))
        actions.append(node)
    required = [node for n, node in nodes if n.required]
    if required:
        done = set()

        def on_exit(event, context, _required=required):
            done.add(id(event.action))
            if all(id(r) in done for r in _required):
                return [EmitEvent(event=Shutdown(reason="all required imp nodes finished"))]
            return None

        for r in required:
            actions.append(RegisterEventHandler(OnProcessExit(target_action=r, on_exit=on_exit)))
    return actions
