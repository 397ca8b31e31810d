#!/usr/bin/env python3
"""Rosbag replay evaluation: play a bag through the real ROS nodes and score what they publish.

    python training/replay_eval.py --bag BAG [--avs-checkpoint DIR] [--relative-checkpoint DIR]
        [--rgb-checkpoint DIR] [--device auto|cpu|cuda] [--playback-speed 1.0] [--max-depth-m M]
        [--config YAML] [--param NODE.NAME=VALUE ...] [--scale-filters none,kalman] [--timeout-s S]
        [--out DIR] [--json]
    python training/evaluate.py --bag BAG ...   (the same; evaluate.py hands every argument here)

replay_source plays the bag's camera, camera_info, echo and ground-truth topics (layout of
avsnet_ros.data.rosbag_io) at the recorded timing, re-stamped by one constant shift onto the
clock; depth_node runs as in deployment (latest-frame slot, echo pairing, scale reuse, fallback);
a listener collects /avsnet/metric_depth and camera/depth_gt, matches them by header stamp and
scores them with avsnet_ros.metrics (NaN depth pixels excluded and counted). All three nodes run
over rclpy in this process (one MultiThreadedExecutor, real DDS transport).

Reports: the metrics (mean over matched frames), latency percentiles (camera stamp -> depth
received, ms), and counts of frames in (published by the replay, received by the depth node),
out (depth published), dropped by reason, and lost in transport; "pairing_expected" is the bag's
own frame/echo pairing under the node's max_echo_age_s (the same rule, avsnet_ros.policy.match_echo),
so frames the node answered can be compared with frames the recording could pair. --json prints one JSON object
on the last line; --out also writes it to DIR/replay_eval.json.

Scale over time (issue 14): "scale" holds the published scale per depth frame (avsnet/scale, paired
with the depth by order), its confidence, frame index in the recording and, for frames matched with
ground truth, Abs Rel and the scale error |ln(median(depth) / median(GT))| (= |ln(scale / GT-median
scale)| for median scaling), with scale.jitter = std of consecutive differences of ln(scale) over
the published frames, scale.jitter_adjacent = the same over frames adjacent in the recording only
(equal when no frame was dropped) and scale.error_mean / error_median.
--scale-filters none,kalman replays the bag once per depth_node.scale_filter value (fresh nodes
each time) and adds "by_scale_filter" {value: the full result of that replay} and
"scale_filter_comparison" (jitter, scale error and metrics per value; "paired": Abs Rel and scale
error over the frames every replay scored; jitter_ratio, jitter_adjacent_ratio, abs_rel_change and
abs_rel_change_paired of each value against "none" when "none" is among them); the top-level keys are
then those of the replay with the configured filter (the first value if it is not listed).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: evaluate.py flags that mean nothing for a replay (accepted so `evaluate.py --bag` can pass all).
_IGNORED_EVALUATE_FLAGS = ("--data", "--split", "--zero-shot-data", "--zero-shot-split", "--max-samples",
                           "--batch-size", "--panels", "--skip-bad", "--no-gradcam", "--save-predictions",
                           "--no-progress")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="replay_eval.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--bag", required=True, help="rosbag2 (directory or .mcap/.db3) in the avsnet_ros topic layout")
    m = p.add_argument_group("models (default: the shipped checkpoints)")
    m.add_argument("--avs-checkpoint", default=None, help="AVS-Net (RGB + echo) checkpoint dir")
    m.add_argument("--relative-checkpoint", default=None,
                   help="relative model: DepthNet checkpoint dir or transformers *ForDepthEstimation folder "
                        "(the depth node's relative_checkpoint)")
    m.add_argument("--rgb-checkpoint", default=None, help="RGB-only AVS-Net for depth_node echo_fallback=rgb_only")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    r = p.add_argument_group("replay")
    r.add_argument("--playback-speed", type=float, default=1.0, help="recorded timing x this factor")
    r.add_argument("--config", default="", help="ROS 2 parameter file (default: config/avsnet.yaml)")
    r.add_argument("--param", action="append", default=[], metavar="NODE.NAME=VALUE",
                   help="node parameter override, e.g. depth_node.max_echo_age_s=0.8 (repeatable)")
    r.add_argument("--scale-filters", default=None, metavar="NAMES",
                   help="comma-separated depth_node.scale_filter values, e.g. none,kalman: one replay per value, "
                        "compared (default: one replay with the configured filter)")
    r.add_argument("--max-depth-m", type=float, default=None, help="evaluation max depth (default: the model's)")
    r.add_argument("--timeout-s", type=float, default=600.0, help="give up after this long")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="write replay_eval.json here")
    o.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    return p


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def parse_scale_filters(text: "str | None") -> list[str]:
    """"none,kalman" -> ["none", "kalman"]; [] for None/empty; ValueError on a repeated value or one
    the depth node does not accept (checked before any replay starts)."""
    from avsnet_ros.nodes.depth_support import PARAMS

    choices = next(spec.choices for spec in PARAMS if spec.name == "scale_filter")
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"--scale-filters lists a value twice: {text!r}")
    bad = [n for n in names if n not in choices]
    if bad:
        raise ValueError(f"--scale-filters: {', '.join(bad)} not one of {', '.join(choices)}")
    return names


def run(args) -> dict:
    """Replay args.bag (once, or once per --scale-filters value); return the result dict."""
    filters = parse_scale_filters(getattr(args, "scale_filters", None))
    if not filters:
        return run_once(args)
    runs = {name: run_once(args, [f"depth_node.scale_filter={name}"]) for name in filters}
    configured = _configured_scale_filter(args)
    result = dict(runs[configured if configured in runs else filters[0]])
    result["by_scale_filter"] = runs
    result["scale_filter_comparison"] = compare_scale_filters(runs)
    return result


def _configured_scale_filter(args) -> "str | None":
    from avsnet_ros.nodes.launcher import apply_overrides, load_config
    from avsnet_ros.paths import config_path

    config = load_config(args.config or config_path("avsnet.yaml"))
    apply_overrides(config, list(args.param))
    return config.get("depth_node", {}).get("scale_filter")


def _ratio(a, b) -> float:
    return a / b if isinstance(a, float) and isinstance(b, float) and b and math.isfinite(b) else float("nan")


def paired_figures(runs: dict) -> dict:
    """Over the frames every run scored (same frame_index; a loaded machine supersedes different
    frames in each replay): {filter: {frames, abs_rel, scale_error}} means over those frames (NaN if none)."""
    by = {}
    for name, r in runs.items():
        by[name] = {f["frame_index"]: f for f in r["scale"]["per_frame"]
                    if f.get("frame_index") is not None and f.get("abs_rel") is not None
                    and f.get("scale_error") is not None}
    common = sorted(set.intersection(*(set(m) for m in by.values()))) if by else []
    nan = float("nan")
    return {name: {"frames": len(common),
                   "abs_rel": sum(m[i]["abs_rel"] for i in common) / len(common) if common else nan,
                   "scale_error": sum(m[i]["scale_error"] for i in common) / len(common) if common else nan}
            for name, m in by.items()}


def compare_scale_filters(runs: dict) -> dict:
    """Per filter value: scale jitter (consecutive published frames, and frames adjacent in the
    recording), scale error, Abs Rel / delta1, frames; the paired figures (frames all runs scored);
    ratios and changes against "none"."""
    table = {}
    for name, r in runs.items():
        sc, m = r["scale"], r["metrics"]
        table[name] = {"scale_jitter": sc["jitter"], "scale_jitter_adjacent": sc["jitter_adjacent"],
                       "scale_error_mean": sc["error_mean"], "scale_error_median": sc["error_median"],
                       "abs_rel": m.get("abs_rel"), "delta1": m.get("delta1"), "frames_out": r["frames"]["out"],
                       "frames_scored": m.get("count", 0)}
    paired = paired_figures(runs)
    out = {"per_filter": table, "paired": paired, "jitter_ratio": {}, "jitter_adjacent_ratio": {},
           "abs_rel_change": {}, "abs_rel_change_paired": {}}
    if "none" in table:
        base = table["none"]
        for name, t in table.items():
            if name == "none":
                continue
            out["jitter_ratio"][f"{name}/none"] = _ratio(t["scale_jitter"], base["scale_jitter"])
            out["jitter_adjacent_ratio"][f"{name}/none"] = _ratio(t["scale_jitter_adjacent"],
                                                                  base["scale_jitter_adjacent"])
            out["abs_rel_change"][f"{name}-none"] = t["abs_rel"] - base["abs_rel"]
            out["abs_rel_change_paired"][f"{name}-none"] = paired[name]["abs_rel"] - paired["none"]["abs_rel"]
    return out


def run_once(args, extra_params: "list[str] | None" = None) -> dict:
    """Replay args.bag through replay_source -> depth_node -> collector; return the result dict.

    extra_params: NODE.NAME=VALUE overrides applied after args.param (--scale-filters uses it)."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from avsnet_ros.nodes.collector import DepthCollector
    from avsnet_ros.nodes.common import shutdown_nodes, spin
    from avsnet_ros.nodes.launcher import apply_overrides, create_nodes, load_config, wait_answered
    from avsnet_ros.paths import config_path

    config = load_config(args.config or config_path("avsnet.yaml"))
    depth_cfg, replay_cfg = config["depth_node"], config["replay_source"]
    for key, value in (("avs_checkpoint", args.avs_checkpoint), ("relative_checkpoint", args.relative_checkpoint),
                       ("rgb_only_checkpoint", args.rgb_checkpoint), ("device", args.device)):
        if value:
            depth_cfg[key] = value
    replay_cfg.update(data_path=str(args.bag), stamp_mode="now", playback_speed=float(args.playback_speed),
                      loop=False, max_frames=0, wait_for_subscribers=1, publish_clock=False)
    depth_cfg["publish_preview"] = False
    apply_overrides(config, list(args.param) + list(extra_params or []))

    context = rclpy.Context()
    rclpy.init(context=context)
    nodes, executor = [], None
    try:
        collector = DepthCollector(keep_frames=0, context=context)
        nodes.append(collector)
        nodes += create_nodes("replay", config, context=context)
        failed = [n for n in nodes if getattr(n, "startup_error", None)]
        if failed:
            raise RuntimeError("; ".join(f"{n.get_name()}: {n.startup_error}" for n in failed))
        depth, replay = nodes[1], nodes[2]
        collector.set_max_depth(args.max_depth_m or depth.pipeline.max_depth_m)
        executor = MultiThreadedExecutor(num_threads=6, context=context)
        for n in nodes:
            executor.add_node(n)
        thread = threading.Thread(target=spin, args=(executor,), daemon=True)
        thread.start()
        t0 = time.monotonic()
        complete = wait_answered(depth, replay, collector, args.timeout_s)
        elapsed = time.monotonic() - t0
        summary = collector.summary()
        c = depth.counters()
        expected = _expected_pairing(args.bag, depth.values["max_echo_age_s"])
        published = replay.counts.get("frames")
        frame_drops = dict(c["frame_drops"])
        result = {
            "bag": str(args.bag),
            "pipeline": depth.pipeline.describe(),
            "scale_filter": depth.values["scale_filter"],
            "complete": complete,
            "elapsed_s": elapsed,
            "frames": {
                "published_by_replay": published,
                "in": c["frames_in"],
                "out": c["frames_out"],
                "dropped": sum(frame_drops.values()),
                "dropped_by_reason": frame_drops,
                "lost_in_transport": max(published - c["frames_in"], 0),
                "depth_received": summary["counts"]["/avsnet/metric_depth"],
                "matched_with_gt": summary["matched_frames"],
            },
            "echoes": {"published_by_replay": replay.counts.get("echoes"), "in": c["echoes_in"],
                       "dropped_by_reason": dict(c["echo_drops"])},
            "scale_modes": {k[len("scale_"):]: n for k, n in c["events"].items() if k.startswith("scale_")},
            "pairing_expected": expected,
            "latency_ms": summary["latency_ms"],
            "metrics": summary["metrics"],
            "excluded_nan_pred_pixels": summary["excluded_nan_pred_pixels"],
            "rates_hz": summary["rates_hz"],
            "scale": summary["scale"],
        }
        return result
    finally:
        shutdown_nodes(executor, nodes)
        rclpy.shutdown(context=context)


