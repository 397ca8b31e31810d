"""Echo sources for the chirp emitter (no ROS): real audio, recorded echoes, simulated echoes.

Every backend yields `EchoCapture`s whose buffer follows the echo contract (docs/ARCHITECTURE.md):
float32 (2, N) at sample_rate_hz, row 0 left, row 1 right, direct-path sweep onset at
ECHO_ONSET_SAMPLE.

- SoundDeviceBackend: ONE duplex PortAudio stream (sounddevice) kept open. The callback plays the
  sweep every period and writes the microphones into a ring buffer; `read()` finds the direct-path
  onset of each emitted sweep by matched filtering in a window after its output position (counted
  in samples), and cuts the buffer so that the onset lands at ECHO_ONSET_SAMPLE (this removes
  playback and capture latency). The stamp is PortAudio's ADC time of the onset (the DAC time of
  the sweep start, which misses unreported output latency, is kept as a diagnostic).
- ReplayBackend: echoes of recorded samples (BV2-layout folder or rosbag) at the sweep period, each
  with the sweep it was recorded with when the data describe it (Sample.sweep).
- SimBackend: first-order image-source echoes of planar walls for a scripted scene (see
  `simulate_wall_echo`): physically correct arrival times and 1/r spreading, no reverberation tail.

Times are nanoseconds on the wall clock (time.time_ns()); the node maps them to its ROS clock.
Every capture names the sweep it holds (EchoCapture.sweep, a frontend.SweepSpec; None = not known):
the emitter announces it on avsnet/chirp.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .align import ECHO_ONSET_SAMPLE, align_to_onset, echo_window_samples, find_onset
from .frontend import SweepSpec
from .io import AudioError
from .sweep import DEFAULT_SAMPLE_RATE_HZ, DEFAULT_SWEEP, SPEED_OF_SOUND_M_S, make_sweep

__all__ = [
    "AudioDeviceError",
    "SweepSettings",
    "EchoCapture",
    "EchoBackend",
    "SoundDeviceBackend",
    "ReplayBackend",
    "SimBackend",
    "WallReflector",
    "simulate_wall_echo",
    "list_audio_devices",
]



class AudioDeviceError(RuntimeError):
    """The audio device cannot be opened or has failed (message names the available devices)."""


@dataclass(frozen=True)
class SweepSettings:
    """What the emitter plays and publishes.

    period_s: time between sweep starts; echo_samples: published buffer length (samples, onset at
    ECHO_ONSET_SAMPLE); gain: sweep peak amplitude (full scale 1.0).
    """

    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ
    duration_s: float = DEFAULT_SWEEP["duration_s"]
    f0_hz: float = DEFAULT_SWEEP["f0_hz"]
    f1_hz: float = DEFAULT_SWEEP["f1_hz"]
    method: str = DEFAULT_SWEEP["method"]
    fade_s: float = DEFAULT_SWEEP.get("fade_s", 0.002)
    gain: float = 0.5
    period_s: float = 0.25
    echo_samples: int = echo_window_samples(30.0)

    def sweep(self) -> np.ndarray:
        """The unit-amplitude sweep (samples,) float32: the matched-filter template."""
        return make_sweep(duration_s=self.duration_s, sample_rate_hz=self.sample_rate_hz, f0_hz=self.f0_hz,
                          f1_hz=self.f1_hz, method=self.method, fade_s=self.fade_s)

    def spec(self) -> SweepSpec:
        """The sweep's description (what avsnet/chirp announces; the gain is not part of it)."""
        return SweepSpec(duration_s=float(self.duration_s), f0_hz=float(self.f0_hz), f1_hz=float(self.f1_hz),
                         method=str(self.method), fade_s=float(self.fade_s), sample_rate_hz=int(self.sample_rate_hz))

    @property
    def period_samples(self) -> int:
        return int(round(self.period_s * self.sample_rate_hz))


