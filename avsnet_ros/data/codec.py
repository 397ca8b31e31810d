"""sensor_msgs message <-> numpy codec: duck-typed, so rosbags (bags) and rclpy (live topics) messages
decode through the same functions and cannot disagree.

Used by avsnet_ros.data.rosbag_io (bag reading/writing) and avsnet_ros.nodes.conversions (the nodes);
imports neither rosbags nor rclpy. Decoders raise MessageError(reason, detail) on malformed input;
``reason`` is a short, stable key (e.g. "encoding", "size", "truncated", "image_encoding",
"image_depth_encoding", "echo_non_finite") counted by the bag reader and the nodes.

Images (REP 118 / cv_bridge conventions):
    camera  rgb8, bgr8, rgba8, bgra8, mono8, mono16 -> (H, W, 3) uint8 RGB (rgb_from_image_msg, as
            cv_bridge's toCvCopy(msg, "rgb8")); 16UC1 / 32FC1 refused as depth encodings
    depth   32FC1 metres (NaN/0/inf invalid) or 16UC1/mono16 millimetres (0 invalid) -> (H, W) float32 m
    echo    32FC1, height 2 (row 0 left, row 1 right), width = samples -> (2, N) float32
Chirp description (`avsnet/chirp`, std_msgs/String): the emitted sweep as SweepSpec.to_text(), or
CHIRP_UNKNOWN ("unknown": the sweep is not known from here on, receivers identify it) ->
SweepSpec or None (sweep_from_chirp_text; an empty or unparsable text is MessageError "chirp_invalid").
Row padding (step > width * channels * bytes) and is_bigendian are honoured when decoding; encoding
writes little-endian, unpadded rows.
"""
from __future__ import annotations

import struct

import numpy as np

from avsnet_ros.audio.frontend import SweepSpec
from avsnet_ros.data.samples import valid_depth

__all__ = [
    "MessageError",
    "IMAGE_ENCODINGS",
    "CAMERA_ENCODINGS",
    "DEPTH_ENCODINGS",
    "stamp_ns_to_sec_nanosec",
    "time_to_ns",
    "header_stamp_ns",
    "image_payload",
    "image_msg_to_array",
    "rgb_from_image_msg",
    "depth_from_image_msg",
    "echo_from_image_msg",
    "pinhole_camera_info_arrays",
    "intrinsics_from_camera_info_msg",
    "CHIRP_UNKNOWN",
    "chirp_text",
    "sweep_from_chirp_text",
]


class MessageError(ValueError):
    """A malformed message; `reason` is a short key counted in BagReadReport.rejected and
    in the nodes' drop diagnostics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason

# encoding -> (numpy dtype (little-endian), channels): the one table for encoding and decoding
# (rosbags and rclpy messages alike; avsnet_ros.nodes.conversions uses it too)
IMAGE_ENCODINGS = {
    "rgb8": (np.dtype("u1"), 3),
    "bgr8": (np.dtype("u1"), 3),
    "rgba8": (np.dtype("u1"), 4),
    "bgra8": (np.dtype("u1"), 4),
    "mono8": (np.dtype("u1"), 1),
    "16UC1": (np.dtype("<u2"), 1),
    "mono16": (np.dtype("<u2"), 1),
    "32FC1": (np.dtype("<f4"), 1),
}
# Camera encodings the decoder converts to RGB (rgb_from_image_msg) and the depth encodings it
# refuses on the camera topic with their own reason.
CAMERA_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEPTH_ENCODINGS = ("16UC1", "32FC1")

def stamp_ns_to_sec_nanosec(stamp_ns: int) -> "tuple[int, int]":
    """Integer nanoseconds (>= 0) -> (sec, nanosec) of builtin_interfaces/Time; ValueError if negative."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"negative stamp {stamp_ns} ns")
    return stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000


def time_to_ns(stamp) -> int:
    """builtin_interfaces/Time (rosbags or rclpy) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)

def image_payload(array: np.ndarray, encoding: str, cast: bool = False) -> "tuple[np.ndarray, int]":
    """Checked pixel data of an Image message: (H, W[, C]) array -> (contiguous little-endian array, step).

    The one encoder behind rosbag_io.array_to_image_msg (rosbags) and nodes.conversions.array_to_image (rclpy).
    ValueError for an unknown encoding or a wrong shape; a dtype other than the encoding's is
    converted with ``cast=True`` and refused otherwise.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    a = np.asarray(array)
    if a.ndim != (3 if channels > 1 else 2) or (channels > 1 and a.shape[2] != channels):
        raise ValueError(f"{encoding} needs {f'(H, W, {channels})' if channels > 1 else '(H, W)'}, got {a.shape}")
    if not cast and a.dtype != dtype.newbyteorder("=") and a.dtype != dtype:
        raise ValueError(f"{encoding} needs dtype {dtype}, got {a.dtype}")
    data = np.ascontiguousarray(a, dtype=dtype)
    return data, int(data.shape[1] * channels * dtype.itemsize)

