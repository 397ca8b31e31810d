"""Training and evaluating straight from a rosbag2 (mcap) written with the project's bag writer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
model: {kind: avsnet, preset: tiny, image_size_hw: [64, 128]}
data: {bag_val_every: 4}
train: {epochs: 1, batch_size: 3, val_batch_size: 3, num_workers: 0}
"""


def test_train_and_evaluate_from_a_bag(tmp_path):
    from avsnet_ros.data.batvision import BV2Dataset
    from avsnet_ros.data.rosbag_io import write_samples_to_bag
    from avsnet_ros.models.builder import build_model
    from avsnet_ros.models.checkpoint import save_checkpoint
    from avsnet_ros.models.config import AVSNetConfig, RelativeDepthConfig
    from training.tiny_data import make_tiny_bv2

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=4, size_hw=(64, 128), splits=("all",))
    samples = [s for s in BV2Dataset(data, "all")]
    bag = tmp_path / "tiny_bag"
    write_samples_to_bag(samples, bag)
    cfg = tmp_path / "bag.yaml"
    cfg.write_text(CONFIG)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train_avs.py"), "--data", str(bag), "--out",
                           str(run),
                           "--config", str(cfg), "--json", "--no-progress"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    # 12 frames: every 4th held out for validation -> 9 train (3 steps of 3), 3 val.
    assert s["train_samples"] == 9 and s["val_samples"] == 3 and s["global_step"] == 3
    assert s["final_val"]["count"] == 3

    rgb_cfg = AVSNetConfig(preset="tiny", image_size_hw=(64, 128), use_audio=False)
    save_checkpoint(tmp_path / "rgb", build_model(rgb_cfg), rgb_cfg)
    rel_cfg = RelativeDepthConfig(kind="depthnet", preset="tiny", image_size_hw=(64, 128))
    save_checkpoint(tmp_path / "rel", build_model(rel_cfg), rel_cfg)
    proc = subprocess.run([sys.executable, str(REPO / "training" / "evaluate.py"), "--data", str(bag),
                           "--avs-checkpoint", s["best_model"], "--rgb-checkpoint", str(tmp_path / "rgb"),
                           "--relative-checkpoint", str(tmp_path / "rel"), "--out", str(tmp_path / "eval"),
                           "--panels", "0", "--json", "--no-progress"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    e = json.loads(proc.stdout.strip().splitlines()[-1])
    assert e["rgb_echo"]["count"] == 12 and e["meta"]["samples"] == 12
