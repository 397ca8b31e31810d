"""Depth node end to end over rclpy: camera publish -> /avsnet/metric_depth received.

The depth node runs as its own process, exactly as `ros2 run avsnet_ros depth_node` /
`python -m avsnet_ros.nodes.depth_node` starts it (real lifecycle node, real DDS transport
through the default rmw), loading the benchmark's models from checkpoint directories. The
benchmark process publishes the camera frame and a fresh echo before every frame (so the node runs
the full pipeline for each frame, as the pipeline benchmark's full call does) and subscribes to
the depth. The difference to the full call is the ROS overhead: message conversion, DDS copies of
the 2.7 MB frame and the 3.7 MB depth, the hand-off to the inference worker, the camera_info and
scale messages.

Why a second process: in one process, the benchmark's own main-thread torch calls and the node's
worker thread would each keep a GNU OpenMP thread team, which slows both (see
avsnet_ros/nodes/depth_node.py, _in_passing_thread); a deployed node has the process to itself.

Used by bench_pipeline.py (the ratio needs both numbers from one run, interleaved); runs alone too.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_util import DEFAULT_THREADS, REPO_ROOT  # noqa: E402


class NodeProcess:
    """A depth_node process over the given models + a driver node in this process.

    ``round_trip(rgb, echo) -> seconds`` publishes a fresh echo, gives the node time to check it,
    then publishes the frame and returns the time from publish to depth received.
    """

    def __init__(self, models: dict, threads: int = DEFAULT_THREADS, echo_lead_s: float = 0.1):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from avsnet_ros.models import save_checkpoint
        from avsnet_ros.nodes.common import SENSOR_QOS, diagnostic_values, keep_freed_memory, spin

        # This process plays the camera driver and the depth subscriber. Like the depth node (its
        # malloc_keep_freed_mb), it keeps freed memory: with glibc's default thresholds every 2.7 MB
        # frame sent and 3.7 MB depth received is a fresh mmap, ~4-5 ms of page faults per message
        # (2-process ping-pong of 1280x720 rgb8: 13.3 ms round trip, 4.5 ms with both keeping).
        keep_freed_memory(64 << 20)
        self._tmp = tempfile.TemporaryDirectory(prefix="bench_node_")
        ckpt = {}
        for key in ("avs", "relative"):
            path = models.get(f"{key}_path")
            if path is None:
                path = Path(self._tmp.name) / key
                save_checkpoint(path, models[key], models[key].config)
            ckpt[key] = str(path)
        self.echo_lead_s = echo_lead_s
        # Transport: importing avsnet_ros.nodes (above) applied nodes/transport.py's Fast DDS profile
        # to this process's environment; the depth node process inherits it, so both sides use it.
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        self.log_path = Path(self._tmp.name) / "depth_node.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avsnet_ros.nodes.depth_node", "--ros-args",
             "-p", f"avs_checkpoint:={ckpt['avs']}", "-p", f"relative_checkpoint:={ckpt['relative']}",
             "-p", "device:=cpu", "-p", "publish_preview:=false", "-p", "max_echo_age_s:=2.0",
             "-p", f"torch_threads:={threads}", "-p", "diagnostics_period_s:=0.5"],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._own_context = not rclpy.ok()
        if self._own_context:
            rclpy.init()
        self.driver = rclpy.create_node("bench_driver")
        self.cam_pub = self.driver.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.info_pub = self.driver.create_publisher(CameraInfo, "camera/camera_info", SENSOR_QOS)
        self.echo_pub = self.driver.create_publisher(Image, "/avsnet/echo", SENSOR_QOS)
        self._got = threading.Event()
        self._recv_t = 0.0
        self._want_stamp = None
        self.diagnostics: dict = {}

        def on_depth(msg) -> None:
            from avsnet_ros.nodes.conversions import stamp_to_ns

            if stamp_to_ns(msg.header.stamp) == self._want_stamp:
                self._recv_t = time.perf_counter()
                self._got.set()

        def on_diag(msg) -> None:
            values = diagnostic_values(msg, "depth_node")
            if values:
                self.diagnostics = values

        self.depth_sub = self.driver.create_subscription(
            Image, "/avsnet/metric_depth", on_depth, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.diag_sub = self.driver.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.driver)
        self._spin = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self._spin.start()
        self._wait_for(lambda: self.cam_pub.get_subscription_count() > 0
                       and self.echo_pub.get_subscription_count() > 0
                       and self.depth_sub.get_publisher_count() > 0, 120.0, "the depth_node process")

    def _wait_for(self, pred, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if self.proc.poll() is not None:
                raise RuntimeError(f"depth_node exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.005)

    def prime(self, echo: np.ndarray, timeout_s: float = 60.0) -> None:
        """Publish `echo` until the node reports it taken (its first echo identifies the sweep: ~0.1 s
        on a quiet machine, seconds on a loaded one, far longer than echo_lead_s), so that no timed
        frame finds the node without an echo."""
        from avsnet_ros.nodes import conversions as conv

        deadline = time.monotonic() + timeout_s
        while int(self.diagnostics.get("echoes_in", 0) or 0) < 1 or not self.diagnostics.get("echo_sweep"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the node took no echo within {timeout_s} s; diagnostics {self.diagnostics}")
            now_ns = self.driver.get_clock().now().nanoseconds
            self.echo_pub.publish(conv.echo_to_msg(echo, now_ns, "microphones"))
            time.sleep(0.6)  # the diagnostics period is 0.5 s

    def round_trip(self, rgb: np.ndarray, echo: np.ndarray, timeout_s: float = 60.0) -> float:
        from avsnet_ros.nodes import conversions as conv

        now_ns = self.driver.get_clock().now().nanoseconds
        self.echo_pub.publish(conv.echo_to_msg(echo, now_ns - 20_000_000, "microphones"))
        time.sleep(self.echo_lead_s)  # the node validates the echo (front-end, checks) before the frame
        msg = conv.array_to_image(rgb, "rgb8", conv.make_header(now_ns, "camera"))
        self._want_stamp = now_ns
        self._got.clear()
        t0 = time.perf_counter()
        self.cam_pub.publish(msg)
        if not self._got.wait(timeout_s):
            raise TimeoutError(f"no depth for the frame within {timeout_s} s; diagnostics {self.diagnostics}")
        return self._recv_t - t0

    def counters(self, wait_s: float = 1.5) -> dict:
        """The node's counters from its /diagnostics (scale modes, drops, inference time)."""
        time.sleep(wait_s)
        keys = ("frames_in", "frames_out", "count.scale_fresh", "count.scale_reuse", "frames_dropped",
                "echoes_dropped", "inference_ms_mean")
        return {k: self.diagnostics.get(k) for k in keys}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.driver.destroy_node()
        if self._own_context and rclpy.ok():
            rclpy.shutdown()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
        self._tmp.cleanup()


def run(quick: bool = False) -> dict:
    from bench_util import environment, fixture_inputs, load_models, summarize

    models = load_models()
    rgb, echo, _ = fixture_inputs()
    node = NodeProcess(models)
    try:
        node.prime(echo)
        for _ in range(2):
            node.round_trip(rgb, echo)
        times = []
        for _ in range(5 if quick else 15):
            time.sleep(0.02)
            times.append(node.round_trip(rgb, echo))
        counters = node.counters()
    finally:
        node.close()
    return {"name": "node", "node_end_to_end": summarize(times), "counters": counters,
            "models": models["source"], "environment": environment(), "targets": []}


if __name__ == "__main__":
    from bench_util import main_for

    raise SystemExit(main_for("node", run))