@dataclass
class EchoCapture:
    """One echo buffer.

    echo: (2, echo_samples) float32, onset at ECHO_ONSET_SAMPLE.
    emit_time_ns: wall-clock time the sweep's first sample left the speaker (sounddevice: the ADC
        time of its direct-path onset at the microphones, from PortAudio's stream times), or None
        when the source has no clock of its own (the node stamps it on publication).
    onset_snr_db: matched-filter SNR of the direct path (NaN when not measured).
    capture_latency_s: playback -> capture delay of the direct path measured in samples (output
        sample of the sweep start -> input sample of its onset), NaN when not measured.
    timing_residual_s: onset position minus the position PortAudio's DAC/ADC times predict for
        the sweep (output latency the host API does not report), NaN when not measured.
    sweep: the sweep this echo was recorded with (played, or a replayed sample's description); None
        when not known.
    """

    echo: np.ndarray
    emit_time_ns: int | None
    onset_snr_db: float = float("nan")
    capture_latency_s: float = float("nan")
    timing_residual_s: float = float("nan")
    sweep_index: int = 0
    source: str = ""
    sweep: "SweepSpec | None" = None


class EchoBackend:
    """Interface: open() (may raise AudioDeviceError), start(), read(timeout_s), stop(), close()."""

    name = "base"

    def __init__(self, settings: SweepSettings):
        self.settings = settings
        self.counters: dict[str, int] = {"sweeps": 0, "xruns": 0, "rejected_no_onset": 0,
                                         "skipped_late": 0, "rejected_xrun": 0}

    def open(self) -> None:
        """Acquire the device/data (configure time). Raises AudioDeviceError with a clear message."""

    def start(self) -> None:
        """Start emitting (activate time)."""

    def read(self, timeout_s: float) -> EchoCapture | None:
        """Next echo, or None when none was ready within timeout_s. Raises on device failure."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop emitting; open() state is kept."""

    def close(self) -> None:
        """Release everything (idempotent)."""

    def describe(self) -> str:
        return self.name

    def sweep_description(self) -> "SweepSpec | None":
        """The sweep the first echoes will hold (after open()): what it plays; None = not known."""
        return self.settings.spec()


# --------------------------------------------------------------------------------------------
# sounddevice
def _import_sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # the PortAudio shared library is missing
        raise AudioDeviceError(
            f"PortAudio is not installed ({exc}); install it with `sudo apt-get install libportaudio2`"
        ) from None
    return sd


def list_audio_devices(refresh: bool = False) -> list[dict]:
    """PortAudio devices as dicts (index, name, max_input_channels, max_output_channels).

    refresh=True re-initialises PortAudio first, so devices (or a sound server) that appeared after
    `import sounddevice` are listed; only do that while no stream of this process is open.
    """
    sd = _import_sounddevice()
    try:
        if refresh:
            sd._terminate()
            sd._initialize()
        devices = sd.query_devices()
    except Exception as exc:  # noqa: BLE001 - PortAudio errors have several types
        raise AudioDeviceError(f"cannot query audio devices: {exc}") from None
    return [dict(index=i, name=d["name"], max_input_channels=int(d["max_input_channels"]),
                 max_output_channels=int(d["max_output_channels"])) for i, d in enumerate(devices)]


def format_devices(devices: Sequence[dict]) -> str:
    if not devices:
        return ("none (PortAudio lists no device: no sound card and no sound server; for a "
                "loopback without hardware start a PulseAudio null sink, see README)")
    return "; ".join(f"[{d['index']}] '{d['name']}' ({d['max_input_channels']} in, "
                     f"{d['max_output_channels']} out)" for d in devices)


def resolve_device(spec: str, kind: str, channels: int, devices: Sequence[dict]) -> int | None:
    """Device index for `spec` ('' = PortAudio default, an index, or a case-insensitive substring
    of the name; an exact name match wins). Raises AudioDeviceError naming the available devices."""
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    spec = str(spec).strip()
    if not devices:
        raise AudioDeviceError(f"no {kind} device {spec or '(default)'!r}: available devices: "
                               f"{format_devices(devices)}")
    if spec == "":
        return None
    candidates: list[dict]
    if spec.lstrip("-").isdigit():
        index = int(spec)
        candidates = [d for d in devices if d["index"] == index]
    else:
        exact = [d for d in devices if d["name"].lower() == spec.lower()]
        candidates = exact or [d for d in devices if spec.lower() in d["name"].lower()]
    candidates = [d for d in candidates if d[key] >= channels]
    if not candidates:
        raise AudioDeviceError(f"{kind} device {spec!r} with >= {channels} {kind} channels not found; "
                               f"available devices: {format_devices(devices)}")
    return int(candidates[0]["index"])


