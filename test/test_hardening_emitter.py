"""Fault test (issue 7): the audio device disappears mid-run and comes back.

chirp_emitter runs the real sim backend wrapped so that, while `lost` is set, every read/open/start
raises AudioDeviceError as PortAudio does when a USB sound card is unplugged. A depth_node consumes
the echoes while a camera publishes at 10 Hz (real rclpy, in one process). Expected:
- emitter: /diagnostics goes to ERROR naming the failure, it retries (counted reopen failures), no
  exception escapes, and it recovers (OK again, echoes published again) when the device returns;
- depth node: holds the last scale with decaying confidence for scale_hold_s, then applies its
  documented fallback (echo_fallback=drop: frames counted as stale_echo, /diagnostics WARN), and
  answers frames with fresh echo scales again after the recovery.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ros_support import Harness, fixture_data, ros_context, wait_for

pytestmark = pytest.mark.ros

CAM_HW = (90, 160)


class FlakyBackend:
    """An EchoBackend wrapper whose device can be 'unplugged' (lost.set()) and 'replugged'."""

    name = "flaky"

    def __init__(self, inner):
        self.inner = inner
        self.settings = inner.settings
        self.counters = inner.counters
        self.lost = threading.Event()
        self.failed_calls = 0

    def _check(self, what: str) -> None:
        from avsnet_ros.audio.backends import AudioDeviceError

        if self.lost.is_set():
            self.failed_calls += 1
            raise AudioDeviceError(f"{what}: device 'USB Audio' disappeared (simulated unplug); "
                                   "available devices: none")

    def open(self) -> None:
        self._check("open")
        self.inner.open()

    def start(self) -> None:
        self._check("start")
        self.inner.start()

    def read(self, timeout_s: float):
        self._check("read")
        return self.inner.read(timeout_s)

    def stop(self) -> None:
        self.inner.stop()

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return f"flaky({self.inner.describe()})"


def _status(harness, name_prefix: str, since: float):
    """Newest DiagnosticStatus of the node named name_prefix received after `since`."""
    with harness.lock:
        msgs = [m for t, m in harness.received["diagnostics"] if t > since]
    for msg in reversed(msgs):
        for status in msg.status:
            if status.name.startswith(name_prefix):
                return status
    return None


def _values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def test_audio_device_lost_and_recovered(tiny_checkpoints):
    from rclpy.parameter import Parameter

    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter, make_backend
    from avsnet_ros.nodes.common import ERROR, OK, WARN
    from avsnet_ros.nodes.depth_node import DepthNode

    ckpt = tiny_checkpoints
    rgb_full, _, _, k_full = fixture_data()
    import cv2

    from avsnet_ros.data.samples import scale_intrinsics

    rgb = cv2.resize(rgb_full, (CAM_HW[1], CAM_HW[0]), interpolation=cv2.INTER_AREA)
    k = scale_intrinsics(k_full, rgb_full.shape[:2], CAM_HW)
    backends: list[FlakyBackend] = []

    def factory(values):
        b = FlakyBackend(make_backend(values))
        backends.append(b)
        return b

    with ros_context() as (context, executor):
        emitter = ChirpEmitter(context=context, backend_factory=factory, parameter_overrides=[
            Parameter("backend", value="sim"), Parameter("period_s", value=0.1),
            Parameter("retry_interval_s", value=0.2), Parameter("diagnostics_period_s", value=0.2)])
        assert emitter.startup_error is None, emitter.startup_error
        depth = DepthNode(context=context, parameter_overrides=[Parameter(n, value=v) for n, v in dict(
            avs_checkpoint=ckpt["avs"], relative_checkpoint=ckpt["rel"], device="cpu", torch_threads=1,
            max_echo_age_s=0.3, scale_hold_s=0.6, confidence_half_life_s=0.2, echo_fallback="drop",
            diagnostics_period_s=0.2, publish_preview=False).items()])
        assert depth.startup_error is None, depth.startup_error
        executor.add_node(emitter)
        executor.add_node(depth)
        harness = Harness(context, executor, name="fault_harness")
        harness.wait_connected()
        flaky = backends[0]

        stop = threading.Event()
        sent = {"frames": 0}

        def camera() -> None:  # 10 Hz, stamped now
            while not stop.is_set():
                t = harness.now_ns()
                harness.send_info(k, CAM_HW[1], CAM_HW[0], t)
                harness.send_image(rgb, t)
                sent["frames"] += 1
                stop.wait(0.1)

        cam = threading.Thread(target=camera, daemon=True)
        cam.start()
        try:
            # 1. normal operation: echoes -> fresh scales -> depth
            assert wait_for(lambda: depth.events.get("scale_fresh") >= 3 and harness.count("depth") >= 5, 20.0), \
                (depth.counters(), emitter.stats())
            published_before = emitter.stats()["published"]

            # 2. the device disappears
            t_lost = time.monotonic()
            flaky.lost.set()
            assert wait_for(lambda: (s := _status(harness, "chirp_emitter", t_lost)) is not None and s.level == ERROR,
                            5.0), "emitter did not report ERROR"
            status = _status(harness, "chirp_emitter", t_lost)
            assert "disappeared" in status.message or "disappeared" in _values(status).get("last_error", "")
            # it keeps retrying (reopen failures counted), without an exception escaping
            assert wait_for(lambda: emitter.errors.get("reopen_failure") >= 3, 5.0), emitter.errors.snapshot()
            assert emitter.errors.get("backend_failure") == 1
            assert emitter.stats()["published"] <= published_before + 1
            # depth node: the held scale's confidence decays, then frames are dropped as stale_echo
            stale0 = depth.frame_drops.get("stale_echo")
            assert wait_for(lambda: depth.frame_drops.get("stale_echo") >= stale0 + 3, 10.0), depth.counters()
            held = [m.data for _, m in harness.received["scale"]]
            confidences_hold = [float(d[1]) for d in held]
            t_warn = time.monotonic()
            assert wait_for(lambda: (s := _status(harness, "depth_node", t_warn)) is not None and s.level == WARN, 5.0)
            assert "echo" in _status(harness, "depth_node", t_warn).message
            assert depth.events.get("scale_hold") >= 1, depth.counters()
            frames_out_lost = depth.counters()["frames_out"]
            time.sleep(0.5)
            assert depth.counters()["frames_out"] == frames_out_lost, "frames answered without any echo scale"

            # 3. the device comes back: the emitter reopens it, echoes and depth resume
            fresh0 = depth.events.get("scale_fresh")
            out0 = depth.counters()["frames_out"]
            t_back = time.monotonic()
            flaky.lost.clear()
            assert wait_for(lambda: emitter.errors.get("recovered") == 1, 5.0), emitter.errors.snapshot()
            def emitter_ok():
                status = _status(harness, "chirp_emitter", t_back + 0.5)
                return status is not None and status.level == OK
            assert wait_for(emitter_ok, 5.0), "emitter did not return to OK"
            assert wait_for(lambda: emitter.stats()["published"] >= published_before + 5, 5.0)
            assert wait_for(lambda: depth.events.get("scale_fresh") >= fresh0 + 3
                            and depth.counters()["frames_out"] >= out0 + 5, 15.0), depth.counters()
            t_ok = time.monotonic()
            assert wait_for(lambda: (s := _status(harness, "depth_node", t_ok)) is not None and s.level == OK, 5.0)
        finally:
            stop.set()
            cam.join(timeout=2.0)

        # the hold phase published decaying confidences below the fresh ones
        assert confidences_hold and min(confidences_hold) < max(confidences_hold)
        assert flaky.failed_calls >= 4
        for counter in (depth.frame_drops, depth.echo_drops):
            assert not [r for r in counter.snapshot() if r.endswith("exception") or r == "inference_error"], \
                counter.snapshot()
        assert not [r for r in emitter.drops.snapshot() if r.endswith("exception")], emitter.drops.snapshot()
        c = depth.counters()
        print(f"\nfault run: camera sent {sent['frames']}, depth node in {c['frames_in']} out {c['frames_out']} "
              f"drops {c['frame_drops']}; events {c['events']}; emitter errors {emitter.errors.snapshot()}")
        assert np.isfinite([float(d[0]) for d in held if np.isfinite(d[0])]).all()
