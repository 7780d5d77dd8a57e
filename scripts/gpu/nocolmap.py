"""For the GPU scripts only: where pycolmap is not installed (its wheel is 38 MB; a bare GPU machine may have no room
or no index for it), synthetic worlds keep their database cameras and poses in ``sfm_gt/poses.json`` instead of a
COLMAP binary model, which is all that rendering, dumping and ``bench_matchers.py`` need. ``apply()`` patches this
process (call it in every worker); it does nothing where pycolmap imports. Such a world has no COLMAP model: map
building and the localizer cannot use it. ``test/test_gpu_scripts.py`` keeps it in step with the world format."""
import importlib.util
import json
from pathlib import Path

import numpy as np


def apply():
    if importlib.util.find_spec("pycolmap") is not None:
        try:
            import pycolmap  # noqa: F401
            return False
        except ImportError:
            pass
    from imp_core import types
    from imp_core.datasets import base, colmap_io
    from imp_core.datasets import synthetic as dsyn
    from imp_core.world import synthetic as wsyn

    def write_model(model_dir, entries, share_cameras=True):
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        rows = [{"name": n, "model": c.model, "width": int(c.width), "height": int(c.height),
                 "params": np.asarray(c.params, float).tolist(), "R": np.asarray(p.R, float).tolist(),
                 "t": np.asarray(p.t, float).tolist()} for n, c, p in entries]
        (d / "poses.json").write_text(json.dumps(rows))
        (d / "cameras.bin").write_bytes(b"")
        return d

    def read_model_poses(model_dir):
        rows = json.loads((Path(model_dir) / "poses.json").read_text())
        return {r["name"]: (types.Camera(r["model"], r["width"], r["height"], np.array(r["params"])),
                            types.Pose(np.array(r["R"]), np.array(r["t"]))) for r in rows}

    for m in (colmap_io, wsyn):
        if hasattr(m, "write_model"):
            m.write_model = write_model
    for m in (colmap_io, base, dsyn):
        if hasattr(m, "read_model_poses"):
            m.read_model_poses = read_model_poses
    return True
