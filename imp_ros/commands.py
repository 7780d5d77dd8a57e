"""`imp demo`: the README's demo as a subcommand of the `imp` CLI (no ROS import until it runs)."""
from __future__ import annotations


def register(subparsers) -> None:
    from imp_ros import demo

    p = subparsers.add_parser("demo", help="synthetic world -> map -> replay + localizer + evaluator (ROS 2 processes)",
                              description=demo.__doc__)
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)
