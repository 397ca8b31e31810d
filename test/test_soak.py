"""Soak (issue 7): 60 s of 10 Hz camera + 4 Hz echoes through chirp_emitter (sim backend) and
depth_node over real rclpy, in one process.

Checks: every camera frame the depth node received is answered or counted under a reason, the
answers reach a subscriber in order, echoes are all accepted, no exception is caught anywhere, and
resident memory growth after warm-up is bounded. Prints the measured growth, rates and latency percentiles.
Duration: AVSNET_SOAK_S (default 60 s).

Load: what the node receives and how many frames it answers depend on the machine, not only on the
node. The inputs are best effort, keep last 5 (SensorDataQoS): a process that gets no CPU for a few
seconds (seen on CI: a 5 s stall lost 47 of 608 frames) loses frames in transport, by contract. So the
intake is compared with a reference: a plain subscriber in the same process, on the same executor, with
the same QoS, counts what any subscriber could have received; the depth node must receive as much. And
the node sheds load by design (a newer frame supersedes one that waited for the busy worker): with 3
busy processes beside it on 2 cores it answered 61 % of the frames, with 6 busy processes 27 %, on a CI
machine once 61 %. What is asserted instead is that no frame is lost while the worker idles (the worker's
timeline is recorded), and that the worker answers at all. Speeds are reported, never asserted (bench/).
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from ros_support import Harness, fixture_data, ros_context, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SOAK_S = float(os.environ.get("AVSNET_SOAK_S", "60"))
CAMERA_HZ = 10.0
ECHO_PERIOD_S = 0.25  # 4 Hz
CAM_HW = (360, 640)
WARMUP_S = min(10.0, SOAK_S / 4)
# Resident memory may grow by at most this much between the end of warm-up and the end of the run
# (allocator caches and DDS history settle during warm-up; a per-frame leak of one 360x640 frame
# (0.7 MB) would exceed it after ~70 frames).
MAX_RSS_GROWTH_MB = 48.0


def test_soak_camera_10hz_echo_4hz(tiny_checkpoints):
    import cv2
    import psutil
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from avsnet_ros.data.samples import scale_intrinsics
    from avsnet_ros.nodes import conversions as conv
    from avsnet_ros.nodes.chirp_emitter import ChirpEmitter
    from avsnet_ros.nodes.common import SENSOR_QOS
    from avsnet_ros.nodes.depth_node import DepthNode

    ckpt = tiny_checkpoints
    rgb_full, _, _, k_full = fixture_data()
    rgb = cv2.resize(rgb_full, (CAM_HW[1], CAM_HW[0]), interpolation=cv2.INTER_AREA)
    k = scale_intrinsics(k_full, rgb_full.shape[:2], CAM_HW)
    proc = psutil.Process()

    with ros_context() as (context, executor):
        emitter = ChirpEmitter(context=context, parameter_overrides=[
            Parameter("backend", value="sim"), Parameter("period_s", value=ECHO_PERIOD_S),
            Parameter("diagnostics_period_s", value=1.0)])
        assert emitter.startup_error is None, emitter.startup_error
        depth = DepthNode(context=context, parameter_overrides=[Parameter(n, value=v) for n, v in dict(
            avs_checkpoint=ckpt["avs"], relative_checkpoint=ckpt["rel"], device="cpu", torch_threads=1,
            diagnostics_period_s=1.0, publish_points=True).items()])
        assert depth.startup_error is None, depth.startup_error
        executor.add_node(emitter)
        executor.add_node(depth)
        harness = Harness(context, executor, name="soak_harness")
        latencies_ms: list[float] = []
        received_stamps: list[int] = []
        lock = threading.Lock()

        def on_depth(msg) -> None:
            now = harness.now_ns()
            stamp = conv.stamp_to_ns(msg.header.stamp)
            with lock:
                latencies_ms.append((now - stamp) / 1e6)
                received_stamps.append(stamp)

        harness.node.create_subscription(Image, "/avsnet/metric_depth", on_depth, SENSOR_QOS)
        # the reference: what a plain subscriber with the node's QoS receives in this process (module docstring)
        reference = {"image": 0, "echo": 0}

        def counting(key):
            def cb(_msg) -> None:
                with lock:
                    reference[key] += 1
            return cb

        probe = Node("soak_reference", context=context)
        probe.create_subscription(Image, "camera/image_raw", counting("image"), SENSOR_QOS)
        probe.create_subscription(Image, "avsnet/echo", counting("echo"), SENSOR_QOS)
        executor.add_node(probe)
        harness.wait_connected()
        assert wait_for(lambda: harness.pub_image.get_subscription_count() >= 2
                        and probe.count_publishers("avsnet/echo") > 0, 10.0), "the reference is not connected"
        assert wait_for(lambda: depth.counters()["echoes_in"] >= 2, 10.0), "no echoes from the emitter"

        # The worker's timeline: a frame may be superseded because the worker was busy with an earlier one
        # (load shedding, by design), or by the next of a burst that transport delivers at once after a stall
        # (milliseconds apart); one that arrived while the worker idled and waited there for half a frame
        # period until it was superseded (a missed wake-up, a stalled worker) was lost by the node.
        shed = {"busy": False, "waiting_arrived_busy": False, "waiting_since": 0.0, "superseded_idle": 0,
                "busy_s": 0.0}
        process, put = depth._process, depth._slot.put

        def timed_process(frame):
            shed["busy"] = True
            t0 = time.monotonic()
            try:
                return process(frame)
            finally:
                shed["busy_s"] += time.monotonic() - t0
                shed["busy"] = False

        def recorded_put(item):
            old, now = put(item), time.monotonic()
            if old is not None and not shed["waiting_arrived_busy"] and not shed["busy"] \
                    and now - shed["waiting_since"] > 0.5 / CAMERA_HZ:
                shed["superseded_idle"] += 1
            shed["waiting_arrived_busy"], shed["waiting_since"] = shed["busy"], now
            return old

        depth._process, depth._slot.put = timed_process, recorded_put
        stop = threading.Event()
        sent: list[int] = []
        rss_mb: list[tuple[float, float]] = []

        def camera() -> None:
            period = 1.0 / CAMERA_HZ
            next_t = time.monotonic()
            while not stop.is_set():
                t = harness.now_ns()
                harness.send_info(k, CAM_HW[1], CAM_HW[0], t)
                harness.send_image(rgb, t)
                sent.append(t)
                # a camera that falls behind skips frames; a burst would overflow keep-last 5 by itself
                next_t = max(next_t + period, time.monotonic())
                stop.wait(max(0.0, next_t - time.monotonic()))

        t_start = time.monotonic()
        cam = threading.Thread(target=camera, daemon=True)
        cam.start()
        try:
            while time.monotonic() - t_start < SOAK_S:
                harness.clear()  # the harness keeps every message it receives: do not measure that
                rss_mb.append((time.monotonic() - t_start, proc.memory_info().rss / 2**20))
                time.sleep(1.0)
        finally:
            stop.set()
            cam.join(timeout=2.0)
        rss_mb.append((time.monotonic() - t_start, proc.memory_info().rss / 2**20))

        def settled() -> bool:
            c = depth.counters()
            return c["frames_in"] == c["frames_out"] + sum(c["frame_drops"].values()) + \
                c["events"].get("skipped_no_subscribers", 0) and depth._slot._item is None

        assert wait_for(settled, 15.0, period_s=0.1), depth.counters()
        time.sleep(0.5)  # last depth messages in flight
        c = depth.counters()
        stats = emitter.stats()
        emitter_drops = emitter.drops.snapshot()
        emitter_errors = emitter.errors.snapshot()
        with lock:
            lat = np.array(latencies_ms)
            got = list(received_stamps)
            ref = dict(reference)

    n_sent = len(sent)
    answered, frames_in = c["frames_out"], c["frames_in"]
    base = [m for t, m in rss_mb if t >= WARMUP_S]
    growth_mb = rss_mb[-1][1] - base[0]
    peak_growth_mb = max(base) - base[0]
    t_fit = np.array([t for t, _ in rss_mb if t >= WARMUP_S])
    slope_mb_per_min = float(np.polyfit(t_fit, np.array(base), 1)[0] * 60.0) if len(base) > 2 else float("nan")
    p50, p95, pmax = (np.percentile(lat, 50), np.percentile(lat, 95), lat.max()) if lat.size else (np.nan,) * 3
    print(f"\nsoak {SOAK_S:.0f} s: camera sent {n_sent} ({n_sent / SOAK_S:.2f} Hz), reference subscriber received "
          f"{ref['image']} frames and {ref['echo']} echoes, depth node received {frames_in}, "
          f"answered {answered}, dropped {c['frame_drops']} ({shed['superseded_idle']} superseded while the worker "
          f"idled; worker busy {shed['busy_s']:.1f} s); subscriber got {len(got)} depth images; "
          f"echoes: emitter published {stats['published']} ({stats['published'] / (time.monotonic() - t_start):.2f} Hz "
          f"incl. teardown), node received {c['echoes_in']}, rejected {c['echo_drops']}; scale modes "
          f"{ {k: v for k, v in c['events'].items() if k.startswith('scale_')} }; latency camera stamp -> depth "
          f"received p50 {p50:.1f} ms p95 {p95:.1f} ms max {pmax:.1f} ms; RSS {base[0]:.1f} MB after "
          f"{WARMUP_S:.0f} s warm-up -> {rss_mb[-1][1]:.1f} MB at the end (growth {growth_mb:+.1f} MB, "
          f"peak {peak_growth_mb:+.1f} MB, trend {slope_mb_per_min:+.2f} MB/min); RSS every 10 s: "
          f"{[round(m) for t, m in rss_mb[::10]]} MB")

    # Intake: as much as the reference subscriber got (both best effort, keep last 5; module docstring).
    margin = max(3, int(0.02 * n_sent))
    assert frames_in >= ref["image"] - margin, (frames_in, ref["image"], n_sent)
    assert ref["image"] >= 0.25 * n_sent, f"the reference got {ref['image']} of {n_sent} frames: the test did not test"
    assert frames_in == answered + sum(c["frame_drops"].values()) + c["events"].get("skipped_no_subscribers", 0)
    assert set(c["frame_drops"]) <= {"superseded", "no_echo"}, c["frame_drops"]
    # load shedding is by design (module docstring); frames lost while the worker idled are not
    assert shed["superseded_idle"] <= max(3, 0.01 * frames_in), shed
    assert answered >= 0.05 * frames_in, f"only {answered} of {frames_in} frames answered: {c['frame_drops']}"
    # the answers reached the subscriber, each once, in order (it may lose what the reference lost)
    assert len(got) >= answered - 2 - (n_sent - ref["image"]) and got == sorted(set(got)), (len(got), answered)
    # echoes: the sim emitter publishes every sweep (it skips late ones under load); the node gets what the
    # reference got, and accepts all
    assert stats["published"] >= 0.25 * SOAK_S / ECHO_PERIOD_S, stats
    assert c["echoes_in"] >= ref["echo"] - max(3, int(0.02 * stats["published"])), (c["echoes_in"], ref["echo"])
    assert c["echo_drops"] == {}, c["echo_drops"]
    assert stats["backend_failures"] == 0 and not emitter_drops and "backend_failure" not in emitter_errors
    # no exception caught anywhere
    assert not [r for r in c["frame_drops"] if r.endswith("exception") or r == "inference_error"]
    # bounded memory
    assert growth_mb < MAX_RSS_GROWTH_MB and peak_growth_mb < MAX_RSS_GROWTH_MB, \
        f"resident memory grew by {growth_mb:.1f} MB (peak {peak_growth_mb:.1f} MB) after warm-up"
