"""Scaling a relative depth R to metres with a reference (AVS-Net's pseudo-metric depth Mp, or ground truth).

- median (paper eq. 3): M = R * median(Mp) / median(R)
- mean-std: M = (R - mean(R)) / std(R) * std(Mp) + mean(Mp) = a R + b

Statistics are taken per image over the valid mask: the given `valid` AND finite, > 0 relative AND
finite, > 0 reference (zeros, NaN and inf are ignored, never averaged in). The median is the
interpolated one (numpy's: the mean of the two middle values for even counts); std is the
population std (the ratio std(Mp)/std(R) does not depend on that choice). An image without valid
pixels (or with constant R for mean-std) gets NaN factors and NaN scaled depths, so callers can
see it. Scaled output = the factors applied to every pixel of R; pixels where R itself is invalid
(0, NaN, inf) keep R's value (median: R * scale does that by itself; mean-std would turn 0 into b).

Inputs: torch tensors (B, 1, H, W), (B, H, W) or (H, W) (numpy arrays are accepted and give numpy
back). Factors: shape (B,) for batched input, 0-d for a single (H, W) image.
"""
from __future__ import annotations

import numpy as np
import torch

from avsnet_ros.data.samples import valid_depth

__all__ = ["valid_depth_mask", "median_scale", "mean_std_scale"]

_NANQUANTILE_MAX = 16_000_000  # torch.nanquantile refuses larger inputs


def valid_depth_mask(depth, min_depth_m: float = 0.0, max_depth_m: float = float("inf")):
    """Boolean mask: finite & > 0 & >= min_depth_m & <= max_depth_m (torch or numpy, same shape)."""
    if isinstance(depth, torch.Tensor):
        return torch.isfinite(depth) & (depth > 0) & (depth >= min_depth_m) & (depth <= max_depth_m)
    d = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return valid_depth(d, max_depth_m) & (d >= min_depth_m)


def _prepare(relative, reference_m, valid):
    was_numpy = not isinstance(relative, torch.Tensor)
    r = torch.as_tensor(relative)
    m = torch.as_tensor(reference_m, device=r.device)
    if r.shape != m.shape:
        raise ValueError(f"relative shape {tuple(r.shape)} differs from reference shape {tuple(m.shape)}")
    if r.dim() == 2:
        single = True
        r4, m4 = r[None, None], m[None, None]
    elif r.dim() == 3:
        single = False
        r4, m4 = r[:, None], m[:, None]
    elif r.dim() == 4 and r.shape[1] == 1:
        single = False
        r4, m4 = r, m
    else:
        raise ValueError(f"expected (B, 1, H, W), (B, H, W) or (H, W), got shape {tuple(r.shape)}")
    dtype = r4.dtype if r4.dtype in (torch.float32, torch.float64) else torch.float32
    r4, m4 = r4.to(dtype), m4.to(dtype)
    mask = valid_depth_mask(r4) & valid_depth_mask(m4)
    if valid is not None:
        v = torch.as_tensor(valid, device=r.device).to(torch.bool)
        if v.shape != r.shape:
            raise ValueError(f"valid mask shape {tuple(v.shape)} differs from depth shape {tuple(r.shape)}")
        mask &= v.reshape(r4.shape)
    return r, r4, m4, mask, single, was_numpy


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image interpolated median over mask: (B, 1, H, W) -> (B,), NaN where the mask is empty."""
    flat = torch.where(mask, x, torch.full_like(x, float("nan"))).reshape(x.shape[0], -1)
    if flat.numel() <= _NANQUANTILE_MAX:
        return torch.nanquantile(flat, 0.5, dim=1)
    return torch.stack([torch.nanquantile(row, 0.5) if row.numel() <= _NANQUANTILE_MAX else _big_median(row) for row in flat])


def _big_median(row: torch.Tensor) -> torch.Tensor:
    vals = row[~torch.isnan(row)]
    if vals.numel() == 0:
        return torch.tensor(float("nan"), dtype=row.dtype, device=row.device)
    s, _ = torch.sort(vals)
    n = s.numel()
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _finish(scaled4, factors, r, single, was_numpy):
    scaled = scaled4.reshape(r.shape)
    if single:
        factors = tuple(f[0] for f in factors)
    if was_numpy:
        scaled = scaled.cpu().numpy()
        factors = tuple(f.cpu().numpy() for f in factors)
    return scaled, factors


def median_scale(relative, reference_m, valid=None):
    """Median scaling -> (scaled (shape of relative), scale (B,) or 0-d), scale = median(Mp)/median(R)."""
    r, r4, m4, mask, single, was_numpy = _prepare(relative, reference_m, valid)
    scale = _masked_median(m4, mask) / _masked_median(r4, mask)
    scaled4 = r4 * scale.view(-1, 1, 1, 1)
    scaled, (scale,) = _finish(scaled4, (scale,), r, single, was_numpy)
    return scaled, scale


def mean_std_scale(relative, reference_m, valid=None):
    """Mean-std scaling -> (scaled, (a, b)) with scaled = a * R + b, a = std(Mp)/std(R), b = mean(Mp) - a mean(R)."""
    r, r4, m4, mask, single, was_numpy = _prepare(relative, reference_m, valid)
    w = mask.to(r4.dtype)
    n = w.sum(dim=(1, 2, 3))
    zr = torch.where(mask, r4, torch.zeros_like(r4))
    zm = torch.where(mask, m4, torch.zeros_like(m4))
    mean_r = zr.sum(dim=(1, 2, 3)) / n
    mean_m = zm.sum(dim=(1, 2, 3)) / n
    var_r = (w * (zr - mean_r.view(-1, 1, 1, 1)) ** 2).sum(dim=(1, 2, 3)) / n
    var_m = (w * (zm - mean_m.view(-1, 1, 1, 1)) ** 2).sum(dim=(1, 2, 3)) / n
    std_r = var_r.sqrt()
    a = var_m.sqrt() / std_r
    a = torch.where(std_r > 0, a, torch.full_like(a, float("nan")))  # constant R: no scale exists
    b = mean_m - a * mean_r
    # Invalid relative pixels (0, NaN, inf) stay as they are: a * 0 + b would invent a depth.
    scaled4 = torch.where(valid_depth_mask(r4), a.view(-1, 1, 1, 1) * r4 + b.view(-1, 1, 1, 1), r4)
    scaled, (a, b) = _finish(scaled4, (a, b), r, single, was_numpy)
    return scaled, (a, b)
