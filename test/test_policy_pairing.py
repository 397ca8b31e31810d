"""avsnet_ros.policy (pure, no rclpy): echo pairing, scale reuse, hold with decay, each fallback,
and the camera stamp-gap estimate. Expected values are written out by hand from the rule."""
from __future__ import annotations

import math

import pytest

from avsnet_ros.policy import (DEFAULT_MAX_ECHO_AGE_S, CachedScale, DropReason, Fallback, ScaleMode, ScalePolicy,
                               StampGapMeter, decide_scale, hold_confidence_factor, match_echo, missing_frames)

MS = 1_000_000  # ns
POLICY = ScalePolicy(max_echo_age_s=0.5, scale_hold_s=1.0, confidence_half_life_s=0.5, fallback="drop")


def test_default_window_is_one_constant_everywhere():
    import inspect

    from avsnet_ros.data import rosbag_io
    from avsnet_ros.nodes.depth_support import PARAMS
    from training.configs import DataConfig

    assert DEFAULT_MAX_ECHO_AGE_S == 0.6
    node_default = {p.name: p.default for p in PARAMS}["max_echo_age_s"]
    assert node_default == DEFAULT_MAX_ECHO_AGE_S
    for fn in (rosbag_io.read_bag_samples, rosbag_io.iter_bag_samples, rosbag_io.bag_info):
        assert inspect.signature(fn).parameters["max_echo_age_s"].default == DEFAULT_MAX_ECHO_AGE_S, fn
    assert DataConfig().bag_max_echo_age_s == DEFAULT_MAX_ECHO_AGE_S


def test_enum_values_are_the_diagnostic_names():
    assert [r.value for r in DropReason] == ["no_echo", "stale_echo"]
    assert {m.value for m in ScaleMode} == {"fresh", "reuse", "hold", "rgb_only", "drop"}
    assert ScalePolicy(fallback="rgb_only").fallback is Fallback.RGB_ONLY


def test_match_echo_newest_at_or_before_within_age():
    echoes = [100 * MS, 300 * MS, 900 * MS]
    assert match_echo(350 * MS, echoes, 0.5).index == 1  # newest before, not the nearest overall
    assert match_echo(300 * MS, echoes, 0.5).index == 1  # same stamp counts as "before"
    assert match_echo(800 * MS, echoes, 0.5).index == 1  # exactly max age: still paired
    m = match_echo(800 * MS + 1, echoes, 0.5)
    assert (m.index, m.reason) == (None, DropReason.STALE_ECHO)
    m = match_echo(50 * MS, echoes, 0.5)  # only echoes from the frame's future
    assert (m.index, m.reason) == (None, DropReason.NO_ECHO)
    assert match_echo(300 * MS, [100 * MS, 300 * MS, 300 * MS], 0.5).index == 2  # ties: the last


def test_fresh_then_reuse_then_fresh_for_a_newer_echo():
    echoes = [(100 * MS, 7)]
    d = decide_scale(150 * MS, echoes, None, POLICY)
    assert (d.mode, d.echo_index, d.confidence_factor, d.reason) == (ScaleMode.FRESH, 0, 1.0, None)
    cached = CachedScale(echo_serial=7, echo_stamp_ns=100 * MS)
    d = decide_scale(400 * MS, echoes, cached, POLICY)
    assert (d.mode, d.echo_index, d.confidence_factor) == (ScaleMode.REUSE, 0, 1.0)
    d = decide_scale(500 * MS, echoes + [(450 * MS, 8)], cached, POLICY)
    assert (d.mode, d.echo_index) == (ScaleMode.FRESH, 1)


def test_future_echo_is_never_used():
    """An echo stamped after the frame (received earlier, e.g. a slow camera driver) is skipped:
    the frame pairs with the older echo, or has none."""
    cached = CachedScale(1, 100 * MS)
    d = decide_scale(300 * MS, [(100 * MS, 1), (350 * MS, 2)], cached, POLICY)
    assert (d.mode, d.echo_index) == (ScaleMode.REUSE, 0)
    d = decide_scale(300 * MS, [(350 * MS, 2)], None, POLICY)
    assert (d.mode, d.reason) == (ScaleMode.DROP, DropReason.NO_ECHO)


def test_out_of_order_frame_pairs_by_its_own_stamp():
    """A frame older than the newest echo pairs with the echo before it (a FRESH scale from that
    older echo), not with the cached newer one."""
    echoes = [(100 * MS, 1), (400 * MS, 2)]
    d = decide_scale(300 * MS, echoes, CachedScale(2, 400 * MS), POLICY)
    assert (d.mode, d.echo_index) == (ScaleMode.FRESH, 0)