class _Ring:
    """Single-writer ring buffer of (channels, capacity) float32 indexed by absolute sample number."""

    def __init__(self, channels: int, capacity: int):
        self.capacity = int(capacity)
        self.data = np.zeros((channels, self.capacity), dtype=np.float32)
        self.end = 0  # absolute index one past the last written sample

    def write(self, block: np.ndarray) -> None:
        """block: (channels, n)."""
        n = block.shape[1]
        if n >= self.capacity:
            block = block[:, -self.capacity:]
            n = self.capacity
        start = self.end % self.capacity
        first = min(n, self.capacity - start)
        self.data[:, start:start + first] = block[:, :first]
        if first < n:
            self.data[:, : n - first] = block[:, first:]
        self.end += block.shape[1]

    def read(self, begin: int, length: int) -> np.ndarray:
        """Copy of samples [begin, begin + length) (must still be in the buffer)."""
        if begin < self.end - self.capacity or begin + length > self.end:
            raise IndexError("ring buffer range no longer/not yet available")
        idx = (np.arange(begin, begin + length) % self.capacity)
        return self.data[:, idx]


@dataclass
class _Block:
    start: int  # absolute sample index of the block's first frame (input == output in duplex)
    frames: int
    dac_ns: int  # wall time the block's first output frame reaches the DAC
    adc_ns: int  # wall time the block's first input frame was captured at the ADC
    xrun: bool = False  # the host API reported an input overflow / output underflow with this block


