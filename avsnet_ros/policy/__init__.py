"""Frame/echo policy without ROS: echo pairing, scale reuse, hold with decay, fallback, frame timing.

Used by nodes/depth_node.py (live), data/rosbag_io.py (bag pairing) and training/replay_eval.py
(expected pairing of a replayed bag): one rule, one default (DEFAULT_MAX_ECHO_AGE_S).
The modules here import only the standard library, so the data layer can use them without a cycle.
"""
from .pairing import (
    DEFAULT_CONFIDENCE_HALF_LIFE_S,
    DEFAULT_MAX_ECHO_AGE_S,
    DEFAULT_SCALE_HOLD_S,
    FALLBACKS,
    CachedScale,
    DropReason,
    EchoMatch,
    Fallback,
    ScaleDecision,
    ScaleMode,
    ScalePolicy,
    decide_scale,
    hold_confidence_factor,
    match_echo,
    seconds_to_ns,
)
from .frame_timing import StampGapMeter, missing_frames

__all__ = [
    "CachedScale",
    "DEFAULT_CONFIDENCE_HALF_LIFE_S",
    "DEFAULT_MAX_ECHO_AGE_S",
    "DEFAULT_SCALE_HOLD_S",
    "DropReason",
    "EchoMatch",
    "FALLBACKS",
    "Fallback",
    "ScaleDecision",
    "ScaleMode",
    "ScalePolicy",
    "StampGapMeter",
    "decide_scale",
    "hold_confidence_factor",
    "match_echo",
    "missing_frames",
    "seconds_to_ns",
]
