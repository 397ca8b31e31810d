"""ScaleFilter (Kalman filter on the log-scale across echoes) and OdometryDistance, without rclpy.

References are hand-computed: the scalar Riccati steady state, the error variance of a constant-gain
filter on a constant signal, exact variance growth, and closed-form path lengths.
"""
import math

import numpy as np
import pytest

from avsnet_ros.policy.scale_filter import (
    OdometryDistance,
    ScaleFilter,
    ScaleFilterConfig,
    confidence_from_variance,
    steady_state_variance,
)

STEP_NS = 200_000_000  # one echo every 0.2 s


def _cfg(**kw):
    base = dict(process_var_log_per_s=5e-4, process_var_log_per_m=0.0, measurement_std_log=0.1,
                min_confidence=0.05, gate_sigma=3.0, reinit_after_gated=3)
    base.update(kw)
    return ScaleFilterConfig(**base)


def test_steady_state_variance_hand_values():
    # Q = 1e-4, R = 1e-2: P- = (1e-4 + sqrt(1e-8 + 4e-6)) / 2, P+ = P- R / (P- + R)
    prior, post = steady_state_variance(1e-4, 1e-2)
    assert prior == pytest.approx(1.0512492e-3, rel=1e-6)
    assert post == pytest.approx(9.512492e-4, rel=1e-6)


def test_constant_scale_converges_with_expected_variance():
    # Q per echo = 5e-4 * 0.2 s = 1e-4, R = (0.1 / 1)^2 = 1e-2 -> the hand values above.
    f = ScaleFilter(_cfg())
    rng = np.random.default_rng(0)
    true_log = math.log(2.5)
    n = 20000
    z = true_log + 0.1 * rng.standard_normal(n)
    est = np.empty(n)
    for k in range(n):
        r = f.update(k * STEP_NS, math.exp(z[k]), 1.0)
        est[k] = r.estimate.log_scale
    prior = (1e-4 + math.sqrt(1e-8 + 4e-6)) / 2
    post = prior * 1e-2 / (prior + 1e-2)
    assert f.state().variance_log == pytest.approx(post, rel=1e-9)
    assert f.state().confidence == pytest.approx(math.exp(-math.sqrt(post)), rel=1e-9)
    # The true scale is constant (the filter assumes a random walk): with the steady gain
    # K = P-/(P- + R) the error e_k = (1 - K) e_{k-1} + K v_k has variance K R / (2 - K).
    gain = prior / (prior + 1e-2)
    err = est[200:] - true_log
    assert abs(err.mean()) < 0.01
    assert np.var(err) == pytest.approx(gain * 1e-2 / (2 - gain), rel=0.1)
    # and the jitter (std of consecutive differences) drops from sqrt(2 R) to K sqrt(2 R / (2 - K))
    jitter = np.std(np.diff(est[200:]))
    assert jitter == pytest.approx(gain * math.sqrt(2e-2 / (2 - gain)), rel=0.1)
    assert jitter < 0.2 * np.std(np.diff(z))
    # 3-sigma gate on S = P- + R: a few genuine echoes (~0.2 %) are gated, never re-initialised
    assert f.counters["accepted"] + f.counters["gated"] == n and f.counters["gated"] <= n * 0.01
    assert f.counters["reinitialised"] == 0


def test_measurement_noise_follows_confidence():
    cfg = _cfg(measurement_std_log=0.05, min_confidence=0.1)
    assert cfg.measurement_var(1.0) == pytest.approx(0.0025)
    assert cfg.measurement_var(0.5) == pytest.approx(0.01)
    assert cfg.measurement_var(0.01) == pytest.approx(0.25)  # floored at min_confidence
    # first echo initialises with its own variance; a second one at t=0 fuses as 1/P = 1/R1 + 1/R2
    f = ScaleFilter(cfg)
    f.update(0, 2.0, 1.0)
    r = f.update(0, 2.2, 0.5)
    assert r.status == "accepted"
    p = 1.0 / (1.0 / 0.0025 + 1.0 / 0.01)
    assert r.variance_log == pytest.approx(p)
    x = p * (math.log(2.0) / 0.0025 + math.log(2.2) / 0.01)
    assert r.estimate.log_scale == pytest.approx(x)


