"""DepthCollector: a listener node for the demo and the replay evaluation.

Receives avsnet/metric_depth and the ground truth camera/depth_gt (relative names: a namespace
moves them, e.g. /robot1/avsnet/metric_depth), matches them by header stamp
(exact: the depth node copies the camera header, the replay source stamps the ground truth like
its frame), scores each matched pair with avsnet_ros.metrics (NaN predictions are excluded and
counted), records the latency camera stamp -> depth receipt on this node's clock, counts messages
and rates per topic, and keeps the first few frames (RGB, ground truth, depth) for pictures.

Scale over time: avsnet/scale (Float32MultiArray [scale, confidence], no header) is published by
the depth node right after each depth image, so the n-th scale belongs to the n-th depth (paired by
order; both subscriptions are in this node's one mutually exclusive callback group, so each list
stays in arrival order). Per frame matched with ground truth the scale error is
|ln(median(depth) / median(GT))| over the valid GT pixels (avsnet_ros.metrics.median_log_scale_error).
The ground truth comes for every camera frame the replay publishes, answered or not, so a depth
frame's position among the ground-truth stamps received is its frame index in the recording.
summary()["scale"] reports per frame scale / confidence / error / Abs Rel / frame index, the jitter
(std of consecutive differences of ln(scale), avsnet_ros.metrics.log_scale_jitter: over the
published frames, and over frames adjacent in the recording only) and the error's mean and median.
The message handlers only decode; add_depth / add_gt / add_scale take the decoded values (tests
feed them directly).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray

from avsnet_ros.metrics import log_scale_jitter, median_log_scale_error
from avsnet_ros.nodes import conversions as conv
from avsnet_ros.nodes.common import SENSOR_QOS

TOPICS = {
    "depth": "avsnet/metric_depth",
    "gt": "camera/depth_gt",
    "image": "camera/image_raw",
    "echo": "avsnet/echo",
    "scale": "avsnet/scale",
}


#: unmatched depth / ground-truth images kept per side while their partner is on its way
MAX_WAITING = 64
#: camera frames kept beyond keep_frames while their depth is on its way (1280x720: 2.7 MB each)
MAX_RGB_WAITING = 8


def _take_or_wait(partners: "OrderedDict[int, np.ndarray]", own: "OrderedDict[int, np.ndarray]", stamp: int,
                  value: np.ndarray) -> "np.ndarray | None":
    """The partner image with this stamp (removed from `partners`), or None after parking `value` in
    `own` (oldest dropped beyond MAX_WAITING). Caller holds the lock."""
    partner = partners.pop(stamp, None)
    if partner is None:
        own[stamp] = value
        while len(own) > MAX_WAITING:
            own.popitem(last=False)
    return partner


class DepthCollector(Node):
    """See module docstring. keep_frames: how many (rgb, gt, depth) triples to keep for pictures."""

    def __init__(self, node_name: str = "avsnet_collector", *, max_depth_m: float = 30.0, keep_frames: int = 4,
                 **kwargs):
        super().__init__(node_name, **kwargs)
        from avsnet_ros.metrics import DepthMetricAccumulator

        self.max_depth_m = float(max_depth_m)
        self.keep_frames = int(keep_frames)
        self.lock = threading.Lock()
        self.accumulator = DepthMetricAccumulator(self.max_depth_m, invalid_pred="exclude")
        self.counts = {k: 0 for k in TOPICS}
        #: fully qualified names (counts and rates are reported under them), e.g. /avsnet/metric_depth
        self.topic_names = {k: self.resolve_topic_name(t) for k, t in TOPICS.items()}
        self.first_s: dict[str, float] = {}
        self.last_s: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.depth_stamps_ns: list[int] = []
        self.scales: list[tuple[float, float]] = []  # (scale, confidence) in arrival order
        self.scale_errors: dict[int, float] = {}  # depth stamp_ns -> |ln(median(depth) / median(GT))|
        self.frame_abs_rel: dict[int, float] = {}  # depth stamp_ns -> that frame's Abs Rel
        self.gt_stamps_ns: set[int] = set()  # every ground truth received: the recording's frame timeline
        self.unmatched_size = 0
        self.excluded_pred_pixels = 0
        self.kept: list[dict[str, Any]] = []
        self._gt: OrderedDict[int, np.ndarray] = OrderedDict()
        self._depth_waiting: OrderedDict[int, np.ndarray] = OrderedDict()
        self._rgb: OrderedDict[int, np.ndarray] = OrderedDict()
        self._subs = {
            "depth": self.create_subscription(Image, TOPICS["depth"], self._on_depth, SENSOR_QOS),
            "gt": self.create_subscription(Image, TOPICS["gt"], self._on_gt, SENSOR_QOS),
            "echo": self.create_subscription(Image, TOPICS["echo"], lambda m: self._tick("echo"), SENSOR_QOS),
            "scale": self.create_subscription(Float32MultiArray, TOPICS["scale"], self._on_scale, SENSOR_QOS),
        }
        # the camera is needed only for the kept pictures (decoding every frame costs CPU)
        if self.keep_frames > 0:
            self._subs["image"] = self.create_subscription(Image, TOPICS["image"], self._on_image, SENSOR_QOS)

    def set_max_depth(self, max_depth_m: float) -> None:
        """Evaluation max depth (the model's); call before frames arrive (resets the metrics)."""
        from avsnet_ros.metrics import DepthMetricAccumulator

        with self.lock:
            self.max_depth_m = float(max_depth_m)
            self.accumulator = DepthMetricAccumulator(self.max_depth_m, invalid_pred="exclude")

    def _tick(self, key: str) -> float:
        now = time.monotonic()
        with self.lock:
            self.counts[key] += 1
            self.first_s.setdefault(key, now)
            self.last_s[key] = now
        return now

    def rates_hz(self) -> dict[str, float]:
        """Mean message rate per topic between its first and last message."""
        with self.lock:
            out = {}
            for key, n in self.counts.items():
                span = self.last_s.get(key, 0.0) - self.first_s.get(key, 0.0)
                out[self.topic_names[key]] = (n - 1) / span if n > 1 and span > 0 else float("nan")
            return out

    def _on_image(self, msg: Image) -> None:
        self._tick("image")
        with self.lock:
            if len(self.kept) >= self.keep_frames:
                return
        try:
            rgb = conv.rgb_from_image_msg(msg)
        except conv.MessageError:
            return
        self.add_rgb(conv.stamp_to_ns(msg.header.stamp), rgb)

    def add_rgb(self, stamp: int, rgb: np.ndarray) -> None:
        """One camera frame (H, W, 3) uint8 for the kept pictures. The newest keep_frames + MAX_RGB_WAITING
        frames wait for their depth: a frame the node never answers (e.g. no echo yet) ages out instead of
        taking a picture's place (it did: the demo's fourth PNG had a black RGB panel)."""
        with self.lock:
            self._rgb[int(stamp)] = rgb
            while len(self._rgb) > self.keep_frames + MAX_RGB_WAITING:
                self._rgb.popitem(last=False)

    def _on_scale(self, msg: Float32MultiArray) -> None:
        self._tick("scale")
        if len(msg.data) >= 2:
            self.add_scale(float(msg.data[0]), float(msg.data[1]))
        else:  # keep the order pairing with the depth images: a placeholder, reported as non-finite
            self.get_logger().warning(f"avsnet/scale with {len(msg.data)} values (expected scale, confidence)",
                                      throttle_duration_sec=5.0)
            self.add_scale(float("nan"), float("nan"))

    def add_scale(self, scale: float, confidence: float) -> None:
        """One avsnet/scale message (the scale of the next depth image in order)."""
        with self.lock:
            self.scales.append((float(scale), float(confidence)))

    def _on_gt(self, msg: Image) -> None:
        self._tick("gt")
        self.add_gt(conv.stamp_to_ns(msg.header.stamp), conv.depth_from_image_msg(msg))

    def add_gt(self, stamp: int, gt: np.ndarray) -> None:
        """One ground-truth image (H, W) metres, NaN = no measurement, stamped like its camera frame."""
        with self.lock:
            self.gt_stamps_ns.add(int(stamp))
            depth = _take_or_wait(self._depth_waiting, self._gt, stamp, gt)
        if depth is not None:
            self._score(stamp, depth, gt)

    def _on_depth(self, msg: Image) -> None:
        now_ns = self.get_clock().now().nanoseconds
        self._tick("depth")
        self.add_depth(conv.stamp_to_ns(msg.header.stamp), conv.image_msg_to_array(msg).astype(np.float32, copy=False),
                       now_ns)

    def add_depth(self, stamp: int, depth: np.ndarray, received_ns: int) -> None:
        """One published depth (H, W) metres with its header stamp, received at received_ns (node clock)."""
        now_ns = int(received_ns)
        with self.lock:
            self.latencies_ms.append((now_ns - stamp) / 1e6)
            self.depth_stamps_ns.append(stamp)
            gt = _take_or_wait(self._gt, self._depth_waiting, stamp, depth)
        if gt is not None:
            self._score(stamp, depth, gt)

    def _score(self, stamp: int, depth: np.ndarray, gt: np.ndarray) -> None:
        if depth.shape != gt.shape:
            with self.lock:
                self.unmatched_size += 1
            self.get_logger().warning(f"depth {depth.shape} and ground truth {gt.shape} differ in size: not scored "
                                      "(publish depth at the camera size: output_*_px 0)", throttle_duration_sec=5.0)
            return
        # For median scaling the published depth is scale * R (range-masked to NaN outside the
        # model's depth range), so this is |ln(scale / GT-median scale)| with the GT-median scale =
        # median(GT) / median(R), the scale a perfect echo would have given this frame.
        error = median_log_scale_error(depth, gt, self.max_depth_m)
        with self.lock:
            self.scale_errors[stamp] = error
            metrics = self.accumulator.update(depth, gt, name=str(stamp))
            self.frame_abs_rel[stamp] = float(metrics["abs_rel"])
            self.excluded_pred_pixels += int(metrics.get("excluded_pred_pixels", 0))
            if len(self.kept) < self.keep_frames:
                self.kept.append(dict(stamp_ns=stamp, rgb=self._rgb.pop(stamp, None), gt_m=gt, depth_m=depth,
                                      metrics=metrics))

    def matched(self) -> int:
        with self.lock:
            return len(self.accumulator.per_image)

    def summary(self) -> dict[str, Any]:
        """Counts, rates, latency percentiles (ms) and the metrics summary."""
        with self.lock:
            lat = np.asarray(self.latencies_ms, dtype=np.float64)
            metrics = self.accumulator.summary()
            counts = {self.topic_names[k]: n for k, n in self.counts.items()}
            scales = list(self.scales)
            stamps = list(self.depth_stamps_ns)
            errors = dict(self.scale_errors)
            abs_rel = dict(self.frame_abs_rel)
            gt_stamps = sorted(self.gt_stamps_ns)
        latency = ({f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)} | {"max": float(lat.max()),
                   "mean": float(lat.mean()), "count": int(lat.size)}) if lat.size else {"count": 0}
        return {
            "depth_topic": self.topic_names["depth"],
            "counts": counts,
            "rates_hz": self.rates_hz(),
            "latency_ms": latency,
            "metrics": metrics,
            "matched_frames": int(metrics.get("count", 0)) + int(metrics.get("skipped", 0)),
            "unscored_size_mismatch": self.unmatched_size,
            "excluded_nan_pred_pixels": self.excluded_pred_pixels,
            "scale_mean": float(np.nanmean([s for s, _ in scales])) if scales else float("nan"),
            "confidence_mean": float(np.nanmean([c for _, c in scales])) if scales else float("nan"),
            "scale": scale_summary(stamps, scales, errors, gt_stamps, abs_rel),
        }


