"""Odometry for stage 2: the CSV pose columns, the triple's target-to-source transforms (checked by
warping real synthetic frames with their ground-truth depth), and train_relative.py --pose-source."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avsnet_ros.data.batvision import BV2Dataset, TripletDataset
from avsnet_ros.data.poses import POSE_COLUMNS, camera_pose_world_optical, mirror_x, target_to_source
from avsnet_ros.data.samples import DatasetError
from avsnet_ros.data.torch_dataset import TorchTripletDataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic_seq(tmp_path_factory) -> Path:
    """Two 5-frame train_seq sequences from the synthetic world (rendered depth and exact poses)."""
    from training.synthetic.writer import generate_dataset

    root = tmp_path_factory.mktemp("synthetic_seq")
    generate_dataset(root, 10, seed=3, preset="train_seq", workers=1, progress=False, split_name="train")
    return root


def test_camera_pose_is_rep103_zyx_euler_to_the_optical_frame():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.normal(size=3)
        yaw, pitch, roll = rng.uniform(-180, 180), rng.uniform(-80, 80), rng.uniform(-180, 180)
        t = camera_pose_world_optical(pos, yaw, pitch, roll)
        r_body = Rotation.from_euler("ZYX", [yaw, pitch, roll], degrees=True).as_matrix()  # Rz Ry Rx
        # optical x = -body y, optical y = -body z, optical z = body x (REP 103 `_optical`)
        expected = np.stack([-r_body[:, 1], -r_body[:, 2], r_body[:, 0]], axis=1)
        np.testing.assert_allclose(t[:3, :3], expected, atol=1e-12)
        np.testing.assert_allclose(t[:3, 3], pos)
        np.testing.assert_allclose(t[3], [0, 0, 0, 1])
    # Hand case: facing world +y (yaw 90), pitched 30 deg nose down: the optical axis looks along +y and down.
    z_axis = camera_pose_world_optical([0, 0, 0], 90.0, 30.0, 0.0)[:3, 2]
    np.testing.assert_allclose(z_axis, [0.0, np.cos(np.radians(30)), -np.sin(np.radians(30))], atol=1e-12)


def test_target_to_source_and_mirror():
    rng = np.random.default_rng(1)
    a = camera_pose_world_optical(rng.normal(size=3), *rng.uniform(-60, 60, 3))
    b = camera_pose_world_optical(rng.normal(size=3), *rng.uniform(-60, 60, 3))
    t = target_to_source(a, b)
    np.testing.assert_allclose(t, np.linalg.inv(b) @ a, atol=1e-12)
    p = np.array([0.3, -0.2, 2.0, 1.0])  # a point in the target's optical frame
    np.testing.assert_allclose(b @ (t @ p), a @ p, atol=1e-12)  # same world point
    # Mirroring optical x in both cameras: the mirrored point maps to the mirrored image of t @ p.
    s = np.diag([-1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirror_x(t) @ (s @ p), s @ (t @ p), atol=1e-12)


def _warp_error(item: dict, source_key: str, transform: torch.Tensor) -> float:
    from training.losses import photometric_error, warp_source

    depth = torch.where(item["valid"], item["depth_m"], torch.full_like(item["depth_m"], 5.0))[None]
    warped = warp_source(item[source_key][None], depth, transform[None], item["K"][None])
    err = photometric_error(warped, item["rgb"][None], 0.85)
    return float(err[..., 8:-8, 8:-8].mean())  # borders: pixels that leave the source image


@pytest.mark.parametrize("flip", [False, True])
def test_odometry_transforms_warp_real_frames_onto_the_target(synthetic_seq, flip):
    """Oracle: warping the previous / next frame with the rendered depth and the triple's transform
    reproduces the target far better than no motion, the inverse motion, or a flip not mirrored."""
    triplets = TripletDataset(BV2Dataset(synthetic_seq, "train"), 1)
    assert len(triplets) == 6
    data = TorchTripletDataset(triplets, (128, 256), hflip_prob=1.0 if flip else 0.0, max_depth_m=30.0)
    for index in (0, 4):
        item = data[index]
        assert bool(item["has_pose"]) and bool(item["flipped"]) == flip
        for key, src in (("T_prev", "rgb_prev"), ("T_next", "rgb_next")):
            t = item[key]
            good = _warp_error(item, src, t)
            wrong = {"identity": _warp_error(item, src, torch.eye(4)),
                     "inverse": _warp_error(item, src, torch.linalg.inv(t)),
                     "other flip": _warp_error(item, src, torch.from_numpy(mirror_x(t.double().numpy())).float())}
            for name, err in wrong.items():
                assert good < 0.75 * err, (index, key, name, good, err)


def test_best_depth_scale_recovers_a_known_factor(synthetic_seq):
    """Oracle: the rendered depth divided by a known factor per image; the search finds the factor
    (within one grid step) from the warps alone, at 1/4 resolution."""
    import torch.nn.functional as F

    from training.losses import best_depth_scale

    triplets = TripletDataset(BV2Dataset(synthetic_seq, "train"), 1)
    data = TorchTripletDataset(triplets, (128, 256), hflip_prob=0.5, seed=1, max_depth_m=30.0)
    items = [data[i] for i in range(len(data))]
    b = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    median = torch.stack([it["depth_m"][it["valid"]].median() for it in items]).view(-1, 1, 1, 1)
    depth = torch.where(b["valid"], b["depth_m"], median)
    true = torch.tensor([0.3, 2.5, 5.0, 0.6, 1.0, 3.3])[: len(items)]
    coarse = F.interpolate(depth / true.view(-1, 1, 1, 1), scale_factor=0.25, mode="area")
    factors = torch.exp(torch.linspace(-math.log(8.0), math.log(8.0), 25))  # steps of 0.17 in log
    found = best_depth_scale(b["rgb"], [b["rgb_prev"], b["rgb_next"]], coarse, [b["T_prev"], b["T_next"]], b["K"],
                             factors)
    assert found.shape == true.shape
    np.testing.assert_array_less((found.log() - true.log()).abs().numpy(), 0.18)


def test_pose_columns_parsed_and_checked(synthetic_seq, tmp_path):
    sample = BV2Dataset(synthetic_seq, "train")[2]
    loc = next(p for p in synthetic_seq.iterdir() if p.is_dir())
    with open(loc / "train.csv") as f:
        row = list(csv.DictReader(f))[2]
    expected = camera_pose_world_optical([float(row[c]) for c in POSE_COLUMNS[:3]],
                                         *[float(row[c]) for c in POSE_COLUMNS[3:]])
    np.testing.assert_allclose(sample.pose_world_cam, expected)
    # One pose column empty: a clear error naming the row.
    lines = (loc / "train.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("cam_yaw_deg")] = ""
    bad = tmp_path / "bad"
    bad_loc = bad / loc.name
    bad_loc.mkdir(parents=True)
    for sub in ("audio", "camera", "depth"):
        (bad_loc / sub).symlink_to(loc / sub)
    (bad_loc / "train.csv").write_text("\n".join([lines[0], *lines[1:3], ",".join(cells), *lines[4:]]) + "\n")
    with pytest.raises(DatasetError, match=r"train.csv, row 4: pose columns .* must be all set or all empty"):
        BV2Dataset(bad, "train")


def _train(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "training" / "train_relative.py"), *args, "--no-progress", "--json",
           "--set", "model.image_size_hw=[64,128]", "--set", "pose_model.image_size_hw=[64,128]",
           "--set", "train.batch_size=3", "--set", "data.val_split=train"]
    return subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)


def test_train_relative_with_odometry(synthetic_seq, tmp_path):
    from avsnet_ros.models.checkpoint import load_model
    from training.tiny_data import make_tiny_bv2

    run = tmp_path / "run"
    proc = _train("--data", str(synthetic_seq), "--out", str(run), "--epochs", "1", "--pose-source", "odometry")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["train_triples"] == 6 and out["global_step"] == 2
    assert 0 < out["final_val"]["abs_rel"] < 1 and np.isfinite(out["final_val"]["loss"])
    depthnet, cfg = load_model(run / "best" / "depthnet")
    assert cfg.kind == "depthnet" and not (run / "best" / "posenet").exists()  # no PoseNet trained
    assert "pose_source: odometry" in (run / "config.yaml").read_text()

    # Data without pose columns: a one-line error before any training.
    plain = make_tiny_bv2(tmp_path / "plain", n_sequences=2, frames_per_sequence=4, size_hw=(64, 128),
                          splits=("train", "train"))
    proc = _train("--data", str(plain), "--out", str(tmp_path / "run2"), "--epochs", "1", "--pose-source", "odometry")
    assert proc.returncode == 2
    assert "without a camera pose" in proc.stderr and "cam_x_m" in proc.stderr
    assert "Traceback" not in proc.stderr
