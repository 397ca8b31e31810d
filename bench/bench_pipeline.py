"""Inference cost, layer by layer: bare model forward vs the full pipeline call vs the depth node.

Input: the real BV2 instance (camera 1280x720 uint8 RGB, decoded once; its 2 x 44100 Hz echo).
Measured in interleaved rounds (each round runs every variant once) so that background load on a
shared machine hits all variants alike; medians over the rounds.

    forward       AVS-Net(rgb, spectrogram) + relative model(rgb), tensors already on the device
    front_end     DepthPipeline.prepare_echo(spectrogram=True): the echo front-end (rerender:
                  deconvolution by the sweep, here identified, sticky) and the model's input
                  spectrogram (echo window, STFT, resize), once per echo; the depth node runs both on
                  its echo thread when the echo arrives, off the frame path, so the frame-path rows
                  below take its result (a FrontEndResult with the spectrogram attached), as the
                  node's frame path does
    preprocess    DepthPipeline.preprocess: host resize of the frame for both models into one buffer
                  (avsnet_ros.preprocessing.FrameStager), one host->device copy (none on the CPU),
                  the echo's attached spectrogram (everything before the forward)
    preprocess_echo  the same given the front-end result without the spectrogram: echo crop staged
                  with the frame, STFT + resize on the frame path (a caller that does not prepare it)
    full          DepthPipeline.__call__: preprocess + forward + scaling + resize to 1280x720 + NaN
                  mask + device->host copy
    full_raw      the same call given the raw echo buffer (front-end included), for reference
    node          depth node end to end over rclpy: the depth_node process (bench_node.NodeProcess)
                  fed from this process, interleaved with the bare forward (forward_with_node), the
                  full call (full_with_node) and the node's own call, the full call with
                  depth_only=True (lean_with_node: no pseudo-metric/relative maps at the output
                  size, which the node does not publish)
    avs_echo / avs_rgb   the echo model's and the RGB-only model's forward alone

Targets (issue 11 item 4, all from this one run): full call <= 1.15 x forward; preprocess (incl.
STFT) <= 8 % of forward; depth node end to end <= 1.25 x forward (the forward it is interleaved
with); and (issue 7) node <= 1.15 x full call, avs_echo <= 1.25 x avs_rgb. Each ratio is the median
over rounds of the per-round ratio.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import (environment, fixture_inputs, interleaved, load_models, main_for,  # noqa: E402
                        paired_ratio, target)


def profile_full_call(pipe, rgb, echo, top: int = 12) -> list[dict]:
    """torch.profiler table of one full pipeline call (the biggest CPU costs), for the report."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("pipeline_call"):
            pipe(rgb, echo)
    rows = []
    for ev in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        rows.append({"op": ev.key, "self_cpu_ms": ev.self_cpu_time_total / 1e3, "calls": ev.count})
    return rows


