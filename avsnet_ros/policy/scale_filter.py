"""A 1-D Kalman filter on the log-scale of the echo scaling, across echoes (pure: numpy-free, rclpy-free).

Each echo gives a scale s_k (depth = s_k * R, from :func:`avsnet_ros.pipeline.scale_relative`) with a
confidence c_k in (0, 1]. The filter tracks x = log(s) as a random walk:

    predict:  P <- P + process_var_log_per_s * dt_s + process_var_log_per_m * travelled_m
    measure:  z = log(s_k),  R_k = (measurement_std_log / max(c_k, min_confidence))^2
    gate:     innovation y = z - x, S = P + R_k; gated (not applied) when |y| > gate_sigma * sqrt(S)
    update:   K = P / S, x <- x + K y, P <- (1 - K) P

Variances are of the natural log of the scale (0.01 = a 10 % standard deviation), "per_s" per second of
stamp time since the previous predict/update, "per_m" per metre travelled (odometry; 0 without it).

Confidence of the filtered scale: ``exp(-sqrt(P))``, the same convention as the pipeline's per-echo
confidence (``exp(-spread)`` with spread a log-std: 0.1 -> 0.90); 0 before the first accepted echo.

Following a step of the true scale (the robot enters another room): a jump larger than the gate is
gated, so after ``reinit_after_gated`` (default 3) CONSECUTIVE gated innovations of the SAME sign the
filter re-initialises on the mean log-scale of those echoes with their mean measurement variance
(status "reinitialised", counted). A single outlier is therefore dropped, and a lasting step is
followed on its 3rd echo. Steps inside the gate are followed by the ordinary Kalman gain.

Bad input never reaches the state: a scale that is NaN, inf or <= 0, or a confidence that is NaN or
<= min_confidence_accept, is rejected and counted ("invalid").

Stamps: ``stamp_ns`` is the time of the echo (or of the frame for predict). A stamp older than the
previous one is counted ("stamps_backwards") and treated as dt = 0 (no variance added, the clock
stays at the newest stamp); if it is more than ``reset_on_backwards_s`` older (a bag replay that
loops, a simulator clock reset) the filter resets first, so the old state is not carried into the
restarted time line.

Typical use (the depth node; ``scale_filter: none|kalman``)::

    f = ScaleFilter(ScaleFilterConfig())
    r = f.update(echo_stamp_ns, scale, confidence, travelled_m=odo.take_m())   # on each echo
    publish(depth = r.scale * R, confidence = r.confidence)                    # if r.has_estimate
    e = f.predict(frame_stamp_ns, travelled_m=odo.take_m())                    # on frames between echoes
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

__all__ = [
    "SCALE_FILTER_MODES",
    "ScaleFilterConfig",
    "ScaleEstimateState",
    "ScaleUpdate",
    "ScaleFilter",
    "confidence_from_variance",
    "steady_state_variance",
    "OdometryDistance",
]

#: Values of the node's ``scale_filter`` parameter.
SCALE_FILTER_MODES = ("none", "kalman")

_UPDATE_STATUSES = ("initialised", "accepted", "gated", "reinitialised", "invalid")


def confidence_from_variance(variance_log: float) -> float:
    """Confidence in [0, 1] of a log-scale with this variance: exp(-std); 0 for NaN/inf variance."""
    if not math.isfinite(variance_log) or variance_log < 0:
        return 0.0
    return math.exp(-math.sqrt(variance_log))


def steady_state_variance(process_var_per_step: float, measurement_var: float) -> tuple[float, float]:
    """Steady state of the scalar random-walk Kalman filter (discrete Riccati equation).

    With Q per step and R per measurement: prior P- = (Q + sqrt(Q^2 + 4 Q R)) / 2 (root of
    P-^2 - Q P- - Q R = 0), posterior P+ = P- R / (P- + R). Returns (P-, P+).
    """
    q, r = float(process_var_per_step), float(measurement_var)
    prior = 0.5 * (q + math.sqrt(q * q + 4.0 * q * r))
    return prior, prior * r / (prior + r)


@dataclass(frozen=True)
class ScaleFilterConfig:
    """Parameters. Defaults: the point of the sweep in training/scale_sequences.py (README "Scale over
    time") that halves the scale jitter on still and moving synthetic sequences with Abs Rel within
    0.0002 of the raw per-echo scale, with and without odometry.

    process_var_log_per_s: variance of log-scale added per second since the previous call.
    process_var_log_per_m: variance of log-scale added per metre travelled (odometry; 0 = ignore).
    measurement_std_log: std of one echo's log-scale at confidence 1; at confidence c it is
        measurement_std_log / max(c, min_confidence).
    min_confidence: floor of the confidence in that formula (a low-confidence echo counts, weakly).
    min_confidence_accept: echoes with confidence <= this are rejected as invalid (e.g. 0: no valid pixel).
    gate_sigma: innovations beyond gate_sigma * sqrt(P + R) are gated (not applied).
    reinit_after_gated: consecutive same-sign gated echoes after which the filter re-initialises
        on them (follows a step of the true scale); >= 1.
    reset_on_backwards_s: a stamp more than this many seconds older than the newest resets the filter.
    """

    process_var_log_per_s: float = 0.01
    process_var_log_per_m: float = 0.005
    measurement_std_log: float = 0.08
    min_confidence: float = 0.05
    min_confidence_accept: float = 0.0
    gate_sigma: float = 3.0
    reinit_after_gated: int = 3
    reset_on_backwards_s: float = 1.0

    def __post_init__(self):
        for name in ("process_var_log_per_s", "process_var_log_per_m", "min_confidence_accept", "reset_on_backwards_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        for name in ("measurement_std_log", "gate_sigma"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        if not (0.0 < self.min_confidence <= 1.0):
            raise ValueError(f"min_confidence must be in (0, 1], got {self.min_confidence!r}")
        if int(self.reinit_after_gated) != self.reinit_after_gated or self.reinit_after_gated < 1:
            raise ValueError(f"reinit_after_gated must be an integer >= 1, got {self.reinit_after_gated!r}")

    def measurement_var(self, confidence: float) -> float:
        """Variance of one echo's log-scale at this confidence."""
        c = max(float(confidence), self.min_confidence)
        return (self.measurement_std_log / c) ** 2

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScaleEstimateState:
    """The filter's estimate at ``stamp_ns`` (after a predict or an update).

    has_estimate: False before the first accepted echo (then scale is NaN, confidence 0).
    scale: exp(log_scale), multiplicative factor (depth_m = scale * R).
    log_scale: filtered natural log of the scale.
    variance_log: its variance (P).
    confidence: exp(-sqrt(P)) in [0, 1] (0 without an estimate).
    stamp_ns: the filter's clock (newest stamp seen; None before any).
    """

    has_estimate: bool
    scale: float
    log_scale: float
    variance_log: float
    confidence: float
    stamp_ns: Optional[int]


@dataclass(frozen=True)
class ScaleUpdate:
    """Result of :meth:`ScaleFilter.update`.

    status: "initialised" (first echo, or first after a reset), "accepted", "gated" (outlier, not
        applied), "reinitialised" (step followed), "invalid" (NaN/inf/<= 0 scale or too low confidence).
    accepted: the echo changed the state (initialised, accepted or reinitialised).
    innovation_sigma: |z - x| / sqrt(P + R) before the update (NaN when there was no state / invalid).
    estimate: the state after the update (the same fields as :meth:`ScaleFilter.predict` returns).
    """

    status: str
    accepted: bool
    innovation_sigma: float
    estimate: ScaleEstimateState

    # shortcuts for callers that only publish: estimate.scale (float), .confidence (float),
    # .variance_log (float), .has_estimate (bool)
    scale = property(lambda self: self.estimate.scale)
    confidence = property(lambda self: self.estimate.confidence)
    variance_log = property(lambda self: self.estimate.variance_log)
    has_estimate = property(lambda self: self.estimate.has_estimate)


#: ScaleFilter.counters keys, in diagnostics order
_COUNTER_NAMES = ("updates", "accepted", "gated", "reinitialised", "invalid", "stamps_backwards", "resets")


class ScaleFilter:
    """Kalman filter on log(scale) across echoes (module docstring for the model and its behaviours).

    Not thread-safe: one owner calls predict/update in stamp order (out-of-order stamps are handled
    as documented, not reordered).
    """

    def __init__(self, config: Optional[ScaleFilterConfig] = None):
        self.config = config or ScaleFilterConfig()
        self._counters = dict.fromkeys(_COUNTER_NAMES, 0)
        self._x: Optional[float] = None
        self._p: float = math.inf
        self._stamp_ns: Optional[int] = None
        self._pending: list[tuple[float, float]] = []  # (z, R) of consecutive same-sign gated echoes
        self._pending_sign = 0

    # ------------------------------------------------------------------ state
    @property
    def counters(self) -> dict:
        """Diagnostics: updates, accepted (incl. initialised/reinitialised), gated, reinitialised,
        invalid, stamps_backwards, resets."""
        return dict(self._counters)

    @property
    def has_estimate(self) -> bool:
        return self._x is not None

    def state(self) -> ScaleEstimateState:
        """The current estimate without advancing the clock."""
        if self._x is None:
            return ScaleEstimateState(False, math.nan, math.nan, math.inf, 0.0, self._stamp_ns)
        return ScaleEstimateState(True, math.exp(self._x), self._x, self._p, confidence_from_variance(self._p),
                                  self._stamp_ns)

    def reset(self) -> None:
        """Forget the estimate and the clock (counters are kept; ``resets`` counts this)."""
        self._x = None
        self._p = math.inf
        self._stamp_ns = None
        self._pending.clear()
        self._pending_sign = 0
        self._counters["resets"] += 1

    # ------------------------------------------------------------------ time
    def _advance(self, stamp_ns: int, travelled_m: float) -> None:
        stamp_ns = int(stamp_ns)
        dist = float(travelled_m)
        if not math.isfinite(dist) or dist < 0:
            dist = 0.0  # a bad odometry increment must not poison the variance (OdometryDistance counts them)
        if self._stamp_ns is None:
            self._stamp_ns = stamp_ns
            dt_s = 0.0
        elif stamp_ns < self._stamp_ns:
            self._counters["stamps_backwards"] += 1
            if (self._stamp_ns - stamp_ns) * 1e-9 > self.config.reset_on_backwards_s:
                self.reset()
                self._stamp_ns = stamp_ns
            dt_s = 0.0
        else:
            dt_s = (stamp_ns - self._stamp_ns) * 1e-9
            self._stamp_ns = stamp_ns
        if self._x is not None:
            self._p += self.config.process_var_log_per_s * dt_s + self.config.process_var_log_per_m * dist

    def predict(self, stamp_ns: int, travelled_m: float = 0.0) -> ScaleEstimateState:
        """Advance the clock to stamp_ns (variance grows with time and distance) and return the estimate.

        travelled_m: metres travelled since the previous predict/update (odometry; 0 without it).
        Repeated predicts add up to the same variance as one over the whole interval.
        """
        self._advance(stamp_ns, travelled_m)
        return self.state()

    # ------------------------------------------------------------------ measurement
    def update(self, stamp_ns: int, scale: float, confidence: float, travelled_m: float = 0.0) -> ScaleUpdate:
        """Predict to stamp_ns, then fuse one echo's scale (> 0) with its confidence in [0, 1]."""
        c = self.config
        self._counters["updates"] += 1
        self._advance(stamp_ns, travelled_m)
        try:
            s, conf = float(scale), float(confidence)
        except (TypeError, ValueError):
            s, conf = math.nan, math.nan
        if not (math.isfinite(s) and s > 0 and math.isfinite(conf) and conf > c.min_confidence_accept):
            self._counters["invalid"] += 1
            return ScaleUpdate("invalid", False, math.nan, self.state())
        z = math.log(s)
        r = c.measurement_var(min(conf, 1.0))
        if self._x is None:
            self._x, self._p = z, r
            self._clear_pending()
            self._counters["accepted"] += 1
            return ScaleUpdate("initialised", True, math.nan, self.state())
        innov = z - self._x
        s_var = self._p + r
        sigma = abs(innov) / math.sqrt(s_var)
        if sigma > c.gate_sigma:
            self._counters["gated"] += 1
            sign = 1 if innov > 0 else -1
            if sign != self._pending_sign:
                self._pending.clear()
                self._pending_sign = sign
            self._pending.append((z, r))
            if len(self._pending) >= c.reinit_after_gated:
                n = len(self._pending)
                self._x = sum(p[0] for p in self._pending) / n
                self._p = sum(p[1] for p in self._pending) / n
                self._clear_pending()
                self._counters["reinitialised"] += 1
                self._counters["accepted"] += 1
                return ScaleUpdate("reinitialised", True, sigma, self.state())
            return ScaleUpdate("gated", False, sigma, self.state())
        k = self._p / s_var
        self._x += k * innov
        self._p *= 1.0 - k
        self._clear_pending()
        self._counters["accepted"] += 1
        return ScaleUpdate("accepted", True, sigma, self.state())

    def _clear_pending(self) -> None:
        self._pending.clear()
        self._pending_sign = 0


class OdometryDistance:
    """Distance travelled from odometry positions (nav_msgs/Odometry pose.pose.position), pure.

    ``add(stamp_ns, x_m, y_m, z_m)`` on each odometry message; ``take_m()`` returns the metres
    travelled since the previous take (the ScaleFilter's ``travelled_m``) and restarts the count;
    ``total_m`` is the whole path. Robustness (each counted in ``counters``): non-finite positions
    are dropped ("invalid"); a stamp not newer than the previous position's is dropped
    ("stamps_backwards"); a jump faster than max_speed_m_per_s (odometry reset, teleport in
    simulation) is not added but re-anchors the track ("jumps").
    """

    def __init__(self, max_speed_m_per_s: float = 10.0):
        if not (math.isfinite(max_speed_m_per_s) and max_speed_m_per_s > 0):
            raise ValueError(f"max_speed_m_per_s must be finite and > 0, got {max_speed_m_per_s!r}")
        self.max_speed_m_per_s = float(max_speed_m_per_s)
        self.total_m = 0.0
        self.counters = {"positions": 0, "invalid": 0, "stamps_backwards": 0, "jumps": 0}
        self._last: Optional[tuple[int, float, float, float]] = None
        self._pending_m = 0.0

    def add(self, stamp_ns: int, x_m: float, y_m: float, z_m: float = 0.0) -> float:
        """Add one position (metres, any fixed frame); returns the metres added (0 when dropped)."""
        try:
            x, y, z = float(x_m), float(y_m), float(z_m)
        except (TypeError, ValueError):
            x = y = z = math.nan
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            self.counters["invalid"] += 1
            return 0.0
        stamp_ns = int(stamp_ns)
        self.counters["positions"] += 1
        if self._last is None:
            self._last = (stamp_ns, x, y, z)
            return 0.0
        t0, x0, y0, z0 = self._last
        if stamp_ns <= t0:
            self.counters["stamps_backwards"] += 1
            return 0.0
        d = math.sqrt((x - x0) ** 2 + (y - y0) ** 2 + (z - z0) ** 2)
        self._last = (stamp_ns, x, y, z)
        if d > self.max_speed_m_per_s * (stamp_ns - t0) * 1e-9:
            self.counters["jumps"] += 1
            return 0.0
        self._pending_m += d
        self.total_m += d
        return d

    def take_m(self) -> float:
        """Metres travelled since the previous take (then 0 until new positions arrive)."""
        d, self._pending_m = self._pending_m, 0.0
        return d
