#!/usr/bin/env python3
"""Echo robustness tables: the same scenes recorded with other chirps and levels (README, issue 12).

    python training/robustness.py --sets /work/data12/robust --avs-checkpoint DIR --rgb-checkpoint DIR \
        [--extra-avs NAME=DIR ...] [--split test] [--out DIR] [--json]

--sets holds one BV2-layout folder per cell, named <law><ms>_m<level> (e.g. lin3_m30 = linear 3 ms at
-30 dBFS, written by `make_synthetic.py --sweep ... --level-dbfs ...` from the same scenes), plus any
other folders (e.g. unheard_known / unheard_unknown), which get a row of their own. Every folder is
evaluated with the pseudo-metric depth of the RGB-only model and of each echo model (Table 1 rows,
the BatVision protocol of training/evaluate.py: per image, valid pixels, then the mean), with each
sample's announced sweep (the dataset's `sweep` column; unknown when absent).

Outputs (--out): robustness.md (the chirp x level table of Abs Rel, RGB-only vs echoes and the
improvement, then the level table: for each scene and chirp, the echo model's median predicted depth
across the levels, max/min - 1, median and 95th percentile over scenes), robustness.json and
per_image.csv. With --json the last stdout line is the JSON summary.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CELL = re.compile(r"^(lin|exp)(\d+)_m(\d+)$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustness.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", required=True, help="folder of BV2-layout sets, one per chirp/level cell")
    p.add_argument("--avs-checkpoint", required=True, help="RGB + echo AVS-Net checkpoint")
    p.add_argument("--rgb-checkpoint", required=True, help="RGB-only AVS-Net checkpoint")
    p.add_argument("--extra-avs", nargs="*", default=[], metavar="NAME=DIR",
                   help="more RGB + echo checkpoints to compare (e.g. raw=runs/avsnet_raw/best/model)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-samples", type=int, default=0, help="per set (0 = all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/robustness")
    p.add_argument("--json", action="store_true")
    return p


def evaluate_set(path: Path, split: str, pipes: "dict", max_samples: int) -> "tuple[dict, list]":
    """{model: mean abs_rel} and per-image rows for one set."""
    import numpy as np

    from avsnet_ros.metrics import DepthMetricAccumulator
    from training.datasets import open_split

    data = open_split(path, split)
    n = len(data.dataset) if not max_samples else min(max_samples, len(data.dataset))
    accs = {k: DepthMetricAccumulator(data.max_depth_m, strict_max=True, invalid_pred="exclude") for k in pipes}
    rows = []
    for i in range(n):
        s = data.dataset[i]
        if s.depth_m is None:
            continue
        for name, pipe in pipes.items():
            r = pipe(s.rgb, s.echo, sample_rate_hz=s.sample_rate_hz, output_size_hw=s.depth_m.shape, sweep=s.sweep)
            pred = r.depth_m[0]
            m = accs[name].update(pred, s.depth_m, name=s.source)
            rows.append({"set": path.name, "model": name, "index": i, "source": s.source,
                         "abs_rel": m["abs_rel"], "median_pred_m": float(np.nanmedian(pred)),
                         "echo_quality": None if r.echo_quality is None else float(r.echo_quality[0]),
                         "sweep": "" if s.sweep is None else s.sweep.to_text()})
    return {k: a.summary()["abs_rel"] for k, a in accs.items()}, rows


def level_variation(rows: list, model: str) -> "dict[str, tuple[float, float]]":
    """Per chirp: (median, 95th percentile) over scenes of max/min - 1 of the median predicted depth
    across the levels of that chirp."""
    import numpy as np

    by = {}
    for r in rows:
        m = CELL.match(r["set"])
        if r["model"] != model or not m:
            continue
        by.setdefault((m.group(1) + m.group(2), r["index"]), []).append(r["median_pred_m"])
    out = {}
    for chirp in sorted({k[0] for k in by}):
        v = [max(x) / min(x) - 1.0 for (c, _), x in by.items() if c == chirp and len(x) > 1 and min(x) > 0]
        if v:
            out[chirp] = (float(np.median(v)), float(np.percentile(v, 95)))
    return out


def markdown(results: dict, rows: list, models: list) -> str:
    cells = {k: v for k, v in results.items() if CELL.match(k)}
    others = {k: v for k, v in results.items() if not CELL.match(k)}
    chirps = sorted({CELL.match(k).group(1) + CELL.match(k).group(2) for k in cells},
                    key=lambda c: (c[:3], int(c[3:])))
    levels = sorted({int(CELL.match(k).group(3)) for k in cells}, reverse=True)
    lines = []
    for model in models:
        lines += [f"**Abs Rel, RGB-only -> {model}** (improvement of the echo model over RGB-only)", "",
                  "| chirp | " + " | ".join(f"-{lv} dBFS" for lv in levels) + " |",
                  "| --- |" + " --- |" * len(levels)]
        for c in chirps:
            row = [f"{c[:3]} {c[3:]} ms"]
            for lv in levels:
                r = cells.get(f"{c}_m{lv}")
                if r is None:
                    row.append("-")
                    continue
                gain = 1.0 - r[model] / r["rgb"]
                row.append(f"{r['rgb']:.3f} -> {r[model]:.3f} ({100 * gain:+.0f} %)")
            lines.append("| " + " | ".join(row) + " |")
        for name, r in sorted(others.items()):
            gain = 1.0 - r[model] / r["rgb"]
            pad = " |" * (len(levels) - 1)
            lines.append(f"| {name} | {r['rgb']:.3f} -> {r[model]:.3f} ({100 * gain:+.0f} %) |" + pad)
        var = level_variation(rows, model)
        if var:
            lines += ["", f"Level invariance of {model}: median predicted depth across "
                      + ", ".join(f"-{lv}" for lv in levels) + " dBFS, max/min - 1 per scene: "
                      + "; ".join(f"{c} median {100 * a:.1f} % (p95 {100 * b:.1f} %)" for c, (a, b) in var.items())]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from avsnet_ros.fileio import atomic_open, atomic_write_json, atomic_write_text
    from avsnet_ros.pipeline import DepthPipeline

    pipes = {"rgb": DepthPipeline.from_checkpoints(args.rgb_checkpoint, False, device=args.device),
             "echo": DepthPipeline.from_checkpoints(args.avs_checkpoint, False, device=args.device)}
    for item in args.extra_avs:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--extra-avs wants NAME=DIR, got {item!r}")
        pipes[name] = DepthPipeline.from_checkpoints(path, False, device=args.device)
    sets = sorted(p for p in Path(args.sets).iterdir() if p.is_dir())
    if not sets:
        raise SystemExit(f"no dataset folders in {args.sets}")
    results, rows = {}, []
    for path in sets:
        res, r = evaluate_set(path, args.split, pipes, args.max_samples)
        results[path.name] = res
        rows += r
        print(f"{path.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = [k for k in pipes if k != "rgb"]
    md = markdown(results, rows, models)
    atomic_write_text(out / "robustness.md", md + "\n")
    with atomic_open(out / "per_image.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {"abs_rel": results, "level_variation": {m: level_variation(rows, m) for m in models}}
    atomic_write_json(out / "robustness.json", summary)
    print(md)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
