#!/usr/bin/env python3
"""Predicted vs ground-truth median depth on the bundled real BatVision V2 instance (README, issue 12).

    python training/real_sample.py [NAME=CHECKPOINT_DIR ...] [--json]

Default: the shipped avsnet_tiny and avsnet_tiny_rgb. For each model the image and its real recording
go through DepthPipeline with BatVision's sweep announced and with the sweep unknown (identified);
printed: the median predicted depth over the valid ground-truth pixels, Abs Rel, and the echo
front-end's direct-path quality.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import cv2
    import numpy as np

    from avsnet_ros.audio import read_wav
    from avsnet_ros.audio.frontend import SweepSpec
    from avsnet_ros.paths import asset_path
    from avsnet_ros.pipeline import DepthPipeline

    p = argparse.ArgumentParser(prog="real_sample.py", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", metavar="NAME=DIR")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    models = args.models or [f"avsnet_tiny={asset_path('checkpoints', 'avsnet_tiny')}",
                             f"avsnet_tiny_rgb={asset_path('checkpoints', 'avsnet_tiny_rgb')}"]
    bgr = cv2.imread(str(asset_path("batvision_v2_sample", "camera_47.jpeg")))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raw = read_wav(asset_path("batvision_v2_sample", "audio_47.wav"))
    echo = np.asarray(raw[0] if isinstance(raw, tuple) else raw, np.float32)
    gt = np.load(asset_path("batvision_v2_sample", "depth_47.npy")).astype(np.float64)
    gt = gt / 1000.0 if np.nanmax(gt) > 100 else gt  # BatVision V2 stores millimetres
    valid = np.isfinite(gt) & (gt > 0) & (gt < 30.0)
    out = {"gt_median_m": float(np.median(gt[valid])), "models": {}}
    for spec in models:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"expected NAME=DIR, got {spec!r}")
        pipe = DepthPipeline.from_checkpoints(avs_checkpoint=path, relative_checkpoint=False, device="cpu")
        rows = {}
        for label, sweep in (("sweep_known", SweepSpec()), ("sweep_unknown", None)):
            if hasattr(pipe.frontend, "reset"):
                pipe.frontend.reset()  # each case identifies afresh
            r = pipe(rgb, echo, sweep=sweep, output_size_hw=gt.shape[:2])
            d = r.depth_m[0]
            m = valid & np.isfinite(d)
            q = getattr(r, "echo_quality", None)
            rows[label] = {"median_m": float(np.median(d[m])), "abs_rel": float(np.mean(np.abs(d[m] - gt[m]) / gt[m])),
                           "echo_quality": None if q is None else float(np.asarray(q).ravel()[0])}
        out["models"][name] = rows
        if not args.json:
            for label, row in rows.items():
                print(f"{name:24s} {label:14s} median {row['median_m']:.3f} m (ground truth {out['gt_median_m']:.3f} m)"
                      f"  abs_rel {row['abs_rel']:.3f}  echo quality {row['echo_quality']}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
