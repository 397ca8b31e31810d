"""training/scale_sequences.py `bags` (npz sequences -> rosbag2 read back with rosbag_io) and
`replay-table` (aggregation of replay_eval --scale-filters results) against hand values."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training import scale_sequences


def _write_npz(path, frames: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    z = dict(rgb=rng.integers(0, 255, (frames, 6, 8, 3), dtype=np.uint8),
             depth_m=rng.uniform(0.5, 3.0, (frames, 6, 8)).astype(np.float32),
             echo=rng.normal(0, 0.1, (frames, 2, 7782)).astype(np.float32),
             stamp_ns=np.arange(frames, dtype=np.int64) * 200_000_000, position_m=np.zeros((frames, 3)),
             scale_m=np.float64(4.0), sample_rate_hz=np.int64(44100))
    z["depth_m"][0, 0, 0] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **z)
    return z


def test_bags_write_the_sequences_at_recorded_timing(tmp_path, capsys):
    from avsnet_ros.data.rosbag_io import read_bag_samples
    from training.synthetic.scene import PRESETS

    data = tmp_path / "seq"
    stored = {kind: _write_npz(data / kind / "seq_00.npz", 3, i) for i, kind in enumerate(("still", "moving"))}
    (data / "make.json").write_text(json.dumps({"preset": "test"}))
    out = tmp_path / "bags"
    assert scale_sequences.main(["bags", "--data", str(data), "--out", str(out), "--start-s", "2.0"]) == 0
    hfov = math.radians(PRESETS["test"].hfov_deg)
    fx = 4.0 / math.tan(hfov / 2)  # (W / 2) / tan(hfov / 2), W = 8; principal point at the pixel-centre middle
    for kind, z in stored.items():
        samples, report = read_bag_samples(out / kind / "seq_00")
        assert report.samples == 3 and report.frames_without_echo == 0
        assert [s.stamp_ns for s in samples] == [2_000_000_000, 2_200_000_000, 2_400_000_000]
        for f, s in enumerate(samples):
            assert np.array_equal(s.rgb, z["rgb"][f]) and np.array_equal(s.echo, z["echo"][f])
            assert np.array_equal(s.depth_m, z["depth_m"][f], equal_nan=True)
            assert s.intrinsics == pytest.approx(np.array([[fx, 0, 3.5], [0, fx, 2.5], [0, 0, 1]]))
    summary = json.loads((out / "bags.json").read_text())
    assert [b["frames"] for b in summary["bags"]] == [3, 3]
    # never overwritten; a missing kind is a clear error
    assert scale_sequences.main(["bags", "--data", str(data), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    (data / "moving" / "seq_00.npz").unlink()
    assert scale_sequences.main(["bags", "--data", str(data), "--out", str(tmp_path / "b2")]) == 2
    assert "no moving/seq_*.npz" in capsys.readouterr().err


def _fake_run(jitter, errors, abs_rel, count, published=30):
    return {"scale": {"jitter": jitter, "jitter_adjacent": jitter / 2, "error_mean": sum(errors) / len(errors),
                      "per_frame": [{"scale_error": e} for e in errors]},
            "metrics": {"abs_rel": abs_rel, "delta1": 0.5, "count": count},
            "frames": {"published_by_replay": published, "out": count}}


def test_replay_table_aggregates_per_kind_against_hand_values(tmp_path):
    runs = {"still_seq_00": ({"none": _fake_run(0.02, [0.1, 0.3], 0.2, 30), "kalman": _fake_run(0.01, [0.1], 0.2, 26)}),
            "still_seq_01": ({"none": _fake_run(0.04, [0.5], 0.4, 30), "kalman": _fake_run(0.01, [0.4], 0.38, 30)})}
    paired = {"still_seq_00": {"none": {"frames": 26, "abs_rel": 0.21, "scale_error": 0.2},
                               "kalman": {"frames": 26, "abs_rel": 0.2, "scale_error": 0.1}},
              "still_seq_01": {"none": {"frames": 30, "abs_rel": 0.4, "scale_error": 0.5},
                               "kalman": {"frames": 30, "abs_rel": 0.38, "scale_error": 0.4}}}
    for name, by in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "replay_eval.json").write_text(json.dumps(
            {"by_scale_filter": by, "scale_filter_comparison": {"paired": paired[name]}}))
    table = scale_sequences.replay_table(tmp_path)
    assert list(table) == ["still"]
    none, kal = table["still"]["none"], table["still"]["kalman"]
    assert none["scale_jitter"] == pytest.approx(0.03) and kal["scale_jitter"] == pytest.approx(0.01)
    assert kal["jitter_ratio_vs_none"] == pytest.approx(1 / 3)
    assert kal["scale_jitter_adjacent"] == pytest.approx(0.005)
    assert kal["jitter_adjacent_ratio_vs_none"] == pytest.approx(1 / 3)
    # paired: frames both replays of a sequence scored; mean over sequences
    assert kal["paired_frames"] == 56 and kal["paired_abs_rel"] == pytest.approx(0.29)
    assert none["paired_abs_rel"] == pytest.approx(0.305)
    assert kal["paired_abs_rel_change_vs_none"] == pytest.approx(-0.015)
    assert kal["paired_scale_error"] == pytest.approx(0.25)
    # per sequence means, then the mean over sequences (not over frames)
    assert none["scale_error"] == pytest.approx((0.2 + 0.5) / 2) and kal["scale_error"] == pytest.approx(0.25)
    assert kal["abs_rel"] == pytest.approx(0.29) and kal["abs_rel_change_vs_none"] == pytest.approx(-0.01)
    assert kal["abs_rel_frames"] == pytest.approx((0.2 * 26 + 0.38 * 30) / 56)
    assert (kal["frames_out"], kal["frames_published"]) == (56, 60)
    (tmp_path / "still_seq_02").mkdir()
    (tmp_path / "still_seq_02" / "replay_eval.json").write_text(json.dumps({"frames": {}}))
    with pytest.raises(ValueError, match="--scale-filters"):
        scale_sequences.replay_table(tmp_path)