def test_outlier_is_gated_and_counted():
    f = ScaleFilter(_cfg())
    for k in range(50):
        f.update(k * STEP_NS, 2.0, 1.0)
    before = f.state()
    r = f.update(50 * STEP_NS, 2.0 * math.exp(1.0), 1.0)  # +1.0 in log: >> 3 sigma
    assert r.status == "gated" and not r.accepted
    assert r.innovation_sigma > 3.0
    assert r.estimate.log_scale == pytest.approx(before.log_scale)
    # variance still grew by the elapsed time (prediction), nothing else
    assert r.variance_log == pytest.approx(before.variance_log + 5e-4 * 0.2)
    assert f.counters["gated"] == 1
    r2 = f.update(51 * STEP_NS, 2.0, 1.0)
    assert r2.status == "accepted"
    # alternating outliers never make a step: no re-initialisation
    for k in range(52, 64):
        f.update(k * STEP_NS, 2.0 * math.exp(1.0 if k % 2 else -1.0), 1.0)
    assert f.counters["reinitialised"] == 0
    assert f.state().scale == pytest.approx(2.0, rel=1e-6)
    assert f.counters["gated"] == 13


def test_gap_grows_variance_and_lowers_confidence():
    f = ScaleFilter(_cfg(process_var_log_per_m=0.01))
    for k in range(30):
        f.update(k * STEP_NS, 3.0, 0.9)
    p0, c0 = f.state().variance_log, f.state().confidence
    t_last = 29 * STEP_NS
    e = f.predict(t_last + 10_000_000_000)  # 10 s without echoes
    assert e.variance_log == pytest.approx(p0 + 5e-4 * 10.0)
    assert e.confidence == pytest.approx(math.exp(-math.sqrt(p0 + 5e-3)))
    assert e.confidence < c0 and e.scale == pytest.approx(f.state().scale)
    # distance travelled adds its own share; split predicts add up to the same total
    e2 = f.predict(t_last + 12_000_000_000, travelled_m=1.5)
    assert e2.variance_log == pytest.approx(p0 + 5e-4 * 12.0 + 0.01 * 1.5)
    g = ScaleFilter(_cfg(process_var_log_per_m=0.01))
    for k in range(30):
        g.update(k * STEP_NS, 3.0, 0.9)
    for j in range(1, 13):
        g.predict(t_last + j * 1_000_000_000, travelled_m=0.125)
    assert g.state().variance_log == pytest.approx(e2.variance_log)
    # the next echo after the gap gets a larger gain than in steady state
    r = f.update(t_last + 12_000_000_000, 3.3, 0.9)
    assert r.status == "accepted"
    r_ref = g.update(t_last + 12_000_000_000, 3.3, 0.9)
    assert r.scale == pytest.approx(r_ref.scale)
    pstd = ScaleFilter(_cfg())
    for k in range(31):
        pstd.update(k * STEP_NS, 3.0 if k < 30 else 3.3, 0.9)
    assert math.log(r.scale / 3.0) > 2 * math.log(pstd.state().scale / 3.0)


@pytest.mark.parametrize("factor", [1.5, 1 / 1.6])
def test_step_in_true_scale_followed_within_three_echoes(factor):
    f = ScaleFilter(_cfg(measurement_std_log=0.05))
    rng = np.random.default_rng(1)
    k = 0
    for _ in range(40):
        f.update(k * STEP_NS, 2.0 * math.exp(0.05 * rng.standard_normal()), 1.0)
        k += 1
    statuses = []
    for _ in range(3):
        statuses.append(f.update(k * STEP_NS, 2.0 * factor * math.exp(0.05 * rng.standard_normal()), 1.0).status)
        k += 1
    # the first two echoes of the new room are gated (could be outliers), the third re-initialises
    assert statuses == ["gated", "gated", "reinitialised"]
    assert abs(math.log(f.state().scale / (2.0 * factor))) < 0.1  # mean of 3 echoes: 0.05/sqrt(3) std
    assert f.counters["reinitialised"] == 1
    # and it keeps tracking the new scale
    for _ in range(20):
        assert f.update(k * STEP_NS, 2.0 * factor * math.exp(0.05 * rng.standard_normal()), 1.0).accepted
        k += 1
    assert abs(math.log(f.state().scale / (2.0 * factor))) < 0.05


