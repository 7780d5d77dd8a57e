"""One conf, two ways in: `imp localize` and the ROS localizer node's parameters build the same localizer."""
from __future__ import annotations

import os

CONF = """localizer:
  matcher: {name: nn, ratio_threshold: 0.85}
  coarse:
    - {name: tracking, min_inliers: 35}
    - {name: retrieval, top_k: 3}
  acceptance: {min_inliers: 15}
"""


def _cli_conf(map_dir, cfg, *extra):
    from imp_core.cli import build_parser
    from imp_core.localization.commands import localizer_conf_from_args

    args = build_parser().parse_args(["localize", "--map", str(map_dir), "--image", "x.jpg", "--config", str(cfg),
                                      "--matcher", "nn", "--device", "cpu", *extra])
    return localizer_conf_from_args(args)


def test_cli_and_node_parameters_make_the_same_localizer(ros, ros_map, tmp_path):
    """The node's `coarse` parameter used to replace the file's stages with bare names (the file's top_k and
    min_inliers were lost) and its `matcher` parameter merged where the CLI's replaced; now both are dotted
    overrides of the same file by the same rule, so the stage list and the matcher conf are equal."""
    from rclpy.parameter import Parameter

    from imp_core.localization import Localizer
    from imp_ros.localizer_node import LocalizerNode, build_localizer_conf

    cfg = tmp_path / "localizer.yaml"
    cfg.write_text(CONF)
    cli = _cli_conf(ros_map, cfg, "--set", "coarse.retrieval.num_clusters=2")
    params = {"map": str(ros_map), "config": str(cfg), "matcher": "nn", "coarse": "tracking,retrieval",
              "device": "cpu", "overrides": ["coarse.retrieval.num_clusters=2"]}
    assert build_localizer_conf(params) == cli  # the node's conf function, without spinning
    assert cli["coarse"] == [{"name": "tracking", "min_inliers": 35},
                             {"name": "retrieval", "top_k": 3, "num_clusters": 2}]
    assert cli["matcher"] == {"name": "nn", "ratio_threshold": 0.85}
    assert cli["acceptance"]["min_inliers"] == 15

    node = LocalizerNode(f"confloc_{os.getpid()}", parameter_overrides=[
        Parameter("autostart", value=True), *(Parameter(k, value=v) for k, v in params.items())])
    node.start()  # what common.run does after construction
    loc = Localizer(cli)
    try:
        assert node.loc is not None, node.config_error
        assert [s.conf for s in node.loc.stages] == [s.conf for s in loc.stages]
        assert [s.conf["name"] for s in loc.stages] == ["tracking", "retrieval"]
        assert loc.stages[1].conf["top_k"] == 3
        assert loc.stages[0].conf["min_inliers"] == 35
        assert node.loc.matcher.conf == loc.matcher.conf
        assert loc.matcher.conf["ratio_threshold"] == 0.85
        assert node.loc.conf == loc.conf
    finally:
        loc.close()
        node.close()
        node.destroy_node()


def test_node_overrides_parameter_errors_name_the_key(ros_map, tmp_path):
    import pytest

    from imp_core.config import ConfigError
    from imp_ros.localizer_node import build_localizer_conf, localizer_overrides

    cfg = tmp_path / "localizer.yaml"
    cfg.write_text(CONF)
    with pytest.raises(ConfigError, match="unknown key localizer.acceptance.min_inlier"):
        build_localizer_conf({"map": str(ros_map), "config": str(cfg), "overrides": ["acceptance.min_inlier=3"]})
    # empty parameters keep the file's values; the overrides list comes last
    over = localizer_overrides({"map": "m", "overrides": ["", "device=cuda"]})
    assert over == [("map", "m"), ("device", "auto"), "device=cuda"]
