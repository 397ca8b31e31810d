"""depth_node's parts that need no rclpy: parameters, model loading, the echo path (content checks,
echo front-end, the sweep in use) and the echo/scale state that turns a policy decision into metric
depth with the pipeline (nodes/depth_node.py does the wiring)."""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

import numpy as np

from avsnet_ros.audio.align import ECHO_ONSET_SAMPLE
from avsnet_ros.audio.echo_checks import (DEFAULT_MIN_LEVEL_DBFS, EchoCheckConfig, EchoFault, EchoProblem,
                                          check_echo, check_front_end, onset_templates)
from avsnet_ros.audio.frontend import MIN_DIRECT_QUALITY, FrontEndResult, SweepSpec
from avsnet_ros.audio.io import AudioError
from avsnet_ros.audio.sweep import DEFAULT_SAMPLE_RATE_HZ
from avsnet_ros.data.codec import MessageError, sweep_from_chirp_text
from avsnet_ros.nodes.common import ERROR, OK, WARN, ParamSpec, keep_freed_memory
from avsnet_ros.nodes.worker import in_passing_thread
from avsnet_ros.policy.scale_filter import SCALE_FILTER_MODES, OdometryDistance, ScaleFilter, ScaleFilterConfig
from avsnet_ros.scaling import SCALING_MODES
from avsnet_ros.policy import (DEFAULT_CONFIDENCE_HALF_LIFE_S, DEFAULT_MAX_ECHO_AGE_S, DEFAULT_SCALE_HOLD_S,
                               FALLBACKS, CachedScale, DropReason, Fallback, ScaleDecision, ScaleMode, ScalePolicy,
                               decide_scale)

