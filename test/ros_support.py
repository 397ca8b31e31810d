"""Shared helpers of the node tests (no tests here): an rclpy context per module, tiny random
checkpoints, the real BV2 fixture as messages, and a harness node that talks to the nodes."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE = REPO_ROOT / "assets" / "batvision_v2_sample"


@contextlib.contextmanager
def ros_context(num_threads: int = 4):
    """(context, executor) with the executor spinning in a background thread; always shut down."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from avsnet_ros.nodes.common import shutdown_nodes, spin

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=num_threads, context=context)
    thread = threading.Thread(target=spin, args=(executor,), daemon=True)
    thread.start()
    try:
        yield context, executor
    finally:
        # Executor.shutdown() forgets its nodes: list them first, or they are never closed/destroyed
        # (their worker threads then run into interpreter exit: "terminate called ..." abort).
        shutdown_nodes(executor, list(executor.get_nodes()))
        rclpy.shutdown(context=context)
        thread.join(timeout=5.0)


def make_tiny_checkpoints(out_dir: Path, size_hw=(64, 128), seed: int = 0) -> dict[str, str]:
    """Random-initialised tiny AVS-Net (RGB + echo and RGB-only) and DepthNet checkpoints."""
    import torch

    from avsnet_ros.models import AVSNetConfig, RelativeDepthConfig, build_model, save_checkpoint

    torch.manual_seed(seed)
    paths = {}
    for key, cfg in (("avs", AVSNetConfig(preset="tiny", image_size_hw=size_hw)),
                     ("rgb", AVSNetConfig(preset="tiny", image_size_hw=size_hw, use_audio=False)),
                     ("rel", RelativeDepthConfig(preset="tiny", image_size_hw=size_hw))):
        model = build_model(cfg)
        save_checkpoint(out_dir / key, model, cfg)
        paths[key] = str(out_dir / key)
    return paths


def fixture_data():
    """The real BV2 instance: rgb (720, 1280, 3) uint8, echo (2, 20000) float32, depth_m, K."""
    import cv2

    from avsnet_ros.audio import read_wav
    from avsnet_ros.data.samples import depth_mm_to_m, nominal_intrinsics

    rgb = cv2.cvtColor(cv2.imread(str(FIXTURE / "camera_47.jpeg")), cv2.COLOR_BGR2RGB)
    echo, rate = read_wav(FIXTURE / "audio_47.wav")
    assert rate == 44100
    depth_m = depth_mm_to_m(np.load(FIXTURE / "depth_47.npy"))
    return rgb, echo, depth_m, nominal_intrinsics(rgb.shape[:2])


#: A small synthetic room: (delay after the direct path in samples, gain) of three reflections (walls at
#: ~2.3, 5.7 and 12 m), each 3-12x weaker than the direct path; the right microphone hears everything 3
#: samples later (the rig's ~2 cm path difference) and its reflections 5 samples later again.
SYNTHETIC_REFLECTIONS = ((600, 0.3), (1500, 0.15), (3100, 0.08))


def synthetic_echo(samples: int = 20000, amplitude: float = 0.3, noise_std: float = 1e-4, seed: int = 0,
                   onset_sample: int = 288, **sweep) -> np.ndarray:
    """(2, samples) float32: avsnet_ros.audio.make_sweep(**sweep) * amplitude convolved with a direct
    path at onset_sample (the echo contract's ECHO_ONSET_SAMPLE) plus SYNTHETIC_REFLECTIONS, plus white
    noise: a recording of that sweep in a simple room, in the echo buffer layout."""
    from avsnet_ros.audio import make_sweep

    s = make_sweep(**sweep).astype(np.float64) * amplitude
    impulse = np.zeros((2, samples))
    for ch in range(2):
        impulse[ch, onset_sample + 3 * ch] = 1.0
        for delay, gain in SYNTHETIC_REFLECTIONS:
            impulse[ch, onset_sample + delay + 8 * ch] = gain
    echo = np.stack([np.convolve(impulse[ch], s)[:samples] for ch in range(2)])
    echo += np.random.default_rng(seed).normal(0.0, noise_std, echo.shape)
    return echo.astype(np.float32)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, period_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return predicate()


def stop_nodes(executor, *nodes) -> None:
    """Remove nodes from a running executor, close() them (stops their threads) and destroy them."""
    for n in nodes:
        executor.remove_node(n)
        close = getattr(n, "close", None)
        if close is not None:
            close()
        n.destroy_node()


