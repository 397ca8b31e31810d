"""Stage 2 (paper section 3.2.1): self-supervised relative depth, Monodepth2 style.

- :class:`DepthNet`: ResNet encoder (basic blocks, ImageNet normalisation inside ``forward``) and
  a U-Net decoder giving sigmoid disparity at ``config.scales`` (scale s = 1/2^s resolution).
- :class:`PoseNet`: ResNet encoder over two frames stacked (6 channels) and a pose decoder giving
  a 6-DoF axis-angle + translation; :meth:`PoseNet.target_to_source` applies Monodepth2's
  convention for the (t-1 -> t) and (t+1 -> t) pairs.
- :func:`disp_to_depth`, and the :class:`RelativeDepthModel` interface: any callable
  ``rgb (B, 3, H, W) in [0, 1] -> depth_rel (B, 1, H, W)`` (positive, up to scale) can be scaled
  by the echo model. :class:`DepthNetRelative` wraps a DepthNet, :class:`DisparityRelative` wraps
  any callable returning disparity (e.g. MiDaS-like zero-shot models), :class:`DepthRelative`
  any callable returning depth.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ResNetConfig, ResNetModel

from ..preprocessing import luminance
from .config import RelativeDepthConfig
from .geometry import transformation_from_parameters

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output -> (scaled disparity, depth) with depth in [min_depth, max_depth] (Monodepth2)."""
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * disp
    return scaled_disp, 1.0 / scaled_disp


class ResNetFeatures(nn.Module):
    """ResNet (transformers, basic blocks) returning the 5 Monodepth2 feature levels.

    forward(x (B, C, H, W) in [0, 1], C = 3k: k RGB frames stacked) -> [1/2, 1/4, 1/8, 1/16, 1/32]
    features with ``num_ch_enc`` = [embedding, *hidden_sizes] channels. The ImageNet normalisation
    (per colour, repeated for each stacked frame) happens here, for DepthNet and PoseNet alike.
    """

    def __init__(self, num_channels: int, embedding_size: int, hidden_sizes, depths,
                 pretrained_path: Optional[str] = None):
        super().__init__()
        rcfg = ResNetConfig(
            num_channels=num_channels,
            embedding_size=embedding_size,
            hidden_sizes=list(hidden_sizes),
            depths=list(depths),
            layer_type="basic",
        )
        if pretrained_path:
            from .pretrained import load_local_resnet

            self.resnet = load_local_resnet(pretrained_path, rcfg)
        else:
            self.resnet = ResNetModel(rcfg)
        self.num_ch_enc = [embedding_size, *hidden_sizes]
        if num_channels % 3:
            raise ValueError(f"num_channels must be a multiple of 3 (stacked RGB frames), got {num_channels}")
        frames = num_channels // 3
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN * frames).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD * frames).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.rgb_mean) / self.rgb_std
        stem = self.resnet.embedder.embedder(x)  # conv 7x7 / 2 + BN + ReLU: 1/2
        feats = [stem]
        h = self.resnet.embedder.pooler(stem)  # max-pool: 1/4
        for stage in self.resnet.encoder.stages:
            h = stage(h)
            feats.append(h)
        return feats


