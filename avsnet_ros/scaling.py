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

The inference scaling (``scale_relative``: pseudo-metric depth Mp of the echo model -> scale for the
relative depth R, with the confidence of paper-eq.-3 scaling) and the output range mask
(``mask_depth_range``) live here too: the pipeline and the exported graph both call them.
Medians: per image selection (O(n): numpy's partition on the CPU, torch.kthvalue elsewhere) in eager
mode; a sort-based torch.nanquantile while tracing or exporting (fixed shapes, no data-dependent
counts). Both give the interpolated median.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from avsnet_ros.data.samples import valid_depth

__all__ = ["valid_depth_mask", "median_scale", "mean_std_scale", "SCALING_MODES", "resolve_scaling", "scale_relative",
           "mask_depth_range", "resize_bilinear", "resize_masked_depth", "scaled_output_depth"]

_NANQUANTILE_MAX = 16_000_000  # torch.nanquantile refuses larger inputs
#: The ``scaling`` parameter (README "Scaling"): "affine" = robust scale and shift in inverse depth
#: (disparity models); "auto" = by the relative model's output type (:func:`resolve_scaling`).
SCALING_MODES = ("auto", "median", "mean_std", "local", "affine", "none")


def resolve_scaling(scaling: str, output_type: str = "depth") -> str:
    """The alignment a relative model of ``output_type`` gets for the ``scaling`` parameter.

    output_type "depth" (DepthNet: depth up to scale) or "metric" (zero-shot metric models: the
    paper's scale correction): auto -> median; median, mean_std, local and none as given; affine refused.
    "disparity" (affine-invariant inverse depth: Depth Anything relative, DPT/MiDaS): auto -> affine;
    affine and none as given; median, mean_std and local refused (1 / D is not proportional to depth
    when the model's shift is not 0, so no factor of it can align it). ValueError names the reason.
    """
    if scaling not in SCALING_MODES:
        raise ValueError(f"scaling must be one of {SCALING_MODES}, got {scaling!r}")
    if output_type not in ("depth", "disparity", "metric"):
        raise ValueError(f"output_type must be 'depth', 'disparity' or 'metric', got {output_type!r}")
    if scaling == "auto":
        return "affine" if output_type == "disparity" else "median"
    if output_type == "disparity" and scaling in ("median", "mean_std", "local"):
        raise ValueError(f"scaling {scaling!r} needs a relative model that predicts depth; this one predicts "
                         "affine-invariant disparity: use scaling 'affine' (or 'auto')")
    if output_type != "disparity" and scaling == "affine":
        raise ValueError(f"scaling 'affine' aligns disparity; this relative model predicts {output_type}: "
                         "use 'median', 'mean_std' or 'auto'")
    return scaling


# MAD -> standard deviation for a normal distribution.
_MAD_TO_STD = 1.4826
# Mp values within this relative margin of min/max depth count as saturated.
_SATURATION_MARGIN = 1e-3


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
    """Per-image interpolated median over mask: (B, ...) -> (B,), NaN where the mask is empty."""
    mask = mask & ~torch.isnan(x)
    flat = torch.where(mask, x, float("nan")).reshape(x.shape[0], -1)
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        # graph capture (models/export.py): no data-dependent shapes or Python-side counts
        if flat.numel() <= _NANQUANTILE_MAX:
            return torch.nanquantile(flat, 0.5, dim=1)
    counts = mask.reshape(x.shape[0], -1).sum(dim=1).tolist()
    if len(set(counts)) == 1:  # one selection for all rows (e.g. Mp and R under one mask)
        return _select_median(flat, counts[0])
    return torch.stack([_select_median(flat[i], n) for i, n in enumerate(counts)])


def _select_median(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Interpolated median of the n non-NaN values of each row of rows (R, N) (or of a 1-d tensor),
    NaN when n = 0.

    By selection (O(N); NaN orders after every number in both selections below, so the k-th smallest
    of the whole row is the k-th smallest valid value): on the CPU numpy's introselect, one call
    placing both middle values (3-5x faster than torch.kthvalue on the 30k pixels of a relative depth
    map; a sort (nanquantile) is slower still, and boolean indexing of the valid values costs more
    than the selection itself); on other devices (and for tensors that need a gradient)
    torch.kthvalue. Both select exact order statistics, so they give the same value.
    """
    if n == 0:
        return torch.full(rows.shape[:-1], float("nan"), dtype=rows.dtype, device=rows.device)
    k_lo, k_hi = (n - 1) // 2, n // 2  # 0-based ranks of the middle value(s) (equal for odd n)
    if rows.device.type == "cpu" and not rows.requires_grad:
        part = np.partition(rows.numpy(), (k_lo, k_hi), axis=-1)
        lo, hi = torch.from_numpy(part[..., k_lo].copy()), torch.from_numpy(part[..., k_hi].copy())
    else:
        lo = torch.kthvalue(rows, k_lo + 1, dim=-1).values
        hi = lo if k_hi == k_lo else torch.kthvalue(rows, k_hi + 1, dim=-1).values
    return lo if k_hi == k_lo else torch.lerp(lo, hi, 0.5)  # nanquantile's interpolation: lo + 0.5 (hi - lo)


def _finish(scaled4, factors, r, single, was_numpy):
    scaled = scaled4.reshape(r.shape)
    if single:
        factors = tuple(f[0] for f in factors)
    if was_numpy:
        scaled = scaled.cpu().numpy()
        factors = tuple(f.cpu().numpy() for f in factors)
    return scaled, factors


# ------------------------------------------------------------------------------------------------
# Inference scaling: relative depth R -> metres with the echo model's pseudo-metric depth Mp
def mask_depth_range(depth_m: torch.Tensor, min_depth_m: float, max_depth_m: float,
                     inplace: bool = False) -> torch.Tensor:
    """NaN outside [min_depth_m, max_depth_m] (and for NaN / inf): the published depth's validity.

    Any shape, float tensor; ``inplace=True`` fills ``depth_m`` itself (the pipeline's freshly
    resized output: no second full-resolution buffer). NaN fails both comparisons, so it stays NaN.
    """
    outside = (depth_m < min_depth_m) | (depth_m > max_depth_m)
    if inplace:
        return depth_m.masked_fill_(outside, float("nan"))
    return depth_m.masked_fill(outside, float("nan"))


def resize_bilinear(x: torch.Tensor, size_hw: "tuple[int, int]") -> torch.Tensor:
    """(B, C, h, w) float -> (B, C, H, W): bilinear, align_corners=False, no antialiasing (F.interpolate's
    rule; half-pixel centres, edge samples repeated). A new tensor, on x's device.

    On the CPU (float32, no autograd, not tracing) each plane goes through OpenCV's INTER_LINEAR, the
    same rule (equal to F.interpolate within float rounding: OpenCV places the source samples in double,
    torch with a float32 scale, ~1e-5 of the difference between neighbouring samples; test_scaling.py):
    ~0.1 ms vs ~0.8 ms for a 96x320 -> 1280x720 depth map on 2 cores, the largest single cost of the
    pipeline after the forward. Elsewhere (CUDA, float64, graph capture) F.interpolate.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if (x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad or x.dim() != 4
            or torch.jit.is_tracing() or torch.compiler.is_compiling() or max(h, w) >= 32768):
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    import cv2

    b, c = x.shape[:2]
    out = torch.empty((b, c, h, w), dtype=torch.float32)
    src, dst = x.detach().numpy(), out.numpy()
    for i in range(b):
        for j in range(c):
            cv2.resize(np.ascontiguousarray(src[i, j]), (w, h), dst=dst[i, j], interpolation=cv2.INTER_LINEAR)
    return out


def _inside_range(depth_m: torch.Tensor, min_depth_m: float, max_depth_m: float) -> bool:
    """True when every value is inside [min, max] by a relative margin of 1e-5: then any bilinear
    resize of it (convex combinations; float rounding ~1e-7) stays inside [min, max] too."""
    margin = 1e-5
    return bool(((depth_m >= min_depth_m * (1.0 + margin)) & (depth_m <= max_depth_m * (1.0 - margin))).all())


def resize_masked_depth(depth_m: torch.Tensor, size_hw: "tuple[int, int]", min_depth_m: float,
                        max_depth_m: float) -> torch.Tensor:
    """(B, C, h, w) depth -> bilinear resize (align_corners=False) to size_hw, then
    ``mask_depth_range`` on channel 0: the published depth map (further channels are resized only).

    Always a new tensor. The full-resolution mask is skipped when channel 0 is inside the range
    already at the model's resolution (``_inside_range``): same result, ~2 ms less per 1280x720
    map on the CPU.
    """
    if tuple(depth_m.shape[-2:]) == tuple(size_hw):
        out = depth_m.clone()
    else:
        out = resize_bilinear(depth_m, size_hw)
    if not _inside_range(depth_m[:, :1], min_depth_m, max_depth_m):
        mask_depth_range(out[:, :1], min_depth_m, max_depth_m, inplace=True)
    return out


def scaled_output_depth(relative_out: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                        depth_m: torch.Tensor, min_depth_m: float, max_depth_m: float,
                        inplace: bool = False) -> torch.Tensor:
    """Published depth from the relative depth already resized to the output size:
    scale * relative_out + shift (a new tensor), NaN outside [min_depth_m, max_depth_m].

    Bilinear resizing is linear, so this is the resized scaled depth (up to float rounding) for
    an affine scaling of every pixel (median, or a reused scale); one resize then serves both the
    depth and the relative map. relative_out (B, 1, H, W); scale, shift (B,); depth_m (B, 1, h, w)
    the scaled depth at the model's resolution (decides whether the mask can be skipped).
    inplace=True writes into relative_out (a caller that does not keep it: no second full-size
    buffer); the values are the same bit for bit.
    """
    b = relative_out.shape[0]
    # a product, then a sum, each rounded (as addcmul): two vectorised passes take ~1/3 of the time of
    # one addcmul with two broadcast (B, 1, 1, 1) operands on the CPU (~0.07 vs 0.25 ms at 1280x720)
    out = torch.mul(relative_out, scale.view(b, 1, 1, 1), out=relative_out if inplace else None)
    out.add_(shift.view(b, 1, 1, 1))
    if not _inside_range(depth_m, min_depth_m, max_depth_m):
        mask_depth_range(out, min_depth_m, max_depth_m, inplace=True)
    return out


def scale_relative(
    pseudo_m: torch.Tensor,
    relative: "torch.Tensor | None",
    min_depth_m: float,
    max_depth_m: float,
    scaling: str = "median",
    local_fit_out: "list | None" = None,
) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]":
    """Scale relative depth with the pseudo-metric depth (torch; the pipeline's and export's one implementation).

    pseudo_m (B, 1, h, w) metres; relative (B, 1, H, W) or None (pseudo-metric-only).
    Returns (depth (B, 1, H, W) metres, unmasked; scale (B,); shift (B,); confidence (B,)).
    scaling "local": depth = R * a smooth scale field (:func:`local_scale`), scale = the global
    median factor it falls back to, shift 0; the :class:`LocalScaleFit` is appended to
    ``local_fit_out`` when given (to reuse it on later frames: :func:`apply_local_scale`).
    scaling "affine": R is a disparity D; 1 / depth = scale * D + shift (:func:`disparity_affine_scale`),
    NaN where that is <= 0. "auto" is refused here: resolve it first (:func:`resolve_scaling`).
    Statistics over the pixels where Mp (resized bilinearly to R's grid) is strictly inside
    (min_depth_m, max_depth_m) (saturated bins carry no scale information) and R is finite and > 0.
    Confidence = valid_fraction * exp(-1.4826 * MAD(log Mp - log M)) over those pixels, 0 when none.
    """
    if scaling not in SCALING_MODES or scaling == "auto":
        raise ValueError(f"scaling must be one of {SCALING_MODES[1:]} (resolve 'auto' with resolve_scaling), "
                         f"got {scaling!r}")
    pseudo_m = pseudo_m.float()
    if relative is None or scaling == "none":
        ref = pseudo_m
        depth = pseudo_m
        scale = torch.ones(pseudo_m.shape[0], dtype=torch.float32, device=pseudo_m.device)
        shift = torch.zeros_like(scale)
        valid = unsaturated_mask(ref, min_depth_m, max_depth_m)
    else:
        relative = relative.float()
        ref = pseudo_m
        if ref.shape[-2:] != relative.shape[-2:]:
            ref = resize_bilinear(ref, relative.shape[-2:])
        # R finite and > 0 as two comparisons (NaN fails both; half the passes of isfinite & > 0)
        valid = unsaturated_mask(ref, min_depth_m, max_depth_m) & (relative > 0) & (relative < math.inf)
        if scaling == "median":
            # = median_scale(relative, ref, valid) without its input checks: valid already implies
            # finite, > 0 relative and reference values (per frame on the CPU: ~0.2 ms of mask passes)
            depth, scale = _median_fit(relative, ref, valid)
            shift = torch.zeros_like(scale)
        elif scaling == "affine":  # R is disparity: 1 / depth = scale * R + shift, NaN where <= 0
            depth, (scale, shift) = disparity_affine_scale(relative, ref, valid)
        elif scaling == "local":
            depth, fit = local_scale(relative, ref, valid)
            scale, shift = fit.global_scale, torch.zeros_like(fit.global_scale)
            if local_fit_out is not None:
                local_fit_out.append(fit)
        else:
            depth, (scale, shift) = mean_std_scale(relative, ref, valid)
    valid = valid & (depth > 0) & (depth < math.inf)
    n = valid.flatten(1).sum(dim=1)
    frac = n.float() / float(valid[0].numel())
    resid = torch.log(ref.clamp_min(1e-6)) - torch.log(depth.clamp_min(1e-6))
    med = _masked_median(resid, valid)
    mad = _masked_median((resid - med.view(-1, *([1] * (resid.dim() - 1)))).abs(), valid)
    conf = frac * torch.exp(-_MAD_TO_STD * mad)
    conf = torch.where(n > 0, conf, torch.zeros_like(conf)).clamp(0.0, 1.0)
    return depth, scale.float(), shift.float(), conf


def median_scale(relative, reference_m, valid=None):
    """Median scaling -> (scaled (shape of relative), scale (B,) or 0-d), scale = median(Mp)/median(R)."""
    r, r4, m4, mask, single, was_numpy = _prepare(relative, reference_m, valid)
    scaled4, scale = _median_fit(r4, m4, mask)
    scaled, (scale,) = _finish(scaled4, (scale,), r, single, was_numpy)
    return scaled, scale


def _median_fit(r4: torch.Tensor, m4: torch.Tensor, mask: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
    """median_scale's fit on checked inputs: r4, m4 (B, 1, H, W) float, mask (B, 1, H, W) bool already
    excluding pixels where either is not finite and > 0 -> (r4 * scale, scale (B,))."""
    b = r4.shape[0]
    medians = _masked_median(torch.cat([m4, r4]), torch.cat([mask, mask]))  # (2B,): Mp's, then R's
    scale = medians[:b] / medians[b:]
    return r4 * scale.view(-1, 1, 1, 1), scale


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


# ----------------------------------------------------------------------------- local scale
# A smooth, low-resolution scale field between the relative depth R and the reference Mp
# (``scaling: local``; README "Local scale"). Appended here so the global fits above stay untouched.

from dataclasses import dataclass  # noqa: E402

import torch.nn.functional as _F  # noqa: E402

LOCAL_KINDS = ("depth", "disparity")
#: Default coarse grid (rows, columns) of the local fit: ~16 x 32 px cells at 96 x 256.
LOCAL_GRID_HW = (6, 8)
#: Default pull towards the global fit: a cell with valid-pixel fraction f keeps f / (f + 0.05) of
#: its own correction (fully valid cell: 0.95; 5 % valid: 0.5).
LOCAL_PRIOR_WEIGHT = 0.05
#: Cells with fewer valid reference pixels than this fraction use the global fit only.
LOCAL_MIN_VALID_FRACTION = 0.05


@dataclass
class LocalScaleFit:
    """A local scale field on a coarse grid; apply with :func:`apply_local_scale`.

    kind "depth": depth = R * scale_field (shift_grid all 0); kind "disparity": 1 / depth =
    scale_field * D + shift_field. Fields = the grids bilinearly upsampled (align_corners=False;
    for "depth" in log space), so they are smooth and equal the cell values at cell centres.

    scale_grid, shift_grid: (B, gh, gw) per-cell factors (NaN where the image had no valid pixel).
    global_scale, global_shift: (B,) the global fit the cells fall back to (depth: median(Mp) /
        median(R), exactly :func:`median_scale`'s factor; disparity: robust least squares).
    cell_weight: (B, gh, gw) share of each cell's own fit in [0, 1) (0: global fallback).
    kind: "depth" or "disparity".
    """

    scale_grid: torch.Tensor
    shift_grid: torch.Tensor
    global_scale: torch.Tensor
    global_shift: torch.Tensor
    cell_weight: torch.Tensor
    kind: str


def _cell_edges(n: int, cells: int) -> list[int]:
    return [int(round(i * n / cells)) for i in range(cells + 1)]


def _upsample(grid: torch.Tensor, size_hw) -> torch.Tensor:
    """(B, gh, gw) -> (B, 1, H, W) bilinear, align_corners=False (cell values at cell centres)."""
    return _F.interpolate(grid[:, None], size=tuple(size_hw), mode="bilinear", align_corners=False)


def _check_local_args(grid_hw, prior_weight, min_valid_fraction, kind, h, w):
    if kind not in LOCAL_KINDS:
        raise ValueError(f"kind must be one of {LOCAL_KINDS}, got {kind!r}")
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    if gh < 1 or gw < 1 or gh > h or gw > w:
        raise ValueError(f"grid_hw {tuple(grid_hw)} must be >= 1 and at most the image size {(h, w)}")
    if not prior_weight >= 0:  # also rejects NaN; inf = the global fit everywhere
        raise ValueError(f"prior_weight must be >= 0 (inf allowed), got {prior_weight!r}")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction!r}")
    return gh, gw


def local_scale(relative, reference_m, valid=None, grid_hw=LOCAL_GRID_HW, prior_weight: float = LOCAL_PRIOR_WEIGHT,
                min_valid_fraction: float = LOCAL_MIN_VALID_FRACTION, kind: str = "depth"):
    """Local scaling -> (scaled depth in metres (shape of relative), :class:`LocalScaleFit`).

    Method (kind "depth", R a relative depth): the log-ratio l = log(Mp) - log(R) over the valid
    mask (as :func:`median_scale`); the global fit g = log(median(Mp) / median(R)); on a coarse
    grid_hw grid each cell takes the median m_c of l over its valid pixels (robust to outliers and
    to Mp's own blobs) and is pulled towards the global fit by its valid fraction f_c:
    l_c = g + f_c / (f_c + prior_weight) * (m_c - g); cells with f_c < min_valid_fraction (Mp
    unreliable or saturated there) use g. The grid is upsampled bilinearly in log space:
    depth = R * exp(field). prior_weight = inf gives median scaling exactly.

    kind "disparity" (R an affine-invariant disparity D, e.g. MiDaS/Depth-Anything): fits
    1/Mp = a D + b, globally and per cell by least squares with Huber weights (3 reweightings), the
    cells with a ridge penalty prior_weight * cell_pixels * mean over the cell of
    ((a - a_g) D + (b - b_g))^2, i.e. towards the global prediction; depth = 1 / (a D + b), NaN where
    a D + b <= 0.

    Args:
        relative: (B, 1, H, W), (B, H, W) or (H, W) relative depth (or disparity), torch or numpy.
        reference_m: same shape, metres (Mp resized to R's grid); zeros/NaN/inf ignored.
        valid: optional bool mask of the same shape (e.g. Mp unsaturated).
        grid_hw: (rows, columns) of the coarse grid.
    Returns: (scaled, fit); scaled keeps R's value where R is invalid (kind "depth", like
        median_scale), all NaN for an image without valid pixels.
    """
    r, r4, m4, mask, single, was_numpy = _prepare(relative, reference_m, valid)
    h, w = r4.shape[-2:]
    gh, gw = _check_local_args(grid_hw, prior_weight, min_valid_fraction, kind, h, w)
    if kind == "depth":
        fit = _fit_local_depth(r4, m4, mask, gh, gw, prior_weight, min_valid_fraction)
    else:
        fit = _fit_local_disparity(r4, m4, mask, gh, gw, prior_weight, min_valid_fraction)
    scaled4 = _apply_local4(r4, fit)
    scaled = scaled4.reshape(r.shape)
    if single:
        fit = LocalScaleFit(*(t[0] for t in (fit.scale_grid, fit.shift_grid, fit.global_scale, fit.global_shift,
                                            fit.cell_weight)), kind=fit.kind)
    if was_numpy:
        scaled = scaled.cpu().numpy()
    return scaled, fit


def _own_weight(frac: torch.Tensor, prior_weight: float) -> torch.Tensor:
    """Share of a cell's own fit: f / (f + prior_weight) (1 for prior 0, 0 for prior inf)."""
    if math.isinf(prior_weight):
        return torch.zeros_like(frac)
    if prior_weight == 0:
        return torch.ones_like(frac)
    return frac / (frac + prior_weight)


def _fit_local_depth(r4, m4, mask, gh, gw, prior_weight, min_valid_fraction) -> LocalScaleFit:
    b = r4.shape[0]
    nan = torch.full_like(r4, float("nan"))
    log_ratio = torch.where(mask, torch.log(torch.where(mask, m4, torch.ones_like(m4)))
                            - torch.log(torch.where(mask, r4, torch.ones_like(r4))), nan)
    g = torch.log(_masked_median(m4, mask) / _masked_median(r4, mask))  # (B,), NaN without valid pixels
    grid = torch.empty(b, gh, gw, dtype=r4.dtype, device=r4.device)
    weight = torch.zeros_like(grid)
    ys, xs = _cell_edges(r4.shape[-2], gh), _cell_edges(r4.shape[-1], gw)
    for i in range(gh):
        for j in range(gw):
            cell = log_ratio[:, 0, ys[i]:ys[i + 1], xs[j]:xs[j + 1]].reshape(b, -1)
            frac = (~torch.isnan(cell)).sum(dim=1).to(r4.dtype) / cell.shape[1]
            med = torch.nanquantile(cell, 0.5, dim=1)
            wc = _own_weight(frac, prior_weight)
            wc = torch.where((frac >= max(min_valid_fraction, 1e-12)) & torch.isfinite(med), wc, torch.zeros_like(wc))
            grid[:, i, j] = g + wc * torch.nan_to_num(med - g, nan=0.0)
            weight[:, i, j] = wc
    zeros = torch.zeros_like(g)
    return LocalScaleFit(torch.exp(grid), torch.zeros_like(grid), torch.exp(g), zeros, weight, "depth")


def _weighted_affine(d, t, w, prior=None):
    """Solve min sum w (a d + b - t)^2 [+ prior (P, theta0)] per row: d, t, w (B, N) -> a, b (B,)."""
    sdd, sd, s1 = (w * d * d).sum(1), (w * d).sum(1), w.sum(1)
    sdt, st = (w * d * t).sum(1), (w * t).sum(1)
    if prior is not None:
        (p_dd, p_d, p_1), (a0, b0) = prior
        sdd, sd, s1 = sdd + p_dd, sd + p_d, s1 + p_1
        sdt, st = sdt + p_dd * a0 + p_d * b0, st + p_d * a0 + p_1 * b0
    det = sdd * s1 - sd * sd
    a = (sdt * s1 - sd * st) / det
    b = (sdd * st - sd * sdt) / det
    return a, b


def _huber_affine(d, t, w0, prior=None, iterations: int = 3):
    """Least squares a d + b ~ t with Huber weights (threshold 1.345 robust sigmas of the residual),
    reweighted `iterations` times; w0 (B, N) the base weights (0 = invalid)."""
    a, b = _weighted_affine(d, t, w0, prior)
    for _ in range(iterations):
        res = torch.where(w0 > 0, a[:, None] * d + b[:, None] - t, torch.full_like(t, float("nan")))
        sigma = 1.4826 * torch.nanquantile(res.abs(), 0.5, dim=1, keepdim=True).nan_to_num(nan=1.0).clamp_min(1e-12)
        u = (res.abs() / (1.345 * sigma)).nan_to_num(nan=0.0)
        a, b = _weighted_affine(d, t, w0 * torch.where(u <= 1, torch.ones_like(u), 1.0 / u.clamp_min(1e-12)), prior)
    return a, b


def _fit_local_disparity(r4, m4, mask, gh, gw, prior_weight, min_valid_fraction) -> LocalScaleFit:
    b = r4.shape[0]
    d = torch.where(mask, r4, torch.zeros_like(r4)).reshape(b, -1)
    t = torch.where(mask, 1.0 / torch.where(mask, m4, torch.ones_like(m4)), torch.zeros_like(m4)).reshape(b, -1)
    w0 = mask.reshape(b, -1).to(r4.dtype)
    a_g, b_g = _huber_affine(d, t, w0)
    d_all = torch.where(valid_depth_mask(r4), r4, torch.zeros_like(r4))
    a_grid = torch.empty(b, gh, gw, dtype=r4.dtype, device=r4.device)
    b_grid, weight = torch.empty_like(a_grid), torch.zeros_like(a_grid)
    ys, xs = _cell_edges(r4.shape[-2], gh), _cell_edges(r4.shape[-1], gw)
    w0_img, d_img, t_img = w0.reshape(r4.shape), d.reshape(r4.shape), t.reshape(r4.shape)
    m_img = mask
    for i in range(gh):
        for j in range(gw):
            sl = (slice(None), 0, slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1]))
            wc, dc, tc = w0_img[sl].reshape(b, -1), d_img[sl].reshape(b, -1), t_img[sl].reshape(b, -1)
            da = d_all[sl].reshape(b, -1)
            n_px = da.shape[1]
            frac = m_img[sl].reshape(b, -1).sum(1).to(r4.dtype) / n_px
            # prior: prior_weight * n_px * mean over the cell of ((a - a_g) D + (b - b_g))^2
            pw = min(max(prior_weight, 1e-6), 1e12) * n_px
            prior = ((pw * (da * da).mean(1), pw * da.mean(1), torch.full_like(frac, pw)), (a_g, b_g))
            a_c, b_c = _huber_affine(dc, tc, wc, prior)
            own = (frac >= max(min_valid_fraction, 1e-12)) & torch.isfinite(a_c) & torch.isfinite(b_c)
            own &= not math.isinf(prior_weight)
            a_grid[:, i, j] = torch.where(own, a_c, a_g)
            b_grid[:, i, j] = torch.where(own, b_c, b_g)
            weight[:, i, j] = torch.where(own, _own_weight(frac, prior_weight), torch.zeros_like(frac))
    return LocalScaleFit(a_grid, b_grid, a_g, b_g, weight, "disparity")


