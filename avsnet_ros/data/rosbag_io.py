"""rosbag2 recordings <-> Samples, with the pure-Python `rosbags` library (no ROS installation).

Topic layout (docs/ARCHITECTURE.md; node topics are relative, so in a bag recorded from the root
namespace they carry a leading slash):
    /camera/image_raw    sensor_msgs/msg/Image rgb8 (read: any camera encoding of data.codec)
    /camera/camera_info  sensor_msgs/msg/CameraInfo (K in pixels of the image)
    /avsnet/echo         sensor_msgs/msg/Image 32FC1, height 2 (row 0 left, row 1 right),
                         width = samples at 44100 Hz, step = 4 * width; header.stamp = time of the
                         sweep onset; the buffer has the BatVision file layout (onset near 288)
    /camera/depth_gt     optional sensor_msgs/msg/Image, 32FC1 metres (NaN/0/inf invalid) or
                         16UC1/mono16 millimetres (0 invalid), same stamp and size as the image
    /avsnet/chirp        optional std_msgs/msg/String: the emitted sweep (SweepSpec.to_text(), or
                         "unknown"; data.codec.sweep_from_chirp_text), as the chirp emitter publishes it
    /odom                optional nav_msgs/msg/Odometry: the robot base's pose in its odometry frame;
                         each frame's camera pose (Sample.pose_world_cam, for stage 2's
                         --pose-source odometry) is it interpolated at the frame's stamp (linear /
                         slerp between the two messages around it, at most odometry_max_gap_s apart,
                         never extrapolated) composed with the camera's pose on the base
                         (camera_pose_in_base: [x, y, z, yaw, pitch, roll], default 0: the camera body
                         frame is the base frame); frames outside are counted (frames_without_odometry)
Bags are written as rosbag2 format version 8 with mcap storage (sqlite3 on request) using the
ROS 2 Kilted typestore; the reader accepts either storage (rosbags detects it from metadata.yaml;
a bare .mcap/.db3 file works too), so bags from `ros2 bag record` of the same topics and from
`training/bag_tools.py record` are read the same way.

Pairing (read_bag_samples): each camera frame gets the newest valid echo whose header stamp is at
or before the frame's stamp and at most max_echo_age_s older (never an echo from the future;
avsnet_ros.policy.match_echo, the depth node's rule; default policy.DEFAULT_MAX_ECHO_AGE_S);
frames without one are dropped and counted in the BagReadReport (frames_without_echo, with their
stamps; frames_stale_echo counts those whose newest echo was too old). Each Sample's sweep is the
latest chirp description logged at or before its echo (bag time: a chirp has no header; None
before the first one, in a bag without any, and after an "unknown"); an unparsable chirp is counted
(rejected["chirp_invalid"]) and the previous description kept. Ground-truth depth is the
depth message with the nearest stamp within depth_tolerance_s and the image's size. Intrinsics
come from the newest camera_info at or before the frame (else the earliest later one); frames
with no usable camera_info get the nominal ZED 2 intrinsics and are counted.

The writer writes a chirp message (at the sample's stamp, before its echo) for the first sample with
a sweep and whenever the samples' sweep changes ("unknown" when it becomes None), so samples read
back carry the sweep they were written with; a sample with a camera pose gets an odometry message
at its stamp (the camera body frame as the base: read back with the default camera_pose_in_base).

Sequence ids and frame indices survive a round trip: the writer stores them per stamp in the
bag's custom_data (metadata.yaml, key "avsnet_ros.frames"). A bag without it (a recording) gets
sequence_id = the bag's name and frame_index = the frame's position among all camera messages
(so frames dropped for lack of echo leave gaps that frame triples do not bridge).

Memory: the reader streams (two passes: stamps and small messages first, then images), so only
the frames waiting for their echo/depth are held; read_bag_samples materialises the list.
"""
from __future__ import annotations

import bisect
import json
import logging
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from avsnet_ros.audio.sweep import DEFAULT_SAMPLE_RATE_HZ
from avsnet_ros.data.codec import (IMAGE_ENCODINGS, MessageError, chirp_text, depth_from_image_msg,
                                   echo_from_image_msg, header_stamp_ns, image_msg_to_array, image_payload,
                                   intrinsics_from_camera_info_msg, pinhole_camera_info_arrays, rgb_from_image_msg,
                                   stamp_ns_to_sec_nanosec, sweep_from_chirp_text, time_to_ns)
from avsnet_ros.data.poses import R_BODY_OPTICAL, camera_in_base, interpolate_pose
from avsnet_ros.data.samples import DatasetError, Sample, depth_m_to_mm, nominal_intrinsics
from avsnet_ros.policy.pairing import DEFAULT_MAX_ECHO_AGE_S, DropReason, match_echo