PARAMS = (
    ParamSpec("autostart", True, "configure and activate at start-up (false: drive the lifecycle yourself)"),
    ParamSpec("device", "auto", "torch device for inference", choices=("auto", "cpu", "cuda")),
    ParamSpec("avs_checkpoint", "", "AVS-Net checkpoint dir (config.json + model.safetensors); "
              "empty = shipped assets/checkpoints/avsnet_tiny"),
    ParamSpec("relative_checkpoint", "", "relative depth model: a DepthNet checkpoint dir or a transformers "
              "*ForDepthEstimation folder (save_pretrained: config.json + model.safetensors; Depth Anything, "
              "DPT/MiDaS, ZoeDepth, Depth Pro, GLPN; loaded offline); empty = shipped "
              "assets/checkpoints/depthnet_tiny"),
    ParamSpec("rgb_only_checkpoint", "", "RGB-only AVS-Net checkpoint for echo_fallback=rgb_only; "
              "empty = shipped assets/checkpoints/avsnet_tiny_rgb"),
    ParamSpec("scaling", "auto", "how the echo pseudo-metric depth scales the relative depth (README "
              "'Scaling'): auto = affine for disparity models, median otherwise; local: a smooth scale "
              "field instead of one factor (README 'Scale over time and space')",
              choices=SCALING_MODES),
    ParamSpec("scale_filter", "kalman", "filter the echo scale across echoes (policy/scale_filter.py: Kalman "
              "filter on log-scale with outlier gating; confidence from its variance) or use each echo's own",
              choices=SCALE_FILTER_MODES),
    ParamSpec("scale_filter_process_var_log_per_s", ScaleFilterConfig.process_var_log_per_s,
              "log-scale variance added per second between echoes", 0.0, 100.0),
    ParamSpec("scale_filter_process_var_log_per_m", ScaleFilterConfig.process_var_log_per_m,
              "log-scale variance added per metre travelled (odometry)", 0.0, 100.0),
    ParamSpec("scale_filter_measurement_std_log", ScaleFilterConfig.measurement_std_log,
              "std of one echo's log-scale at confidence 1", 1e-6, 100.0),
    ParamSpec("scale_filter_gate_sigma", ScaleFilterConfig.gate_sigma, "echo scales beyond this many standard "
              "deviations of the innovation are gated (counted); 3 such in a row re-initialise", 0.1, 1000.0),
    ParamSpec("odom_topic", "", "nav_msgs/Odometry topic: the scale filter's variance grows with the distance "
              "travelled ('' = off)"),
    ParamSpec("amp", False, "automatic mixed precision (CUDA only)"),
    ParamSpec("torch_threads", 0, "torch intra-op threads (0 = torch default)", 0, 256),
    ParamSpec("malloc_keep_freed_mb", 64, "glibc malloc keeps up to this much freed memory for the next "
              "frame instead of returning it to the kernel (process-wide; avoids ~5000 page faults per "
              "inference in the worker thread; 0 = leave the allocator alone)", 0, 2047),
    ParamSpec("sample_rate_hz", DEFAULT_SAMPLE_RATE_HZ, "echo sample rate (the echo contract: 44100 Hz; must match the "
              "models)", 8000, 192000),
    ParamSpec("max_echo_age_s", DEFAULT_MAX_ECHO_AGE_S, "a frame pairs with the newest echo stamped at most this long "
              "before it (never after it)", 0.0, 60.0, live=True),
    ParamSpec("scale_hold_s", DEFAULT_SCALE_HOLD_S, "after the echo is too old, keep the last scale this long "
              "(confidence decaying) before echo_fallback applies", 0.0, 3600.0, live=True),
    ParamSpec("confidence_half_life_s", DEFAULT_CONFIDENCE_HALF_LIFE_S,
              "held-scale confidence halves every this many seconds",
              0.001, 3600.0, live=True),
    ParamSpec("echo_fallback", "drop", "without a usable echo or held scale: drop the frame, hold the "
              "last scale indefinitely, or publish the RGB-only model's pseudo-metric depth",
              choices=FALLBACKS),
    ParamSpec("echo_wait_s", 0.05, "a frame without a fresh echo waits up to this long for echo messages "
              "already being checked (callbacks run in parallel)", 0.0, 5.0, live=True),
    ParamSpec("future_tolerance_s", 0.5, "messages stamped more than this ahead of the node clock are "
              "rejected (future_stamp)", 0.0, 3600.0, live=True),
    ParamSpec("output_width_px", 0, "published depth width (0 = camera width)", 0, 16384, live=True),
    ParamSpec("output_height_px", 0, "published depth height (0 = camera height)", 0, 16384, live=True),
    # 2560x1440: the largest frame (and same-size depth output) the shipped Fast DDS profile carries between
    # processes (bench/bench_delivery.py --frame-size 2560x1440: 100 %); the memory bound is measured at it
    ParamSpec("max_image_pixels", 2560 * 1440, "larger camera images are rejected (image_too_large); the "
              "shipped Fast DDS profile carries up to 2560x1440 between processes",
              1, 2**31 - 1, live=True),
    ParamSpec("require_camera_info", False, "drop frames until a camera_info arrived", live=True),
    ParamSpec("max_echo_samples", 10 * DEFAULT_SAMPLE_RATE_HZ,  # 10 s of audio
              "longer echo buffers are rejected (echo_length)", 1, 2**31 - 1, live=True),
    ParamSpec("echo_onset_check", True, "reject echoes whose direct-path onset is not at "
              "ECHO_ONSET_SAMPLE (misaligned, wrong sample rate, silent)", live=True),
    ParamSpec("echo_onset_tolerance_samples", 16, "allowed onset offset from ECHO_ONSET_SAMPLE", 0, 10000, live=True),
    ParamSpec("echo_min_onset_snr_db", 20.0, "minimum matched-filter SNR of the direct path", 0.0, 200.0, live=True),
    ParamSpec("echo_max_clipped_fraction", 0.05, "reject echoes with more of the model's echo window "
              "(both channels) at |x| >= 0.999",
              0.0, 1.0, live=True),
    ParamSpec("echo_sweep", "", "the emitted sweep as SweepSpec text (README 'Echo message'), overriding "
              "avsnet/chirp; '' = the sweep avsnet/chirp announces, else the one identified from the recording"),
    ParamSpec("echo_min_quality", MIN_DIRECT_QUALITY, "models with the rerender echo front-end: reject echoes "
              "that the sweep in use does not explain (deconvolved direct-path quality below this: "
              "echo_sweep_mismatch)", 0.0, 1.0, live=True),
    ParamSpec("echo_min_level_dbfs", DEFAULT_MIN_LEVEL_DBFS, "models with the rerender echo front-end: reject "
              "echoes whose direct path is quieter (echo_level)", -200.0, 0.0, live=True),
    ParamSpec("skip_when_unsubscribed", True, "skip inference while nothing subscribes to the outputs", live=True),
    ParamSpec("publish_points", False, "publish avsnet/points (needs camera_info)"),
    ParamSpec("points_stride_px", 2, "pixel stride of the point cloud", 1, 64, live=True),
    ParamSpec("publish_preview", True, "publish avsnet/depth_preview (rgb8, turbo colour map)"),
    ParamSpec("preview_max_depth_m", 10.0, "depth shown as the last colour of the preview", 0.1, 1000.0, live=True),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics", 0.05, 60.0),
)


