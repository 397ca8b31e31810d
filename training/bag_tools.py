#!/usr/bin/env python3
"""rosbag2 tools: BatVision/synthetic files <-> bags, bag info, and recording without `ros2 bag`.

    python training/bag_tools.py from-batvision ROOT --split test --out BAG [--max-depth-m 30] [--json]
    python training/bag_tools.py to-batvision BAG --out DIR [--location NAME] [--split test]
    python training/bag_tools.py info BAG [--json]
    python training/bag_tools.py record --out BAG [--topics T ...] [--duration-s S]

Topic layout and pairing rules: avsnet_ros/data/rosbag_io.py (from-batvision writes a chirp message on
/avsnet/chirp whenever the samples' sweep changes; every Sample read back carries the latest chirp
description at or before its echo; `record` subscribes to /avsnet/chirp reliable + transient local, so
the description the emitter published before the recording started is recorded too). Run `record` through
`bash scripts/with_ros_env.sh` (or with your ROS environment sourced). With --json the last line
of stdout is one JSON object (the summary); logs go to stderr.

to-batvision writes the BV2 layout (DIR/<location>/{audio,camera,depth}/, DIR/<location>/<split>.csv
with the official columns plus sequence, frame, stamp_ns, fx, fy, cx, cy, sweep), which BV2Dataset reads
back. Images are JPEG at quality 95 by default, as BatVision ships them: JPEG re-encoding is lossy
(pixel values change by a few levels); --image-format png writes lossless PNG instead. Audio is
float32 wav by default (exact; --wav-format int32 writes 32-bit PCM like the BV2 originals, exact
for echoes that came from int32 files up to float32 rounding), depth uint16 millimetre .npy (exact
for depths that came from millimetres; frames without ground truth get an all-zero map = no
measurement).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avsnet_ros.policy import DEFAULT_MAX_ECHO_AGE_S  # noqa: E402 - after the sys.path entry

LOG = logging.getLogger("avsnet_ros.bag_tools")

DEFAULT_RECORD_TOPICS = ("camera/image_raw", "camera/camera_info", "/avsnet/echo", "camera/depth_gt", "/avsnet/chirp",
                         "odom")
#: Recorded with avsnet_ros.nodes.common.CHIRP_QOS's reliability and durability (reliable, transient local),
#: so the description published before the recorder started arrives too (not imported from there:
#: importing avsnet_ros.nodes would apply the nodes' transport profile to this process).
TRANSIENT_LOCAL_TOPICS = ("/avsnet/chirp",)


def _emit(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")


# ------------------------------------------------------------------------------------------------
def cmd_from_batvision(args) -> int:
    from avsnet_ros.data.batvision import BV1Dataset, BV2Dataset, detect_layout
    from avsnet_ros.data.rosbag_io import write_samples_to_bag

    layout = detect_layout(args.root, args.split) if args.format == "auto" else args.format
    max_depth = args.max_depth_m if args.max_depth_m is not None else (12.0 if layout == "bv1" else 30.0)
    cls = BV1Dataset if layout == "bv1" else BV2Dataset
    ds = cls(args.root, args.split, max_depth_m=max_depth, skip_bad=args.skip_bad)
    n = len(ds) if args.limit is None else min(len(ds), args.limit)
    LOG.info("%s %s split %s: %d samples -> %s", layout.upper(), args.root, args.split, n, args.out)
    t0 = time.perf_counter()

    def samples():
        for i in range(n):
            yield ds[i]

    summary = write_samples_to_bag(
        samples(), args.out, storage=args.storage, depth_encoding=args.depth_encoding,
        custom_data={"avsnet_ros.source": f"{layout}:{Path(args.root).resolve()}:{args.split}",
                     "avsnet_ros.max_depth_m": str(max_depth)},
    )
    summary.update(layout=layout, split=args.split, max_depth_m=max_depth, skipped_rows=ds.skipped,
                   seconds=round(time.perf_counter() - t0, 3))
    _emit(summary, args.json)
    return 0


# ------------------------------------------------------------------------------------------------
def cmd_to_batvision(args) -> int:
    import csv

    import cv2
    import numpy as np
    from scipy.io import wavfile

    from avsnet_ros.data.poses import POSE_COLUMNS, body_pose_from_optical
    from avsnet_ros.data.rosbag_io import BagReadReport, iter_bag_samples
    from avsnet_ros.data.samples import depth_m_to_mm
    from avsnet_ros.fileio import atomic_open

    out = Path(args.out)
    location = args.location or Path(args.bag).name.replace(".mcap", "").replace(".db3", "")
    loc_dir = out / location
    csv_path = loc_dir / f"{args.split}.csv"
    if csv_path.exists():
        LOG.error("%s exists already: not overwriting", csv_path)
        return 2
    for sub in ("audio", "camera", "depth"):
        (loc_dir / sub).mkdir(parents=True, exist_ok=True)
    ext = "jpeg" if args.image_format == "jpeg" else "png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(args.jpeg_quality)] if ext == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    report = BagReadReport()
    columns = ["audio path", "audio file name", "camera path", "camera file name", "depth path",
               "depth file name", "sequence", "frame", "stamp_ns", "fx", "fy", "cx", "cy", "sweep", *POSE_COLUMNS]
    n = no_depth = too_far = 0
    with atomic_open(csv_path, "w", newline="") as fh:  # the CSV appears only when every file is written
        w = csv.writer(fh)
        w.writerow(columns)
        for s in iter_bag_samples(args.bag, report, max_echo_age_s=args.max_echo_age_s):
            name = f"{n}"
            if args.wav_format == "float32":
                pcm = np.ascontiguousarray(s.echo.T, dtype=np.float32)
            else:
                full_scale = np.rint(s.echo.T.astype(np.float64) * 2147483648.0)
                pcm = np.clip(full_scale, -2147483648, 2147483647).astype(np.int32)
            wavfile.write(loc_dir / "audio" / f"audio_{name}.wav", int(s.sample_rate_hz), pcm)
            image_path = loc_dir / "camera" / f"camera_{name}.{ext}"
            if not cv2.imwrite(str(image_path), cv2.cvtColor(s.rgb, cv2.COLOR_RGB2BGR), params):
                raise OSError(f"could not write {image_path}")
            if s.depth_m is None:
                mm = np.zeros(s.rgb.shape[:2], dtype=np.uint16)
                no_depth += 1
            else:
                mm, far = depth_m_to_mm(s.depth_m)
                too_far += far
            np.save(loc_dir / "depth" / f"depth_{name}.npy", mm)
            k = s.intrinsics
            w.writerow([f"{location}/audio", f"audio_{name}.wav", f"{location}/camera", f"camera_{name}.{ext}",
                        f"{location}/depth", f"depth_{name}.npy", s.sequence_id, s.frame_index, s.stamp_ns,
                        repr(float(k[0, 0])), repr(float(k[1, 1])), repr(float(k[0, 2])), repr(float(k[1, 2])),
                        s.sweep.to_text() if s.sweep is not None else "",
                        *([repr(v) for v in body_pose_from_optical(s.pose_world_cam)] if s.pose_world_cam is not None
                          else [""] * len(POSE_COLUMNS))])
            n += 1
    summary = {"out": str(out), "location": location, "split": args.split, "csv": str(csv_path), "samples": n,
               "image_format": ext, "wav_format": args.wav_format, "frames_without_depth": no_depth,
               "depth_pixels_beyond_uint16": too_far, "frames_without_echo": report.frames_without_echo,
               "rejected": report.rejected}
    _emit(summary, args.json)
    return 0


# ------------------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from avsnet_ros.data.rosbag_io import bag_info

    info = bag_info(args.bag, max_echo_age_s=args.max_echo_age_s)
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    print(f"bag: {info['bag']} ({info['storage']}), {info['message_count']} messages, {info['duration_s']:.3f} s")
    for name, t in info["topics"].items():
        print(f"  {name:32s} {t['type']:30s} {t['count']}")
    if info.get("pairing"):
        p = info["pairing"]
        print(f"frames: {p['frames_total']}, with echo within {p['max_echo_age_s']} s: {p['samples']}, "
              f"without echo: {p['frames_without_echo']} (stale {p['frames_stale_echo']}), without depth: "
              f"{p['frames_without_depth']}, without camera_info: {p['frames_without_camera_info']}, "
              f"echoes: {p['echoes_total']} (used {p['echoes_used']}), chirp descriptions: {p['chirps']}, "
              f"rejected: {p['rejected']}")
    else:
        print(f"no pairing: {info.get('pairing_error')}")
    return 0


# ------------------------------------------------------------------------------------------------
KNOWN_TYPES = {
    "camera/image_raw": "sensor_msgs/msg/Image",
    "camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/avsnet/echo": "sensor_msgs/msg/Image",
    "camera/depth_gt": "sensor_msgs/msg/Image",
    "/avsnet/chirp": "std_msgs/msg/String",
    "odom": "nav_msgs/msg/Odometry",  # the robot's odometry: camera poses for stage 2 (data.rosbag_io)
}


def _parse_topic(spec: str) -> "tuple[str, str]":
    """'name' (one of the default topics, with or without leading '/') or 'name:pkg/msg/Type'."""
    if ":" in spec:
        name, msgtype = spec.split(":", 1)
        return name, msgtype
    for known, msgtype in KNOWN_TYPES.items():
        if spec.lstrip("/") == known.lstrip("/"):
            return spec, msgtype
    raise SystemExit(f"record: unknown type of topic {spec!r}: write it as NAME:pkg/msg/Type")


def record_qos(resolved_name: str, queue_depth: int, reliable: bool):
    """The recorder's subscription QoS for a topic: SensorDataQoS-like best effort (or reliable with
    --reliable), volatile, `queue_depth` deep; the TRANSIENT_LOCAL_TOPICS reliable + transient local."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    latched = resolved_name in TRANSIENT_LOCAL_TOPICS
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=int(queue_depth),
        reliability=ReliabilityPolicy.RELIABLE if reliable or latched else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def cmd_record(args) -> int:
    """Subscribe over rclpy (raw CDR) and write a rosbag2 until Ctrl-C/SIGTERM or --duration-s."""
    import importlib
    import queue
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rosbags.rosbag2 import StoragePlugin, Writer

    from avsnet_ros.data.rosbag_io import BAG_VERSION, typestore

    specs = [_parse_topic(t) for t in (args.topics or DEFAULT_RECORD_TOPICS)]
    ts = typestore()
    for _, msgtype in specs:
        if msgtype not in ts.types:
            raise SystemExit(f"record: message type {msgtype} is not in the ROS 2 Kilted typestore")
    # Sensor inputs: SensorDataQoS (best effort, volatile) with a deep queue so bursts are kept;
    # --reliable for reliable publishers when no drop is acceptable; the chirp description latched
    # (record_qos).
    out = Path(args.out)
    writer = Writer(out, version=BAG_VERSION,
                    storage_plugin=StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3)
    rclpy.init()  # installs the SIGINT and SIGTERM handlers (shutdown -> ExternalShutdownException)
    node = rclpy.create_node("avsnet_bag_recorder")
    writer.open()
    inbox: "queue.SimpleQueue" = queue.SimpleQueue()
    counts: "dict[str, int]" = {}
    errors: "list[BaseException]" = []
    conns = {}
    for name, msgtype in specs:
        resolved = node.resolve_topic_name(name)
        conns[resolved] = writer.add_connection(resolved, msgtype, typestore=ts)
        counts[resolved] = 0
        pkg, _, cls = msgtype.split("/")
        msg_class = getattr(importlib.import_module(f"{pkg}.msg"), cls)
        node.create_subscription(msg_class, resolved, lambda raw, n=resolved: inbox.put((n, time.time_ns(), raw)),
                                 record_qos(resolved, args.queue_depth, args.reliable), raw=True)

    def drain() -> None:
        # The only thread that touches the writer: callbacks stay short, nothing is lost on stop.
        while True:
            item = inbox.get()
            if item is None:
                return
            name, stamp, raw = item
            try:
                writer.write(conns[name], stamp, raw)
                counts[name] += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                return

    thread = threading.Thread(target=drain, name="bag-writer", daemon=True)
    thread.start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    LOG.info("recording %s to %s (%s, %s QoS, depth %d); Ctrl-C to stop", ", ".join(conns), out, args.storage,
             "reliable" if args.reliable else "best-effort", args.queue_depth)
    print(f"recording {len(conns)} topics", file=sys.stderr, flush=True)
    deadline = None if args.duration_s is None else time.monotonic() + float(args.duration_s)
    reason = "duration"
    try:
        while rclpy.ok() and not errors:
            try:
                executor.spin_once(timeout_sec=0.05)
            except RuntimeError:
                # rclpy's SIGINT/SIGTERM handler shuts the context down between rclpy.ok() and the wait:
                # the wait set then fails on the invalid context (RCLError). That is the signal, not a fault.
                if rclpy.ok():
                    raise
                reason = "signal"
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        else:
            reason = "error" if errors else "shutdown"
    except (KeyboardInterrupt, ExternalShutdownException):
        reason = "signal"
    finally:
        try:
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        except Exception:  # noqa: BLE001 - the context may already be shut down by the signal
            pass
        rclpy.try_shutdown()
        inbox.put(None)  # after the executor stopped: every received message is queued before this
        thread.join()
        writer.close()
    if errors:
        LOG.error("writing %s failed: %s", out, errors[0])
        return 1
    summary = {"bag": str(out), "stopped_by": reason, "storage": args.storage, "messages": counts,
               "total": sum(counts.values())}
    _emit(summary, args.json)
    return 0


# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bag_tools.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("from-batvision", help="BatVision V2/V1 or synthetic BV2-layout split -> rosbag2")
    f.add_argument("root", help="BV2 root, one BV2 location folder, or a BV1 root")
    f.add_argument("--split", default="test", help="CSV split name (default: test)")
    f.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    f.add_argument("--max-depth-m", type=float, default=None, help="dataset max depth (default 30 BV2, 12 BV1)")
    f.add_argument("--format", choices=("auto", "bv2", "bv1"), default="auto", help="dataset layout")
    f.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    f.add_argument("--depth-encoding", choices=("32FC1", "16UC1"), default="32FC1",
                   help="ground-truth depth as 32FC1 metres (default) or 16UC1 millimetres")
    f.add_argument("--limit", type=int, default=None, help="write only the first N samples")
    f.add_argument("--skip-bad", action="store_true", help="skip bad CSV rows (counted) instead of failing")
    f.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    f.set_defaults(func=cmd_from_batvision)

    t = sub.add_parser("to-batvision", help="rosbag2 -> BV2-layout files readable by BV2Dataset")
    t.add_argument("bag", help="rosbag2 directory or .mcap/.db3 file")
    t.add_argument("--out", required=True, help="BV2 root to write into")
    t.add_argument("--location", default=None, help="location folder name (default: the bag's name)")
    t.add_argument("--split", default="test", help="CSV split name to write (default: test)")
    t.add_argument("--wav-format", choices=("float32", "int32"), default="float32")
    t.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg",
                   help="jpeg (as BatVision, lossy re-encoding) or png (lossless)")
    t.add_argument("--jpeg-quality", type=int, default=95)
    t.add_argument("--max-echo-age-s", type=float, default=DEFAULT_MAX_ECHO_AGE_S,
                   help="pairing window of echo before frame")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_to_batvision)

    i = sub.add_parser("info", help="topics, counts and frame/echo pairing of a bag")
    i.add_argument("bag")
    i.add_argument("--max-echo-age-s", type=float, default=DEFAULT_MAX_ECHO_AGE_S)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("record", help="record the camera/echo topics over rclpy into a rosbag2")
    r.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    r.add_argument("--topics", nargs="+", default=None,
                   help="topics to record (default: camera/image_raw camera/camera_info /avsnet/echo "
                        "camera/depth_gt /avsnet/chirp); other topics as NAME:pkg/msg/Type")
    r.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    r.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    r.add_argument("--reliable", action="store_true",
                   help="subscribe RELIABLE (no DDS drops; only matches reliable publishers) instead of "
                        "the SensorDataQoS best-effort default")
    r.add_argument("--queue-depth", type=int, default=100, help="subscription history depth")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_record)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[%(levelname)s] %(name)s: %(message)s", stream=sys.stderr)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
