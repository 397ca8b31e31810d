"""ROS message <-> numpy conversions used by the nodes (numpy only, no per-pixel Python loops).

cv_bridge is optional on these machines (the PyPI port is the ROS 1 code), so images are converted
with numpy. Decoding is avsnet_ros.data.rosbag_io's (duck-typed: the same functions read rclpy and
rosbags messages, so bags and live topics cannot disagree); this module re-exports them and adds
what only the nodes need: rclpy message builders, CameraInfo rescaling, PointCloud2, preview.

Echo message (the contract, see docs/ARCHITECTURE.md "Echo message"):
    sensor_msgs/Image, encoding 32FC1, height = 2 channels (row 0 left, row 1 right),
    width = samples at 44100 Hz, step = 4 * width, header.stamp = time the sweep's first sample
    left the speaker, header.frame_id = microphone frame. The direct-path onset sits at
    avsnet_ros.audio.ECHO_ONSET_SAMPLE.

Decoders raise rosbag_io.MessageError(reason, detail) on malformed input; `reason` is a short,
stable key that the nodes count in their diagnostics (e.g. "encoding", "size", "echo_non_finite").
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from avsnet_ros.data.rosbag_io import (MessageError, depth_from_image_msg, echo_from_image_msg,  # noqa: F401
                                       image_msg_to_array, intrinsics_from_camera_info_msg,
                                       rgb_from_image_msg)

# encoding -> (numpy dtype (little-endian), channels) for the messages the nodes build
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype("u1"), 3),
    "bgr8": (np.dtype("u1"), 3),
    "mono8": (np.dtype("u1"), 1),
    "mono16": (np.dtype("<u2"), 1),
    "16UC1": (np.dtype("<u2"), 1),
    "32FC1": (np.dtype("<f4"), 1),
}


# --------------------------------------------------------------------------------------------
# time
def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"negative stamp {stamp_ns} ns")
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# --------------------------------------------------------------------------------------------
# images
def array_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """numpy (H, W) or (H, W, C) -> sensor_msgs/Image in `encoding` (little-endian, unpadded)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    array = np.asarray(array)
    expected_ndim = 3 if channels > 1 else 2
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ValueError(f"{encoding} needs shape (H, W{', %d' % channels if channels > 1 else ''}), "
                         f"got {array.shape}")
    data = np.ascontiguousarray(array, dtype=dtype)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(data.shape[0]), int(data.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(data.shape[1] * channels * dtype.itemsize)
    msg.data = data.tobytes()
    return msg


# --------------------------------------------------------------------------------------------
# echo
def echo_to_msg(echo: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """(2, N) float32 echo buffer -> echo Image message (32FC1, height 2, width N)."""
    echo = np.asarray(echo, dtype=np.float32)
    if echo.ndim != 2 or echo.shape[0] != 2 or echo.shape[1] == 0:
        raise ValueError(f"echo must be (2, samples), got {echo.shape}")
    return array_to_image(echo, "32FC1", make_header(stamp_ns, frame_id))


# --------------------------------------------------------------------------------------------
# camera info
def camera_info_from_intrinsics(intrinsics: np.ndarray, width: int, height: int, header: Header,
                                distortion_model: str = "plumb_bob") -> CameraInfo:
    """CameraInfo for an undistorted pinhole camera with 3x3 `intrinsics` in pixels of the image."""
    k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = distortion_model
    msg.d = [0.0] * 5
    msg.k = k.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    p = np.zeros((3, 4))
    p[:, :3] = k
    msg.p = p.reshape(-1).tolist()
    return msg


def scale_camera_info(msg: CameraInfo, width: int, height: int, header: Header | None = None) -> CameraInfo:
    """CameraInfo of the same camera resampled to width x height.

    K and the 3x3 part of P follow avsnet_ros.data.samples.scale_intrinsics (pixel-centre convention
    of a bilinear resize with align_corners=False, as the pipeline resizes); P's Tx/Ty scale with
    fx/fy. D and R are unchanged; binning/ROI are reset.
    """
    from avsnet_ros.data.samples import scale_intrinsics

    from_hw, to_hw = (int(msg.height), int(msg.width)), (int(height), int(width))
    out = CameraInfo()
    out.header = header if header is not None else msg.header
    out.width, out.height = int(width), int(height)
    out.distortion_model = msg.distortion_model
    out.d = list(msg.d)
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    out.k = scale_intrinsics(k, from_hw, to_hw).reshape(-1).tolist()
    out.r = list(msg.r)
    p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4).copy()
    p_scaled = p.copy()
    p_scaled[:, :3] = scale_intrinsics(p[:, :3], from_hw, to_hw)
    p_scaled[0, 3] = p[0, 3] * (to_hw[1] / from_hw[1])
    p_scaled[1, 3] = p[1, 3] * (to_hw[0] / from_hw[0])
    out.p = p_scaled.reshape(-1).tolist()
    return out


# --------------------------------------------------------------------------------------------
# point cloud
def depth_to_pointcloud2(depth_m: np.ndarray, intrinsics: np.ndarray, header: Header,
                         stride: int = 1) -> PointCloud2:
    """(H, W) metres (NaN invalid) -> organised PointCloud2 (x, y, z float32) in the optical frame.

    REP 103 optical frame: x right, y down, z forward; invalid pixels give NaN points
    (is_dense = False), as depth_image_proc's point_cloud_xyz. `stride` subsamples pixels.
    """
    depth = np.asarray(depth_m, dtype=np.float32)[::stride, ::stride]
    k = np.asarray(intrinsics, dtype=np.float64)
    fx, fy, cx, cy = k[0, 0] / stride, k[1, 1] / stride, k[0, 2] / stride, k[1, 2] / stride
    height, width = depth.shape
    u = (np.arange(width, dtype=np.float32) - np.float32(cx)) / np.float32(fx)
    v = (np.arange(height, dtype=np.float32) - np.float32(cy)) / np.float32(fy)
    xyz = np.empty((height, width, 3), dtype=np.float32)
    xyz[..., 0] = u[None, :] * depth
    xyz[..., 1] = v[:, None] * depth
    xyz[..., 2] = depth
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate("xyz")]
    msg.is_bigendian = False
    msg.point_step = 12
    msg.row_step = 12 * width
    msg.is_dense = bool(np.isfinite(depth).all())
    msg.data = xyz.astype("<f4", copy=False).tobytes()
    return msg