def prepare_models(values: dict, pipeline_factory=None):
    """Process settings and models of a configure -> (pipeline, rgb_only_pipeline or None, EchoChecker).

    pipeline_factory: callable(values) -> (pipeline, rgb_only or None); default load_pipelines.
    Raises ValueError when the checkpoint's sample rate differs from sample_rate_hz.
    """
    if values["torch_threads"] > 0:
        import torch

        torch.set_num_threads(int(values["torch_threads"]))
    if values["malloc_keep_freed_mb"] > 0:  # before the worker allocates (common.keep_freed_memory)
        keep_freed_memory(int(values["malloc_keep_freed_mb"]) << 20)
    # loaded in a thread that exits: only the inference worker keeps torch's OpenMP team
    pipeline, rgb_only = in_passing_thread(lambda: (pipeline_factory or load_pipelines)(values))
    if int(pipeline.sample_rate_hz) != values["sample_rate_hz"]:
        raise ValueError(f"sample_rate_hz={values['sample_rate_hz']} but the AVS-Net checkpoint expects "
                         f"{int(pipeline.sample_rate_hz)} Hz echoes")
    return pipeline, rgb_only, EchoChecker(pipeline, values["sample_rate_hz"])


def load_pipelines(v: dict):
    """(pipeline, rgb_only_pipeline or None) from the checkpoint parameters (values of PARAMS).

    rgb_only_pipeline is loaded only for echo_fallback "rgb_only" and must be an RGB-only AVS-Net.
    Raises what DepthPipeline.from_checkpoints raises, or ValueError for an RGB + echo fallback model.
    """
    from avsnet_ros.pipeline import DepthPipeline

    def ckpt(path: str):
        return path or None  # None = the shipped checkpoint

    main = DepthPipeline.from_checkpoints(avs_checkpoint=ckpt(v["avs_checkpoint"]),
                                          relative_checkpoint=ckpt(v["relative_checkpoint"]),
                                          device=v["device"], scaling=v["scaling"], amp=v["amp"])
    rgb_only = None
    if v["echo_fallback"] == "rgb_only":
        rgb_path = v["rgb_only_checkpoint"]
        if not rgb_path:
            from avsnet_ros.paths import asset_path

            rgb_path = str(asset_path("checkpoints", "avsnet_tiny_rgb"))
        rgb_only = DepthPipeline.from_checkpoints(avs_checkpoint=rgb_path, relative_checkpoint=False,
                                                  device=v["device"], scaling="none", amp=v["amp"])
        if rgb_only.use_audio:
            raise ValueError(f"rgb_only_checkpoint {rgb_path} is an RGB + echo model; echo_fallback "
                             "rgb_only needs an RGB-only AVS-Net (use_audio false)")
    return main, rgb_only


@dataclass
class StoredEcho:
    stamp_ns: int
    # (2, N) float32 at sample_rate_hz ("raw" models), or the echo front-end's result ("rerender"
    # models): what the pipeline is given, as it is
    echo: Union[np.ndarray, FrontEndResult]
    serial: int  # unique per accepted echo


@dataclass
class StoredScale:
    scale: float
    shift: float  # mean_std scaling: depth = scale * R + shift (0 otherwise)
    confidence: float
    echo: StoredEcho  # the echo it came from (pseudo-metric-only pipelines rerun AVS-Net with it)
    local_fit: object = None  # scaling "local": the echo's scale field, reused by depth_from_scale


def make_scale_filter(values: dict) -> "Optional[ScaleFilter]":
    """The node's ScaleFilter for the scale_filter* parameters (None for scale_filter 'none')."""
    if values["scale_filter"] == "none":
        return None
    return ScaleFilter(ScaleFilterConfig(
        process_var_log_per_s=values["scale_filter_process_var_log_per_s"],
        process_var_log_per_m=values["scale_filter_process_var_log_per_m"],
        measurement_std_log=values["scale_filter_measurement_std_log"],
        gate_sigma=values["scale_filter_gate_sigma"]))


