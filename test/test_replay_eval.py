"""training/replay_eval.py (reached through training/evaluate.py --bag): a bag of the real fixture
played through replay_source -> depth_node over rclpy; counts, latency and metrics checked
against a hand computation on the same frames."""
from __future__ import annotations

import json
import math

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


def _hand_jitter(scales) -> float:
    """std (ddof 0) of consecutive ln differences, written out (independent of numpy's std)."""
    d = [math.log(b / a) for a, b in zip(scales[:-1], scales[1:])]
    m = sum(d) / len(d)
    return math.sqrt(sum((x - m) ** 2 for x in d) / len(d))


def test_collector_scale_figures_against_hand_computation():
    """Scripted frames fed to the collector's add_* methods: per-frame scale (paired by order),
    scale error |ln(median(depth) / median(GT))| and jitter, each against a hand computation."""
    from ros_support import ros_context

    from avsnet_ros.nodes.collector import DepthCollector

    rel = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)  # median(R) over all 6 = 3.5
    gt_scale = 2.0
    gt = (gt_scale * rel).astype(np.float32)
    gt_nan = gt.copy()
    gt_nan[0, 0] = np.nan  # no measurement: left out of both medians (median(R) of the rest = 4)
    scales = [2.0, 2.4, 1.8, 2.2, 2.1]
    with ros_context() as (context, _executor):
        col = DepthCollector("scale_collector_test", keep_frames=0, context=context)
        col.set_max_depth(30.0)
        stamps = [1_000 + 10 * i for i in range(len(scales))]
        for i, (stamp, s) in enumerate(zip(stamps, scales)):
            depth = (s * rel).astype(np.float32)
            if i == 2:
                depth[1, 2] = np.nan  # range-masked pixel: left out of both medians
            if i == 1:
                col.add_gt(stamp, gt_nan)  # ground truth before the depth
            col.add_depth(stamp, depth, received_ns=stamp + 5_000_000)
            col.add_scale(s, 0.9)
            if i not in (1, 4):  # frame 4 never gets ground truth
                col.add_gt(stamp, gt)
            if i == 2:  # a recorded frame the node did not answer (superseded): only its ground truth
                col.add_gt(stamp + 5, gt)
        col.add_scale(float("nan"), 0.0)  # a scale without a depth image: unpaired
        summary = col.summary()["scale"]
    assert [f["scale"] for f in summary["per_frame"]] == pytest.approx(scales)
    assert [f["stamp_ns"] for f in summary["per_frame"]] == stamps
    assert summary["frames"] == 5 and summary["unpaired"] == 1 and summary["nonfinite"] == 0
    # frame 1: pixels without (0,0): depth median = 2.4 * 4, GT median = 2 * 4
    # frame 2: pixels without (1,2): depth median 1.8 * 3 (R 1..5), GT median over the same = 2 * 3
    expected_err = [abs(math.log(2.0 / 2.0)), abs(math.log(2.4 / 2.0)), abs(math.log(1.8 / 2.0)),
                    abs(math.log(2.2 / 2.0)), None]
    got = [f["scale_error"] for f in summary["per_frame"]]
    assert got[4] is None and summary["error_frames"] == 4
    assert got[:4] == pytest.approx(expected_err[:4], abs=1e-6)
    assert summary["error_mean"] == pytest.approx(sum(expected_err[:4]) / 4, abs=1e-6)
    assert summary["error_median"] == pytest.approx((abs(math.log(0.9)) + abs(math.log(1.1))) / 2, abs=1e-6)
    assert summary["jitter"] == pytest.approx(_hand_jitter(scales), rel=1e-9)
    # frame indices from the ground-truth timeline: 0, 1, 2, (unanswered 3), 4, and none for the last
    assert [f["frame_index"] for f in summary["per_frame"]] == [0, 1, 2, 4, None]
    assert summary["ground_truth_frames"] == 5
    # adjacent in the recording: only 0->1 and 1->2 (2->4 skips a frame, the last has no index)
    assert summary["jitter_adjacent"] == pytest.approx(_hand_jitter(scales[:3]), rel=1e-9)
    # per frame Abs Rel of s * R against 2 * R: |s / 2 - 1|
    assert [f["abs_rel"] for f in summary["per_frame"][:4]] == pytest.approx([0.0, 0.2, 0.1, 0.1], abs=1e-6)
    assert summary["per_frame"][4]["abs_rel"] is None


def test_collector_scale_jitter_skips_nonfinite_and_short_runs():
    from ros_support import ros_context

    from avsnet_ros.nodes.collector import DepthCollector

    with ros_context() as (context, _executor):
        col = DepthCollector("scale_collector_test2", keep_frames=0, context=context)
        for i, s in enumerate([2.0, float("nan"), 2.5]):
            col.add_depth(100 + i, np.ones((2, 2), np.float32), received_ns=200 + i)
            col.add_scale(s, 0.5)
        summary = col.summary()["scale"]
    # the NaN frame (e.g. an RGB-only fallback) is counted and left out: 2 scales -> jitter unknown
    assert summary["nonfinite"] == 1 and summary["frames"] == 3
    assert math.isnan(summary["jitter"]) and math.isnan(summary["error_mean"]) and summary["error_frames"] == 0


