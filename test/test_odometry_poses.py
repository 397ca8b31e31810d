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


# ----------------------------------------------------------------------------- odometry in rosbag2 files
def test_quaternions_and_slerp_match_scipy():
    from scipy.spatial.transform import Slerp

    from avsnet_ros.data.poses import quaternion_to_rotation, rotation_to_quaternion, slerp

    rng = np.random.default_rng(4)
    for _ in range(50):
        q = rng.normal(size=4)
        ref = Rotation.from_quat(q)  # scipy: (x, y, z, w), normalised
        np.testing.assert_allclose(quaternion_to_rotation(q), ref.as_matrix(), atol=1e-12)
        back = rotation_to_quaternion(ref.as_matrix())
        assert back[3] >= 0 and min(np.abs(back - ref.as_quat()).max(), np.abs(back + ref.as_quat()).max()) < 1e-9
        q1 = rng.normal(size=4)
        u = float(rng.uniform())
        expected = Slerp([0.0, 1.0], Rotation.from_quat([q, q1]))([u]).as_matrix()[0]
        np.testing.assert_allclose(quaternion_to_rotation(slerp(q, q1, u)), expected, atol=1e-9)
    with pytest.raises(ValueError, match="zero or not finite"):
        quaternion_to_rotation([0, 0, 0, 0])
    from avsnet_ros.data.poses import body_pose_from_optical

    for _ in range(20):  # the CSV columns back from a pose
        cols = [*rng.normal(size=3), rng.uniform(-179, 179), rng.uniform(-85, 85), rng.uniform(-179, 179)]
        np.testing.assert_allclose(body_pose_from_optical(camera_pose_world_optical(cols[:3], *cols[3:])), cols,
                                   atol=1e-9)


def test_interpolate_pose_between_messages_never_across_gaps_or_outside():
    from avsnet_ros.data.poses import interpolate_pose

    stamps = [0, 100, 200, 1_000]
    pos = [np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([1.0, 2.0, 0]), np.array([5.0, 5, 5])]
    yaw90 = Rotation.from_euler("z", 90, degrees=True).as_quat()
    quats = [np.array([0, 0, 0, 1.0]), yaw90, yaw90, yaw90]
    t = interpolate_pose(25, stamps, pos, quats, max_gap_ns=150)
    np.testing.assert_allclose(t[:3, 3], [0.25, 0, 0])
    np.testing.assert_allclose(t[:3, :3], Rotation.from_euler("z", 22.5, degrees=True).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(200, stamps, pos, quats, 150)[:3, 3], [1.0, 2.0, 0])  # exact stamp
    assert interpolate_pose(500, stamps, pos, quats, 150) is None  # 800 ns between the messages around it
    assert interpolate_pose(-1, stamps, pos, quats, 150) is None  # never extrapolated
    assert interpolate_pose(1_001, stamps, pos, quats, 150) is None


def _bag_of(samples, path):
    from avsnet_ros.data.rosbag_io import write_samples_to_bag

    write_samples_to_bag(samples, path)
    return path


def test_bag_odometry_round_trip_offset_and_interpolation(synthetic_seq, tmp_path):
    """Poses written as nav_msgs/Odometry come back per frame; the camera's pose on the base moves them by
    R_world_body @ offset; a frame without its own message gets the pose interpolated between its
    neighbours (midpoint position, scipy slerp rotation); a gap larger than odometry_max_gap_s gives none."""
    import dataclasses

    from scipy.spatial.transform import Slerp

    from avsnet_ros.data.poses import R_BODY_OPTICAL
    from avsnet_ros.data.rosbag_io import read_bag_samples

    samples = [BV2Dataset(synthetic_seq, "train")[i] for i in range(10)]
    back, report = read_bag_samples(_bag_of(samples, tmp_path / "full"))
    assert report.odometry_total == 10 and report.frames_without_odometry == 0
    for a, b in zip(samples, back):
        np.testing.assert_allclose(b.pose_world_cam, a.pose_world_cam, atol=1e-9)
    # bag -> BV2-layout files: the pose columns carry them on
    from training.bag_tools import main as bag_tools

    files_root = tmp_path / "files"
    assert bag_tools(["to-batvision", str(tmp_path / "full"), "--out", str(files_root), "--split", "train"]) == 0
    files = BV2Dataset(files_root, "train")
    for i, a in enumerate(samples):
        np.testing.assert_allclose(files[i].pose_world_cam, a.pose_world_cam, atol=1e-9)

    offset = [0.3, -0.1, 0.2, 10.0, 0.0, 0.0]  # 30 cm ahead, 10 cm right, 20 cm up, turned 10 deg left
    moved, _ = read_bag_samples(tmp_path / "full", camera_pose_in_base=offset)
    for a, b in zip(samples, moved):
        r_world_body = a.pose_world_cam[:3, :3] @ R_BODY_OPTICAL.T
        np.testing.assert_allclose(b.pose_world_cam[:3, 3], a.pose_world_cam[:3, 3] + r_world_body @ offset[:3],
                                   atol=1e-9)
        turned = r_world_body @ Rotation.from_euler("z", 10, degrees=True).as_matrix() @ R_BODY_OPTICAL
        np.testing.assert_allclose(b.pose_world_cam[:3, :3], turned, atol=1e-9)

    holes = [dataclasses.replace(s, pose_world_cam=None) if i == 2 else s for i, s in enumerate(samples)]
    back, report = read_bag_samples(_bag_of(holes, tmp_path / "holes"))
    assert report.odometry_total == 9 and report.frames_without_odometry == 0
    p1, p3 = samples[1].pose_world_cam, samples[3].pose_world_cam  # stamps 0.2 s and 0.6 s; frame 2 at 0.4 s
    np.testing.assert_allclose(back[2].pose_world_cam[:3, 3], 0.5 * (p1[:3, 3] + p3[:3, 3]), atol=1e-9)
    mid = Slerp([0.0, 1.0], Rotation.from_matrix([p1[:3, :3], p3[:3, :3]]))([0.5]).as_matrix()[0]
    np.testing.assert_allclose(back[2].pose_world_cam[:3, :3], mid, atol=1e-9)
    back, report = read_bag_samples(tmp_path / "holes", odometry_max_gap_s=0.3)
    assert back[2].pose_world_cam is None and report.frames_without_odometry == 1
    assert all(s.pose_world_cam is not None for i, s in enumerate(back) if i != 2)


def test_train_relative_with_odometry_from_a_bag(synthetic_seq, tmp_path):
    import dataclasses

    samples = [BV2Dataset(synthetic_seq, "train")[i] for i in range(10)]
    bag = _bag_of(samples, tmp_path / "seq_bag")
    proc = _train("--data", str(bag), "--out", str(tmp_path / "run"), "--epochs", "1", "--pose-source", "odometry",
                  "--set", "data.bag_val_every=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # frames 0-3 of each sequence train (every 5th is held out): 2 triples each; batch 3, the last partial dropped
    assert out["train_triples"] == 4 and out["global_step"] == 1

    no_odom = _bag_of([dataclasses.replace(s, pose_world_cam=None) for s in samples], tmp_path / "plain_bag")
    proc = _train("--data", str(no_odom), "--out", str(tmp_path / "run2"), "--epochs", "1", "--pose-source", "odometry",
                  "--set", "data.bag_val_every=5")
    assert proc.returncode == 2 and "without a camera pose" in proc.stderr and "/odom" in proc.stderr
    assert "Traceback" not in proc.stderr