def scale_summary(depth_stamps_ns: list, scales: list, errors: dict, gt_stamps_ns: "list | None" = None,
                  abs_rel: "dict | None" = None) -> dict[str, Any]:
    """Per frame scale figures from the depth stamps (arrival order), the (scale, confidence) list
    (same order: paired by position), {stamp: scale error} and {stamp: Abs Rel} of the frames
    matched with GT, and the sorted stamps of every ground truth received (frame_index = position
    there; None without ground truth).

    jitter: std of consecutive differences of ln(scale) over the paired frames with a finite
    scale > 0, in order; jitter_adjacent: the same over differences between frames adjacent in the
    recording (both published); NaN below 2 differences. Frames whose scale is not finite or <= 0
    are counted in `nonfinite` and left out; `unpaired` = depth images without a scale message or
    the reverse.
    """
    index_of = {s: i for i, s in enumerate(gt_stamps_ns or [])}
    abs_rel = abs_rel or {}
    n = min(len(depth_stamps_ns), len(scales))
    per_frame = []
    for stamp, (scale, conf) in zip(depth_stamps_ns[:n], scales[:n]):
        err, ar = errors.get(stamp), abs_rel.get(stamp)
        per_frame.append({"stamp_ns": int(stamp), "frame_index": index_of.get(stamp), "scale": scale,
                          "confidence": conf,
                          "scale_error": None if err is None or not np.isfinite(err) else float(err),
                          "abs_rel": None if ar is None or not np.isfinite(ar) else float(ar)})
    good = [f for f in per_frame if np.isfinite(f["scale"]) and f["scale"] > 0]
    indexed = [f for f in good if f["frame_index"] is not None]
    errs = np.asarray([f["scale_error"] for f in per_frame if f["scale_error"] is not None], dtype=np.float64)
    return {
        "per_frame": per_frame,
        "frames": len(per_frame),
        "unpaired": abs(len(depth_stamps_ns) - len(scales)),
        "nonfinite": len(per_frame) - len(good),
        "jitter": log_scale_jitter([f["scale"] for f in good]),
        "jitter_adjacent": log_scale_jitter([f["scale"] for f in indexed], [f["frame_index"] for f in indexed]),
        "ground_truth_frames": len(index_of),
        "error_mean": float(errs.mean()) if errs.size else float("nan"),
        "error_median": float(np.median(errs)) if errs.size else float("nan"),
        "error_frames": int(errs.size),
    }
