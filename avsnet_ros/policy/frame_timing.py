"""Camera frame timing from header stamps: lost frames vs slow frames (pure, standard library only).

A camera whose frames arrive at 10 Hz may be a 10 Hz camera (slow) or a 30 Hz camera losing two of
three frames in transport. The header stamps tell them apart: their median period is the camera's
own rate, and a stamp gap of k median periods means k - 1 frames never arrived.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque
from typing import Iterable

#: A gap counts as missing frames only above this many median periods (jitter below it is not loss).
GAP_THRESHOLD_PERIODS = 1.5


def missing_frames(stamp_diffs_ns: Iterable[int], period_ns: float) -> int:
    """Frames missing from gaps between consecutive stamps: sum of round(d / period) - 1 over the
    diffs d > GAP_THRESHOLD_PERIODS * period_ns (ns). Non-positive diffs count nothing."""
    if not period_ns > 0:
        raise ValueError(f"period_ns must be positive, got {period_ns}")
    return sum(int(round(d / period_ns)) - 1 for d in stamp_diffs_ns if d > GAP_THRESHOLD_PERIODS * period_ns)


class StampGapMeter:
    """Stamp rate and cumulative missing-frame estimate of one stream (thread-safe).

    add(stamp_ns) per received frame. The period is the median of the last `window` positive stamp
    differences; a gap is judged against the median of the differences before it, once at least
    `min_diffs` are known (earlier gaps are not counted). Out-of-order and repeated stamps are
    ignored (they are counted as drops elsewhere).
    """

    def __init__(self, window: int = 64, min_diffs: int = 4) -> None:
        if window < 1 or min_diffs < 1:
            raise ValueError("window and min_diffs must be >= 1")
        self._diffs: deque[int] = deque(maxlen=window)
        self._min_diffs = int(min_diffs)
        self._last_ns: int | None = None
        self._missing = 0
        self._lock = threading.Lock()

    def add(self, stamp_ns: int) -> None:
        with self._lock:
            last, self._last_ns = self._last_ns, stamp_ns if self._last_ns is None else max(self._last_ns, stamp_ns)
            if last is None or stamp_ns <= last:
                return
            d = int(stamp_ns - last)
            if len(self._diffs) >= self._min_diffs:
                self._missing += missing_frames([d], statistics.median(self._diffs))
            # a gap enters the median like any period: being the median takes half the window of gaps
            self._diffs.append(d)

    def period_ns(self) -> float:
        """Median stamp period (ns), NaN before two stamps."""
        with self._lock:
            return float(statistics.median(self._diffs)) if self._diffs else float("nan")

    def stamp_rate_hz(self) -> float:
        """The rate the stamps imply: 1e9 / median period, NaN before two stamps."""
        period = self.period_ns()
        return 1e9 / period if period > 0 else float("nan")

    def missing(self) -> int:
        """Frames estimated missing so far (gaps in the stamps)."""
        with self._lock:
            return self._missing

    def reset(self) -> None:
        with self._lock:
            self._diffs.clear()
            self._last_ns = None
            self._missing = 0

