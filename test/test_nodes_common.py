"""Node plumbing without spinning: message builders against hand-made references, PointCloud2 and
CameraInfo by hand, the preview legend, declared parameters (ranges and choices enforced)."""
from __future__ import annotations

import sys

import numpy as np
import pytest


def test_echo_message_layout_roundtrip():
    from avsnet_ros.nodes import conversions as conv

    echo = np.stack([np.arange(10, dtype=np.float32), -np.arange(10, dtype=np.float32)])
    msg = conv.echo_to_msg(echo, 1_500_000_001, "mics")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("32FC1", 2, 10, 40, 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1, 500_000_001, "mics")
    # row 0 = left: the first 40 bytes are the left channel, little-endian float32
    assert bytes(msg.data)[:40] == echo[0].astype("<f4").tobytes()
    np.testing.assert_array_equal(conv.echo_from_image_msg(msg), echo)
    with pytest.raises(ValueError):
        conv.echo_to_msg(np.zeros((3, 10), np.float32), 0, "x")


def test_image_builders_and_bgr_and_padding():
    from avsnet_ros.nodes import conversions as conv

    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = conv.array_to_image(rgb[:, :, ::-1], "bgr8")
    np.testing.assert_array_equal(conv.rgb_from_image_msg(msg), rgb)
    # a padded row (step > width * 3) from another driver decodes to the same pixels
    padded = conv.array_to_image(rgb, "rgb8")
    rows = np.zeros((4, 5 * 3 + 7), np.uint8)
    rows[:, :15] = rgb.reshape(4, 15)
    padded.step, padded.data = 22, rows.tobytes()
    np.testing.assert_array_equal(conv.rgb_from_image_msg(padded), rgb)
    depth_mm = np.array([[0, 1500], [65535, 20]], np.uint16)
    msg16 = conv.array_to_image(depth_mm, "16UC1")
    np.testing.assert_allclose(conv.depth_from_image_msg(msg16), [[np.nan, 1.5], [65.535, 0.02]], rtol=1e-6)


def test_scale_camera_info_by_hand():
    from avsnet_ros.nodes import conversions as conv

    k = np.array([[500.0, 0, 319.5], [0, 400.0, 239.5], [0, 0, 1]])
    info = conv.camera_info_from_intrinsics(k, 640, 480, conv.make_header(5, "cam"))
    out = conv.scale_camera_info(info, 320, 120)
    kk = np.reshape(out.k, (3, 3))
    # pixel-centre convention: u' = (u + 0.5) s - 0.5
    np.testing.assert_allclose(kk, [[250.0, 0, 159.5], [0, 100.0, 59.5], [0, 0, 1]])
    np.testing.assert_allclose(np.reshape(out.p, (3, 4))[:, :3], kk)
    assert (out.width, out.height, out.header.frame_id) == (320, 120, "cam")


def test_pointcloud_by_hand():
    from sensor_msgs.msg import PointField

    from avsnet_ros.nodes import conversions as conv

    k = np.array([[2.0, 0, 1.0], [0, 4.0, 0.5], [0, 0, 1]])
    depth = np.array([[1.0, 2.0, np.nan], [4.0, 0.5, 3.0]], np.float32)
    msg = conv.depth_to_pointcloud2(depth, k, conv.make_header(0, "cam"))
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense) == (2, 3, 12, 36, False)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [("x", 0, PointField.FLOAT32),
                                                                     ("y", 4, PointField.FLOAT32),
                                                                     ("z", 8, PointField.FLOAT32)]
    xyz = np.frombuffer(bytes(msg.data), "<f4").reshape(2, 3, 3)
    # pixel (u=2, v=1), z = 3: x = (2 - 1) / 2 * 3 = 1.5, y = (1 - 0.5) / 4 * 3 = 0.375
    np.testing.assert_allclose(xyz[1, 2], [1.5, 0.375, 3.0])
    np.testing.assert_allclose(xyz[0, 0], [-0.5, -0.125, 1.0])
    assert np.isnan(xyz[0, 2]).all()
    np.testing.assert_array_equal(conv.pointcloud2_to_xyz(msg), xyz)


def test_colorize_depth_fixed_range_and_legend():
    from avsnet_ros.nodes import conversions as conv

    depth = np.array([[0.0, 5.0, 10.0, np.nan]], np.float32)
    rgb = conv.colorize_depth(depth, 0.0, 10.0)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 3] == 0).all()
    # the same metres give the same colour whatever else is in the frame
    other = conv.colorize_depth(np.array([[5.0, 9.0]], np.float32), 0.0, 10.0)
    np.testing.assert_array_equal(other[0, 0], rgb[0, 1])
    legend = conv.depth_legend(120, 0.0, 10.0)
    assert legend.shape == (120, 70, 3)
    np.testing.assert_array_equal(legend[0, 0], conv.colorize_depth(np.array([[0.0]], np.float32), 0.0, 10.0)[0, 0])


