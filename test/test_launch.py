"""Launch wiring: config/avsnet.yaml vs the declared parameters, the avsnet-launch parameter
handling, launch/avsnet.launch.py evaluated with stand-in launch modules (no ROS distribution
here), and `avsnet-launch --demo` as a process."""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_support import ros_context, wait_for

REPO = Path(__file__).resolve().parent.parent


def test_config_yaml_holds_every_declared_default():
    from avsnet_ros.nodes.launcher import node_specs

    data = yaml.safe_load((REPO / "config" / "avsnet.yaml").read_text())
    specs = node_specs()
    assert set(data) == set(specs)
    for node, params in specs.items():
        values = data[node]["ros__parameters"]
        assert set(values) == {p.name for p in params}, node
        for p in params:
            assert values[p.name] == p.default and type(values[p.name]) is type(p.default), (node, p.name)


def test_load_config_types_and_refusals(tmp_path):
    from avsnet_ros.nodes.launcher import apply_overrides, load_config

    good = tmp_path / "good.yaml"
    good.write_text("/**:\n  ros__parameters:\n    use_sim_time: true\n"
                    "depth_node:\n  ros__parameters:\n    max_echo_age_s: 1\n    device: cpu\n")
    config = load_config(good)
    assert config["depth_node"]["max_echo_age_s"] == 1.0 and isinstance(config["depth_node"]["max_echo_age_s"], float)
    assert config["replay_source"]["use_sim_time"] is True
    apply_overrides(config, ["replay_source.data_path=123", "depth_node.output_width_px=320"])
    assert config["replay_source"]["data_path"] == "123" and config["depth_node"]["output_width_px"] == 320
    bad = tmp_path / "bad.yaml"
    bad.write_text("depth_node:\n  ros__parameters:\n    max_echo_age: 1.0\n")
    with pytest.raises(ValueError, match="max_echo_age"):
        load_config(bad)
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("depth_node:\n  ros__parameters:\n    autostart: 3\n")
    with pytest.raises(ValueError, match="depth_node.autostart"):
        load_config(wrong_type)
    with pytest.raises(ValueError, match="no parameter"):
        apply_overrides(config, ["depth_node.nope=1"])


# --------------------------------------------------------------------------------------------
class _Sub:
    def perform(self, ctx):
        raise NotImplementedError


def _perform(value, ctx):
    if isinstance(value, _Sub):
        return value.perform(ctx)
    if isinstance(value, list):
        return "".join(_perform(v, ctx) for v in value)
    return value