# The message codec (MessageError, IMAGE_ENCODINGS, *_from_image_msg, ...) lives in
# avsnet_ros.data.codec; its names are re-exported here for bag users.
__all__ = [
    "BagTopics",
    "DEFAULT_TOPICS",
    "IMAGE_TYPE",
    "CAMERA_INFO_TYPE",
    "CHIRP_TYPE",
    "ODOMETRY_TYPE",
    "CAMERA_FRAME_ID",
    "ECHO_FRAME_ID",
    "FRAMES_CUSTOM_KEY",
    "BagReadReport",
    "MessageError",
    "typestore",
    "make_header",
    "IMAGE_ENCODINGS",
    "stamp_ns_to_sec_nanosec",
    "time_to_ns",
    "image_payload",
    "pinhole_camera_info_arrays",
    "array_to_image_msg",
    "image_msg_to_array",
    "rgb_from_image_msg",
    "depth_from_image_msg",
    "echo_to_image_msg",
    "echo_from_image_msg",
    "camera_info_msg",
    "intrinsics_from_camera_info_msg",
    "header_stamp_ns",
    "write_samples_to_bag",
    "iter_bag_samples",
    "read_bag_samples",
    "bag_info",
]

log = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
CHIRP_TYPE = "std_msgs/msg/String"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
ODOMETRY_FRAME_ID = "odom"
BASE_FRAME_ID = "base_link"
CAMERA_FRAME_ID = "camera_optical_frame"
ECHO_FRAME_ID = "microphones"
FRAMES_CUSTOM_KEY = "avsnet_ros.frames"
BAG_VERSION = 8
#: T_optical_body: the camera body frame (REP 103: x forward) in its optical frame
_T_OPTICAL_BODY = np.eye(4)
_T_OPTICAL_BODY[:3, :3] = R_BODY_OPTICAL.T
#: odometry messages further apart than this around a frame give it no pose (no interpolation across gaps)
DEFAULT_ODOMETRY_MAX_GAP_S = 0.5


@dataclass(frozen=True)
class BagTopics:
    """Topic names in a bag (absolute; the nodes' relative names resolved in the root namespace)."""

    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    echo: str = "/avsnet/echo"
    depth: str = "/camera/depth_gt"
    chirp: str = "/avsnet/chirp"
    odometry: str = "/odom"

    def types(self) -> "dict[str, str]":
        return {self.image: IMAGE_TYPE, self.camera_info: CAMERA_INFO_TYPE, self.echo: IMAGE_TYPE,
                self.depth: IMAGE_TYPE, self.chirp: CHIRP_TYPE, self.odometry: ODOMETRY_TYPE}


DEFAULT_TOPICS = BagTopics()


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Kilted rosbags typestore (message classes and CDR (de)serialisation)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


# ------------------------------------------------------------------------------------------------
# numpy -> rosbags messages (the bag writer's builders; decoding: avsnet_ros.data.codec)
def make_header(stamp_ns: int, frame_id: str):
    ts = typestore()
    sec, nanosec = stamp_ns_to_sec_nanosec(stamp_ns)
    time = ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return ts.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def _stamp_of(msg) -> int:
    return time_to_ns(msg.header.stamp)


