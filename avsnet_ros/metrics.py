"""Depth metrics of the paper (Abs Rel, Sq Rel, RMSE, RMSE log, delta1-3): per image, then mean.

Valid pixels: ground truth finite, > 0 and <= max_depth_m (< max_depth_m with strict_max=True,
which is the paper's footnote 5: "ground truth depth non zero and strictly smaller than maximum";
use it when ground truth was clipped to the maximum, as the BatVision loaders do, so clipped pixels
drop out). Predictions are clamped to [min_depth_m, max_depth_m] before any ratio or log (as in
the usual Eigen/Monodepth2 evaluation). All arithmetic in float64.

    abs_rel  = mean(|p - g| / g)          sq_rel   = mean((p - g)^2 / g)
    rmse     = sqrt(mean((p - g)^2))       rmse_log = sqrt(mean((ln p - ln g)^2))
    delta_i  = mean(max(p / g, g / p) < 1.25^i),  i = 1, 2, 3
"""
from __future__ import annotations

import math

import numpy as np

from avsnet_ros.data.samples import valid_depth

__all__ = ["METRIC_KEYS", "compute_depth_metrics", "DepthMetricAccumulator", "log_scale_jitter",
           "median_log_scale_error"]

#: The paper's column order (Tables 1 and 2).
METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def compute_depth_metrics(
    pred_m,
    gt_m,
    max_depth_m: float,
    min_depth_m: float = 1e-3,
    strict_max: bool = False,
    invalid_pred: str = "error",
) -> "dict[str, float]":
    """Metrics of ONE image: pred_m, gt_m numpy or torch, same shape ((H, W), or (1, H, W) etc.).

    Returns {abs_rel, sq_rel, rmse, rmse_log, delta1, delta2, delta3: float, valid_pixels: int,
    excluded_pred_pixels: int}. With no valid pixel every metric is NaN and valid_pixels = 0.

    invalid_pred: what to do with a non-finite prediction on a valid ground-truth pixel (NaN is what
    the nodes publish for "no depth"): "error" raises ValueError (default: a silent choice would change
    the numbers), "exclude" drops those pixels and counts them in excluded_pred_pixels.
    +inf/-inf predictions count as non-finite too.
    """
    pred = _to_numpy(pred_m)
    gt = _to_numpy(gt_m)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if not max_depth_m > 0 or not 0 < min_depth_m < max_depth_m:
        raise ValueError(f"need 0 < min_depth_m < max_depth_m, got {min_depth_m}, {max_depth_m}")
    if invalid_pred not in ("error", "exclude"):
        raise ValueError(f"invalid_pred must be 'error' or 'exclude', got {invalid_pred!r}")
    valid = valid_depth(gt, max_depth_m, 0.0, strict_max=strict_max)
    bad_pred = valid & ~np.isfinite(pred)
    n_bad = int(bad_pred.sum())
    if n_bad:
        if invalid_pred == "error":
            raise ValueError(
                f"{n_bad} non-finite predictions on valid ground-truth pixels "
                "(pass invalid_pred='exclude' to drop and count them)"
            )
        valid &= ~bad_pred
    n = int(valid.sum())
    out: "dict[str, float]" = {}
    if n == 0:
        out.update({k: math.nan for k in METRIC_KEYS})
        out["valid_pixels"] = 0
        out["excluded_pred_pixels"] = n_bad
        return out
    g = gt[valid]
    p = np.clip(pred[valid], min_depth_m, max_depth_m)
    diff = p - g
    ratio = np.maximum(p / g, g / p)
    out["abs_rel"] = float(np.mean(np.abs(diff) / g))
    out["sq_rel"] = float(np.mean(diff * diff / g))
    out["rmse"] = float(np.sqrt(np.mean(diff * diff)))
    out["rmse_log"] = float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)))
    for i in (1, 2, 3):
        out[f"delta{i}"] = float(np.mean(ratio < 1.25**i))
    out["valid_pixels"] = n
    out["excluded_pred_pixels"] = n_bad
    return out


