"""Oracle tests of the inverse-depth scale-and-shift alignment (scaling.disparity_affine_scale).

A stand-in zero-shot model returns D = a * (1 / GT) + b (random a > 0, b of either sign), the
pseudo-metric reference is GT * s with multiplicative noise and a share of gross outliers; the
aligned depth must match s * GT, which is known without the code under test.
"""
import numpy as np
import pytest
import torch

from avsnet_ros.scaling import disparity_affine_scale, disparity_to_depth, median_scale


def _scene(rng, batch=3, h=48, w=64):
    """Smooth random scenes (B, 1, H, W) in metres: a floor ramp, a wall and a few boxes, 0.5..12 m."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    scenes = []
    for _ in range(batch):
        far = rng.uniform(6.0, 12.0)
        depth = far - (far - 0.8) * (ys / (h - 1)) ** 1.5  # nearer towards the bottom
        for _ in range(3):
            y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
            depth[y0:y0 + 10, x0:x0 + 12] = rng.uniform(0.6, 4.0)
        scenes.append(depth)
    return np.stack(scenes)[:, None]


def _median_rel_err(pred, target):
    ok = np.isfinite(pred)
    return float(np.median(np.abs(pred[ok] - target[ok]) / target[ok])), float(ok.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affine_fit_recovers_scaled_ground_truth_and_median_does_not(seed):
    rng = np.random.default_rng(seed)
    gt = _scene(rng)
    bsz = gt.shape[0]
    a = rng.uniform(0.5, 5.0, size=(bsz, 1, 1, 1))
    disp_range = (1.0 / gt).reshape(bsz, -1)
    # shift of 30..80 % of the mean scaled disparity, either sign (MiDaS-like outputs have both)
    b = rng.choice([-1.0, 1.0], size=(bsz, 1, 1, 1)) * rng.uniform(0.3, 0.8, size=(bsz, 1, 1, 1)) \
        * a * disp_range.mean(1).reshape(bsz, 1, 1, 1)
    disp = a / gt + b
    s = rng.uniform(0.5, 3.0, size=(bsz, 1, 1, 1))
    reference = gt * s * np.exp(rng.normal(0.0, 0.05, size=gt.shape))  # 5 % log-normal noise
    outliers = rng.random(gt.shape) < 0.08  # AVS-Net blobs: 8 % of pixels off by x0.3..x3
    reference[outliers] *= rng.uniform(0.3, 3.0, size=int(outliers.sum()))
    target = gt * s

    depth, (fa, fb) = disparity_affine_scale(torch.from_numpy(disp), torch.from_numpy(reference))
    depth = depth.numpy()
    err, finite = _median_rel_err(depth, target)
    print(f"seed {seed}: affine median rel err {err:.5f}")
    assert err < 0.01, err
    # pixels with D <= 0 (negative shift at far pixels) still get their depth: 1/depth = fa D + fb
    assert finite == 1.0
    # the factors are the closed-form inverse of the stand-in: 1/(s GT) = (D - b) / (a s)
    np.testing.assert_allclose(fa.numpy(), 1.0 / (a * s).ravel(), rtol=0.03)
    np.testing.assert_allclose(fb.numpy(), (-b / (a * s)).ravel(), rtol=0.1, atol=0.02 * np.abs(fb.numpy()).max())

    # Why the shift matters: the median ratio on 1/D (the best a scale-only fit can do) is far off,
    # because 1/D = GT / (a + b GT) is not proportional to GT when b != 0.
    pos = disp > 0
    depth_rel = np.where(pos, 1.0 / np.where(pos, disp, 1.0), 0.0)
    med, _ = median_scale(depth_rel, reference, valid=pos)
    med_err, _ = _median_rel_err(np.where(pos, med, np.nan), target)
    print(f"seed {seed}: median-ratio median rel err {med_err:.4f}")
    assert med_err > 0.05, med_err


def test_exact_data_is_recovered_to_float_precision_and_numpy_lstsq_agrees():
    rng = np.random.default_rng(7)
    gt = _scene(rng, batch=2)
    disp = 2.0 / gt - 0.05
    ref = gt * 1.7
    depth, (fa, fb) = disparity_affine_scale(disp, ref)  # numpy in -> numpy out
    assert isinstance(depth, np.ndarray)
    np.testing.assert_allclose(depth, ref, rtol=1e-6)
    for i in range(2):  # independent reference: ordinary least squares in inverse depth
        A = np.stack([disp[i].ravel(), np.ones(disp[i].size)], 1)
        sol, *_ = np.linalg.lstsq(A, 1.0 / ref[i].ravel(), rcond=None)
        np.testing.assert_allclose([fa[i], fb[i]], sol, rtol=1e-6, atol=1e-9)


def test_nan_policy_nonpositive_inverse_depth_and_empty_images():
    d = torch.tensor([[[[0.5, 1.0], [2.0, float("nan")]]]], dtype=torch.float32)
    out = disparity_to_depth(d, torch.tensor([2.0]), torch.tensor([-1.5]))
    # 2*0.5-1.5 < 0 -> NaN; 2*1-1.5 = 0.5 -> 2 m; 2*2-1.5 = 2.5 -> 0.4 m; NaN D -> NaN
    assert torch.isnan(out[0, 0, 0, 0]) and torch.isnan(out[0, 0, 1, 1])
    torch.testing.assert_close(out[0, 0, 0, 1], torch.tensor(2.0))
    torch.testing.assert_close(out[0, 0, 1, 0], torch.tensor(0.4))
    # no valid reference pixel -> NaN factors, all-NaN depth; anti-correlated fit (a < 0) -> NaN too
    depth, (a, b) = disparity_affine_scale(torch.rand(1, 1, 8, 8) + 0.1, torch.zeros(1, 1, 8, 8))
    assert torch.isnan(a).all() and torch.isnan(depth).all()
    x = torch.linspace(0.2, 1.0, 64).view(1, 1, 8, 8)
    depth, (a, _) = disparity_affine_scale(x, x * 3.0)  # 1/Mp falls as D rises
    assert torch.isnan(a).all() and torch.isnan(depth).all()


def test_valid_mask_and_single_image_shapes():
    rng = np.random.default_rng(3)
    gt = _scene(rng, batch=1)[0, 0]
    disp = torch.from_numpy(1.0 / gt).float()
    ref = torch.from_numpy(gt * 2.0).float()
    bad = torch.zeros_like(ref, dtype=torch.bool)
    bad[:10] = True
    ref_corrupt = torch.where(bad, ref * 10.0, ref)
    depth, (a, b) = disparity_affine_scale(disp, ref_corrupt, valid=~bad)
    assert depth.shape == disp.shape and a.dim() == 0 and b.dim() == 0
    torch.testing.assert_close(depth, ref, rtol=1e-4, atol=1e-4)


def test_rescale_disparity_depth_matches_a_fresh_application():
    rng = np.random.default_rng(5)
    d = torch.from_numpy(rng.uniform(-0.1, 2.0, size=(1, 1, 6, 7)))
    a0, a1, b = 0.4, 0.55, 0.05
    before = disparity_to_depth(d, torch.tensor([a0], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    expected = disparity_to_depth(d, torch.tensor([a1], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    from avsnet_ros.scaling import rescale_disparity_depth

    got = rescale_disparity_depth(before.numpy(), b, a0, a1)
    finite = np.isfinite(before.numpy())
    np.testing.assert_allclose(got[finite], expected.numpy()[finite], rtol=1e-9)


def test_resolve_scaling_by_output_type():
    from avsnet_ros.scaling import SCALING_MODES, resolve_scaling, scale_relative

    assert resolve_scaling("auto", "disparity") == "affine"
    assert resolve_scaling("auto", "depth") == resolve_scaling("auto", "metric") == "median"
    for mode in ("median", "mean_std", "local"):
        assert resolve_scaling(mode, "depth") == resolve_scaling(mode, "metric") == mode
        with pytest.raises(ValueError, match="affine"):
            resolve_scaling(mode, "disparity")
    for output in ("depth", "metric"):
        with pytest.raises(ValueError, match="aligns disparity"):
            resolve_scaling("affine", output)
        assert resolve_scaling("none", output) == "none"
    assert resolve_scaling("none", "disparity") == "none" and resolve_scaling("affine", "disparity") == "affine"
    with pytest.raises(ValueError, match="scaling must be one of"):
        resolve_scaling("mean", "depth")
    assert set(SCALING_MODES) == {"auto", "median", "mean_std", "local", "affine", "none"}
    with pytest.raises(ValueError, match="resolve 'auto'"):
        scale_relative(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), 0.1, 10.0, "auto")
