"""scripts/gpu: the no-pycolmap world shim reads back what a real world holds (run where pycolmap is blocked)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys
sys.modules["pycolmap"] = None  # as on a GPU machine without it
sys.path[:0] = [{root!r}, {gpu!r}]
import nocolmap
assert nocolmap.apply()
from imp_core.world.synthetic import SyntheticWorld, make_world
w = SyntheticWorld(make_world({out!r}, preset="tiny", seed=0, progress=False))
print(json.dumps({{n: [w.pose(n).R.tolist(), w.pose(n).t.tolist(), w.camera(n).params.tolist()] for n in w.db_names}}))
"""


def test_world_without_pycolmap_matches_the_real_one(tiny_world, tmp_path):
    code = CHILD.format(root=str(ROOT), gpu=str(ROOT / "scripts" / "gpu"), out=str(tmp_path / "w"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert sorted(got) == sorted(tiny_world.db_names)
    for n, (R, t, params) in got.items():
        assert np.allclose(R, tiny_world.pose(n).R, atol=1e-9), n
        assert np.allclose(t, tiny_world.pose(n).t, atol=1e-9), n
        assert np.allclose(params, tiny_world.camera(n).params), n
    assert (tmp_path / "w" / "sfm_gt" / "poses.json").is_file()
    # the images are the same too (rendering does not depend on the model writer)
    name = sorted(got)[0]
    assert np.array_equal(tiny_world.image(name), cv2.imread(str(tmp_path / "w" / "images" / name))[..., ::-1])
