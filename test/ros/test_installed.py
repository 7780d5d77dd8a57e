"""The ROS package as users install it (issue 11: graph YAMLs and the `config` parameter resolved relative to the
current directory or the source tree, so an installed package failed with "file 'config/synthetic.yaml' not found").

A NON-editable install of a copy of the package into a temporary prefix; everything then runs from another
directory with that prefix first on PYTHONPATH / AMENT_PREFIX_PATH, so neither the source tree nor the current
directory can help."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rosutil import DOMAIN_ID, ROOT, wait_until

pytestmark = [pytest.mark.timeout(600), pytest.mark.ros]
PACKAGE_PARTS = ["setup.py", "setup.cfg", "package.xml", "resource", "imp_core", "imp_ros", "launch", "config",
                 "models", "README.md"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("installed")
    src, prefix, elsewhere = tmp / "src", tmp / "prefix", tmp / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    for part in PACKAGE_PARTS:
        p = ROOT / part
        if p.is_dir():
            shutil.copytree(p, src / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        elif p.exists():
            shutil.copy2(p, src / part)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--ignore-installed",  # never uninstall the venv's editable imp
                        "--prefix", str(prefix), str(src)], capture_output=True, text=True,
                       cwd=elsewhere, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    assert (purelib / "imp_ros" / "localizer_node.py").is_file(), sorted(prefix.rglob("*"))[:20]
    shutil.rmtree(src)  # nothing may come from the copied sources either
    env = dict(os.environ)
    env.update(PYTHONPATH=str(purelib), AMENT_PREFIX_PATH=f"{prefix}{os.pathsep}{sys.prefix}",
               ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    return {"prefix": prefix, "purelib": purelib, "cwd": elsewhere, "env": env}


def _py(installed, code):
    r = subprocess.run([sys.executable, "-c", code], cwd=installed["cwd"], env=installed["env"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()


def test_installed_layout_and_share_directory(installed):
    share = installed["prefix"] / "share" / "imp"
    for f in ("package.xml", "config/synthetic.yaml", "config/graph_replay.yaml", "config/localizer_synthetic.yaml",
              "config/fastdds_shm.xml", "launch/localize.launch.py", "launch/_graph_launch.py",
              "models/recognition_synthetic.pt"):
        assert (share / f).is_file(), f
    assert (installed["prefix"] / "share" / "ament_index" / "resource_index" / "packages" / "imp").is_file()
    out = _py(installed, "import imp_ros, imp_ros.share as s, imp_ros.graph as g\n"
                         "print(imp_ros.__file__); print(s.share_dir())\n"
                         "spec = g.load_graph(g.find_graph('graph_replay.yaml'))\n"
                         "print(spec.params_file); print(spec.fastdds_profile)\n"
                         "print(s.package_file('config/localizer_synthetic.yaml'))")
    assert out[0].startswith(str(installed["purelib"])), out
    for line in out[1:]:
        assert line.startswith(str(share)), out
    # the EIMP weights imp ships install with imp_core: the installed synthetic config runs EIMP, not the fallback
    from imp_core.matching.imp.checkpoint import shipped_features

    w = _py(installed, "from imp_core.matching.imp.checkpoint import shipped_features, shipped_weights\n"
                       "for f in shipped_features(): print(shipped_weights(f))")
    assert "xfeat" in shipped_features() and len(w) == len(shipped_features()), w
    for f, path in zip(shipped_features(), w):
        assert path.startswith(str(installed["purelib"])) and path.endswith(f"imp_{f}.pth"), w
    # without ament_index_python's answer (no AMENT_PREFIX_PATH) the installed data files are found next to the module
    env = dict(installed["env"])
    env.pop("AMENT_PREFIX_PATH")
    r = subprocess.run([sys.executable, "-c", "import imp_ros.share as s; print(s.share_dir())"], cwd=installed["cwd"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == str(share), r.stdout + r.stderr


def test_installed_localizer_starts_from_another_directory(installed, ros_map):
    """The installed params file (config/synthetic.yaml) names `config: config/localizer_synthetic.yaml`; it must
    resolve through the share directory although the current directory has no config/."""
    share = installed["prefix"] / "share" / "imp"
    override = installed["cwd"] / "override.yaml"  # node-specific, like the file it overrides (-p would lose)
    override.write_text(f"localizer:\n  ros__parameters:\n    map: {ros_map}\n    device: cpu\n")
    cmd = [sys.executable, "-m", "imp_ros.localizer_node", "--ros-args", "--params-file",
           str(share / "config" / "synthetic.yaml"), "--params-file", str(override), "-r", "__node:=localizer"]
    p = subprocess.Popen(cmd, cwd=installed["cwd"], env=installed["env"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        import threading

        t = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True)
        t.start()
        wait_until(lambda: any("active: listening" in ln or "failed" in ln for ln in lines) or p.poll() is not None,
                   120, "the installed localizer to become active")
        out = "".join(lines)
        assert "active: listening" in out, out
        assert "configure failed" not in out, out
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(timeout=30) == 0, "".join(lines)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert "Traceback" not in "".join(lines)