def run(quick: bool = False, with_node: bool = True) -> dict:
    import torch

    from avsnet_ros.pipeline import DepthPipeline

    models = load_models()
    rgb, echo, rate = fixture_inputs()
    pipe = DepthPipeline(models["avs"], models["relative"], device="auto")
    sync = torch.cuda.synchronize if pipe.device.type == "cuda" else (lambda: None)
    avs_rgb = models["avs_rgb"].to(pipe.device).eval()
    # the echo through the model's front-end and STFT once (the node: on the echo thread, once per echo)
    fronted = pipe.prepare_echo(echo, None, rate, spectrogram=True)
    fronted_only = pipe.prepare_echo(echo, None, rate)  # the front-end result alone
    batch = pipe.preprocess(rgb, fronted, rate)

    @torch.inference_mode()
    def forward():
        pipe.avs_model(batch.rgb_avs, batch.spectrogram)
        pipe.relative_model(batch.rgb_rel)
        sync()

    def front_end():
        pipe.prepare_echo(echo, None, rate, spectrogram=True)

    @torch.inference_mode()
    def preprocess():
        pipe.preprocess(rgb, fronted, rate)
        sync()

    @torch.inference_mode()
    def preprocess_echo():
        pipe.preprocess(rgb, fronted_only, rate)
        sync()

    def full():
        pipe(rgb, fronted, rate)

    def full_raw():
        pipe(rgb, echo, rate)

    def lean():  # the depth node's call: only the depth is resized to the output size
        pipe(rgb, fronted, rate, depth_only=True)

    @torch.inference_mode()
    def avs_echo():
        pipe.avs_model(batch.rgb_avs, batch.spectrogram)
        sync()

    @torch.inference_mode()
    def avs_rgb_only():
        avs_rgb(batch.rgb_avs, None)
        sync()

    rounds = 5 if quick else 25
    # Phase 1: the model-level comparisons.
    # Compared pairs run back to back in each round: (forward, preprocess), (echo, rgb).
    res = interleaved({"forward": forward, "preprocess": preprocess, "preprocess_echo": preprocess_echo,
                       "full": full, "full_raw": full_raw,
                       "front_end": front_end, "avs_echo": avs_echo, "avs_rgb": avs_rgb_only}, rounds=rounds)
    profile = profile_full_call(pipe, rgb, fronted)
    node_res, node_counters = None, None
    if with_node:
        # Phase 2: the full call (this process) vs the depth node end to end (its own process,
        # bench_node.NodeProcess), interleaved.
        from bench_node import NodeProcess

        node = NodeProcess(models)
        try:
            node.prime(echo)
            node_res = interleaved({"forward_with_node": forward, "full_with_node": full,
                                    "node": lambda: float(node.round_trip(rgb, echo)), "lean_with_node": lean},
                                   rounds=rounds,
                                   warmup=5)  # the first frames after DDS discovery are slow
            node_counters = node.counters()
        finally:
            node.close()
        res.update(node_res)

    med = {k: v["median_ms"] for k, v in res.items()}
    # ratios: median over rounds of the per-round ratio (bench_util.paired_ratio)
    prep_frac = paired_ratio(res, "preprocess_echo", "forward")
    full_over_fwd = paired_ratio(res, "full", "forward")
    full_raw_over_fwd = paired_ratio(res, "full_raw", "forward")
    echo_ratio = paired_ratio(res, "avs_echo", "avs_rgb")
    targets = [
        target("preprocessing + STFT / model forward", prep_frac, 0.08, "<=", "fraction",
               f"medians {med['preprocess_echo']:.1f} ms vs {med['forward']:.1f} ms; p10s "
               f"{res['preprocess_echo']['p10_ms']:.1f} vs {res['forward']['p10_ms']:.1f} ms (the echo's STFT on "
               f"the frame path)"),
        target("preprocessing of a frame whose echo is prepared (the node's frame path) / model forward",
               paired_ratio(res, "preprocess", "forward"), None, "<=", "fraction",
               f"medians {med['preprocess']:.1f} ms vs {med['forward']:.1f} ms (the STFT once per echo, on "
               f"the node's echo thread)"),
        target("full pipeline call / bare model forward", full_over_fwd, 1.15, "<=", "x",
               f"medians {med['full']:.1f} ms vs {med['forward']:.1f} ms"),
        target("full call given the raw echo (front-end included) / bare model forward", full_raw_over_fwd, None,
               "<=", "x", f"medians {med['full_raw']:.1f} ms vs {med['forward']:.1f} ms; the front-end alone "
               f"{med['front_end']:.1f} ms per echo"),
        target("echo model / RGB-only model forward", echo_ratio, 1.25, "<=", "x",
               f"medians {med['avs_echo']:.1f} ms vs {med['avs_rgb']:.1f} ms"),
    ]
    if node_res is not None:
        targets.insert(0, target("depth node end to end (rclpy) / bare model forward",
                                 paired_ratio(res, "node", "forward_with_node"), 1.25, "<=", "x",
                                 f"medians {med['node']:.1f} ms vs {med['forward_with_node']:.1f} ms"))
        targets.insert(1, target("depth node end to end (rclpy) / full pipeline call",
                                 paired_ratio(res, "node", "full_with_node"), 1.15, "<=", "x",
                                 f"medians {med['node']:.1f} ms vs {med['full_with_node']:.1f} ms; p10s "
                                 f"{res['node']['p10_ms']:.1f} vs {res['full_with_node']['p10_ms']:.1f} ms"))
        targets.insert(2, target("depth node end to end (rclpy) / the node's own call (depth_only)",
                                 paired_ratio(res, "node", "lean_with_node"), None, "<=", "x",
                                 f"the ROS overhead alone; medians {med['node']:.1f} ms vs "
                                 f"{med['lean_with_node']:.1f} ms"))
    result = {
        "name": "pipeline",
        "input": {"rgb_hw": list(rgb.shape[:2]), "echo_samples": int(echo.shape[1]), "sample_rate_hz": rate,
                  "avs_input_hw": list(pipe.input_size_hw()), "relative_input_hw": list(pipe.relative_size_hw)},
        "models": models["source"],
        "device": str(pipe.device),
        "timings": res,
        "node_counters": node_counters,
        "profile_full_call": profile,
        "environment": environment(),
        "targets": targets,
    }
    if pipe.device.type == "cuda":
        result["fps_full_call"] = 1e3 / med["full"]
    return result


if __name__ == "__main__":
    raise SystemExit(main_for("pipeline", run))
