"""DDP: both training scripts under torchrun with 2 CPU processes (gloo) end with identical weights.

Each rank writes the SHA-256 of its model weights (a callback that test/train_with_hooks.py injects);
the ranks must agree, agree with the checkpoint rank 0 saved, and the validation metrics must be
reduced over both ranks' shards (5 validation images split 3 + 2).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

AVS_CONFIG = """
model: {kind: avsnet, preset: tiny, image_size_hw: [64, 128]}
data: {max_val_samples: 5}
optim: {lr: 0.001}
train: {epochs: 1, batch_size: 2, val_batch_size: 2, num_workers: 0, log_every_steps: 1}
"""
REL_CONFIG = """
model: {kind: depthnet, preset: tiny, image_size_hw: [64, 128]}
pose_model: {kind: posenet, preset: tiny, image_size_hw: [64, 128]}
data: {max_val_samples: 5}
train: {epochs: 1, batch_size: 2, val_batch_size: 2, num_workers: 0, log_every_steps: 1}
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from training.tiny_data import make_tiny_bv2

    root = tmp_path_factory.mktemp("ddp")
    data = make_tiny_bv2(root / "bv2", n_sequences=4, frames_per_sequence=5, size_hw=(64, 128),
                         splits=("train", "val", "train", "test"))
    return root, data


def _torchrun(stage: str, data: Path, out: Path, cfg: Path, hash_dir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # The hash is written by a callback that the test launcher injects into each rank's Trainer.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "test" / "train_with_hooks.py"), "--weight-hash-dir", str(hash_dir), stage,
           "--data", str(data), "--out", str(out), "--config", str(cfg), "--device", "cpu", "--no-progress", "--json"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rank_hashes(hash_dir: Path) -> list[str]:
    files = sorted(hash_dir.glob("rank*.sha256"))
    assert [f.name for f in files] == ["rank0.sha256", "rank1.sha256"]
    return [f.read_text() for f in files]


@pytest.mark.slow
def test_ddp_avs_two_processes_identical_weights(tiny_data):
    from avsnet_ros.models.checkpoint import load_model
    from training.checkpointing import state_dict_hash

    root, data = tiny_data
    cfg = root / "avs.yaml"
    cfg.write_text(AVS_CONFIG)
    hashes = root / "hash_avs"
    s = _torchrun("avs", data, root / "run_avs", cfg, hashes)
    assert s["world_size"] == 2
    # 10 training samples, 5 per rank, batch 2 per rank -> 2 steps.
    assert s["global_step"] == 2
    assert s["final_val"]["count"] == 5  # 3 + 2 images reduced over the ranks
    h0, h1 = _rank_hashes(hashes)
    assert h0 == h1
    saved, _ = load_model(Path(s["last_checkpoint"]) / "model")
    assert h0.split()[1] == state_dict_hash(saved)


@pytest.mark.slow
def test_ddp_relative_two_processes_identical_weights(tiny_data):
    root, data = tiny_data
    cfg = root / "rel.yaml"
    cfg.write_text(REL_CONFIG)
    hashes = root / "hash_rel"
    s = _torchrun("relative", data, root / "run_rel", cfg, hashes)
    # 2 train sequences x 3 triples = 6 triples, 3 per rank, batch 2 -> 1 step; 3 validation triples.
    assert s["world_size"] == 2 and s["global_step"] == 1
    assert s["final_val"]["count"] == 3
    h0, h1 = _rank_hashes(hashes)
    assert h0 == h1
    assert "depthnet" in h0 and "posenet" in h0
