"""`make bench`: run every benchmark, write bench/results/*.json and bench/results/SUMMARY.md.

    python bench/run_all.py [--quick] [--budget-s 570] [--only stft,pipeline,...]

Sections (each also runs alone as `python bench/bench_X.py`):
    stft        batvision_stft vs scipy.signal.stft (batch 16)
    pipeline    bare forward vs preprocess vs full pipeline call vs depth node over rclpy; echo vs RGB-only
    models      tiny and paper configurations at 256x512 / 192x640, batch 1 and 8 (bench/bench_models.py)
    synthetic   make_synthetic.py samples/s (its output feeds the training section)
    training    stage 1 / stage 2 samples/s through the real CLIs; torchrun 2 processes vs 1

The whole run must stay under 10 minutes on 2 CPU cores: the sections run in the order stft,
pipeline, synthetic, training, models, and the slow paper-size forwards get only what is left of
--budget-s (skipped, and said so in the summary, when it is not enough). torch.set_num_threads is fixed
(AVSNET_BENCH_THREADS, default 2) for the in-process sections; subprocess sections set OMP_NUM_THREADS the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import (DEFAULT_THREADS, REPO_ROOT, RESULTS_DIR, environment, fix_threads,  # noqa: E402
                        write_result)

SECTIONS = ("stft", "pipeline", "models", "synthetic", "training")  # summary table order
# Run order: the paper-size forwards (models) last, gated by what is left of the budget.
RUN_ORDER = ("stft", "pipeline", "synthetic", "training", "models")
# Rough cost of the paper-size forwards on 2 CPU cores (seconds, incl. model build), used to decide
# what still fits in the budget; measured values replace nothing, they only gate.
PAPER_B1_COST_S = 90.0
PAPER_B8_COST_S = 200.0


def _models(quick: bool, remaining_s: float, threads: int) -> dict:
    """bench/bench_models.py (the models helper's script): tiny b1+b8 always; paper b1 and b8 when
    the budget allows. Paper batch 8 runs AVS-Net (RGB + echo), DepthNet and PoseNet (the RGB-only
    AVS-Net's paper cost is known from batch 1) with one timed forward after one warm-up."""
    import bench_models

    out: dict = {"name": "models", "sections": {}, "skipped": [], "targets": []}
    t0 = time.perf_counter()
    tiny_json = RESULTS_DIR / "models_tiny.json"
    subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_models.py"), "--batch", "--only", "tiny",
                    "--reps", "3" if quick else "5", "--threads", str(threads), "--out", str(tiny_json)],
                   cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=600)
    out["sections"]["tiny_b1_b8"] = json.loads(tiny_json.read_text())["results"]
    if quick:
        out["skipped"].append("paper presets (--quick)")
        return out
    if remaining_s - (time.perf_counter() - t0) > PAPER_B1_COST_S:
        paper_json = RESULTS_DIR / "models_paper_b1.json"
        subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_models.py"), "--only", "paper",
                        "--reps", "1", "--threads", str(threads), "--out", str(paper_json)],
                       cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=900)
        out["sections"]["paper_b1"] = json.loads(paper_json.read_text())["results"]
    else:
        out["skipped"].append("paper batch 1 (time budget)")
    if remaining_s - (time.perf_counter() - t0) > PAPER_B8_COST_S:
        import torch

        from avsnet_ros.pipeline import select_device

        fix_threads(threads)
        device = select_device("cpu")
        rows = []
        for name, preset, cfg, hw in bench_models._cases(["paper"]):
            if name == "AVS-Net (RGB only)":
                continue
            if remaining_s - (time.perf_counter() - t0) < (PAPER_B8_COST_S if "AVS" in name else 30.0):
                out["skipped"].append(f"paper batch 8 {name} (time budget)")
                continue
            torch.manual_seed(0)
            model = bench_models.build_model(cfg).to(device).eval()
            times = bench_models._time(model, bench_models._inputs(cfg, hw, 8, device), 1, device)
            rows.append(dict(model=name, preset=preset, input_hw=list(hw), batch=8,
                             params=sum(p.numel() for p in model.parameters()), forward_s_median=times[0],
                             forward_s_min=min(times), reps=len(times)))
            print(f"[bench] paper b8 {name}: {times[0]:.1f} s", file=sys.stderr, flush=True)
            del model
        out["sections"]["paper_b8"] = rows
    else:
        out["skipped"].append("paper batch 8 (time budget)")
    return out


