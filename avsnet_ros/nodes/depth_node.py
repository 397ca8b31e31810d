"""depth_node: camera frames + binaural echoes -> metric depth (AVS-Net + relative depth + scaling).

Lifecycle (rclpy.lifecycle; `autostart:=true` runs configure + activate at start-up):
    configure  read parameters, load the checkpoints (DepthPipeline.from_checkpoints), create
               publishers. Fails (stays unconfigured) with a clear log line on a bad checkpoint.
    activate   warm the models up (one inference on a dummy frame), subscribe, start the worker.
    deactivate unsubscribe, stop the worker; cleanup releases the models.

Pairing, scale reuse, hold with decay and fallback: avsnet_ros.policy.pairing (decide_scale; the
same rule pairs frames in rosbags). A FRESH frame runs the full pipeline (AVS-Net on RGB + echo ->
scale); REUSE/HOLD frames apply the cached scale to their own relative depth (pipeline.depth_from_scale);
`echo_fallback` picks "drop", "hold" or "rgb_only" (RGB-only AVS-Net, confidence 0). Echo path: depth_support.EchoPath
(audio.echo_checks on the model's echo window; "rerender" models: the front-end once per echo in its own thread with
the sweep of `echo_sweep` / avsnet/chirp / identified, then its level, sweep-mismatch and onset checks).
Transport loss: /diagnostics reports camera_rate_hz (arrivals) next to camera_stamp_rate_hz (the
header stamps' median period) and camera_frames_missing_est (stamp gaps, policy.frame_timing).

Threads: callbacks only validate and store; inference runs in one worker thread fed by a
latest-frame slot (a newer frame replaces an unprocessed one, counted as "superseded"), so echo
and camera_info callbacks are never starved. No exception escapes a callback: every rejected
message is counted by reason in /diagnostics.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32MultiArray, String

from avsnet_ros.nodes import conversions as conv
from avsnet_ros.nodes.common import (CHIRP_QOS, OUTPUT_QOS, SENSOR_QOS, DropCounter, FreedMemoryTrimmer, RateMeter,
                                     ThreadedLifecycleNode, declare_parameters, guarded, read_parameters,
                                     resident_memory_mb, run_node_main)
from avsnet_ros.nodes.depth_support import (DROP_DETAILS, PARAMS, EchoChecker, EchoPath, EchoScaleState,
                                            diagnostic_level, diagnostic_values, make_scale_filter, prepare_models,
                                            scale_policy, warm_up)
from avsnet_ros.nodes.worker import LatestSlot
from avsnet_ros.policy import ScaleMode, StampGapMeter
from avsnet_ros.visualization import colorize_depth


@dataclass
class _Frame:
    msg: Image
    stamp_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8
    camera_info: CameraInfo | None


class DepthNode(ThreadedLifecycleNode):
    """Lifecycle node publishing avsnet/metric_depth (see module docstring)."""

    def __init__(self, node_name: str = "depth_node", *, pipeline_factory=None, **kwargs):
        """pipeline_factory: optional callable(params) -> (pipeline, rgb_only_pipeline or None),
        for tests and tools that hold models in memory; default loads the checkpoints."""
        super().__init__(node_name, **kwargs)
        self.values = declare_parameters(self, PARAMS)
        self._pipeline_factory = pipeline_factory
        self.pipeline = None
        self.rgb_only_pipeline = None
        self.startup_error: str | None = None
        self.frame_drops = DropCounter()  # frames not answered, by reason
        self.echo_drops = DropCounter()  # echo messages rejected, by reason
        self.events = DropCounter()  # things that happened: frames_in, frames_out, scale modes ...
        self._drops = self.frame_drops  # for @guarded
        self._lock = threading.Lock()
        self.echo_state = EchoScaleState()  # accepted echoes + the cached scale
        self._camera_info: CameraInfo | None = None
        self._last_frame_stamp_ns = -1
        self._last_confidence = float("nan")
        self._last_mode = ""
        self._slot = LatestSlot()
        self._trimmer = FreedMemoryTrimmer()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._rates = {k: RateMeter() for k in ("camera", "echo", "depth")}  # arrivals / publications
        self._inference_ms: deque[float] = deque(maxlen=50)
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._diag_timer = None
        self._echo_checker: EchoChecker | None = None  # content checks on the model's echo window
        self._echo_path: EchoPath | None = None  # checks, echo front-end, sweep in use (avsnet/chirp)
        self._stamp_gaps = StampGapMeter()  # camera header stamps: rate and frames missing
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._echo_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        if self.values["autostart"]:
            self.autostart()

    # lifecycle
    def autostart(self) -> bool:
        """configure + activate; on failure `startup_error` says why (main exits 1)."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.startup_error = self.startup_error or "depth_node: configure failed"
            return False
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.startup_error = self.startup_error or "depth_node: activate failed"
            return False
        return True

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the models and create publishers. SUCCESS -> inactive, FAILURE -> unconfigured."""
        try:
            read_parameters(self, PARAMS, self.values)
            v = self.values
            self.pipeline, self.rgb_only_pipeline, self._echo_checker = prepare_models(v, self._pipeline_factory)
            self._echo_path = EchoPath(self.pipeline, self._echo_checker, self.echo_state, self.echo_drops, v,
                                       self.get_logger())
            self.echo_state.scale_filter = make_scale_filter(v)
        except Exception as exc:  # noqa: BLE001 - report any load error, stay unconfigured
            self.startup_error = f"depth_node configure failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.startup_error)
            self.pipeline = self.rgb_only_pipeline = None
            return TransitionCallbackReturn.FAILURE
        self._pubs = {
            "depth": self.create_lifecycle_publisher(Image, "avsnet/metric_depth", OUTPUT_QOS),
            "camera_info": self.create_lifecycle_publisher(CameraInfo, "avsnet/camera_info", OUTPUT_QOS),
            "scale": self.create_lifecycle_publisher(Float32MultiArray, "avsnet/scale", OUTPUT_QOS),
        }
        if v["publish_points"]:
            self._pubs["points"] = self.create_lifecycle_publisher(PointCloud2, "avsnet/points", OUTPUT_QOS)
        if v["publish_preview"]:
            self._pubs["preview"] = self.create_lifecycle_publisher(Image, "avsnet/depth_preview", OUTPUT_QOS)
        self._diag_timer = self.create_timer(v["diagnostics_period_s"], self._publish_diagnostics,
                                             callback_group=self._timer_group)
        self.get_logger().info(
            f"configured: {self.pipeline.describe()}"
            f"; echo >= {self._echo_checker.window_samples} samples at {v['sample_rate_hz']} Hz, front-end "
            f"{self._echo_path.describe()}, max age "
            f"{v['max_echo_age_s']} s, fallback {v['echo_fallback']}, scale filter {v['scale_filter']}"
            f"{' with odometry ' + v['odom_topic'] if v['odom_topic'] else ''}; inputs SensorDataQoS")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker, which warms up first (in its own thread: see worker.in_passing_thread),
        then subscribe. SUCCESS -> active; FAILURE when the warm-up fails."""
        self._stop.clear()
        warmed, box = threading.Event(), {}
        self._worker = threading.Thread(target=self._work, args=(warmed, box), name="depth_node_inference", daemon=True)
        self._worker.start()
        while not warmed.wait(0.5) and self._worker.is_alive():
            pass
        if "error" in box or not warmed.is_set():
            exc = box.get("error", RuntimeError("the inference worker stopped during the warm-up"))
            self._stop_background()
            self.startup_error = f"depth_node warm-up failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.startup_error)
            return TransitionCallbackReturn.FAILURE
        self._echo_path.start()
        self._subs = [  # the echo and camera_info callbacks never wait behind a frame
            self.create_subscription(Image, "camera/image_raw", self._on_image, SENSOR_QOS,
                                     callback_group=self._input_group),
            self.create_subscription(CameraInfo, "camera/camera_info", self._on_camera_info, SENSOR_QOS,
                                     callback_group=self._echo_group),
            self.create_subscription(Image, "avsnet/echo", self._on_echo, SENSOR_QOS, callback_group=self._echo_group),
            self.create_subscription(String, "avsnet/chirp", self._echo_path.on_chirp, CHIRP_QOS,
                                     callback_group=self._echo_group),
        ]
        if self.values["odom_topic"]:
            from nav_msgs.msg import Odometry

            self._subs.append(self.create_subscription(Odometry, self.values["odom_topic"], self._on_odometry,
                                                       SENSOR_QOS, callback_group=self._echo_group))
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_background()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        return super().on_deactivate(state)

    def _stop_background(self) -> None:
        self._stop.set()
        self._slot.clear()
        if self._echo_path is not None:
            self._echo_path.stop()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    def _release(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        self.pipeline = self.rgb_only_pipeline = self._echo_path = None
        self.echo_state.clear()
        with self._lock:
            self._camera_info = None
            self._last_frame_stamp_ns = -1
        self._stamp_gaps.reset()
        self._last_mode, self._last_confidence = "", float("nan")

    # callbacks (validate + store only)
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _is_future(self, stamp_ns: int, now_ns: int | None = None) -> bool:
        """Stamped later than the clock + future_tolerance_s. Not decidable before a simulated
        clock has ticked (use_sim_time and no /clock yet: the clock reads 0)."""
        now_ns = self._now_ns() if now_ns is None else now_ns
        return now_ns > 0 and stamp_ns > now_ns + int(self.values["future_tolerance_s"] * 1e9)

    def _on_echo(self, msg: Image) -> None:
        self.echo_state.begin_echo()
        try:
            self._handle_echo(msg)
        finally:
            self.echo_state.end_echo()

    @guarded("echo_drops", "echo_callback_exception")
    def _handle_echo(self, msg: Image) -> None:
        self.events.count("echoes_in")
        self._rates["echo"].tick()
        v = self.values
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        if self._is_future(stamp_ns):
            self.echo_drops.count("echo_future_stamp", f"stamp {stamp_ns} ns is ahead of the clock")
            return
        if int(msg.width) > v["max_echo_samples"]:
            self.echo_drops.count("echo_length", f"{msg.width} samples > max_echo_samples")
            return
        try:
            echo = conv.echo_from_image_msg(msg, min_samples=self._echo_checker.window_samples)
        except conv.MessageError as exc:
            self.echo_drops.count(exc.reason, str(exc))
            return
        self._echo_path.submit(stamp_ns, echo, v)  # content checks, echo front-end, stored or counted

    @guarded("echo_drops", "odometry_callback_exception")
    def _on_odometry(self, msg) -> None:
        p = msg.pose.pose.position
        self.echo_state.add_odometry(conv.stamp_to_ns(msg.header.stamp), p.x, p.y, p.z)

    @guarded("echo_drops", "camera_info_callback_exception")
    def _on_camera_info(self, msg: CameraInfo) -> None:
        problem = conv.camera_info_problem(msg)
        if problem is not None:
            self.echo_drops.count("camera_info_invalid", problem)
            return
        with self._lock:
            self._camera_info = msg

    @guarded("frame_drops", "image_callback_exception")
    def _on_image(self, msg: Image) -> None:
        self.events.count("frames_in")
        self._rates["camera"].tick()
        v = self.values
        now_ns = self._now_ns()
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        if self._is_future(stamp_ns, now_ns):
            self.frame_drops.count("future_stamp", f"stamp {stamp_ns} ns is ahead of the clock {now_ns}")
            return
        self._stamp_gaps.add(stamp_ns)
        if int(msg.height) * int(msg.width) > v["max_image_pixels"]:
            self.frame_drops.count("image_too_large", f"{msg.width}x{msg.height}")
            return
        try:
            rgb = conv.rgb_from_image_msg(msg)
        except conv.MessageError as exc:
            self.frame_drops.count(exc.reason, str(exc))
            return
        with self._lock:
            info = self._camera_info
            if stamp_ns < self._last_frame_stamp_ns:
                self.frame_drops.count("out_of_order", f"stamp {stamp_ns} < previous {self._last_frame_stamp_ns}")
                return
        if info is None and v["require_camera_info"]:
            self.frame_drops.count("no_camera_info", "no camera_info received yet")
            return
        if info is not None and (info.width != msg.width or info.height != msg.height):
            self.frame_drops.count("size_mismatch_camera_info",
                                   f"image {msg.width}x{msg.height} vs camera_info {info.width}x{info.height}")
            return
        if v["skip_when_unsubscribed"] and not self._has_subscribers():
            self.events.count("skipped_no_subscribers")
            return
        with self._lock:
            self._last_frame_stamp_ns = stamp_ns
        old = self._slot.put(_Frame(msg, stamp_ns, rgb, info))
        if old is not None:
            self.frame_drops.count("superseded", "a newer frame arrived before inference was free")

    def _has_subscribers(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in self._pubs.values())

    # worker
    def _work(self, warmed: threading.Event | None = None, box: dict | None = None) -> None:
        if warmed is not None:  # warm up in this thread, where inference will run
            try:
                t0 = time.perf_counter()
                warm_up(self.pipeline, self.rgb_only_pipeline, self._echo_checker.window_samples,
                        self.values["sample_rate_hz"])
                self.get_logger().info(f"warm-up inference {1e3 * (time.perf_counter() - t0):.0f} ms")
            except Exception as exc:  # noqa: BLE001 - reported by on_activate
                box["error"] = exc
                return
            finally:
                warmed.set()
        while not self._stop.is_set():
            frame = self._slot.take(timeout_s=0.1)
            if frame is None:
                continue
            try:
                self._process(frame)
                # after a burst of large frames, give the freed memory back (common.FreedMemoryTrimmer)
                frame_pixels = frame.rgb.shape[0] * frame.rgb.shape[1]
                if self.values["malloc_keep_freed_mb"] > 0 and self._trimmer.after_frame(frame_pixels):
                    self.events.count("memory_trims")
            except Exception as exc:  # noqa: BLE001 - keep the worker alive
                self.frame_drops.count("inference_error", f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _process(self, frame: _Frame) -> None:
        v = self.values
        policy = scale_policy(v, self.rgb_only_pipeline is not None)
        decision, echo = self.echo_state.decide_waiting(frame.stamp_ns, policy, v["echo_wait_s"])
        if decision.mode is ScaleMode.DROP:  # no usable echo and no scale to hold
            self.frame_drops.count(decision.reason.value, DROP_DETAILS[decision.reason])
            return
        h, w = frame.rgb.shape[:2]
        out_hw = (v["output_height_px"] or h, v["output_width_px"] or w)  # 0 = the camera's size
        t0 = time.perf_counter()
        out = self.echo_state.infer(decision, echo, self.pipeline, self.rgb_only_pipeline, frame.rgb,
                                    v["sample_rate_hz"], out_hw, frame.stamp_ns)
        self._inference_ms.append(1e3 * (time.perf_counter() - t0))
        self.events.count(f"scale_{decision.mode.value}")
        self._last_mode, self._last_confidence = decision.mode.value, out.confidence
        self._publish(frame, np.asarray(out.depth_m, dtype=np.float32), out.scale, out.confidence)

    def _publish(self, frame: _Frame, depth_m: np.ndarray, scale: float, confidence: float) -> None:
        header = frame.msg.header  # REP 118/117: the depth carries the camera frame's header
        self._pubs["depth"].publish(conv.array_to_image(depth_m, "32FC1", header))
        info_out = None
        if frame.camera_info is not None:
            info_out = conv.scale_camera_info(frame.camera_info, depth_m.shape[1], depth_m.shape[0], header)
            self._pubs["camera_info"].publish(info_out)
        self._pubs["scale"].publish(conv.scale_to_msg(scale, confidence))
        points = self._pubs.get("points")
        if points is not None and info_out is not None and points.get_subscription_count() > 0:
            k = np.asarray(info_out.k, dtype=np.float64).reshape(3, 3)
            points.publish(conv.depth_to_pointcloud2(depth_m, k, header, stride=self.values["points_stride_px"]))
        preview = self._pubs.get("preview")
        if preview is not None and preview.get_subscription_count() > 0:
            rgb = colorize_depth(depth_m, self.pipeline.min_depth_m, self.values["preview_max_depth_m"])
            preview.publish(conv.array_to_image(rgb, "rgb8", header))
        self.events.count("frames_out")
        self._rates["depth"].tick()

    # diagnostics
    def counters(self) -> dict[str, Any]:
        """All counters (tests, replay evaluation): frames_in/out, drops by reason, echo drops."""
        events = self.events.snapshot()
        return {**{k: events.get(k, 0) for k in ("frames_in", "frames_out", "echoes_in")},
                "frame_drops": self.frame_drops.snapshot(), "echo_drops": self.echo_drops.snapshot(), "events": events}

    @guarded("frame_drops", "diagnostics_exception")
    def _publish_diagnostics(self) -> None:
        state, c, nan = self._state_machine.current_state[1], self.counters(), float("nan")
        previous, self._diag_previous_drops = getattr(self, "_diag_previous_drops", {}), c["frame_drops"]
        recent = {k: n - previous.get(k, 0) for k, n in c["frame_drops"].items() if n > previous.get(k, 0)}
        scale, newest_echo_ns = self.echo_state.scale, self.echo_state.newest_echo_ns()
        values = diagnostic_values(c, {**self.frame_drops.details(), **self.echo_drops.details()}, {
            "state": state,
            "camera_rate_hz": self._rates["camera"].rate_hz(),  # arrivals; vs the stamps: lost or slow frames
            "camera_stamp_rate_hz": self._stamp_gaps.stamp_rate_hz(),
            "camera_frames_missing_est": self._stamp_gaps.missing(),
            "echo_rate_hz": self._rates["echo"].rate_hz(),
            "depth_rate_hz": self._rates["depth"].rate_hz(),
            "inference_ms_mean": float(np.mean(self._inference_ms)) if self._inference_ms else nan,
            "scale": scale.scale if scale else nan,
            "confidence": self._last_confidence,
            "scale_mode": self._last_mode,
            "echo_age_s": (self._now_ns() - newest_echo_ns) / 1e9 if newest_echo_ns is not None else nan,
            "resident_memory_mb": resident_memory_mb(),
            **self.echo_state.filter_values(), **(self._echo_path.diagnostic_values() if self._echo_path else {}),
        })
        level, message = diagnostic_level(self.startup_error, state, recent, self._last_mode)
        self.publish_status("depth", "avsnet", level, message, values)


def main(args: list[str] | None = None) -> int:
    """Console script `depth_node` (ros2 run avsnet_ros depth_node)."""
    # One spinning thread: every callback is short (inference runs on the worker); rclpy's thread-pool
    # executor added 2-3 ms from a frame's arrival to its callback (1280x720, 2 cores; bench/README.md).
    return run_node_main(lambda: DepthNode(), args=args, multithreaded=False)


if __name__ == "__main__":
    raise SystemExit(main())
