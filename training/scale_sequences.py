#!/usr/bin/env python3
"""Scale over time: raw vs Kalman-filtered echo scale on synthetic sequences (pure, no rclpy).

    python training/scale_sequences.py make --out runs/scale_seq [--sequences 3 --frames 30 --seed 21 --preset test]
    python training/scale_sequences.py eval --data runs/scale_seq [--out runs/scale_seq/results.json] [--json]
    python training/scale_sequences.py bags --data runs/scale_seq --out runs/scale_seq/bags [--start-s 1.0]
    python training/scale_sequences.py replay-table --replay runs/scale_seq/replay [--json]

`make` renders, with the synthetic world (training/synthetic), N sequences of F frames of each kind:
  still   the camera stands at the trajectory's first pose; every frame is a new echo (new noise,
          diffuse tail and onset jitter), the image is the same: jitter here is pure echo noise;
  moving  the world's trajectory (forward walk with slow turns, 0.2 s per frame).
and stores them as still/seq_XX.npz, moving/seq_XX.npz (rgb, depth_m, echo, stamp_ns, position_m).

`eval` runs the shipped pipeline (DepthPipeline.from_checkpoints, median scaling) frame by frame,
once, then feeds the per-echo scales and confidences to avsnet_ros.policy.scale_filter.ScaleFilter
("kalman": time only; "kalman_odom": plus the distance travelled from the rig positions, as from
nav_msgs/Odometry) and reports per kind and variant:
  scale_jitter  std of consecutive differences of log(scale) within a sequence (mean over sequences)
  scale_error   mean |log(scale / GT-median scale)|, the GT-median scale = median(GT) / median(R)
  abs_rel ...   the usual metrics of scale * R against GT (avsnet_ros.metrics, mean over frames)
plus a third kind "rooms": the still sequences played back to back, 1 s apart (the scale steps
at each room change; jitter is taken inside each room; `frames_to_follow` = echoes until the scale is
within 10 % of the room's median raw echo scale and stays there).
The GT-median scale's own jitter is reported too: on moving sequences it is the part of the raw
jitter that is real (the relative model's units change with the view).

`bags` writes every sequence as a rosbag2 in the avsnet_ros layout (avsnet_ros.data.rosbag_io:
image, camera_info with the synthetic world's intrinsics, echo, depth ground truth, all stamped
with the recorded stamp + start_s: 0.2 s per frame) to OUT/{still,moving}/seq_XX, for
training/replay_eval.py (--scale-filters none,kalman) to play through the real nodes.
`replay-table` aggregates those replays (REPLAY/{kind}_seq_XX/replay_eval.json) per kind and filter:
scale jitter (over consecutive published frames, and over frames adjacent in the recording),
scale error and Abs Rel over the frames both replays of a sequence scored ("paired": a loaded
machine supersedes different frames in each replay, and the sequences differ a lot in Abs Rel),
each the mean over sequences of the sequence's figure; jitter ratio = mean kalman / mean none;
frames published / out; the unpaired figures are in the JSON too.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # modest CPU use (shared machine); set before numpy/torch load

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

LOG = logging.getLogger("avsnet_ros.training")

KINDS = ("still", "moving")
#: echoes between frames (the synthetic world's sweep period) and the pause between played-back rooms
FRAME_PERIOD_NS = 200_000_000
ROOM_GAP_NS = 1_000_000_000
FOLLOW_TOLERANCE_LOG = math.log(1.1)


# ----------------------------------------------------------------------------- make
def render_sequences(out_dir: Path, n_sequences: int, frames: int, seed: int, preset_name: str = "test",
                     height: int = 128, width: int = 256) -> dict:
    """Render still and moving sequences to out_dir/{still,moving}/seq_XX.npz; returns a summary."""
    from avsnet_ros.audio import DEFAULT_SAMPLE_RATE_HZ
    from training.synthetic.scene import PRESETS, intrinsics_for
    from training.synthetic.writer import make_sequence_spec, render_sample

    preset = PRESETS[preset_name]
    k = intrinsics_for(height, width, preset.hfov_deg)
    summary = {"sequences": n_sequences, "frames": frames, "seed": seed, "preset": preset_name, "files": []}
    for kind in KINDS:
        (out_dir / kind).mkdir(parents=True, exist_ok=True)
        for q in range(n_sequences):
            spec = make_sequence_spec(seed, preset, q, frames, preset.max_order)
            if kind == "still":  # same pose every frame; the echo noise streams stay per frame
                spec.layout = replace(spec.layout, poses=[spec.layout.poses[0]] * frames)
            rgbs, depths, echoes, positions = [], [], [], []
            for f in range(frames):
                rgb, depth_m, echo, info = render_sample(spec, f, seed, preset, k, height, width)
                rgbs.append(rgb)
                depths.append(depth_m)
                echoes.append(echo)
                positions.append(np.asarray(info["positions_m"]["camera"], dtype=np.float64))
            path = out_dir / kind / f"seq_{q:02d}.npz"
            np.savez_compressed(
                path, rgb=np.stack(rgbs), depth_m=np.stack(depths), echo=np.stack(echoes).astype(np.float32),
                stamp_ns=np.arange(frames, dtype=np.int64) * FRAME_PERIOD_NS, position_m=np.stack(positions),
                scale_m=np.float64(spec.scale_m), sample_rate_hz=np.int64(DEFAULT_SAMPLE_RATE_HZ),
            )
            summary["files"].append(str(path))
            LOG.info("%s: %d frames, room scale %.2f m", path, frames, spec.scale_m)
    return summary


# ----------------------------------------------------------------------------- bags
def sequence_samples(path: Path, hfov_deg: float, start_ns: int) -> list:
    """One stored sequence (npz of `make`) -> [Sample] with stamp = recorded stamp_ns + start_ns and
    the synthetic world's pinhole intrinsics for the image size and hfov_deg."""
    from avsnet_ros.data.samples import Sample
    from training.synthetic.scene import intrinsics_for

    z = np.load(path)
    seq_id = f"{path.parent.name}/{path.stem}"
    k = intrinsics_for(z["rgb"].shape[1], z["rgb"].shape[2], hfov_deg)
    return [Sample(rgb=z["rgb"][f], echo=z["echo"][f].astype(np.float32), sample_rate_hz=int(z["sample_rate_hz"]),
                   depth_m=z["depth_m"][f].astype(np.float32), intrinsics=k,
                   stamp_ns=int(z["stamp_ns"][f]) + int(start_ns), sequence_id=seq_id, frame_index=f,
                   source=f"{path}#{f}")
            for f in range(z["rgb"].shape[0])]


