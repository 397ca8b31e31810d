"""ROS message <-> numpy conversions used by the nodes (numpy only, no per-pixel Python loops).

cv_bridge is optional on these machines (the PyPI port is the ROS 1 code), so images are converted
with numpy, following cv_bridge's rules (camera encodings rgb8, bgr8, rgba8, bgra8, mono8, mono16 ->
RGB as toCvCopy(msg, "rgb8"); depth encodings refused on the camera topic). Decoding is
avsnet_ros.data.codec's (duck-typed: the same functions read rclpy and rosbags messages, so bags
and live topics cannot disagree); this module re-exports them and adds
what only the nodes need: rclpy message builders, CameraInfo rescaling, PointCloud2; the preview
colouriser is re-exported from avsnet_ros.visualization.

Echo message (the contract, see docs/ARCHITECTURE.md "Echo message"):
    sensor_msgs/Image, encoding 32FC1, height = 2 channels (row 0 left, row 1 right),
    width = samples at 44100 Hz, step = 4 * width, header.stamp = time the sweep's first sample
    left the speaker, header.frame_id = microphone frame. The direct-path onset sits at
    avsnet_ros.audio.ECHO_ONSET_SAMPLE.

Decoders raise codec.MessageError(reason, detail) on malformed input; `reason` is a short,
stable key that the nodes count in their diagnostics (e.g. "image_encoding", "image_depth_encoding",
"size", "echo_non_finite").
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Float32MultiArray, Header, MultiArrayDimension, MultiArrayLayout

from avsnet_ros.data.codec import (CAMERA_ENCODINGS, CHIRP_UNKNOWN, DEPTH_ENCODINGS, IMAGE_ENCODINGS,  # noqa: F401
                                   MessageError, chirp_text, depth_from_image_msg, echo_from_image_msg,
                                   image_msg_to_array, image_payload, intrinsics_from_camera_info_msg,
                                   pinhole_camera_info_arrays, rgb_from_image_msg, stamp_ns_to_sec_nanosec,
                                   sweep_from_chirp_text, time_to_ns)
from avsnet_ros.visualization import colorize_depth, depth_legend  # noqa: F401  (preview colours: one implementation)


# --------------------------------------------------------------------------------------------
# time
def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return time_to_ns(stamp)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time."""
    sec, nanosec = stamp_ns_to_sec_nanosec(stamp_ns)
    return Time(sec=sec, nanosec=nanosec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def _uint8_array(data: np.ndarray) -> array.array:
    """A contiguous array's bytes as the array.array('B') rclpy keeps in uint8[] fields: one copy
    (msg.data = ndarray.tobytes() costs two: tobytes, then rclpy's array.array('B', bytes))."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    return out


# --------------------------------------------------------------------------------------------
# images
def array_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """numpy (H, W) or (H, W, C) -> sensor_msgs/Image in `encoding` (little-endian, unpadded;
    values converted to the encoding's dtype; checks: data.codec.image_payload)."""
    data, step = image_payload(array, encoding, cast=True)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(data.shape[0]), int(data.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = _uint8_array(data)
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
    arrays = pinhole_camera_info_arrays(intrinsics)
    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = distortion_model
    for name in ("d", "k", "r", "p"):
        setattr(msg, name, arrays[name].tolist())
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


def camera_info_problem(msg: CameraInfo) -> str | None:
    """Why a CameraInfo cannot describe the depth output (K unset or invalid, no image size), or None."""
    try:
        intrinsics_from_camera_info_msg(msg)
    except MessageError as exc:
        return str(exc)
    if msg.width == 0 or msg.height == 0:
        return "camera_info without image size"
    return None


# --------------------------------------------------------------------------------------------
# scale
_SCALE_LAYOUT = MultiArrayLayout(dim=[MultiArrayDimension(label="scale,confidence", size=2, stride=2)], data_offset=0)


def scale_to_msg(scale: float, confidence: float) -> Float32MultiArray:
    """avsnet/scale: Float32MultiArray [scale, confidence in [0, 1]] (no header; scale: FrameDepth.scale)."""
    return Float32MultiArray(layout=_SCALE_LAYOUT, data=[float(scale), float(confidence)])


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
    msg.data = _uint8_array(xyz.astype("<f4", copy=False))
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
