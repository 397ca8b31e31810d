"""depth_node: camera frames + binaural echoes -> metric depth (AVS-Net + relative depth + scaling).

Lifecycle (rclpy.lifecycle; `autostart:=true` runs configure + activate at start-up):
    configure  read parameters, load the checkpoints (DepthPipeline.from_checkpoints), create
               publishers. Fails (stays unconfigured) with a clear log line on a bad checkpoint.
    activate   warm the models up (one inference on a dummy frame), subscribe, start the worker.
    deactivate unsubscribe, stop the worker; cleanup releases the models.

Pairing, scale reuse, hold with decay and fallback: avsnet_ros.policy.pairing (decide_scale; the
same rule pairs frames in rosbags). A FRESH frame runs the full pipeline (AVS-Net on RGB + echo ->
scale); REUSE/HOLD frames apply the cached scale to their own relative depth (pipeline.depth_from_scale);
`echo_fallback` picks "drop", "hold" or "rgb_only" (RGB-only AVS-Net, confidence 0). Echo content
checks (silence and clipping on the model's echo window, direct-path onset): avsnet_ros.audio.echo_checks.
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
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, MultiArrayLayout

from avsnet_ros.audio.align import ECHO_ONSET_SAMPLE
from avsnet_ros.audio.echo_checks import EchoCheckConfig, check_echo, onset_templates
from avsnet_ros.nodes import conversions as conv
from avsnet_ros.nodes.common import (DIAGNOSTICS_QOS, ERROR, OK, OUTPUT_QOS, SENSOR_QOS, WARN, DropCounter,
                                     RateMeter, declare_parameters, diagnostic_array, diagnostic_status, guarded,
                                     keep_freed_memory, read_parameters, run_node_main)
from avsnet_ros.nodes.depth_setup import PARAMS, load_pipelines
from avsnet_ros.nodes.worker import LatestSlot, in_passing_thread
from avsnet_ros.policy import (CachedScale, DropReason, Fallback, ScaleDecision, ScaleMode, ScalePolicy,
                               StampGapMeter, decide_scale)
from avsnet_ros.visualization import colorize_depth

@dataclass
class _Echo:
    stamp_ns: int
    echo: np.ndarray  # (2, N) float32
    serial: int


@dataclass
class _Frame:
    msg: Image
    stamp_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8
    camera_info: CameraInfo | None
    received_ns: int


@dataclass
class _Scale:
    scale: float
    shift: float  # mean_std scaling: depth = scale * R + shift (0 otherwise)
    confidence: float
    echo: _Echo  # the echo it came from (pseudo-metric-only pipelines rerun AVS-Net with it)


class DepthNode(LifecycleNode):
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
        self._echoes: deque[_Echo] = deque(maxlen=16)
        self._echo_serial = 0
        self._echo_in_flight = 0
        self._echo_done = threading.Condition(self._lock)
        self._camera_info: CameraInfo | None = None
        self._last_frame_stamp_ns = -1
        self._scale: _Scale | None = None
        self._last_confidence = float("nan")
        self._last_mode = ""
        self._slot = LatestSlot()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._frame_rate = RateMeter()
        self._echo_rate = RateMeter()
        self._out_rate = RateMeter()
        self._inference_ms: deque[float] = deque(maxlen=50)
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self._diag_timer = None
        self._min_echo_samples = 1
        self._echo_window = (0, 1)  # (start sample, samples) of the echo the model reads
        self._onset_templates: list[np.ndarray] = []
        self._stamp_gaps = StampGapMeter()  # camera header stamps: rate and frames missing
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._echo_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        if self.values["autostart"]:
            self.autostart()

    # ------------------------------------------------------------------------------------------
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
            if v["torch_threads"] > 0:
                import torch

                torch.set_num_threads(int(v["torch_threads"]))
            if v["malloc_keep_freed_mb"] > 0:  # before the worker allocates (common.keep_freed_memory)
                keep_freed_memory(int(v["malloc_keep_freed_mb"]) << 20)
            # loaded in a thread that exits: only the inference worker keeps torch's OpenMP team
            self.pipeline, self.rgb_only_pipeline = in_passing_thread(lambda: (self._pipeline_factory or load_pipelines)(v))
            expected_rate = int(self.pipeline.sample_rate_hz)
            if expected_rate != v["sample_rate_hz"]:
                raise ValueError(f"sample_rate_hz={v['sample_rate_hz']} but the AVS-Net checkpoint expects "
                                 f"{expected_rate} Hz echoes")
            self._min_echo_samples = int(self.pipeline.min_echo_samples())
            # the "file" crop reads the window from sample 0, the "onset" crop from the onset
            # (which the onset check holds at ECHO_ONSET_SAMPLE)
            start = ECHO_ONSET_SAMPLE if self.pipeline.avs_config.audio_crop == "onset" else 0
            self._echo_window = (start, self._min_echo_samples)
            self._onset_templates = onset_templates(v["sample_rate_hz"])
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
            f"; echo >= {self._min_echo_samples} samples at {v['sample_rate_hz']} Hz, max age "
            f"{v['max_echo_age_s']} s, fallback {v['echo_fallback']}; inputs SensorDataQoS")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker, which warms up first (in its own thread: see worker.in_passing_thread),
        then subscribe. SUCCESS -> active; FAILURE when the warm-up fails."""
        self._stop.clear()
        warmed, box = threading.Event(), {}
        self._worker = threading.Thread(target=self._work, args=(warmed, box), name="depth_node_inference",
                                        daemon=True)
        self._worker.start()
        while not warmed.wait(0.5) and self._worker.is_alive():
            pass
        if "error" in box or not warmed.is_set():
            exc = box.get("error", RuntimeError("the inference worker stopped during the warm-up"))
            self._stop_worker()
            self.startup_error = f"depth_node warm-up failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.startup_error)
            return TransitionCallbackReturn.FAILURE
        self._subs = [
            self.create_subscription(Image, "camera/image_raw", self._on_image, SENSOR_QOS,
                                     callback_group=self._input_group),
            self.create_subscription(CameraInfo, "camera/camera_info", self._on_camera_info, SENSOR_QOS,
                                     callback_group=self._echo_group),
            self.create_subscription(Image, "avsnet/echo", self._on_echo, SENSOR_QOS,
                                     callback_group=self._echo_group),
        ]
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the worker thread (called by main before destroy_node)."""
        self._stop_worker()

    def _stop_worker(self) -> None:
        self._stop.set()
        self._slot.clear()
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
        self.pipeline = self.rgb_only_pipeline = None
        with self._lock:
            self._echoes.clear()
            self._scale = None
            self._camera_info = None
            self._last_frame_stamp_ns = -1
        self._stamp_gaps.reset()
        self._last_mode, self._last_confidence = "", float("nan")

    def _warm_up(self) -> None:
        h, w = self.pipeline.input_size_hw()
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        echo = np.zeros((2, self._min_echo_samples), dtype=np.float32)
        t0 = time.perf_counter()
        self.pipeline(rgb, echo, sample_rate_hz=self.values["sample_rate_hz"])
        if not self.pipeline.pseudo_metric_only:
            self.pipeline.depth_from_scale(rgb, 1.0)
        if self.rgb_only_pipeline is not None:
            self.rgb_only_pipeline(rgb, None, sample_rate_hz=self.values["sample_rate_hz"])
        self.get_logger().info(f"warm-up inference {1e3 * (time.perf_counter() - t0):.0f} ms")

    # ------------------------------------------------------------------------------------------
    # callbacks (validate + store only)
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _is_future(self, stamp_ns: int, now_ns: int | None = None) -> bool:
        """Stamped later than the clock + future_tolerance_s. Not decidable before a simulated
        clock has ticked (use_sim_time and no /clock yet: the clock reads 0)."""
        now_ns = self._now_ns() if now_ns is None else now_ns
        return now_ns > 0 and stamp_ns > now_ns + int(self.values["future_tolerance_s"] * 1e9)

    def _on_echo(self, msg: Image) -> None:
        with self._lock:
            self._echo_in_flight += 1
        try:
            self._handle_echo(msg)
        finally:
            with self._lock:
                self._echo_in_flight -= 1
                self._echo_done.notify_all()

    @guarded("echo_drops", "echo_callback_exception")
    def _handle_echo(self, msg: Image) -> None:
        self.events.count("echoes_in")
        self._echo_rate.tick()
        v = self.values
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        if self._is_future(stamp_ns):
            self.echo_drops.count("echo_future_stamp", f"stamp {stamp_ns} ns is ahead of the clock")
            return
        if int(msg.width) > v["max_echo_samples"]:
            self.echo_drops.count("echo_length", f"{msg.width} samples > max_echo_samples")
            return
        try:
            echo = conv.echo_from_image_msg(msg, min_samples=self._min_echo_samples)
        except conv.MessageError as exc:
            self.echo_drops.count(exc.reason, str(exc))
            return
        config = EchoCheckConfig(v["echo_max_clipped_fraction"], v["echo_onset_check"],
                                 v["echo_onset_tolerance_samples"], v["echo_min_onset_snr_db"])
        start, samples = self._echo_window
        problem = check_echo(echo, window_start_sample=start, window_samples=samples,
                             templates=self._onset_templates, config=config)
        if problem is not None:
            self.echo_drops.count(problem.reason, problem.detail)
            return
        with self._lock:
            if self._echoes and stamp_ns <= self._echoes[-1].stamp_ns:
                self.echo_drops.count("echo_out_of_order", f"stamp {stamp_ns} <= newest {self._echoes[-1].stamp_ns}")
                return
            self._echo_serial += 1
            self._echoes.append(_Echo(stamp_ns, echo, self._echo_serial))

    @guarded("echo_drops", "camera_info_callback_exception")
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            conv.intrinsics_from_camera_info_msg(msg)
        except conv.MessageError as exc:
            self.echo_drops.count("camera_info_invalid", str(exc))
            return
        if msg.width == 0 or msg.height == 0:
            self.echo_drops.count("camera_info_invalid", "camera_info without image size")
            return
        with self._lock:
            self._camera_info = msg

    @guarded("frame_drops", "image_callback_exception")
    def _on_image(self, msg: Image) -> None:
        self.events.count("frames_in")
        self._frame_rate.tick()
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
        old = self._slot.put(_Frame(msg, stamp_ns, rgb, info, now_ns))
        if old is not None:
            self.frame_drops.count("superseded", "a newer frame arrived before inference was free")

    def _has_subscribers(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in self._pubs.values())

    # ------------------------------------------------------------------------------------------
    # worker
    def _work(self, warmed: threading.Event | None = None, box: dict | None = None) -> None:
        if warmed is not None:  # warm up in this thread, where inference will run
            try:
                self._warm_up()
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
            except Exception as exc:  # noqa: BLE001 - keep the worker alive
                self.frame_drops.count("inference_error", f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)

    def _decide(self, frame_stamp_ns: int) -> tuple[ScaleDecision, _Echo | None]:
        """policy.decide_scale on the echoes received so far -> (decision, paired echo or None)."""
        v = self.values
        fallback = Fallback(v["echo_fallback"])
        if fallback is Fallback.RGB_ONLY and self.rgb_only_pipeline is None:
            fallback = Fallback.DROP
        policy = ScalePolicy(v["max_echo_age_s"], v["scale_hold_s"], v["confidence_half_life_s"], fallback)
        with self._lock:
            echoes = list(self._echoes)
            scale = self._scale
        cached = CachedScale(scale.echo.serial, scale.echo.stamp_ns) if scale is not None else None
        decision = decide_scale(frame_stamp_ns, [(e.stamp_ns, e.serial) for e in echoes], cached, policy)
        return decision, (echoes[decision.echo_index] if decision.echo_index is not None else None)

    def _process(self, frame: _Frame) -> None:
        v = self.values
        decision, echo = self._decide(frame.stamp_ns)
        if decision.mode is not ScaleMode.FRESH and v["echo_wait_s"] > 0:
            # an echo published just before this frame may still be in its (parallel) callback
            with self._lock:
                waited = self._echo_done.wait_for(lambda: self._echo_in_flight == 0, timeout=v["echo_wait_s"])
                serial = self._echo_serial
            if waited and (self._scale is None or serial != self._scale.echo.serial):
                decision, echo = self._decide(frame.stamp_ns)
        mode = decision.mode
        out_hw = self._output_size(frame)
        rate = v["sample_rate_hz"]
        t0 = time.perf_counter()
        if mode is ScaleMode.FRESH:
            # depth_only: the node publishes no pseudo-metric or relative map, so they are not resized
            result = self.pipeline(frame.rgb, echo.echo, sample_rate_hz=rate, output_size_hw=out_hw, depth_only=True)
            depth_m = result.depth_m[0]
            scale_value, confidence = float(result.scale[0]), float(result.confidence[0])
            with self._lock:
                self._scale = _Scale(scale_value, float(result.shift[0]), confidence, echo)
        elif mode in (ScaleMode.REUSE, ScaleMode.HOLD):
            with self._lock:
                cached = self._scale
            if self.pipeline.pseudo_metric_only:
                # no relative model: the scale is AVS-Net's own output, so rerun it with the cached echo
                result = self.pipeline(frame.rgb, cached.echo.echo, sample_rate_hz=rate, output_size_hw=out_hw,
                                       depth_only=True)
                depth_m = result.depth_m[0]
            else:
                depth_m = self.pipeline.depth_from_scale(frame.rgb, cached.scale, cached.shift, output_size_hw=out_hw)
            scale_value, confidence = cached.scale, cached.confidence * decision.confidence_factor
        elif mode is ScaleMode.RGB_ONLY:
            result = self.rgb_only_pipeline(frame.rgb, None, sample_rate_hz=rate, output_size_hw=out_hw,
                                            depth_only=True)
            depth_m = result.depth_m[0]
            scale_value, confidence = float("nan"), 0.0
        else:  # DROP: no usable echo and no scale to hold
            self.frame_drops.count(decision.reason.value, _DROP_DETAILS[decision.reason])
            return
        self._inference_ms.append(1e3 * (time.perf_counter() - t0))
        self.events.count(f"scale_{mode.value}")
        self._last_mode, self._last_confidence = mode.value, confidence
        self._publish(frame, np.asarray(depth_m, dtype=np.float32), scale_value, confidence)

    def _output_size(self, frame: _Frame) -> tuple[int, int]:
        h, w = frame.rgb.shape[:2]
        oh, ow = self.values["output_height_px"], self.values["output_width_px"]
        return (oh or h, ow or w)

    def _publish(self, frame: _Frame, depth_m: np.ndarray, scale: float, confidence: float) -> None:
        header = frame.msg.header  # REP 118/117: the depth carries the camera frame's header
        self._pubs["depth"].publish(conv.array_to_image(depth_m, "32FC1", header))
        out_h, out_w = depth_m.shape
        info_out = None
        if frame.camera_info is not None:
            info_out = conv.scale_camera_info(frame.camera_info, out_w, out_h, header)
            self._pubs["camera_info"].publish(info_out)
        self._pubs["scale"].publish(Float32MultiArray(
            layout=_SCALE_LAYOUT, data=[float(scale), float(confidence)]))
        points = self._pubs.get("points")
        if points is not None and info_out is not None and points.get_subscription_count() > 0:
            k = np.asarray(info_out.k, dtype=np.float64).reshape(3, 3)
            points.publish(conv.depth_to_pointcloud2(depth_m, k, header, stride=self.values["points_stride_px"]))
        preview = self._pubs.get("preview")
        if preview is not None and preview.get_subscription_count() > 0:
            min_d = self.pipeline.min_depth_m
            rgb = colorize_depth(depth_m, min_d, self.values["preview_max_depth_m"])
            preview.publish(conv.array_to_image(rgb, "rgb8", header))
        self.events.count("frames_out")
        self._out_rate.tick()

    # ------------------------------------------------------------------------------------------
    # diagnostics
    def counters(self) -> dict[str, Any]:
        """All counters (tests, replay evaluation): frames_in/out, drops by reason, echo drops."""
        events = self.events.snapshot()
        return {
            "frames_in": events.get("frames_in", 0),
            "frames_out": events.get("frames_out", 0),
            "echoes_in": events.get("echoes_in", 0),
            "frame_drops": self.frame_drops.snapshot(),
            "echo_drops": self.echo_drops.snapshot(),
            "events": events,
        }

    @guarded("frame_drops", "diagnostics_exception")
    def _publish_diagnostics(self) -> None:
        state = self._state_machine.current_state[1]
        frame_drops = self.frame_drops.snapshot()
        echo_drops = self.echo_drops.snapshot()
        events = self.events.snapshot()
        # The level reflects the drops since the previous report, not the cumulative counts, so the
        # status returns to OK once echoes (or inference) recover (test_hardening_emitter.py).
        previous = getattr(self, "_diag_previous_drops", {})
        recent = {k: n - previous.get(k, 0) for k, n in frame_drops.items() if n > previous.get(k, 0)}
        self._diag_previous_drops = frame_drops
        with self._lock:
            scale = self._scale
            newest_echo_ns = self._echoes[-1].stamp_ns if self._echoes else None
        now_ns = self._now_ns()
        values: dict[str, Any] = {
            "state": state,
            "frames_in": events.get("frames_in", 0),
            "frames_out": events.get("frames_out", 0),
            "echoes_in": events.get("echoes_in", 0),
            "camera_rate_hz": self._frame_rate.rate_hz(),  # arrivals; vs the stamps: lost or slow frames
            "camera_stamp_rate_hz": self._stamp_gaps.stamp_rate_hz(),
            "camera_frames_missing_est": self._stamp_gaps.missing(),
            "echo_rate_hz": self._echo_rate.rate_hz(),
            "depth_rate_hz": self._out_rate.rate_hz(),
            "inference_ms_mean": float(np.mean(self._inference_ms)) if self._inference_ms else float("nan"),
            "scale": scale.scale if scale else float("nan"),
            "confidence": self._last_confidence,
            "scale_mode": self._last_mode,
            "echo_age_s": (now_ns - newest_echo_ns) / 1e9 if newest_echo_ns is not None else float("nan"),
            "frames_dropped": sum(frame_drops.values()),
            "echoes_dropped": sum(echo_drops.values()),
        }
        values.update({f"drop.{k}": n for k, n in sorted(frame_drops.items())})
        values.update({f"echo_drop.{k}": n for k, n in sorted(echo_drops.items())})
        values.update({f"count.{k}": n for k, n in sorted(events.items()) if k.startswith(("scale_", "skipped"))})
        details = {**self.frame_drops.details(), **self.echo_drops.details()}
        values.update({f"last.{k}": d[:200] for k, d in sorted(details.items())})
        if self.startup_error:
            level, message = ERROR, self.startup_error
        elif state != "active":
            level, message = WARN, f"{state}"
        elif recent.get("inference_error"):
            level, message = ERROR, "inference errors (see last.inference_error)"
        elif self._last_mode in (ScaleMode.HOLD.value, ScaleMode.RGB_ONLY.value) or any(
                recent.get(r.value) for r in DropReason):
            level, message = WARN, f"echo missing or stale: scale mode {self._last_mode or 'none'}"
        else:
            level, message = OK, "running"
        status = diagnostic_status(f"{self.get_name()}: depth", "avsnet", level, message, values)
        self._diag_pub.publish(diagnostic_array(self, [status]))


_SCALE_LAYOUT = MultiArrayLayout(dim=[MultiArrayDimension(label="scale,confidence", size=2, stride=2)], data_offset=0)
_DROP_DETAILS = {DropReason.NO_ECHO: "no echo within max_echo_age_s and no scale to hold",
                 DropReason.STALE_ECHO: "newest echo older than max_echo_age_s"}


def main(args: list[str] | None = None) -> int:
    """Console script `depth_node` (ros2 run avsnet_ros depth_node)."""
    return run_node_main(lambda: DepthNode(), args=args)


if __name__ == "__main__":
    raise SystemExit(main())
