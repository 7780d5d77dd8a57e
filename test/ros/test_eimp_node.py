"""The localizer node with the package's synthetic configuration on an XFeat map runs EIMP with the weights imp
ships (issue 13), says so in its log, and answers ~/localize with a pose; a real separate process over DDS."""
from __future__ import annotations

import numpy as np
import pytest

from rosutil import graph_of, wait_log

pytestmark = [pytest.mark.timeout(300), pytest.mark.ros]


@pytest.fixture(scope="module")
def xfeat_map(ros_world, tmp_path_factory):
    from imp_core.mapping import build_map
    from imp_core.world.synthetic import SyntheticWorld

    conf = {"features": {"name": "xfeat", "max_keypoints": 1024}, "matcher": {"name": "nn"}, "device": "cpu"}
    return build_map(SyntheticWorld(ros_world), tmp_path_factory.mktemp("xfeat_map") / "map", conf, progress=False)


def test_synthetic_config_localizes_with_shipped_eimp(ros, run_graph, ros_world, xfeat_map):
    from imp_msgs.msg import LocalizationResult
    from imp_msgs.srv import LocalizeImage

    from imp_core.world.synthetic import SyntheticWorld
    from imp_ros import conversions as cv

    g = run_graph(graph_of(("eimploc", "localizer", {
        "autostart": True, "map": str(xfeat_map), "config": "config/localizer_synthetic.yaml", "device": "cpu"})))
    out = wait_log(g, "eimploc", "configured:", 120)
    line = next(ln for ln in out.splitlines() if "configured:" in ln)
    assert "matcher eimp (weights " in line and "imp_xfeat.pth" in line, line
    assert "matcher.fallback" not in out, out  # XFeat has shipped weights: no fallback
    w = SyntheticWorld(ros_world)
    name = sorted(w.query_names("day"))[0]
    req = LocalizeImage.Request(image=cv.rgb_to_image(w.image(name), "rgb8", "camera_optical"),
                                camera_info=cv.camera_to_info(w.camera(name), "camera_optical"))
    resp = ros.call(LocalizeImage, "/eimploc/localize", req, timeout=120.0)
    assert resp.success, resp.message
    assert resp.result.status == LocalizationResult.STATUS_OK, resp.message
    dt = np.linalg.norm(cv.msg_to_pose(resp.result.camera_pose).t - w.pose(name).center)
    assert dt < 0.25, dt