def test_declared_parameters_enforce_ranges_and_choices():
    import rclpy
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from avsnet_ros.nodes.common import ParamSpec, declare_parameters

    specs = (ParamSpec("rate_hz", 5.0, "rate", 0.0, 10.0, live=True),
             ParamSpec("mode", "a", "mode", choices=("a", "b")),
             ParamSpec("count", 3, "count", 1, 5))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = Node("param_probe", context=context)
        values = declare_parameters(node, specs)
        assert values == {"rate_hz": 5.0, "mode": "a", "count": 3}
        desc = node.describe_parameter("rate_hz")
        assert desc.floating_point_range[0].to_value == 10.0 and "applied at once" in desc.description
        assert not node.set_parameters([Parameter("rate_hz", value=11.0)])[0].successful
        assert not node.set_parameters([Parameter("mode", value="c")])[0].successful
        assert node.set_parameters([Parameter("rate_hz", value=7.5)])[0].successful
        assert values["rate_hz"] == 7.5  # live: applied at once
        assert node.set_parameters([Parameter("count", value=4)])[0].successful
        assert values["count"] == 3  # not live: read at the next configure
        node.destroy_node()
        bad = Node("param_probe_bad", context=context, parameter_overrides=[Parameter("count", value=9)])
        with pytest.raises(InvalidParameterValueException):
            declare_parameters(bad, specs)
        bad.destroy_node()
        bad = Node("param_probe_bad2", context=context, parameter_overrides=[Parameter("mode", value="z")])
        with pytest.raises(ValueError, match="mode"):
            declare_parameters(bad, specs)
        bad.destroy_node()
    finally:
        rclpy.shutdown(context=context)


_FAULTS_SCRIPT = r'''
import resource, sys, threading
import numpy as np
from avsnet_ros.nodes.common import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory(64 << 20)
out = {}
def frame():  # one "forward pass": activations of assorted sizes (up to 11 MB), then all freed
    live = [np.ones((n << 16,), np.float32) for n in (40, 3, 17, 9, 30, 2, 12, 25, 5, 44)]
    del live
def work():  # in a thread that is not the main thread, like the depth node's inference worker
    frame(); frame()
    f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(10):
        frame()
    out["faults"] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0
t = threading.Thread(target=work); t.start(); t.join()
print(out["faults"])
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc (Linux) only")
def test_keep_freed_memory_stops_per_frame_page_faults_in_a_worker_thread():
    """The kernel's own page-fault count (getrusage) of a worker thread that allocates and frees
    ~10 MB per 'frame': glibc's defaults return the memory and fault it back in on every frame; after
    keep_freed_memory the frames reuse it (the depth node calls it at configure)."""
    import subprocess
    from pathlib import Path

    def faults(mode: str) -> int:
        proc = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.strip().splitlines()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 100, f"expected glibc's default to fault freed memory back in, got {default} faults"
    assert kept <= default // 20, (default, kept)


def test_keep_freed_memory_leaves_the_allocator_alone_when_off():
    from avsnet_ros.nodes.common import keep_freed_memory

    assert keep_freed_memory(0) is False


def test_freed_memory_trimmer_trims_once_after_a_burst():
    from avsnet_ros.nodes.common import FreedMemoryTrimmer

    calls = []
    trimmer = FreedMemoryTrimmer(burst_ratio=1.5, release=lambda: calls.append(1) or True)
    usual, big = 1280 * 720, 2560 * 1440
    assert [trimmer.after_frame(usual) for _ in range(5)] == [False] * 5  # steady: never
    assert [trimmer.after_frame(big) for _ in range(3)] == [False] * 3  # during the burst: never
    assert trimmer.after_frame(usual) is True and len(calls) == 1  # back to usual: once
    assert [trimmer.after_frame(usual) for _ in range(3)] == [False] * 3 and len(calls) == 1
    # a camera that switches for good to a slightly larger mode is not a burst
    assert trimmer.after_frame(int(usual * 1.4)) is False and trimmer.after_frame(usual) is False
    assert len(calls) == 1 and trimmer.trims == 1


def test_release_freed_memory_returns_heap_memory_to_the_kernel():
    """glibc keeps freed heap blocks below M_TRIM_THRESHOLD; malloc_trim gives them back (RSS drops)."""
    import subprocess

    script = r"""
import ctypes, sys
import psutil
from avsnet_ros.nodes.common import keep_freed_memory, release_freed_memory
keep_freed_memory(512 << 20)                     # as the depth node: keep freed memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p; libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
rss = lambda: psutil.Process().memory_info().rss
base = rss()
blocks = [libc.malloc(1 << 20) for _ in range(200)]  # 200 MB of 1 MB heap blocks, touched
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
for b in blocks:
    libc.free(b)
kept = rss() - base
assert release_freed_memory()
released = rss() - base
print(kept >> 20, released >> 20)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kept_mb, after_mb = map(int, out.stdout.split())
    assert kept_mb >= 150, kept_mb  # glibc kept the freed blocks (the reason for the trim)
    assert after_mb <= 30, (kept_mb, after_mb)