def image_msg_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image (rosbags or rclpy) -> (H, W) / (H, W, C) native-endian array.

    Honours step (row padding) and is_bigendian. Raises MessageError("encoding"|"size"|"truncated").
    Unpadded rows in native byte order give a view sharing memory with ``msg.data`` (no 2.7 MB
    copy per 1280x720 camera frame); otherwise a copy.
    """
    enc = str(msg.encoding)
    if enc not in IMAGE_ENCODINGS:
        raise MessageError("encoding", f"unsupported encoding {enc!r} (supported: {', '.join(IMAGE_ENCODINGS)})")
    dtype, channels = IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError("size", f"empty image {w}x{h}")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise MessageError("size", f"step {step} < {row_bytes} bytes per row")
    raw = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if raw.size < step * (h - 1) + row_bytes:
        raise MessageError("truncated", f"{raw.size} bytes for {enc} {w}x{h} with step {step}")
    shape = (h, w, channels) if channels > 1 else (h, w)
    src = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    if step == row_bytes and (dtype.itemsize == 1 or src.isnative):
        return raw[: h * row_bytes].view(src).reshape(shape)
    rows = np.lib.stride_tricks.as_strided(raw, shape=(h, row_bytes), strides=(step, 1), writeable=False)
    out = np.ascontiguousarray(rows).view(src).reshape(shape)
    return out.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else out


def rgb_from_image_msg(msg) -> np.ndarray:
    """Camera Image -> (H, W, 3) uint8 RGB, converted as cv_bridge's ``toCvCopy(msg, "rgb8")``.

    rgb8: the pixels (sharing memory with msg.data when unpadded); bgr8 / bgra8 / rgba8: channels
    reordered, alpha dropped (cv::COLOR_BGR2RGB / BGRA2RGB / RGBA2RGB); mono8: the grey value in
    all three channels (COLOR_GRAY2RGB); mono16: grey replicated and scaled to 8 bit as cv_bridge
    does for a 16 -> 8 bit conversion (cv_bridge.cpp ``cvtColor``: ``convertTo(CV_8U, 255. / 65535.)``,
    i.e. round(v * 255 / 65535) = round(v / 257), not v >> 8). Raises MessageError
    "image_depth_encoding" for 16UC1 / 32FC1 (a depth map on the camera topic: a wiring error, with
    that reason) and "image_encoding" for any other encoding; "size" / "truncated" from the decoder.
    """
    enc = str(msg.encoding)
    if enc in DEPTH_ENCODINGS:
        raise MessageError("image_depth_encoding", f"{enc!r} is a depth encoding; the camera topic needs a colour "
                           f"or grey image ({', '.join(CAMERA_ENCODINGS)}): is a depth topic remapped onto it?")
    if enc not in CAMERA_ENCODINGS:
        raise MessageError("image_encoding", f"camera image must be one of {', '.join(CAMERA_ENCODINGS)}, got {enc!r}")
    a = image_msg_to_array(msg)
    if enc == "rgb8":
        return a
    if enc == "rgba8":
        return np.ascontiguousarray(a[:, :, :3])
    if enc in ("bgr8", "bgra8"):
        return np.ascontiguousarray(a[:, :, 2::-1])
    if enc == "mono16":
        # round(v * 255 / 65535) in integers: exact (no ties: v / 257 is never k + 1/2)
        a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(a[:, :, None], 3, axis=2)


def depth_from_image_msg(msg) -> np.ndarray:
    """Depth Image (32FC1 metres or 16UC1/mono16 millimetres, REP 118) -> (H, W) float32 m, NaN
    invalid. Millimetres use samples.depth_mm_to_m, so 16UC1 bags and uint16 .npy files agree."""
    from avsnet_ros.data.samples import depth_mm_to_m

    if msg.encoding == "32FC1":
        d = image_msg_to_array(msg).astype(np.float32, copy=True)
        d[~valid_depth(d, np.inf)] = np.nan
        return d
    if msg.encoding in ("16UC1", "mono16"):
        return depth_mm_to_m(image_msg_to_array(msg))
    raise MessageError("depth_encoding", f"depth must be 32FC1 (m) or 16UC1/mono16 (mm), got {msg.encoding!r}")

def echo_from_image_msg(msg, min_samples: int = 1) -> np.ndarray:
    """Echo Image -> (2, N) float32. MessageError: echo_encoding, echo_channels, echo_length,
    echo_truncated/echo_size, echo_non_finite."""
    if msg.encoding != "32FC1":
        raise MessageError("echo_encoding", f"echo must be 32FC1, got {msg.encoding!r}")
    if int(msg.height) != 2:
        raise MessageError("echo_channels", f"echo must have height 2 (left, right), got {msg.height}")
    if int(msg.width) < min_samples:
        raise MessageError("echo_length", f"echo has {msg.width} samples, need at least {min_samples}")
    try:
        e = image_msg_to_array(msg)
    except MessageError as exc:
        raise MessageError("echo_" + exc.reason, str(exc)) from None
    if not np.isfinite(e).all():
        raise MessageError("echo_non_finite", "echo holds NaN or inf samples")
    return np.ascontiguousarray(e, dtype=np.float32)


def pinhole_camera_info_arrays(intrinsics: np.ndarray) -> "dict[str, np.ndarray]":
    """d, k, r, p (flat float64) of an undistorted pinhole CameraInfo (plumb_bob, zero distortion,
    R = I, P = [K | 0]) for 3x3 ``intrinsics``: shared by the rosbags and rclpy builders."""
    k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    p = np.zeros((3, 4), dtype=np.float64)
    p[:, :3] = k
    return {"d": np.zeros(5, dtype=np.float64), "k": k.reshape(-1).copy(),
            "r": np.eye(3, dtype=np.float64).reshape(-1), "p": p.reshape(-1)}

def intrinsics_from_camera_info_msg(msg) -> np.ndarray:
    """(3, 3) float64 K; MessageError("camera_info") when unset (fx or fy <= 0) or non-finite."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
        raise MessageError("camera_info", "K is unset or invalid")
    return k


