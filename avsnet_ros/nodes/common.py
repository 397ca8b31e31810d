"""Node plumbing shared by the avsnet_ros nodes: declared parameters, drop counters,
diagnostics, QoS and the console-script main loop. rclpy only, no math.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

# Inputs from sensors: best effort, keep last 5 (REP 2003). A best-effort subscription matches
# both reliable and best-effort publishers, so drivers and bag players of either kind connect.
SENSOR_QOS = qos_profile_sensor_data
# Outputs: reliable, keep last 5 (matches reliable and best-effort subscribers, e.g. rviz2).
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# The emitter's sweep description (avsnet/chirp): reliable, transient local, keep last 1, so a node that
# starts after the emitter still gets the sweep being played (publisher and subscribers use this profile).
CHIRP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE)

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


# --------------------------------------------------------------------------------------------
# lifecycle
class ThreadedLifecycleNode(LifecycleNode):
    """A LifecycleNode that runs a background thread and creates its resources in on_configure.

    Subclasses implement ``_stop_background()`` (stop and join the thread) and ``_release()`` (destroy
    what on_configure created); both must be safe to call again. on_cleanup releases; on_shutdown
    stops, then releases (both return SUCCESS: the node reaches unconfigured / finalized); close()
    (called by main and shutdown_nodes before destroy_node) stops the thread. Both nodes report
    one DiagnosticStatus on /diagnostics (publish_status).
    """

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)

    def publish_status(self, what: str, hardware_id: str, level: bytes, message: str, values: dict[str, Any]) -> None:
        """Publish the status "<node name>: <what>" (diagnostic_status) as a DiagnosticArray on /diagnostics."""
        status = diagnostic_status(f"{self.get_name()}: {what}", hardware_id, level, message, values)
        self._diag_pub.publish(diagnostic_array(self, [status]))

    def _stop_background(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_background()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        self._stop_background()


# --------------------------------------------------------------------------------------------
# parameters
@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: default (its type is the parameter type), description, range.

    `choices` restricts a string parameter; `minimum`/`maximum` give a FloatingPointRange or
    IntegerRange (inclusive) in the descriptor, which rclpy enforces on every set. `live`
    parameters take effect as soon as they are set; the others are read at configure (the
    descriptor says which).
    """

    name: str
    default: Any
    description: str
    minimum: float | int | None = None
    maximum: float | int | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    live: bool = False


