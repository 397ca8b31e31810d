"""Training throughput (samples/s) of both stages through the real CLIs and training loop, and
torchrun with 2 processes vs 1 process on CPU.

Each run is `training/train_avs.py` / `training/train_relative.py` with the shipped YAML defaults
(tiny presets: AVS-Net 128x256, DepthNet + PoseNet 96x320, batch 8 per process, 1 loader worker) for
2 epochs on a small generated set (the synthetic world when bench_synthetic made one, else the tiny
set built from the real BV2 instance). Throughput is taken from log.csv between the end of epoch 1
and the end of epoch 2, so start-up, spectrogram statistics and the first epoch's warm-up are not
counted: samples/s = steps * batch * processes / seconds.

Same cores in both distributed runs: 1 process with AVSNET_BENCH_THREADS torch threads vs
torchrun --nproc_per_node 2 with 1 thread each (gloo). Per-process batch stays 8, so the 2-process
run takes twice the samples per step (as DDP users run it).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import DEFAULT_THREADS, REPO_ROOT, environment, main_for, target  # noqa: E402

BATCH = 8
EPOCHS = 2


def _train(stage: str, data: Path, out: Path, nproc: int = 1, threads: int = DEFAULT_THREADS, extra=()) -> dict:
    script = REPO_ROOT / "training" / ("train_avs.py" if stage == "avs" else "train_relative.py")
    args = [str(script), "--data", str(data), "--out", str(out), "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
            "--device", "cpu", "--no-progress", "--json", *extra]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    else:
        cmd = [sys.executable, *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:4])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) < 2:
        raise RuntimeError(f"{out / 'log.csv'} has {len(rows)} epoch rows, need 2")
    steps = int(rows[-1]["step"]) - int(rows[-2]["step"])
    seconds = float(rows[-1]["time_s"]) - float(rows[-2]["time_s"])
    world = int(summary.get("world_size", nproc))
    return {
        "command": (("torchrun --nproc_per_node %d " % nproc if nproc > 1 else "python ")
                    + " ".join(args[0:1] + args[1:])),
        "processes": world,
        "threads_per_process": threads,
        "train_samples": summary.get("train_samples"),
        "steps_timed": steps,
        "seconds_timed": seconds,
        "samples_per_s": steps * BATCH * world / seconds,
        "wall_s": wall,
    }


def dataset(out_dir: Path) -> tuple[Path, str]:
    """A small training set: the synthetic world's if present in out_dir, else the tiny BV2 set."""
    if (out_dir / "synth").is_dir():
        return out_dir / "synth", "synthetic world (bench_synthetic)"
    from training.tiny_data import make_tiny_bv2

    root = make_tiny_bv2(out_dir / "tiny_bv2", n_sequences=8, frames_per_sequence=4, size_hw=(128, 256),
                         splits=("train",))
    return root, "tiny set from the real BV2 instance (training/tiny_data.py), 32 frames"


def run(quick: bool = False, work_dir: Path | None = None) -> dict:
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_train_")
        work_dir = Path(tmp.name)
    work_dir = Path(work_dir)
    try:
        data, source = dataset(work_dir)
        runs = {
            "avs_1proc": _train("avs", data, work_dir / "run_avs_1"),
            "relative_1proc": _train("relative", data, work_dir / "run_rel_1"),
        }
        if not quick:
            runs["avs_torchrun2"] = _train("avs", data, work_dir / "run_avs_2", nproc=2, threads=1)
    finally:
        if tmp is not None:
            tmp.cleanup()
    targets = [
        target("stage 1 (AVS-Net tiny) training samples/s, 1 process", runs["avs_1proc"]["samples_per_s"], None, ">=",
               "samples/s", f"{runs['avs_1proc']['steps_timed']} steps of batch {BATCH} in "
               f"{runs['avs_1proc']['seconds_timed']:.1f} s"),
        target("stage 2 (DepthNet + PoseNet tiny) training samples/s, 1 process",
               runs["relative_1proc"]["samples_per_s"],
               None, ">=", "samples/s", f"{runs['relative_1proc']['steps_timed']} steps of batch {BATCH} in "
               f"{runs['relative_1proc']['seconds_timed']:.1f} s"),
    ]
    if "avs_torchrun2" in runs:
        ratio = runs["avs_torchrun2"]["samples_per_s"] / runs["avs_1proc"]["samples_per_s"]
        targets.append(target("stage 1 torchrun 2 processes x 1 thread / 1 process x %d threads (samples/s)"
                              % DEFAULT_THREADS, ratio, None, ">=", "x",
                              f"{runs['avs_torchrun2']['samples_per_s']:.2f} vs "
                              f"{runs['avs_1proc']['samples_per_s']:.2f}"
                              " samples/s (gloo)"))
    return {"name": "training", "data": source, "batch_per_process": BATCH, "epochs": EPOCHS, "runs": runs,
            "environment": environment(), "targets": targets}


if __name__ == "__main__":
    raise SystemExit(main_for("training", run))