def pointcloud2_to_xyz(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 with float32 x, y, z fields -> (H, W, 3) float32 (for tests and tools)."""
    offsets = {f.name: f.offset for f in msg.fields}
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.row_step)
    out = np.empty((msg.height, msg.width, 3), dtype=np.float32)
    for i, name in enumerate("xyz"):
        cols = raw[:, : msg.width * msg.point_step].reshape(msg.height, msg.width, msg.point_step)
        out[..., i] = cols[..., offsets[name]: offsets[name] + 4].copy().view("<f4")[..., 0]
    return out


# --------------------------------------------------------------------------------------------
# preview
def colorize_depth(depth_m: np.ndarray, min_depth_m: float, max_depth_m: float) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB with the turbo colour map on a fixed metric range.

    The range is fixed (not per-frame min-max) so colours mean the same metres in every frame;
    NaN pixels are black.
    """
    import cv2

    depth = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(depth)
    norm = np.zeros(depth.shape, dtype=np.float32)
    span = max(max_depth_m - min_depth_m, 1e-6)
    norm[valid] = np.clip((depth[valid] - min_depth_m) / span, 0.0, 1.0)
    bgr = cv2.applyColorMap((norm * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_TURBO)
    rgb = bgr[:, :, ::-1].copy()
    rgb[~valid] = 0
    return rgb


def msg_type_from_name(type_name: str):
    """'sensor_msgs/msg/Image' (rosbags/ROS 2 naming) -> the rclpy message class."""
    import importlib

    parts = type_name.split("/")
    if len(parts) == 2:  # 'sensor_msgs/Image'
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"bad message type name {type_name!r}")
    module = importlib.import_module(f"{parts[0]}.{parts[1]}")
    return getattr(module, parts[2])


def depth_legend(height: int, min_depth_m: float, max_depth_m: float, width: int = 70, ticks: int = 6) -> np.ndarray:
    """(height, width, 3) uint8 RGB colour bar for colorize_depth's range, labelled in metres
    (nearest at the top), to put beside a preview."""
    import cv2

    bar_w = max(width // 3, 8)
    values = np.linspace(min_depth_m, max_depth_m, height, dtype=np.float32)[:, None]
    bar = colorize_depth(np.repeat(values, bar_w, axis=1), min_depth_m, max_depth_m)
    legend = np.full((height, width, 3), 255, dtype=np.uint8)
    legend[:, :bar_w] = bar
    for i in range(ticks):
        frac = i / (ticks - 1)
        y = int(round(frac * (height - 1)))
        value = min_depth_m + frac * (max_depth_m - min_depth_m)
        cv2.line(legend, (bar_w, y), (bar_w + 4, y), (0, 0, 0), 1)
        ty = min(max(y + 4, 10), height - 2)
        cv2.putText(legend, f"{value:.1f}m", (bar_w + 6, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return legend
