"""Resident memory of a depth_node process after bursts of large frames (issue 10: it stepped up from
528 MB to 858 MB after 4096x4096 / 8000x8000 frames and never came back).

The node runs as its own process (its memory alone is measured, as a deployed node); this process
publishes a steady 1280x720 stream with echoes, a burst of frames at the default max_image_pixels
(2560x1440, answered at their own size), oversized 4096x4096 frames (rejected as image_too_large, or
lost in transport: bigger than the shared-memory segment), the steady stream again, then the same
burst once more. What bounds the memory: Fast DDS histories freed per sample (the shipped profile's
DYNAMIC history memory), malloc_trim once a burst is over (common.FreedMemoryTrimmer).

Documented bound (README, Nodes): back on the steady stream, resident memory is at most 25 % above
its steady level (measured +15 % on 2 cores: allocator and library caches sized by the largest frame),
and a second burst does not raise it further (beyond allocator noise, REPEAT_SLACK_RATIO).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ros_support import Harness, fixture_data, ros_context, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.process, pytest.mark.slow]

BOUND_RATIO = 1.25
# A second burst may move the allocator's high-water mark a little (fragmentation depends on which worker
# thread held which buffer: measured +5.8 % of steady when two CI runs shared 2 cores); a leak of the burst's
# frames alone would add >= 88 MB (8 x 2560x1440x3 bytes), about 15 % of steady, so 10 % still catches one.
REPEAT_SLACK_RATIO = 0.10


def test_memory_returns_after_bursts_of_large_frames(tiny_checkpoints):
    import psutil

    from avsnet_ros.nodes.common import diagnostic_values

    ckpt = tiny_checkpoints
    rgb, echo, _, _ = fixture_data()
    bindir = os.path.dirname(sys.executable)
    proc = subprocess.Popen(
        [os.path.join(bindir, "depth_node"), "--ros-args", "-p", f"avs_checkpoint:={ckpt['avs']}",
         "-p", f"relative_checkpoint:={ckpt['rel']}", "-p", "device:=cpu", "-p", "publish_preview:=false"],
        env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    child = psutil.Process(proc.pid)

    def rss_mb() -> float:
        return child.memory_info().rss / 2**20

    sizes: list[tuple[int, int]] = []
    try:
        with ros_context() as (context, executor):
            h = Harness(context, executor, "memory_burst_harness")
            h.wait_connected(180.0)

            def frames(img: np.ndarray, n: int, period_s: float) -> None:
                for _ in range(n):
                    t = h.now_ns()
                    h.send_echo(echo, t - 1000)
                    time.sleep(0.03)
                    h.send_image(img, t)
                    time.sleep(period_s)
                time.sleep(1.5)  # the last frames answered
                with h.lock:
                    sizes.extend((m.width, m.height) for _, m in h.received["depth"])
                h.clear()  # this process keeps nothing it received

            big = np.full((1440, 2560, 3), 90, np.uint8)
            oversized = np.zeros((4096, 4096, 3), np.uint8)
            frames(rgb, 30, 0.25)
            steady = rss_mb()
            frames(big, 8, 0.5)
            peak = rss_mb()
            frames(oversized, 2, 1.0)
            frames(rgb, 20, 0.25)
            after = rss_mb()
            frames(big, 8, 0.5)
            frames(rgb, 20, 0.25)
            after2 = rss_mb()
            h.received["diagnostics"].clear()
            assert wait_for(lambda: h.count("diagnostics") > 0, 10.0)
            diag = diagnostic_values(h.messages("diagnostics")[-1], "depth")
    finally:
        proc.send_signal(2)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    print(f"\ndepth_node resident memory: steady {steady:.0f} MB, during 2560x1440 burst {peak:.0f} MB, back to "
          f"1280x720 {after:.0f} MB ({100 * (after / steady - 1):+.1f} %), after a second burst {after2:.0f} MB "
          f"({100 * (after2 / steady - 1):+.1f} %); trims {diag.get('count.memory_trims')}, node-reported "
          f"{diag.get('resident_memory_mb')} MB")
    assert (2560, 1440) in sizes and (1280, 720) in sizes, set(sizes)  # the burst was answered at its own size
    assert (4096, 4096) not in sizes  # oversized frames never answered
    assert int(diag.get("count.memory_trims", 0)) >= 1  # the trim after a burst ran
    assert after <= BOUND_RATIO * steady, (steady, peak, after)
    assert after2 <= after + REPEAT_SLACK_RATIO * steady, (steady, after, after2)  # does not compound
    assert after2 <= BOUND_RATIO * steady, (steady, after, after2)  # and stays within the documented bound
    assert abs(float(diag["resident_memory_mb"]) - after2) < 0.2 * after2  # the node reports its own memory
