"""`avsnet-launch`: the nodes of launch/avsnet.launch.py in ONE process (MultiThreadedExecutor).

`ros2 launch` needs a ROS 2 distribution; this entry point starts the same nodes with the same
arguments and the same parameter file on a machine that only has the rclpy wheels:

    avsnet-launch [--source replay|hardware] [--data PATH] [--config YAML] [--device auto|cpu|cuda]
                  [--use-sim-time] [--namespace NS] [--param NODE.NAME=VALUE ...]
    avsnet-launch --demo [--frames N] [--duration-s S] [--out runs/demo]

source replay: replay_source (bundled data by default) + depth_node; source hardware:
chirp_emitter (sounddevice) + depth_node, with the camera from your camera driver on
camera/image_raw + camera/camera_info. The YAML is a ROS 2 parameter file (config/avsnet.yaml);
its values are applied as parameter overrides, then the arguments, then --param.

--demo: replays the bundled data through depth_node, prints the topic rates and where the depth
went, writes a few depth PNGs (RGB | ground truth | depth, colour bar in metres) and a metrics
summary (summary.json, summary.md) to --out, and exits after --frames frames or --duration-s.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

NODE_NAMES = ("chirp_emitter", "depth_node", "replay_source")


# --------------------------------------------------------------------------------------------
# parameters
def node_specs() -> dict[str, tuple]:
    """Declared parameters per node name."""
    from avsnet_ros.nodes import chirp_emitter, depth_node, replay_source

    return {"chirp_emitter": chirp_emitter.PARAMS, "depth_node": depth_node.PARAMS,
            "replay_source": replay_source.PARAMS}


def _coerce(node: str, name: str, value: Any, default: Any) -> Any:
    """YAML value -> the declared type (ints where floats are declared are accepted, as ROS users
    write `1` for `1.0`); anything else of the wrong type is an error naming the parameter."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        if isinstance(value, list):
            if default and isinstance(default[0], float):
                if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    return [float(v) for v in value]
            else:
                return value
    raise ValueError(f"{node}.{name}: {value!r} is not a {type(default).__name__} (declared default {default!r})")


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """ROS 2 parameter file -> {node_name: {parameter: value}} (typed, unknown names refused).

    Accepts `node:` and `/node:` keys and the `/**:` wildcard (applied to every node).
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read parameter file {path}: {exc}") from None
    specs = node_specs()
    out: dict[str, dict[str, Any]] = {name: {} for name in NODE_NAMES}
    for key, section in data.items():
        node = str(key).lstrip("/")
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ValueError(f"{path}: '{key}' has no ros__parameters section")
        targets = list(NODE_NAMES) if node == "**" else [node]
        for target in targets:
            if target not in specs:
                raise ValueError(f"{path}: unknown node '{key}' (nodes: {', '.join(NODE_NAMES)})")
            declared = {s.name: s.default for s in specs[target]}
            for name, value in (section["ros__parameters"] or {}).items():
                if name == "use_sim_time":
                    out[target][name] = bool(value)
                    continue
                if name not in declared:
                    if node == "**":
                        continue
                    raise ValueError(f"{path}: {target} has no parameter '{name}' (declared: {', '.join(declared)})")
                out[target][name] = _coerce(target, name, value, declared[name])
    return out


def apply_overrides(config: dict[str, dict[str, Any]], overrides: list[str]) -> None:
    """--param NODE.NAME=VALUE (VALUE parsed as YAML) into config, typed like the declaration."""
    import yaml

    specs = node_specs()
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"--param {item!r}: expected NODE.NAME=VALUE")
        key, raw = item.split("=", 1)
        node, name = key.split(".", 1)
        if node not in specs:
            raise ValueError(f"--param {item!r}: unknown node {node!r} (nodes: {', '.join(NODE_NAMES)})")
        declared = {s.name: s.default for s in specs[node]}
        if name not in declared:
            raise ValueError(f"--param {item!r}: {node} has no parameter {name!r}")
        value = yaml.safe_load(raw) if raw != "" else ""
        if isinstance(declared[name], str) and not isinstance(value, str):
            value = raw  # e.g. a path that YAML would read as a number
        config[node][name] = _coerce(node, name, value, declared[name])


def resolve_parameters(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Config file, then the launch arguments, then --param (last wins)."""
    from avsnet_ros.paths import config_path

    config = load_config(args.config or config_path("avsnet.yaml"))
    if args.device:
        config["depth_node"]["device"] = args.device
    if args.data:
        config["replay_source"]["data_path"] = args.data
        config["chirp_emitter"]["replay_data_path"] = args.data
    if args.use_sim_time:
        for node in ("chirp_emitter", "depth_node"):
            config[node]["use_sim_time"] = True
        config["replay_source"]["publish_clock"] = True
        config["replay_source"]["stamp_mode"] = "recorded"
    if args.demo:
        replay = config["replay_source"]
        replay["loop"] = True  # the bundled sequence may be shorter than --frames
        replay["max_frames"] = args.frames
        replay["wait_for_subscribers"] = 1
        if args.rate_hz is not None:
            replay["rate_hz"] = args.rate_hz
        config["depth_node"]["publish_preview"] = False
    elif args.rate_hz is not None:
        config["replay_source"]["rate_hz"] = args.rate_hz
    apply_overrides(config, args.param or [])
    return config


