"""AVS-Net (paper section 3.1): RGB + binaural echo spectrogram -> pseudo-dense metric depth.

Data flow (shapes for a B x 3 x H x W input, H and W multiples of 32):

    rgb [0,1] -> (x - 0.5) / 0.5 -> BEiT backbone -> DPT neck -> fused features at 1/16 .. 1/2,
                                                              bottleneck (B, C, H/32, W/32)
                                   relative head -> relative depth (B, H, W), features (B, R, H, W)
    spectrogram (B, 2, H, W) magnitude -> log1p -> (x - spec_mean) / spec_std -> ResNet
                                   -> (B, Ca, H/32, W/32) -> tokens f^A (B, N, Ca) (+ position)
    metric head (transformers' ZoeDepthMetricDepthEstimationHead, subclassed):
        f^V = conv2(bottleneck);  L = Att(f^V, f^A) + f^V            (eq. 1-2)
        seed bin regressor + seed projector on L -> attractors over the neck features
        -> conditional log-binomial with the relative depth -> depth_m in [min_depth_m, max_depth_m]

The visual branch is transformers' ``ZoeDepthForDepthEstimation`` (its backbone, neck and relative
head are used as they are); only the metric head is replaced by :class:`AVSMetricHead`, a subclass
that inserts the cross-modal attention after the bottleneck convolution.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import BeitConfig, ResNetConfig, ResNetModel, ZoeDepthConfig, ZoeDepthForDepthEstimation
from transformers.models.beit.modeling_beit import BeitRelativePositionBias
from transformers.models.zoedepth.modeling_zoedepth import ZoeDepthMetricDepthEstimationHead

from .config import AVSNetConfig
from .pretrained import load_local_resnet, load_visual_pretrained


@dataclass
class AVSNetOutput:
    """Output of :meth:`AVSNet.forward`.

    depth_m: (B, 1, H, W) pseudo-dense metric depth in metres, within [min_depth_m, max_depth_m].
    relative_depth: (B, 1, H, W) the ZoeDepth/MiDaS relative head output (non-negative, arbitrary
        units, MiDaS convention: larger = nearer). Not metric.
    bin_centers_m: (B, n_bins, H/2, W/2) adaptive bin centres (metres) of the last attractor.
    attention: (B, heads, Q, K) cross-attention weights (rows sum to 1; Q = bottleneck tokens,
        K = audio tokens), or None for the RGB-only model.
    """

    depth_m: torch.Tensor
    relative_depth: torch.Tensor
    bin_centers_m: torch.Tensor
    attention: Optional[torch.Tensor]


def zoedepth_config(cfg: AVSNetConfig) -> ZoeDepthConfig:
    """transformers ``ZoeDepthConfig`` (with BEiT backbone config) for an :class:`AVSNetConfig`."""
    backbone = BeitConfig(
        image_size=cfg.backbone_image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.backbone_hidden_size,
        num_hidden_layers=cfg.backbone_layers,
        num_attention_heads=cfg.backbone_heads,
        intermediate_size=cfg.backbone_intermediate_size,
        use_relative_position_bias=True,
        reshape_hidden_states=False,
        out_features=[f"stage{i}" for i in cfg.backbone_out_indices],
    )
    return ZoeDepthConfig(
        backbone_config=backbone,
        neck_hidden_sizes=list(cfg.neck_hidden_sizes),
        fusion_hidden_size=cfg.fusion_hidden_size,
        bottleneck_features=cfg.bottleneck_features,
        num_relative_features=cfg.num_relative_features,
        bin_embedding_dim=cfg.bin_embedding_dim,
        num_attractors=list(cfg.num_attractors),
        bin_centers_type=cfg.bin_centers_type,
        bin_configurations=[{"n_bins": cfg.n_bins, "min_depth": cfg.min_depth_m, "max_depth": cfg.max_depth_m}],
    )


def fourier_position_features(height: int, width: int, n_freq: int, device, dtype) -> torch.Tensor:
    """(height*width, 4*n_freq) sin/cos features of the normalised (row, column) position in [-1, 1]."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    k = torch.arange(1, n_freq + 1, device=device, dtype=dtype) * math.pi
    ang_y = yy.reshape(-1, 1) * k
    ang_x = xx.reshape(-1, 1) * k
    return torch.cat([ang_y.sin(), ang_y.cos(), ang_x.sin(), ang_x.cos()], dim=1)