@dataclass
class FrameDepth:
    """infer()'s answer: (H, W) float32 metres (NaN invalid), the scale and its confidence in [0, 1]."""

    depth_m: np.ndarray
    scale: float
    confidence: float


class EchoScaleState:
    """The accepted echoes (newest `max_echoes`, ascending stamps) and the cached scale (thread-safe).

    Echo callbacks call begin_echo()/end_echo() around their checks, so a frame whose echo is still
    being checked can wait for it (wait_for_echoes).
    """

    def __init__(self, max_echoes: int = 16) -> None:
        self.scale_filter: Optional[ScaleFilter] = None  # set at configure (make_scale_filter)
        self.odometry = OdometryDistance()
        self.filter_status: dict[str, int] = {}  # ScaleUpdate.status -> count
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._echoes: deque[StoredEcho] = deque(maxlen=max_echoes)
        self._serial = 0
        self._in_flight = 0
        self.scale: Optional[StoredScale] = None

    def begin_echo(self) -> None:
        with self._lock:
            self._in_flight += 1

    def end_echo(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._done.notify_all()

    def add_echo(self, stamp_ns: int, echo: Union[np.ndarray, FrontEndResult]) -> Optional[str]:
        """Store an accepted echo; returns a detail (and stores nothing) when it is not newer than the newest."""
        with self._lock:
            if self._echoes and stamp_ns <= self._echoes[-1].stamp_ns:
                return f"stamp {stamp_ns} <= newest {self._echoes[-1].stamp_ns}"
            self._serial += 1
            self._echoes.append(StoredEcho(stamp_ns, echo, self._serial))
            return None

    def newest_echo_ns(self) -> Optional[int]:
        with self._lock:
            return self._echoes[-1].stamp_ns if self._echoes else None

    def clear(self) -> None:
        with self._lock:
            self._echoes.clear()
            self.scale = None
            if self.scale_filter is not None:
                self.scale_filter.reset()

    def add_odometry(self, stamp_ns: int, x_m: float, y_m: float, z_m: float) -> None:
        """One odometry position (metres): its distance feeds the scale filter's process noise."""
        with self._lock:
            self.odometry.add(stamp_ns, x_m, y_m, z_m)

    def filter_values(self) -> dict:
        """Diagnostics of the scale filter and odometry: scale_filter.<counter>, odometry.<counter>."""
        with self._lock:
            out = {f"scale_filter.{k}": n for k, n in (self.scale_filter.counters if self.scale_filter else {}).items()}
            out.update({f"odometry.{k}": n for k, n in self.odometry.counters.items()})
            out["odometry.total_m"] = self.odometry.total_m
        return out

    def decide(self, frame_stamp_ns: int, policy: ScalePolicy) -> "tuple[ScaleDecision, Optional[StoredEcho]]":
        """policy.decide_scale on the echoes stored so far -> (decision, paired echo or None)."""
        with self._lock:
            echoes, scale = list(self._echoes), self.scale
        cached = CachedScale(scale.echo.serial, scale.echo.stamp_ns) if scale is not None else None
        decision = decide_scale(frame_stamp_ns, [(e.stamp_ns, e.serial) for e in echoes], cached, policy)
        return decision, (echoes[decision.echo_index] if decision.echo_index is not None else None)

    def decide_waiting(self, frame_stamp_ns: int, policy: ScalePolicy,
                       echo_wait_s: float) -> "tuple[ScaleDecision, Optional[StoredEcho]]":
        """decide(), deciding again when a decision that is not FRESH can wait (echo_wait_s > 0) for the
        echoes still in their (parallel) callbacks and a new one arrived: an echo published just before
        the frame may still be being checked."""
        decision, echo = self.decide(frame_stamp_ns, policy)
        if decision.mode is not ScaleMode.FRESH and echo_wait_s > 0 and self.wait_for_echoes(echo_wait_s):
            decision, echo = self.decide(frame_stamp_ns, policy)
        return decision, echo

    def wait_for_echoes(self, timeout_s: float) -> bool:
        """Wait until no echo is being checked; True when a new echo arrived since the cached scale's."""
        with self._lock:
            waited = self._done.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
            return waited and (self.scale is None or self._serial != self.scale.echo.serial)

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until no echo is being checked (callbacks and the front-end thread have stored or
        rejected every echo taken so far); False on timeout."""
        with self._lock:
            return self._done.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def infer(self, decision: ScaleDecision, echo: Optional[StoredEcho], pipeline, rgb_only_pipeline, rgb: np.ndarray,
              sample_rate_hz: int, output_size_hw: "tuple[int, int]", frame_stamp_ns: int = 0) -> FrameDepth:
        """Metric depth of one frame for a FRESH, REUSE, HOLD or RGB_ONLY decision (DROP: ValueError).

        FRESH runs the full pipeline; with a scale filter its scale is one measurement of the filter
        (an outlier is gated: the frame gets the filtered scale) and the depth is rescaled to the
        filtered scale; the result is cached. REUSE/HOLD apply the cached scale to the frame's
        relative depth, with the filter's confidence at the frame's stamp (its variance grows with
        time and distance) or, without a filter, the cached confidence x decision.confidence_factor.
        RGB_ONLY runs the RGB-only model.
        """
        kw = dict(sample_rate_hz=sample_rate_hz, output_size_hw=output_size_hw, depth_only=True)
        mode = decision.mode
        filt = None if pipeline.pseudo_metric_only else self.scale_filter  # no relative map to rescale
        if mode is ScaleMode.FRESH:
            # depth_only: the node publishes no pseudo-metric or relative map, so they are not resized
            result = pipeline(rgb, echo.echo, **kw)
            raw, shift, confidence = float(result.scale[0]), float(result.shift[0]), float(result.confidence[0])
            depth_m, scale = result.depth_m[0], raw
            if filt is not None:
                with self._lock:
                    update = filt.update(echo.stamp_ns, raw, confidence, travelled_m=self.odometry.take_m())
                    self.filter_status[update.status] = self.filter_status.get(update.status, 0) + 1
                if update.has_estimate:
                    scale, confidence = update.scale, update.confidence
                    # the result's own array (nothing else holds it): rescaled where it lies
                    depth_m = pipeline.rescale_depth(depth_m, shift, raw, scale, inplace=True)
            with self._lock:
                self.scale = StoredScale(scale, shift, confidence, echo, result.local_fit)
            return FrameDepth(depth_m, scale, confidence)
        if mode in (ScaleMode.REUSE, ScaleMode.HOLD):
            with self._lock:
                cached = self.scale
                state = filt.predict(frame_stamp_ns, travelled_m=self.odometry.take_m()) \
                    if filt is not None and filt.has_estimate else None
            if pipeline.pseudo_metric_only:
                # no relative model: the scale is AVS-Net's own output, so rerun it with the cached echo
                depth_m = pipeline(rgb, cached.echo.echo, **kw).depth_m[0]
            else:
                depth_m = pipeline.depth_from_scale(rgb, cached.scale, cached.shift, output_size_hw=output_size_hw,
                                                    local_fit=cached.local_fit)
            confidence = state.confidence if state is not None else cached.confidence * decision.confidence_factor
            return FrameDepth(depth_m, cached.scale, confidence)
        if mode is ScaleMode.RGB_ONLY:
            return FrameDepth(rgb_only_pipeline(rgb, None, **kw).depth_m[0], float("nan"), 0.0)
        raise ValueError(f"no depth for a {mode} decision")


def scale_policy(values: dict, rgb_only_available: bool) -> ScalePolicy:
    """The policy of the current parameter values; rgb_only falls back to drop without an RGB-only model."""
    fallback = Fallback(values["echo_fallback"])
    if fallback is Fallback.RGB_ONLY and not rgb_only_available:
        fallback = Fallback.DROP
    return ScalePolicy(values["max_echo_age_s"], values["scale_hold_s"], values["confidence_half_life_s"], fallback)


def frontend_mode(pipeline) -> str:
    """The pipeline's echo front-end mode ("raw" or "rerender"; "raw" for pipelines without one)."""
    return getattr(getattr(pipeline, "frontend", None), "mode", "raw")


class EchoChecker:
    """audio.echo_checks on the window `pipeline` reads: samples [0, min_echo_samples()) for the
    "file" crop, from ECHO_ONSET_SAMPLE for the "onset" crop (the onset check holds the onset there).
    With the "rerender" front-end, check() leaves the onset to check_front_end (the matched-filter
    templates know only the default sweeps)."""

    def __init__(self, pipeline, sample_rate_hz: int) -> None:
        self.window_samples = int(pipeline.min_echo_samples())
        self.window_start_sample = ECHO_ONSET_SAMPLE if pipeline.avs_config.audio_crop == "onset" else 0
        self.templates = onset_templates(sample_rate_hz)
        self.rerender = frontend_mode(pipeline) == "rerender"

    @staticmethod
    def config(values: dict) -> EchoCheckConfig:
        return EchoCheckConfig(values["echo_max_clipped_fraction"], values["echo_onset_check"],
                               values["echo_onset_tolerance_samples"], values["echo_min_onset_snr_db"],
                               values["echo_min_quality"], values["echo_min_level_dbfs"])

    def check(self, echo: np.ndarray, values: dict) -> Optional[EchoProblem]:
        config = self.config(values)
        if self.rerender:
            config = replace(config, onset_check=False)
        return check_echo(echo, window_start_sample=self.window_start_sample, window_samples=self.window_samples,
                          templates=self.templates, config=config)

    def check_front_end(self, result: FrontEndResult, values: dict) -> Optional[EchoProblem]:
        return check_front_end(result, self.config(values))


class EchoPath:
    """depth_node's echo path after decoding: content checks, the echo front-end once per echo, its
    checks, then the accepted echo goes to the EchoScaleState for pairing; and the sweep in use.

    "raw" models: EchoChecker.check, then the buffer is stored, in the caller's (callback's) thread.
    "rerender" models: EchoChecker.check (length, silence, clipping) in the caller's thread, then in
    the path's own thread (start()/stop(); a callback only queues): pipeline.prepare_echo(echo, sweep)
    with the sweep in use, EchoChecker.check_front_end (echo_level, echo_sweep_mismatch, echo_onset at
    the deconvolved direct path), and the FrontEndResult is stored: the pipeline uses it as it is
    (no second front-end pass per frame). Without the thread (stopped) the caller's thread does it.
    A rejected echo is never stored, so the scale policy treats it as missing (held scale with
    decaying confidence, then echo_fallback). In-flight echoes are reported to the EchoScaleState
    (begin_echo/end_echo) until stored or rejected, so a frame can wait for them (echo_wait_s).

    Sweep in use (sweep_in_use()): the `echo_sweep` parameter when set ("parameter"), else the latest
    avsnet/chirp ("topic"; announce()), else the one the front-end identified from the recording
    ("identified", sticky: audio.frontend.EchoFrontEnd), else none. Rejections are counted in `drops`
    by reason: the EchoFault values, echo_out_of_order, chirp_invalid (the previous sweep is kept),
    echo_frontend_error (AudioError), echo_frontend_backlog (oldest queued echo dropped when more than
    max_pending wait).
    """

    def __init__(self, pipeline, checker: EchoChecker, state: "EchoScaleState", drops, values: dict,
                 logger: Any = None, max_pending: int = 8) -> None:
        """Raises ValueError when the `echo_sweep` parameter is not a SweepSpec text at sample_rate_hz."""
        self.pipeline, self.checker, self.state, self.drops, self.logger = pipeline, checker, state, drops, logger
        self.mode = frontend_mode(pipeline)
        self.sample_rate_hz = int(values["sample_rate_hz"])
        self.max_pending = int(max_pending)
        self.parameter_sweep: Optional[SweepSpec] = None
        if values["echo_sweep"].strip():
            try:
                self.parameter_sweep = sweep_from_chirp_text(values["echo_sweep"], self.sample_rate_hz)
            except MessageError as exc:
                raise ValueError(f"parameter echo_sweep: {exc}") from None
        self.topic_sweep: Optional[SweepSpec] = None
        self.topic_text = ""  # the latest valid avsnet/chirp text ("" before any)
        self.chirps_received = 0
        self.last: Optional[FrontEndResult] = None  # the newest front-end result (accepted or not)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: deque = deque()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    # sweeps
    def announce(self, text: str) -> Optional[str]:
        """An avsnet/chirp text: the topic's sweep from now on. Returns the problem (counted as
        chirp_invalid and logged; the previous sweep is kept) or None."""
        try:
            sweep = sweep_from_chirp_text(text, self.sample_rate_hz)
        except MessageError as exc:
            detail = str(exc)
            self.drops.count("chirp_invalid", detail)
            if self.logger is not None:
                self.logger.warning(f"avsnet/chirp: {detail}; keeping the previous sweep", throttle_duration_sec=10.0)
            return detail
        with self._lock:
            self.topic_sweep, self.topic_text = sweep, str(text).strip()
            self.chirps_received += 1
        return None

    def on_chirp(self, msg) -> None:
        """The avsnet/chirp subscription's callback (std_msgs/String): announce(msg.data); never raises."""
        try:
            self.announce(msg.data)
        except Exception as exc:  # noqa: BLE001 - no exception escapes a callback
            self.drops.count("chirp_callback_exception", f"{type(exc).__name__}: {exc}")

    def announced(self) -> Optional[SweepSpec]:
        """The sweep given to the front-end: the parameter's, else the topic's, else None (identify)."""
        with self._lock:
            return self.parameter_sweep if self.parameter_sweep is not None else self.topic_sweep

    def sweep_in_use(self) -> "tuple[Optional[SweepSpec], str]":
        """(sweep, origin) with origin "parameter", "topic", "identified" or "none"."""
        with self._lock:
            if self.parameter_sweep is not None:
                return self.parameter_sweep, "parameter"
            if self.topic_sweep is not None:
                return self.topic_sweep, "topic"
            if self.last is not None and self.last.identified:
                return self.last.sweep, "identified"
            return None, "none"

    def describe(self) -> str:
        sweep, origin = self.sweep_in_use()
        return f"{self.mode}, sweep from {origin}{': ' + sweep.to_text() if sweep is not None else ''}"

    # echoes
    def submit(self, stamp_ns: int, echo: np.ndarray, values: dict) -> None:
        """A decoded echo (2, N) float32 stamped stamp_ns: checked, then stored or counted (class docstring)."""
        problem = self.checker.check(echo, values)
        if problem is not None:
            self.drops.count(problem.reason, problem.detail)
            return
        if self.mode != "rerender":
            self._store(stamp_ns, echo)
            return
        with self._cond:
            if self._thread is not None:
                self.state.begin_echo()
                if len(self._pending) >= self.max_pending:
                    old_stamp_ns = self._pending.popleft()[0]
                    self.state.end_echo()
                    self.drops.count("echo_frontend_backlog", f"echo {old_stamp_ns} ns dropped: more than "
                                                              f"{self.max_pending} echoes waiting for the front-end")
                self._pending.append((stamp_ns, echo, values))
                self._cond.notify()
                return
        self._front_end(stamp_ns, echo, values)

    def start(self) -> None:
        """Start the front-end thread ("rerender" models; nothing for "raw")."""
        if self.mode != "rerender" or self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="depth_node_echo_frontend", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; echoes still queued are discarded (as unprocessed frames at deactivate)."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=10.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    for _ in range(len(self._pending)):
                        self.state.end_echo()
                    self._pending.clear()
                    return
                item = self._pending.popleft()
            try:
                self._front_end(*item)
            except Exception as exc:  # noqa: BLE001 - keep the thread alive; counted like a callback's
                self.drops.count("echo_frontend_exception", f"{type(exc).__name__}: {exc}")
                if self.logger is not None:
                    self.logger.error(f"echo front-end failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
            finally:
                self.state.end_echo()

    def _front_end(self, stamp_ns: int, echo: np.ndarray, values: dict) -> None:
        try:
            result = self.pipeline.prepare_echo(echo, self.announced(), sample_rate_hz=self.sample_rate_hz)
        except AudioError as exc:
            self.drops.count("echo_frontend_error", str(exc))
            return
        with self._lock:
            self.last = result
        problem = self.checker.check_front_end(result, values)
        if problem is not None:
            self.drops.count(problem.reason, problem.detail)
            if problem.fault is EchoFault.MISMATCH and self.logger is not None:
                self.logger.warning(f"echo rejected: {problem.detail}", throttle_duration_sec=10.0)
            return
        # The model's input spectrogram of this echo, now and not on the frame path (~1.7 ms of STFT per
        # FRESH frame on 2 cores): in a passing thread, as torch here would keep a second OpenMP team
        # beside the inference worker's (worker.in_passing_thread). On failure the frame path makes it
        # (and reports the same error there).
        try:
            in_passing_thread(lambda: self.pipeline.attach_spectrogram(result))
        except Exception as exc:  # noqa: BLE001 - see above
            if self.logger is not None:
                self.logger.warning(f"echo spectrogram not prepared ({type(exc).__name__}: {exc}); the frame "
                                    f"path makes it", throttle_duration_sec=10.0)
        self._store(stamp_ns, result)

    def _store(self, stamp_ns: int, echo) -> None:
        out_of_order = self.state.add_echo(stamp_ns, echo)
        if out_of_order is not None:
            self.drops.count("echo_out_of_order", out_of_order)

    def diagnostic_values(self) -> dict:
        """/diagnostics: echo_frontend (mode), echo_sweep (the sweep in use as text, '' = none),
        echo_sweep_origin, echo_chirp (what avsnet/chirp announced last, '' = nothing yet), echo_quality
        and echo_level_dbfs of the newest front-end result (NaN before one / for "raw" models)."""
        sweep, origin = self.sweep_in_use()
        with self._lock:
            last, chirp = self.last, self.topic_text
        return {"echo_frontend": self.mode, "echo_sweep": sweep.to_text() if sweep is not None else "",
                "echo_sweep_origin": origin, "echo_chirp": chirp,
                "echo_quality": float(last.quality) if last is not None else math.nan,
                "echo_level_dbfs": float(last.level_dbfs) if last is not None else math.nan}


def warm_up(pipeline, rgb_only_pipeline, echo_samples: int, sample_rate_hz: int) -> None:
    """One inference of each model path on a black frame and a silent echo (allocations, kernels)."""
    h, w = pipeline.input_size_hw()
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    frontend = getattr(pipeline, "frontend", None)
    # a known sweep: the "rerender" front-end would otherwise search its grid for a silent buffer's sweep
    pipeline(rgb, np.zeros((2, echo_samples), dtype=np.float32), sample_rate_hz=sample_rate_hz,
             sweep=getattr(frontend, "canonical", None))
    if frontend is not None:
        frontend.reset()  # the silent buffer's (meaningless) identification must not be reused
    if not pipeline.pseudo_metric_only:
        pipeline.depth_from_scale(rgb, 1.0)
    if rgb_only_pipeline is not None:
        rgb_only_pipeline(rgb, None, sample_rate_hz=sample_rate_hz)


DROP_DETAILS = {DropReason.NO_ECHO: "no echo within max_echo_age_s and no scale to hold",
                DropReason.STALE_ECHO: "newest echo older than max_echo_age_s"}


def diagnostic_values(counters: dict, details: dict, measured: dict) -> dict:
    """/diagnostics key/values: frames_in/out, echoes_in, the measured values, totals, then
    drop.<reason>, echo_drop.<reason>, count.scale_*/skipped_*/memory_trims and last.<reason> (detail, 200 chars).
    counters: DepthNode.counters(); details: reason -> detail of its last drop."""
    frame_drops, echo_drops, events = counters["frame_drops"], counters["echo_drops"], counters["events"]
    values = {k: counters[k] for k in ("frames_in", "frames_out", "echoes_in")}
    values.update(measured, frames_dropped=sum(frame_drops.values()), echoes_dropped=sum(echo_drops.values()))
    values.update({f"drop.{k}": n for k, n in sorted(frame_drops.items())})
    values.update({f"echo_drop.{k}": n for k, n in sorted(echo_drops.items())})
    counted = ("scale_", "skipped", "memory_")
    values.update({f"count.{k}": n for k, n in sorted(events.items()) if k.startswith(counted)})
    values.update({f"last.{k}": d[:200] for k, d in sorted(details.items())})
    return values


def diagnostic_level(startup_error: Optional[str], state: str, recent_drops: dict, last_mode: str):
    """(level, message) of the depth status. recent_drops: frame drops since the previous report, so
    the status returns to OK once echoes (or inference) recover (test_hardening_emitter.py)."""
    if startup_error:
        return ERROR, startup_error
    if state != "active":
        return WARN, state
    if recent_drops.get("inference_error"):
        return ERROR, "inference errors (see last.inference_error)"
    degraded = last_mode in (ScaleMode.HOLD.value, ScaleMode.RGB_ONLY.value)
    if degraded or any(recent_drops.get(r.value) for r in DropReason):
        return WARN, f"echo missing or stale: scale mode {last_mode or 'none'}"
    return OK, "running"
