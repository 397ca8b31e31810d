"""training/scale_sequences.py: metric helpers against hand cases, and a tiny make + eval run through the
shipped pipeline (no rclpy)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsnet_ros.policy.scale_filter import ScaleFilterConfig
from training.scale_sequences import filter_scales, frames_to_follow, jitter

REPO = Path(__file__).resolve().parents[1]


def test_jitter_is_std_of_log_differences():
    s = np.exp(np.array([0.0, 0.1, 0.0, 0.1, 0.0]))
    # differences +-0.1 alternate: mean 0, std 0.1
    assert jitter(s) == pytest.approx(0.1)
    assert jitter(np.full(10, 3.0)) == 0.0
    assert math.isnan(jitter([1.0, 2.0]))  # too short to say (NaN, not a made-up 0)


def test_frames_to_follow_hand_case():
    raw = np.array([2.0] * 5 + [4.0] * 5)
    filtered = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 4.1, 4.0, 4.0])
    # room 1 right away; room 2 reached (within 10 %) on its 3rd echo and kept
    assert frames_to_follow(filtered, raw, [0, 5]) == [1, 3]
    assert frames_to_follow(np.array([2.0] * 10), raw, [0, 5]) == [1, None]


def test_filter_scales_uses_odometry_and_replaces_invalid_start():
    n = 20
    scales = np.full(n, 2.0)
    scales[0] = np.nan  # no estimate yet: the raw value is passed through
    conf = np.full(n, 0.9)
    stamps = np.arange(n, dtype=np.int64) * 200_000_000
    pos = np.zeros((n, 3))
    pos[:, 0] = np.arange(n) * 0.5  # 0.5 m per echo
    cfg = ScaleFilterConfig(process_var_log_per_s=0.0, process_var_log_per_m=0.01)
    out, counters = filter_scales(scales, conf, stamps, pos, cfg, use_odometry=True)
    assert math.isnan(out[0]) and np.allclose(out[1:], 2.0)
    assert counters["invalid"] == 1 and counters["accepted"] == n - 1


def test_make_and_eval_tiny(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    script = str(REPO / "training" / "scale_sequences.py")
    make = subprocess.run([sys.executable, script, "make", "--out", str(tmp_path / "seq"), "--sequences", "2",
                           "--frames", "4",
                           "--seed", "5"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert make.returncode == 0, make.stderr[-3000:]
    still = np.load(tmp_path / "seq" / "still" / "seq_00.npz")
    moving = np.load(tmp_path / "seq" / "moving" / "seq_00.npz")
    # still: one pose, the image never changes but every echo differs; moving: the rig walks
    assert np.array_equal(still["rgb"][0], still["rgb"][-1]) and not np.allclose(still["echo"][0], still["echo"][1])
    assert np.ptp(still["position_m"], axis=0).max() == 0.0 and np.ptp(moving["position_m"], axis=0).max() > 0.0
    ev = subprocess.run([sys.executable, script, "eval", "--data", str(tmp_path / "seq"), "--json"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    summary = json.loads(ev.stdout.strip().splitlines()[-1])
    for kind in ("still", "moving", "rooms"):
        for variant in ("raw", "kalman", "kalman_odom"):
            m = summary["kinds"][kind][variant]
            assert m["frames"] == 8 and math.isfinite(m["abs_rel"]) and m["scale_jitter"] >= 0
    assert summary["kinds"]["still"]["raw"]["scale_jitter_gt_median"] == pytest.approx(0.0, abs=1e-6)
    full = json.loads((tmp_path / "seq" / "results.json").read_text())
    assert len(full["per_frame"]) == 3 * 8
    missing = subprocess.run([sys.executable, script, "eval", "--data", str(tmp_path / "nothing")], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "run `make` first" in missing.stderr