class ConvBlock(nn.Module):
    """3x3 conv with reflection padding + ELU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect")
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class DepthDecoder(nn.Module):
    """Monodepth2 decoder: nearest x2 upsampling with skips; sigmoid disparity at ``scales``."""

    def __init__(self, num_ch_enc, scales=(0, 1, 2, 3), num_ch_dec=(16, 32, 64, 128, 256)):
        super().__init__()
        self.scales = tuple(scales)
        self.num_ch_dec = list(num_ch_dec)
        self.upconv0 = nn.ModuleList()
        self.upconv1 = nn.ModuleList()
        for i in range(4, -1, -1):  # stored in order i = 4..0
            ch_in = num_ch_enc[-1] if i == 4 else num_ch_dec[i + 1]
            self.upconv0.append(ConvBlock(ch_in, num_ch_dec[i]))
            ch_in = num_ch_dec[i] + (num_ch_enc[i - 1] if i > 0 else 0)
            self.upconv1.append(ConvBlock(ch_in, num_ch_dec[i]))
        self.dispconvs = nn.ModuleDict(
            {str(s): nn.Conv2d(num_ch_dec[s], 1, 3, padding=1, padding_mode="reflect") for s in self.scales}
        )

    def forward(self, feats: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        x = feats[-1]
        for j, i in enumerate(range(4, -1, -1)):
            x = self.upconv0[j](x)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if i > 0:
                x = torch.cat([x, feats[i - 1]], dim=1)
            x = self.upconv1[j](x)
            if i in self.scales:
                out[i] = torch.sigmoid(self.dispconvs[str(i)](x))
        return out


def _encoder_of(config: RelativeDepthConfig, kind: str, in_channels: int) -> "ResNetFeatures":
    """The ResNet encoder a DepthNet / PoseNet config describes (ValueError for a config of another kind)."""
    if config.kind != kind:
        name = {"depthnet": "DepthNet", "posenet": "PoseNet"}[kind]
        raise ValueError(f"{name} needs a config of kind {kind!r}, got {config.kind!r}")
    depths = config.encoder_depths if kind == "depthnet" else config.pose_encoder_depths
    return ResNetFeatures(in_channels, config.encoder_embedding_size, config.encoder_hidden_sizes, depths,
                          config.encoder_pretrained_path)


class DepthNet(nn.Module):
    """rgb (B, 3, H, W) in [0, 1] -> {scale s: sigmoid disparity (B, 1, H/2^s, W/2^s)}.
    With config.input "luminance" the network sees Y (BT.601) in all three channels.

    H and W must be multiples of 32. ``depth(rgb)`` gives the full-resolution depth in
    [config.min_depth, config.max_depth] via :func:`disp_to_depth` (relative units).
    """

    def __init__(self, config: RelativeDepthConfig):
        super().__init__()
        self.config = config
        self.encoder = _encoder_of(config, "depthnet", in_channels=3)  # one RGB frame
        self.decoder = DepthDecoder(self.encoder.num_ch_enc, config.scales, config.decoder_channels)

    def forward(self, rgb: torch.Tensor) -> dict[int, torch.Tensor]:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must be (B, 3, H, W), got {tuple(rgb.shape)}")
        if rgb.shape[-2] % 32 or rgb.shape[-1] % 32:
            raise ValueError(f"rgb height and width must be multiples of 32, got {tuple(rgb.shape[-2:])}")
        if self.config.input == "luminance":  # the same 3-channel encoder sees Y in every channel
            rgb = luminance(rgb).expand(-1, 3, -1, -1)
        return self.decoder(self.encoder(rgb))

    def depth(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> depth (B, 1, H, W), relative units in [min_depth, max_depth]."""
        return disp_to_depth(self(rgb)[0], self.config.min_depth, self.config.max_depth)[1]


class PoseDecoder(nn.Module):
    """Monodepth2 pose decoder: squeeze 1x1, two 3x3, 1x1 to 6, spatial mean, then x rotation_scale
    (axis-angle) and x translation_scale (Monodepth2: 0.01 both; see RelativeDepthConfig)."""

    def __init__(self, in_ch: int, channels: int = 256, rotation_scale: float = 0.01,
                 translation_scale: float = 0.01):
        super().__init__()
        self.rotation_scale = float(rotation_scale)
        self.translation_scale = float(translation_scale)
        self.squeeze = nn.Conv2d(in_ch, channels, 1)
        self.pose0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.pose1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.pose2 = nn.Conv2d(channels, 6, 1)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.squeeze(feat))
        x = F.relu(self.pose0(x))
        x = F.relu(self.pose1(x))
        out = self.pose2(x).mean(dim=(2, 3))  # (B, 6)
        return self.rotation_scale * out[:, :3], self.translation_scale * out[:, 3:]


class PoseNet(nn.Module):
    """(frame_a, frame_b) (B, 3, H, W) each in [0, 1] -> (axisangle (B, 3), translation (B, 3)).

    The pair order and inversion follow Monodepth2: use :meth:`target_to_source`.
    """

    def __init__(self, config: RelativeDepthConfig):
        super().__init__()
        self.config = config
        self.encoder = _encoder_of(config, "posenet", in_channels=6)  # two RGB frames stacked
        self.decoder = PoseDecoder(self.encoder.num_ch_enc[-1], config.pose_decoder_channels,
                                   config.pose_rotation_scale, config.pose_translation_scale)

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encoder(torch.cat([frame_a, frame_b], dim=1))[-1])

    def target_to_source(self, target: torch.Tensor, source: torch.Tensor, source_offset: int) -> torch.Tensor:
        """T_target_to_source (B, 4, 4) for the source frame at ``source_offset`` (-1 or +1).

        Monodepth2: for a previous frame the network sees (source, target) and the transform is
        inverted; for a next frame it sees (target, source).
        """
        if source_offset == 0:
            raise ValueError("source_offset must be non-zero (e.g. -1 or +1)")
        if source_offset < 0:
            axisangle, translation = self(source, target)
            return transformation_from_parameters(axisangle, translation, invert=True)
        axisangle, translation = self(target, source)
        return transformation_from_parameters(axisangle, translation, invert=False)