def declare_parameters(node: Node, specs: Sequence[ParamSpec], values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Declare `specs` on `node` (overrides from the command line/YAML apply) and return the values.

    `values` (default: a new dict, returned) receives the declared values; later sets of `live`
    parameters are written into it, so a node reading `self.values[...]` sees them at once.

    Raises ValueError with the parameter name when a value is outside its choices; rclpy itself
    raises when it is outside the declared range or of the wrong type.
    """
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        when = "applied at once" if spec.live else "read at configure"
        descriptor = ParameterDescriptor(name=spec.name, description=f"{spec.description} ({when})",
                                         read_only=spec.read_only)
        if spec.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
        if spec.minimum is not None or spec.maximum is not None:
            if isinstance(spec.default, bool):
                raise TypeError(f"{spec.name}: a bool parameter has no range")
            if isinstance(spec.default, int):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(spec.minimum if spec.minimum is not None else -2**62),
                    to_value=int(spec.maximum if spec.maximum is not None else 2**62), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.minimum if spec.minimum is not None else -1e300),
                    to_value=float(spec.maximum if spec.maximum is not None else 1e300), step=0.0)]
        node.declare_parameter(spec.name, spec.default, descriptor)
    values = {} if values is None else values
    values.update({spec.name: node.get_parameter(spec.name).value for spec in specs})
    for name, value in values.items():
        problem = _check_choice(by_name[name], value)
        if problem:
            raise ValueError(f"parameter {name}: {problem}")

    def on_set(params) -> SetParametersResult:
        for param in params:
            spec = by_name.get(param.name)
            problem = _check_choice(spec, param.value) if spec else None
            if problem:
                return SetParametersResult(successful=False, reason=f"{param.name}: {problem}")
        return SetParametersResult(successful=True)

    def post_set(params) -> None:
        for param in params:
            spec = by_name.get(param.name)
            if spec is not None and spec.live:
                values[param.name] = param.value

    node.add_on_set_parameters_callback(on_set)
    node.add_post_set_parameters_callback(post_set)
    return values


def _check_choice(spec: ParamSpec, value: Any) -> str | None:
    if spec.choices and value not in spec.choices:
        return f"{value!r} is not one of {', '.join(spec.choices)}"
    return None


def read_parameters(node: Node, specs: Iterable[ParamSpec], values: dict[str, Any]) -> dict[str, Any]:
    """Refresh `values` in place with the current parameters (at configure, as demos' talker)."""
    values.update({spec.name: node.get_parameter(spec.name).value for spec in specs})
    return values


# --------------------------------------------------------------------------------------------
# memory
#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD_MAX_BYTES = 32 << 20


def keep_freed_memory(keep_bytes: int, mmap_threshold_bytes: int = MMAP_THRESHOLD_MAX_BYTES) -> bool:
    """Tell glibc's malloc to keep up to `keep_bytes` of freed memory and to serve blocks up to
    `mmap_threshold_bytes` from its heaps (process-wide ``mallopt(M_TRIM_THRESHOLD / M_MMAP_THRESHOLD)``).

    Why (measured with getrusage on the shipped tiny models, 1280x720 frames): every inference
    allocates and frees ~20 MB of tensors, and glibc returned much of it to the kernel after each
    frame, in the depth node's worker thread especially (a thread other than the main thread gets
    its own malloc arena, which glibc trims eagerly): ~2900-4900 page faults per frame, against 0
    for the same call in a main thread with 1 torch thread, 5-10 % of the inference time. With the
    thresholds fixed: 0 faults per frame (test_nodes_common.py); the process keeps up to
    `keep_bytes` more resident. Returns False where mallopt is unavailable (not glibc: nothing
    changed) or refused a value; `keep_bytes` <= 0 leaves the allocator alone.
    """
    if keep_bytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(min(mmap_threshold_bytes, MMAP_THRESHOLD_MAX_BYTES))) == 1
    return bool(mallopt(_M_TRIM_THRESHOLD, int(min(keep_bytes, 2**31 - 1))) == 1 and ok)


def release_freed_memory() -> bool:
    """Give the kernel back what glibc's malloc holds free in every arena (``malloc_trim(0)``).

    False where malloc_trim is unavailable (not glibc). Cost: milliseconds; use it after a burst,
    not per frame (see FreedMemoryTrimmer).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    malloc_trim(0)
    return True


def resident_memory_mb() -> float:
    """This process's resident set size in MiB (/proc/self/statm; NaN where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class FreedMemoryTrimmer:
    """Returns freed memory to the kernel once a burst of larger-than-usual frames is over.

    Why: keep_freed_memory() lets every malloc arena keep up to its threshold of freed memory so
    that steady frames reuse it; after a few frames much larger than usual (a 2560x1440 burst in a
    1280x720 stream) those arenas kept ~130 MB that steady frames never use again (measured on the
    depth node process: +22 % resident memory for good; with this trim: see test_memory_bursts.py).

    ``after_frame(pixels)`` is called once per processed frame. A frame more than `burst_ratio`
    times the usual size starts a burst; the first frame after it that is not (back to usual) trims
    once and returns True. One caller (the inference worker); no locking.
    """

    def __init__(self, burst_ratio: float = 1.5, release: Callable[[], bool] = release_freed_memory):
        self.burst_ratio = float(burst_ratio)
        self._release = release
        self._usual_pixels = 0
        self._in_burst = False
        self.trims = 0

    def after_frame(self, pixels: int) -> bool:
        pixels = int(pixels)
        if self._usual_pixels == 0:
            self._usual_pixels = pixels
            return False
        if pixels > self.burst_ratio * self._usual_pixels:
            self._in_burst = True
            return False
        if self._in_burst:
            self._in_burst = False
            self._usual_pixels = pixels
            self.trims += 1
            return bool(self._release())
        # follow slow changes of the usual size (a camera reconfigured to a smaller mode)
        self._usual_pixels = pixels
        return False


# --------------------------------------------------------------------------------------------
# counting
class DropCounter:
    """Thread-safe counters by reason (drops, skips, errors) with the last detail per reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_detail: dict[str, str] = {}

    def count(self, reason: str, detail: str = "", n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n
            if detail:
                self._last_detail[reason] = detail

    def get(self, reason: str) -> int:
        with self._lock:
            return self._counts.get(reason, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def details(self) -> dict[str, str]:
        with self._lock:
            return dict(self._last_detail)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


class RateMeter:
    """Events per second over a sliding window (for diagnostics)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window_s = window_s
        self._times: list[float] = []
        self._lock = threading.Lock()

    def tick(self, now_s: float | None = None) -> None:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._times.append(now_s)
            self._trim(now_s)

    def rate_hz(self, now_s: float | None = None) -> float:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._trim(now_s)
            if len(self._times) < 2:
                return 0.0
            span = max(now_s - self._times[0], self._times[-1] - self._times[0], 1e-9)
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now_s: float) -> None:
        cutoff = now_s - self._window_s
        while self._times and self._times[0] < cutoff:
            self._times.pop(0)


