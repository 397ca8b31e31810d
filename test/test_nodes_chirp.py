"""The chirp description in the echo contract (issue 12), over real rclpy where transport is involved:
the emitter's avsnet/chirp reaches a subscriber that starts later (transient local) and follows a
reconfigure; the depth node's echo path (depth_support.EchoPath) with a tiny random "rerender" AVS-Net:
the sweep in use (parameter / topic / identified), an echo the announced sweep does not explain is
dropped as echo_sweep_mismatch and the scale policy treats it as missing (held scale with decaying
confidence, then the fallback), the same echo with the right sweep announced is accepted.

Echoes are recordings of real sweeps in a synthetic room (ros_support.synthetic_echo: make_sweep
convolved with a direct path at sample 288 and three weaker reflections). Transport waits are on
conditions (matched endpoints, counters, /diagnostics values), never on fixed sleeps."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from ros_support import Harness, fixture_data, stop_nodes, synthetic_echo, wait_for

pytestmark = pytest.mark.ros

RATE_HZ = 44100
LINEAR_3MS = dict(duration_s=0.003, f0_hz=20.0, f1_hz=20000.0, method="linear", fade_s=0.0002)  # DEFAULT_SWEEP
EXP_30MS = dict(duration_s=0.03, f0_hz=20.0, f1_hz=20000.0, method="exponential", fade_s=0.0002)
CAM_HW = (180, 320)
NODE = "depth_node_chirp"


def _spec(sweep: dict):
    from avsnet_ros.audio.frontend import SweepSpec

    return SweepSpec(**sweep, sample_rate_hz=RATE_HZ)


@pytest.fixture(scope="module")
def rerender_checkpoint(tmp_path_factory) -> str:
    """A random-initialised tiny AVS-Net with the rerender echo front-end (as ros_support.make_tiny_checkpoints)."""
    import torch

    from avsnet_ros.models import AVSNetConfig, build_model, save_checkpoint

    torch.manual_seed(1)
    cfg = AVSNetConfig(preset="tiny", image_size_hw=(64, 128), audio_frontend="rerender")
    out = tmp_path_factory.mktemp("rerender") / "avs_rerender"
    save_checkpoint(out, build_model(cfg), cfg)
    return str(out)


@pytest.fixture(scope="module")
def echoes() -> dict:
    """Recordings of the 3 ms linear and the 30 ms exponential sweep in the same synthetic room."""
    return {"linear_3ms": synthetic_echo(**LINEAR_3MS), "exp_30ms": synthetic_echo(**EXP_30MS)}


def _default_values(**changes) -> dict:
    from avsnet_ros.nodes.depth_support import PARAMS

    return {**{p.name: p.default for p in PARAMS}, **changes}


# ------------------------------------------------------------------------------------------------
# EchoPath without transport (the depth node's echo path, called as its echo callback calls it)
def _echo_path(pipeline, **values):
    from avsnet_ros.nodes.common import DropCounter
    from avsnet_ros.nodes.depth_support import EchoChecker, EchoPath, EchoScaleState

    v = _default_values(**values)
    state, drops = EchoScaleState(), DropCounter()
    return EchoPath(pipeline, EchoChecker(pipeline, RATE_HZ), state, drops, v), state, drops, v


def _stored(state, stamp_ns: int):
    """The stored echo paired with a frame at stamp_ns (the node's pairing rule)."""
    from avsnet_ros.nodes.depth_support import scale_policy

    decision, stored = state.decide(stamp_ns, scale_policy(_default_values(), False))
    return stored


def test_echo_path_sweep_origins_and_front_end_checks(rerender_checkpoint, tiny_checkpoints, echoes):
    from avsnet_ros.audio.frontend import FrontEndResult
    from avsnet_ros.pipeline import DepthPipeline

    pipeline = DepthPipeline.from_checkpoints(avs_checkpoint=rerender_checkpoint, relative_checkpoint=False,
                                              device="cpu")
    assert pipeline.frontend.mode == "rerender"
    path, state, drops, v = _echo_path(pipeline)
    assert path.sweep_in_use() == (None, "none")
    # nothing announced: the front-end identifies the sweep from the recording
    path.submit(1000, echoes["linear_3ms"], v)
    stored = _stored(state, 1000)
    assert isinstance(stored.echo, FrontEndResult) and stored.echo.identified
    sweep, origin = path.sweep_in_use()
    assert origin == "identified" and sweep.method == "linear" and sweep.duration_s == pytest.approx(0.003, rel=0.05)
    # announced on the topic: used as it is
    long_text = _spec(EXP_30MS).to_text()
    assert path.announce(long_text) is None
    assert path.sweep_in_use() == (_spec(EXP_30MS), "topic")
    path.submit(2000, echoes["exp_30ms"], v)
    stored = _stored(state, 2000)
    assert stored.stamp_ns == 2000 and stored.echo.sweep == _spec(EXP_30MS) and not stored.echo.identified
    assert stored.echo.quality > 0.9 and abs(stored.echo.direct_sample - 288) <= 4
    # an unparsable description is counted and the previous one kept; "unknown" forgets it
    assert "chirp_invalid" in path.announce("duration_s=0.03;method")
    assert drops.snapshot() == {"chirp_invalid": 1} and path.sweep_in_use()[1] == "topic"
    assert path.announce("unknown") is None and path.sweep_in_use() == (None, "none")
    # the wrong sweep announced: echo_sweep_mismatch, nothing stored, the measured quality in diagnostics
    path.announce(_spec(LINEAR_3MS).to_text())
    path.submit(3000, echoes["exp_30ms"], v)
    assert drops.get("echo_sweep_mismatch") == 1 and state.newest_echo_ns() == 2000
    diag = path.diagnostic_values()
    assert diag["echo_quality"] < 0.5 and diag["echo_sweep_origin"] == "topic" and diag["echo_frontend"] == "rerender"
    assert diag["echo_sweep"] == diag["echo_chirp"] == _spec(LINEAR_3MS).to_text()
    assert diag["echo_level_dbfs"] == pytest.approx(20 * math.log10(0.3), abs=1.5)  # the sweep's amplitude
    # the right sweep, but -80 dBFS: echo_level; the direct path 40 samples late: echo_onset (deconvolved)
    path.announce(long_text)
    path.submit(4000, synthetic_echo(amplitude=1e-4, noise_std=1e-6, **EXP_30MS), v)
    path.submit(5000, synthetic_echo(onset_sample=288 + 40, **EXP_30MS), v)
    assert drops.get("echo_level") == 1 and drops.get("echo_onset") == 1 and state.newest_echo_ns() == 2000
    assert path.checker.check(synthetic_echo(onset_sample=288 + 40, **EXP_30MS), v) is None  # no template check
    # in its own thread (the node's): stored, and no echo left in flight for the frames to wait for
    path.start()
    try:
        path.submit(6000, echoes["exp_30ms"], v)
        # settled means stored: the callback's in-flight mark is handed to the front-end thread, not dropped
        # before the store (a frame right behind its echo, and the node tests' _send_pair, wait on this)
        assert state.wait_settled(30.0) and state.newest_echo_ns() == 6000, drops.snapshot()
        assert state.wait_for_echoes(5.0)
    finally:
        path.stop()
    # ... with the model's input spectrogram of its echo made there (off the frame path), equal to what the
    # frame path computes from the same echo (a plain copy of the result, nothing attached)
    stored = _stored(state, 6000).echo
    spec = pipeline._attached_spectrogram(stored)
    assert spec is not None and spec.shape == (2, 64, 128)
    plain = FrontEndResult(echo=stored.echo, sweep=stored.sweep, identified=stored.identified, quality=stored.quality)
    assert not plain.derived
    rgb = np.zeros((48, 64, 3), np.uint8)
    assert torch.equal(pipeline.preprocess(rgb, plain, need_relative=False).spectrogram[0], spec)
    # the echo_sweep parameter overrides the topic; a bad one fails (configure fails with it)
    by_param, state2, drops2, v2 = _echo_path(pipeline, echo_sweep=long_text)
    by_param.announce(_spec(LINEAR_3MS).to_text())
    assert by_param.sweep_in_use() == (_spec(EXP_30MS), "parameter")
    by_param.submit(1000, echoes["exp_30ms"], v2)
    assert state2.newest_echo_ns() == 1000 and drops2.snapshot() == {}
    with pytest.raises(ValueError, match="parameter echo_sweep"):
        _echo_path(pipeline, echo_sweep="method=square")
    with pytest.raises(ValueError, match="48000 Hz"):
        _echo_path(pipeline, echo_sweep=long_text.replace("44100", "48000"))


def test_echo_path_of_a_raw_model_is_unchanged(tiny_checkpoints, echoes):
    """A "raw" checkpoint (the shipped ones): the buffer itself is stored, the matched-filter onset
    check applies, no front-end values."""
    from avsnet_ros.pipeline import DepthPipeline

    pipeline = DepthPipeline.from_checkpoints(avs_checkpoint=tiny_checkpoints["avs"], relative_checkpoint=False,
                                              device="cpu")
    path, state, drops, v = _echo_path(pipeline)
    path.announce(_spec(EXP_30MS).to_text())
    path.start()  # nothing to start for a raw model: stored in the caller's thread
    path.submit(1000, echoes["linear_3ms"], v)
    assert _stored(state, 1000).echo is echoes["linear_3ms"]
    path.submit(2000, synthetic_echo(onset_sample=288 + 40, **LINEAR_3MS), v)  # matched filter: onset 328
    assert drops.snapshot() == {"echo_onset": 1} and state.newest_echo_ns() == 1000
    diag = path.diagnostic_values()
    assert diag["echo_frontend"] == "raw" and math.isnan(diag["echo_quality"]) and diag["echo_sweep_origin"] == "topic"
    path.stop()


def test_wait_settled_waits_for_every_echo_in_flight():
    import threading

    from avsnet_ros.nodes.depth_support import EchoScaleState

    state = EchoScaleState()
    assert state.wait_settled(0.0)  # nothing in flight
    state.begin_echo()
    state.begin_echo()  # the callback's mark and the front-end queue's mark overlap
    assert not state.wait_settled(0.05)
    state.end_echo()
    assert not state.wait_settled(0.05)  # one still in flight
    timer = threading.Timer(0.1, state.end_echo)
    timer.start()
    t0 = time.monotonic()
    assert state.wait_settled(10.0) and time.monotonic() - t0 >= 0.05
    timer.join()


# ------------------------------------------------------------------------------------------------
# chirp_emitter: the description reaches late joiners
def _listen_chirps(context, executor, name: str):
    from rclpy.node import Node
    from std_msgs.msg import String

    from avsnet_ros.nodes.common import CHIRP_QOS

    got: list[str] = []
    node = Node(name, context=context)
    node.create_subscription(String, "/avsnet/chirp", lambda m: got.append(m.data), CHIRP_QOS)
    executor.add_node(node)
    return node, got


def test_emitter_chirp_reaches_a_later_subscriber_and_follows_a_reconfigure(ros):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from avsnet_ros.audio.frontend import SweepSpec
    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter

    context, executor = ros
    params = dict(backend="sim", sweep_method="exponential", sweep_duration_s=0.01, sweep_fade_s=0.0005,
                  sweep_f0_hz=100.0, sweep_f1_hz=16000.0, max_depth_m=10.0)
    emitter = ChirpEmitter("chirp_emitter_chirp", context=context,
                           parameter_overrides=[Parameter(k, value=x) for k, x in params.items()])
    assert emitter.startup_error is None, emitter.startup_error
    executor.add_node(emitter)
    listeners = []
    try:
        # published at activate, before anyone listened
        assert emitter.stats()["chirps_published"] == 1
        listener, got = _listen_chirps(context, executor, "chirp_listener_late")
        listeners.append(listener)
        assert wait_for(lambda: len(got) >= 1, 30.0), "the transient-local description did not reach a late joiner"
        expected = SweepSpec(duration_s=0.01, f0_hz=100.0, f1_hz=16000.0, method="exponential", fade_s=0.0005,
                             sample_rate_hz=RATE_HZ)
        assert SweepSpec.from_text(got[0]) == expected
        # new sweep parameters take effect at the next configure; the new description follows
        emitter.set_parameters([Parameter("sweep_method", value="linear"), Parameter("sweep_duration_s", value=0.005)])
        for transition in (emitter.trigger_deactivate, emitter.trigger_cleanup, emitter.trigger_configure,
                           emitter.trigger_activate):
            assert transition() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: len(got) >= 2, 30.0), got
        changed = SweepSpec(duration_s=0.005, f0_hz=100.0, f1_hz=16000.0, method="linear", fade_s=0.0005,
                            sample_rate_hz=RATE_HZ)
        assert SweepSpec.from_text(got[1]) == changed and emitter.stats()["chirp"] == changed.to_text()
        # a subscriber starting now gets the current description only (keep last 1)
        listener2, got2 = _listen_chirps(context, executor, "chirp_listener_later")
        listeners.append(listener2)
        assert wait_for(lambda: len(got2) >= 1, 30.0)
        assert got2 == [changed.to_text()]
        # the echoes keep flowing with the new sweep (sim backend)
        assert wait_for(lambda: emitter.stats()["published"] >= 2, 30.0)
    finally:
        stop_nodes(executor, emitter, *listeners)