def _parameters(values: dict[str, Any]):
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in values.items()]


def create_nodes(source: str, config: dict[str, dict[str, Any]], context=None, namespace: str = "") -> list:
    """The nodes launch/avsnet.launch.py starts for `source` (not spun), in `namespace` ('' = root).
    Stops at the first node that fails to start (its `startup_error` says why); the caller checks
    the last node."""
    from avsnet_ros.nodes.depth_node import DepthNode

    common = {"context": context, "namespace": namespace}
    makers = []
    if source == "hardware":
        from avsnet_ros.nodes.chirp_emitter import ChirpEmitter

        makers.append(lambda: ChirpEmitter(parameter_overrides=_parameters(config["chirp_emitter"]), **common))
    makers.append(lambda: DepthNode(parameter_overrides=_parameters(config["depth_node"]), **common))
    if source == "replay":
        from avsnet_ros.nodes.replay_source import ReplaySource

        # created last, so the depth node is already subscribed when the first frame goes out
        makers.append(lambda: ReplaySource(parameter_overrides=_parameters(config["replay_source"]), **common))
    nodes = []
    for make in makers:
        nodes.append(make())
        if getattr(nodes[-1], "startup_error", None):
            break
    return nodes


# --------------------------------------------------------------------------------------------
# CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avsnet-launch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=("replay", "hardware"), default="replay",
                   help="replay: recorded data -> depth; hardware: chirp emitter + your camera driver -> depth")
    p.add_argument("--data", default="", help="replay data: BV2-layout folder or rosbag (default: bundled demo data)")
    p.add_argument("--config", default="", help="ROS 2 parameter file (default: config/avsnet.yaml)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="depth_node inference device")
    p.add_argument("--use-sim-time", action="store_true", help="nodes follow /clock (published by the replay)")
    p.add_argument("--namespace", default="", help="ROS namespace of every node and topic (e.g. robot1: "
                   "/robot1/avsnet/metric_depth, /robot1/camera/image_raw); /diagnostics and /clock stay global")
    p.add_argument("--param", action="append", metavar="NODE.NAME=VALUE", help="extra parameter override (repeatable)")
    p.add_argument("--rate-hz", type=float, default=None, help="replay frame rate (folder data)")
    demo = p.add_argument_group("demo")
    demo.add_argument("--demo", action="store_true", help="replay the bundled data, report rates, PNGs and metrics")
    demo.add_argument("--frames", type=int, default=12, help="demo: frames to replay")
    demo.add_argument("--duration-s", type=float, default=120.0, help="demo: give up after this long")
    demo.add_argument("--out", default="runs/demo", help="demo: output folder")
    demo.add_argument("--pngs", type=int, default=4, help="demo: depth PNGs to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.demo:
        args.source = "replay"
        if args.rate_hz is None:
            args.rate_hz = 2.0
    try:
        config = resolve_parameters(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"avsnet-launch: {exc}", file=sys.stderr)
        return 2

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from avsnet_ros.nodes.common import shutdown_nodes, spin

    rclpy.init(args=None)
    nodes: list = []
    executor = None
    try:
        if args.demo:  # the listener first, so it holds every ground truth the replay sends
            from avsnet_ros.nodes.collector import DepthCollector

            nodes.append(DepthCollector(keep_frames=args.pngs, namespace=args.namespace,
                                        parameter_overrides=_parameters(
                {"use_sim_time": True} if args.use_sim_time else {})))
        nodes += create_nodes(args.source, config, namespace=args.namespace)
        failed = [n for n in nodes if getattr(n, "startup_error", None)]
        if failed:
            for n in failed:
                print(f"avsnet-launch: {n.get_name()} did not start: {n.startup_error}", file=sys.stderr)
            return 1
        executor = MultiThreadedExecutor(num_threads=6)
        for n in nodes:
            executor.add_node(n)
        if args.demo:
            return run_demo(args, config, nodes, executor)
        spin(executor)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        shutdown_nodes(executor, nodes)
        if rclpy.ok():
            rclpy.shutdown()


# --------------------------------------------------------------------------------------------
# demo
def wait_answered(depth, replay, collector, timeout_s: float) -> bool:
    """Wait until the replay has finished and the depth node answered or counted every frame it
    received (and the collector got every depth it published); False on timeout."""
    deadline = time.monotonic() + timeout_s
    # the scale goes out on its own topic after the depth: wait for it too where the collector hears it
    scale_pub = getattr(depth, "_pubs", {}).get("scale")
    wait_scale = scale_pub is not None and getattr(scale_pub, "topic_name", None) == collector.topic_names["scale"]

    def answered() -> bool:
        c = depth.counters()
        accounted = c["frames_out"] + sum(c["frame_drops"].values()) + c["events"].get("skipped_no_subscribers", 0)
        return (replay.finished.is_set() and c["frames_in"] >= replay.counts.get("frames")
                and accounted >= c["frames_in"] and collector.counts["depth"] >= c["frames_out"]
                and (not wait_scale or collector.counts["scale"] >= c["frames_out"]))

    finished_at = None
    while time.monotonic() < deadline:
        if answered():
            time.sleep(0.3)  # ground truth still in flight
            return True
        if replay.finished.is_set():
            # frames lost in transport never arrive: stop once the node is idle for a while
            finished_at = finished_at or time.monotonic()
            c = depth.counters()
            idle = c["frames_out"] + sum(c["frame_drops"].values()) >= c["frames_in"]
            if time.monotonic() - finished_at > 5.0 and idle:
                return True
        time.sleep(0.05)
    return False


def run_demo(args, config, nodes, executor) -> int:
    """Spin until the replay is done and every frame is answered or counted, then report."""
    from avsnet_ros.nodes.common import spin
    from avsnet_ros.nodes.collector import DepthCollector
    from avsnet_ros.nodes.depth_node import DepthNode
    from avsnet_ros.nodes.replay_source import ReplaySource

    depth = next(n for n in nodes if isinstance(n, DepthNode))
    replay = next(n for n in nodes if isinstance(n, ReplaySource))
    collector = next(n for n in nodes if isinstance(n, DepthCollector))
    collector.set_max_depth(depth.pipeline.max_depth_m)
    thread = threading.Thread(target=spin, args=(executor,), daemon=True)
    thread.start()
    try:
        return _demo_report(args, config, depth, replay, collector)
    finally:
        # Stop and JOIN the spinning thread before the caller destroys the nodes: a thread still
        # inside rcl when the interpreter tears down aborts the process ("terminate called without
        # an active exception", seen in CI).
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=10.0)


def _demo_report(args, config, depth, replay, collector) -> int:
    """Wait for the replay to be answered, then print and write the demo report (run_demo's body)."""
    t0 = time.monotonic()
    print(f"avsnet-launch --demo: replaying {replay.data_path} ({args.frames} frames at "
          f"{config['replay_source']['rate_hz']:g} Hz) through depth_node [{depth.pipeline.describe()}]", flush=True)
    timed_out = not wait_answered(depth, replay, collector, args.duration_s)
    elapsed = time.monotonic() - t0
    summary = collector.summary()
    counters = depth.counters()
    report = {
        "data": str(replay.data_path),
        "frames_published": replay.counts.get("frames"),
        "depth_node": counters,
        "pipeline": depth.pipeline.describe(),
        "elapsed_s": elapsed,
        "timed_out": timed_out,
        **summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = write_depth_pngs(collector.kept, out)
    (out / "summary.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (out / "summary.md").write_text(summary_markdown(report, pngs))
    print(summary_text(report, pngs, out), flush=True)
    if summary["counts"][summary["depth_topic"]] == 0:
        print("avsnet-launch --demo: no depth image was received (see the drops above)", file=sys.stderr)
        return 1
    return 0


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_depth_pngs(kept: list[dict], out: Path) -> list[Path]:
    """One PNG per kept frame: RGB | ground truth | depth | colour bar in metres (same range)."""
    import cv2
    import numpy as np

    from avsnet_ros.visualization import depth_display_max, depth_panel

    if not kept:
        return []
    max_m = float(np.ceil(depth_display_max([m for k in kept for m in (k["gt_m"], k["depth_m"])])))
    paths = []
    for i, k in enumerate(kept):
        panel = depth_panel([("RGB", k["rgb"]), ("ground truth", k["gt_m"]),
                             ("depth (/avsnet/metric_depth)", k["depth_m"])], 0.0, max_m, height=240)
        path = out / f"depth_{i:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def summary_text(report: dict, pngs: list[Path], out: Path) -> str:
    from avsnet_ros.metrics import METRIC_KEYS

    rates = ", ".join(f"{t} {r:.2f}" if math.isfinite(r) else f"{t} -" for t, r in report["rates_hz"].items())
    c = report["depth_node"]
    drops = ", ".join(f"{k} {n}" for k, n in sorted(c["frame_drops"].items())) or "none"
    lat = report["latency_ms"]
    m = report["metrics"]
    depth_topic = report["depth_topic"]
    info_topic = depth_topic.rsplit("/", 1)[0] + "/camera_info"
    lines = [
        f"topic rates (Hz): {rates}",
        f"depth: {report['counts'][depth_topic]} images on {depth_topic} (sensor_msgs/Image 32FC1, "
        f"metres, NaN = no depth; camera_info on {info_topic}), frames in {c['frames_in']}, out {c['frames_out']}, "
        f"dropped: {drops}",
    ]
    if lat.get("count"):
        lines.append(f"latency camera stamp -> depth received: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, "
                     f"max {lat['max']:.0f} ms")
    lines.append(f"metrics vs ground truth ({m.get('count', 0)} frames): "
                 + ", ".join(f"{k} {_fmt(m.get(k))}" for k in METRIC_KEYS))
    lines.append(f"scale mean {_fmt(report['scale_mean'])}, confidence mean {_fmt(report['confidence_mean'])}")
    lines.append(f"wrote {len(pngs)} depth PNGs ({', '.join(p.name for p in pngs)}), summary.json and summary.md "
                 f"to {out.resolve()}")
    if report["timed_out"]:
        lines.append("WARNING: stopped at --duration-s before every frame was answered")
    return "\n".join(lines)


def summary_markdown(report: dict, pngs: list[Path]) -> str:
    from avsnet_ros.metrics import METRIC_KEYS

    m = report["metrics"]
    rows = "\n".join(f"| {t} | {report['counts'].get(t, 0)} | {_fmt(r)} |" for t, r in report["rates_hz"].items())
    lat = report["latency_ms"]
    lat_line = "n/a"
    if lat.get("count"):
        lat_line = f"p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, p99 {lat['p99']:.0f} ms"
    return (
        f"# avsnet-launch --demo\n\ndata: `{report['data']}`  \npipeline: {report['pipeline']}\n\n"
        f"| topic | messages | rate (Hz) |\n| --- | --- | --- |\n{rows}\n\n"
        f"latency camera stamp -> depth received: {lat_line}\n\n"
        f"| {' | '.join(METRIC_KEYS)} | frames |\n| {' | '.join('---' for _ in METRIC_KEYS)} | --- |\n"
        f"| {' | '.join(_fmt(m.get(k)) for k in METRIC_KEYS)} | {m.get('count', 0)} |\n\n"
        f"frame drops: {json.dumps(report['depth_node']['frame_drops'])}\n\n"
        + "".join(f"![{p.name}]({p.name})\n" for p in pngs)
    )


if __name__ == "__main__":
    raise SystemExit(main())
