"""Training losses of both stages (pure functions of tensors; no state, no randomness).

Stage 1 (paper eq. 4): :func:`si_loss`, the scaled scale-invariant log loss of AdaBins/ZoeDepth.

Stage 2 (paper eq. 5-6, Monodepth2): :func:`ssim` (3x3, reflection padded), :func:`photometric_error`
(0.15 L1 + 0.85 SSIM), :func:`smoothness_loss` (edge-aware, on mean-normalised disparity), and
:func:`self_supervised_loss`, which puts them together for one target frame and its source frames:

    for each scale s of the DepthNet output:
        disparity upsampled to full resolution -> depth (disp_to_depth) -> warp every source into
        the target view (warp_source with T_target_to_source and K) -> photometric error per source
        identity error = photometric error of the *unwarped* sources (auto-masking)
        per pixel: min over [identity errors..., reprojection errors...]; pixels where an identity
        error wins are static (camera and scene moved together, or no motion): their term does
        not depend on the networks, so they are masked out of the gradient
        loss_s = mean over pixels of that minimum + 1e-3 * smoothness_s / 2^s
    loss = mean over scales

Typical use in a training step::

    disps = depthnet(target)                                   # {0: (B,1,H,W), 1: ..., ...}
    Ts = [posenet.target_to_source(target, src, off) for src, off in ((prev, -1), (next, +1))]
    out = self_supervised_loss(target, [prev, next], disps, Ts, K, min_depth=cfg.min_depth,
                               max_depth=cfg.max_depth)
    out.loss.backward()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from avsnet_ros.models.geometry import scale_intrinsics, warp_source
from avsnet_ros.models.relative import disp_to_depth
from avsnet_ros.scaling import valid_depth_mask

__all__ = [
    "si_loss",
    "scale_invariant_loss",
    "ssim",
    "photometric_error",
    "smoothness_loss",
    "self_supervised_loss",
    "SelfSupervisedLoss",
    "best_depth_scale",
]


def si_loss(
    pred_m: torch.Tensor,
    gt_m: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    alpha: float = 10.0,
    lam: float = 0.85,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Scaled scale-invariant loss (paper eq. 4): alpha * sqrt(mean(g^2) - lam * mean(g)^2).

    g = log(pred) - log(gt) over the valid pixels of the whole batch (T = their number), as in
    AdaBins/ZoeDepth. pred_m, gt_m: (B, 1, H, W) metres (pred is resized bilinearly to gt's size
    when they differ); valid: optional bool mask of gt's shape, ANDed with finite gt > 0.
    Predictions are clamped to >= eps before the log. The radicand is computed as
    var(g) + (1 - lam) mean(g)^2 (never negative, no cancellation), and the square root is taken
    only where it exceeds eps^2 (sqrt has an infinite slope at 0); below that the loss is exactly 0
    with zero gradient. With no valid pixel
    the loss is 0 (still attached to the graph).
    """
    if pred_m.shape[-2:] != gt_m.shape[-2:]:
        pred_m = F.interpolate(pred_m, size=gt_m.shape[-2:], mode="bilinear", align_corners=True)
    mask = valid_depth_mask(gt_m)
    if valid is not None:
        mask = mask & valid.to(torch.bool)
    count = mask.sum()
    if int(count) == 0:
        return pred_m.sum() * 0.0
    gt_safe = torch.where(mask, gt_m, torch.ones_like(gt_m))
    g = torch.where(mask, torch.log(pred_m.clamp_min(eps)) - torch.log(gt_safe), torch.zeros_like(gt_m))
    n = count.to(g.dtype)
    mean_g = g.sum() / n
    # mean(g^2) - lam mean(g)^2 written as var(g) + (1 - lam) mean(g)^2: identical algebraically,
    # but without the float32 cancellation that makes a pure scale error look like variance.
    centred = torch.where(mask, g - mean_g, torch.zeros_like(g))
    d = (centred * centred).sum() / n + (1.0 - lam) * mean_g * mean_g
    floor = eps * eps
    positive = d > floor
    d_safe = torch.where(positive, d, torch.full_like(d, floor))
    return alpha * torch.where(positive, torch.sqrt(d_safe), torch.zeros_like(d))


