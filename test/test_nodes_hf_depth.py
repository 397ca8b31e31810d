"""depth_node with a transformers depth model as relative_checkpoint, over real rclpy (in-process).

Tiny random-initialised DPT (disparity: scaling auto -> affine), ZoeDepth (metric: auto ->
median) and self-supervised Depth Anything (training/hf_relative.py; depth: auto -> median) folders
saved with save_pretrained (test/hf_tiny.py); the real BV2 fixture in, 32FC1
metres out, equal to the pipeline's own answer for the same frame and echo. A random DPT finds no
positive alignment with a random AVS-Net on the fixture (a <= 0): the node then publishes an
all-NaN depth (REP 117: no depth), never a made-up one. Missing or unreadable folders fail at
configure with the reason in startup_error.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from hf_tiny import save_tiny
from ros_support import Harness, fixture_data, make_tiny_checkpoints, ros_context, wait_for

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    paths = make_tiny_checkpoints(root)
    paths["dpt"] = str(save_tiny("dpt", root / "dpt", seed=0))
    paths["zoedepth"] = str(save_tiny("zoedepth", root / "zoedepth", seed=0))
    # a Depth Anything as train_relative.py --transformers-model saves it (self-supervised: depth up to scale)
    from training.hf_relative import build_transformers_depthnet

    net = build_transformers_depthnet(save_tiny("depth_anything", root / "da_src", seed=0), (64, 128), 0.1, 100.0)
    paths["da_selfsup"] = str(net.save_folder(root / "da_selfsup", {"training_command": "test"}))
    return paths


@pytest.fixture(scope="module")
def ros():
    with ros_context() as (context, executor):
        yield context, executor


def _params(checkpoints, relative, **extra):
    from rclpy.parameter import Parameter

    values = dict(avs_checkpoint=checkpoints["avs"], relative_checkpoint=relative, device="cpu",
                  max_echo_age_s=0.5, diagnostics_period_s=0.2, torch_threads=1)
    values.update(extra)
    return [Parameter(k, value=v) for k, v in values.items()]


def _run_one_frame(ros, node_name, checkpoints, relative):
    """Start a node with relative_checkpoint=relative, send the fixture pair -> (pipeline facts, published
    depth (H, W), the pipeline's depth for the same frame and echo, the scale message)."""
    from avsnet_ros.nodes.depth_node import DepthNode

    context, executor = ros
    rgb, echo, _, k = fixture_data()
    node = DepthNode(node_name, context=context, parameter_overrides=_params(checkpoints, relative))
    assert node.startup_error is None, node.startup_error
    executor.add_node(node)
    harness = Harness(context, executor, name=f"{node_name}_harness")
    try:
        harness.wait_connected()
        t = harness.now_ns()
        harness.send_info(k, rgb.shape[1], rgb.shape[0], t)
        harness.send_echo(echo, t - 50_000_000)
        time.sleep(0.02)
        harness.send_image(rgb, t)
        assert wait_for(lambda: harness.count("depth") >= 1 and harness.count("scale") >= 1, 30.0), node.counters()
        msg = harness.messages("depth")[0]
        assert msg.encoding == "32FC1" and (msg.height, msg.width) == rgb.shape[:2]
        depth = np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)
        pipe = node.pipeline
        expected = pipe(rgb, echo, output_size_hw=rgb.shape[:2]).depth_m[0]
        facts = dict(relative_output=pipe.relative_output, scaling=pipe.scaling, min_depth_m=pipe.min_depth_m,
                     max_depth_m=pipe.max_depth_m)
        return facts, depth, expected, harness.messages("scale")[0]
    finally:
        executor.remove_node(node)
        executor.remove_node(harness.node)
        harness.node.destroy_node()
        node.close()
        node.destroy_node()


def test_dpt_folder_as_relative_checkpoint_publishes_nan_or_metres(ros, checkpoints):
    facts, depth, expected, scale_msg = _run_one_frame(ros, "depth_node_dpt", checkpoints, checkpoints["dpt"])
    assert facts["relative_output"] == "disparity" and facts["scaling"] == "affine"
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    finite = np.isfinite(depth)
    assert np.all((depth[finite] >= facts["min_depth_m"]) & (depth[finite] <= facts["max_depth_m"]))
    scale, confidence = scale_msg.data
    if not finite.any():  # no alignment: no depth, no scale, no confidence
        assert np.isnan(scale) and confidence == 0.0


@pytest.mark.parametrize("key,output_type", [("zoedepth", "metric"), ("da_selfsup", "depth")])
def test_metric_or_depth_folder_as_relative_checkpoint_publishes_median_scaled_metres(ros, checkpoints, key,
                                                                                       output_type):
    facts, depth, expected, scale_msg = _run_one_frame(ros, f"depth_node_{key}", checkpoints, checkpoints[key])
    assert facts["relative_output"] == output_type and facts["scaling"] == "median"
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    finite = np.isfinite(depth)
    assert finite.mean() > 0.5
    assert np.all((depth[finite] >= facts["min_depth_m"]) & (depth[finite] <= facts["max_depth_m"]))
    scale, confidence = scale_msg.data
    assert np.isfinite(scale) and scale > 0 and 0.0 <= confidence <= 1.0


def test_missing_or_broken_transformers_folder_fails_at_configure(ros, checkpoints, tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn

    from avsnet_ros.nodes.depth_node import DepthNode

    context, _ = ros
    broken = tmp_path / "broken_hf"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "dpt", ')  # truncated JSON
    (broken / "model.safetensors").write_bytes(b"")
    for path, reason in ((tmp_path / "missing_hf", "does not exist"), (broken, "config.json")):
        node = DepthNode("depth_node_bad_hf", context=context,
                         parameter_overrides=_params(checkpoints, str(path), autostart=False))
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert str(path) in node.startup_error and reason in node.startup_error, node.startup_error
        finally:
            node.close()
            node.destroy_node()
