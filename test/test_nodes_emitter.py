"""chirp_emitter: simulated echoes (geometry by hand), real audio through a PulseAudio null sink,
missing device at configure, device failure and recovery. Real rclpy, in-process and as a process."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import scipy.signal

from ros_support import Harness, stop_nodes, wait_for

pytestmark = pytest.mark.ros

FS = 44100
ONSET = 288  # the echo contract; asserted independently of avsnet_ros.audio.ECHO_ONSET_SAMPLE


def reference_sweep(duration_s, f0_hz, f1_hz, fs=FS):
    """The emitted sweep without fades, from scipy (independent of avsnet_ros.audio.sweep)."""
    t = np.arange(int(round(duration_s * fs))) / fs
    return scipy.signal.chirp(t, f0_hz, duration_s, f1_hz, method="linear")


def direct_path_onset(echo, sweep):
    """Lag of the first matched-filter envelope peak reaching half the maximum (scipy correlate +
    hilbert), summed over both channels."""
    corr = sum(scipy.signal.correlate(ch.astype(np.float64), sweep, mode="valid") for ch in echo)
    env = np.abs(scipy.signal.hilbert(corr))
    k = int(np.argmax(env >= 0.5 * env.max()))
    while k + 1 < env.size and env[k + 1] >= env[k]:
        k += 1
    return k


def _params(**values):
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in values.items()]


def _echo_array(msg):
    return np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)


# --------------------------------------------------------------------------------------------
def test_simulated_wall_echo_arrives_where_geometry_says():
    """One wall 3 m ahead: the reflection lags the direct path by (|s' - m| - |s - m|) / 343 s."""
    from avsnet_ros.audio import DEFAULT_SWEEP, make_sweep
    from avsnet_ros.audio.backends import WallReflector, simulate_wall_echo

    sweep = make_sweep(**DEFAULT_SWEEP)
    echo = simulate_wall_echo(sweep, [WallReflector(3.0, 0.0, 0.9)], FS, 7782, mic_spacing_m=0.2,
                              speaker_forward_m=0.02)
    assert echo.shape == (2, 7782) and echo.dtype == np.float32
    ref = reference_sweep(DEFAULT_SWEEP["duration_s"], DEFAULT_SWEEP["f0_hz"], DEFAULT_SWEEP["f1_hz"])
    # by hand: speaker (0.02, 0), mic (0, 0.1); image of the speaker across x = 3.02 is (6.02, 0)
    r_direct = math.hypot(0.02, 0.1)
    r_echo = math.hypot(6.02, 0.1)
    lag = (r_echo - r_direct) / 343.0 * FS
    for ch in echo:
        corr = np.abs(scipy.signal.hilbert(scipy.signal.correlate(ch.astype(np.float64), ref, mode="valid")))
        assert abs(int(np.argmax(corr[:400])) - ONSET) <= 1
        window = slice(ONSET + 200, None)
        assert abs(ONSET + 200 + int(np.argmax(corr[window])) - (ONSET + lag)) <= 1.5
        # 1/r spreading: echo / direct amplitude = 0.9 * r_direct / r_echo
        ratio = corr[window].max() / corr[:400].max()
        assert ratio == pytest.approx(0.9 * r_direct / r_echo, rel=0.05)


def test_sim_backend_publishes_aligned_echoes(ros):
    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter
    from avsnet_ros.nodes.conversions import stamp_to_ns

    context, executor = ros
    node = ChirpEmitter(context=context, parameter_overrides=_params(backend="sim", period_s=0.1,
                                                                    diagnostics_period_s=0.2))
    assert node.startup_error is None, node.startup_error
    executor.add_node(node)
    harness = Harness(context, executor, name="emitter_probe")
    harness.listen("echo", __import__("sensor_msgs.msg", fromlist=["Image"]).Image, "/avsnet/echo")
    try:
        assert wait_for(lambda: harness.count("echo") >= 4, 10.0)
        msgs = harness.messages("echo")
        stamps = [stamp_to_ns(m.header.stamp) for m in msgs]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        assert abs(harness.now_ns() - stamps[-1]) < 2e9
        v = node.values
        ref = reference_sweep(v["sweep_duration_s"], v["sweep_f0_hz"], v["sweep_f1_hz"])
        for m in msgs:
            assert m.encoding == "32FC1" and m.height == 2 and m.width == 7782 and m.step == 4 * 7782
            assert m.header.frame_id == "microphones"
            assert abs(direct_path_onset(_echo_array(m), ref) - ONSET) <= 2
        assert wait_for(lambda: any(s.name.endswith("echoes") for _, d in harness.received["diagnostics"]
                                    for s in d.status), 5.0)
    finally:
        stop_nodes(executor, node, harness.node)


def test_replay_backend_publishes_recorded_echoes(ros, bv2_tree):
    """backend replay: the echo buffers of a BV2-layout folder (the real fixture), unchanged."""
    from sensor_msgs.msg import Image

    from avsnet_ros.audio import read_wav
    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter

    context, executor = ros
    node = ChirpEmitter("emitter_replay", context=context, parameter_overrides=_params(
        backend="replay", replay_data_path=str(bv2_tree), period_s=0.05))
    assert node.startup_error is None, node.startup_error
    executor.add_node(node)
    harness = Harness(context, executor, name="replay_backend_probe")
    harness.listen("echo", Image, "/avsnet/echo")
    try:
        assert wait_for(lambda: harness.count("echo") >= 2, 10.0)
        expected, _ = read_wav(bv2_tree / "fixture_location" / "audio" / "audio_47.wav")
        np.testing.assert_array_equal(_echo_array(harness.messages("echo")[0]), expected)
    finally:
        for n in (node, harness.node):
            executor.remove_node(n)
        node.close()
        node.destroy_node()
        harness.node.destroy_node()


def test_missing_device_fails_at_configure_naming_devices(ros):
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn

    from avsnet_ros.audio.backends import list_audio_devices
    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter

    context, _ = ros
    node = ChirpEmitter("emitter_missing", context=context, parameter_overrides=_params(
        backend="sounddevice", input_device="no_such_device_xyz", autostart=False))
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        message = node.startup_error
        assert "no_such_device_xyz" in message and "available devices" in message
        for device in list_audio_devices():
            assert device["name"] in message
    finally:
        node.destroy_node()


def test_no_audio_device_process_exits_with_clear_message(tmp_path):
    """As a separate process with no sound server reachable: PortAudio lists no device (or only
    ones that cannot open); the console script exits 1 and says which devices exist."""
    env = dict(os.environ)
    env.update(XDG_RUNTIME_DIR=str(tmp_path), PULSE_SERVER="unix:/nonexistent/pulse", HOME=str(tmp_path))
    exe = os.path.join(os.path.dirname(sys.executable), "chirp_emitter")
    proc = subprocess.run([exe, "--ros-args", "-p", "backend:=sounddevice", "-p", "input_device:=pulse"],
                          env=env, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "available devices" in output and "cannot open the sounddevice backend" in output


class FlakyBackend:
    """Wraps a SimBackend: read() raises after `fail_after` echoes (device unplugged); the next
    `failed_reopens` open() calls fail, then it works again."""

    def __init__(self, inner, fail_after=3, failed_reopens=2):
        self.inner = inner
        self.settings = inner.settings
        self.counters = inner.counters
        self.reads = 0
        self.fail_after = fail_after
        self.failed_reopens = failed_reopens
        self.opens = 0
        self.broken = False

    def open(self):
        self.opens += 1
        if self.opens > 1 and self.failed_reopens > 0:
            self.failed_reopens -= 1
            from avsnet_ros.audio.backends import AudioDeviceError

            raise AudioDeviceError("simulated: device still missing")
        self.broken = False
        self.inner.open()

    def start(self):
        self.inner.start()

    def stop(self):
        self.inner.stop()

    def close(self):
        self.inner.close()

    def describe(self):
        return "flaky " + self.inner.describe()

    def read(self, timeout_s):
        if self.reads >= self.fail_after and not self.broken and self.opens == 1:
            self.broken = True
            from avsnet_ros.audio.backends import AudioDeviceError

            raise AudioDeviceError("simulated: device disappeared")
        capture = self.inner.read(timeout_s)
        if capture is not None:
            self.reads += 1
        return capture


def test_device_failure_reports_error_and_recovers(ros):
    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter, make_backend
    from sensor_msgs.msg import Image

    context, executor = ros
    holder = {}

    def factory(values):
        holder["backend"] = FlakyBackend(make_backend({**values, "backend": "sim"}))
        return holder["backend"]

    node = ChirpEmitter("emitter_flaky", context=context, backend_factory=factory, parameter_overrides=_params(
        backend="sim", period_s=0.05, retry_interval_s=0.1, diagnostics_period_s=0.1))
    executor.add_node(node)
    harness = Harness(context, executor, name="flaky_probe")
    harness.listen("echo", Image, "/avsnet/echo")
    try:
        def levels():
            out = []
            for _, arr in harness.received["diagnostics"]:
                for s in arr.status:
                    if s.name.startswith("emitter_flaky"):
                        out.append((s.level, s.message))
            return out

        assert wait_for(lambda: any(lv == b"\x02" and "failed" in msg for lv, msg in levels()), 10.0), levels()
        assert wait_for(lambda: node.stats()["recoveries"] == 1, 10.0)
        stats = node.stats()
        assert stats["backend_failures"] == 1
        assert node.errors.get("reopen_failure") == 2
        published = node.stats()["published"]
        assert wait_for(lambda: node.stats()["published"] >= published + 3, 10.0)
        assert wait_for(lambda: levels() and levels()[-1][0] == b"\x00", 5.0), levels()[-3:]
    finally:
        executor.remove_node(node)
        node.close()
        node.destroy_node()
        executor.remove_node(harness.node)
        harness.node.destroy_node()


# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pulse_null_sink():
    """A PulseAudio null sink: the one started by scripts/run_tests.sh, or one started here."""
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed (scripts/setup_env.sh installs it): no loopback audio device "
                    "for the real sounddevice test")
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_SINK", "PULSE_SOURCE")}
    started = False
    module_id = None
    if subprocess.run(["pulseaudio", "--check"], capture_output=True).returncode != 0:
        runtime = tempfile.mkdtemp(prefix="avsnet_pulse_")
        os.chmod(runtime, 0o700)
        os.environ["XDG_RUNTIME_DIR"] = runtime
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                        "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=nullsink",
                        "--load=module-always-sink"], check=True, capture_output=True, timeout=30)
        started = True
    sinks = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True, timeout=10).stdout
    if "nullsink" not in sinks:  # a running server of someone else: add our sink, remove it after
        module_id = subprocess.run(["pactl", "load-module", "module-null-sink", "sink_name=nullsink"],
                                   capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    os.environ["PULSE_SINK"] = "nullsink"
    os.environ["PULSE_SOURCE"] = "nullsink.monitor"  # record what the sink plays
    try:
        yield
    finally:
        if module_id:
            subprocess.run(["pactl", "unload-module", module_id], capture_output=True, timeout=10)
        if started:
            subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.audio
def test_sounddevice_loopback_echo_is_onset_aligned(ros, pulse_null_sink):
    """Real audio: the node plays sweeps into the null sink and records its monitor through ONE
    duplex stream; every published echo holds the sweep at the aligned onset."""
    from sensor_msgs.msg import Image

    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter
    from avsnet_ros.nodes.conversions import stamp_to_ns

    context, executor = ros
    node = ChirpEmitter("emitter_pulse", context=context, parameter_overrides=_params(
        backend="sounddevice", input_device="pulse", output_device="pulse", period_s=0.2,
        diagnostics_period_s=0.2))
    assert node.startup_error is None, node.startup_error
    executor.add_node(node)
    harness = Harness(context, executor, name="pulse_probe")
    harness.listen("echo", Image, "/avsnet/echo")
    try:
        # the first two echoes are the stream's start-up, where PulseAudio can underrun while its buffers fill
        # (seen once in CI: "ALSA underrun", the sweep at the onset correlating 0.66): check the next four
        assert wait_for(lambda: harness.count("echo") >= 6, 20.0), node.stats()
        v = node.values
        ref = reference_sweep(v["sweep_duration_s"], v["sweep_f0_hz"], v["sweep_f1_hz"])
        receipt_ns = harness.now_ns()
        for m in harness.messages("echo")[2:6]:
            echo = _echo_array(m)
            assert echo.shape == (2, 7782)
            assert abs(direct_path_onset(echo, ref) - ONSET) <= 3
            # the sweep itself (gain 0.5) is in the buffer right at the onset, on both channels
            seg = echo[:, ONSET: ONSET + ref.size]
            for ch in seg:
                assert abs(np.corrcoef(ch, ref)[0, 1]) > 0.8
            # stamped at emission: before receipt, by at least the echo window it waited for
            age_s = (receipt_ns - stamp_to_ns(m.header.stamp)) / 1e9
            assert 0.15 < age_s < 10.0
        stats = node.stats()
        assert stats["onset_snr_db"] > 20
        assert 0.0 <= stats["capture_latency_ms"] < 500
        assert wait_for(lambda: any("capture_latency_ms" in {kv.key for kv in s.values}
                                    for _, d in harness.received["diagnostics"] for s in d.status), 5.0)
    finally:
        executor.remove_node(node)
        node.close()
        node.destroy_node()
        executor.remove_node(harness.node)
        harness.node.destroy_node()


def test_echo_recorded_across_an_xrun_is_dropped_and_counted():
    """The sounddevice backend's realtime callback driven by hand as a duplex loopback (each block records what
    the previous block played, attenuated): clean periods give echoes holding the sweep at the onset; a block
    the host API reports with an output underflow inside an echo's window makes that echo a counted drop
    (rejected_xrun) instead of a buffer with a gap, and the next period is published again."""
    from types import SimpleNamespace

    from avsnet_ros.audio.backends import SoundDeviceBackend, SweepSettings, _Ring

    settings = SweepSettings(period_s=0.25)
    be = SoundDeviceBackend(settings)
    be._ring = _Ring(2, 8 * settings.period_samples)
    be._stream = SimpleNamespace(active=True)
    block, played = 512, np.zeros((512, 2), np.float32)
    ok = SimpleNamespace(input_overflow=False, output_underflow=False)
    bad = SimpleNamespace(input_overflow=False, output_underflow=True)
    timing = SimpleNamespace(currentTime=0.0, outputBufferDacTime=0.0, inputBufferAdcTime=0.0)

    def run_blocks(n: int, xrun_at: "set[int]" = frozenset()) -> None:
        nonlocal played
        for i in range(n):
            out = np.zeros((block, 2), np.float32)
            be._callback(0.4 * played, out, block, timing, bad if i in xrun_at else ok)
            played = out.copy()

    per_period = settings.period_samples // block + 1
    run_blocks(3 * per_period)  # three clean periods recorded
    echoes = [be.read(0.01) for _ in range(3)]
    got = [e for e in echoes if e is not None]
    assert len(got) >= 2 and be.counters["rejected_xrun"] == 0
    ref = reference_sweep(settings.duration_s, settings.f0_hz, settings.f1_hz)
    for e in got:
        assert abs(direct_path_onset(e.echo, ref) - ONSET) <= 3
    # the next period with an underflow right after its sweep (inside the echo window): dropped and counted
    k = be._next_sweep
    start_block = (k * settings.period_samples) // block - be._pos // block
    run_blocks(per_period, xrun_at={start_block + 2})
    assert be.read(0.01) is None and be.counters["rejected_xrun"] == 1 and be.counters["xruns"] == 1
    run_blocks(2 * per_period)  # clean again: published
    assert be.read(0.01) is not None and be.counters["rejected_xrun"] == 1
