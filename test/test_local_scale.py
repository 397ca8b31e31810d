"""Local scale (avsnet_ros.scaling.local_scale): a relative depth with a known local error is fixed by the
local fit and not by the global median; fallback to the global fit; disparity kind; reuse of a fit."""
import math

import numpy as np
import pytest
import torch

from avsnet_ros.scaling import apply_local_scale, local_scale, median_scale

H, W = 96, 128  # grid (6, 8) -> 16 x 16 px cells
SCALE = 2.7  # metres per relative unit
# the wrongly scaled region covers cells rows 2-3, columns 3-5 (pixels 32:64, 48:96); between the
# centres of those cells (rows 40:56, columns 56:88) the bilinear field is exactly the cells' values
REGION = (slice(32, 64), slice(48, 96))
INTERIOR = (slice(40, 56), slice(56, 88))


def _gt(seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)
    return 1.0 + 3.0 * smooth.clamp(0, 1)  # 1-4 relative units


def _case(seed=0, noise=0.03):
    gt_rel = _gt(seed)
    relative = gt_rel.clone()
    relative[..., REGION[0], REGION[1]] *= 1.6  # the relative model got this region 1.6x too far
    g = torch.Generator().manual_seed(seed + 100)
    reference = gt_rel * SCALE * (1.0 + noise * torch.randn(gt_rel.shape, generator=g, dtype=torch.float64))
    return gt_rel * SCALE, relative, reference


def _abs_rel(pred, gt, sl=(slice(None), slice(None))):
    p, t = pred[..., sl[0], sl[1]], gt[..., sl[0], sl[1]]
    return float(((p - t).abs() / t).mean())


def test_local_fixes_a_wrongly_scaled_region_global_cannot():
    target, relative, reference = _case()
    local, fit = local_scale(relative, reference)
    glob, scale = median_scale(relative, reference)
    # inside the region: the local map is within 3 % (5 % noise-free shrinkage towards the global fit
    # leaves 0.05/1.05 * log 1.6 = 2.2 % at most), the global median stays ~60 % off
    assert _abs_rel(local, target, INTERIOR) < 0.03
    assert _abs_rel(glob, target, INTERIOR) > 0.5
    # elsewhere (one cell away from the region) both are right, the local one within 3 %
    outside = torch.ones(H, W, dtype=torch.bool)
    outside[16:80, 32:112] = False
    err_local = ((local - target).abs() / target)[..., outside].mean()
    assert float(err_local) < 0.03
    # over the whole image the local map is much better
    assert _abs_rel(local, target) < 0.5 * _abs_rel(glob, target)
    # the fit exposes its grid: region cells ~ SCALE / 1.6, others ~ SCALE; global = median_scale's factor
    assert fit.scale_grid.shape == (1, 6, 8)
    assert float(fit.global_scale[0]) == pytest.approx(float(scale[0]), rel=1e-9)
    assert float(fit.scale_grid[0, 2, 4]) == pytest.approx(SCALE / 1.6, rel=0.04)
    assert float(fit.scale_grid[0, 0, 0]) == pytest.approx(SCALE, rel=0.04)


def test_unreliable_cells_fall_back_to_global_and_infinite_prior_is_median():
    target, relative, reference = _case(seed=1)
    valid = torch.ones_like(reference, dtype=torch.bool)
    valid[..., REGION[0], REGION[1]] = False  # the echo model is unreliable exactly there
    local, fit = local_scale(relative, reference, valid=valid)
    glob, scale = median_scale(relative, reference, valid=valid)
    torch.testing.assert_close(local[..., INTERIOR[0], INTERIOR[1]], glob[..., INTERIOR[0], INTERIOR[1]])
    assert float(fit.cell_weight[0, 2, 4]) == 0.0 and float(fit.cell_weight[0, 0, 0]) > 0.9
    # prior_weight = inf: every cell is the global fit = median scaling
    local_inf, _ = local_scale(relative, reference, prior_weight=math.inf)
    glob_all, _ = median_scale(relative, reference)
    torch.testing.assert_close(local_inf, glob_all)


def test_batched_numpy_and_reuse():
    t0, r0, m0 = _case(seed=2)
    t1, r1, m1 = _case(seed=3)
    r = torch.cat([r0, r1 * 0.5])  # the second image in other relative units
    m = torch.cat([m0, m1])
    batched, fit = local_scale(r, m)
    single1, _ = local_scale(r1[0, 0] * 0.5, m1[0, 0])
    torch.testing.assert_close(batched[1, 0], single1)
    assert fit.scale_grid.shape == (2, 6, 8)
    # numpy in -> numpy out, same numbers
    out_np, _ = local_scale(r0[0, 0].numpy(), m0[0, 0].numpy())
    assert isinstance(out_np, np.ndarray)
    np.testing.assert_allclose(out_np, batched[0, 0].numpy(), rtol=1e-12)
    # reusing the fit on the same relative map gives the same depth, at another resolution a smooth one
    torch.testing.assert_close(apply_local_scale(r, fit), batched)
    big = apply_local_scale(torch.nn.functional.interpolate(r, scale_factor=2, mode="bilinear"), fit)
    assert big.shape == (2, 1, 2 * H, 2 * W) and torch.isfinite(big).all()
    # an image without any valid reference pixel: NaN, never a made-up number
    out, fit0 = local_scale(r0[0, 0], torch.zeros(H, W, dtype=torch.float64))
    assert torch.isnan(out).all() and torch.isnan(fit0.global_scale)


def test_disparity_kind_fixes_a_local_affine_error():
    target, _, reference = _case(seed=4)
    # an affine-invariant disparity: 1/depth = a D + b with (a, b) wrong in the region
    a_true, b_true = 0.8, 0.05
    disp = (1.0 / target - b_true) / a_true
    disp_bad = disp.clone()
    disp_bad[..., REGION[0], REGION[1]] = disp[..., REGION[0], REGION[1]] * 1.5 + 0.02
    local, fit = local_scale(disp_bad, reference, kind="disparity")
    glob_only, _ = local_scale(disp_bad, reference, kind="disparity", prior_weight=1e9)
    assert _abs_rel(local, target, INTERIOR) < 0.05
    assert _abs_rel(glob_only, target, INTERIOR) > 0.2
    assert _abs_rel(local, target) < 0.5 * _abs_rel(glob_only, target)


@pytest.mark.parametrize("kw",
                         [dict(kind="inverse"), dict(grid_hw=(0, 4)), dict(grid_hw=(200, 4)), dict(prior_weight=-1.0),
                                dict(min_valid_fraction=2.0)])
def test_bad_arguments(kw):
    _, r, m = _case()
    with pytest.raises(ValueError):
        local_scale(r, m, **kw)