def _summary_md(results: dict, env: dict, total_s: float, quick: bool) -> str:
    lines = ["# Benchmark summary", "",
             f"`make bench` ({'--quick, ' if quick else ''}{total_s:.0f} s) on {env['platform']}, "
             f"{env['cpu_count']} CPU cores, torch {env['torch']} with {DEFAULT_THREADS} threads"
             f"{', CUDA ' + env.get('cuda_device', '') if env['cuda'] else ', no GPU'}; load average at the start "
             f"{env.get('loadavg_1m', float('nan')):.1f}. Ratios are measured in this one run on this machine "
             "(absolute times vary with the machine and its load). Medians after warm-up.", "",
             "| measurement | value | target | met |", "| --- | ---: | ---: | :---: |"]
    for name in SECTIONS:
        r = results.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name}: FAILED ({r['error'][:120]}) | | | |")
            continue
        for t in r.get("targets", []):
            unit = t["unit"]
            fmt = (lambda v: f"{100 * v:.1f} %") if unit == "fraction" else (
                lambda v: f"{v:.2f} {unit}" if unit != "x" else f"{v:.2f}x")
            limit = f"{t['op']} {fmt(t['limit'])}" if t["limit"] is not None else "-"
            met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
            lines.append(f"| {t['name']} ({t['detail']}) | {fmt(t['value'])} | {limit} | {met} |")
    p = results.get("pipeline", {})
    if "timings" in p:
        lines += ["", f"Pipeline timings ({p['input']['rgb_hw'][1]}x{p['input']['rgb_hw'][0]} camera frame and its "
                  f"echo, real BV2 instance; models: {p['models']}; device {p['device']}):", "",
                  "| stage | median (ms) | p10 | p90 |", "| --- | ---: | ---: | ---: |"]
        for k, v in p["timings"].items():
            lines.append(f"| {k} | {v['median_ms']:.1f} | {v['p10_ms']:.1f} | {v['p90_ms']:.1f} |")
    m = results.get("models", {})
    if m.get("sections"):
        lines += ["", "Model forwards (random weights, inference_mode, CPU):", "",
                  "| model | preset | input | batch | parameters | forward (ms) |",
                  "| --- | --- | --- | ---: | ---: | ---: |"]
        for rows in m["sections"].values():
            for r in rows:
                lines.append(f"| {r['model']} | {r['preset']} | {r['input_hw'][0]}x{r['input_hw'][1]} | {r['batch']} | "
                             f"{r['params'] / 1e6:.2f} M | {1e3 * r['forward_s_median']:.0f} |")
        if m.get("skipped"):
            lines.append("")
            lines.append("Skipped: " + "; ".join(m["skipped"]) + ".")
    t = results.get("training", {})
    if t.get("runs"):
        lines += ["", f"Training runs ({t['data']}; batch {t['batch_per_process']} per process, throughput over "
                  "epoch 2):", "", "| run | processes x threads | samples/s |", "| --- | --- | ---: |"]
        for k, r in t["runs"].items():
            lines.append(f"| {k} | {r['processes']} x {r['threads_per_process']} | {r['samples_per_s']:.2f} |")
    lines += ["", "Per-section JSON: bench/results/<section>.json (models: models_all.json); how to read them: "
              "bench/README.md.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no paper-size forwards (smoke run)")
    ap.add_argument("--budget-s", type=float, default=570.0, help="wall-clock budget of the whole run")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    args = ap.parse_args(argv)
    wanted = [s for s in args.only.split(",") if s]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    threads = fix_threads(DEFAULT_THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    env = environment()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="avsnet_bench_"))
    results: dict = {}
    try:
        for name in RUN_ORDER:
            if name not in wanted:
                continue
            t0 = time.perf_counter()
            remaining = args.budget_s - (t0 - t_start)
            print(f"[bench] {name} ({remaining:.0f} s of the budget left)", file=sys.stderr, flush=True)
            try:
                if name == "stft":
                    import bench_stft
                    r = bench_stft.run(quick=args.quick)
                elif name == "pipeline":
                    import bench_pipeline
                    r = bench_pipeline.run(quick=args.quick)
                elif name == "models":
                    r = _models(args.quick, remaining - 15.0, threads)
                elif name == "synthetic":
                    import bench_synthetic
                    r = bench_synthetic.run(quick=args.quick, out_dir=work / "synth")
                else:
                    import bench_training
                    r = bench_training.run(quick=args.quick, work_dir=work)
            except Exception as exc:  # noqa: BLE001 - one failed section must not hide the others
                traceback.print_exc()
                r = {"name": name, "error": f"{type(exc).__name__}: {exc}", "targets": []}
            r["section_s"] = time.perf_counter() - t0
            results[name] = r
            # bench_models.py's own default output is models.json: keep its schema, ours is models_all
            write_result({"models": "models_all"}.get(name, name), r)
            for t in r.get("targets", []):
                met = "" if t["met"] is None else (" [met]" if t["met"] else " [NOT MET]")
                print(f"[bench]   {t['name']}: {t['value']:.3g} {t['unit']}{met}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_start
    summary = _summary_md(results, env, total, args.quick)
    if set(wanted) == set(SECTIONS):
        (RESULTS_DIR / "SUMMARY.md").write_text(summary)
    write_result("run_all", {"total_s": total, "sections": {k: v.get("section_s") for k, v in results.items()},
                             "environment": env, "quick": args.quick})
    print(summary)
    print(f"[bench] done in {total:.0f} s", file=sys.stderr)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