def write_bags(data_dir: Path, out_dir: Path, start_s: float = 1.0) -> dict:
    """Every DATA/{still,moving}/seq_XX.npz -> OUT/{kind}/seq_XX (rosbag2, mcap); returns a summary.

    start_s shifts the recorded stamps (which start at 0, ROS's "unset" time); the spacing stays.
    The intrinsics are the synthetic world's for the preset named in DATA/make.json ("test" if absent).
    """
    from avsnet_ros.data.rosbag_io import write_samples_to_bag
    from training.synthetic.scene import PRESETS

    make = json.loads((data_dir / "make.json").read_text()) if (data_dir / "make.json").is_file() else {}
    preset = PRESETS[make.get("preset", "test")]
    summary = {"data": str(data_dir), "preset": make.get("preset", "test"), "start_s": start_s, "bags": []}
    for kind in KINDS:
        files = sorted((data_dir / kind).glob("seq_*.npz"))
        if not files:
            raise FileNotFoundError(f"no {kind}/seq_*.npz under {data_dir} (run `make` first)")
        for path in files:
            samples = sequence_samples(path, preset.hfov_deg, int(round(start_s * 1e9)))
            bag = out_dir / kind / path.stem
            bag.parent.mkdir(parents=True, exist_ok=True)
            info = write_samples_to_bag(samples, bag, custom_data={"avsnet_ros.scale_sequences.source": str(path)})
            summary["bags"].append({"bag": str(bag), "kind": kind, "frames": info["samples"]})
            LOG.info("%s: %d frames", bag, info["samples"])
    return summary


