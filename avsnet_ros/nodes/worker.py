"""Threading helpers of the inference nodes (no rclpy): the latest-frame slot and the passing thread."""
from __future__ import annotations

import threading
from typing import Any, Callable


def in_passing_thread(fn: Callable[[], Any]) -> Any:
    """fn() in a short-lived thread: its result, or its exception re-raised here.

    Speed (bench/bench_pipeline.py): with GNU OpenMP (PyTorch's CPU wheels) every thread that has
    run torch keeps its own OpenMP thread team for as long as it lives, and two live teams on a
    small machine (more OpenMP threads than cores) made the worker's inference ~1.5x slower than
    the same pipeline call in a plain process. So the models are loaded in a thread that exits,
    the warm-up runs in the inference worker itself, and only the worker keeps a team.
    """
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="depth_node_load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class LatestSlot:
    """One-item queue: put() replaces an unconsumed item (returned so it can be counted)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None

    def put(self, item: Any) -> Any:
        with self._cond:
            old, self._item = self._item, item
            self._cond.notify()
            return old

    def take(self, timeout_s: float) -> Any:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout=timeout_s)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        with self._cond:
            self._item = None
            self._cond.notify_all()

    def empty(self) -> bool:
        with self._cond:
            return self._item is None
