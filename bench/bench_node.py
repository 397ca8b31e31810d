"""Depth node end to end over rclpy: camera publish -> /avsnet/metric_depth received (one process).

A DepthNode (real rclpy lifecycle node, real DDS transport through the default rmw) runs in a
MultiThreadedExecutor as `depth_node` does; a second node publishes the camera frame and the echo
and subscribes to the depth. Every frame gets a fresh echo (published and received first), so the
node runs the full pipeline for each frame, as the pipeline benchmark's full call does: the
difference is the ROS overhead (message conversion, DDS copies of the 2.7 MB frame and the 3.7 MB
depth, the worker hand-off, the camera_info and scale messages).

Used by bench_pipeline.py (the ratio needs both numbers from one run, interleaved); runs alone too.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402


class NodeHarness:
    """A DepthNode over a given pipeline + a driver node, spinning in a background executor.

    ``round_trip(rgb, echo) -> seconds`` publishes a fresh echo, waits until the node has it,
    then publishes the frame and returns the time from publish to depth received.
    """

    def __init__(self, pipeline, params: dict | None = None):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from avsnet_ros.nodes.common import SENSOR_QOS
        from avsnet_ros.nodes.depth_node import DepthNode

        self._own_context = not rclpy.ok()
        if self._own_context:
            rclpy.init()
        overrides = {"publish_preview": False, "diagnostics_period_s": 1.0, "max_echo_age_s": 2.0,
                     "torch_threads": 0}
        overrides.update(params or {})
        from rclpy.parameter import Parameter

        self.node = DepthNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
                              pipeline_factory=lambda v: (pipeline, None))
        if self.node.startup_error:
            raise RuntimeError(self.node.startup_error)
        self.driver = rclpy.create_node("bench_driver")
        self.cam_pub = self.driver.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.info_pub = self.driver.create_publisher(CameraInfo, "camera/camera_info", SENSOR_QOS)
        self.echo_pub = self.driver.create_publisher(Image, "/avsnet/echo", SENSOR_QOS)
        self._got = threading.Event()
        self._recv_t = 0.0
        self._want_stamp = None
        self.received = 0

        def on_depth(msg) -> None:
            from avsnet_ros.nodes.conversions import stamp_to_ns

            if stamp_to_ns(msg.header.stamp) == self._want_stamp:
                self._recv_t = time.perf_counter()
                self.received += 1
                self._got.set()

        self.depth_sub = self.driver.create_subscription(
            Image, "/avsnet/metric_depth", on_depth, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.executor.add_node(self.driver)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self._wait_for(lambda: self.cam_pub.get_subscription_count() > 0
                       and self.echo_pub.get_subscription_count() > 0
                       and self.depth_sub.get_publisher_count() > 0, 10.0, "discovery")

    @staticmethod
    def _wait_for(pred, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.002)

    def round_trip(self, rgb: np.ndarray, echo: np.ndarray, timeout_s: float = 30.0) -> float:
        from avsnet_ros.nodes import conversions as conv

        now_ns = self.node.get_clock().now().nanoseconds
        echoes_before = self.node.counters()["echoes_in"]
        self.echo_pub.publish(conv.echo_to_msg(echo, now_ns - 20_000_000, "microphones"))
        self._wait_for(lambda: self.node.counters()["echoes_in"] > echoes_before, timeout_s, "echo")
        # the echo callback validates after counting echoes_in: let it store the echo
        time.sleep(0.005)
        header = conv.make_header(now_ns, "camera")
        msg = conv.array_to_image(rgb, "rgb8", header)
        self._want_stamp = now_ns
        self._got.clear()
        t0 = time.perf_counter()
        self.cam_pub.publish(msg)
        if not self._got.wait(timeout_s):
            raise TimeoutError(f"no depth for the frame within {timeout_s} s: {self.node.counters()}")
        return self._recv_t - t0

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.node.close()
        self.node.destroy_node()
        self.driver.destroy_node()
        if self._own_context and rclpy.ok():
            rclpy.shutdown()


def run(quick: bool = False) -> dict:
    from bench_util import environment, fixture_inputs, load_models, summarize

    from avsnet_ros.pipeline import DepthPipeline

    models = load_models()
    pipe = DepthPipeline(models["avs"], models["relative"], device="auto")
    rgb, echo, _ = fixture_inputs()
    harness = NodeHarness(pipe)
    try:
        for _ in range(2):
            harness.round_trip(rgb, echo)
        times = [harness.round_trip(rgb, echo) for _ in range(5 if quick else 15)]
        counters = harness.node.counters()
    finally:
        harness.close()
    return {"name": "node", "node_end_to_end": summarize(times), "counters": counters,
            "models": models["source"], "environment": environment(), "targets": []}


if __name__ == "__main__":
    from bench_util import main_for

    raise SystemExit(main_for("node", run))