@pytest.mark.parametrize("scale,conf", [(math.nan, 1.0), (0.0, 1.0), (-2.0, 1.0), (math.inf, 1.0), (2.0, math.nan),
                                        (2.0, 0.0), ("x", 1.0), (None, 1.0)])
def test_invalid_echoes_are_rejected_and_counted(scale, conf):
    f = ScaleFilter(_cfg())
    r0 = f.update(0, scale, conf)
    assert r0.status == "invalid" and not r0.has_estimate and r0.confidence == 0.0
    f.update(STEP_NS, 2.0, 1.0)
    before = f.state()
    r = f.update(2 * STEP_NS, scale, conf)
    assert r.status == "invalid" and not r.accepted
    assert math.isfinite(r.scale) and r.scale == pytest.approx(before.scale)
    assert f.counters["invalid"] == 2


def test_stamps_backwards():
    f = ScaleFilter(_cfg(reset_on_backwards_s=1.0))
    for k in range(10):
        f.update(k * STEP_NS, 2.0, 1.0)
    p = f.state().variance_log
    # 0.1 s back: counted, dt = 0 (no variance added), clock stays at the newest stamp
    e = f.predict(9 * STEP_NS - 100_000_000)
    assert e.variance_log == pytest.approx(p) and e.stamp_ns == 9 * STEP_NS
    assert f.counters["stamps_backwards"] == 1 and f.counters["resets"] == 0
    # 5 s back (the bag replay looped): reset, the echo initialises a new estimate
    r = f.update(9 * STEP_NS - 5_000_000_000, 7.0, 1.0)
    assert r.status == "initialised" and r.scale == pytest.approx(7.0)
    assert f.counters["stamps_backwards"] == 2 and f.counters["resets"] == 1


def test_reset_and_predict_without_estimate():
    f = ScaleFilter()
    e = f.predict(0)
    assert not e.has_estimate and math.isnan(e.scale) and e.confidence == 0.0
    f.update(1, 2.0, 0.8)
    assert f.has_estimate
    f.reset()
    assert not f.has_estimate and f.counters["resets"] == 1
    assert f.update(2, 3.0, 0.8).status == "initialised"


def test_confidence_from_variance():
    assert confidence_from_variance(0.01) == pytest.approx(math.exp(-0.1))
    assert confidence_from_variance(0.0) == 1.0
    assert confidence_from_variance(math.inf) == 0.0 and confidence_from_variance(math.nan) == 0.0


@pytest.mark.parametrize("kw",
                         [dict(gate_sigma=0.0), dict(measurement_std_log=-1.0), dict(process_var_log_per_s=math.nan),
                                dict(reinit_after_gated=0), dict(min_confidence=0.0), dict(reinit_after_gated=2.5)])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        ScaleFilterConfig(**kw)


def test_odometry_distance():
    odo = OdometryDistance(max_speed_m_per_s=5.0)
    # a 3-4-5 triangle walked at 1 m/s, with a NaN, a repeated stamp and an odometry reset (jump)
    assert odo.add(0, 0.0, 0.0, 0.0) == 0.0
    assert odo.add(3_000_000_000, 3.0, 0.0, 0.0) == pytest.approx(3.0)
    assert odo.add(3_500_000_000, math.nan, 0.0, 0.0) == 0.0
    assert odo.add(7_000_000_000, 3.0, 4.0, 0.0) == pytest.approx(4.0)
    assert odo.take_m() == pytest.approx(7.0)
    assert odo.take_m() == 0.0
    assert odo.add(7_000_000_000, 3.0, 5.0, 0.0) == 0.0  # same stamp: dropped
    assert odo.add(8_000_000_000, 100.0, 4.0, 0.0) == 0.0  # 97 m in 1 s: a reset, not travel
    assert odo.add(10_000_000_000, 100.0, 4.0, 2.0) == pytest.approx(2.0)  # re-anchored at the jump
    assert odo.take_m() == pytest.approx(2.0)
    assert odo.total_m == pytest.approx(9.0)
    assert odo.counters == {"positions": 6, "invalid": 1, "stamps_backwards": 1, "jumps": 1}