class DepthMetricAccumulator:
    """Streaming evaluation: update() per image, summary() = mean over images of each metric.

    Images with no valid pixel are not averaged (their metrics are NaN); they are counted in
    summary()["skipped"]. `per_image` keeps every image's dict (with its optional `name`).
    """

    def __init__(self, max_depth_m: float, min_depth_m: float = 1e-3, strict_max: bool = False,
                 invalid_pred: str = "error"):
        self.max_depth_m = float(max_depth_m)
        self.min_depth_m = float(min_depth_m)
        self.strict_max = bool(strict_max)
        self.invalid_pred = invalid_pred
        self.per_image: "list[dict]" = []
        self._sums = {k: 0.0 for k in METRIC_KEYS}
        self._count = 0
        self._skipped = 0

    def update(self, pred_m, gt_m, name: "str | None" = None) -> "dict[str, float]":
        """Add one image (pred_m, gt_m as in compute_depth_metrics); returns its metrics."""
        m = compute_depth_metrics(pred_m, gt_m, self.max_depth_m, self.min_depth_m, self.strict_max, self.invalid_pred)
        if name is not None:
            m["name"] = name
        self.per_image.append(m)
        if m["valid_pixels"] == 0:
            self._skipped += 1
        else:
            self._count += 1
            for k in METRIC_KEYS:
                self._sums[k] += m[k]
        return m

    def summary(self) -> "dict[str, float]":
        """{metric: mean over images with valid pixels (NaN if none), count: int, skipped: int}."""
        out: "dict[str, float]" = {
            k: (self._sums[k] / self._count if self._count else math.nan) for k in METRIC_KEYS
        }
        out["count"] = self._count
        out["skipped"] = self._skipped
        return out

    def reset(self) -> None:
        self.__init__(self.max_depth_m, self.min_depth_m, self.strict_max, self.invalid_pred)


# ------------------------------------------------------------------------------------------------
# scale over time (issue 14): one definition for training/scale_sequences.py and the replay collector
def log_scale_jitter(scales, frame_index=None) -> float:
    """Scale jitter of a sequence of scales in time order: std (ddof 0) of the consecutive
    differences of ln(scale). With frame_index (the frames' positions in the recording, same
    length), only differences between frames adjacent in the recording (index step 1) count, so
    frames missing from the sequence do not stretch a difference over a longer time. NaN with fewer
    than 2 differences (one difference says nothing about its spread). Scales must be finite and
    > 0 (ValueError): drop and count the others before calling.
    """
    ls = np.asarray(scales, dtype=np.float64).ravel()
    if ls.size and not (np.all(np.isfinite(ls)) and np.all(ls > 0)):
        raise ValueError("scales must be finite and > 0")
    d = np.diff(np.log(ls))
    if frame_index is not None:
        idx = np.asarray(frame_index, dtype=np.int64).ravel()
        if idx.shape != ls.shape:
            raise ValueError(f"frame_index has {idx.size} values for {ls.size} scales")
        d = d[np.diff(idx) == 1]
    if d.size < 2:
        return math.nan
    return float(np.std(d))


def median_log_scale_error(pred_m, gt_m, max_depth_m: float, min_depth_m: float = 0.0) -> float:
    """|ln(median(pred) / median(gt))| over the pixels where gt is valid (finite, min_depth_m < gt <=
    max_depth_m) and pred finite and > 0; NaN when there is no such pixel. (H, W) numpy or torch.

    For a median-scaled prediction pred = s * R this is |ln(s / s_gt)| with s_gt = median(gt) /
    median(R), the "GT-median scale", as long as the prediction was not range-masked (NaN) on part
    of those pixels.
    """
    p, g = _to_numpy(pred_m), _to_numpy(gt_m)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    with np.errstate(invalid="ignore"):
        valid = valid_depth(g, max_depth_m, min_depth_m) & np.isfinite(p) & (p > 0)
    if not valid.any():
        return math.nan
    return float(abs(math.log(float(np.median(p[valid])) / float(np.median(g[valid])))))
