"""training/replay_eval.py (reached through training/evaluate.py --bag): a bag of the real fixture
played through replay_source -> depth_node over rclpy; counts, latency and metrics checked
against a hand computation on the same frames."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ros_support import make_tiny_checkpoints

pytestmark = pytest.mark.ros


def test_replay_eval_through_evaluate_cli(bv2_tree, tmp_path, capsys):
    from avsnet_ros.data.batvision import BV2Dataset
    from avsnet_ros.data.rosbag_io import write_samples_to_bag
    from avsnet_ros.pipeline import DepthPipeline
    from training import evaluate

    ckpt = make_tiny_checkpoints(tmp_path / "ckpt")
    samples = []
    for i in range(4):
        s = BV2Dataset(bv2_tree, split="test")[0]
        s.stamp_ns = 1_000_000_000 + i * 300_000_000
        samples.append(s)
    bag = tmp_path / "bag"
    write_samples_to_bag(samples, bag)
    rc = evaluate.main(["--bag", str(bag), "--avs-checkpoint", ckpt["avs"], "--relative-checkpoint", ckpt["rel"],
                        "--device", "cpu", "--split", "test", "--out", str(tmp_path / "out"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    frames = result["frames"]
    assert frames["published_by_replay"] == 4 and frames["lost_in_transport"] == 0
    assert frames["in"] == 4 and frames["out"] + frames["dropped"] == 4
    assert frames["out"] >= 3 and frames["matched_with_gt"] == frames["out"] == frames["depth_received"]
    assert result["latency_ms"]["count"] == frames["out"]
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p90"] <= result["latency_ms"]["max"] < 30_000
    assert (tmp_path / "out" / "replay_eval.json").is_file()
    # every frame has its own echo in the bag, so the node ran the full pipeline on each: the
    # same numbers by hand (abs rel and delta1 over valid ground truth, NaN predictions excluded)
    assert result["scale_modes"].get("fresh", 0) == frames["out"]
    # the bag's own pairing under the node's max_echo_age_s (config/avsnet.yaml): all 4 frames have an echo
    assert result["pairing_expected"] == {"max_echo_age_s": 0.6, "frames": 4, "with_echo": 4, "without_echo": 0,
                                          "stale_echo": 0}
    pipe = DepthPipeline.from_checkpoints(ckpt["avs"], ckpt["rel"], device="cpu")
    s = samples[0]
    pred = pipe(s.rgb, s.echo).depth_m[0]
    gt = s.depth_m
    valid = np.isfinite(gt) & (gt > 0) & (gt <= pipe.max_depth_m) & np.isfinite(pred)
    p, g = np.maximum(pred[valid].astype(np.float64), 1e-3), gt[valid].astype(np.float64)
    abs_rel = float(np.mean(np.abs(p - g) / g))
    delta1 = float(np.mean(np.maximum(p / g, g / p) < 1.25))
    assert result["metrics"]["abs_rel"] == pytest.approx(abs_rel, rel=1e-4)
    assert result["metrics"]["delta1"] == pytest.approx(delta1, abs=1e-6)
    assert result["metrics"]["count"] == frames["out"]


def test_replay_eval_reports_a_bad_bag(tmp_path, capsys):
    from training import replay_eval

    ckpt = make_tiny_checkpoints(tmp_path / "ckpt")
    (tmp_path / "not_a_bag").mkdir()
    (tmp_path / "not_a_bag" / "metadata.yaml").write_text("nonsense: [")
    rc = replay_eval.main(["--bag", str(tmp_path / "not_a_bag"), "--avs-checkpoint", ckpt["avs"],
                           "--relative-checkpoint", ckpt["rel"], "--device", "cpu", "--json"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "replay_source" in err and "not_a_bag" in err
