"""Shared helpers of the benchmarks: fixed threads, warm-up + median timing, result files.

Every benchmark module exposes ``run(quick: bool = False) -> dict`` and can run alone
(``python bench/bench_X.py [--quick]``); bench/run_all.py runs them all and writes
bench/results/SUMMARY.md. Results are ratios measured in one run on one machine: absolute
times depend on the machine (and on what else runs on it), ratios much less so.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
BV2_SAMPLE_DIR = REPO_ROOT / "assets" / "batvision_v2_sample"
CHECKPOINT_DIR = REPO_ROOT / "assets" / "checkpoints"

if str(REPO_ROOT) not in sys.path:  # `import training.x` / `import bench.x` from the repo root
    sys.path.insert(0, str(REPO_ROOT))

# Every benchmark process runs with the nodes' OpenMP setting (bounded spin-waiting, set by importing
# avsnet_ros.nodes before torch loads; see its __init__): the full call in this process and the depth
# node in its own process then share 2 cores under the same runtime configuration.
import avsnet_ros.nodes  # noqa: E402,F401

# NaN/inf -> null, numpy/torch scalars -> numbers, Paths -> str: the training CLIs' one implementation.
from training.cli_common import json_safe  # noqa: E402

# One fixed intra-op thread count for every measurement of a run (env AVSNET_BENCH_THREADS).
DEFAULT_THREADS = int(os.environ.get("AVSNET_BENCH_THREADS", "2"))


def fix_threads(n: int = DEFAULT_THREADS) -> int:
    """torch.set_num_threads(n) (and interop 1 when still possible); returns n."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    return n


def interleaved(fns: dict, rounds: int, warmup: int = 2, settle_s: float = 0.02) -> dict:
    """Run each fn once per round (in order), `rounds` times after `warmup` rounds -> summaries.

    `settle_s` of idle time before each call: torch called from another thread (the depth node's
    worker) has its own OpenMP team whose threads spin for a few ms after their last parallel
    region; without the pause they would steal the cores from the next measurement.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    gc.collect()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(settle_s)
            t0 = time.perf_counter()
            value = fn()
            # a fn may time itself (returns seconds), e.g. the node round trip
            times[name].append(value if isinstance(value, float) else time.perf_counter() - t0)
    return {k: summarize(v) for k, v in times.items()}


def paired_ratio(res: dict, a: str, b: str) -> float:
    """Median over rounds of a_i / b_i from `interleaved` results: each round's two measurements
    saw the same background load, so the paired ratio is steadier than a ratio of medians."""
    ra, rb = res[a]["raw_ms"], res[b]["raw_ms"]
    return statistics.median(x / y for x, y in zip(ra, rb))


def summarize(times_s: list[float]) -> dict:
    """{median_ms, p10_ms, p90_ms, min_ms, runs, raw_ms (in run order)}."""
    raw = [1e3 * t for t in times_s]
    ms = sorted(raw)

    def q(p: float) -> float:
        return ms[min(len(ms) - 1, max(0, int(round(p * (len(ms) - 1)))))]

    return {"median_ms": statistics.median(ms), "p10_ms": q(0.1), "p90_ms": q(0.9), "min_ms": ms[0],
            "runs": len(ms), "raw_ms": [round(v, 3) for v in raw]}


def environment() -> dict:
    """Machine facts recorded with each result."""
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    try:
        env["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return env


def write_result(name: str, result: dict) -> Path:
    """bench/results/<name>.json (NaN -> null)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    return path


def target(name: str, value: float, limit: float | None, op: str = "<=", unit: str = "x", detail: str = "") -> dict:
    """One summary row: met when `value op limit`; limit None = a measured ratio without a target."""
    if limit is None:
        met = None
    else:
        met = bool(value <= limit if op == "<=" else value >= limit)
    return {"name": name, "value": value, "limit": limit, "op": op, "unit": unit, "met": met,
            "detail": detail}


def fixture_inputs() -> tuple:
    """(rgb uint8 (720, 1280, 3), echo float32 (2, N), sample_rate_hz) of the real BV2 instance."""
    from avsnet_ros.audio import read_wav
    from avsnet_ros.data.batvision import read_rgb

    rgb = read_rgb(BV2_SAMPLE_DIR / "camera_47.jpeg")
    echo, rate = read_wav(BV2_SAMPLE_DIR / "audio_47.wav")
    return rgb, echo, rate


def load_models(quiet: bool = False) -> dict:
    """The shipped checkpoints when present, else tiny random models with the shipped configs.

    Returns {"avs": AVSNet, "avs_rgb": AVSNet (RGB-only), "relative": DepthNet, "source": str} and
    "<key>_path" for the models that came from a shipped checkpoint directory.
    """
    import torch

    from avsnet_ros.models import AVSNetConfig, RelativeDepthConfig, build_model, load_model
    from avsnet_ros.models.config import replace

    names = {"avs": "avsnet_tiny", "avs_rgb": "avsnet_tiny_rgb", "relative": "depthnet_tiny"}
    out: dict = {}
    sources = []
    for key, name in names.items():
        path = CHECKPOINT_DIR / name
        if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
            out[key], _ = load_model(path, "cpu")
            out[f"{key}_path"] = path
            sources.append(f"{name}: shipped checkpoint")
        else:
            torch.manual_seed(0)
            if key == "relative":
                cfg = RelativeDepthConfig(preset="tiny")
            else:
                cfg = AVSNetConfig(preset="tiny")
                if key == "avs_rgb":
                    cfg = replace(cfg, use_audio=False)
            out[key] = build_model(cfg).eval()
            sources.append(f"{name}: random init (tiny preset, no shipped checkpoint)")
    out["source"] = "; ".join(sources)
    if not quiet:
        print(f"[bench] models: {out['source']}", file=sys.stderr)
    return out


def main_for(name: str, run: Callable[..., dict]) -> int:
    """`python bench/bench_X.py [--quick]`: run, print and write bench/results/<name>.json."""
    import argparse

    p = argparse.ArgumentParser(description=f"benchmark: {name}")
    p.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = p.parse_args()
    fix_threads()
    result = run(quick=args.quick)
    path = write_result(name, result)
    print(json.dumps(json_safe(result.get("targets", [])), indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0
