"""Stage 2 (train_relative.py): a tiny real run on frame triples, GT-median validation, and an exact
resume from a mid-epoch checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
model: {kind: depthnet, preset: tiny, image_size_hw: [64, 128]}
pose_model: {kind: posenet, preset: tiny, image_size_hw: [64, 128]}
optim: {lr: 0.0005}
train: {epochs: 2, batch_size: 2, val_batch_size: 3, num_workers: 0, log_every_steps: 1, keep_last: 10}
"""


def _run(*args: str, ok: bool = True):
    """train_relative.py with ``args`` -> its --json summary; ok=False: the CompletedProcess, unchecked."""
    cmd = [sys.executable, str(REPO / "training" / "train_relative.py"), *args, "--no-progress", "--json"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    if not ok:
        return proc
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_relative_training_and_mid_epoch_resume(tmp_path):
    from safetensors.torch import load_file

    from avsnet_ros.models.checkpoint import load_model
    from training.tiny_data import make_tiny_bv2

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=5, size_hw=(64, 128),
                         splits=("train", "train", "val"))
    cfg = tmp_path / "rel.yaml"
    cfg.write_text(CONFIG)
    run_a = tmp_path / "run_a"
    a = _run("--data", str(data), "--out", str(run_a), "--config", str(cfg), "--save-every-steps", "2")
    # 2 sequences x 3 triples (t-1, t, t+1) = 6 triples -> 3 steps per epoch.
    assert a["train_triples"] == 6 and a["val_triples"] == 3 and a["triplet_interval"] == 1
    assert a["global_step"] == 6
    # Validation with ground truth: GT-median-scaled metrics, best checkpoint chosen by Abs Rel.
    assert a["final_val"]["count"] == 3 and 0 < a["final_val"]["abs_rel"] < 1.0
    assert "best_abs_rel" in a
    depthnet, cfg_d = load_model(run_a / "best" / "depthnet")
    posenet, cfg_p = load_model(run_a / "best" / "posenet")
    assert cfg_d.kind == "depthnet" and cfg_p.kind == "posenet"
    names = sorted(p.name for p in (run_a / "checkpoints").iterdir() if p.is_dir())
    assert names == ["e0000_s000000002", "e0001_s000000003", "e0001_s000000004", "e0002_s000000006"]
    assert (run_a / "curves.png").is_file() and (run_a / "log.csv").is_file()

    # Resume from the checkpoint taken one batch into epoch 2 (as if killed right after it).
    run_b = tmp_path / "run_b"
    shutil.copytree(run_a, run_b)
    shutil.rmtree(run_b / "checkpoints" / "e0002_s000000006")
    (run_b / "checkpoints" / "latest.txt").write_text("e0001_s000000004\n")
    b = _run("--data", str(data), "--out", str(run_b), "--config", str(cfg), "--save-every-steps", "2", "--resume")
    assert b["resumed_from"].endswith("e0001_s000000004") and b["global_step"] == 6
    for sub in ("depthnet", "posenet"):
        wa = load_file(str(run_a / "checkpoints" / "e0002_s000000006" / sub / "model.safetensors"))
        wb = load_file(str(run_b / "checkpoints" / "e0002_s000000006" / sub / "model.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), sub
    assert b["final_val"] == a["final_val"]


def test_init_depthnet_starts_from_the_checkpoint_and_refuses_a_mismatch(tmp_path):
    """--init-depthnet: with lr 0 the trained DepthNet is exactly the checkpoint it started from (its own
    input mode may differ: rgb -> luminance); a PoseNet or a DepthNet of another architecture is refused."""
    from safetensors.torch import load_file

    from avsnet_ros.models import RelativeDepthConfig, build_model, save_checkpoint
    from training.tiny_data import make_tiny_bv2

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=4, size_hw=(64, 128),
                         splits=("train", "train", "val"))
    cfg = tmp_path / "rel.yaml"
    cfg.write_text(CONFIG.replace("epochs: 2", "epochs: 1").replace("lr: 0.0005", "lr: 0.0"))
    torch.manual_seed(123)
    start_cfg = RelativeDepthConfig(preset="tiny", image_size_hw=(64, 128))
    source = save_checkpoint(tmp_path / "start", build_model(start_cfg), start_cfg)
    run = tmp_path / "run"
    _run("--data", str(data), "--out", str(run), "--config", str(cfg), "--init-depthnet", str(source),
         "--set", "model.input=luminance")
    start = load_file(str(source / "model.safetensors"))
    trained = load_file(str(run / "best" / "depthnet" / "model.safetensors"))
    # (BatchNorm running statistics follow the data even at lr 0; every learned tensor stays)
    learned = [k for k in start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert set(start) == set(trained) and len(learned) > 20
    assert all(torch.equal(start[k], trained[k]) for k in learned), [k for k in learned
                                                                      if not torch.equal(start[k], trained[k])][:5]
    assert json.loads((run / "best" / "depthnet" / "config.json").read_text())["input"] == "luminance"

    pose_cfg = RelativeDepthConfig(kind="posenet", preset="tiny", image_size_hw=(64, 128))
    pose = save_checkpoint(tmp_path / "pose", build_model(pose_cfg), pose_cfg)
    other = RelativeDepthConfig(preset="paper", image_size_hw=(64, 128))
    bigger = save_checkpoint(tmp_path / "paper", build_model(other), other)
    for bad, reason in ((pose, "not a DepthNet"), (bigger, "does not match")):
        proc = _run("--data", str(data), "--out", str(tmp_path / f"bad_{bad.name}"), "--config", str(cfg),
                    "--init-depthnet", str(bad), ok=False)
        assert proc.returncode == 2 and reason in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