class AudioEncoder(nn.Module):
    """Echo branch: ResNet (basic blocks, 2 input channels) over the normalised log spectrogram.

    forward(spec_norm (B, 2, H, W)) -> tokens f^A (B, N = H/32 * W/32, Ca).
    """

    def __init__(self, cfg: AVSNetConfig):
        super().__init__()
        rcfg = ResNetConfig(
            num_channels=2,
            embedding_size=cfg.audio_embedding_size,
            hidden_sizes=list(cfg.audio_hidden_sizes),
            depths=list(cfg.audio_depths),
            layer_type="basic",
        )
        if cfg.audio_pretrained_path:
            self.resnet = load_local_resnet(cfg.audio_pretrained_path, rcfg)
        else:
            self.resnet = ResNetModel(rcfg)
        self.out_dim = cfg.audio_hidden_sizes[-1]
        self.n_freq = cfg.audio_pos_frequencies
        self.pos_proj = nn.Linear(4 * self.n_freq, self.out_dim) if self.n_freq > 0 else None

    def forward(self, spec_norm: torch.Tensor) -> torch.Tensor:
        feat = self.resnet(spec_norm).last_hidden_state  # (B, Ca, h, w)
        b, c, h, w = feat.shape
        tokens = feat.flatten(2).transpose(1, 2)  # (B, h*w, Ca)
        if self.pos_proj is not None:
            pos = fourier_position_features(h, w, self.n_freq, feat.device, feat.dtype)
            tokens = tokens + self.pos_proj(pos).unsqueeze(0)
        return tokens