scale_invariant_loss = si_loss


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Monodepth2's SSIM dissimilarity: clamp((1 - SSIM) / 2, 0, 1) per pixel and channel.

    3x3 mean filters on reflection-padded images, C1 = 0.01^2, C2 = 0.03^2; x, y (B, C, H, W) in
    [0, 1] -> (B, C, H, W).
    """
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    yp = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(xp, 3, 1)
    mu_y = F.avg_pool2d(yp, 3, 1)
    sigma_x = F.avg_pool2d(xp * xp, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(yp * yp, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(xp * yp, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return torch.clamp((1 - num / den) / 2, 0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.85) -> torch.Tensor:
    """Per-pixel photometric error (B, 1, H, W) = 0.85 SSIM + 0.15 L1, each averaged over channels."""
    l1 = (target - pred).abs().mean(1, keepdim=True)
    return ssim_weight * ssim(pred, target).mean(1, keepdim=True) + (1.0 - ssim_weight) * l1


def smoothness_loss(disp: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness (scalar) of disp (B, 1, h, w) on mean-normalised disparity.

    |d(disp/mean(disp))/dx| e^{-|dI/dx|} + the same in y, I = img resized to (h, w) by area
    averaging, gradients of I averaged over channels.
    """
    if img.shape[-2:] != disp.shape[-2:]:
        img = F.interpolate(img, size=disp.shape[-2:], mode="area")
    disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    gdx = (disp[:, :, :, :-1] - disp[:, :, :, 1:]).abs()
    gdy = (disp[:, :, :-1, :] - disp[:, :, 1:, :]).abs()
    gix = (img[:, :, :, :-1] - img[:, :, :, 1:]).abs().mean(1, keepdim=True)
    giy = (img[:, :, :-1, :] - img[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (gdx * torch.exp(-gix)).mean() + (gdy * torch.exp(-giy)).mean()


@dataclass
class SelfSupervisedLoss:
    """Result of :func:`self_supervised_loss`.

    loss: scalar to optimise. photometric / smoothness: scale-averaged parts (smoothness already
    weighted and divided by 2^s). per_scale: {s: loss_s}. warped: scale-0 warped sources (detached,
    for logging). automask_fraction: share of pixels kept by auto-masking at scale 0.
    """

    loss: torch.Tensor
    photometric: torch.Tensor
    smoothness: torch.Tensor
    per_scale: dict = field(default_factory=dict)
    warped: list = field(default_factory=list)
    automask_fraction: float = 1.0


def self_supervised_loss(
    target: torch.Tensor,
    sources: Sequence[torch.Tensor],
    disps: Union[Mapping[int, torch.Tensor], Sequence[torch.Tensor]],
    T_target_to_source: Sequence[torch.Tensor],
    K: torch.Tensor,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
    smoothness_weight: float = 1e-3,
    ssim_weight: float = 0.85,
    automask: bool = True,
    inv_K: Optional[torch.Tensor] = None,
) -> SelfSupervisedLoss:
    """Monodepth2 joint loss (paper eq. 5-6) for one target frame.

    target (B, 3, H, W) in [0, 1]; sources: list of (B, 3, H, W) (e.g. frames t-1 and t+1);
    disps: DepthNet output {scale s: sigmoid disparity (B, 1, H/2^s, W/2^s)} (a list means scales
    0, 1, ...); T_target_to_source: one (B, 4, 4) per source (PoseNet.target_to_source);
    K: (B, 3, 3) or (B, 4, 4) intrinsics in pixels of the full H x W image.
    Disparities are upsampled to H x W (bilinear) before warping, so every scale's photometric
    loss is at full resolution (Monodepth2); smoothness is computed at each scale's own size.
    """
    if len(sources) == 0 or len(sources) != len(T_target_to_source):
        raise ValueError("need one T_target_to_source per source frame (and at least one source)")
    scales = dict(disps) if isinstance(disps, Mapping) else dict(enumerate(disps))
    h, w = target.shape[-2:]
    identity = None
    if automask:
        identity = torch.cat([photometric_error(src, target, ssim_weight) for src in sources], dim=1)
    per_scale: dict[int, torch.Tensor] = {}
    photo_terms, smooth_terms = [], []
    warped_out: list = []
    keep_fraction = 1.0
    for s in sorted(scales):
        disp = scales[s]
        disp_full = disp if disp.shape[-2:] == (h, w) else F.interpolate(disp, size=(h, w), mode="bilinear",
                                                                         align_corners=False)
        _, depth = disp_to_depth(disp_full, min_depth, max_depth)
        reprojection = []
        for src, T in zip(sources, T_target_to_source):
            warped = warp_source(src, depth, T, K, inv_K)
            reprojection.append(photometric_error(warped, target, ssim_weight))
            if s == min(scales):
                warped_out.append(warped.detach())
        reproj = torch.cat(reprojection, dim=1)
        if identity is not None:
            # Identity first: on exact ties (nothing moved) the pixel counts as static and is masked.
            combined = torch.cat([identity, reproj], dim=1)
            best, idx = combined.min(dim=1)
            # As Monodepth2: the mean of the per-pixel minimum; where an identity error wins, the
            # term carries no gradient to the networks (identity errors do not depend on them).
            photo = best.mean()
            keep = idx >= identity.shape[1]
            if s == min(scales):
                keep_fraction = float(keep.float().mean())
        else:
            photo = reproj.min(dim=1)[0].mean()
        smooth = smoothness_weight * smoothness_loss(disp, target) / (2 ** s)
        per_scale[s] = photo + smooth
        photo_terms.append(photo)
        smooth_terms.append(smooth)
    n = len(per_scale)
    return SelfSupervisedLoss(
        loss=sum(per_scale.values()) / n,
        photometric=sum(photo_terms) / n,
        smoothness=sum(smooth_terms) / n,
        per_scale=per_scale,
        warped=warped_out,
        automask_fraction=keep_fraction,
    )


@torch.no_grad()
def best_depth_scale(target: torch.Tensor, sources: Sequence[torch.Tensor], depth: torch.Tensor,
                     T_target_to_source: Sequence[torch.Tensor], K: torch.Tensor, factors: torch.Tensor,
                     ssim_weight: float = 0.85) -> torch.Tensor:
    """Per image, the factor f of ``factors`` (F,) for which ``depth * f`` warps the sources onto the
    target best: the mean over pixels of the per-pixel minimum photometric error over the sources,
    at the size of ``depth`` (B, 1, h, w) (target/sources (B, 3, H, W) area-downsampled to it, K in
    pixels of H x W rescaled). No gradient. Returns (B,) factors.

    With known camera motion (odometry) the depth must otherwise be metric per image; a from-scratch
    DepthNet then spent its capacity on each room's absolute size and learned little shape (README,
    stage 2). Applying the best factor before the loss leaves it the shape, up to scale, as PoseNet does.
    """
    h, w = depth.shape[-2:]
    full_h, full_w = target.shape[-2:]
    if (h, w) != (full_h, full_w):
        target = F.interpolate(target, size=(h, w), mode="area")
        sources = [F.interpolate(src, size=(h, w), mode="area") for src in sources]
        K = scale_intrinsics(K, w / full_w, h / full_h)
    inv_K = torch.linalg.inv(K.to(depth.dtype))  # once, not per factor and source
    errors = []
    for f in factors.tolist():
        per_source = [photometric_error(warp_source(src, depth * f, T, K, inv_K), target, ssim_weight)
                      for src, T in zip(sources, T_target_to_source)]
        errors.append(torch.cat(per_source, dim=1).min(dim=1)[0].mean(dim=(1, 2)))  # (B,)
    best = torch.stack(errors, dim=1).argmin(dim=1)
    return factors.to(depth.device, depth.dtype)[best]
