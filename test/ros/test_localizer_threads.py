"""The localizer node's 'threads' parameter reaches the localizer conf (-1 keeps the config's value)."""
from __future__ import annotations


def test_threads_parameter_overrides_the_config(ros_map, tmp_path):
    from imp_ros.localizer_node import LocalizerNode, build_localizer_conf, localizer_overrides

    cfg = tmp_path / "localizer.yaml"
    cfg.write_text("localizer:\n  threads: 2\n  coarse: [{name: retrieval}]\n")
    base = {"map": str(ros_map), "config": str(cfg), "device": "cpu"}
    assert LocalizerNode.PARAMS["threads"].default == -1
    assert build_localizer_conf(base)["threads"] == 2  # the config's
    assert build_localizer_conf({**base, "threads": 1})["threads"] == 1
    assert build_localizer_conf({**base, "threads": 0})["threads"] == 0  # auto
    assert build_localizer_conf({"map": str(ros_map), "device": "cpu"})["threads"] == 0  # neither: auto
    assert ("threads", 3) in localizer_overrides({**base, "threads": 3})
