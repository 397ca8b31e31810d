#!/usr/bin/env python3
"""Evaluate AVS-Net and the echo-scaled relative depth: the paper's Tables 1 and 2.

    python training/evaluate.py --data ROOT_OR_BAG --split test [--json] [--out DIR]
        [--avs-checkpoint DIR --rgb-checkpoint DIR --relative-checkpoint DIR [DIR ...]]
        [--zero-shot-data ROOT2] [--max-depth-m M] [--device auto|cpu|cuda]
    python training/evaluate.py --bag BAG ...   (replay the bag through the real ROS nodes:
                                                 delegated to training/replay_eval.py)

Without checkpoint flags the shipped checkpoints are evaluated (assets/checkpoints/avsnet_tiny,
avsnet_tiny_rgb, depthnet_tiny), so `--data /path/to/your/BatVision/BV2` works at once. All inference
goes through avsnet_ros.pipeline.DepthPipeline; predictions are produced at the ground-truth size;
metrics per image (avsnet_ros.metrics), then the mean over images. Writes to --out: results.md
(paper columns), results.csv, per_image.csv, results.json, panels/*.png (RGB, GT, RGB-only,
echo-enhanced, error maps; colour bars in metres) and gradcam/*.png (paper figure 6).
With --json the last stdout line is one JSON object: {row: {abs_rel, sq_rel, rmse, rmse_log, delta1,
delta2, delta3, count}} for rows rgb_only, rgb_echo, relative_none, relative_rgb_median,
relative_echo_median, relative_echo_meanstd, relative_echo_local, relative_gt_median, plus "zero_shot" (same rows on
--zero-shot-data) and "meta".

Several relative models: --relative-checkpoint takes DepthNet checkpoints and transformers
*ForDepthEstimation folders (save_pretrained: config.json + model.safetensors [+ preprocessor_config.json];
loaded offline), e.g. `--relative-checkpoint assets/checkpoints/depthnet_tiny ~/models/depth-anything-v2-small`;
each adds a block of Table 2 rows (No / RGB / RGB-Echoes / GT reference), keys relative_<folder name>_*
after the first model's relative_* (training/evaluation.py docstring).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOG = logging.getLogger("avsnet_ros.training")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    d = p.add_argument_group("data")
    d.add_argument("--data", help="BV2-layout root (BatVision V2 or synthetic), BV1 root, or a rosbag2")
    d.add_argument("--split", default="test", help="split CSV to evaluate (default: test)")
    d.add_argument("--zero-shot-data", default=None,
                   help="a second dataset (e.g. BV1, or a differently distributed synthetic set) for zero-shot rows")
    d.add_argument("--zero-shot-split", default="test", help="split of --zero-shot-data (default: test)")
    d.add_argument("--max-depth-m", type=float, default=None,
                   help="evaluation max depth (default: 30 m BV2/synthetic/bags, 12 m BV1)")
    d.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples of each set")
    d.add_argument("--skip-bad", action="store_true", help="skip unreadable rows (counted) instead of stopping")
    d.add_argument("--bag", default=None,
                   help="replay this rosbag through the real nodes (training/replay_eval.py gets all arguments)")
    m = p.add_argument_group("checkpoints (default: the shipped ones under assets/checkpoints)")
    m.add_argument("--avs-checkpoint", default=None, help="AVS-Net with echoes (checkpoint dir)")
    m.add_argument("--rgb-checkpoint", default=None, help="RGB-only AVS-Net baseline (checkpoint dir)")
    m.add_argument("--relative-checkpoint", nargs="+", action="extend", default=None, metavar="DIR",
                   help="relative / zero-shot models, one Table 2 block each: DepthNet checkpoint dirs or "
                        "transformers *ForDepthEstimation folders (save_pretrained; never downloaded)")
    o = p.add_argument_group("run and output")
    o.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    o.add_argument("--batch-size", type=int, default=8)
    o.add_argument("--out", default="runs/eval", help="output folder (default: runs/eval)")
    o.add_argument("--panels", type=int, default=6, help="qualitative panels (and Grad-CAM figures) per dataset")
    o.add_argument("--no-gradcam", action="store_true", help="no Grad-CAM figures")
    o.add_argument("--save-predictions", action="store_true",
                   help="keep every row's prediction per image (predictions/<set>/<index>.npz, float32 metres)")
    o.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    o.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p


def _bag_requested(argv: list[str]) -> bool:
    return any(a == "--bag" or a.startswith("--bag=") for a in argv)


def delegate_to_replay(argv: list[str]) -> int:
    """`--bag`: hand every argument to training.replay_eval.main (the nodes' replay evaluation)."""
    import importlib.util

    if importlib.util.find_spec("training.replay_eval") is None:
        print("error: --bag needs training/replay_eval.py (rosbag replay through the ROS nodes), which is not "
              "in this checkout; to evaluate the bag's frames offline through the pipeline use --data BAG",
              file=sys.stderr)
        return 2
    from training import replay_eval

    rc = replay_eval.main(argv)
    return int(rc or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _bag_requested(argv):
        return delegate_to_replay(argv)
    args = build_parser().parse_args(argv)
    if not args.data:
        print("error: --data is required (or --bag BAG for the replay evaluation)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s %(levelname)s] %(message)s",
                        datefmt="%H:%M:%S")

    import time

    import torch

    from avsnet_ros.data.samples import DatasetError
    from avsnet_ros.models.checkpoint import CheckpointError
    from training.cli_common import print_json
    from training.datasets import open_split
    from training.evaluation import build_pipelines, evaluate_split, panel_indices_for, summary_rows, write_reports

    t0 = time.perf_counter()
    out_dir = Path(args.out)
    try:
        try:
            pipes = build_pipelines(args.avs_checkpoint, args.rgb_checkpoint, args.relative_checkpoint, args.device)
        except RuntimeError as exc:  # e.g. --device cuda without CUDA
            raise ValueError(str(exc)) from exc
        sets = [("test", args.data, args.split)]
        if args.zero_shot_data:
            sets.append(("zero_shot", args.zero_shot_data, args.zero_shot_split))
        results = []
        for name, path, split in sets:
            opened = open_split(path, split, args.max_depth_m, args.skip_bad)
            n = len(opened.dataset) if args.max_samples is None else min(len(opened.dataset), args.max_samples)
            LOG.info("%s: %d samples of %s split %r (%s, max depth %.1f m)", name, n, path, split, opened.kind,
                     opened.max_depth_m)
            res = evaluate_split(pipes, opened.dataset, name, str(path), opened.max_depth_m, out_dir,
                                 batch_size=args.batch_size, save_predictions=args.save_predictions,
                                 panel_indices=panel_indices_for(n, args.panels), gradcam=not args.no_gradcam,
                                 progress=not args.no_progress, max_samples=args.max_samples)
            if res.summaries["rgb_echo"]["count"] == 0:
                raise DatasetError(f"{path} ({split}): no sample with valid ground-truth depth to evaluate")
            results.append(res)
    except (FileNotFoundError, DatasetError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    meta = {
        "data": str(args.data), "split": args.split, "max_depth_m": results[0].max_depth_m,
        "samples": results[0].n_samples, "samples_without_gt": results[0].n_without_gt,
        "skipped_rows": results[0].skipped_rows, **{f"checkpoint_{k}": v for k, v in pipes.checkpoints.items()},
        "device": str(getattr(pipes.echo_median, "device", args.device)), "torch": torch.__version__,
        "command": "python training/evaluate.py " + " ".join(argv),
    }
    summary: dict = dict(summary_rows(results[0]))
    if len(results) > 1:
        zs = summary_rows(results[1])
        zs["data"] = str(results[1].data)
        zs["max_depth_m"] = results[1].max_depth_m
        summary["zero_shot"] = zs
    meta["time_s"] = round(time.perf_counter() - t0, 2)
    summary["meta"] = meta
    files = write_reports(out_dir, results, summary, {k: meta[k] for k in ("data", "split", "max_depth_m", "command")})
    summary["meta"]["outputs"] = files
    print((out_dir / "results.md").read_text(), file=sys.stderr)
    for key in (r.key for r in results[0].row_specs):
        s = summary[key]
        LOG.info("%-22s abs_rel %.4f  delta1 %.4f  (%d images)", key, s["abs_rel"], s["delta1"], s["count"])
    if args.json:
        print_json(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