def _apply_local4(r4: torch.Tensor, fit: LocalScaleFit) -> torch.Tensor:
    size = r4.shape[-2:]
    if fit.kind == "depth":
        field = torch.exp(_upsample(torch.log(fit.scale_grid.to(r4.dtype)), size))
        return r4 * field  # invalid R (0, NaN, inf) keeps its value up to the factor, as median_scale
    disp = _upsample(fit.scale_grid.to(r4.dtype), size) * r4 + _upsample(fit.shift_grid.to(r4.dtype), size)
    ok = valid_depth_mask(r4) & torch.isfinite(disp) & (disp > 0)
    return torch.where(ok, 1.0 / torch.where(ok, disp, torch.ones_like(disp)), torch.full_like(disp, float("nan")))


def apply_local_scale(relative, fit: LocalScaleFit):
    """Apply a :class:`LocalScaleFit` to a relative map (the same image, or later frames when the
    fit is reused between echoes). relative: (B, 1, H, W), (B, H, W) or (H, W) at any size (the grid
    is upsampled to it); returns metres in the same shape (numpy in -> numpy out)."""
    was_numpy = not isinstance(relative, torch.Tensor)
    r = torch.as_tensor(relative)
    squeeze = r.dim()
    if r.dim() == 2:
        r4 = r[None, None]
        fit = LocalScaleFit(*(t[None] for t in (fit.scale_grid, fit.shift_grid, fit.global_scale, fit.global_shift,
                                               fit.cell_weight)), kind=fit.kind)
    elif r.dim() == 3:
        r4 = r[:, None]
    elif r.dim() == 4 and r.shape[1] == 1:
        r4 = r
    else:
        raise ValueError(f"expected (B, 1, H, W), (B, H, W) or (H, W), got shape {tuple(r.shape)}")
    r4 = r4.to(r4.dtype if r4.dtype in (torch.float32, torch.float64) else torch.float32)
    out = _apply_local4(r4, LocalScaleFit(*(t.to(r4.device) for t in (fit.scale_grid, fit.shift_grid, fit.global_scale,
                                                                         fit.global_shift, fit.cell_weight)),
                                          kind=fit.kind))
    out = out.reshape(r.shape) if squeeze != 4 else out
    return out.cpu().numpy() if was_numpy else out