class CrossModalAttention(nn.Module):
    """Multi-head cross-modal attention with skip connection (paper eq. 1-2).

    Per head: Q = W_Q f^V, K = W_K f^A, V = W_V f^A, Att = softmax(Q K^T / sqrt(s)) V with s the
    head dimension; heads concatenated and projected by W_O; L = Att(f^V, f^A) + f^V.
    forward(visual (B, C, h, w), audio_tokens (B, N, Ca)) -> (L (B, C, h, w), weights (B, heads, h*w, N)).
    The returned weights are the ones used (so they carry gradients; Grad-CAM can hook them).
    """

    def __init__(self, visual_dim: int, audio_dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if visual_dim % heads:
            raise ValueError(f"visual_dim {visual_dim} not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = visual_dim // heads
        self.q_proj = nn.Linear(visual_dim, visual_dim)
        self.k_proj = nn.Linear(audio_dim, visual_dim)
        self.v_proj = nn.Linear(audio_dim, visual_dim)
        self.out_proj = nn.Linear(visual_dim, visual_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, visual: torch.Tensor, audio_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = visual.shape
        query = visual.flatten(2).transpose(1, 2)  # f^V tokens (B, Q, C)
        n_k = audio_tokens.shape[1]
        q = self.q_proj(query).view(b, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, Q, d)
        k = self.k_proj(audio_tokens).view(b, n_k, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(audio_tokens).view(b, n_k, self.heads, self.head_dim).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)  # (B, heads, Q, N)
        attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, -1, c)
        fused = self.out_proj(attended) + query
        return fused.transpose(1, 2).reshape(b, c, h, w), weights


class AVSMetricHead(ZoeDepthMetricDepthEstimationHead):
    """ZoeDepth's metric bins head with the audio-visual fusion on its bin embedding.

    Same submodules (and state-dict keys) as transformers' head plus ``fusion`` (None for the
    RGB-only model). ``forward`` returns (depth (B, 1, H, W), bin_centers (B, n_bins, h, w),
    attention or None); depth is clamped to [min_depth, max_depth] (bounded already for "normed"
    bins; "softplus" bins, as in the published ZoeDepth-N, are not).
    """

    def __init__(self, config: ZoeDepthConfig, fusion: Optional[CrossModalAttention]):
        super().__init__(config)
        self.fusion = fusion

    def forward(self, outconv_activation, bottleneck, feature_blocks, relative_depth, audio_tokens=None):
        x = self.conv2(bottleneck)  # f^V: the bin embedding of the bottleneck
        attention = None
        if self.fusion is not None:
            if audio_tokens is None:
                raise ValueError("this AVS-Net uses echoes: pass audio tokens (a spectrogram)")
            x, attention = self.fusion(x, audio_tokens)  # L = Att(f^V, f^A) + f^V
        _, seed_bin_centers = self.seed_bin_regressor(x)
        if self.bin_centers_type in ("normed", "hybrid2"):
            prev_bin = (seed_bin_centers - self.min_depth) / (self.max_depth - self.min_depth)
        else:
            prev_bin = seed_bin_centers
        prev_bin_embedding = self.seed_projector(x)
        bin_embedding, bin_centers = prev_bin_embedding, seed_bin_centers
        for projector, attractor, feature in zip(self.projectors, self.attractors, feature_blocks):
            bin_embedding = projector(feature)
            prev_bin, bin_centers = attractor(bin_embedding, prev_bin, prev_bin_embedding, interpolate=True)
            prev_bin_embedding = bin_embedding

        last = outconv_activation
        relative = nn.functional.interpolate(
            relative_depth.unsqueeze(1), size=last.shape[2:], mode="bilinear", align_corners=True
        )
        last = torch.cat([last, relative], dim=1)
        bin_embedding = nn.functional.interpolate(bin_embedding, last.shape[-2:], mode="bilinear", align_corners=True)
        probabilities = self.conditional_log_binomial(last, bin_embedding)
        centers_full = nn.functional.interpolate(bin_centers, probabilities.shape[-2:], mode="bilinear",
                                                 align_corners=True)
        depth = torch.sum(probabilities * centers_full, dim=1, keepdim=True)
        return depth.clamp(self.min_depth, self.max_depth), bin_centers, attention


class AVSNet(nn.Module):
    """AVS-Net; ``config.use_audio=False`` gives the RGB-only baseline (same code path, no fusion).

    forward(rgb (B, 3, H, W) float in [0, 1], spectrogram (B, 2, H', W') raw magnitude or None)
        -> :class:`AVSNetOutput`. The spectrogram is the output of
        ``avsnet_ros.audio.echo_to_spectrogram`` (normally H' x W' = H x W); log1p and the
        per-channel standardisation with the buffers ``spec_mean``/``spec_std`` (2,) happen here.
        With ``use_audio=False`` the spectrogram is ignored (may be None).
    """

    def __init__(self, config: AVSNetConfig):
        super().__init__()
        self.config = config
        zcfg = zoedepth_config(config)
        self.visual = ZoeDepthForDepthEstimation(zcfg)
        if config.visual_pretrained_path:
            load_visual_pretrained(self.visual, config.visual_pretrained_path, zcfg)
        _use_autograd_safe_position_index(self.visual)
        self.audio_encoder = AudioEncoder(config) if config.use_audio else None
        fusion = (
            CrossModalAttention(
                config.bottleneck_features, config.audio_hidden_sizes[-1], config.attention_heads,
                config.attention_dropout
            )
            if config.use_audio
            else None
        )
        head = AVSMetricHead(zcfg, fusion)
        # Same keys as the stock head: start from its (possibly pretrained) weights.
        missing, unexpected = head.load_state_dict(self.visual.metric_head.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("fusion.") for k in missing), (missing, unexpected)
        self.visual.metric_head = head
        # DPT's first fusion layer never receives a residual input, so its residual_layer1 is
        # unused (in transformers' own forward too). Frozen, DDP needs no find_unused_parameters.
        for p in self.visual.neck.fusion_stage.layers[0].residual_layer1.parameters():
            p.requires_grad_(False)
        # Spectrogram standardisation (after log1p), set from the training set by training.
        self.register_buffer("spec_mean", torch.zeros(2))
        self.register_buffer("spec_std", torch.ones(2))
        self.patch_size = config.patch_size

    @torch.no_grad()
    def set_spectrogram_stats(self, mean, std) -> None:
        """Set ``spec_mean``/``spec_std`` (2,) of log1p(magnitude) per channel; std must be > 0."""
        mean_t = torch.as_tensor(mean, dtype=self.spec_mean.dtype).reshape(2)
        std_t = torch.as_tensor(std, dtype=self.spec_std.dtype).reshape(2)
        if not torch.isfinite(mean_t).all() or not torch.isfinite(std_t).all() or (std_t <= 0).any():
            raise ValueError(f"invalid spectrogram stats mean={mean_t.tolist()} std={std_t.tolist()}")
        self.spec_mean.copy_(mean_t)
        self.spec_std.copy_(std_t)

    def normalise_spectrogram(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) magnitude -> standardised log1p magnitude."""
        x = torch.log1p(spectrogram.clamp_min(0.0))
        return (x - self.spec_mean.view(1, 2, 1, 1)) / self.spec_std.view(1, 2, 1, 1)

    def encode_audio(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) magnitude spectrogram -> audio tokens f^A (B, N, Ca)."""
        if self.audio_encoder is None:
            raise RuntimeError("RGB-only AVS-Net has no audio branch")
        if spectrogram.dim() != 4 or spectrogram.shape[1] != 2:
            raise ValueError(f"spectrogram must be (B, 2, H, W), got {tuple(spectrogram.shape)}")
        return self.audio_encoder(self.normalise_spectrogram(spectrogram))

    def forward(self, rgb: torch.Tensor, spectrogram: Optional[torch.Tensor] = None) -> AVSNetOutput:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must be (B, 3, H, W), got {tuple(rgb.shape)}")
        height, width = rgb.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"rgb height and width must be multiples of 32, got {height}x{width}")
        audio_tokens = None
        if self.audio_encoder is not None:
            if spectrogram is None:
                raise ValueError("this AVS-Net uses echoes: spectrogram is required (use_audio=True)")
            if spectrogram.shape[0] != rgb.shape[0]:
                raise ValueError(f"batch mismatch: rgb {rgb.shape[0]} vs spectrogram {spectrogram.shape[0]}")
            audio_tokens = self.encode_audio(spectrogram)

        pixel_values = (rgb - 0.5) / 0.5  # ZoeDepth/MiDaS-BEiT normalisation (mean 0.5, std 0.5)
        visual = self.visual
        feature_maps = visual.backbone(pixel_values).feature_maps
        hidden_states, bottleneck = visual.neck(feature_maps, height // self.patch_size, width // self.patch_size)
        relative_depth, outconv = visual.relative_head(hidden_states)
        depth, bin_centers, attention = visual.metric_head(
            outconv, bottleneck, hidden_states, relative_depth, audio_tokens
        )
        return AVSNetOutput(
            depth_m=depth,
            relative_depth=relative_depth.unsqueeze(1),
            bin_centers_m=bin_centers,
            attention=attention,
        )


_POSITION_INDEX_CACHE: dict[tuple[int, int], torch.Tensor] = {}
_POSITION_INDEX_LOCK = threading.Lock()


def _autograd_safe_position_index(window_size) -> torch.Tensor:
    """BEiT's relative-position index (int64 (h*w+1, h*w+1)) as a normal tensor (never an inference tensor).

    transformers caches ``BeitRelativePositionBias.generate_relative_position_index`` in a
    process-wide lru_cache. Its first call under ``torch.inference_mode`` (DepthPipeline) caches an
    inference tensor, and every later training forward at that size then fails in backward
    ("Inference tensors cannot be saved for backward"). This cache is filled outside inference
    mode (cloning an entry transformers may already hold as an inference tensor), so the index is
    usable with and without autograd whatever ran first in the process.
    """
    generate = BeitRelativePositionBias.generate_relative_position_index
    if torch.compiler.is_compiling():  # traced (torch.export/compile): no caching, as in transformers
        return generate(window_size)
    key = (int(window_size[0]), int(window_size[1]))
    index = _POSITION_INDEX_CACHE.get(key)
    if index is None:
        with _POSITION_INDEX_LOCK, torch.inference_mode(False):
            index = generate(key)
            if index.is_inference():
                index = index.clone()
            _POSITION_INDEX_CACHE[key] = index
    return index


def _use_autograd_safe_position_index(module: nn.Module) -> None:
    """Make every BEiT relative-position-bias module under ``module`` use :func:`_autograd_safe_position_index`.

    The instance attribute shadows transformers' static method (``self.generate_relative_position_index``
    in its forward); parameters and state-dict keys are unchanged.
    """
    for sub in module.modules():
        if isinstance(sub, BeitRelativePositionBias):
            sub.generate_relative_position_index = _autograd_safe_position_index


__all__ = ["AVSNet", "AVSNetOutput", "AVSMetricHead", "AudioEncoder", "CrossModalAttention", "zoedepth_config"]