def replay_table(replay_dir: Path) -> dict:
    """Aggregate replay_eval.json files of `--scale-filters` runs per kind -> {kind: {filter: figures}}."""
    result: dict = {}
    for kind in KINDS:
        files = sorted(replay_dir.glob(f"{kind}_seq_*/replay_eval.json"))
        runs_by_filter: dict = {}
        for path in files:
            data = json.loads(path.read_text())
            if "by_scale_filter" not in data:
                raise ValueError(f"{path}: no by_scale_filter block (replay with --scale-filters none,kalman)")
            for name, r in data["by_scale_filter"].items():
                runs_by_filter.setdefault(name, []).append((r, data["scale_filter_comparison"]["paired"][name]))
        kres = {}
        for name, pairs in runs_by_filter.items():
            runs, paired = [r for r, _ in pairs], [p for _, p in pairs]
            scored = sum(r["metrics"]["count"] for r in runs)
            kres[name] = {
                "sequences": len(runs),
                "scale_jitter": float(np.mean([r["scale"]["jitter"] for r in runs])),
                "scale_jitter_per_sequence": [r["scale"]["jitter"] for r in runs],
                "scale_jitter_adjacent": float(np.mean([r["scale"]["jitter_adjacent"] for r in runs])),
                "paired_frames": sum(p["frames"] for p in paired),
                "paired_scale_error": float(np.mean([p["scale_error"] for p in paired])),
                "paired_abs_rel": float(np.mean([p["abs_rel"] for p in paired])),
                "paired_abs_rel_per_sequence": [p["abs_rel"] for p in paired],
                "scale_error": float(np.mean([r["scale"]["error_mean"] for r in runs])),
                "abs_rel": float(np.mean([r["metrics"]["abs_rel"] for r in runs])),
                "abs_rel_per_sequence": [r["metrics"]["abs_rel"] for r in runs],
                "abs_rel_frames": sum(r["metrics"]["abs_rel"] * r["metrics"]["count"] for r in runs) / scored,
                "delta1": float(np.mean([r["metrics"]["delta1"] for r in runs])),
                "frames_published": sum(r["frames"]["published_by_replay"] for r in runs),
                "frames_out": sum(r["frames"]["out"] for r in runs),
                "frames_scored": scored,
            }
        if "none" in kres:
            for name, m in kres.items():
                if name != "none":
                    m["jitter_ratio_vs_none"] = m["scale_jitter"] / kres["none"]["scale_jitter"]
                    m["jitter_adjacent_ratio_vs_none"] = (m["scale_jitter_adjacent"]
                                                          / kres["none"]["scale_jitter_adjacent"])
                    m["abs_rel_change_vs_none"] = m["abs_rel"] - kres["none"]["abs_rel"]
                    m["paired_abs_rel_change_vs_none"] = m["paired_abs_rel"] - kres["none"]["paired_abs_rel"]
        if kres:
            result[kind] = kres
    if not result:
        raise FileNotFoundError(f"no {{still,moving}}_seq_*/replay_eval.json under {replay_dir}")
    return result