def unsaturated_mask(depth_m, min_depth_m: float, max_depth_m: float, margin: float = _SATURATION_MARGIN):
    """Pixels of a bounded depth map strictly inside (min (1 + margin), max (1 - margin)): saturated
    bins of a pseudo-metric map carry no scale information (torch; scale_relative's and the local
    fit's reference mask)."""
    lo, hi = min_depth_m * (1.0 + margin), max_depth_m * (1.0 - margin)
    return (depth_m > lo) & (depth_m < hi)  # strict comparisons exclude NaN and +-inf by themselves


__all__ += ["LOCAL_KINDS", "LOCAL_GRID_HW", "LocalScaleFit", "local_scale", "apply_local_scale", "unsaturated_mask"]


def rescale_depth(depth_m, shift_m: float, from_scale: float, to_scale: float, inplace: bool = False):
    """Depth made with ``from_scale * R + shift_m`` -> the same relative map R at ``to_scale``:
    ``(depth_m - shift_m) * to_scale / from_scale + shift_m`` (numpy or torch; NaN stays NaN).

    Used where a scale changes after the depth was made (the node's scale filter), so the relative
    model does not run twice. inplace=True writes into depth_m (a float array or tensor the caller
    owns) and returns it: the same operations, so the same values bit for bit, without a new
    full-size array per step (1280x720: ~0.1 vs ~0.6 ms on 2 cores with shift 0).
    """
    if not (from_scale > 0 and to_scale > 0):
        raise ValueError(f"scales must be > 0, got {from_scale!r} -> {to_scale!r}")
    ratio = to_scale / from_scale
    if not inplace:
        return (depth_m - shift_m) * ratio + shift_m
    if shift_m != 0:
        depth_m -= shift_m
    depth_m *= ratio
    if shift_m != 0:
        depth_m += shift_m
    return depth_m


