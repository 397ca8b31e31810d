#!/usr/bin/env python3
"""Stage-2 collapse diagnostic: does a DepthNet predict depth *structure*, and does PoseNet move?

    python training/diagnose_relative.py --run runs/relative --data data_synth/train --split val [--n 60] [--json]
    python training/diagnose_relative.py --depthnet assets/checkpoints/depthnet_tiny --data data_synth/test --split test

Over the centre frames of held-out triples (valid ground-truth pixels strictly below max_depth_m), per image:
- ``log_std_pred`` / ``log_std_gt``: std of log depth (a constant map gives 0; the synthetic rooms ~0.3-0.4);
- ``abs_rel_med``: Abs Rel after ground-truth median scaling (the validation protocol), and
  ``abs_rel_const``: the same for a constant prediction (the floor a model must clearly beat: median
  scaling hides a collapsed model, which scores exactly this);
- ``log_corr``: Pearson correlation of log pred and log GT;
and, when a PoseNet is given (``--run`` gives RUN/best/{depthnet,posenet}), the scale-free motion per
frame ``|t| / median depth`` and the rotation angle (degrees) predicted (t->t+1) vs ground truth
(camera poses from the data's pose columns, or the synthetic world's ``<split>_meta.csv``). Means over
images are printed (``--json``: one JSON line).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _camera_poses(root: Path, split: str) -> dict:
    """{(sequence, frame): T_world_optical (4, 4)} from the synthetic generator's <split>_meta.csv files
    (datasets written before the split CSVs carried the pose columns; empty for other data)."""
    from avsnet_ros.data.poses import camera_pose_world_optical

    out = {}
    for meta in sorted(root.glob(f"**/{split}_meta.csv")):
        with open(meta, newline="") as f:
            for row in csv.DictReader(f):
                pos = [float(row["cam_x_m"]), float(row["cam_y_m"]), float(row["cam_z_m"])]
                out[(row["sequence"], int(row["frame"]))] = camera_pose_world_optical(
                    pos, float(row["yaw_deg"]), float(row["pitch_deg"]), float(row["roll_deg"]))
    return out


def diagnose(depthnet, data_root: str, split: str, n: int = 60, posenet=None, batch_size: int = 8) -> dict:
    """Mean per-image statistics (see the module docstring) over the first ``n`` triples of ``split``."""
    import numpy as np
    import torch

    from avsnet_ros.data.batvision import TripletDataset
    from avsnet_ros.data.poses import target_to_source
    from avsnet_ros.data.torch_dataset import TorchTripletDataset
    from training.datasets import FirstN, open_split

    data = open_split(data_root, split)
    triplets = TripletDataset(data.dataset, 1)
    base = FirstN(triplets, n) if n and len(triplets) > n else triplets
    config = getattr(depthnet, "config", None)  # DepthNet: its input size; transformers: the processor's
    size_hw = tuple(getattr(config, "image_size_hw", None) or depthnet.processing.size_hw)
    ds = TorchTripletDataset(base, size_hw, max_depth_m=data.max_depth_m)
    poses = _camera_poses(Path(data_root), split)
    rows = []
    depthnet.eval()
    if posenet is not None:
        posenet.eval()
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(start, min(len(ds), start + batch_size))]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
            depth = depthnet.depth(batch["rgb"]).float()
            t_pred = r_pred = None
            if posenet is not None:
                axisangle, translation = posenet(batch["rgb"], batch["rgb_next"])
                t_pred, r_pred = translation.norm(dim=1), torch.rad2deg(axisangle.norm(dim=1))
            for i, it in enumerate(items):
                valid = batch["valid"][i, 0] & (batch["depth_m"][i, 0] < data.max_depth_m)
                if int(valid.sum()) < 10:
                    continue
                gt = batch["depth_m"][i, 0][valid].double().numpy()
                pred = depth[i, 0][valid].double().numpy()
                lg, lp = np.log(gt), np.log(pred)
                scaled = pred * np.median(gt) / np.median(pred)
                row = {
                    "log_std_pred": float(lp.std()), "log_std_gt": float(lg.std()),
                    "abs_rel_med": float(np.mean(np.abs(scaled - gt) / gt)),
                    "abs_rel_const": float(np.mean(np.abs(np.median(gt) - gt) / gt)),
                    "log_corr": float(np.corrcoef(lp, lg)[0, 1]) if lp.std() > 0 else 0.0,
                    "pred_median": float(np.median(pred)),
                }
                if t_pred is not None:
                    row["t_over_z_pred"] = float(t_pred[i]) / float(np.median(pred))
                    row["rot_deg_pred"] = float(r_pred[i])
                    _, center, nxt = base[start + i]
                    w0, w1 = (s.pose_world_cam if s.pose_world_cam is not None
                              else poses.get((s.sequence_id, s.frame_index)) for s in (center, nxt))
                    if w0 is not None and w1 is not None:
                        motion = target_to_source(w0, w1)
                        row["t_over_z_gt"] = float(np.linalg.norm(motion[:3, 3])) / float(np.median(gt))
                        cos = (np.trace(motion[:3, :3]) - 1.0) / 2.0
                        row["rot_deg_gt"] = math.degrees(math.acos(min(1.0, max(-1.0, cos))))
                rows.append(row)
    if not rows:
        raise ValueError(f"{data_root} ({split}): no triple with ground-truth depth")
    keys = sorted({k for r in rows for k in r})
    summary = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    summary["images"] = len(rows)
    summary["frac_beats_const"] = float(np.mean([r["abs_rel_med"] < r["abs_rel_const"] for r in rows]))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="training run dir (uses RUN/best/depthnet and RUN/best/posenet)")
    p.add_argument("--depthnet", default=None, help="DepthNet checkpoint dir, or a transformers depth folder "
                   "predicting depth (self-supervised here, or metric) (instead of --run)")
    p.add_argument("--posenet", default=None, help="PoseNet checkpoint dir (optional)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=60, help="triples (0: all)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from avsnet_ros.models.checkpoint import load_model
    from avsnet_ros.models.hf_depth import load_relative_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    depth_dir = args.depthnet or (args.run and str(Path(args.run) / "best" / "depthnet"))
    pose_dir = args.posenet or (args.run and str(Path(args.run) / "best" / "posenet"))
    if not depth_dir:
        p.error("give --run or --depthnet")
    depthnet, output_type = load_relative_model(depth_dir)  # a DepthNet or a transformers folder
    if output_type == "disparity":
        p.error(f"{depth_dir} predicts affine-invariant disparity: the median-ratio diagnosis needs depth up to scale")
    if not hasattr(depthnet, "depth"):  # transformers: the module's output is the depth (metres or up to scale)
        depthnet.depth = depthnet.forward
    posenet = load_model(pose_dir)[0] if pose_dir and Path(pose_dir).exists() else None
    summary = diagnose(depthnet, args.data, args.split, args.n, posenet)
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>16s} {v:.4f}" if isinstance(v, float) else f"{k:>16s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
