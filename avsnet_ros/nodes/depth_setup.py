"""depth_node's parameters (descriptors, ranges, defaults) and model loading, apart from the wiring."""
from __future__ import annotations

from avsnet_ros.nodes.common import ParamSpec
from avsnet_ros.policy import (DEFAULT_CONFIDENCE_HALF_LIFE_S, DEFAULT_MAX_ECHO_AGE_S, DEFAULT_SCALE_HOLD_S,
                               FALLBACKS)

PARAMS = (
    ParamSpec("autostart", True, "configure and activate at start-up (false: drive the lifecycle yourself)"),
    ParamSpec("device", "auto", "torch device for inference", choices=("auto", "cpu", "cuda")),
    ParamSpec("avs_checkpoint", "", "AVS-Net checkpoint dir (config.json + model.safetensors); "
              "empty = shipped assets/checkpoints/avsnet_tiny"),
    ParamSpec("relative_checkpoint", "", "relative depth (DepthNet) checkpoint dir; empty = shipped "
              "assets/checkpoints/depthnet_tiny"),
    ParamSpec("rgb_only_checkpoint", "", "RGB-only AVS-Net checkpoint for echo_fallback=rgb_only; "
              "empty = shipped assets/checkpoints/avsnet_tiny_rgb"),
    ParamSpec("scaling", "median", "how the echo pseudo-metric depth scales the relative depth",
              choices=("median", "mean_std", "none")),
    ParamSpec("amp", False, "automatic mixed precision (CUDA only)"),
    ParamSpec("torch_threads", 0, "torch intra-op threads (0 = torch default)", 0, 256),
    ParamSpec("malloc_keep_freed_mb", 64, "glibc malloc keeps up to this much freed memory for the next "
              "frame instead of returning it to the kernel (process-wide; avoids ~5000 page faults per "
              "inference in the worker thread; 0 = leave the allocator alone)", 0, 2047),
    ParamSpec("sample_rate_hz", 44100, "echo sample rate (the echo contract: 44100 Hz; must match the "
              "models)", 8000, 192000),
    ParamSpec("max_echo_age_s", DEFAULT_MAX_ECHO_AGE_S, "a frame pairs with the newest echo stamped at most this long "
              "before it (never after it)", 0.0, 60.0, live=True),
    ParamSpec("scale_hold_s", DEFAULT_SCALE_HOLD_S, "after the echo is too old, keep the last scale this long "
              "(confidence decaying) before echo_fallback applies", 0.0, 3600.0, live=True),
    ParamSpec("confidence_half_life_s", DEFAULT_CONFIDENCE_HALF_LIFE_S, "held-scale confidence halves every this many seconds",
              0.001, 3600.0, live=True),
    ParamSpec("echo_fallback", "drop", "without a usable echo or held scale: drop the frame, hold the "
              "last scale indefinitely, or publish the RGB-only model's pseudo-metric depth",
              choices=FALLBACKS),
    ParamSpec("echo_wait_s", 0.05, "a frame without a fresh echo waits up to this long for echo messages "
              "already being checked (callbacks run in parallel)", 0.0, 5.0, live=True),
    ParamSpec("future_tolerance_s", 0.5, "messages stamped more than this ahead of the node clock are "
              "rejected (future_stamp)", 0.0, 3600.0, live=True),
    ParamSpec("output_width_px", 0, "published depth width (0 = camera width)", 0, 16384, live=True),
    ParamSpec("output_height_px", 0, "published depth height (0 = camera height)", 0, 16384, live=True),
    ParamSpec("max_image_pixels", 4096 * 4096, "larger camera images are rejected (image_too_large)",
              1, 2**31 - 1, live=True),
    ParamSpec("require_camera_info", False, "drop frames until a camera_info arrived", live=True),
    ParamSpec("max_echo_samples", 441000, "longer echo buffers are rejected (echo_length)", 1, 2**31 - 1, live=True),
    ParamSpec("echo_onset_check", True, "reject echoes whose direct-path onset is not at "
              "ECHO_ONSET_SAMPLE (misaligned, wrong sample rate, silent)", live=True),
    ParamSpec("echo_onset_tolerance_samples", 16, "allowed onset offset from ECHO_ONSET_SAMPLE", 0, 10000, live=True),
    ParamSpec("echo_min_onset_snr_db", 20.0, "minimum matched-filter SNR of the direct path", 0.0, 200.0, live=True),
    ParamSpec("echo_max_clipped_fraction", 0.05, "reject echoes with more of the model's echo window "
              "(both channels) at |x| >= 0.999",
              0.0, 1.0, live=True),
    ParamSpec("skip_when_unsubscribed", True, "skip inference while nothing subscribes to the outputs", live=True),
    ParamSpec("publish_points", False, "publish avsnet/points (needs camera_info)"),
    ParamSpec("points_stride_px", 2, "pixel stride of the point cloud", 1, 64, live=True),
    ParamSpec("publish_preview", True, "publish avsnet/depth_preview (rgb8, turbo colour map)"),
    ParamSpec("preview_max_depth_m", 10.0, "depth shown as the last colour of the preview", 0.1, 1000.0, live=True),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics", 0.05, 60.0),
)


def load_pipelines(v: dict):
    """(pipeline, rgb_only_pipeline or None) from the checkpoint parameters (values of PARAMS).

    rgb_only_pipeline is loaded only for echo_fallback "rgb_only" and must be an RGB-only AVS-Net.
    Raises what DepthPipeline.from_checkpoints raises, or ValueError for an RGB + echo fallback model.
    """
    from avsnet_ros.pipeline import DepthPipeline

    def ckpt(path: str):
        return path or None  # None = the shipped checkpoint

    main = DepthPipeline.from_checkpoints(avs_checkpoint=ckpt(v["avs_checkpoint"]),
                                          relative_checkpoint=ckpt(v["relative_checkpoint"]),
                                          device=v["device"], scaling=v["scaling"], amp=v["amp"])
    rgb_only = None
    if v["echo_fallback"] == "rgb_only":
        rgb_path = v["rgb_only_checkpoint"]
        if not rgb_path:
            from avsnet_ros.paths import asset_path

            rgb_path = str(asset_path("checkpoints", "avsnet_tiny_rgb"))
        rgb_only = DepthPipeline.from_checkpoints(avs_checkpoint=rgb_path, relative_checkpoint=False,
                                                  device=v["device"], scaling="none", amp=v["amp"])
        if rgb_only.use_audio:
            raise ValueError(f"rgb_only_checkpoint {rgb_path} is an RGB + echo model; echo_fallback "
                             "rgb_only needs an RGB-only AVS-Net (use_audio false)")
    return main, rgb_only