# ----------------------------------------------------------------------------- disparity alignment
# Affine-invariant inverse depth (Depth Anything relative, DPT/MiDaS): scale AND shift in inverse
# depth (``scaling: affine``; README "Scaling"). A median ratio cannot align such a map: with a shift
# b, 1/D is not proportional to depth.

#: Huber reweightings of the global inverse-depth fit (each one a weighted least-squares solve).
AFFINE_IRLS_ITERATIONS = 5


def disparity_affine_scale(relative_disp, reference_m, valid=None, iterations: int = AFFINE_IRLS_ITERATIONS):
    """Robust scale-and-shift fit in inverse depth -> (depth_m (shape of relative), (a, b)).

    Fits 1/Mp = a D + b over the valid pixels (given ``valid`` AND finite, > 0 D AND finite, > 0
    reference, as every fit here) by least squares, then ``iterations`` Huber reweightings
    (threshold 1.345 robust sigmas of the residual; :func:`_huber_affine`, the local fit's global
    step), in float64. depth = 1 / (a D + b) on every pixel with a finite D (D <= 0 included: sky
    at zero disparity gets 1 / b), NaN where a D + b <= 0 (no depth exists there, REP 117) or D
    is not finite. An image without valid pixels, with constant D, or whose fit has a <= 0
    (inverse depth falling as disparity rises: no alignment) gets a = b = NaN and all-NaN depth.

    Args:
        relative_disp: (B, 1, H, W), (B, H, W) or (H, W) disparity (relative units), torch or numpy.
        reference_m: same shape, metres (zeros/NaN/inf ignored).
        valid: optional bool mask of the same shape.
    Returns: (depth_m, (a, b)); a, b (B,) or 0-d for one (H, W) image (numpy in -> numpy out).
    """
    r, r4, m4, mask, single, was_numpy = _prepare(relative_disp, reference_m, valid)
    bsz = r4.shape[0]
    d = torch.where(mask, r4, torch.zeros_like(r4)).reshape(bsz, -1).double()
    inv_m = torch.where(mask, 1.0 / torch.where(mask, m4, torch.ones_like(m4)), torch.zeros_like(m4))
    t = inv_m.reshape(bsz, -1).double()
    w0 = mask.reshape(bsz, -1).double()
    # centre D (per image, over the valid pixels) so the 2x2 normal equations stay well conditioned
    n = w0.sum(1)
    centre = torch.where(n > 0, (w0 * d).sum(1) / n.clamp_min(1.0), torch.zeros_like(n))
    a, b_c = _huber_affine(d - centre[:, None], t, w0, iterations=int(iterations))
    b = b_c - a * centre
    ok = torch.isfinite(a) & torch.isfinite(b) & (a > 0) & (n >= 2)
    nan = torch.full_like(a, float("nan"))
    a, b = torch.where(ok, a, nan).to(r4.dtype), torch.where(ok, b, nan).to(r4.dtype)
    depth4 = disparity_to_depth(r4, a, b)
    scaled, (a, b) = _finish(depth4, (a, b), r, single, was_numpy)
    return scaled, (a, b)


