"""Camera-image decoding (avsnet_ros.data.codec.rgb_from_image_msg) against OpenCV as the independent
reference for cv_bridge's toCvCopy(msg, "rgb8"): every camera encoding, padded rows, big-endian
mono16, and depth encodings refused with their own reason."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from avsnet_ros.data.codec import MessageError, image_msg_to_array, rgb_from_image_msg

H, W = 5, 7


def _raw_msg(pixels: np.ndarray, encoding: str, pad_bytes: int = 0, bigendian: bool = False):
    """An Image-like message over `pixels` with `pad_bytes` of junk after every row."""
    data = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = data.reshape(pixels.shape[0], -1).view(np.uint8)
    junk = np.full((rows.shape[0], pad_bytes), 0xAB, np.uint8)
    buf = np.ascontiguousarray(np.hstack([rows, junk]))
    return SimpleNamespace(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                           is_bigendian=int(bigendian), step=buf.shape[1], data=buf.reshape(-1).tobytes())


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding,channels,code", [
    ("rgb8", 3, None),
    ("bgr8", 3, cv2.COLOR_BGR2RGB),
    ("rgba8", 4, cv2.COLOR_RGBA2RGB),
    ("bgra8", 4, cv2.COLOR_BGRA2RGB),
    ("mono8", 1, cv2.COLOR_GRAY2RGB),
])
def test_8bit_camera_encodings_match_cvtcolor(rng, encoding, channels, code, pad):
    shape = (H, W, channels) if channels > 1 else (H, W)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    got = rgb_from_image_msg(_raw_msg(pixels, encoding, pad))
    expected = pixels if code is None else cv2.cvtColor(pixels, code)
    assert got.shape == (H, W, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 6])
def test_mono16_scaled_as_cv_bridge(bigendian, pad):
    # every 16-bit value once: cv_bridge converts 16 -> 8 bit with convertTo(CV_8U, 255/65535)
    # (cv2.convertScaleAbs is that operation for non-negative input), after GRAY2RGB
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    got = rgb_from_image_msg(_raw_msg(values, "mono16", pad, bigendian))
    expected = cv2.convertScaleAbs(cv2.cvtColor(values, cv2.COLOR_GRAY2RGB), alpha=255.0 / 65535.0)
    np.testing.assert_array_equal(got, expected)
    # hand-checked points: 0 -> 0, 128 -> 0 (0.498), 129 -> 1 (0.502), 257 -> 1, 65535 -> 255
    assert [int(got.reshape(-1, 3)[v, 0]) for v in (0, 128, 129, 257, 65535)] == [0, 0, 1, 1, 255]


@pytest.mark.parametrize("encoding,dtype", [("16UC1", np.uint16), ("32FC1", np.float32)])
def test_depth_encodings_on_the_camera_topic_are_refused_with_a_reason(encoding, dtype):
    msg = _raw_msg(np.ones((H, W), dtype), encoding)
    with pytest.raises(MessageError) as info:
        rgb_from_image_msg(msg)
    assert info.value.reason == "image_depth_encoding"
    assert "depth encoding" in str(info.value) and encoding in str(info.value)


@pytest.mark.parametrize("encoding", ["yuv422", "32FC3", "bgr16"])
def test_other_encodings_are_refused(encoding):
    msg = SimpleNamespace(height=H, width=W, encoding=encoding, is_bigendian=0, step=6 * W, data=bytes(6 * W * H))
    with pytest.raises(MessageError) as info:
        rgb_from_image_msg(msg)
    assert info.value.reason == "image_encoding"


def test_short_step_and_truncated_data_are_size_errors():
    pixels = np.zeros((H, W, 4), np.uint8)
    msg = _raw_msg(pixels, "rgba8")
    msg.step = 3 * W  # an rgba8 row needs 4 * W bytes
    with pytest.raises(MessageError) as info:
        rgb_from_image_msg(msg)
    assert info.value.reason == "size"
    msg = _raw_msg(pixels, "rgba8")
    msg.data = msg.data[: len(msg.data) // 2]
    with pytest.raises(MessageError) as info:
        rgb_from_image_msg(msg)
    assert info.value.reason == "truncated"


def test_rclpy_message_and_zero_copy_view():
    from sensor_msgs.msg import Image

    rgb = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    msg = Image(height=H, width=W, encoding="bgra8", is_bigendian=0, step=4 * W)
    msg.data = bgra.tobytes()
    np.testing.assert_array_equal(rgb_from_image_msg(msg), rgb)
    msg = Image(height=H, width=W, encoding="rgb8", is_bigendian=0, step=3 * W)
    msg.data = rgb.tobytes()
    got = rgb_from_image_msg(msg)
    np.testing.assert_array_equal(got, rgb)
    # unpadded rgb8 is decoded without a copy
    assert np.shares_memory(got, np.frombuffer(memoryview(msg.data).cast("B"), np.uint8))
    # padded rows and big-endian 16-bit data are copied into a native array
    padded = _raw_msg(np.arange(H * W, dtype=np.uint16).reshape(H, W), "mono16", 4, bigendian=True)
    np.testing.assert_array_equal(image_msg_to_array(padded), np.arange(H * W, dtype=np.uint16).reshape(H, W))