def test_replay_eval_compares_scale_filters(bv2_tree, tmp_path, capsys):
    """The fixture with per-echo noise, replayed once per filter: the figures are there, the raw
    run publishes exactly the offline per-echo scales, and the ratio is the ratio of the jitters."""
    from avsnet_ros.data.batvision import BV2Dataset
    from avsnet_ros.data.rosbag_io import write_samples_to_bag
    from avsnet_ros.pipeline import DepthPipeline
    from training import replay_eval

    ckpt = make_tiny_checkpoints(tmp_path / "ckpt")
    rng = np.random.default_rng(5)
    samples = []
    for i in range(6):
        s = BV2Dataset(bv2_tree, split="test")[0]
        s.echo = (s.echo + rng.normal(0.0, 0.02 * float(np.std(s.echo)), s.echo.shape)).astype(np.float32)
        s.stamp_ns = 1_000_000_000 + i * 300_000_000
        samples.append(s)
    bag = tmp_path / "bag"
    write_samples_to_bag(samples, bag)
    rc = replay_eval.main(["--bag", str(bag), "--avs-checkpoint", ckpt["avs"], "--relative-checkpoint", ckpt["rel"],
                           "--device", "cpu", "--scale-filters", "none,kalman", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    runs = result["by_scale_filter"]
    assert list(runs) == ["none", "kalman"]
    assert runs["none"]["scale_filter"] == "none" and runs["kalman"]["scale_filter"] == "kalman"
    # the top level is the configured filter's run (config/avsnet.yaml: kalman), with the usual keys
    assert result["scale_filter"] == "kalman" and result["frames"] == runs["kalman"]["frames"]
    for name, r in runs.items():
        sc = r["scale"]
        assert sc["frames"] == r["frames"]["out"] == len(sc["per_frame"]) >= 3, name
        assert sc["error_frames"] == r["frames"]["matched_with_gt"]
        assert all(f["scale"] > 0 and f["scale_error"] >= 0 for f in sc["per_frame"])
        assert sc["jitter"] == pytest.approx(_hand_jitter([f["scale"] for f in sc["per_frame"]]), rel=1e-6)
        assert sc["ground_truth_frames"] == 6
        if r["frames"]["out"] == 6:  # nothing superseded: every difference is between adjacent frames
            assert sc["jitter_adjacent"] == pytest.approx(sc["jitter"], rel=1e-12)
    comp = result["scale_filter_comparison"]
    assert comp["jitter_ratio"]["kalman/none"] == pytest.approx(runs["kalman"]["scale"]["jitter"]
                                                                / runs["none"]["scale"]["jitter"], rel=1e-9)
    assert comp["per_filter"]["none"]["abs_rel"] == runs["none"]["metrics"]["abs_rel"]
    common = ({f["frame_index"] for f in runs["none"]["scale"]["per_frame"]}
              & {f["frame_index"] for f in runs["kalman"]["scale"]["per_frame"]})
    assert comp["paired"]["none"]["frames"] == comp["paired"]["kalman"]["frames"] == len(common) >= 2
    # unfiltered, the node publishes each echo's own scale: the offline pipeline's, at the frame
    # index the collector derived from the ground-truth timeline
    pipe = DepthPipeline.from_checkpoints(ckpt["avs"], ckpt["rel"], device="cpu")
    offline = [float(pipe(s.rgb, s.echo).scale[0]) for s in samples]
    assert len(set(round(x, 6) for x in offline)) == len(offline)  # the noise makes every echo's scale differ
    for f in runs["none"]["scale"]["per_frame"]:
        assert f["scale"] == pytest.approx(offline[f["frame_index"]], rel=1e-4)


def test_replay_eval_rejects_a_repeated_scale_filter(tmp_path, capsys):
    from training import replay_eval

    rc = replay_eval.main(["--bag", str(tmp_path / "nothing"), "--scale-filters", "none,none"])
    assert rc == 1
    assert "twice" in capsys.readouterr().err
    # an unknown value is refused before the first replay (nothing to replay here)
    rc = replay_eval.main(["--bag", str(tmp_path / "nothing"), "--scale-filters", "none,median"])
    assert rc == 1
    assert "median not one of none, kalman" in capsys.readouterr().err


def test_collector_pictures_keep_their_rgb_when_a_frame_is_never_answered():
    """The first frame gets no depth (the node had no echo yet): the kept pictures are the next frames, each with
    its own RGB (the first frame used to hold a slot, and the last picture got no RGB: a black panel)."""
    from ros_support import ros_context

    from avsnet_ros.nodes.collector import DepthCollector

    rng = np.random.default_rng(3)
    frames = {1_000 + 10 * i: rng.integers(0, 256, (2, 3, 3), dtype=np.uint8) for i in range(16)}
    gt = np.full((2, 3), 2.0, dtype=np.float32)
    with ros_context() as (context, _executor):
        col = DepthCollector("rgb_collector_test", keep_frames=4, context=context)
        try:
            for i, (stamp, rgb) in enumerate(frames.items()):
                col.add_rgb(stamp, rgb)
                col.add_gt(stamp, gt)
                if i > 0:  # frame 0: never answered
                    col.add_depth(stamp, gt * 1.1, received_ns=stamp + 5)
            assert [k["stamp_ns"] for k in col.kept] == list(frames)[1:5]
            for k in col.kept:
                assert k["rgb"] is not None and np.array_equal(k["rgb"], frames[k["stamp_ns"]])
            assert len(col._rgb) <= 4 + 8  # bounded: frames after the pictures are full are not decoded
        finally:
            col.destroy_node()
