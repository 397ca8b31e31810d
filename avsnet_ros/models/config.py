"""Typed model configurations (dataclasses) for AVS-Net, DepthNet and PoseNet.

One code path serves two presets:

- ``preset="tiny"``: small random-initialised networks that run fast on 2 CPU cores (tests, the
  shipped demo checkpoints). AVS-Net at 128x256, DepthNet/PoseNet at 96x320.
- ``preset="paper"``: the paper's sizes. AVS-Net's visual branch is ZoeDepth-N's published
  architecture (BEiT-L/16 384 backbone, DPT neck, 64 bins, softplus bin centres) so that the
  published weights load from a local folder (``visual_pretrained_path``); the audio branch is a
  2-channel ResNet-18; DepthNet/PoseNet are Monodepth2's ResNet-18 networks at 192x640.

Fields left at ``None`` are filled from the preset in ``__post_init__``, so ``asdict(config)`` is
always concrete and a config written to ``config.json`` rebuilds exactly the same network.
Unknown keys in ``config_from_dict`` raise ``ValueError``: a typo in a checkpoint config must not
silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

from avsnet_ros.audio.frontend import FRONTEND_MODES
from avsnet_ros.audio.sweep import DEFAULT_SAMPLE_RATE_HZ

PRESETS = ("tiny", "paper")

# ----------------------------------------------------------------------------------------------
# Preset tables. Only architecture sizes live here; behavioural fields have ordinary defaults.
# ----------------------------------------------------------------------------------------------
_AVS_PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: the BEiT/ZoeDepth configuration of the README Benchmarks model table (1.29 M parameters for the
    # visual branch), bounded ("normed") bins because it is trained from scratch, and a ResNet-18
    # layout (basic blocks, depths 2-2-2-2) at 1/4 of the width for the echoes.
    "tiny": dict(
        image_size_hw=(128, 256),
        patch_size=16,
        backbone_image_size=384,
        backbone_hidden_size=64,
        backbone_layers=4,
        backbone_heads=4,
        backbone_intermediate_size=128,
        backbone_out_indices=(1, 2, 3, 4),
        neck_hidden_sizes=(16, 32, 64, 128),
        fusion_hidden_size=64,
        bottleneck_features=64,
        num_relative_features=16,
        bin_embedding_dim=32,
        num_attractors=(8, 4, 2, 1),
        n_bins=16,
        bin_centers_type="normed",
        audio_embedding_size=16,
        audio_hidden_sizes=(16, 32, 64, 128),
        audio_depths=(2, 2, 2, 2),
        attention_heads=4,
    ),
    # Paper: ZoeDepth-N as published (transformers' convert_zoedepth_to_hf.py, "ZoeD_N"):
    # BEiT-L/16 at 384, out stages 6/12/18/24, neck [256, 512, 1024, 1024], 64 softplus bins;
    # ResNet-18 (2 input channels) for the echoes.
    "paper": dict(
        image_size_hw=(256, 512),
        patch_size=16,
        backbone_image_size=384,
        backbone_hidden_size=1024,
        backbone_layers=24,
        backbone_heads=16,
        backbone_intermediate_size=4096,
        backbone_out_indices=(6, 12, 18, 24),
        neck_hidden_sizes=(256, 512, 1024, 1024),
        fusion_hidden_size=256,
        bottleneck_features=256,
        num_relative_features=32,
        bin_embedding_dim=128,
        num_attractors=(16, 8, 4, 1),
        n_bins=64,
        bin_centers_type="softplus",
        audio_embedding_size=64,
        audio_hidden_sizes=(64, 128, 256, 512),
        audio_depths=(2, 2, 2, 2),
        attention_heads=8,
    ),
}

_REL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        image_size_hw=(96, 320),
        encoder_embedding_size=16,
        encoder_hidden_sizes=(16, 32, 64, 128),
        encoder_depths=(2, 2, 2, 2),
        decoder_channels=(8, 16, 32, 64, 128),
        pose_encoder_depths=(1, 1, 1, 1),
        pose_decoder_channels=32,
    ),
    # Monodepth2: ResNet-18 encoders, decoder channels [16, 32, 64, 128, 256], pose decoder 256.
    "paper": dict(
        image_size_hw=(192, 640),
        encoder_embedding_size=64,
        encoder_hidden_sizes=(64, 128, 256, 512),
        encoder_depths=(2, 2, 2, 2),
        decoder_channels=(16, 32, 64, 128, 256),
        pose_encoder_depths=(2, 2, 2, 2),
        pose_decoder_channels=256,
    ),
}


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _fill_from_preset(cfg: Any, table: dict[str, dict[str, Any]]) -> None:
    if cfg.preset not in table:
        raise ValueError(f"unknown preset {cfg.preset!r}; expected one of {sorted(table)}")
    for name, value in table[cfg.preset].items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    # JSON gives lists: keep tuples so that configs compare equal after a round trip.
    for f in fields(cfg):
        setattr(cfg, f.name, _as_tuple(getattr(cfg, f.name)))


def _check_hw(image_size_hw: tuple[int, int], multiple: int, what: str) -> None:
    if len(image_size_hw) != 2 or any(int(v) <= 0 or int(v) % multiple for v in image_size_hw):
        raise ValueError(f"{what}: image_size_hw={image_size_hw} must be two positive multiples of {multiple}")


@dataclass
class AVSNetConfig:
    """AVS-Net (stage 1): RGB + echo spectrogram -> pseudo-dense metric depth in metres.

    Visual branch: ZoeDepth (BEiT backbone + DPT neck + relative head); ``visual_pretrained_path``
    points to a local ZoeDepth folder (``config.json`` + weights, e.g. a copy of Intel/zoedepth-nyu)
    loaded with ``from_pretrained(local_files_only=True)``; never downloaded.
    Audio branch: ResNet (basic blocks) over the 2-channel magnitude STFT resized to the RGB size;
    ``audio_pretrained_path`` is an optional local transformers ResNet folder.
    Fusion: ``attention_heads``-head cross attention, queries from the ZoeDepth bottleneck (f^V),
    keys/values from the audio tokens (f^A), L = Att(f^V, f^A) + f^V (paper eq. 1-2).
    ``use_audio=False`` is the RGB-only baseline: same network without audio branch and fusion.
    """

    kind: str = "avsnet"
    preset: str = "tiny"
    image_size_hw: Optional[tuple[int, int]] = None
    use_audio: bool = True
    min_depth_m: float = 0.1
    max_depth_m: float = 30.0
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ
    # "file": crop the echo window from the start of the buffer (BatVision preprocessing, the
    # project's buffer layout, see ARCHITECTURE.md); "onset": from the detected onset.
    audio_crop: str = "file"
    # Echo front-end before the STFT (avsnet_ros.audio.frontend): "raw" (the recording as it is; every
    # checkpoint trained before the front-end existed) or "rerender" (deconvolved by the emitted
    # sweep, normalised by the direct path, re-rendered with the canonical sweep).
    audio_frontend: str = "raw"
    # visual branch (ZoeDepth)
    patch_size: Optional[int] = None
    backbone_image_size: Optional[int] = None
    backbone_hidden_size: Optional[int] = None
    backbone_layers: Optional[int] = None
    backbone_heads: Optional[int] = None
    backbone_intermediate_size: Optional[int] = None
    backbone_out_indices: Optional[tuple[int, ...]] = None
    neck_hidden_sizes: Optional[tuple[int, ...]] = None
    fusion_hidden_size: Optional[int] = None
    bottleneck_features: Optional[int] = None
    num_relative_features: Optional[int] = None
    bin_embedding_dim: Optional[int] = None
    num_attractors: Optional[tuple[int, ...]] = None
    n_bins: Optional[int] = None
    bin_centers_type: Optional[str] = None
    visual_pretrained_path: Optional[str] = None
    # audio branch (ResNet, basic blocks)
    audio_embedding_size: Optional[int] = None
    audio_hidden_sizes: Optional[tuple[int, ...]] = None
    audio_depths: Optional[tuple[int, ...]] = None
    audio_pretrained_path: Optional[str] = None
    # Fourier features of the (frequency, time) position added to the audio tokens: the time
    # axis of the STFT is the echo's travel time, i.e. distance.
    audio_pos_frequencies: int = 4
    # fusion
    attention_heads: Optional[int] = None
    attention_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind != "avsnet":
            raise ValueError(f"AVSNetConfig.kind must be 'avsnet', got {self.kind!r}")
        _fill_from_preset(self, _AVS_PRESETS)
        self.image_size_hw = tuple(int(v) for v in self.image_size_hw)
        _check_hw(self.image_size_hw, 32, "AVSNetConfig")  # BEiT patch 16 and the neck's 1/32 level
        if not 0.0 < self.min_depth_m < self.max_depth_m:
            raise ValueError(f"need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")
        if self.bottleneck_features != self.fusion_hidden_size:
            raise ValueError("ZoeDepth's bottleneck is a neck feature: "
                             "bottleneck_features must equal fusion_hidden_size")
        if self.bottleneck_features % self.attention_heads:
            raise ValueError(
                f"bottleneck_features={self.bottleneck_features} not divisible by "
                f"attention_heads={self.attention_heads}"
            )
        if len(self.backbone_out_indices) != 4 or len(self.neck_hidden_sizes) != 4 or len(self.num_attractors) != 4:
            raise ValueError("backbone_out_indices, neck_hidden_sizes and num_attractors need 4 entries")
        if self.bin_centers_type not in ("normed", "softplus"):
            raise ValueError(f"bin_centers_type must be 'normed' or 'softplus', got {self.bin_centers_type!r}")
        if self.audio_crop not in ("file", "onset"):
            raise ValueError(f"audio_crop must be 'file' or 'onset', got {self.audio_crop!r}")
        if self.audio_frontend not in FRONTEND_MODES:
            raise ValueError(f"audio_frontend must be one of {FRONTEND_MODES}, got {self.audio_frontend!r}")
        if len(self.audio_hidden_sizes) != len(self.audio_depths):
            raise ValueError("audio_hidden_sizes and audio_depths need the same length")


@dataclass
class RelativeDepthConfig:
    """Stage 2 networks (Monodepth2 style): ``kind="depthnet"`` or ``kind="posenet"``.

    DepthNet: ResNet encoder (basic blocks; ImageNet normalisation inside forward) + decoder with
    sigmoid disparity at ``scales`` (0 = full resolution; (0, 1, 2) for the Lite-Mono setting).
    PoseNet: ResNet encoder over a pair of frames (6 channels) + pose decoder -> axis-angle and
    translation. ``min_depth``/``max_depth`` are disp_to_depth's range (relative units).
    """

    kind: str = "depthnet"
    preset: str = "tiny"
    image_size_hw: Optional[tuple[int, int]] = None
    scales: tuple[int, ...] = (0, 1, 2, 3)
    min_depth: float = 0.1
    max_depth: float = 100.0
    encoder_embedding_size: Optional[int] = None
    encoder_hidden_sizes: Optional[tuple[int, ...]] = None
    encoder_depths: Optional[tuple[int, ...]] = None
    encoder_pretrained_path: Optional[str] = None
    decoder_channels: Optional[tuple[int, ...]] = None
    pose_encoder_depths: Optional[tuple[int, ...]] = None
    pose_decoder_channels: Optional[int] = None
    # PoseNet output scaling (axis-angle radians, translation relative units per unit of the last conv).
    # Monodepth2 uses 0.01 for both (KITTI, ImageNet-pretrained encoders, < 1 deg/frame). A tiny PoseNet
    # trained from scratch with 0.01 moves its pose far slower than DepthNet moves its depth scale, so
    # DepthNet shrinks onto min_depth, its sigmoid saturates and the depth collapses to a constant:
    # config/train_relative.yaml sets 0.1 for both (why: comment there).
    pose_rotation_scale: float = 0.01
    pose_translation_scale: float = 0.01
    # DepthNet input "rgb" or "luminance": Y = 0.299 R + 0.587 G + 0.114 B (BT.601) in all three channels,
    # so the depth cannot be read from colour. Why: a DepthNet trained on one palette of rooms learned
    # colour -> depth (floor colour = near); fed luminance, the same weights went from +51 % / +21 % worse
    # than a constant map to 23 % / 28 % better on the two zero-shot sets (README, Table 2 section).
    input: str = "rgb"

    def __post_init__(self) -> None:
        if self.input not in ("rgb", "luminance"):
            raise ValueError(f"RelativeDepthConfig.input must be 'rgb' or 'luminance', got {self.input!r}")
        if self.kind not in ("depthnet", "posenet"):
            raise ValueError(f"RelativeDepthConfig.kind must be 'depthnet' or 'posenet', got {self.kind!r}")
        _fill_from_preset(self, _REL_PRESETS)
        self.image_size_hw = tuple(int(v) for v in self.image_size_hw)
        self.scales = tuple(int(s) for s in self.scales)
        _check_hw(self.image_size_hw, 32, "RelativeDepthConfig")  # 5 stride-2 stages
        if not self.scales or any(s < 0 or s > 3 for s in self.scales) or 0 not in self.scales:
            raise ValueError(f"scales must be a subset of (0, 1, 2, 3) containing 0, got {self.scales}")
        if len(self.encoder_hidden_sizes) != 4 or len(self.encoder_depths) != 4 or len(self.decoder_channels) != 5:
            raise ValueError("encoder_hidden_sizes/encoder_depths need 4 entries and decoder_channels 5")
        if not 0.0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if not (self.pose_rotation_scale > 0 and self.pose_translation_scale > 0):
            raise ValueError("pose_rotation_scale and pose_translation_scale must be > 0, got "
                             f"{self.pose_rotation_scale}, {self.pose_translation_scale}")


ModelConfig = Union[AVSNetConfig, RelativeDepthConfig]
_KIND_TO_CLASS = {"avsnet": AVSNetConfig, "depthnet": RelativeDepthConfig, "posenet": RelativeDepthConfig}


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Build the typed config named by ``d["kind"]``; unknown keys raise ``ValueError``."""
    if not isinstance(d, dict):
        raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in _KIND_TO_CLASS:
        raise ValueError(f"config 'kind' must be one of {sorted(_KIND_TO_CLASS)}, got {kind!r}")
    cls = _KIND_TO_CLASS[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown keys for {cls.__name__}: {unknown}")
    return cls(**d)


def asdict(config: ModelConfig) -> dict[str, Any]:
    """Plain JSON-ready dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def replace(config: ModelConfig, **changes: Any) -> ModelConfig:
    """``dataclasses.replace`` that re-validates (e.g. ``replace(cfg, use_audio=False)``)."""
    return dataclasses.replace(config, **changes)


__all__ = [
    "AVSNetConfig",
    "RelativeDepthConfig",
    "ModelConfig",
    "PRESETS",
    "config_from_dict",
    "asdict",
    "replace",
]
