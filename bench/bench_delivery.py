"""Cross-process delivery of camera-sized messages (not a timed test): three processes on one host.

    python bench/bench_delivery.py [--duration-s 60] [--rate-hz 10] [--transport shipped|fastdds_default]

1. `replay_source` (camera source): the bundled 1280x720 BatVision V2 frame (2.7 MB rgb8) + its echo
   + ground-truth depth, looped at --rate-hz for --duration-s;
2. `depth_node` (shipped settings and checkpoints, CPU);
3. this process (listener): /avsnet/metric_depth (3.7 MB 32FC1) through a RELIABLE and a BEST-EFFORT
   subscription, and the depth node's /diagnostics.

Reported: camera frames that reached the depth node (its frames_in / frames the replay published),
depth images that reached each listener (received / the node's frames_out), and end to end (the
product). The node answers every frame it receives or counts why not (superseded frames are the
node being slower than the camera, not transport loss). --transport fastdds_default sets
FASTDDS_BUILTIN_TRANSPORTS=DEFAULT for all three processes, i.e. what Fast DDS does without the
shipped profile (avsnet_ros/nodes/transport.py steps aside for an explicit user choice).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import REPO_ROOT, environment, write_result  # noqa: E402

FIXTURE = REPO_ROOT / "assets" / "batvision_v2_sample"


def _stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out = proc.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    return out or ""


def _resized_fixture(width: int, height: int, out_dir: Path) -> Path:
    """A loose BV2 instance folder with the fixture's camera and depth resized to width x height."""
    import shutil

    import cv2
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "audio_47.wav", out_dir / "audio_47.wav")
    rgb = cv2.imread(str(FIXTURE / "camera_47.jpeg"))
    cv2.imwrite(str(out_dir / "camera_47.jpeg"), cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR))
    depth = np.load(FIXTURE / "depth_47.npy")
    np.save(out_dir / "depth_47.npy", cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST))
    return out_dir