def recycle_node(node, harness, settle_s: float = 1.0) -> None:
    """deactivate -> cleanup -> configure -> activate a depth node: a fresh state (echoes, scale, frame order).

    Waits until the harness's publishers lost the old subscriptions and see the new ones, then `settle_s`
    more: the ROS graph reports a subscription before DDS has matched its data path, and a best-effort
    message published in between is lost (seen in CI on a loaded machine with 0.3 s).
    """
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert wait_for(lambda: harness.pub_image.get_subscription_count() == 0
                    and harness.pub_echo.get_subscription_count() == 0)  # unsubscribed while inactive
    for transition in (node.trigger_cleanup, node.trigger_configure, node.trigger_activate):
        assert transition() == TransitionCallbackReturn.SUCCESS
    harness.wait_connected()
    time.sleep(settle_s)


class Harness:
    """A plain node publishing camera/camera_info/echo and recording what the depth node publishes."""

    def __init__(self, context, executor, name: str = "test_harness"):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Float32MultiArray

        from avsnet_ros.nodes.common import OUTPUT_QOS, SENSOR_QOS

        self.node = Node(name, context=context)
        n = self.node
        self.pub_image = n.create_publisher(Image, "camera/image_raw", OUTPUT_QOS)
        self.pub_info = n.create_publisher(CameraInfo, "camera/camera_info", OUTPUT_QOS)
        self.pub_echo = n.create_publisher(Image, "/avsnet/echo", OUTPUT_QOS)
        self.lock = threading.Lock()
        self.received: dict[str, list] = {k: [] for k in ("depth", "camera_info", "scale", "points", "preview",
                                                          "diagnostics", "echo", "image", "gt", "clock")}

        def keep(key):
            def cb(msg):
                with self.lock:
                    self.received[key].append((time.monotonic(), msg))
            return cb

        n.create_subscription(Image, "/avsnet/metric_depth", keep("depth"), SENSOR_QOS)
        n.create_subscription(CameraInfo, "/avsnet/camera_info", keep("camera_info"), SENSOR_QOS)
        n.create_subscription(Float32MultiArray, "/avsnet/scale", keep("scale"), SENSOR_QOS)
        n.create_subscription(PointCloud2, "/avsnet/points", keep("points"), SENSOR_QOS)
        n.create_subscription(Image, "/avsnet/depth_preview", keep("preview"), SENSOR_QOS)
        n.create_subscription(DiagnosticArray, "/diagnostics", keep("diagnostics"), 10)
        executor.add_node(n)

    def listen(self, key: str, msg_type, topic: str) -> None:
        from avsnet_ros.nodes.common import SENSOR_QOS

        def cb(msg):
            with self.lock:
                self.received[key].append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, cb, SENSOR_QOS)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def count(self, key: str) -> int:
        with self.lock:
            return len(self.received[key])

    def messages(self, key: str) -> list:
        with self.lock:
            return [m for _, m in self.received[key]]

    def clear(self) -> None:
        with self.lock:
            for v in self.received.values():
                v.clear()

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        ok = wait_for(lambda: self.pub_image.get_subscription_count() > 0 and self.pub_echo.get_subscription_count() > 0
                      and self.node.count_publishers("/avsnet/metric_depth") > 0, timeout_s)
        assert ok, "depth node did not connect to the harness"

    # publishing helpers
    def send_info(self, k: np.ndarray, width: int, height: int, stamp_ns: int, frame_id="camera_optical_frame"):
        from avsnet_ros.nodes import conversions as conv

        self.pub_info.publish(conv.camera_info_from_intrinsics(k, width, height, conv.make_header(stamp_ns, frame_id)))

    def send_echo(self, echo: np.ndarray, stamp_ns: int, frame_id="microphones"):
        from avsnet_ros.nodes import conversions as conv

        self.pub_echo.publish(conv.echo_to_msg(echo, stamp_ns, frame_id))

    def send_image(self, rgb: np.ndarray, stamp_ns: int, frame_id="camera_optical_frame", encoding="rgb8"):
        from avsnet_ros.nodes import conversions as conv

        self.pub_image.publish(conv.array_to_image(rgb, encoding, conv.make_header(stamp_ns, frame_id)))
