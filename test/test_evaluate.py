"""training/evaluate.py: the Table 1/2 arithmetic, recomputed independently from the saved predictions.

Checkpoints are small random-initialised models written with the project's checkpoint format (the
arithmetic does not need trained weights); the data are built from the real BatVision instance at a
size (80 x 144) different from the model input (64 x 128), so predictions must be resized to the
ground-truth size.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ROWS = ("rgb_only", "rgb_echo", "relative_none", "relative_rgb_median", "relative_echo_median",
        "relative_echo_meanstd", "relative_echo_local", "relative_gt_median")
KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")
GT_HW = (80, 144)


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def numpy_metrics(pred: np.ndarray, gt: np.ndarray, max_depth_m: float) -> dict | None:
    """Independent reference: valid = finite GT in (0, max) (strict, paper footnote 5) and a finite
    prediction; prediction clipped to [1e-3, max]; Eigen metrics."""
    gt = gt.astype(np.float64)
    pred = pred.astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > 0) & (gt < max_depth_m) & np.isfinite(pred)
    if not valid.any():
        return None
    g = gt[valid]
    p = np.clip(pred[valid], 1e-3, max_depth_m)
    thresh = np.maximum(g / p, p / g)
    return {
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "delta1": np.mean(thresh < 1.25),
        "delta2": np.mean(thresh < 1.25 ** 2),
        "delta3": np.mean(thresh < 1.25 ** 3),
    }


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    import torch

    from avsnet_ros.models.builder import build_model
    from avsnet_ros.models.checkpoint import save_checkpoint
    from avsnet_ros.models.config import AVSNetConfig, RelativeDepthConfig
    from training.tiny_data import make_tiny_bv2

    root = tmp_path_factory.mktemp("evaluate")
    data = make_tiny_bv2(root / "bv2", n_sequences=4, frames_per_sequence=3, size_hw=GT_HW,
                         splits=("test", "val"))
    torch.manual_seed(0)
    echo_cfg = AVSNetConfig(preset="tiny", image_size_hw=(64, 128), use_audio=True)
    echo = build_model(echo_cfg)
    echo.set_spectrogram_stats([0.03, 0.03], [0.08, 0.08])
    save_checkpoint(root / "avs", echo, echo_cfg)
    rgb_cfg = AVSNetConfig(preset="tiny", image_size_hw=(64, 128), use_audio=False)
    save_checkpoint(root / "rgb", build_model(rgb_cfg), rgb_cfg)
    rel_cfg = RelativeDepthConfig(kind="depthnet", preset="tiny", image_size_hw=(64, 128))
    save_checkpoint(root / "rel", build_model(rel_cfg), rel_cfg)
    out = root / "eval"
    cmd = [sys.executable, str(REPO / "training" / "evaluate.py"), "--data", str(data), "--split", "test",
           "--zero-shot-data", str(data), "--zero-shot-split", "val", "--avs-checkpoint", str(root / "avs"),
           "--rgb-checkpoint", str(root / "rgb"), "--relative-checkpoint", str(root / "rel"), "--out", str(out),
           "--save-predictions", "--panels", "1", "--batch-size", "4", "--device", "cpu", "--json", "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"out": out, "summary": summary, "data": data}


def test_json_has_every_row_with_every_metric(evaluated):
    s = evaluated["summary"]
    for row in ROWS:
        assert set(s[row]) == set(KEYS) | {"count"}
        assert s[row]["count"] == 6
        assert s["zero_shot"][row]["count"] == 6
    assert s["meta"]["max_depth_m"] == 30.0


def test_reported_metrics_equal_numpy_recomputation_from_saved_predictions(evaluated):
    out, s = evaluated["out"], evaluated["summary"]
    for name, table in (("test", s), ("zero_shot", s["zero_shot"])):
        files = sorted((out / "predictions" / name).glob("*.npz"))
        assert len(files) == 6
        per_row = {row: [] for row in ROWS}
        for f in files:
            z = np.load(f)
            gt = z["gt_m"]
            assert gt.shape == GT_HW
            for row in ROWS:
                assert z[row].shape == GT_HW, row  # every prediction at the ground-truth size
                m = numpy_metrics(z[row], gt, float(z["max_depth_m"]))
                assert m is not None
                per_row[row].append(m)
        for row in ROWS:
            for k in KEYS:
                expected = float(np.mean([m[k] for m in per_row[row]]))
                assert table[row][k] == pytest.approx(expected, rel=1e-9, abs=1e-12), (name, row, k)


def test_relative_gt_median_uses_the_ground_truth_median(evaluated):
    out = evaluated["out"]
    for f in sorted((out / "predictions" / "test").glob("*.npz")):
        z = np.load(f)
        gt, rel = z["gt_m"].astype(np.float64), z["relative_none"].astype(np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(gt) & (gt > 0) & (gt < 30.0) & np.isfinite(rel) & (rel > 0)
        scale = np.median(gt[valid]) / np.median(rel[valid])
        np.testing.assert_allclose(z["relative_gt_median"], rel * scale, rtol=1e-5)
        # ... and the scaled relative depth has the ground truth's median on those pixels.
        assert np.median(z["relative_gt_median"][valid]) == pytest.approx(np.median(gt[valid]), rel=1e-5)


def test_per_image_csv_and_reports(evaluated):
    out, s = evaluated["out"], evaluated["summary"]
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 2 * 6 * len(ROWS)
    for row in ROWS:
        vals = [float(r["abs_rel"]) for r in rows if r["dataset"] == "test" and r["row"] == row]
        assert np.mean(vals) == pytest.approx(s[row]["abs_rel"], rel=1e-9)
    md = (out / "results.md").read_text()
    assert "| Dataset | Model | Abs Rel" in md and "GT median (upper reference)" in md and "RGB-Echoes (median)" in md
    summary_csv = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["dataset"], r["row"]) for r in summary_csv} == {(d, k) for d in ("test", "zero_shot") for k in ROWS}
    assert json.loads((out / "results.json").read_text())["rgb_echo"] == s["rgb_echo"]
    pngs = sorted(p.name for p in (out / "panels").glob("*.png"))
    assert pngs == ["test_000000.png", "zero_shot_000000.png"]
    assert sorted(p.name for p in (out / "gradcam").glob("*.png")) == pngs


def test_bag_flag_dispatches_to_replay_eval(monkeypatch):
    import importlib.util

    sys.path.insert(0, str(REPO))
    from training import evaluate

    if importlib.util.find_spec("training.replay_eval") is None:
        rc = evaluate.main(["--bag", "/nonexistent.mcap"])
        assert rc == 2
    else:
        import training.replay_eval as replay_eval

        seen = {}
        monkeypatch.setattr(replay_eval, "main", lambda argv: seen.setdefault("argv", argv) and 0)
        rc = evaluate.main(["--bag", "/some/bag", "--json"])
        assert rc == 0 and seen["argv"] == ["--bag", "/some/bag", "--json"]


def test_default_checkpoints_on_the_real_bv2_instance(bv2_tree, tmp_path):
    """No checkpoint flags: the shipped checkpoints (or, before they exist, a clear error naming them)."""
    from avsnet_ros.paths import asset_path

    cmd = [sys.executable, str(REPO / "training" / "evaluate.py"), "--data", str(bv2_tree), "--out", str(tmp_path),
           "--panels", "0", "--json", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    shipped = [asset_path("checkpoints", n) for n in ("avsnet_tiny", "avsnet_tiny_rgb", "depthnet_tiny")]
    if all(p.is_dir() for p in shipped):
        assert proc.returncode == 0, proc.stderr[-3000:]
        s = json.loads(proc.stdout.strip().splitlines()[-1])
        assert all(s[row]["count"] == 1 for row in ROWS)
        assert s["meta"]["checkpoint_avs_echo"] == str(shipped[0])
    else:
        assert proc.returncode == 2
        assert "checkpoint" in proc.stderr and "does not exist" in proc.stderr


def test_relative_echo_local_is_the_local_scale_of_the_saved_maps(evaluated):
    """relative_echo_local = scaling.local_scale(R, Mp) over Mp's unsaturated pixels, range-masked."""
    import torch

    from avsnet_ros.scaling import local_scale, unsaturated_mask

    out = evaluated["out"]
    for f in sorted((out / "predictions" / "test").glob("*.npz")):
        z = np.load(f)
        mp = torch.from_numpy(z["rgb_echo"])
        depth, fit = local_scale(torch.from_numpy(z["relative_none"]), mp, valid=unsaturated_mask(mp, 0.1, 30.0))
        d = depth.numpy()
        with np.errstate(invalid="ignore"):
            expected = np.where((d >= 0.1) & (d <= 30.0), d, np.nan)
        np.testing.assert_allclose(z["relative_echo_local"], expected, rtol=1e-5, equal_nan=True)
        # the field is the global median scale where no cell has its own fit, and the ratio is smooth
        assert fit.scale_grid.shape == (6, 8)
