"""Synthetic audio-visual world: samples/s of `training/make_synthetic.py` (2 worker processes).

Runs the real CLI (image-source RIRs + ray casting + file writing) as a subprocess and reads its
--json summary; also times the whole process (imports, worker start-up). The generated set (BV2
layout with sequences) is kept for bench_training.py when run_all passes `out_dir`.
Target (issue 4): 2,000 samples in under 10 minutes on 2 cores, i.e. >= 3.33 samples/s.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import REPO_ROOT, environment, main_for, target  # noqa: E402

TARGET_SAMPLES_PER_S = 2000 / 600.0


def generate(out_dir: Path, n: int, seed: int = 1, workers: int = 2, preset: str = "train",
             val_fraction: float = 0.0) -> dict:
    """Run make_synthetic.py -> its JSON summary + wall_s (whole process)."""
    cmd = [sys.executable, str(REPO_ROOT / "training" / "make_synthetic.py"), "--out", str(out_dir), "--n", str(n),
           "--seed", str(seed), "--workers", str(workers), "--preset", preset, "--no-progress", "--json"]
    if val_fraction:
        cmd += ["--val-fraction", str(val_fraction)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"make_synthetic.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["wall_s"] = wall
    summary["command"] = " ".join(cmd[1:])
    return summary


def run(quick: bool = False, out_dir: Path | None = None) -> dict:
    n = 16 if quick else 32
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_synth_")
        out_dir = Path(tmp.name) / "synth"
    try:
        s = generate(Path(out_dir), n)
    finally:
        if tmp is not None:
            tmp.cleanup()
    rate = float(s["samples_per_s"])
    rate_wall = n / s["wall_s"]
    return {
        "name": "synthetic",
        "n": n,
        "workers": 2,
        "generator_summary": s,
        "samples_per_s": rate,
        "samples_per_s_incl_startup": rate_wall,
        "projected_2000_samples_min": 2000 / rate / 60.0,
        "environment": environment(),
        "targets": [target("synthetic generator samples/s (2 workers; 2,000 in < 10 min)", rate,
                           TARGET_SAMPLES_PER_S, ">=", "samples/s",
                           f"{n} samples in {s['seconds']:.1f} s ({rate_wall:.2f}/s incl. process start-up); "
                           f"2,000 would take {2000 / rate / 60:.1f} min")],
    }


if __name__ == "__main__":
    raise SystemExit(main_for("synthetic", run))