def run(duration_s: float = 60.0, rate_hz: float = 10.0, transport: str = "shipped", probe_camera: bool = False,
        frame_size: tuple[int, int] | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
        env.pop(name, None)
    if transport == "fastdds_default":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "DEFAULT"
    from avsnet_ros.nodes.transport import configure_camera_transport

    configure_camera_transport(env)  # what every node process does on import (unless the user chose)
    os.environ.clear()
    os.environ.update(env)  # this process's own participant follows the same rule
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from avsnet_ros.nodes.common import OUTPUT_QOS, SENSOR_QOS, diagnostic_values, spin

    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="bench_delivery_")
    data = FIXTURE if frame_size is None else _resized_fixture(frame_size[0], frame_size[1], Path(tmp.name) / "frames")
    bindir = Path(sys.executable).parent
    frames = int(round(duration_s * rate_hz))
    depth_proc = subprocess.Popen(
        [str(bindir / "depth_node"), "--ros-args", "-p", "device:=cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("delivery_listener", context=context)
    got = {"reliable": 0, "best_effort": 0}
    lock = threading.Lock()

    def counter(key):
        def cb(_msg):
            with lock:
                got[key] += 1
        return cb

    node.create_subscription(Image, "avsnet/metric_depth", counter("reliable"), OUTPUT_QOS)
    node.create_subscription(Image, "avsnet/metric_depth", counter("best_effort"),
                             QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    camera_stamps: list[int] = []
    if probe_camera:  # a fourth reader (best effort, like the node's) to tell where frames are lost
        node.create_subscription(Image, "camera/image_raw", lambda m: camera_stamps.append(
            m.header.stamp.sec * 10**9 + m.header.stamp.nanosec), SENSOR_QOS)
    diag = {}

    def on_diag(msg):
        values = diagnostic_values(msg, "depth_node")
        if values:
            diag.update(values)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    replay_proc = None
    replay_out = ""
    try:
        deadline = time.monotonic() + 120.0
        while node.count_publishers("avsnet/metric_depth") == 0 or diag.get("state") != "active":
            if time.monotonic() > deadline or depth_proc.poll() is not None:
                raise RuntimeError("depth_node did not become active: " + _stop(depth_proc)[-2000:])
            time.sleep(0.2)
        replay_proc = subprocess.Popen(
            [str(bindir / "replay_source"), "--ros-args", "-p", f"data_path:={data}", "-p", f"rate_hz:={rate_hz}",
             "-p", "loop:=true", "-p", f"max_frames:={frames}", "-p", "wait_for_subscribers:=1",
             "-p", "wait_timeout_s:=60.0", "-p", "start_delay_s:=1.0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        start = time.monotonic()
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(replay_proc.stdout), daemon=True)
        reader.start()
        while not any("replay finished" in line for line in lines):
            if replay_proc.poll() is not None or time.monotonic() - start > duration_s + 120.0:
                break
            time.sleep(0.5)
        time.sleep(4.0)  # in-flight depth, then a fresh diagnostics message
        t_diag = time.monotonic()
        while time.monotonic() - t_diag < 5.0 and not diag:
            time.sleep(0.2)
        node_counts = dict(diag)
        with lock:
            received = dict(got)
    finally:
        if replay_proc is not None:
            replay_out = _stop(replay_proc)
        depth_out = _stop(depth_proc)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        tmp.cleanup()
    replay_text = "".join(lines) + replay_out
    match = re.search(r"replay finished: (\d+) frames published", replay_text)
    published = int(match.group(1)) if match else None
    frames_in = int(node_counts.get("frames_in", 0))
    frames_out = int(node_counts.get("frames_out", 0))

    def frac(a, b):
        return float(a) / float(b) if b else float("nan")

    to_node = frac(frames_in, published)
    result = {
        "transport": transport,
        "profile": profile,
        "duration_s": duration_s,
        "frame_size": list(frame_size) if frame_size else [1280, 720],
        "rate_hz": rate_hz,
        "camera_published": published,
        "camera_received_by_node": frames_in,
        "camera_delivery": to_node,
        "depth_published": frames_out,
        "depth_received_reliable": received["reliable"],
        "depth_received_best_effort": received["best_effort"],
        "depth_delivery_reliable": frac(received["reliable"], frames_out),
        "depth_delivery_best_effort": frac(received["best_effort"], frames_out),
        "end_to_end_reliable": to_node * frac(received["reliable"], frames_out),
        "end_to_end_best_effort": to_node * frac(received["best_effort"], frames_out),
        "node_drops": {k: v for k, v in node_counts.items() if k.startswith("drop.")},
        "node_camera_stamp_rate": {k: v for k, v in node_counts.items() if "camera" in k},
        "probe_camera_received": len(camera_stamps) if probe_camera else None,
        "probe_camera_gaps_s": _gaps(camera_stamps, rate_hz) if probe_camera else None,
        "traceback": "Traceback" in replay_text + depth_out,
        "environment": environment(),
    }
    return result


def _gaps(stamps_ns: list[int], rate_hz: float) -> list[tuple[float, int]]:
    """(seconds after the first frame, frames missing) wherever consecutive stamps are > 1.5 periods apart."""
    period_ns = 1e9 / rate_hz
    out = []
    for a, b in zip(stamps_ns, stamps_ns[1:]):
        if b - a > 1.5 * period_ns:
            out.append((round((a - stamps_ns[0]) / 1e9, 2), int(round((b - a) / period_ns)) - 1))
    return out


def format_result(r: dict) -> str:
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    return (f"transport {r['transport']} ({r['profile'] or 'Fast DDS defaults'}), "
            f"{r['frame_size'][0]}x{r['frame_size'][1]} "
            f"at {r['rate_hz']} Hz x {r['duration_s']} s\n"
            f"camera -> depth node: {r['camera_received_by_node']} / {r['camera_published']} = "
            f"{pct(r['camera_delivery'])}\n"
            f"depth -> reliable listener: {r['depth_received_reliable']} / {r['depth_published']} = "
            f"{pct(r['depth_delivery_reliable'])}; best effort: {r['depth_received_best_effort']} = "
            f"{pct(r['depth_delivery_best_effort'])}\n"
            f"end to end: reliable {pct(r['end_to_end_reliable'])}, best effort {pct(r['end_to_end_best_effort'])}\n"
            f"node drops: {r['node_drops'] or 'none'}"
            + (f"\nprobe camera reader: {r['probe_camera_received']} frames, gaps {r['probe_camera_gaps_s']}"
               if r.get("probe_camera_received") is not None else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--transport", choices=("shipped", "fastdds_default"), default="shipped")
    parser.add_argument("--probe-camera", action="store_true",
                        help="also subscribe to the camera here and list where frames went missing")
    parser.add_argument("--frame-size", default="", metavar="WxH", help="resize the camera frames (default 1280x720)")
    parser.add_argument("--no-write", action="store_true", help="print only (no bench/results/delivery*.json)")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.frame_size.lower().split("x")) if args.frame_size else None
    result = run(args.duration_s, args.rate_hz, args.transport, args.probe_camera, size)
    print(format_result(result))
    if not args.no_write:
        name = "delivery" if args.transport == "shipped" else f"delivery_{args.transport}"
        name += f"_{args.frame_size}" if args.frame_size else ""
        print(f"wrote {write_result(name, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