def array_to_image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """(H, W) or (H, W, 3) numpy -> rosbags sensor_msgs/msg/Image (little-endian, unpadded)."""
    data, step = image_payload(array, encoding)
    return typestore().types[IMAGE_TYPE](
        header=make_header(stamp_ns, frame_id),
        height=int(data.shape[0]),
        width=int(data.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data.reshape(-1).view(np.uint8),
    )


def echo_to_image_msg(echo: np.ndarray, stamp_ns: int, frame_id: str = ECHO_FRAME_ID):
    """(2, N) float32 echo -> 32FC1 Image with height 2 (row 0 left, row 1 right), width N."""
    e = np.asarray(echo)
    if e.ndim != 2 or e.shape[0] != 2 or e.shape[1] == 0 or e.dtype != np.float32:
        raise ValueError(f"echo must be (2, N) float32, got {e.shape} {e.dtype}")
    return array_to_image_msg(e, "32FC1", stamp_ns, frame_id)


def camera_info_msg(intrinsics: np.ndarray, width: int, height: int, stamp_ns: int,
                    frame_id: str = CAMERA_FRAME_ID):
    """CameraInfo of an undistorted pinhole camera (plumb_bob, zero distortion, P = [K | 0])."""
    ts = typestore()
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types[CAMERA_INFO_TYPE](
        header=make_header(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model="plumb_bob", **pinhole_camera_info_arrays(intrinsics), binning_x=0, binning_y=0, roi=roi,
    )


# ------------------------------------------------------------------------------------------------
# writer
def odometry_msg(t_odom_base: np.ndarray, stamp_ns: int, frame_id: str = ODOMETRY_FRAME_ID,
                 child_frame_id: str = BASE_FRAME_ID):
    """nav_msgs/Odometry (rosbags) with the pose T_odom_base (4, 4); zero twist and covariances."""
    from avsnet_ros.data.poses import rotation_to_quaternion

    ts = typestore()
    t = np.asarray(t_odom_base, dtype=np.float64)
    q = rotation_to_quaternion(t[:3, :3])
    geo = "geometry_msgs/msg/"
    pose = ts.types[geo + "Pose"](position=ts.types[geo + "Point"](x=t[0, 3], y=t[1, 3], z=t[2, 3]),
                                  orientation=ts.types[geo + "Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    zero3 = ts.types[geo + "Vector3"](x=0.0, y=0.0, z=0.0)
    return ts.types[ODOMETRY_TYPE](
        header=make_header(stamp_ns, frame_id), child_frame_id=child_frame_id,
        pose=ts.types[geo + "PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=ts.types[geo + "TwistWithCovariance"](twist=ts.types[geo + "Twist"](linear=zero3, angular=zero3),
                                                     covariance=np.zeros(36)))


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    try:
        return {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    except KeyError:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}") from None


def write_samples_to_bag(
    samples: Iterable[Sample],
    bag_path,
    *,
    topics: BagTopics = DEFAULT_TOPICS,
    storage: str = "mcap",
    camera_frame_id: str = CAMERA_FRAME_ID,
    echo_frame_id: str = ECHO_FRAME_ID,
    depth_encoding: str = "32FC1",
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ,
    custom_data: "dict[str, str] | None" = None,
) -> "dict[str, object]":
    """Write Samples to a new rosbag2 directory (mcap by default); returns a summary dict.

    Per sample, all with header.stamp = bag time = sample.stamp_ns: camera_info, image (rgb8),
    echo (32FC1 2 x N), and depth (32FC1 metres, or 16UC1 millimetres with depth_encoding="16UC1";
    16UC1 is exact only for depths that came from millimetres, and pixels beyond 65.535 m become
    0 = invalid, counted in the summary) when the sample has depth. Samples may be a generator
    (streamed); their stamps must be distinct (ValueError otherwise: pairing is by stamp). A chirp
    message (std_msgs/String on topics.chirp) precedes the echo of the first sample with a sweep and
    of every sample whose sweep differs from the previous one ("unknown" for None). The
    echo message carries no sample rate: samples at another rate than sample_rate_hz (the
    44100 Hz contract) raise ValueError. Raises rosbags WriterError when
    bag_path exists. On an exception the partial bag is closed (readable up to the failure).
    """
    from rosbags.rosbag2 import Writer

    if depth_encoding not in ("32FC1", "16UC1"):
        raise ValueError(f"depth_encoding must be 32FC1 or 16UC1, got {depth_encoding!r}")
    ts = typestore()
    bag_path = Path(bag_path)
    writer = Writer(bag_path, version=BAG_VERSION, storage_plugin=_storage_plugin(storage))
    writer.open()
    conns = {}
    frames: "list[list]" = []
    seq_names: "dict[str, int]" = {}
    counts = Counter()
    too_far = 0
    last_stamp = -1
    last_chirp = chirp_text(None)  # a bag starts without a description
    seen_stamps: "set[int]" = set()
    try:
        for name in (topics.camera_info, topics.image, topics.echo):
            conns[name] = writer.add_connection(name, topics.types()[name], typestore=ts)
        for s in samples:
            if int(s.sample_rate_hz) != int(sample_rate_hz):
                raise ValueError(f"{s.source}: echo at {s.sample_rate_hz} Hz, the bag contract is {sample_rate_hz} Hz")
            rgb = np.asarray(s.rgb)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"{s.source}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
            t = int(s.stamp_ns)
            if t in seen_stamps:
                # Frames and echoes are paired by header stamp: two frames at one stamp are ambiguous.
                raise ValueError(f"{s.source}: duplicate stamp {t} ns (each sample needs its own stamp)")
            seen_stamps.add(t)
            if t < last_stamp:
                log.warning("%s: stamp %d earlier than the previous sample's %d", s.source, t, last_stamp)
            last_stamp = max(last_stamp, t)
            h, w = rgb.shape[:2]
            msgs = [(topics.camera_info, camera_info_msg(s.intrinsics, w, h, t, camera_frame_id), CAMERA_INFO_TYPE),
                    (topics.image, array_to_image_msg(rgb, "rgb8", t, camera_frame_id), IMAGE_TYPE)]
            text = chirp_text(getattr(s, "sweep", None))
            if text != last_chirp:
                if topics.chirp not in conns:
                    conns[topics.chirp] = writer.add_connection(topics.chirp, CHIRP_TYPE, typestore=ts)
                msgs.append((topics.chirp, ts.types[CHIRP_TYPE](data=text), CHIRP_TYPE))
                last_chirp = text
            msgs.append((topics.echo, echo_to_image_msg(np.asarray(s.echo, dtype=np.float32), t, echo_frame_id),
                         IMAGE_TYPE))
            if getattr(s, "pose_world_cam", None) is not None:
                if topics.odometry not in conns:
                    conns[topics.odometry] = writer.add_connection(topics.odometry, ODOMETRY_TYPE, typestore=ts)
                msgs.append((topics.odometry, odometry_msg(s.pose_world_cam @ _T_OPTICAL_BODY, t), ODOMETRY_TYPE))
            if s.depth_m is not None:
                if s.depth_m.shape != (h, w):
                    raise ValueError(f"{s.source}: depth {s.depth_m.shape} differs from the image {(h, w)}")
                if depth_encoding == "32FC1":
                    dmsg = array_to_image_msg(np.asarray(s.depth_m, dtype=np.float32), "32FC1", t, camera_frame_id)
                else:
                    mm, n_far = depth_m_to_mm(s.depth_m)
                    too_far += n_far
                    dmsg = array_to_image_msg(mm, "16UC1", t, camera_frame_id)
                if topics.depth not in conns:
                    conns[topics.depth] = writer.add_connection(topics.depth, IMAGE_TYPE, typestore=ts)
                msgs.append((topics.depth, dmsg, IMAGE_TYPE))
            for name, msg, msgtype in msgs:
                writer.write(conns[name], t, ts.serialize_cdr(msg, msgtype))
                counts[name] += 1
            seq = seq_names.setdefault(s.sequence_id, len(seq_names))
            frames.append([t, seq, int(s.frame_index)])
        meta = {"sequences": list(seq_names), "frames": frames}
        writer.set_custom_data(FRAMES_CUSTOM_KEY, json.dumps(meta, separators=(",", ":")))
        writer.set_custom_data("avsnet_ros.sample_rate_hz", str(int(sample_rate_hz)))
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, str(value))
    finally:
        writer.close()
    if too_far:
        log.warning("%d depth pixels beyond 65.535 m written as 0 (invalid) in 16UC1", too_far)
    return {"bag": str(bag_path), "storage": storage, "samples": len(frames),
            "messages": dict(counts), "depth_pixels_beyond_uint16": too_far}


# ------------------------------------------------------------------------------------------------
# reader
@dataclass
class BagReadReport:
    """What read_bag_samples found and what it dropped (every drop counted, never silent)."""

    bag: str = ""
    storage: str = ""
    topics: "dict[str, dict]" = field(default_factory=dict)  # name -> {type, count}
    frames_total: int = 0
    samples: int = 0
    frames_without_echo: int = 0
    frames_stale_echo: int = 0  # subset of frames_without_echo: an echo existed but was too old
    frames_without_echo_stamps_ns: "list[int]" = field(default_factory=list)
    frames_without_depth: int = 0
    frames_without_camera_info: int = 0  # got the nominal intrinsics
    frames_camera_info_after: int = 0  # used a camera_info stamped after the frame
    echoes_total: int = 0
    echoes_used: int = 0
    chirps: int = 0  # valid sweep descriptions on the chirp topic
    odometry_total: int = 0  # valid odometry messages
    frames_without_odometry: int = 0  # the bag has odometry, but none around the frame (no camera pose)
    rejected: "dict[str, int]" = field(default_factory=dict)  # reason -> messages rejected
    max_echo_age_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Frame:
    ordinal: int
    stamp_ns: int
    echo: "int | None" = None
    depth: "int | None" = None
    k: "np.ndarray | None" = None
    k_size: "tuple[int, int] | None" = None
    pose: "np.ndarray | None" = None


def _open_reader(bag_path):
    from rosbags.rosbag2 import Reader

    p = Path(bag_path)
    if not p.exists():
        raise DatasetError(f"bag {str(p)!r} does not exist")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises ReaderError/FileNotFoundError/yaml errors
        raise DatasetError(f"bag {str(p)!r} is not a readable rosbag2 ({type(exc).__name__}: {exc})") from exc
    return reader


def _storage_name(bag_path) -> str:
    p = Path(bag_path)
    if p.is_file():
        return {".mcap": "mcap", ".db3": "sqlite3"}.get(p.suffix, p.suffix)
    try:
        import yaml

        meta = yaml.safe_load((p / "metadata.yaml").read_text())
        return str(meta["rosbag2_bagfile_information"].get("storage_identifier", ""))
    except Exception:  # noqa: BLE001 - informational only
        return ""


def _custom_frames(bag_path) -> "dict[int, tuple[str, int]]":
    meta_path = Path(bag_path) / "metadata.yaml"
    if not meta_path.is_file():
        return {}
    import yaml

    try:
        meta = yaml.safe_load(meta_path.read_text())
        custom = (meta.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
        raw = custom.get(FRAMES_CUSTOM_KEY)
        if not raw:
            return {}
        data = json.loads(raw)
        names = data["sequences"]
        return {int(t): (str(names[int(q)]), int(f)) for t, q, f in data["frames"]}
    except Exception as exc:  # noqa: BLE001 - a damaged custom_data only loses sequence names
        log.warning("bag %s: ignoring unreadable %s custom data (%s)", bag_path, FRAMES_CUSTOM_KEY, exc)
        return {}


def _topic_connections(reader, topics: BagTopics, report: BagReadReport):
    by_topic = defaultdict(list)
    for c in reader.connections:
        by_topic[c.topic].append(c)
        info = report.topics.setdefault(c.topic, {"type": c.msgtype, "count": 0})
        info["count"] += int(c.msgcount)
    wanted = {}
    for role, name in (("image", topics.image), ("camera_info", topics.camera_info), ("echo", topics.echo),
                       ("depth", topics.depth), ("chirp", topics.chirp), ("odometry", topics.odometry)):
        conns = by_topic.get(name, [])
        expected = {"camera_info": CAMERA_INFO_TYPE, "chirp": CHIRP_TYPE,
                    "odometry": ODOMETRY_TYPE}.get(role, IMAGE_TYPE)
        bad = [c for c in conns if c.msgtype != expected]
        if bad:
            raise DatasetError(f"bag topic {name} has type {bad[0].msgtype}, expected {expected}")
        if conns:
            wanted[role] = conns
    for role in ("image", "echo"):
        if role not in wanted:
            raise DatasetError(
                f"bag has no {getattr(topics, role)!r} messages (topics: {sorted(by_topic)}); "
                "pass topics=BagTopics(...) for other names"
            )
    return wanted


@dataclass
class _Index:
    """Pass 1's findings: (ordinal, stamp) of images/depth/valid echoes, camera_infos, and the sweep
    description of each valid echo (ordinal -> SweepSpec or None)."""

    images: list
    depth: list
    echoes: list
    infos: list
    echo_sweeps: dict
    odometry: list  # (stamp_ns, position (3,), quaternion xyzw (4,)), sorted by stamp


def _index_pass(reader, wanted, report: BagReadReport, min_echo_samples: int,
                sample_rate_hz: "int | None" = None) -> _Index:
    """Pass 1: image/depth stamps from raw bytes; echo, camera_info and chirp decoded and validated
    (a chirp at another rate than sample_rate_hz, when given, is invalid). Each valid echo gets the
    latest valid chirp description logged at or before it (bag time)."""
    ts = typestore()
    role_of = {c.id: role for role, conns in wanted.items() for c in conns}
    images: "list[tuple[int, int]]" = []  # (ordinal, stamp)
    depth: "list[tuple[int, int]]" = []
    echoes: "list[tuple[int, int]]" = []  # valid echoes only
    infos: "list[tuple[int, np.ndarray, tuple[int, int]]]" = []
    echo_logged: "list[tuple[int, int]]" = []  # (log time, ordinal) of the valid echoes
    chirps: "list[tuple[int, object]]" = []  # (log time, SweepSpec or None) of the valid descriptions
    odometry: "list[tuple[int, np.ndarray, np.ndarray]]" = []
    counters = Counter()
    conns = [c for cs in wanted.values() for c in cs]
    for conn, log_ns, raw in reader.messages(connections=conns):
        role = role_of[conn.id]
        k = counters[role]
        counters[role] += 1
        if role in ("image", "depth"):
            t = header_stamp_ns(raw)
            if t is None:
                t = _stamp_of(ts.deserialize_cdr(raw, conn.msgtype))
            (images if role == "image" else depth).append((k, t))
            continue
        try:
            msg = ts.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # noqa: BLE001 - a corrupt message is a counted rejection
            report.rejected[f"{role}_undecodable"] = report.rejected.get(f"{role}_undecodable", 0) + 1
            log.warning("bag: undecodable %s message #%d (%s)", role, k, exc)
            continue
        try:
            if role == "echo":
                report.echoes_total += 1
                echo_from_image_msg(msg, min_echo_samples)
                echoes.append((k, _stamp_of(msg)))
                echo_logged.append((int(log_ns), k))
            elif role == "chirp":
                chirps.append((int(log_ns), sweep_from_chirp_text(msg.data, sample_rate_hz)))
                report.chirps += 1
            elif role == "odometry":
                odometry.append(_odometry_sample(msg))
                report.odometry_total += 1
            else:
                infos.append((_stamp_of(msg), intrinsics_from_camera_info_msg(msg), (int(msg.height), int(msg.width))))
        except MessageError as exc:
            report.rejected[exc.reason] = report.rejected.get(exc.reason, 0) + 1
            if role == "chirp":
                log.warning("bag: chirp message #%d ignored, the previous description is kept (%s)", k, exc)
    chirps.sort(key=lambda c: c[0])  # stable: equal log times keep the bag's order
    chirp_t = [t for t, _ in chirps]
    echo_sweeps = {}
    for t, k in echo_logged:
        i = bisect.bisect_right(chirp_t, t) - 1
        echo_sweeps[k] = chirps[i][1] if i >= 0 else None
    odometry.sort(key=lambda o: o[0])
    return _Index(images, depth, echoes, infos, echo_sweeps, odometry)


def _odometry_sample(msg) -> "tuple[int, np.ndarray, np.ndarray]":
    """(stamp_ns, position, quaternion xyzw) of an Odometry message; MessageError (odometry_invalid) for a
    non-finite position or a zero / non-finite quaternion."""
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    pos = np.array([p.x, p.y, p.z], dtype=np.float64)
    q = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    if not (np.isfinite(pos).all() and np.isfinite(q).all()) or np.linalg.norm(q) < 1e-6:
        raise MessageError("odometry_invalid", f"odometry pose {pos.tolist()} / {q.tolist()} is not a valid pose")
    return _stamp_of(msg), pos, q / np.linalg.norm(q)


def _attach_poses(frames, odometry, report: BagReadReport, camera_pose_in_base, max_gap_s: float) -> None:
    """Each frame's camera pose T_odom_optical: the interpolated base pose @ the camera's pose on the base."""
    if not odometry:
        return
    base_optical = camera_in_base(camera_pose_in_base)
    stamps = [o[0] for o in odometry]
    positions = [o[1] for o in odometry]
    quats = [o[2] for o in odometry]
    gap_ns = int(round(max_gap_s * 1e9))
    for f in frames:
        base = interpolate_pose(f.stamp_ns, stamps, positions, quats, gap_ns)
        if base is None:
            if f.echo is not None:
                report.frames_without_odometry += 1
        else:
            f.pose = base @ base_optical


def _pair(images, depth, echoes, infos, report: BagReadReport, max_echo_age_s: float, depth_tol_ns: int):
    """Frame -> echo (policy.match_echo, the depth node's rule), depth (nearest stamp) and camera_info."""
    echoes = sorted(echoes, key=lambda e: (e[1], e[0]))
    echo_t = [t for _, t in echoes]
    depth = sorted(depth, key=lambda d: (d[1], d[0]))
    depth_t = [t for _, t in depth]
    infos = sorted(infos, key=lambda i: i[0])
    info_t = [t for t, _, _ in infos]
    frames: "list[_Frame]" = []
    used_echoes = set()
    for ordinal, t in images:
        report.frames_total += 1
        f = _Frame(ordinal, t)
        match = match_echo(t, echo_t, max_echo_age_s)
        if match.index is not None:
            f.echo = echoes[match.index][0]
            used_echoes.add(f.echo)
        else:
            report.frames_without_echo += 1
            report.frames_without_echo_stamps_ns.append(t)
            if match.reason is DropReason.STALE_ECHO:
                report.frames_stale_echo += 1
        if depth_t:
            j = bisect.bisect_left(depth_t, t)
            best = None
            for c in (j - 1, j):
                if 0 <= c < len(depth_t) and abs(depth_t[c] - t) <= depth_tol_ns:
                    if best is None or abs(depth_t[c] - t) < abs(depth_t[best] - t):
                        best = c
            if best is not None:
                f.depth = depth[best][0]
        if infos:
            m = bisect.bisect_right(info_t, t) - 1
            if m < 0:
                m = 0
                report.frames_camera_info_after += 1
            f.k, f.k_size = infos[m][1], infos[m][2]
        frames.append(f)
    report.echoes_used = len(used_echoes)
    return frames


def iter_bag_samples(
    bag_path,
    report: "BagReadReport | None" = None,
    *,
    max_echo_age_s: float = DEFAULT_MAX_ECHO_AGE_S,
    topics: BagTopics = DEFAULT_TOPICS,
    depth_tolerance_s: float = 0.001,
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ,
    min_echo_samples: int = 1,
    camera_pose_in_base=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    odometry_max_gap_s: float = DEFAULT_ODOMETRY_MAX_GAP_S,
) -> Iterator[Sample]:
    """Stream the Samples of a bag (see the module docstring); fills `report` as it goes.

    camera_pose_in_base: the camera body frame in the odometry child frame, [x_m, y_m, z_m, yaw_deg,
    pitch_deg, roll_deg] (REP 103); with odometry_max_gap_s it sets Sample.pose_world_cam.

    Raises DatasetError for a missing/unreadable bag, missing image or echo topic, or a topic of
    the wrong type. Malformed messages are counted in report.rejected and their frames dropped.
    """
    report = report if report is not None else BagReadReport()
    report.bag = str(bag_path)
    report.max_echo_age_s = float(max_echo_age_s)
    ts = typestore()
    custom = _custom_frames(bag_path)
    seq_default = Path(bag_path).stem if Path(bag_path).is_file() else Path(bag_path).name
    reader = _open_reader(bag_path)
    try:
        report.storage = _storage_name(bag_path)
        wanted = _topic_connections(reader, topics, report)
        index = _index_pass(reader, wanted, report, min_echo_samples, sample_rate_hz)
        infos = index.infos
        frames = _pair(index.images, index.depth, index.echoes, infos, report, max_echo_age_s,
                       int(round(depth_tolerance_s * 1e9)))
        _attach_poses(frames, index.odometry, report, camera_pose_in_base, odometry_max_gap_s)
        if infos == [] and frames:
            log.warning("bag %s has no usable camera_info on %s: nominal intrinsics used", bag_path, topics.camera_info)
        # Pass 2: decode only what the paired frames need, emit frames in camera-message order.
        todo = [f for f in frames if f.echo is not None]
        by_image = {f.ordinal: f for f in todo}
        need = {"echo": Counter(f.echo for f in todo), "depth": Counter(f.depth for f in todo if f.depth is not None)}
        cache = {"image": {}, "echo": {}, "depth": {}}
        role_of = {c.id: role for role, conns in wanted.items() for c in conns if role in ("image", "echo", "depth")}
        conns = [c for role, cs in wanted.items() if role in ("image", "echo", "depth") for c in cs]
        counters = Counter()
        pos = 0
        for conn, _, raw in reader.messages(connections=conns):
            role = role_of[conn.id]
            k = counters[role]
            counters[role] += 1
            if role == "image":
                if k in by_image:
                    cache["image"][k] = raw
            elif need[role].get(k):
                cache[role][k] = raw
            while pos < len(todo):
                f = todo[pos]
                if f.ordinal not in cache["image"] or f.echo not in cache["echo"] or (
                    f.depth is not None and f.depth not in cache["depth"]
                ):
                    break
                pos += 1
                sample = _build_sample(f, cache, need, ts, report, bag_path, topics, custom, seq_default,
                                       sample_rate_hz, index.echo_sweeps.get(f.echo))
                if sample is not None:
                    report.samples += 1
                    yield sample
        if pos < len(todo):  # cannot happen unless the bag changed between the passes
            raise DatasetError(f"bag {bag_path}: {len(todo) - pos} paired frames not found on the second pass")
    finally:
        reader.close()
    if report.frames_without_echo:
        log.warning("bag %s: %d of %d frames have no echo within %.3f s before them (dropped)", bag_path,
                    report.frames_without_echo, report.frames_total, max_echo_age_s)
    if report.frames_without_odometry:
        log.warning("bag %s: %d frames have no odometry within %.3f s around them (no camera pose)", bag_path,
                    report.frames_without_odometry, odometry_max_gap_s)


def _release(cache, need, role, k):
    need[role][k] -= 1
    if need[role][k] <= 0:
        cache[role].pop(k, None)
        del need[role][k]


def _build_sample(f: _Frame, cache, need, ts, report, bag_path, topics, custom, seq_default, sample_rate_hz,
                  sweep=None):
    raw_img = cache["image"].pop(f.ordinal)
    raw_echo = cache["echo"][f.echo]
    raw_depth = cache["depth"][f.depth] if f.depth is not None else None
    _release(cache, need, "echo", f.echo)
    if f.depth is not None:
        _release(cache, need, "depth", f.depth)

    def reject(reason: str, detail: str) -> None:
        report.rejected[reason] = report.rejected.get(reason, 0) + 1
        log.warning("bag %s: frame at %d ns rejected (%s: %s)", bag_path, f.stamp_ns, reason, detail)

    try:
        img = ts.deserialize_cdr(raw_img, IMAGE_TYPE)
        rgb = rgb_from_image_msg(img)
    except MessageError as exc:
        reject(exc.reason if exc.reason.startswith("image") else "image_" + exc.reason, str(exc))
        return None
    except Exception as exc:  # noqa: BLE001
        reject("image_undecodable", str(exc))
        return None
    echo = echo_from_image_msg(ts.deserialize_cdr(raw_echo, IMAGE_TYPE))
    depth = None
    if raw_depth is not None:
        try:
            depth = depth_from_image_msg(ts.deserialize_cdr(raw_depth, IMAGE_TYPE))
            if depth.shape != rgb.shape[:2]:
                reject("depth_size", f"depth {depth.shape} vs image {rgb.shape[:2]}")
                depth = None
        except MessageError as exc:
            reject(exc.reason if exc.reason.startswith("depth") else "depth_" + exc.reason, str(exc))
        except Exception as exc:  # noqa: BLE001
            reject("depth_undecodable", str(exc))
    if depth is None:
        report.frames_without_depth += 1
    if f.k is not None and f.k_size == rgb.shape[:2]:
        k = f.k.copy()
    else:
        if f.k is not None:
            reject("camera_info_size", f"camera_info {f.k_size} vs image {rgb.shape[:2]}")
        report.frames_without_camera_info += 1
        k = nominal_intrinsics(rgb.shape[:2])
    seq, frame = custom.get(f.stamp_ns, (seq_default, f.ordinal))
    return Sample(
        rgb=rgb, echo=echo, sample_rate_hz=int(sample_rate_hz), depth_m=depth, intrinsics=k,
        stamp_ns=f.stamp_ns, sequence_id=seq, frame_index=frame,
        source=f"{bag_path}:{topics.image}#{f.ordinal}", sweep=sweep, pose_world_cam=f.pose,
    )


def read_bag_samples(bag_path, max_echo_age_s: float = DEFAULT_MAX_ECHO_AGE_S,
                     **kwargs) -> "tuple[list[Sample], BagReadReport]":
    """All Samples of a bag plus the BagReadReport (keyword arguments as iter_bag_samples)."""
    report = BagReadReport()
    samples = list(iter_bag_samples(bag_path, report, max_echo_age_s=max_echo_age_s, **kwargs))
    return samples, report


def bag_info(bag_path, max_echo_age_s: float = DEFAULT_MAX_ECHO_AGE_S, topics: BagTopics = DEFAULT_TOPICS,
             depth_tolerance_s: float = 0.001) -> dict:
    """Topics, counts, duration and the frame/echo pairing statistics of a bag, without decoding
    images (pass 1 only). Keys: bag, storage, duration_s, start_ns, end_ns, message_count, topics,
    pairing (BagReadReport fields; 'samples' = frames that would pair, images not yet validated)."""
    report = BagReadReport(bag=str(bag_path), max_echo_age_s=float(max_echo_age_s))
    reader = _open_reader(bag_path)
    try:
        info = {
            "bag": str(bag_path),
            "storage": _storage_name(bag_path),
            "duration_s": reader.duration / 1e9 if reader.message_count else 0.0,
            "start_ns": reader.start_time if reader.message_count else None,
            "end_ns": reader.end_time if reader.message_count else None,
            "message_count": reader.message_count,
        }
        try:
            wanted = _topic_connections(reader, topics, report)
        except DatasetError as exc:
            info["topics"] = report.topics
            info["pairing"] = None
            info["pairing_error"] = str(exc)
            return info
        index = _index_pass(reader, wanted, report, 1)
        frames = _pair(index.images, index.depth, index.echoes, index.infos, report, max_echo_age_s,
                       int(round(depth_tolerance_s * 1e9)))
        report.samples = sum(f.echo is not None for f in frames)
        report.frames_without_depth = sum(f.depth is None for f in frames)
        report.frames_without_camera_info = sum(f.k is None for f in frames)
        info["topics"] = report.topics
        d = report.as_dict()
        for key in ("frames_without_echo_stamps_ns", "bag", "storage", "topics"):
            d.pop(key)
        info["pairing"] = d
        return info
    finally:
        reader.close()
