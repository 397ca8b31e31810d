"""ament_python package setup for avsnet_ros.

Installs the runtime library (avsnet_ros), the node executables into lib/avsnet_ros (ROS 2
convention, so `ros2 run avsnet_ros depth_node` works), and launch/, config/ and the bundled
assets (demo data, shipped checkpoints) into share/avsnet_ros.
"""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "avsnet_ros"


def tree(src_root):
    """data_files entries that install src_root/** under share/avsnet_ros/src_root/**."""
    entries = []
    for dirpath, _dirnames, filenames in os.walk(src_root):
        files = [os.path.join(dirpath, f) for f in filenames if not f.endswith(".pyc")]
        if files:
            entries.append((os.path.join("share", package_name, dirpath), files))
    return entries


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["avsnet_ros", "avsnet_ros.*"]),
    # the Fast DDS profile the nodes apply for camera-sized messages (avsnet_ros/nodes/transport.py)
    package_data={"avsnet_ros.nodes": ["*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ]
    + tree("assets"),
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="avsnet_ros maintainers",
    maintainer_email="maintainers@avsnet-ros.org",
    description="AVS-Net audio-visual metric depth for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "chirp_emitter = avsnet_ros.nodes.chirp_emitter:main",
            "depth_node = avsnet_ros.nodes.depth_node:main",
            "replay_source = avsnet_ros.nodes.replay_source:main",
            "avsnet-launch = avsnet_ros.nodes.launcher:main",
        ],
    },
)