def _expected_pairing(bag, max_echo_age_s: float) -> "dict | None":
    """The bag's frame/echo pairing (data.rosbag_io.bag_info: pass 1, no images decoded), or None."""
    from avsnet_ros.data.rosbag_io import bag_info
    from avsnet_ros.data.samples import DatasetError

    try:
        pairing = bag_info(bag, max_echo_age_s=max_echo_age_s)["pairing"]
    except DatasetError:
        return None
    if pairing is None:
        return None
    return {"max_echo_age_s": float(max_echo_age_s), "frames": pairing["frames_total"],
            "with_echo": pairing["samples"], "without_echo": pairing["frames_without_echo"],
            "stale_echo": pairing["frames_stale_echo"]}


def format_result(result: dict) -> str:
    """Text report: each replay, then (with --scale-filters) the comparison table."""
    runs = result.get("by_scale_filter")
    if not runs:
        return _format_run(result)
    parts = [f"--- scale_filter {name} ---\n{_format_run(r)}" for name, r in runs.items()]
    comp = result["scale_filter_comparison"]

    def fmt(v, spec=".4f"):
        return format(v, spec) if isinstance(v, float) and math.isfinite(v) else str(v)

    lines = ["| scale_filter | scale jitter | vs none | adjacent frames | vs none | scale error | Abs Rel | δ<1.25 "
             "| frames out | paired: frames | scale error | Abs Rel |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in comp["per_filter"].items():
        ratio = comp["jitter_ratio"].get(f"{name}/none")
        adj = comp["jitter_adjacent_ratio"].get(f"{name}/none")
        p = comp["paired"][name]
        lines.append(f"| {name} | {fmt(t['scale_jitter'])} | {'' if ratio is None else fmt(ratio, '.2f') + 'x'} | "
                     f"{fmt(t['scale_jitter_adjacent'])} | {'' if adj is None else fmt(adj, '.2f') + 'x'} | "
                     f"{fmt(t['scale_error_mean'])} | {fmt(t['abs_rel'])} | {fmt(t['delta1'], '.3f')} | "
                     f"{t['frames_out']} | {p['frames']} | {fmt(p['scale_error'])} | {fmt(p['abs_rel'])} |")
    return "\n".join(parts + ["\n".join(lines)])


def _format_run(result: dict) -> str:
    from avsnet_ros.metrics import METRIC_KEYS

    f, lat, m = result["frames"], result["latency_ms"], result["metrics"]

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else str(v)

    lines = [
        f"replay of {result['bag']} through replay_source -> depth_node [{result['pipeline']}]",
        f"frames: published {f['published_by_replay']}, in {f['in']}, out {f['out']}, dropped {f['dropped']} "
        f"{f['dropped_by_reason'] or ''}, lost in transport {f['lost_in_transport']}, matched with ground truth "
        f"{f['matched_with_gt']}",
        f"scale modes: {result['scale_modes']}; echo drops: {result['echoes']['dropped_by_reason'] or 'none'}",
        f"scale (filter {result['scale_filter']}): jitter {fmt(result['scale']['jitter'])} over "
        f"{result['scale']['frames']} frames ({fmt(result['scale']['jitter_adjacent'])} over frames adjacent in the "
        f"recording), error mean {fmt(result['scale']['error_mean'])} median "
        f"{fmt(result['scale']['error_median'])} ({result['scale']['error_frames']} frames with ground truth)",
    ]
    pe = result.get("pairing_expected")
    if pe:
        lines.append(f"bag pairing at max_echo_age_s {pe['max_echo_age_s']}: {pe['with_echo']} of {pe['frames']} "
                     "frames "
                     f"have an echo ({pe['stale_echo']} of the others only a stale one)")
    if lat.get("count"):
        lines.append(f"latency camera stamp -> depth received (ms): p50 {lat['p50']:.1f}, p90 {lat['p90']:.1f}, "
                     f"p99 {lat['p99']:.1f}, max {lat['max']:.1f}")
    lines.append("| " + " | ".join(METRIC_KEYS) + " | frames |")
    lines.append("| " + " | ".join("---" for _ in METRIC_KEYS) + " | --- |")
    lines.append("| " + " | ".join(fmt(m.get(k)) for k in METRIC_KEYS) + f" | {m.get('count', 0)} |")
    if not result["complete"]:
        lines.append("WARNING: timed out before every frame was answered")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser().parse_known_args(argv)
    stray = [a for a in unknown if a.startswith("--") and a.split("=", 1)[0] not in _IGNORED_EVALUATE_FLAGS]
    if stray:
        build_parser().error(f"unrecognized arguments: {' '.join(stray)}")
    ignored = [a for a in unknown if a.startswith("--")]
    if ignored:
        print(f"replay_eval: ignoring evaluate.py options that do not apply to a replay: {' '.join(ignored)}",
              file=sys.stderr)
    try:
        parse_scale_filters(args.scale_filters)
        result = run(args)
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"replay_eval: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    clean = _finite(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "replay_eval.json").write_text(json.dumps(clean, indent=2) + "\n")
    if args.json:
        print(json.dumps(clean))
    runs = result.get("by_scale_filter") or {"": result}
    return 0 if all(r["frames"]["out"] > 0 for r in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