class SoundDeviceBackend(EchoBackend):
    """One duplex sounddevice stream: plays the sweep every period, records both microphones.

    input_device/output_device: '' (default), an index or a name substring. input_channels: the
    two device input channels (0-based) that are left and right. max_latency_s: largest playback
    -> capture latency searched for the direct path, counted in samples from the sweep's output
    position (must stay below the period); min_onset_snr_db: sweeps whose direct path is weaker
    or missing are rejected (counted), e.g. the first sweeps while the stream starts.
    """

    name = "sounddevice"

    def __init__(self, settings: SweepSettings, input_device: str = "", output_device: str = "",
                 input_channels: tuple[int, int] = (0, 1), output_channels: int = 2,
                 stream_latency: str | float = "high", max_latency_s: float = 0.15,
                 min_onset_snr_db: float = 12.0, blocksize: int = 0):
        super().__init__(settings)
        self.input_device = input_device
        self.output_device = output_device
        self.input_channels = tuple(int(c) for c in input_channels)
        self.output_channels = int(output_channels)
        self.stream_latency = stream_latency
        self.max_latency_s = float(max_latency_s)
        self.min_onset_snr_db = float(min_onset_snr_db)
        self.blocksize = int(blocksize)
        self._stream = None
        self._sweep = settings.sweep()
        self._spec = settings.spec()
        self._sweep_out = (self._sweep * np.float32(settings.gain)).astype(np.float32)
        self._period = settings.period_samples
        if self._period < len(self._sweep) + 1:
            raise ValueError(f"period {settings.period_s} s is shorter than the sweep")
        # the onset search window (latency range + sweep) must stay shorter than the period
        longest = (self._period - 2 * len(self._sweep) - ECHO_ONSET_SAMPLE) / settings.sample_rate_hz
        if self.max_latency_s > longest:
            raise ValueError(f"max_latency_s {self.max_latency_s} s must be below {longest:.3f} s for a "
                             f"{settings.period_s} s period (the search would reach the next sweep)")
        self._lock = threading.Condition()
        self._ring: _Ring | None = None
        self._blocks: deque[_Block] = deque(maxlen=4096)
        self._pos = 0
        self._next_sweep = 0
        self._pending: dict | None = None
        self._last_callback = 0.0  # time.monotonic() of the last audio callback
        self.stall_timeout_s = 2.0
        self._device_desc = ""

    # -- lifecycle
    def open(self) -> None:
        """Resolve the devices and open (not start) the duplex stream; on failure rescan the
        devices once (PortAudio lists them once per initialisation) and retry."""
        self.close()
        try:
            self._open_once(refresh=False)
        except AudioDeviceError:
            self._open_once(refresh=True)

    def _open_once(self, refresh: bool) -> None:
        sd = _import_sounddevice()
        n_in = max(self.input_channels) + 1
        devices = list_audio_devices(refresh=refresh)
        in_idx = resolve_device(self.input_device, "input", n_in, devices)
        out_idx = resolve_device(self.output_device, "output", self.output_channels, devices)
        if in_idx is None or out_idx is None:
            default_in, default_out = (d if d is not None and d >= 0 else None for d in sd.default.device)
            in_idx = in_idx if in_idx is not None else default_in
            out_idx = out_idx if out_idx is not None else default_out
            if in_idx is None or out_idx is None:
                raise AudioDeviceError("no default audio device; available devices: " + format_devices(devices))
        rate = self.settings.sample_rate_hz
        try:
            sd.check_input_settings(device=in_idx, channels=n_in, dtype="float32", samplerate=rate)
            sd.check_output_settings(device=out_idx, channels=self.output_channels, dtype="float32",
                                     samplerate=rate)
        except Exception as exc:  # noqa: BLE001 - PortAudioError or ValueError
            raise AudioDeviceError(f"audio device {in_idx}/{out_idx} cannot do {rate} Hz float32 "
                                   f"({n_in} in, {self.output_channels} out): {exc}; available devices: "
                                   f"{format_devices(devices)}") from None
        ring_samples = int(max(4.0, 8 * self.settings.period_s) * rate)
        self._ring = _Ring(2, ring_samples)
        try:
            self._stream = sd.Stream(samplerate=rate, blocksize=self.blocksize, device=(in_idx, out_idx),
                                     channels=(n_in, self.output_channels), dtype="float32",
                                     latency=self.stream_latency, callback=self._callback)
        except Exception as exc:  # noqa: BLE001
            raise AudioDeviceError(f"cannot open duplex stream on devices {in_idx}/{out_idx}: {exc}; "
                                   f"available devices: {format_devices(devices)}") from None
        names = {d["index"]: d["name"] for d in devices}
        self._device_desc = (f"in [{in_idx}] '{names.get(in_idx)}', out [{out_idx}] '{names.get(out_idx)}', "
                             f"latency {self._stream.latency}")

    def describe(self) -> str:
        return f"sounddevice ({self._device_desc})"

    def start(self) -> None:
        if self._stream is None:
            raise AudioDeviceError("start() before open()")
        with self._lock:
            self._pos = 0
            self._next_sweep = 0
            self._blocks.clear()
            self._pending = None
            self._last_callback = time.monotonic()
            self._ring.end = 0
        self._stream.start()

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
            except Exception:  # noqa: BLE001 - a vanished device may fail to stop
                pass

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close(ignore_errors=True)
            except Exception:  # noqa: BLE001
                pass
            self._stream = None

    # -- realtime side
    def _callback(self, indata, outdata, frames, time_info, status) -> None:
        wall_ns = time.time_ns()
        pos = self._pos
        phase = (np.arange(pos, pos + frames) % self._period)
        playing = phase < self._sweep_out.shape[0]
        outdata.fill(0.0)
        if playing.any():
            outdata[playing, :] = self._sweep_out[phase[playing]][:, None]
        current = time_info.currentTime
        dac, adc = time_info.outputBufferDacTime, time_info.inputBufferAdcTime
        if current and dac and adc:  # some host APIs report 0: then assume no buffering delay
            dac_ns = wall_ns + int((dac - current) * 1e9)
            adc_ns = wall_ns + int((adc - current) * 1e9)
        else:
            dac_ns = adc_ns = wall_ns
        block = np.ascontiguousarray(indata[:, list(self.input_channels)].T)
        xrun = bool(status.input_overflow or status.output_underflow)
        with self._lock:
            self._last_callback = time.monotonic()
            self._ring.write(block)
            self._blocks.append(_Block(pos, frames, dac_ns, adc_ns, xrun))
            if xrun:
                self.counters["xruns"] += 1
            self._pos = pos + frames
            self._lock.notify_all()

    # -- consumer side
    def _xrun_within(self, begin: int, end: int) -> bool:
        """Whether a block reported with an xrun overlaps samples [begin, end) (the block's input may have
        lost samples, or the sweep played with a gap)."""
        for blk in reversed(self._blocks):  # blocks in sample order: stop at the first one before `begin`
            if blk.start + blk.frames <= begin:
                return False
            if blk.xrun and blk.start < end:
                return True
        return False

    def _block_of(self, sample: int) -> _Block | None:
        for blk in reversed(self._blocks):
            if blk.start <= sample:
                return blk
        return None

    def _wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait (holding self._lock) until predicate() or the deadline; False on timeout."""
        while not predicate():
            if self._stream is None:
                raise AudioDeviceError("audio stream closed")
            if not self._stream.active and self._pos > 0:
                raise AudioDeviceError("audio stream stopped unexpectedly (device lost?)")
            if time.monotonic() - self._last_callback > self.stall_timeout_s:
                raise AudioDeviceError(f"no audio callback for {self.stall_timeout_s} s (device lost?)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._lock.wait(timeout=min(remaining, 0.05))
        return True

    def read(self, timeout_s: float) -> EchoCapture | None:
        """Next aligned echo. Two waits: the direct path is searched as soon as the search window
        is recorded, then the buffer is cut when onset + echo_samples are in (so publication lags
        the emission by about the latency plus the echo window, not more)."""
        if self._stream is None:
            raise AudioDeviceError("read() on a closed stream")
        fs = self.settings.sample_rate_hz
        sweep_len = self._sweep.shape[0]
        pre = ECHO_ONSET_SAMPLE + 16  # pre-roll for the aligned buffer (+ a margin for find_onset)
        search = pre + int(self.max_latency_s * fs)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            pending = self._pending
            if pending is None:
                k = self._next_sweep
                out_start = k * self._period
                if not self._wait(lambda: self._pos > out_start, deadline):
                    return None
                blk = self._block_of(out_start)
                if blk is None:  # history trimmed: we fell far behind
                    self._next_sweep += 1
                    self.counters["skipped_late"] += 1
                    return None
                emit_ns = blk.dac_ns + int((out_start - blk.start) * 1e9 / fs)
                # where PortAudio's DAC/ADC times put the sweep in the input (diagnostic only)
                predicted = out_start + int(round((blk.dac_ns - blk.adc_ns) * fs / 1e9))
                # search on the sample counter (duplex: input and output counters advance
                # together): a window shorter than the period cannot pick another sweep, even
                # when the host API's times jump (PulseAudio at stream start does)
                seg_begin = out_start - pre
                if seg_begin < max(0, self._ring.end - self._ring.capacity):
                    self._next_sweep += 1  # no pre-roll recorded (stream start) or overwritten
                    self.counters["skipped_late"] += 1
                    return None
                if not self._wait(lambda: self._ring.end >= seg_begin + search + sweep_len, deadline):
                    return None
                segment = self._ring.read(seg_begin, search + sweep_len - 1)
                self._next_sweep += 1
                self.counters["sweeps"] += 1
                try:
                    onset = find_onset(segment, self._sweep, search_samples=search)
                except AudioError:
                    self.counters["rejected_no_onset"] += 1
                    return None
                if onset.snr_db < self.min_onset_snr_db or onset.onset_sample < ECHO_ONSET_SAMPLE:
                    self.counters["rejected_no_onset"] += 1
                    return None
                onset_abs = seg_begin + onset.onset_sample
                onset_blk = self._block_of(onset_abs)
                if onset_blk is not None:
                    # stamp = ADC time of the direct-path onset: the sound left the speaker a few
                    # cm (< 0.5 ms) earlier, and unlike the DAC time it includes any output
                    # latency the host API does not report
                    emit_ns = onset_blk.adc_ns + int((onset_abs - onset_blk.start) * 1e9 / fs)
                pending = dict(k=k, out_start=out_start, emit_ns=emit_ns, predicted=predicted,
                               seg_begin=seg_begin, onset_abs=seg_begin + onset.onset_sample,
                               snr_db=onset.snr_db)
                self._pending = pending
            begin = pending["onset_abs"] - ECHO_ONSET_SAMPLE
            if not self._wait(lambda: self._ring.end >= begin + self.settings.echo_samples, deadline):
                return None
            self._pending = None
            if pending["seg_begin"] < self._ring.end - self._ring.capacity:
                self.counters["skipped_late"] += 1
                return None
            seg_begin = pending["seg_begin"]
            if self._xrun_within(seg_begin, begin + self.settings.echo_samples):
                # an echo recorded across an xrun holds a gap or a broken sweep: dropped and counted, not published
                self.counters["rejected_xrun"] += 1
                return None
            recording = self._ring.read(seg_begin, begin + self.settings.echo_samples - seg_begin)
        onset_abs = pending["onset_abs"]
        echo = align_to_onset(recording, onset_abs - seg_begin, self.settings.echo_samples)
        return EchoCapture(echo=echo, emit_time_ns=pending["emit_ns"], onset_snr_db=pending["snr_db"],
                           capture_latency_s=(onset_abs - pending["out_start"]) / fs,
                           timing_residual_s=(onset_abs - pending["predicted"]) / fs,
                           sweep_index=pending["k"], source=self._device_desc, sweep=self._spec)


# --------------------------------------------------------------------------------------------
# paced backends (replay, sim)
class _PacedBackend(EchoBackend):
    """Yields one echo per period on the wall clock."""

    def __init__(self, settings: SweepSettings):
        super().__init__(settings)
        self._next_t = 0.0
        self._k = 0
        self._running = False

    def start(self) -> None:
        self._next_t = time.monotonic()
        self._k = 0
        self._running = True

    def stop(self) -> None:
        self._running = False

    def read(self, timeout_s: float) -> EchoCapture | None:
        if not self._running:
            raise AudioDeviceError(f"{self.name} backend read() before start()")
        wait = self._next_t - time.monotonic()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        self._next_t += self.settings.period_s
        if self._next_t < time.monotonic() - self.settings.period_s:  # fell behind: do not burst
            self.counters["skipped_late"] += 1
            self._next_t = time.monotonic() + self.settings.period_s
        emit_ns = time.time_ns()
        capture = self._make(self._k, emit_ns)
        self._k += 1
        self.counters["sweeps"] += 1
        return capture

    def _make(self, k: int, emit_ns: int) -> EchoCapture:
        raise NotImplementedError


class ReplayBackend(_PacedBackend):
    """Recorded echo buffers (e.g. Sample.echo of a BV2-layout folder or a bag), looped.

    `load` is called at open() and returns a list of (2, N) float32 buffers already in the echo
    layout (BatVision files are), or of (buffer, SweepSpec or None) pairs: the sweep each was
    recorded with (Sample.sweep; a bare buffer's is not known). The settings' sweep is not played
    and not announced. Emission time = the time of publication.
    """

    name = "replay"

    def __init__(self, settings: SweepSettings, load: Callable[[], list], description: str = ""):
        super().__init__(settings)
        self._load = load
        self._echoes: list[np.ndarray] = []
        self._sweeps: "list[SweepSpec | None]" = []
        self._description = description

    def open(self) -> None:
        try:
            echoes = self._load()
        except Exception as exc:  # noqa: BLE001 - dataset errors name their file
            raise AudioDeviceError(f"replay backend cannot load echoes from {self._description}: {exc}") from None
        if not echoes:
            raise AudioDeviceError(f"replay backend: no echoes in {self._description}")
        items = [e if isinstance(e, tuple) else (e, None) for e in echoes]
        self._echoes = [np.ascontiguousarray(e, dtype=np.float32) for e, _ in items]
        self._sweeps = [sweep for _, sweep in items]

    def describe(self) -> str:
        return f"replay ({len(self._echoes)} echoes from {self._description})"

    def _make(self, k: int, emit_ns: int) -> EchoCapture:
        return EchoCapture(echo=self._echoes[k % len(self._echoes)], emit_time_ns=emit_ns,
                           sweep_index=k, source=self._description, sweep=self._sweeps[k % len(self._sweeps)])

    def sweep_description(self) -> "SweepSpec | None":
        return self._sweeps[0] if self._sweeps else None


@dataclass(frozen=True)
class WallReflector:
    """A planar wall: perpendicular distance from the speaker (m), azimuth of its normal (deg,
    positive = to the left, 0 = straight ahead) and pressure reflection coefficient (0..1)."""

    distance_m: float
    azimuth_deg: float = 0.0
    reflectivity: float = 0.7


def _fractional_delay_sum(sweep: np.ndarray, delays_samples: Sequence[float], gains: Sequence[float],
                          length: int) -> np.ndarray:
    """sum_i gains[i] * sweep delayed by delays_samples[i] (band-limited, via an FFT phase ramp),
    (length,) float64. Delays must lie in [0, length)."""
    n_fft = 1 << int(math.ceil(math.log2(length + sweep.shape[0] + 1)))
    spec = np.fft.rfft(sweep.astype(np.float64), n_fft)
    freqs = np.arange(spec.shape[0]) / n_fft
    transfer = np.zeros_like(spec)
    for delay, gain in zip(delays_samples, gains):
        transfer += gain * np.exp(-2j * np.pi * freqs * delay)
    return np.fft.irfft(spec * transfer, n_fft)[:length]


def simulate_wall_echo(sweep: np.ndarray, walls: Sequence[WallReflector], sample_rate_hz: int, length: int,
                       mic_spacing_m: float = 0.2, speaker_forward_m: float = 0.02,
                       onset_at: int = ECHO_ONSET_SAMPLE, noise_std: float = 0.0,
                       rng: np.random.Generator | None = None,
                       speed_of_sound_m_s: float = SPEED_OF_SOUND_M_S) -> np.ndarray:
    """First-order image-source echoes of planar walls at two microphones -> (2, length) float32.

    Geometry (plan view, metres): speaker at (speaker_forward_m, 0) (x forward, y left, REP 103),
    microphones at (0, +spacing/2) (left, row 0) and (0, -spacing/2) (right, row 1). A wall with
    normal n = (cos az, sin az) at perpendicular distance d from the speaker mirrors the speaker to
    s' = s + 2 d n; its echo reaches a microphone m after |s' - m| / c with pressure gain
    reflectivity * r0 / |s' - m| (spherical spreading relative to the direct path r0 = |s - m|,
    whose gain is 1). The buffer is cut so that the direct-path arrival lands at `onset_at`
    (the echo contract), arrivals are band-limited fractional delays, and white noise of
    `noise_std` is added.
    """
    c = float(speed_of_sound_m_s)
    speaker = np.array([speaker_forward_m, 0.0])
    mics = np.array([[0.0, mic_spacing_m / 2.0], [0.0, -mic_spacing_m / 2.0]])
    out = np.zeros((2, length), dtype=np.float64)
    for ch, mic in enumerate(mics):
        r0 = float(np.linalg.norm(speaker - mic))
        delays, gains = [float(onset_at)], [1.0]
        for wall in walls:
            az = math.radians(wall.azimuth_deg)
            image = speaker + 2.0 * wall.distance_m * np.array([math.cos(az), math.sin(az)])
            r = float(np.linalg.norm(image - mic))
            delay = onset_at + (r - r0) / c * sample_rate_hz
            if delay < length:
                delays.append(delay)
                gains.append(wall.reflectivity * r0 / r)
        out[ch] = _fractional_delay_sum(sweep, delays, gains, length)
    if noise_std > 0:
        rng = rng if rng is not None else np.random.default_rng()
        out += rng.normal(0.0, noise_std, size=out.shape)
    return out.astype(np.float32)


class SimBackend(_PacedBackend):
    """Simulated echoes of a scripted scene: walls whose distance oscillates in time.

    Wall i sits at walls[i].distance_m + motion_amplitude_m * sin(2 pi t / motion_period_s)
    (t = time since start), so the echo-derived scale changes as a moving robot's would.
    The sweep amplitude is `settings.gain`.
    """

    name = "sim"

    def __init__(self, settings: SweepSettings, walls: Sequence[WallReflector],
                 motion_amplitude_m: float = 0.0, motion_period_s: float = 10.0, noise_std: float = 1e-3,
                 seed: int = 0):
        super().__init__(settings)
        self.walls = list(walls)
        self.motion_amplitude_m = float(motion_amplitude_m)
        self.motion_period_s = float(motion_period_s)
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self._sweep = settings.sweep() * np.float32(settings.gain)
        self._spec = settings.spec()
        self._t0 = 0.0

    def start(self) -> None:
        super().start()
        self._t0 = time.monotonic()

    def walls_at(self, t_s: float) -> list[WallReflector]:
        offset = self.motion_amplitude_m * math.sin(2.0 * math.pi * t_s / self.motion_period_s)
        return [WallReflector(max(w.distance_m + offset, 0.05), w.azimuth_deg, w.reflectivity) for w in self.walls]

    def describe(self) -> str:
        return "sim (" + ", ".join(f"wall {w.distance_m:.2f} m at {w.azimuth_deg:.0f} deg" for w in self.walls) + ")"

    def _make(self, k: int, emit_ns: int) -> EchoCapture:
        walls = self.walls_at(time.monotonic() - self._t0)
        echo = simulate_wall_echo(self._sweep, walls, self.settings.sample_rate_hz, self.settings.echo_samples,
                                  noise_std=self.noise_std, rng=self._rng)
        return EchoCapture(echo=echo, emit_time_ns=emit_ns, sweep_index=k, source=self.describe(),
                           sweep=self._spec)

