"""Echo pairing and the scale decision of one camera frame (pure: plain numbers in, typed decision out).

The rule (the physics: a fresh scale needs a sweep and its echoes, at most every 2 d / 343 s + the
sweep length, so the camera is usually faster than the echoes):
    pairing   a frame pairs with the newest echo stamped at or before the frame's stamp (never one
              from its future) and at most max_echo_age_s older (match_echo). The same rule pairs
              frames in a rosbag (data/rosbag_io.py) and live frames in depth_node.
    FRESH     the paired echo has not produced a scale yet: run the full pipeline (RGB + echo).
    REUSE     the paired echo is the one the cached scale came from: apply that scale to the
              frame's own relative depth, confidence unchanged.
    HOLD      no usable echo (DropReason NO_ECHO or STALE_ECHO) but a cached scale: keep it with a
              confidence multiplied by 0.5 ** (beyond_s / confidence_half_life_s), where beyond_s is
              how far the scale's echo is older than max_echo_age_s; for scale_hold_s, after that
              only with fallback HOLD (indefinitely, still decaying).
    fallback  no usable echo and no scale to hold: DROP (publish nothing, count the DropReason) or
              RGB_ONLY (the RGB-only model's pseudo-metric depth, confidence 0).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Sequence, Tuple

#: The one default pairing window (seconds): depth_node's max_echo_age_s, the bag reader's
#: max_echo_age_s, training's bag_max_echo_age_s and bag_tools --max-echo-age-s. 0.6 s covers
#: one sweep period of the default emitter (0.5 s) plus delivery jitter.
DEFAULT_MAX_ECHO_AGE_S = 0.6
#: How long a cached scale is held (confidence decaying) after its echo is too old (seconds).
DEFAULT_SCALE_HOLD_S = 2.0
#: The held scale's confidence halves every this many seconds.
DEFAULT_CONFIDENCE_HALF_LIFE_S = 0.5


class ScaleMode(Enum):
    """How a frame gets its metric scale. The value names the counter (events scale_<value>)."""

    FRESH = "fresh"
    REUSE = "reuse"
    HOLD = "hold"
    RGB_ONLY = "rgb_only"
    DROP = "drop"


class DropReason(Enum):
    """Why no echo was usable for a frame. The value is the drop reason reported in diagnostics."""

    NO_ECHO = "no_echo"  # no echo stamped at or before the frame
    STALE_ECHO = "stale_echo"  # the newest such echo is older than max_echo_age_s


class Fallback(Enum):
    """What happens without a usable echo and without a scale to hold (parameter echo_fallback)."""

    DROP = "drop"
    HOLD = "hold"
    RGB_ONLY = "rgb_only"


FALLBACKS = tuple(f.value for f in Fallback)


def seconds_to_ns(seconds: float) -> int:
    """Seconds -> integer nanoseconds, rounded (the one conversion of the pairing window)."""
    return int(round(float(seconds) * 1e9))


@dataclass(frozen=True)
class ScalePolicy:
    """The parameters of the rule (seconds; fallback as Fallback or its string value)."""

    max_echo_age_s: float = DEFAULT_MAX_ECHO_AGE_S
    scale_hold_s: float = DEFAULT_SCALE_HOLD_S
    confidence_half_life_s: float = DEFAULT_CONFIDENCE_HALF_LIFE_S
    fallback: Fallback = Fallback.DROP

    def __post_init__(self) -> None:
        if not isinstance(self.fallback, Fallback):
            try:
                object.__setattr__(self, "fallback", Fallback(self.fallback))
            except ValueError:
                raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}") from None
        for name in ("max_echo_age_s", "scale_hold_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not (math.isfinite(self.confidence_half_life_s) and self.confidence_half_life_s > 0):
            raise ValueError(f"confidence_half_life_s must be finite and > 0, got {self.confidence_half_life_s}")


@dataclass(frozen=True)
class EchoMatch:
    """match_echo's answer: index of the paired echo, or None and the reason."""

    index: Optional[int]
    reason: Optional[DropReason] = None


def match_echo(frame_stamp_ns: int, echo_stamps_ns: Sequence[int], max_echo_age_s: float) -> EchoMatch:
    """Pair a frame with the newest echo stamped at or before it and at most max_echo_age_s older.

    echo_stamps_ns: ascending header stamps (ns) of the valid echoes; among equal stamps the last
    one is taken. Returns EchoMatch(index into echo_stamps_ns, None), or EchoMatch(None, NO_ECHO)
    when no echo is at or before the frame, EchoMatch(None, STALE_ECHO) when the newest is too old.
    """
    i = bisect.bisect_right(echo_stamps_ns, frame_stamp_ns) - 1
    if i < 0:
        return EchoMatch(None, DropReason.NO_ECHO)
    if frame_stamp_ns - echo_stamps_ns[i] <= seconds_to_ns(max_echo_age_s):
        return EchoMatch(i, None)
    return EchoMatch(None, DropReason.STALE_ECHO)


def hold_confidence_factor(beyond_s: float, half_life_s: float) -> float:
    """0.5 ** (beyond_s / half_life_s): the held scale's confidence factor, 1 at beyond_s <= 0."""
    return 0.5 ** (max(float(beyond_s), 0.0) / float(half_life_s))


@dataclass(frozen=True)
class CachedScale:
    """What the policy needs to know of the cached scale: the echo it came from."""

    echo_serial: int  # the node's serial of that echo (unique per accepted echo)
    echo_stamp_ns: int


@dataclass(frozen=True)
class ScaleDecision:
    """decide_scale's answer.

    mode: what to do. echo_index: FRESH/REUSE, position of the paired echo in the input sequence.
    confidence_factor: multiplies the cached scale's confidence (1 for FRESH/REUSE, the decay for
    HOLD, 0 for RGB_ONLY/DROP). reason: why no echo was usable (HOLD, RGB_ONLY, DROP), else None.
    """

    mode: ScaleMode
    echo_index: Optional[int] = None
    confidence_factor: float = 1.0
    reason: Optional[DropReason] = None


def decide_scale(frame_stamp_ns: int, echoes: Sequence[Tuple[int, int]], cached: Optional[CachedScale],
                 policy: ScalePolicy) -> ScaleDecision:
    """The scale decision of one frame (module docstring).

    echoes: (stamp_ns, serial) of the usable echoes, ascending in stamp. cached: the scale the
    previous frames used, or None. Stamps are header stamps in ns of one clock.
    """
    match = match_echo(frame_stamp_ns, [stamp for stamp, _ in echoes], policy.max_echo_age_s)
    if match.index is not None:
        reused = cached is not None and cached.echo_serial == echoes[match.index][1]
        return ScaleDecision(ScaleMode.REUSE if reused else ScaleMode.FRESH, echo_index=match.index)
    if cached is not None:
        age_s = (frame_stamp_ns - cached.echo_stamp_ns) / 1e9
        beyond_s = max(age_s - policy.max_echo_age_s, 0.0)
        if beyond_s <= policy.scale_hold_s or policy.fallback is Fallback.HOLD:
            factor = hold_confidence_factor(beyond_s, policy.confidence_half_life_s)
            return ScaleDecision(ScaleMode.HOLD, confidence_factor=factor, reason=match.reason)
    if policy.fallback is Fallback.RGB_ONLY:
        return ScaleDecision(ScaleMode.RGB_ONLY, confidence_factor=0.0, reason=match.reason)
    return ScaleDecision(ScaleMode.DROP, confidence_factor=0.0, reason=match.reason)