def header_stamp_ns(raw: bytes) -> "int | None":
    """header.stamp (ns) of a CDR-serialised message that starts with std_msgs/Header, read from the
    first bytes without deserialising the image payload; None for an unknown encapsulation."""
    if len(raw) < 12 or raw[0] != 0:
        return None
    if raw[1] == 1:
        sec, nsec = struct.unpack_from("<iI", raw, 4)
    elif raw[1] == 0:
        sec, nsec = struct.unpack_from(">iI", raw, 4)
    else:
        return None
    return int(sec) * 1_000_000_000 + int(nsec)


#: The chirp description of "the sweep is not known" (a replay of undescribed recordings, samples
#: without a sweep after described ones in a bag): receivers forget the previous description.
CHIRP_UNKNOWN = "unknown"


def chirp_text(sweep: "SweepSpec | None") -> str:
    """The `avsnet/chirp` text of a sweep: SweepSpec.to_text(), or CHIRP_UNKNOWN for None."""
    return CHIRP_UNKNOWN if sweep is None else sweep.to_text()


def sweep_from_chirp_text(text: str, sample_rate_hz: "int | None" = None) -> "SweepSpec | None":
    """An `avsnet/chirp` text -> SweepSpec, or None for CHIRP_UNKNOWN.

    MessageError("chirp_invalid") for an empty text (a default-constructed String would otherwise
    parse to the default sweep), an unparsable one (SweepSpec.from_text's message), or a sweep at
    another rate than sample_rate_hz (when given: the echo contract's rate).
    """
    stripped = str(text).strip()
    if not stripped:
        raise MessageError("chirp_invalid", "empty chirp description")
    if stripped.lower() == CHIRP_UNKNOWN:
        return None
    try:
        sweep = SweepSpec.from_text(stripped)
    except ValueError as exc:
        raise MessageError("chirp_invalid", str(exc)[:300]) from None
    if sample_rate_hz is not None and int(sweep.sample_rate_hz) != int(sample_rate_hz):
        raise MessageError("chirp_invalid", f"sweep at {sweep.sample_rate_hz} Hz, the echoes are at "
                                            f"{int(sample_rate_hz)} Hz")
    return sweep
