"""Benchmark: parameter count and forward time of the tiny and paper model configurations.

    python bench/bench_models.py [--batch] [--device auto|cpu|cuda] [--reps 3] [--threads N]
                                 [--only tiny|paper] [--out bench/results/models.json]

Models: AVS-Net (RGB + echo) and its RGB-only baseline at 256x512, DepthNet at 192x640 and PoseNet
(a frame pair) at 192x640, for the "tiny" and "paper" presets (random weights: speed does not
depend on them). Batch 1, plus batch 8 with --batch. Times are the median of --reps forwards
under torch.inference_mode after one warm-up forward (CUDA: synchronised). Writes JSON and prints a
Markdown table. Not a test: absolute times depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from avsnet_ros.models import AVSNetConfig, RelativeDepthConfig, build_model  # noqa: E402
from avsnet_ros.pipeline import select_device  # noqa: E402

AVS_HW = (256, 512)
REL_HW = (192, 640)


def _cases(presets):
    for preset in presets:
        yield "AVS-Net (RGB + echo)", preset, AVSNetConfig(preset=preset, image_size_hw=AVS_HW), AVS_HW
        yield "AVS-Net (RGB only)", preset, AVSNetConfig(preset=preset, image_size_hw=AVS_HW, use_audio=False), AVS_HW
        yield "DepthNet", preset, RelativeDepthConfig(preset=preset, image_size_hw=REL_HW), REL_HW
        yield "PoseNet", preset, RelativeDepthConfig(kind="posenet", preset=preset, image_size_hw=REL_HW), REL_HW


def _inputs(cfg, hw, batch, device):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(batch, 3, *hw, generator=g).to(device)
    if cfg.kind == "avsnet":
        return (rgb, torch.rand(batch, 2, *hw, generator=g).to(device) * 10 if cfg.use_audio else None)
    if cfg.kind == "posenet":
        return (rgb, torch.rand(batch, 3, *hw, generator=g).to(device))
    return (rgb,)


def _time(model, inputs, reps, device):
    def run():
        model(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        run()  # warm-up (allocations, kernel selection)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", action="store_true", help="also time batch 8")
    ap.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--only", choices=["tiny", "paper"], default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "models.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    presets = [args.only] if args.only else ["tiny", "paper"]
    batches = [1, 8] if args.batch else [1]
    rows = []
    for name, preset, cfg, hw in _cases(presets):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = build_model(cfg).to(device).eval()
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        for batch in batches:
            times = _time(model, _inputs(cfg, hw, batch, device), args.reps, device)
            row = dict(
                model=name,
                preset=preset,
                input_hw=list(hw),
                batch=batch,
                params=params,
                forward_s_median=statistics.median(times),
                forward_s_min=min(times),
                reps=len(times),
                build_s=build_s,
            )
            rows.append(row)
            print(f"{name:22s} {preset:5s} {hw[0]}x{hw[1]} b{batch}: {params / 1e6:7.2f} M params, "
                  f"{row['forward_s_median'] * 1e3:9.1f} ms", file=sys.stderr, flush=True)
        del model
    env = dict(
        device=str(device),
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or platform.machine()),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        python=platform.python_version(),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(environment=env, results=rows), indent=2) + "\n")
    print(f"\n{env['device']} ({env['device_name']}), torch {env['torch']}, {env['threads']} threads; "
          f"median of {args.reps} forwards after 1 warm-up, inference_mode\n")
    print("| model | preset | input | batch | parameters | forward (ms) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['preset']} | {r['input_hw'][0]}x{r['input_hw'][1]} | {r['batch']} | "
              f"{r['params'] / 1e6:.2f} M | {r['forward_s_median'] * 1e3:.1f} |")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
