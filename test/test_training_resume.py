"""Stage-1 training: checkpoints, exact resume (epoch boundary and SIGKILL mid-epoch), logs.

Tiny real runs on CPU (AVS-Net tiny preset at 64x128, 20 training samples built from the bundled real
BatVision instance). Every run is a subprocess with OMP_NUM_THREADS=1, so the arithmetic is the same
in all of them and weights can be compared bit for bit.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

CONFIG = """
model: {kind: avsnet, preset: tiny, image_size_hw: [64, 128]}
data: {max_val_samples: 5}
optim: {lr: 0.001, schedule: onecycle}
train: {epochs: 2, batch_size: 4, val_batch_size: 5, num_workers: 0, log_every_steps: 1, keep_last: 2}
"""


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _cmd(data: Path, out: Path, cfg: Path, *extra: str) -> list[str]:
    return [PY, str(REPO / "training" / "train_avs.py"), "--data", str(data), "--out", str(out), "--config", str(cfg),
            "--no-progress", "--json", *extra]


def _run(cmd: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300)


def _summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from training.tiny_data import make_tiny_bv2

    root = tmp_path_factory.mktemp("resume")
    # 8 sequences of 5 frames: 20 train (5 steps of 4 per epoch), 10 val, 10 test samples.
    data = make_tiny_bv2(root / "bv2", n_sequences=8, frames_per_sequence=5, size_hw=(64, 128),
                         splits=("train", "train", "val", "test"))
    cfg = root / "train.yaml"
    cfg.write_text(CONFIG)
    run_a = root / "run_a"
    summary = _summary(_run(_cmd(data, run_a, cfg)))
    return {"root": root, "data": data, "cfg": cfg, "run_a": run_a, "summary_a": summary}


def test_uninterrupted_run_writes_everything(tiny):
    run_a, s = tiny["run_a"], tiny["summary_a"]
    assert s["global_step"] == 10 and s["epochs"] == 2 and s["train_samples"] == 20 and s["val_samples"] == 5
    assert s["final_val"]["count"] == 5
    ckpts = sorted(p.name for p in (run_a / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["e0001_s000000005", "e0002_s000000010"]
    assert (run_a / "checkpoints" / "latest.txt").read_text().strip() == "e0002_s000000010"
    # train_state.pt holds only tensors/plain data: loadable without executing code.
    state = torch.load(run_a / "checkpoints" / "e0002_s000000010" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["batch_in_epoch"] == 0 and state["global_step"] == 10
    assert {"optimizer", "scheduler", "rng", "history", "sampler"} <= set(state)
    assert len(state["step_losses"]) == 10
    # The spectrogram statistics were computed from the training set and stored with the weights.
    w = _weights(run_a / "best" / "model")
    assert not torch.equal(w["spec_mean"], torch.zeros(2)) and not torch.equal(w["spec_std"], torch.ones(2))
    assert torch.all(w["spec_std"] > 0)
    # The model dir loads strictly through the project's loader and has the training command.
    from avsnet_ros.models.checkpoint import load_checkpoint_config, load_model

    model, cfg = load_model(run_a / "best" / "model")
    assert cfg.kind == "avsnet" and cfg.use_audio and tuple(cfg.image_size_hw) == (64, 128)
    _, extra = load_checkpoint_config(run_a / "best" / "model")
    assert "train_avs.py" in extra["training_command"]
    best = json.loads((run_a / "best" / "best.json").read_text())
    assert best["metric"] == "val_abs_rel" and best["value"] == pytest.approx(s["best_abs_rel"])
    # Logs: CSV with one row per epoch, TensorBoard events, curves plot, resolved config.
    import csv

    rows = list(csv.DictReader(open(run_a / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["val_abs_rel"]) == pytest.approx(s["final_val"]["abs_rel"])
    assert any((run_a / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_a / "curves.png").stat().st_size > 10_000
    assert (run_a / "config.yaml").is_file() and (run_a / "COMMAND.txt").is_file()


def test_resume_at_epoch_boundary_is_bit_exact(tiny, capsys):
    """A run stopped right after its epoch-1 checkpoint and resumed ends with run A's weights."""
    run_b = tiny["root"] / "run_b"
    shutil.copytree(tiny["run_a"], run_b)
    shutil.rmtree(run_b / "checkpoints" / "e0002_s000000010")
    shutil.rmtree(run_b / "best")
    (run_b / "checkpoints" / "latest.txt").write_text("e0001_s000000005\n")
    # Without --resume an existing run is never overwritten; with a changed schedule it refuses
    # (both checked before any data is loaded, so in-process here).
    sys.path.insert(0, str(REPO))
    from training import train_avs

    assert train_avs.main(_cmd(tiny["data"], run_b, tiny["cfg"])[2:]) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_avs.main(_cmd(tiny["data"], run_b, tiny["cfg"], "--resume", "--lr", "0.002")[2:]) == 2
    assert "['optim']" in capsys.readouterr().err
    s = _summary(_run(_cmd(tiny["data"], run_b, tiny["cfg"], "--resume")))
    assert s["resumed_from"].endswith("e0001_s000000005") and s["global_step"] == 10
    _assert_same_weights(tiny["run_a"] / "checkpoints" / "e0002_s000000010" / "model",
                         run_b / "checkpoints" / "e0002_s000000010" / "model")
    assert s["final_val"] == tiny["summary_a"]["final_val"]
    a_csv = (tiny["run_a"] / "log.csv").read_text().splitlines()
    b_csv = (run_b / "log.csv").read_text().splitlines()
    strip_time = lambda lines: [",".join(line.split(",")[:-1]) for line in lines]  # noqa: E731
    assert strip_time(a_csv) == strip_time(b_csv)


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tiny):
    """SIGKILL after a mid-epoch checkpoint (--save-every-steps), then --resume: same final weights."""
    run_c = tiny["root"] / "run_c"
    cmd = _cmd(tiny["data"], run_c, tiny["cfg"], "--save-every-steps", "3")
    # The step delay (a callback injected by the test launcher) only slows the run down (no numbers
    # change) so the kill lands mid-run.
    cmd = [PY, str(REPO / "test" / "train_with_hooks.py"), "--step-delay-s", "0.3", "avs", *cmd[2:]]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    latest = run_c / "checkpoints" / "latest.txt"
    target = "e0001_s000000006"  # step 6 = 1 batch into the second epoch
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if latest.is_file() and latest.read_text().strip() == target:
                break
            assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()[-3000:]}"
            time.sleep(0.02)
        else:
            pytest.fail("no mid-epoch checkpoint appeared")
    finally:
        proc.kill()  # SIGKILL mid-run is the point of the test (Popen.kill skips a process that already ended)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_c / "checkpoints" / "e0002_s000000010").exists()
    state = torch.load(run_c / "checkpoints" / target / "train_state.pt", weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (1, 1, 6)
    s = _summary(_run(_cmd(tiny["data"], run_c, tiny["cfg"], "--save-every-steps", "3", "--resume")))
    assert s["resumed_from"].endswith(target) and s["global_step"] == 10
    _assert_same_weights(tiny["run_a"] / "checkpoints" / "e0002_s000000010" / "model",
                         run_c / "checkpoints" / "e0002_s000000010" / "model")
    assert s["final_val"] == tiny["summary_a"]["final_val"]
