"""The ROS packaging is real: colcon sees an ament_python package, builds it in a temporary workspace,
and after sourcing the install the ament index finds share/avsnet_ros and the node executables exist.
Also: the venv imports the ROS 2 wheels, torch and avsnet_ros together."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
EXECUTABLES = ("chirp_emitter", "depth_node", "replay_source")
TOP_LEVEL_SKIP = {".venv", ".git", "build", "install", "log", "runs", "data_synth", ".pytest_cache"}


def _clean_env(tmp: Path) -> dict:
    """Environment with the venv first on PATH and no outer ROS/colcon workspace leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_", "ROS_PACKAGE_PATH"))}
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLCON_HOME"] = str(tmp / "colcon_home")  # no user-level colcon defaults
    env["OMP_NUM_THREADS"] = "1"
    return env


def _ignore(dirpath, names):
    skip = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".pyc"))}
    if Path(dirpath).resolve() == REPO:
        skip |= TOP_LEVEL_SKIP & set(names)
    return skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A colcon workspace holding a copy of this repository as src/avsnet_ros, built once."""
    if not (VENV_BIN / "colcon").exists():
        pytest.fail(f"colcon missing from {VENV_BIN}: run `make venv` (colcon-common-extensions is pinned)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    shutil.copytree(REPO, ws / "src" / "avsnet_ros", ignore=_ignore)
    env = _clean_env(ws)
    listed = subprocess.run(
        [str(VENV_BIN / "colcon"), "list"], cwd=ws, env=env, capture_output=True, text=True, timeout=120
    )
    build = subprocess.run(
        [str(VENV_BIN / "colcon"), "build", "--event-handlers", "console_direct+"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300,
    )
    return ws, env, listed, build


def test_colcon_sees_an_ament_python_package(workspace):
    _, _, listed, _ = workspace
    assert listed.returncode == 0, listed.stderr
    # An invalid package.xml (e.g. a bad maintainer email) silently turns this into (python).
    assert "avsnet_ros\tsrc/avsnet_ros\t(ros.ament_python)" in listed.stdout, listed.stdout


def test_colcon_build_installs_share_and_executables(workspace):
    ws, env, _, build = workspace
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    probe = (
        "import json, avsnet_ros\n"
        "from ament_index_python.packages import get_package_share_directory, get_package_prefix\n"
        "print(json.dumps({'share': get_package_share_directory('avsnet_ros'),"
        " 'prefix': get_package_prefix('avsnet_ros'), 'module': avsnet_ros.__file__}))\n"
    )
    # Source the install the way a ROS user does, then ask the ament index.
    script = f"source install/setup.bash && exec {PYTHON} -c \"$PROBE\""
    out = subprocess.run(
        ["bash", "-c", script], cwd=ws, env={**env, "PROBE": probe}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    install = (ws / "install").resolve()
    share = Path(info["share"]).resolve()
    assert share == install / "avsnet_ros" / "share" / "avsnet_ros"
    # The library imported after sourcing is the installed copy, not the source tree.
    assert Path(info["module"]).resolve().is_relative_to(install), info["module"]
    for sub in ("launch", "config", "assets"):
        assert (share / sub).is_dir(), f"share/avsnet_ros/{sub} not installed"
    assert (share / "package.xml").is_file()
    assert (install / "avsnet_ros" / "share" / "ament_index" / "resource_index" / "packages" / "avsnet_ros").is_file()
    # Every launch/config file of the source tree is installed (setup.py's globs), byte for byte.
    src = ws / "src" / "avsnet_ros"
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/*.rviz"):
        for f in src.glob(pattern):
            installed = share / f.relative_to(src)
            assert installed.is_file() and installed.read_bytes() == f.read_bytes(), f"{installed} missing"
    # The real BV2 fixture ships with the package.
    wav = share / "assets" / "batvision_v2_sample" / "audio_47.wav"
    assert wav.read_bytes() == (REPO / "assets" / "batvision_v2_sample" / "audio_47.wav").read_bytes()
    lib = Path(info["prefix"]) / "lib" / "avsnet_ros"
    for exe in EXECUTABLES:
        assert (lib / exe).is_file() and os.access(lib / exe, os.X_OK), f"lib/avsnet_ros/{exe} missing"


def test_package_xml_declares_the_runtime_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.findtext("name") == "avsnet_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "launch", "launch_ros", "ament_index_python"):
        assert dep in deps, f"package.xml lacks <exec_depend>{dep}</exec_depend>"


def test_required_launch_and_config_files_installed(workspace):
    """`ros2 launch avsnet_ros avsnet.launch.py` needs these two files in share/avsnet_ros."""
    ws = workspace[0]
    share = ws / "install" / "avsnet_ros" / "share" / "avsnet_ros"
    assert (share / "launch" / "avsnet.launch.py").is_file(), "launch/avsnet.launch.py not installed"
    assert (share / "config" / "avsnet.yaml").is_file(), "config/avsnet.yaml not installed"


def test_venv_imports_ros_torch_and_the_package():
    out = subprocess.run(
        [str(PYTHON), "-c", "import rclpy, sensor_msgs.msg, torch, avsnet_ros; print(sensor_msgs.msg.Image.__name__)"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Image"