def disparity_to_depth(disparity: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """depth = 1 / (scale * D + shift) for (B, 1, H, W) disparity and (B,) factors (a fit of
    :func:`disparity_affine_scale`, fresh or reused); NaN where scale * D + shift <= 0 or D is not
    finite. The same dtype and device as ``disparity``; a new tensor."""
    bsz = disparity.shape[0]
    inv = torch.addcmul(shift.to(disparity).view(bsz, 1, 1, 1).expand_as(disparity), disparity,
                        scale.to(disparity).view(bsz, 1, 1, 1))
    ok = torch.isfinite(inv) & (inv > 0)
    return torch.where(ok, 1.0 / torch.where(ok, inv, torch.ones_like(inv)), torch.full_like(inv, float("nan")))


def rescale_disparity_depth(depth_m, shift: float, from_scale: float, to_scale: float):
    """Depth made with ``1 / (from_scale * D + shift)`` -> the same disparity D at ``to_scale``:
    ``1 / ((1 / depth_m - shift) * to_scale / from_scale + shift)``, NaN where that is <= 0
    (numpy or torch; NaN stays NaN). :func:`rescale_depth`'s counterpart for ``scaling: affine``."""
    if not (from_scale > 0 and to_scale > 0):
        raise ValueError(f"scales must be > 0, got {from_scale!r} -> {to_scale!r}")
    inv = (1.0 / depth_m - shift) * (to_scale / from_scale) + shift
    if isinstance(inv, torch.Tensor):
        return torch.where(inv > 0, 1.0 / inv, torch.full_like(inv, float("nan")))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inv > 0, 1.0 / inv, np.nan).astype(np.asarray(depth_m).dtype, copy=False)


__all__ += ["AFFINE_IRLS_ITERATIONS", "disparity_affine_scale", "disparity_to_depth", "rescale_disparity_depth"]