def _fake_launch_modules(share: str) -> dict:
    """Minimal stand-ins of launch / launch_ros that record what the launch file builds."""

    class LaunchConfiguration(_Sub):
        def __init__(self, name):
            self.name = name

        def perform(self, ctx):
            return ctx[self.name]

    class PythonExpression(_Sub):
        def __init__(self, parts):
            self.parts = parts

        def perform(self, ctx):
            return str(eval(_perform(self.parts, ctx)))  # noqa: S307 - what launch does

    class IfCondition:
        def __init__(self, expr):
            self.expr = expr

        def evaluate(self, ctx):
            return _perform(self.expr, ctx).strip().lower() == "true"

    class DeclareLaunchArgument:
        def __init__(self, name, default_value=None, choices=None, description=""):
            self.name, self.default_value, self.choices = name, default_value, choices

    class Node:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class SetEnvironmentVariable:
        def __init__(self, name, value):
            self.env_name, self.env_value = name, value

    class LaunchDescription:
        def __init__(self, entities):
            self.entities = entities

    mods = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros", "launch_ros.actions",
        "ament_index_python", "ament_index_python.packages")}
    mods["launch"].LaunchDescription = LaunchDescription
    mods["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    mods["launch.actions"].SetEnvironmentVariable = SetEnvironmentVariable
    mods["launch.conditions"].IfCondition = IfCondition
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch.substitutions"].PythonExpression = PythonExpression
    mods["launch_ros.actions"].Node = Node
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: share
    return mods


def _active_nodes(description, overrides):
    ctx = {e.name: e.default_value for e in description.entities if hasattr(e, "default_value")}
    for e in description.entities:
        if hasattr(e, "choices") and e.name in overrides and e.choices:
            assert overrides[e.name] in e.choices
    ctx.update(overrides)
    out = {}
    for e in description.entities:
        if not hasattr(e, "kwargs"):
            continue
        cond = e.kwargs.get("condition")
        if cond is None or cond.evaluate(ctx):
            params = [p if not isinstance(p, dict) else {k: _perform(v, ctx) for k, v in p.items()}
                      for p in e.kwargs["parameters"]]
            params = [_perform(p, ctx) if isinstance(p, _Sub) else p for p in params]
            out[e.kwargs["name"]] = dict(e.kwargs, parameters=params)
    return out


@pytest.mark.parametrize("source,expected", [("replay", {"replay_source", "depth_node"}),
                                             ("hardware", {"chirp_emitter", "depth_node"})])
def test_launch_file_wiring(monkeypatch, source, expected):
    from avsnet_ros.nodes.launcher import node_specs

    for name, mod in _fake_launch_modules(str(REPO)).items():
        monkeypatch.setitem(sys.modules, name, mod)
    description = runpy.run_path(str(REPO / "launch" / "avsnet.launch.py"))["generate_launch_description"]()
    nodes = _active_nodes(description, {"source": source, "device": "cpu", "use_sim_time": "true",
                                        "data": "/data/bag"})
    assert set(nodes) == expected
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    specs = node_specs()
    for name, node in nodes.items():
        assert node["package"] == "avsnet_ros"
        assert scripts[node["executable"]] == f"avsnet_ros.nodes.{node['executable']}:main"
        param_file, overrides = node["parameters"]
        assert Path(param_file) == REPO / "config" / "avsnet.yaml" and Path(param_file).is_file()
        declared = {p.name for p in specs[name]} | {"use_sim_time"}
        assert set(overrides) <= declared, set(overrides) - declared
    assert nodes["depth_node"]["parameters"][1]["device"] == "cpu"
    # one namespace argument moves every node (default: root)
    assert all(node["namespace"].name == "namespace" for node in nodes.values())
    assert {e.name: e.default_value for e in description.entities if hasattr(e, "default_value")}["namespace"] == ""
    # the Fast DDS profile this process applied is passed to the node processes
    from avsnet_ros.nodes.transport import APPLIED, PROFILE_PATH

    env = {e.env_name: e.env_value for e in description.entities if hasattr(e, "env_name")}
    assert env == APPLIED and env.get("FASTDDS_DEFAULT_PROFILES_FILE", str(PROFILE_PATH)) == str(PROFILE_PATH)
    assert nodes["depth_node"]["parameters"][1]["use_sim_time"] == "True"
    if source == "replay":
        replay = nodes["replay_source"]["parameters"][1]
        assert replay == {"data_path": "/data/bag", "publish_clock": "True", "stamp_mode": "recorded"}


# --------------------------------------------------------------------------------------------
@pytest.mark.ros
@pytest.mark.process
def test_avsnet_launch_demo_process(tmp_path, tiny_checkpoints):
    """`avsnet-launch --demo` (what `make demo` runs) on the bundled data with tiny checkpoints."""
    import cv2

    ckpt = tiny_checkpoints
    out = tmp_path / "demo"
    exe = os.path.join(os.path.dirname(sys.executable), "avsnet-launch")
    proc = subprocess.run([exe, "--demo", "--frames", "3", "--rate-hz", "4", "--out", str(out), "--device", "cpu",
                           "--param", f"depth_node.avs_checkpoint={ckpt['avs']}",
                           "--param", f"depth_node.relative_checkpoint={ckpt['rel']}"],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "topic rates (Hz):" in text and "/avsnet/metric_depth" in text and str(out.resolve()) in text
    report = json.loads((out / "summary.json").read_text())
    assert report["frames_published"] == 3
    assert report["depth_node"]["frames_out"] == 3 and report["counts"]["/avsnet/metric_depth"] == 3
    assert report["metrics"]["count"] == 3 and report["metrics"]["abs_rel"] > 0
    assert report["latency_ms"]["count"] == 3
    pngs = sorted(out.glob("depth_*.png"))
    assert len(pngs) == 3
    panel = cv2.imread(str(pngs[0]))
    assert panel is not None and panel.shape[0] == 240 and panel.shape[1] > 3 * 240
    assert not np.all(panel == panel[0, 0])
    assert (out / "summary.md").read_text().startswith("# avsnet-launch --demo")


@pytest.mark.ros
def test_nodes_under_a_namespace(tiny_checkpoints):
    """avsnet-launch's nodes in namespace robot1 (what `--namespace robot1` / `namespace:=robot1` start):
    the depth arrives on /robot1/avsnet/metric_depth, nothing on /avsnet/metric_depth."""
    from argparse import Namespace

    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from avsnet_ros.nodes.common import OUTPUT_QOS, shutdown_nodes
    from avsnet_ros.nodes.launcher import create_nodes, resolve_parameters

    ckpt = tiny_checkpoints
    args = Namespace(config="", device="cpu", data=str(REPO / "assets" / "batvision_v2_sample"), use_sim_time=False,
                     demo=False, rate_hz=4.0, frames=0,
                     param=[f"depth_node.avs_checkpoint={ckpt['avs']}", f"depth_node.relative_checkpoint={ckpt['rel']}",
                            "replay_source.loop=true", "replay_source.max_frames=6",
                            "replay_source.wait_for_subscribers=1"])
    config = resolve_parameters(args)
    with ros_context() as (context, executor):
        probe = Node("namespace_probe", context=context)
        got = {"/robot1/avsnet/metric_depth": [], "/avsnet/metric_depth": []}
        for topic, box in got.items():
            probe.create_subscription(Image, topic, box.append, OUTPUT_QOS)
        executor.add_node(probe)
        nodes = create_nodes("replay", config, context=context, namespace="robot1")
        try:
            assert all(getattr(n, "startup_error", None) is None for n in nodes), [n.startup_error for n in nodes]
            assert {n.get_fully_qualified_name() for n in nodes} == {"/robot1/depth_node", "/robot1/replay_source"}
            for n in nodes:
                executor.add_node(n)
            assert wait_for(lambda: len(got["/robot1/avsnet/metric_depth"]) >= 2, 120.0), nodes[0].counters()
            assert got["/avsnet/metric_depth"] == []
        finally:
            for n in nodes:
                executor.remove_node(n)
            shutdown_nodes(None, nodes)
            executor.remove_node(probe)
            probe.destroy_node()