def replay_markdown(table: dict) -> str:
    lines = ["| kind | scale_filter | scale jitter | vs none | adjacent frames | vs none | scale error (paired) "
             "| Abs Rel (paired) | paired frames | frames out / published |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, kres in table.items():
        for name, m in kres.items():
            ratio = f"{m['jitter_ratio_vs_none']:.2f}x" if "jitter_ratio_vs_none" in m else ""
            adj = f"{m['jitter_adjacent_ratio_vs_none']:.2f}x" if "jitter_adjacent_ratio_vs_none" in m else ""
            lines.append(f"| {kind} | {name} | {m['scale_jitter']:.4f} | {ratio} | {m['scale_jitter_adjacent']:.4f} | "
                         f"{adj} | {m['paired_scale_error']:.4f} | {m['paired_abs_rel']:.4f} | {m['paired_frames']} | "
                         f"{m['frames_out']} / {m['frames_published']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- eval
def run_pipeline(pipe, seq: dict, max_depth_m: float) -> dict:
    """Per frame: raw scale, confidence, relative depth at the GT size and the GT-median scale."""
    from avsnet_ros.scaling import median_scale

    n = seq["rgb"].shape[0]
    size_hw = tuple(seq["depth_m"].shape[1:])
    out = {"scale": np.zeros(n), "confidence": np.zeros(n), "scale_gt": np.zeros(n), "relative": []}
    for f in range(n):
        res = pipe(seq["rgb"][f], seq["echo"][f], sample_rate_hz=int(seq["sample_rate_hz"]), output_size_hw=size_hw)
        rel = res.relative_depth[0].astype(np.float64)
        gt = seq["depth_m"][f].astype(np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(gt) & (gt > 0) & (gt < max_depth_m)
        _, s_gt = median_scale(rel, np.where(valid, gt, 0.0), valid=valid)
        out["scale"][f] = float(res.scale[0])
        out["confidence"][f] = float(res.confidence[0])
        out["scale_gt"][f] = float(s_gt)
        out["relative"].append(res.relative_depth[0])
    return out


def filter_scales(scales, confidences, stamps_ns, positions_m, config, use_odometry: bool) -> tuple[np.ndarray, dict]:
    """Run a fresh ScaleFilter over one played-back stream; returns (filtered scales, counters).

    Before the first accepted echo (or for an echo the filter has no estimate for) the raw scale is
    used, as the node would publish nothing better.
    """
    from avsnet_ros.policy.scale_filter import OdometryDistance, ScaleFilter

    filt = ScaleFilter(config)
    odo = OdometryDistance()
    out = np.empty(len(scales))
    for i, (s, c, t) in enumerate(zip(scales, confidences, stamps_ns)):
        travelled = 0.0
        if use_odometry:
            odo.add(int(t), *positions_m[i])
            travelled = odo.take_m()
        r = filt.update(int(t), float(s), float(c), travelled_m=travelled)
        out[i] = r.scale if r.has_estimate else s
    return out, filt.counters


def _depth(scale: float, relative: np.ndarray, min_depth_m: float, max_depth_m: float) -> np.ndarray:
    d = scale * relative.astype(np.float32)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(d) & (d >= min_depth_m) & (d <= max_depth_m), d, np.nan)


def jitter(scales) -> float:
    """std of consecutive differences of log(scale) (avsnet_ros.metrics.log_scale_jitter: NaN for
    fewer than 3 values, ValueError for a non-finite or non-positive scale)."""
    from avsnet_ros.metrics import log_scale_jitter

    return log_scale_jitter(scales)


def summarise(streams: list[dict], variant: str, min_depth_m: float, max_depth_m: float) -> dict:
    """Metrics of one variant ("raw" or a filter) over a kind's streams (each stream = one sequence)."""
    from avsnet_ros.metrics import METRIC_KEYS, DepthMetricAccumulator

    acc = DepthMetricAccumulator(max_depth_m, strict_max=True, invalid_pred="exclude")
    jit, err, gt_jit = [], [], []
    for st in streams:
        s = st["scales"][variant]
        bounds = list(st.get("segments", [0])) + [len(s)]
        for a, b in zip(bounds[:-1], bounds[1:]):  # rooms: jitter inside each room, not across the steps
            jit.append(jitter(s[a:b]))
            gt_jit.append(jitter(st["scale_gt"][a:b]))
        err.extend(np.abs(np.log(s / st["scale_gt"])).tolist())
        for f in range(len(s)):
            acc.update(_depth(s[f], st["relative"][f], min_depth_m, max_depth_m), st["depth_m"][f])
    summ = acc.summary()
    out = {"scale_jitter": float(np.mean(jit)), "scale_error": float(np.mean(err)),
           "scale_jitter_gt_median": float(np.mean(gt_jit)), "frames": int(sum(len(st["scale_gt"]) for st in streams))}
    out.update({k: float(summ[k]) for k in METRIC_KEYS})
    return out


def frames_to_follow(scales: np.ndarray, raw: np.ndarray, starts: list[int]) -> list:
    """For each room (from its start index in the stream): echoes until |log(scale / median raw
    scale of the room)| <= log 1.1 and stays so for the rest of the room (None if never). The level
    is the echoes' own (the raw median), so this measures the filter's lag, not the model's bias."""
    out = []
    bounds = list(starts) + [len(scales)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        target = float(np.median(raw[a:b]))
        ok = np.abs(np.log(scales[a:b] / target)) <= FOLLOW_TOLERANCE_LOG
        follow = None
        for i in range(b - a):
            if ok[i:].all():
                follow = i + 1
                break
        out.append(follow)
    return out


def collect_streams(data_dir: Path, device: str = "cpu") -> tuple[dict, dict]:
    """Run every sequence through the shipped pipeline once -> ({kind: [stream]}, meta).

    A stream holds per frame: scale_raw, confidence, scale_gt (GT-median), relative (R at the GT
    size), depth_m (GT), stamp_ns, position_m; kind "rooms" = the still streams back to back.
    """
    import torch

    from avsnet_ros.pipeline import DepthPipeline

    torch.set_num_threads(1)
    pipe = DepthPipeline.from_checkpoints(device=device, scaling="median")
    eval_max_m = 30.0  # the evaluation protocol's max depth for synthetic data (training/evaluate.py)
    streams_by_kind: dict = {}
    for kind in KINDS:
        files = sorted((data_dir / kind).glob("seq_*.npz"))
        if not files:
            raise FileNotFoundError(f"no {kind}/seq_*.npz under {data_dir} (run `make` first)")
        streams = []
        for path in files:
            z = dict(np.load(path))
            run = run_pipeline(pipe, z, eval_max_m)
            streams.append({"name": f"{kind}/{path.stem}", "scale_raw": run["scale"], "confidence": run["confidence"],
                            "scale_gt": run["scale_gt"], "relative": run["relative"], "depth_m": z["depth_m"],
                            "stamp_ns": z["stamp_ns"].astype(np.int64), "position_m": z["position_m"]})
        streams_by_kind[kind] = streams
    # rooms: the still sequences back to back (the robot stands in one room, then in the next: a
    # step of the true scale at every change, with the echoes' own level clearly defined)
    moving = streams_by_kind["still"]
    cat, starts, t0 = {}, [], 0
    for st in moving:
        starts.append(len(cat.get("scale_raw", [])))
        for key in ("scale_raw", "confidence", "scale_gt", "position_m"):
            cat[key] = np.concatenate([cat[key], st[key]]) if key in cat else st[key].copy()
        cat.setdefault("relative", []).extend(st["relative"])
        cat["depth_m"] = np.concatenate([cat["depth_m"], st["depth_m"]]) if "depth_m" in cat else st["depth_m"]
        stamps = st["stamp_ns"] - st["stamp_ns"][0] + t0
        cat["stamp_ns"] = np.concatenate([cat["stamp_ns"], stamps]) if "stamp_ns" in cat else stamps
        t0 = int(stamps[-1]) + ROOM_GAP_NS
    cat["name"] = "rooms/still_back_to_back"
    cat["segments"] = starts
    streams_by_kind["rooms"] = [cat]
    meta = {"pipeline": pipe.describe(), "max_depth_m": eval_max_m, "min_depth_m": pipe.min_depth_m,
            "output_max_depth_m": pipe.max_depth_m, "room_starts": starts}
    return streams_by_kind, meta


def evaluate(streams_by_kind: dict, meta: dict, configs: dict) -> dict:
    """Every filter variant {name: (ScaleFilterConfig, use_odometry)} over the collected streams."""
    min_d, max_d, starts = meta["min_depth_m"], meta["output_max_depth_m"], meta["room_starts"]
    result = {"kinds": {}, "per_frame": []}
    for kind, streams in streams_by_kind.items():
        for st in streams:
            st["scales"] = {"raw": st["scale_raw"]}
            st["counters"] = {}
            for name, (cfg, odom) in configs.items():
                st["scales"][name], st["counters"][name] = filter_scales(
                    st["scale_raw"], st["confidence"], st["stamp_ns"], st["position_m"], cfg, odom)
        variants = list(streams[0]["scales"])
        kres = {v: summarise(streams, v, min_d, max_d) for v in variants}
        for v in variants:
            if v != "raw":
                kres[v]["counters"] = {k: int(sum(st["counters"][v][k] for st in streams))
                                       for k in streams[0]["counters"][v]}
                kres[v]["jitter_ratio_vs_raw"] = kres[v]["scale_jitter"] / kres["raw"]["scale_jitter"]
                kres[v]["abs_rel_change_vs_raw"] = kres[v]["abs_rel"] - kres["raw"]["abs_rel"]
        if kind == "rooms":
            for v in variants:
                kres[v]["frames_to_follow"] = frames_to_follow(streams[0]["scales"][v], streams[0]["scale_raw"], starts)
        result["kinds"][kind] = kres
        for st in streams:
            for f in range(len(st["scale_gt"])):
                row = {"stream": st["name"], "frame": f, "stamp_ns": int(st["stamp_ns"][f]),
                       "confidence": float(st["confidence"][f]), "scale_gt_median": float(st["scale_gt"][f])}
                row.update({f"scale_{v}": float(st["scales"][v][f]) for v in variants})
                result["per_frame"].append(row)
    result["meta"] = dict(meta, filters={k: {"config": c.as_dict(), "odometry": o} for k, (c, o) in configs.items()})
    return result


def markdown(result: dict) -> str:
    """Table: jitter and Abs Rel per kind and variant (rooms: echoes to follow each room instead of jitter)."""
    lines = ["| kind | variant | scale jitter | vs raw | scale error | Abs Rel | δ<1.25 | frames |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, kres in result["kinds"].items():
        for v, m in kres.items():
            if kind == "rooms":
                jit, ratio = "-", "follow " + ",".join("-" if x is None else str(x) for x in m["frames_to_follow"])
            else:
                jit, ratio = f"{m['scale_jitter']:.4f}", ("" if v == "raw" else f"{m['jitter_ratio_vs_raw']:.2f}x")
            lines.append(f"| {kind} | {v} | {jit} | {ratio} | {m['scale_error']:.4f} | "
                         f"{m['abs_rel']:.4f} | {m['delta1']:.3f} | {m['frames']} |")
        if kind != "rooms":
            gt_jit = next(iter(kres.values()))["scale_jitter_gt_median"]
            lines.append(f"| {kind} | (GT-median scale itself) | {gt_jit:.4f} | | | | | |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scale_sequences.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="render still and moving sequences (npz)")
    m.add_argument("--out", required=True, help="output folder (still/ and moving/ are created)")
    m.add_argument("--sequences", type=int, default=3, help="sequences per kind")
    m.add_argument("--frames", type=int, default=30, help="frames (echoes) per sequence, 0.2 s apart")
    m.add_argument("--seed", type=int, default=21, help="synthetic world seed (test set: 2; use another)")
    m.add_argument("--preset", default="test", help="scene preset of training/synthetic/scene.py")
    b = sub.add_parser("bags", help="write the sequences as rosbag2 for training/replay_eval.py")
    b.add_argument("--data", required=True, help="folder written by `make`")
    b.add_argument("--out", required=True, help="output folder ({still,moving}/seq_XX bags; must not exist yet)")
    b.add_argument("--start-s", type=float, default=1.0, help="added to the recorded stamps (which start at 0)")
    t = sub.add_parser("replay-table", help="aggregate replay_eval --scale-filters results per kind")
    t.add_argument("--replay", required=True, help="folder of {still,moving}_seq_XX/replay_eval.json")
    t.add_argument("--json", action="store_true", help="print the table as one JSON line (last line)")
    e = sub.add_parser("eval", help="raw vs filtered scale through the shipped pipeline")
    e.add_argument("--data", required=True, help="folder written by `make`")
    e.add_argument("--out", default=None, help="results JSON (default: DATA/results.json; .md next to it)")
    e.add_argument("--device", choices=("cpu", "auto", "cuda"), default="cpu")
    e.add_argument("--process-var-log-per-s", type=float, default=None, help="override the filter default")
    e.add_argument("--process-var-log-per-m", type=float, default=None, help="override the filter default")
    e.add_argument("--measurement-std-log", type=float, default=None, help="override the filter default")
    e.add_argument("--sweep", action="store_true",
                   help="also evaluate process noise x0.1 and x10 and measurement std x0.5 / x2 (choosing the default)")
    e.add_argument("--json", action="store_true", help="print the kind summaries as one JSON line (last line)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s %(levelname)s] %(message)s",
                        datefmt="%H:%M:%S")
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = "python training/scale_sequences.py " + " ".join(shlex.quote(a) for a in argv_list)
    t0 = time.perf_counter()
    if args.command == "make":
        if args.sequences < 1 or args.frames < 3:
            print("error: need --sequences >= 1 and --frames >= 3", file=sys.stderr)
            return 2
        summary = render_sequences(Path(args.out), args.sequences, args.frames, args.seed, args.preset)
        summary.update(command=command, seconds=round(time.perf_counter() - t0, 1))
        (Path(args.out) / "make.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {2 * args.sequences} sequences to {args.out} in {summary['seconds']} s", file=sys.stderr)
        return 0
    if args.command == "bags":
        out = Path(args.out)
        if out.exists():
            print(f"error: {out} exists (bags are never overwritten)", file=sys.stderr)
            return 2
        try:
            summary = write_bags(Path(args.data), out, args.start_s)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        summary.update(command=command, seconds=round(time.perf_counter() - t0, 1))
        (out / "bags.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {len(summary['bags'])} bags to {out} in {summary['seconds']} s", file=sys.stderr)
        return 0
    if args.command == "replay-table":
        try:
            table = replay_table(Path(args.replay))
        except (FileNotFoundError, ValueError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        md = replay_markdown(table)
        (Path(args.replay) / "replay_table.json").write_text(json.dumps({"kinds": table, "command": command}, indent=1)
                                                             + "\n")
        (Path(args.replay) / "replay_table.md").write_text(md)
        print(md, file=sys.stderr)
        if args.json:
            print(json.dumps(table))
        return 0
    from avsnet_ros.policy.scale_filter import ScaleFilterConfig

    over = {k: v for k, v in (("process_var_log_per_s", args.process_var_log_per_s),
                              ("process_var_log_per_m", args.process_var_log_per_m),
                              ("measurement_std_log", args.measurement_std_log)) if v is not None}
    base = replace(ScaleFilterConfig(), **over)
    configs = {"kalman": (base, False), "kalman_odom": (base, True)}
    if args.sweep:
        for f in (0.1, 10.0):
            configs[f"kalman_q_x{f:g}"] = (replace(base, process_var_log_per_s=base.process_var_log_per_s * f,
                                                   process_var_log_per_m=base.process_var_log_per_m * f), True)
        for f in (0.5, 2.0):
            configs[f"kalman_r_x{f:g}"] = (replace(base, measurement_std_log=base.measurement_std_log * f), True)
    try:
        streams, meta = collect_streams(Path(args.data), args.device)
        result = evaluate(streams, meta, configs)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["meta"].update(command=command, data=str(args.data), seconds=round(time.perf_counter() - t0, 1))
    out = Path(args.out) if args.out else Path(args.data) / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table, file=sys.stderr)
    if args.json:
        print(json.dumps({"kinds": result["kinds"], "meta": result["meta"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