# --------------------------------------------------------------------------------------------
# diagnostics
def diagnostic_status(name: str, hardware_id: str, level: bytes, message: str,
                      values: dict[str, Any]) -> DiagnosticStatus:
    """DiagnosticStatus with values rendered as strings (floats to 4 significant digits)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=str(k), value=fmt(v)) for k, v in values.items()])


def diagnostic_values(msg: DiagnosticArray, name_contains: str) -> dict[str, str]:
    """Key/values of the first status of a DiagnosticArray whose name contains `name_contains` (the inverse of
    diagnostic_status, for listeners: tests, benchmarks)."""
    for status in msg.status:
        if name_contains in status.name:
            return {kv.key: kv.value for kv in status.values}
    return {}


def diagnostic_array(node: Node, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.status = statuses
    return msg


# --------------------------------------------------------------------------------------------
# callbacks and main
def guarded(counter_attr: str = "_drops", reason: str = "callback_exception"):
    """Decorator for subscription/timer callbacks: no exception escapes to the executor.

    An unexpected exception is counted under `reason` in `self.<counter_attr>` and logged
    (throttled), so one bad message cannot kill the node.
    """

    def wrap(fn: Callable) -> Callable:
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the point is to catch everything
                counter = getattr(self, counter_attr, None)
                if counter is not None:
                    counter.count(reason, f"{fn.__name__}: {type(exc).__name__}: {exc}")
                try:
                    self.get_logger().error(f"{fn.__name__} failed: {type(exc).__name__}: {exc}",
                                            throttle_duration_sec=5.0)
                except Exception:  # noqa: BLE001 - logging must not raise either
                    pass
                return None

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner

    return wrap


def shutdown_nodes(executor, nodes) -> None:
    """Stop ``executor`` (if any; 5 s timeout), then close() (when the node has one) and destroy each node.

    Pass the nodes explicitly: Executor.shutdown() forgets its nodes.
    """
    if executor is not None:
        executor.shutdown(timeout_sec=5.0)
    for node in nodes:
        close = getattr(node, "close", None)
        if close is not None:
            close()
        node.destroy_node()


def spin(executor) -> None:
    """executor.spin() until the context shuts down or executor.shutdown(), resumed after InvalidHandle.

    rclpy 9.1 races when an entity is destroyed in another thread (a lifecycle deactivate/cleanup
    from a service callback on a pool thread or from the caller's thread, a node's destruction) while
    the executor builds its wait set: EventHandler.add_to_wait_set raises InvalidHandle out of
    spin_once. Uncaught, it ends the spinning thread and every node in the executor silently stops
    receiving (seen in test_nodes_depth on a loaded machine). The destroyed entity is gone from the
    next wait set, so spinning on is correct.
    """
    from rclpy.exceptions import InvalidHandle

    while True:
        try:
            executor.spin()
            return
        except InvalidHandle:
            continue


def run_node_main(make_node: Callable[[], Node], args: list[str] | None = None,
                  multithreaded: bool = True) -> int:
    """Console-script main: init, build the node, spin until Ctrl-C, shut down quietly.

    Returns the process exit code (1 when the node could not start, e.g. configure failed).
    """
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        startup_error = getattr(node, "startup_error", None)
        if startup_error:  # already logged where it happened
            node.get_logger().fatal(f"{node.get_name()} did not start; exiting")
            code = 1
        else:
            executor = MultiThreadedExecutor(num_threads=4) if multithreaded else SingleThreadedExecutor()
            executor.add_node(node)
            spin(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        shutdown_nodes(None, [node] if node is not None else [])
        if rclpy.ok():
            rclpy.shutdown()
    return code
