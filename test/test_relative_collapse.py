"""Stage-2 depth collapse (README, stage 2): the PoseNet output scaling and a few real training steps.

The shipped DepthNet once predicted a constant map: with Monodepth2's 0.01 scaling of the pose outputs,
a PoseNet trained from scratch grows its rotation and translation far slower than DepthNet can shrink
its depth scale, so depth runs into min_depth, the sigmoid saturates and the log-depth std goes to 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from avsnet_ros.models.builder import build_model
from avsnet_ros.models.checkpoint import load_model, save_checkpoint
from avsnet_ros.models.config import RelativeDepthConfig, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def test_pose_output_scales_are_applied_per_component():
    """Zero the last conv and set its bias: the outputs must be bias * scale, hand-computed."""
    cfg = RelativeDepthConfig(kind="posenet", image_size_hw=(64, 64), pose_rotation_scale=0.01,
                              pose_translation_scale=0.1)
    net = build_model(cfg).eval()
    with torch.no_grad():
        net.decoder.pose2.weight.zero_()
        net.decoder.pose2.bias.copy_(torch.tensor([1.0, -2.0, 3.0, 4.0, -5.0, 6.0]))
        axisangle, translation = net(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(axisangle, torch.tensor([[0.01, -0.02, 0.03]] * 2))
    torch.testing.assert_close(translation, torch.tensor([[0.4, -0.5, 0.6]] * 2))


def test_pose_scale_defaults_are_monodepth2_and_old_checkpoints_load(tmp_path):
    cfg = RelativeDepthConfig(kind="posenet")
    assert (cfg.pose_rotation_scale, cfg.pose_translation_scale) == (0.01, 0.01)
    with pytest.raises(ValueError, match="pose_translation_scale"):
        RelativeDepthConfig(kind="posenet", pose_translation_scale=0.0)
    # A checkpoint written before the fields existed (no keys in config.json) loads with 0.01.
    net = build_model(RelativeDepthConfig(kind="posenet", image_size_hw=(64, 64)))
    save_checkpoint(tmp_path / "pose", net, net.config)
    import json

    path = tmp_path / "pose" / "config.json"
    d = json.loads(path.read_text())
    del d["pose_rotation_scale"], d["pose_translation_scale"]
    path.write_text(json.dumps(d))
    loaded, loaded_cfg = load_model(tmp_path / "pose")
    assert loaded.decoder.translation_scale == 0.01 and loaded_cfg.pose_rotation_scale == 0.01


def _train_few_steps(pose_scales: tuple, batch: dict, steps: int = 20):
    from training.relative_task import RelativeTrainModule

    h, w = batch["rgb"].shape[-2:]
    torch.manual_seed(0)
    depthnet = build_model(RelativeDepthConfig(image_size_hw=(h, w)))
    posenet = build_model(RelativeDepthConfig(kind="posenet", image_size_hw=(h, w), pose_rotation_scale=pose_scales[0],
                                              pose_translation_scale=pose_scales[1]))
    module = RelativeTrainModule(depthnet, posenet, ssim_weight=0.85, smoothness_weight=1e-3, automask=True)
    opt = torch.optim.Adam(module.parameters(), lr=5e-4)
    for _ in range(steps):
        loss, _ = module(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        log_depth = depthnet.depth(batch["rgb"]).log().flatten(1)
    return float(log_depth.median().exp()), float(log_depth.std(dim=1).mean()), depthnet.config.min_depth


def test_few_training_steps_do_not_collapse_depth_with_the_shipped_config():
    """20 real Adam steps on 4 rendered triples of the stage-2 synthetic world (train_seq preset).

    With the pose scaling of config/train_relative.yaml the depth stays off min_depth and keeps
    structure (log-depth std > 0.05); with Monodepth2's 0.01 pose scaling the same run
    collapses onto min_depth (the failure this test exists to catch).
    """
    from training.synthetic.raycast import render
    from training.synthetic.scene import PRESETS, intrinsics_for, sample_layout

    shipped = yaml.safe_load((ROOT / "config" / "train_relative.yaml").read_text())["pose_model"]
    shipped_cfg = config_from_dict(dict(shipped))
    shipped_scales = (shipped_cfg.pose_rotation_scale, shipped_cfg.pose_translation_scale)
    assert shipped_scales != (0.01, 0.01)

    h, w = 64, 192
    preset = PRESETS["train_seq"]
    K = intrinsics_for(h, w, preset.hfov_deg)
    rng = np.random.default_rng(0)
    triples = []
    for q in range(4):
        layout = sample_layout(rng, preset, 3, q)
        triples.append([torch.from_numpy(render(layout, pose, K, h, w)[1]).permute(2, 0, 1).float() / 255.0
                        for pose in layout.poses])
    batch = {"rgb_prev": torch.stack([t[0] for t in triples]), "rgb": torch.stack([t[1] for t in triples]),
             "rgb_next": torch.stack([t[2] for t in triples]),
             "K": torch.from_numpy(K).float().expand(4, 3, 3)}

    median, log_std, min_depth = _train_few_steps(shipped_scales, batch)
    assert median > 1.5 * min_depth, median
    assert log_std > 0.05, log_std

    median_md2, log_std_md2, _ = _train_few_steps((0.01, 0.01), batch)
    assert median_md2 < 1.1 * min_depth, median_md2  # ran into the bound: the collapse
    assert log_std_md2 < 0.5 * log_std, (log_std_md2, log_std)