@runtime_checkable
class RelativeDepthModel(Protocol):
    """Any callable ``rgb (B, 3, H, W) float in [0, 1] -> depth_rel (B, 1, H, W)``, positive, up to scale."""

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor: ...


class DepthNetRelative(nn.Module):
    """A :class:`DepthNet` as a :class:`RelativeDepthModel` (depth from the scale-0 disparity)."""

    def __init__(self, depthnet: DepthNet):
        super().__init__()
        self.depthnet = depthnet
        self.image_size_hw = tuple(depthnet.config.image_size_hw)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.depthnet.depth(rgb)


def _as_b1hw(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"{what} must return (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    return x


class _WrappedCallable(nn.Module):
    """A callable (B, 3, H, W) -> map as an nn.Module, with the input size the pipeline should feed it."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], image_size_hw=None):
        super().__init__()
        self.fn = fn
        self.image_size_hw = tuple(image_size_hw) if image_size_hw else None


class DisparityRelative(_WrappedCallable):
    """Wrap a callable returning disparity/inverse depth (B, 1, H, W) or (B, H, W) (e.g. MiDaS).

    depth_rel = 1 / max(disp, eps * max(disp)) per image: non-positive disparities (sky, far
    background in MiDaS outputs) become the farthest finite depth instead of inf/negative.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], eps: float = 1e-3, image_size_hw=None):
        super().__init__(fn, image_size_hw)
        self.eps = eps

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        disp = _as_b1hw(self.fn(rgb), "disparity model").float()
        floor = self.eps * disp.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return 1.0 / torch.maximum(disp, floor)


class DepthRelative(_WrappedCallable):
    """Wrap a callable returning (relative or metric) depth (B, 1, H, W) or (B, H, W); clamps to > 0."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], min_value: float = 1e-6, image_size_hw=None):
        super().__init__(fn, image_size_hw)
        self.min_value = min_value

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return _as_b1hw(self.fn(rgb), "depth model").float().clamp_min(self.min_value)


def as_relative_model(model, output: str = "depth", image_size_hw=None) -> nn.Module:
    """Turn ``model`` into a :class:`RelativeDepthModel` module.

    A :class:`DepthNet` becomes :class:`DepthNetRelative`; a module with ``output_type``
    "disparity" or "metric", or "depth" with a ``depth_range`` (a self-supervised
    :class:`~avsnet_ros.models.hf_depth.TransformersDepthModel`) is kept
    as it is (the pipeline's scaling reads ``output_type``); otherwise ``output`` says whether the
    callable returns "depth" or "disparity". ``image_size_hw`` is the input size the pipeline
    should feed it (None: the AVS-Net input size).
    """
    if isinstance(model, DepthNet):
        return DepthNetRelative(model)
    if isinstance(model, (DepthNetRelative, DisparityRelative, DepthRelative)):
        return model
    if getattr(model, "output_type", None) in ("disparity", "metric") or getattr(model, "depth_range", None):
        # e.g. models.hf_depth.TransformersDepthModel: its raw output is what the scaling aligns
        return model
    if output == "disparity":
        return DisparityRelative(model, image_size_hw=image_size_hw)
    if output == "depth":
        return DepthRelative(model, image_size_hw=image_size_hw)
    raise ValueError(f"output must be 'depth' or 'disparity', got {output!r}")


__all__ = [
    "DepthNet",
    "PoseNet",
    "DepthDecoder",
    "PoseDecoder",
    "ResNetFeatures",
    "disp_to_depth",
    "RelativeDepthModel",
    "DepthNetRelative",
    "DisparityRelative",
    "DepthRelative",
    "as_relative_model",
]