# ------------------------------------------------------------------------------------------------
# depth_node with a rerender model over real rclpy
def _params(tiny_checkpoints, rerender_checkpoint, **extra):
    from rclpy.parameter import Parameter

    values = dict(avs_checkpoint=rerender_checkpoint, relative_checkpoint=tiny_checkpoints["rel"], device="cpu",
                  max_echo_age_s=0.5, scale_hold_s=1.0, confidence_half_life_s=0.5, scale_filter="none",
                  diagnostics_period_s=0.2, torch_threads=1, publish_preview=False)
    values.update(extra)
    return [Parameter(k, value=x) for k, x in values.items()]


@pytest.fixture(scope="module")
def rgb():
    import cv2

    full = fixture_data()[0]
    return cv2.resize(full, (CAM_HW[1], CAM_HW[0]), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def node(ros, tiny_checkpoints, rerender_checkpoint):
    from avsnet_ros.nodes.depth_node import DepthNode

    context, executor = ros
    n = DepthNode(NODE, context=context, parameter_overrides=_params(tiny_checkpoints, rerender_checkpoint))
    assert n.startup_error is None, n.startup_error
    executor.add_node(n)
    yield n
    executor.remove_node(n)
    n.close()
    n.destroy_node()


@pytest.fixture(scope="module")
def harness(ros, node):
    from std_msgs.msg import String

    from avsnet_ros.nodes.common import CHIRP_QOS

    context, executor = ros
    h = Harness(context, executor, name="chirp_harness")
    h.pub_chirp = h.node.create_publisher(String, "/avsnet/chirp", CHIRP_QOS)
    h.wait_connected()
    _wait_transport(node, h)
    return h


def _wait_transport(node, harness) -> None:
    """Until the node's echo and image subscriptions take messages (matched both ways): a silent echo
    (dropped as echo_silent) and an old frame (no echo: dropped), resent until counted."""
    silent = np.zeros((2, 20000), np.float32)
    t = harness.now_ns() - 60_000_000_000
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and not node.counters()["echo_drops"].get("echo_silent"):
        harness.send_echo(silent, t)
        wait_for(lambda: bool(node.counters()["echo_drops"].get("echo_silent")), 1.0)
    assert node.counters()["echo_drops"].get("echo_silent"), "the node never took an echo"
    frames0 = node.counters()["frames_in"]
    while time.monotonic() < deadline and node.counters()["frames_in"] == frames0:
        t += 1
        harness.send_image(np.zeros((*CAM_HW, 3), np.uint8), t)
        wait_for(lambda: node.counters()["frames_in"] > frames0, 1.0)
    assert node.counters()["frames_in"] > frames0, "the node never took a frame"


def _diagnostics(harness, since: float) -> dict:
    from avsnet_ros.nodes.common import diagnostic_values

    with harness.lock:
        msgs = [m for t, m in harness.received["diagnostics"] if t > since]
    for msg in reversed(msgs):
        values = diagnostic_values(msg, NODE)
        if values:
            return values
    return {}


def _wait_diagnostics(harness, predicate, what: str, timeout_s: float = 30.0) -> dict:
    """The first /diagnostics status of the node, published from now on, for which predicate(values) holds."""
    since, last = time.monotonic(), {}

    def ok() -> bool:
        nonlocal last
        last = _diagnostics(harness, since)
        return bool(last) and predicate(last)

    assert wait_for(ok, timeout_s), f"/diagnostics never showed {what}: {last}"
    return last


def _announce(harness, sweep: dict) -> None:
    """Publish the chirp description and wait until the node uses it (its /diagnostics say so)."""
    from std_msgs.msg import String

    text = _spec(sweep).to_text()
    harness.pub_chirp.publish(String(data=text))
    _wait_diagnostics(harness, lambda d: d.get("echo_chirp") == text and d.get("echo_sweep") == text
                      and d.get("echo_sweep_origin") == "topic", f"the announced sweep {text}")


def test_depth_node_drops_an_echo_the_announced_sweep_does_not_explain(node, harness, rgb, echoes):
    """The 30 ms exponential recording while avsnet/chirp announces the 3 ms linear sweep: dropped
    (echo_sweep_mismatch in /diagnostics) and the policy applies as for a missing echo: no scale yet
    -> fallback drop; after an accepted echo -> held scale with decaying confidence, then the fallback."""
    from avsnet_ros.audio.frontend import FrontEndResult
    from avsnet_ros.nodes import conversions as conv

    def counts():
        c = node.counters()
        return c["echo_drops"].get("echo_sweep_mismatch", 0), c["frame_drops"]

    long_echo = echoes["exp_30ms"]
    t0 = harness.now_ns() - 20_000_000_000  # a scene 20 s in the past: later stamps are never "future"
    harness.clear()
    # 1. wrong sweep announced: the echo is dropped, the frame has no echo and no scale -> fallback drop
    _announce(harness, LINEAR_3MS)
    mismatch0, frames0 = counts()
    harness.send_echo(long_echo, t0)
    assert wait_for(lambda: counts()[0] == mismatch0 + 1, 30.0), node.counters()
    assert node.echo_state.newest_echo_ns() is None
    harness.send_image(rgb, t0 + 10_000_000)
    assert wait_for(lambda: counts()[1].get("no_echo", 0) == frames0.get("no_echo", 0) + 1, 30.0), node.counters()
    diag = _wait_diagnostics(harness, lambda d: int(d.get("echo_drop.echo_sweep_mismatch", -1)) == mismatch0 + 1,
                             "the mismatch count")
    assert float(diag["echo_quality"]) < 0.5 and diag["echo_frontend"] == "rerender"
    assert "does not explain the recording" in diag["last.echo_sweep_mismatch"]
    assert harness.count("depth") == 0
    # 2. the right sweep announced: the same recording is accepted and scales the frame
    _announce(harness, EXP_30MS)
    t1 = t0 + 1_000_000_000
    harness.send_echo(long_echo, t1)
    assert wait_for(lambda: node.echo_state.newest_echo_ns() == t1, 30.0), node.counters()
    harness.send_image(rgb, t1 + 10_000_000)
    assert wait_for(lambda: harness.count("depth") >= 1 and harness.count("scale") >= 1, 30.0), node.counters()
    scale0, conf0 = harness.messages("scale")[0].data
    assert math.isfinite(scale0) and scale0 > 0
    stored = node.echo_state.scale.echo.echo  # what the pipeline was given: the front-end result, as it is
    assert isinstance(stored, FrontEndResult) and stored.sweep == _spec(EXP_30MS) and not stored.identified
    depth = conv.depth_from_image_msg(harness.messages("depth")[0])
    expected = node.pipeline(rgb, stored, output_size_hw=CAM_HW).depth_m[0]
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    diag = _wait_diagnostics(harness, lambda d: float(d.get("echo_quality", "nan")) > 0.9, "the accepted echo")
    # the recording's peak over the direct sweep: the sweep's 0.3, plus the reflections that overlap its 30 ms
    assert diag["echo_sweep_origin"] == "topic"
    assert 20 * math.log10(0.3) - 0.5 < float(diag["echo_level_dbfs"]) < 20 * math.log10(0.3 * (1 + 0.3 + 0.15 + 0.08))
    # 3. the wrong sweep again: the next echo is dropped, so frames hold the last scale (confidence halving
    #    every 0.5 s beyond max_echo_age_s) and then fall back (drop, counted as stale_echo)
    _announce(harness, LINEAR_3MS)
    mismatch1, frames1 = counts()
    harness.send_echo(long_echo, t1 + 250_000_000)
    assert wait_for(lambda: counts()[0] == mismatch1 + 1, 30.0), node.counters()
    assert node.echo_state.newest_echo_ns() == t1
    harness.send_image(rgb, t1 + 1_010_000_000)
    assert wait_for(lambda: harness.count("scale") >= 2, 30.0), node.counters()
    held_scale, held_conf = harness.messages("scale")[1].data
    assert held_scale == scale0
    assert held_conf == pytest.approx(conf0 * 0.5 ** ((1.01 - 0.5) / 0.5), rel=1e-4)
    assert node.counters()["events"].get("scale_hold", 0) >= 1
    harness.send_image(rgb, t1 + 2_000_000_000)  # beyond max_echo_age_s + scale_hold_s: echo_fallback drop
    assert wait_for(lambda: counts()[1].get("stale_echo", 0) == frames1.get("stale_echo", 0) + 1, 30.0)
    assert harness.count("depth") == 2
    _wait_diagnostics(harness, lambda d: int(d.get("echo_drop.echo_sweep_mismatch", -1)) == mismatch1 + 1
                      and float(d["echo_quality"]) < 0.5, "the second mismatch")


def test_depth_node_echo_sweep_parameter_and_bad_descriptions(node, harness, echoes):
    """A bad avsnet/chirp is counted (chirp_invalid) and the previous sweep kept; the echo_sweep parameter
    overrides the topic, whose description reaches the re-created subscription again (transient local)."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from std_msgs.msg import String

    _announce(harness, LINEAR_3MS)
    invalid0 = node.counters()["echo_drops"].get("chirp_invalid", 0)
    harness.pub_chirp.publish(String(data="duration_s=0.01;method=square"))
    assert wait_for(lambda: node.counters()["echo_drops"].get("chirp_invalid", 0) == invalid0 + 1, 30.0)
    diag = _wait_diagnostics(harness, lambda d: int(d.get("echo_drop.chirp_invalid", -1)) == invalid0 + 1,
                             "the invalid description")
    assert diag["echo_sweep"] == _spec(LINEAR_3MS).to_text() and diag["echo_sweep_origin"] == "topic"
    assert "square" in diag["last.chirp_invalid"]
    _announce(harness, LINEAR_3MS)  # the description the topic keeps (depth 1) for the next subscription
    # the parameter (read at configure) overrides what the topic announces
    long_text = _spec(EXP_30MS).to_text()
    assert node.set_parameters([Parameter("echo_sweep", value=long_text)])[0].successful
    try:
        for transition in (node.trigger_deactivate, node.trigger_cleanup, node.trigger_configure,
                           node.trigger_activate):
            assert transition() == TransitionCallbackReturn.SUCCESS
        # the last valid description published before (transient local) reaches the new subscription
        _wait_diagnostics(harness, lambda d: d.get("echo_chirp") == _spec(LINEAR_3MS).to_text()
                          and d.get("echo_sweep") == long_text and d.get("echo_sweep_origin") == "parameter",
                          "the parameter's sweep next to the topic's description")
        harness.wait_connected()
        t = harness.now_ns() - 5_000_000_000
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and node.echo_state.newest_echo_ns() is None:  # until matched
            t += 1_000_000
            harness.send_echo(echoes["exp_30ms"], t)
            wait_for(lambda: node.echo_state.newest_echo_ns() is not None, 2.0)
        newest = node.echo_state.newest_echo_ns()
        assert newest is not None, node.counters()
        stored = _stored(node.echo_state, newest).echo
        assert stored.sweep == _spec(EXP_30MS) and not stored.identified and stored.quality > 0.9
    finally:
        assert node.set_parameters([Parameter("echo_sweep", value="")])[0].successful
