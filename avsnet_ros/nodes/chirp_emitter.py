"""chirp_emitter: plays the sweep periodically and publishes onset-aligned binaural echoes.

Backends (parameter `backend`, see avsnet_ros.audio.backends):
    sounddevice  real audio: ONE duplex PortAudio stream kept open; the recording is aligned on
                 the direct-path onset (matched filter) so the published buffer has it at
                 ECHO_ONSET_SAMPLE; PortAudio's ADC time of that onset stamps the echo (the DAC
                 time of the sweep start gives the timing residual in /diagnostics).
    replay       echo buffers of a BV2-layout folder or a rosbag (`replay_data_path`), looped.
    sim          simulated first-order echoes of planar walls (`sim_wall_*` parameters).

Lifecycle: configure opens the backend (the sounddevice backend fails here, with the available
devices named, when the device is missing), activate starts emitting, deactivate stops it.
`autostart:=true` (default) runs both at start-up. If the backend raises while running (device
unplugged), /diagnostics goes to ERROR and the node reopens it every `retry_interval_s`.

Publishes /avsnet/echo (sensor_msgs/Image 32FC1, height 2: row 0 left, row 1 right; width =
samples; header.stamp = emission time of the sweep's first sample; frame_id = `frame_id`),
/avsnet/chirp (std_msgs/String: the sweep the echoes hold, SweepSpec.to_text(), or "unknown" for
replayed echoes whose data do not describe it; reliable + transient local (CHIRP_QOS), so a node
started later still gets it; published at activate and again before the first echo of another
sweep, e.g. after a reconfigure with new sweep_* parameters) and /diagnostics (sweep rate, xruns and
the echoes dropped for one (rejected_xrun), onset SNR, latency, the announced sweep, drops).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import String

from avsnet_ros.audio.sweep import DEFAULT_SAMPLE_RATE_HZ, DEFAULT_SWEEP
from avsnet_ros.audio.backends import (AudioDeviceError, EchoBackend, ReplayBackend, SimBackend,
                                       SoundDeviceBackend, SweepSettings, WallReflector)
from avsnet_ros.nodes import conversions as conv
from avsnet_ros.nodes.common import (CHIRP_QOS, ERROR, OK, OUTPUT_QOS, WARN, DropCounter, ParamSpec, RateMeter,
                                     ThreadedLifecycleNode, declare_parameters, guarded, read_parameters,
                                     run_node_main)

BACKENDS = ("sounddevice", "replay", "sim")

PARAMS = (
    ParamSpec("autostart", True, "configure and activate at start-up"),
    ParamSpec("backend", "sounddevice", "echo source", choices=BACKENDS),
    ParamSpec("input_device", "", "sounddevice input device: index or name substring ('' = default)"),
    ParamSpec("output_device", "", "sounddevice output device: index or name substring ('' = default)"),
    ParamSpec("input_channel_left", 0, "device input channel of the left microphone (0-based)", 0, 255),
    ParamSpec("input_channel_right", 1, "device input channel of the right microphone (0-based)", 0, 255),
    ParamSpec("output_channels", 2, "device output channels (the sweep plays on all)", 1, 64),
    ParamSpec("stream_latency_s", 0.0, "PortAudio suggested latency (0 = PortAudio's 'high', robust with a "
              "Python callback; the echo alignment removes any latency)", 0.0, 1.0),
    ParamSpec("sample_rate_hz", DEFAULT_SAMPLE_RATE_HZ,
              "audio sample rate (the echo contract and the models: 44100 Hz)",
              8000, 192000),
    ParamSpec("gain", 0.5, "sweep peak amplitude (full scale 1.0)", 0.0, 1.0),
    ParamSpec("sweep_method", DEFAULT_SWEEP["method"], "sweep phase law (default: DEFAULT_SWEEP, the sweep "
              "the depth node's onset check and the models expect)", choices=("linear", "exponential")),
    ParamSpec("sweep_f0_hz", float(DEFAULT_SWEEP["f0_hz"]), "sweep start frequency", 1.0, 96000.0),
    ParamSpec("sweep_f1_hz", float(DEFAULT_SWEEP["f1_hz"]), "sweep end frequency", 1.0, 96000.0),
    ParamSpec("sweep_duration_s", float(DEFAULT_SWEEP["duration_s"]), "sweep length", 0.0005, 1.0),
    ParamSpec("sweep_fade_s", float(DEFAULT_SWEEP.get("fade_s", 0.002)), "half-Hann fade in/out of the sweep",
              0.0, 0.5),
    ParamSpec("period_s", 0.25, "time between sweep starts (>= sweep + 2 max_depth / 343 s for clean echoes)",
              0.02, 60.0),
    ParamSpec("max_depth_m", 30.0, "echo window: the buffer holds echo_window_samples(max_depth_m) samples "
              "(7782 at 30 m, as BatVision)", 0.5, 200.0),
    ParamSpec("max_latency_s", 0.15, "largest playback -> capture latency searched for the direct path "
              "(must stay below period_s minus the sweep)", 0.001, 10.0),
    ParamSpec("min_onset_snr_db", 12.0, "sweeps whose direct path is weaker are not published", 0.0, 200.0),
    ParamSpec("frame_id", "microphones", "header.frame_id of the echo (the microphone frame)"),
    ParamSpec("replay_data_path", "", "replay backend: BV2-layout folder or rosbag ('' = bundled demo data)"),
    ParamSpec("replay_split", "test", "replay backend: CSV split of a BV2-layout folder"),
    ParamSpec("sim_wall_distances_m", [2.0, 4.5], "sim backend: wall distances from the speaker"),
    ParamSpec("sim_wall_azimuths_deg", [0.0, 70.0], "sim backend: azimuth of each wall normal (left +)"),
    ParamSpec("sim_wall_reflectivity", [0.8, 0.5], "sim backend: pressure reflection coefficient per wall"),
    ParamSpec("sim_motion_amplitude_m", 0.5, "sim backend: walls move by +- this", 0.0, 100.0),
    ParamSpec("sim_motion_period_s", 10.0, "sim backend: period of the wall motion", 0.1, 3600.0),
    ParamSpec("sim_noise_std", 0.001, "sim backend: white noise added to the recording", 0.0, 1.0),
    ParamSpec("retry_interval_s", 2.0, "reopen a failed backend after this long", 0.05, 600.0),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics", 0.05, 60.0),
)


def sweep_settings(v: dict) -> SweepSettings:
    """SweepSettings from the node parameters."""
    from avsnet_ros.audio import echo_window_samples

    return SweepSettings(sample_rate_hz=int(v["sample_rate_hz"]), duration_s=float(v["sweep_duration_s"]),
                         f0_hz=float(v["sweep_f0_hz"]), f1_hz=float(v["sweep_f1_hz"]),
                         method=v["sweep_method"], fade_s=float(v["sweep_fade_s"]), gain=float(v["gain"]),
                         period_s=float(v["period_s"]),
                         echo_samples=echo_window_samples(float(v["max_depth_m"]), int(v["sample_rate_hz"])))


def make_backend(v: dict) -> EchoBackend:
    """The backend the parameters ask for (not opened)."""
    settings = sweep_settings(v)
    settings.sweep()  # validates frequencies vs Nyquist, fades, duration: fail at configure
    if v["backend"] == "sounddevice":
        latency = v["stream_latency_s"] or "high"
        return SoundDeviceBackend(settings, input_device=v["input_device"], output_device=v["output_device"],
                                  input_channels=(v["input_channel_left"], v["input_channel_right"]),
                                  output_channels=v["output_channels"], stream_latency=latency,
                                  max_latency_s=v["max_latency_s"], min_onset_snr_db=v["min_onset_snr_db"])
    if v["backend"] == "replay":
        from avsnet_ros.data.sources import load_samples, resolve_data_path

        path = resolve_data_path(v["replay_data_path"])
        return ReplayBackend(settings, lambda: [(s.echo, s.sweep) for s in load_samples(path, v["replay_split"])],
                             description=str(path))
    distances, azimuths, refl = (list(v["sim_wall_distances_m"]), list(v["sim_wall_azimuths_deg"]),
                                 list(v["sim_wall_reflectivity"]))
    if not (len(distances) == len(azimuths) == len(refl)) or not distances:
        raise ValueError("sim_wall_distances_m, sim_wall_azimuths_deg and sim_wall_reflectivity need the same "
                         "non-zero length")
    walls = [WallReflector(float(d), float(a), float(r)) for d, a, r in zip(distances, azimuths, refl)]
    return SimBackend(settings, walls, motion_amplitude_m=v["sim_motion_amplitude_m"],
                      motion_period_s=v["sim_motion_period_s"], noise_std=v["sim_noise_std"])


class ChirpEmitter(ThreadedLifecycleNode):
    """Lifecycle node publishing /avsnet/echo from one backend (see module docstring)."""

    def __init__(self, node_name: str = "chirp_emitter", *,
                 backend_factory: Callable[[dict], EchoBackend] | None = None, **kwargs):
        """backend_factory: optional callable(params) -> EchoBackend (tests inject failing ones)."""
        super().__init__(node_name, **kwargs)
        self.values = declare_parameters(self, PARAMS)
        self._backend_factory = backend_factory or make_backend
        self.backend: EchoBackend | None = None
        self.startup_error: str | None = None
        self.last_error: str | None = None
        self.errors = DropCounter()
        self.drops = DropCounter()
        self._drops = self.drops
        self._published = 0
        self._rate = RateMeter()
        self._snr_db: deque[float] = deque(maxlen=20)
        self._latency_ms: deque[float] = deque(maxlen=20)
        self._residual_ms: deque[float] = deque(maxlen=20)
        self._publish_delay_ms: deque[float] = deque(maxlen=20)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failed = False
        self._echo_pub = None
        self._chirp_pub = None
        self._announced: Any = None  # the last avsnet/chirp text published (None: none yet)
        self._chirps = 0
        self._diag_timer = None
        if self.values["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                self.startup_error = self.startup_error or "chirp_emitter: configure failed"
            elif self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                self.startup_error = self.startup_error or "chirp_emitter: activate failed"

    # ------------------------------------------------------------------------------------------
    # lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Open the backend. FAILURE (stays unconfigured) with the reason in startup_error."""
        read_parameters(self, PARAMS, self.values)
        try:
            backend = self._backend_factory(self.values)
            backend.open()
        except (AudioDeviceError, ValueError, OSError) as exc:
            self.startup_error = f"chirp_emitter: cannot open the {self.values['backend']} backend: {exc}"
            self.get_logger().error(self.startup_error)
            return TransitionCallbackReturn.FAILURE
        self.startup_error = None
        self.backend = backend
        self._echo_pub = self.create_lifecycle_publisher(Image, "avsnet/echo", OUTPUT_QOS)
        self._chirp_pub = self.create_lifecycle_publisher(String, "avsnet/chirp", CHIRP_QOS)
        self._announced = None
        self._diag_timer = self.create_timer(self.values["diagnostics_period_s"], self._publish_diagnostics)
        v = self.values
        self.get_logger().info(f"configured {backend.describe()}: {v['sweep_method']} sweep {v['sweep_f0_hz']:g}-"
                               f"{v['sweep_f1_hz']:g} Hz, {1e3 * v['sweep_duration_s']:g} ms "
                               f"every {v['period_s']:g} s, "
                               f"{backend.settings.echo_samples} samples at {v['sample_rate_hz']} Hz")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.backend.start()
        except Exception as exc:  # noqa: BLE001
            self.startup_error = f"chirp_emitter: cannot start the backend: {exc}"
            self.get_logger().error(self.startup_error)
            return TransitionCallbackReturn.FAILURE
        ret = super().on_activate(state)
        # what the first echoes hold (late joiners get it); EchoBackend.sweep_description, else the settings'
        describe = getattr(self.backend, "sweep_description", None)
        self._announce(describe() if describe is not None else self.backend.settings.spec())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="chirp_emitter_audio", daemon=True)
        self._thread.start()
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_background()
        if self.backend is not None:
            self.backend.stop()
        return super().on_deactivate(state)

    def close(self) -> None:
        super().close()
        if self.backend is not None:
            self.backend.stop()
            self.backend.close()

    def _stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _release(self) -> None:
        if self.backend is not None:
            self.backend.stop()
            self.backend.close()
            self.backend = None
        if self._echo_pub is not None:
            self.destroy_lifecycle_publisher(self._echo_pub)
            self._echo_pub = None
        if self._chirp_pub is not None:
            self.destroy_lifecycle_publisher(self._chirp_pub)
            self._chirp_pub = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None

    # ------------------------------------------------------------------------------------------
    # audio thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                capture = self.backend.read(timeout_s=0.2)
            except Exception as exc:  # noqa: BLE001 - device lost: report, retry
                self._on_backend_failure(exc)
                continue
            if capture is None:
                continue
            try:
                self._publish(capture)
            except Exception as exc:  # noqa: BLE001
                self.drops.count("publish_exception", f"{type(exc).__name__}: {exc}")

    def _on_backend_failure(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.errors.count("backend_failure", self.last_error)
        self._failed = True
        self.get_logger().error(f"audio backend failed: {self.last_error}; retrying every "
                                f"{self.values['retry_interval_s']} s", throttle_duration_sec=10.0)
        self._publish_diagnostics()
        backend = self.backend
        try:
            backend.stop()
            backend.close()
        except Exception:  # noqa: BLE001
            pass
        while not self._stop.wait(self.values["retry_interval_s"]):
            try:
                backend.open()
                backend.start()
            except Exception as retry_exc:  # noqa: BLE001
                self.last_error = f"{type(retry_exc).__name__}: {retry_exc}"
                self.errors.count("reopen_failure", self.last_error)
                continue
            self._failed = False
            self.errors.count("recovered")
            self.get_logger().info(f"audio backend recovered: {backend.describe()}")
            return

    def _publish(self, capture) -> None:
        clock_now_ns = self.get_clock().now().nanoseconds
        if capture.emit_time_ns is not None:
            # backend times are on the wall clock; map them onto this node's clock (sim time aware)
            stamp_ns = clock_now_ns - (time.time_ns() - capture.emit_time_ns)
        else:
            stamp_ns = clock_now_ns
        msg = conv.echo_to_msg(capture.echo, max(stamp_ns, 0), self.values["frame_id"])
        self._announce(capture.sweep)  # before the first echo of another sweep (replayed data)
        self._echo_pub.publish(msg)
        with self._lock:
            self._published += 1
            self._rate.tick()
            if np.isfinite(capture.onset_snr_db):
                self._snr_db.append(capture.onset_snr_db)
            if np.isfinite(capture.capture_latency_s):
                self._latency_ms.append(1e3 * capture.capture_latency_s)
            if np.isfinite(capture.timing_residual_s):
                self._residual_ms.append(1e3 * capture.timing_residual_s)
            self._publish_delay_ms.append((clock_now_ns - stamp_ns) / 1e6)

    def _announce(self, sweep) -> None:
        """Publish avsnet/chirp when `sweep` (SweepSpec or None = not known) differs from the last one."""
        text = conv.chirp_text(sweep)
        if text == self._announced:
            return
        self._chirp_pub.publish(String(data=text))
        with self._lock:
            self._announced, self._chirps = text, self._chirps + 1
        self.get_logger().info(f"avsnet/chirp: {text}")

    # ------------------------------------------------------------------------------------------
    # diagnostics
    def stats(self) -> dict[str, Any]:
        """Counters and running means (tests, tools)."""
        backend_counters = dict(self.backend.counters) if self.backend is not None else {}

        def mean(values) -> float:
            return float(np.mean(values)) if values else float("nan")

        with self._lock:
            return {
                "published": self._published,
                "sweep_rate_hz": self._rate.rate_hz(),
                "onset_snr_db": mean(self._snr_db),
                "capture_latency_ms": mean(self._latency_ms),
                "timing_residual_ms": mean(self._residual_ms),
                "publish_delay_ms": mean(self._publish_delay_ms),
                "xruns": backend_counters.get("xruns", 0),
                "sweeps": backend_counters.get("sweeps", 0),
                "rejected_no_onset": backend_counters.get("rejected_no_onset", 0),
                "rejected_xrun": backend_counters.get("rejected_xrun", 0),
                "skipped_late": backend_counters.get("skipped_late", 0),
                "backend_failures": self.errors.get("backend_failure"),
                "recoveries": self.errors.get("recovered"),
                "chirp": self._announced or "",
                "chirps_published": self._chirps,
            }

    @guarded("drops", "diagnostics_exception")
    def _publish_diagnostics(self) -> None:
        state = self._state_machine.current_state[1]
        values = self.stats()
        values["state"] = state
        values["backend"] = self.backend.describe() if self.backend is not None else self.values["backend"]
        values.update({f"drop.{k}": n for k, n in self.drops.snapshot().items()})
        if self.last_error:
            values["last_error"] = self.last_error[:300]
        if self.startup_error:
            level, message = ERROR, self.startup_error
        elif self._failed:
            level, message = ERROR, f"audio backend failed, retrying: {self.last_error}"
        elif state != "active":
            level, message = WARN, state
        elif values["published"] == 0:
            level, message = WARN, "no echo published yet"
        else:
            level, message = OK, "emitting"
        self.publish_status("echoes", "avsnet_audio", level, message, values)


def main(args: list[str] | None = None) -> int:
    """Console script `chirp_emitter` (ros2 run avsnet_ros chirp_emitter)."""
    return run_node_main(lambda: ChirpEmitter(), args=args)


if __name__ == "__main__":
    raise SystemExit(main())
