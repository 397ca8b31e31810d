"""replay_source: publishes camera + camera_info + echo (+ ground-truth depth) from recorded data.

Inputs (`data_path`):
    - a BV2-layout folder (BatVision V2 or the synthetic world: <root>/<location>/<split>.csv or
      <location>/<split>.csv), read with avsnet_ros.data.BV2Dataset; frames are published at
      `rate_hz`, or at their recorded spacing (CSV stamp_ns) when rate_hz is 0;
    - a folder of loose BV2 instances (audio_<id>.wav, camera_<id>.jpeg, depth_<id>.npy without a
      CSV, like assets/batvision_v2_sample);
    - a rosbag2 (directory with metadata.yaml, or a .mcap/.db3 file) in the layout of
      avsnet_ros.data.rosbag_io: every message on its four topics is re-published in log order at
      the recorded timing (scaled by `playback_speed`).
    Empty = the bundled assets/demo_sequence (else assets/batvision_v2_sample).

Stamps (`stamp_mode`): "now" re-stamps every message with the node clock at publication (bags:
all stamps shifted by one constant, so echo/frame/gt relations are kept), "recorded" keeps the
recorded stamps (with `publish_clock:=true` the node publishes /clock from them, for consumers
with use_sim_time). For folder data the echo is stamped `echo_lead_s` before its frame (the sweep
is emitted before the camera exposure it is paired with); 0 stamps it like the frame, as bags do.

Per frame the order is camera_info, echo, depth_gt, image, so a consumer already holds the echo
when the image arrives. Topics: camera/image_raw, camera/camera_info, /avsnet/echo, camera/depth_gt,
and /avsnet/chirp (the echoes' sweep description, reliable + transient local as the chirp emitter's:
folder data: Sample.sweep, or "unknown", published before the first echo and whenever it changes;
bags: their /avsnet/chirp messages, in log order).
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Iterator

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from avsnet_ros.data.sources import is_bag, open_dataset, resolve_data_path
from avsnet_ros.nodes import conversions as conv
from avsnet_ros.nodes.common import CHIRP_QOS, OUTPUT_QOS, DropCounter, ParamSpec, declare_parameters, run_node_main

PARAMS = (
    ParamSpec("data_path", "", "BV2-layout folder, folder of loose BV2 instances, or rosbag2 "
              "('' = bundled assets/demo_sequence)"),
    ParamSpec("split", "test", "CSV split of a BV2-layout folder"),
    ParamSpec("rate_hz", 5.0, "frames per second for folder data (0 = recorded spacing from stamp_ns)",
              0.0, 1000.0),
    ParamSpec("playback_speed", 1.0, "speed factor for recorded timing (bags, rate_hz 0)", 0.01, 100.0),
    ParamSpec("loop", False, "start over at the end"),
    ParamSpec("max_frames", 0, "stop after this many camera frames (0 = all)", 0, 2**31 - 1),
    ParamSpec("stamp_mode", "now", "re-stamp with the node clock, or keep the recorded stamps",
              choices=("now", "recorded")),
    ParamSpec("publish_clock", False, "publish /clock (rosgraph_msgs/Clock) from the message stamps"),
    ParamSpec("publish_depth_gt", True, "publish ground-truth depth on camera/depth_gt when present"),
    ParamSpec("echo_lead_s", 0.0, "folder data: echo stamp = frame stamp - echo_lead_s", 0.0, 10.0),
    ParamSpec("image_after_echo_s", 0.01, "pause between a frame's echo and its image, so subscribers hold "
              "the echo when the image arrives (recorded order is kept otherwise)", 0.0, 1.0),
    ParamSpec("camera_frame_id", "camera_optical_frame", "folder data: frame_id of image/camera_info/depth"),
    ParamSpec("echo_frame_id", "microphones", "folder data: frame_id of the echo"),
    ParamSpec("start_delay_s", 0.5, "wait before the first message (discovery)", 0.0, 60.0),
    ParamSpec("wait_for_subscribers", 0, "before starting, wait (up to wait_timeout_s) until the image "
              "topic has this many subscribers", 0, 100),
    ParamSpec("wait_timeout_s", 10.0, "longest wait for subscribers", 0.0, 3600.0),
)


def _restamp_cdr(raw: bytes, stamp_ns: int) -> bytes:
    """Rewrite header.stamp of a CDR message that starts with std_msgs/Header (all four topics do)."""
    buf = bytearray(raw)
    fmt = "<iI" if buf[1] == 1 else ">iI"
    struct.pack_into(fmt, buf, 4, stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000)
    return bytes(buf)


class ReplaySource(Node):
    """Publishes recorded data (see module docstring). `finished` is set at the end (no loop)."""

    def __init__(self, node_name: str = "replay_source", **kwargs):
        super().__init__(node_name, **kwargs)
        self.values = declare_parameters(self, PARAMS)
        self.counts = DropCounter()  # frames, echoes, camera_infos, depth_gt published; skipped rows
        self.finished = threading.Event()
        self.startup_error: str | None = None
        self.published_frame_stamps_ns: list[int] = []
        v = self.values
        self._pub_image = self.create_publisher(Image, "camera/image_raw", OUTPUT_QOS)
        self._pub_info = self.create_publisher(CameraInfo, "camera/camera_info", OUTPUT_QOS)
        self._pub_echo = self.create_publisher(Image, "avsnet/echo", OUTPUT_QOS)
        self._pub_depth = self.create_publisher(Image, "camera/depth_gt", OUTPUT_QOS)
        self._pub_chirp = self.create_publisher(String, "avsnet/chirp", CHIRP_QOS)
        self._chirp_text: str | None = None  # the last description published (folder data)
        self._pub_clock = None
        if v["publish_clock"]:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self._pub_clock = self.create_publisher(Clock, "/clock", OUTPUT_QOS)
        self._stop = threading.Event()
        try:
            self.data_path = resolve_data_path(v["data_path"])
            self._bag = is_bag(self.data_path)
            self._dataset = None if self._bag else open_dataset(self.data_path, v["split"])
            if self._bag:
                next(iter(self._bag_messages()), None)  # readable, has the camera topic
        except Exception as exc:  # noqa: BLE001 - dataset errors name their file and row
            self.startup_error = f"replay_source: cannot open {v['data_path'] or 'the bundled data'}: {exc}"
            self.get_logger().error(self.startup_error)
            self.finished.set()
            return
        kind = "rosbag" if self._bag else f"BV2 folder ({len(self._dataset)} frames, split {v['split']})"
        timing = "recorded timing" if self._bag or v["rate_hz"] == 0 else f"{v['rate_hz']:g} Hz"
        self.get_logger().info(f"replaying {kind} {self.data_path} ({timing}, stamps {v['stamp_mode']}, "
                               f"loop {v['loop']})")
        self._thread = threading.Thread(target=self._run, name="replay_source", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=5.0)

    # ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        v = self.values
        try:
            if self._stop.wait(v["start_delay_s"]):
                return
            deadline = time.monotonic() + v["wait_timeout_s"]
            while (v["wait_for_subscribers"] and self._pub_image.get_subscription_count() < v["wait_for_subscribers"]
                   and time.monotonic() < deadline):
                if self._stop.wait(0.05):
                    return
            if self._bag:
                self._play_bag()
            else:
                self._play_folder()
        except Exception as exc:  # noqa: BLE001 - report, never crash the executor
            self.startup_error = f"replay_source failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.startup_error)
        finally:
            self.finished.set()
            self.get_logger().info(f"replay finished: {self.counts.get('frames')} frames published")

    def _sleep_until(self, t_monotonic: float) -> bool:
        """False when stopped."""
        delay = t_monotonic - time.monotonic()
        return not self._stop.wait(delay) if delay > 0 else not self._stop.is_set()

    def _publish_clock(self, stamp_ns: int) -> None:
        if self._pub_clock is not None:
            self._pub_clock.publish(self._clock_cls(clock=conv.ns_to_stamp(stamp_ns)))

    def _frame_budget_left(self) -> bool:
        return not self.values["max_frames"] or self.counts.get("frames") < self.values["max_frames"]

    def _play_folder(self) -> None:
        v = self.values
        n = len(self._dataset)
        period_s = 1.0 / v["rate_hz"] if v["rate_hz"] > 0 else None
        t_next = time.monotonic()
        recorded_base_ns = None
        start_mono = time.monotonic()
        loop_offset_ns = 0
        last_stamp_ns = 0
        while self._frame_budget_left():
            for i in range(n):
                if not self._frame_budget_left() or self._stop.is_set():
                    return
                try:
                    sample = self._dataset[i]
                except Exception as exc:  # noqa: BLE001 - a corrupt row: count, go on
                    self.counts.count("skipped_rows", str(exc))
                    self.get_logger().warning(f"skipping a row: {exc}", throttle_duration_sec=5.0)
                    continue
                if period_s is None:  # recorded spacing
                    if recorded_base_ns is None:
                        recorded_base_ns = sample.stamp_ns
                    rel_s = (sample.stamp_ns - recorded_base_ns + loop_offset_ns) / 1e9
                    t_next = start_mono + rel_s / v["playback_speed"]
                if not self._sleep_until(t_next):
                    return
                if v["stamp_mode"] == "now":
                    stamp_ns = self.get_clock().now().nanoseconds
                else:
                    stamp_ns = sample.stamp_ns + loop_offset_ns
                stamp_ns = max(stamp_ns, last_stamp_ns + 1)
                last_stamp_ns = stamp_ns
                self._publish_sample(sample, stamp_ns)
                if period_s is not None:
                    t_next += period_s
            if not v["loop"]:
                return
            span = (self._dataset[n - 1].stamp_ns - self._dataset[0].stamp_ns) if n > 1 else 0
            loop_offset_ns += span + int((period_s or 0.1) * 1e9)

    def _publish_sample(self, sample, stamp_ns: int) -> None:
        v = self.values
        h, w = sample.rgb.shape[:2]
        header = conv.make_header(stamp_ns, v["camera_frame_id"])
        echo_stamp_ns = max(stamp_ns - int(v["echo_lead_s"] * 1e9), 0)
        self._publish_clock(stamp_ns)
        self._pub_info.publish(conv.camera_info_from_intrinsics(sample.intrinsics, w, h, header))
        text = conv.chirp_text(sample.sweep)
        if text != self._chirp_text:
            self._pub_chirp.publish(String(data=text))
            self._chirp_text = text
            self.counts.count("chirps")
        self._pub_echo.publish(conv.echo_to_msg(sample.echo, echo_stamp_ns, v["echo_frame_id"]))
        self.counts.count("echoes")
        if sample.depth_m is not None and v["publish_depth_gt"]:
            self._pub_depth.publish(conv.array_to_image(sample.depth_m.astype(np.float32), "32FC1", header))
            self.counts.count("depth_gt")
        if v["image_after_echo_s"] > 0:
            time.sleep(v["image_after_echo_s"])
        self._pub_image.publish(conv.array_to_image(sample.rgb, "rgb8", header))
        self.published_frame_stamps_ns.append(stamp_ns)
        self.counts.count("frames")

    # ------------------------------------------------------------------------------------------
    def _bag_messages(self) -> Iterator[tuple[str, int, bytes]]:
        """(role, log time ns, raw CDR) for the topics of avsnet_ros.data.rosbag_io, in log order;
        among messages with the same log time the chirp precedes the echo and the image goes last."""
        from rosbags.rosbag2 import Reader

        from avsnet_ros.data.rosbag_io import DEFAULT_TOPICS

        roles = {DEFAULT_TOPICS.image: "image", DEFAULT_TOPICS.camera_info: "camera_info",
                 DEFAULT_TOPICS.echo: "echo", DEFAULT_TOPICS.depth: "depth", DEFAULT_TOPICS.chirp: "chirp"}
        order = {"camera_info": 0, "chirp": 1, "echo": 2, "depth": 3, "image": 4}
        with Reader(self.data_path) as reader:
            connections = [c for c in reader.connections if c.topic in roles]
            if not any(roles[c.topic] == "image" for c in connections):
                raise ValueError(f"bag {str(self.data_path)!r} has no {DEFAULT_TOPICS.image} topic "
                                 f"(topics: {sorted({c.topic for c in reader.connections})})")
            group: list[tuple[str, int, bytes]] = []
            for conn, log_ns, raw in reader.messages(connections=connections):
                if group and group[0][1] != log_ns:
                    yield from sorted(group, key=lambda m: order[m[0]])
                    group = []
                group.append((roles[conn.topic], int(log_ns), bytes(raw)))
            yield from sorted(group, key=lambda m: order[m[0]])

    def _play_bag(self) -> None:
        from avsnet_ros.data.rosbag_io import header_stamp_ns

        v = self.values
        pubs = {"image": self._pub_image, "camera_info": self._pub_info, "echo": self._pub_echo,
                "depth": self._pub_depth, "chirp": self._pub_chirp}
        shift_ns = None  # stamp shift (stamp_mode now): constant over the whole playback
        loop_extra_ns = 0
        last_log_ns = 0
        while True:
            start_mono = time.monotonic()
            first_log_ns = None
            for role, log_ns, raw in self._bag_messages():
                if self._stop.is_set():
                    return
                if role == "image" and not self._frame_budget_left():
                    return
                if role == "depth" and not v["publish_depth_gt"]:
                    continue
                if first_log_ns is None:
                    # pace from the first message itself, not from before the bag was opened: the stamp
                    # shift is taken at that message, so a slow open would otherwise publish every later
                    # message that much ahead of its stamp (negative latencies downstream)
                    first_log_ns, start_mono = log_ns, time.monotonic()
                if not self._sleep_until(start_mono + (log_ns - first_log_ns) / 1e9 / v["playback_speed"]):
                    return
                if role == "chirp":  # no header: published as recorded
                    self._pub_chirp.publish(raw)
                    self.counts.count("chirps")
                    continue
                stamp_ns = header_stamp_ns(raw)
                if stamp_ns is None:
                    self.counts.count("skipped_messages", f"{role}: unknown CDR encapsulation")
                    continue
                if v["stamp_mode"] == "now":
                    if shift_ns is None:
                        shift_ns = self.get_clock().now().nanoseconds - stamp_ns
                    new_stamp = stamp_ns + shift_ns + loop_extra_ns
                else:
                    new_stamp = stamp_ns + loop_extra_ns
                if new_stamp < 0:
                    self.counts.count("skipped_messages", f"{role}: negative stamp after shift")
                    continue
                if new_stamp != stamp_ns:
                    raw = _restamp_cdr(raw, new_stamp)
                self._publish_clock(new_stamp)
                if role == "image" and v["image_after_echo_s"] > 0:
                    time.sleep(v["image_after_echo_s"])
                pubs[role].publish(raw)
                last_log_ns = max(last_log_ns, log_ns)
                if role == "image":
                    self.published_frame_stamps_ns.append(new_stamp)
                    self.counts.count("frames")
                else:
                    self.counts.count({"camera_info": "camera_infos", "echo": "echoes", "depth": "depth_gt"}[role])
            if not v["loop"] or first_log_ns is None:
                return
            loop_extra_ns += last_log_ns - first_log_ns + 100_000_000


def main(args: list[str] | None = None) -> int:
    """Console script `replay_source` (ros2 run avsnet_ros replay_source)."""
    return run_node_main(lambda: ReplaySource(), args=args)


if __name__ == "__main__":
    raise SystemExit(main())