def test_stale_echo_holds_with_decay_by_hand():
    cached = CachedScale(1, 0)
    frame_ns = 1010 * MS  # 1.01 s after the echo: 0.51 s beyond max_echo_age_s 0.5
    d = decide_scale(frame_ns, [(0, 1)], cached, POLICY)
    assert (d.mode, d.reason) == (ScaleMode.HOLD, DropReason.STALE_ECHO)
    beyond_s = 1.01 - 0.5
    assert d.confidence_factor == pytest.approx(0.5 ** (beyond_s / 0.5), rel=1e-12)
    assert d.confidence_factor == pytest.approx(0.4931, abs=1e-4)  # 2 ** -1.02
    # still within max age: no decay; the factor function alone
    assert hold_confidence_factor(-0.2, 0.5) == 1.0
    assert hold_confidence_factor(1.0, 0.5) == 0.25


def test_each_fallback_after_the_hold():
    cached = CachedScale(1, 0)
    frame_ns = 1600 * MS  # 1.1 s beyond max age > scale_hold_s 1.0
    echoes = [(0, 1)]
    d = decide_scale(frame_ns, echoes, cached, POLICY)
    assert (d.mode, d.reason, d.confidence_factor) == (ScaleMode.DROP, DropReason.STALE_ECHO, 0.0)
    hold = ScalePolicy(0.5, 1.0, 0.5, Fallback.HOLD)
    d = decide_scale(frame_ns, echoes, cached, hold)  # held indefinitely, still decaying
    assert d.mode is ScaleMode.HOLD and d.confidence_factor == pytest.approx(0.5 ** (1.1 / 0.5))
    rgb = ScalePolicy(0.5, 1.0, 0.5, Fallback.RGB_ONLY)
    d = decide_scale(frame_ns, echoes, cached, rgb)
    assert (d.mode, d.reason, d.confidence_factor) == (ScaleMode.RGB_ONLY, DropReason.STALE_ECHO, 0.0)
    # no echo and no scale at all: every fallback but rgb_only drops (nothing to hold)
    for policy, mode in ((POLICY, ScaleMode.DROP), (hold, ScaleMode.DROP), (rgb, ScaleMode.RGB_ONLY)):
        d = decide_scale(frame_ns, [], None, policy)
        assert (d.mode, d.reason) == (mode, DropReason.NO_ECHO)


def test_policy_validation():
    with pytest.raises(ValueError, match="fallback"):
        ScalePolicy(fallback="sometimes")
    with pytest.raises(ValueError, match="max_echo_age_s"):
        ScalePolicy(max_echo_age_s=-1.0)
    with pytest.raises(ValueError, match="confidence_half_life_s"):
        ScalePolicy(confidence_half_life_s=0.0)
    with pytest.raises(ValueError, match="scale_hold_s"):
        ScalePolicy(scale_hold_s=math.nan)


# ------------------------------------------------------------------------------------------------
# camera stamp gaps
def test_missing_frames_by_hand():
    # 300 = 3 periods: 2 missing; 210: round(2.1) = 2 periods: 1 missing; 140 < 1.5 periods: jitter
    assert missing_frames([100, 100, 300, 210, 140], 100) == 3
    assert missing_frames([100, -5, 0], 100) == 0
    with pytest.raises(ValueError):
        missing_frames([100], 0)


def test_stamp_gap_meter_known_gap():
    period = 33_333_333  # 30 Hz camera
    meter = StampGapMeter()
    stamps = [i * period for i in range(20)] + [i * period for i in range(23, 40)]  # frames 20-22 lost
    for t in stamps:
        meter.add(t)
    assert meter.missing() == 3
    assert meter.stamp_rate_hz() == pytest.approx(1e9 / period, rel=1e-6)
    meter.add(stamps[5])  # an out-of-order stamp is ignored
    meter.add(stamps[-1])  # a repeated one too
    assert meter.missing() == 3
    meter.reset()
    assert meter.missing() == 0 and math.isnan(meter.stamp_rate_hz())


def test_stamp_gap_meter_jitter_and_slow_camera_are_not_loss():
    meter = StampGapMeter()
    t = 0
    for i in range(60):  # 10 Hz with +-20 ms jitter: slow, not lossy
        t += 100 * MS + (20 * MS if i % 2 else -20 * MS)
        meter.add(t)
    assert meter.missing() == 0
    assert meter.stamp_rate_hz() == pytest.approx(1e9 / (100 * MS), rel=0.25)
