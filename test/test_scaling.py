"""Median and mean-std scaling: hand cases, recovery of known factors, robustness, batch independence."""
import math

import numpy as np
import pytest
import torch

from avsnet_ros.scaling import mean_std_scale, median_scale, valid_depth_mask


def test_median_hand_case():
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mp = torch.tensor([[10.0, 30.0], [20.0, 50.0]])
    # median(Mp) = (20 + 30)/2 = 25, median(R) = (2 + 3)/2 = 2.5 -> scale 10
    scaled, scale = median_scale(r, mp)
    assert scale.shape == () and float(scale) == pytest.approx(10.0)
    torch.testing.assert_close(scaled, r * 10.0)


def test_mean_std_hand_case():
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    mp = torch.tensor([[2.0, 4.0, 9.0]], dtype=torch.float64)
    # mean R 2, var R 2/3; mean Mp 5, var Mp (9 + 1 + 16)/3 = 26/3 -> a = sqrt(13), b = 5 - 2 sqrt(13)
    scaled, (a, b) = mean_std_scale(r, mp)
    assert float(a) == pytest.approx(math.sqrt(13.0))
    assert float(b) == pytest.approx(5.0 - 2.0 * math.sqrt(13.0))
    torch.testing.assert_close(scaled, a * r + b)
    # the scaled map has Mp's mean and std
    assert float(scaled.mean()) == pytest.approx(5.0)
    assert float(scaled.std(unbiased=False)) == pytest.approx(math.sqrt(26.0 / 3.0))


def test_recovers_known_factors_batched():
    g = torch.Generator().manual_seed(0)
    r = 0.5 + torch.rand(3, 1, 16, 20, generator=g)
    factors = torch.tensor([2.0, 5.0, 0.25])
    mp = r * factors.view(-1, 1, 1, 1)
    scaled, scale = median_scale(r, mp)
    assert scale.shape == (3,)
    torch.testing.assert_close(scale, factors)
    torch.testing.assert_close(scaled, mp)
    a_true, b_true = torch.tensor([3.0, 0.5, 1.5]), torch.tensor([0.2, 4.0, -0.3])
    mp = r * a_true.view(-1, 1, 1, 1) + b_true.view(-1, 1, 1, 1)
    scaled, (a, b) = mean_std_scale(r, mp)
    torch.testing.assert_close(a, a_true, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b, b_true, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scaled, mp, rtol=1e-5, atol=1e-5)


def test_nan_inf_zeros_are_ignored():
    g = torch.Generator().manual_seed(1)
    r = 0.5 + torch.rand(2, 1, 12, 12, generator=g)
    mp = 3.0 * r
    r_bad, mp_bad = r.clone(), mp.clone()
    r_bad[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), 0.0, -1.0])
    mp_bad[0, 0, 1, :4] = torch.tensor([float("nan"), float("-inf"), 0.0, 1e9])
    mp_bad[0, 0, 1, 3] = float("inf")  # an infinite reference pixel
    _, scale = median_scale(r_bad, mp_bad)
    torch.testing.assert_close(scale, torch.tensor([3.0, 3.0]))
    scaled, (a, b) = mean_std_scale(r_bad, mp_bad)
    torch.testing.assert_close(a, torch.tensor([3.0, 3.0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b, torch.tensor([0.0, 0.0]), rtol=1e-5, atol=1e-5)
    # invalid relative pixels stay invalid instead of becoming b
    assert math.isnan(float(scaled[0, 0, 0, 0])) and float(scaled[0, 0, 0, 2]) == 0.0
    assert torch.isfinite(scaled[1]).all()


def test_valid_mask_excludes_outliers():
    r = torch.ones(1, 1, 4, 4)
    mp = torch.full((1, 1, 4, 4), 2.0)
    mp[0, 0, 0, :3] = 1000.0  # would move the mean; masked out
    valid = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    valid[0, 0, 0, :3] = False
    r[0, 0, 1, 1] = 2.0  # give R some spread for mean-std
    mp[0, 0, 1, 1] = 4.0
    _, scale = median_scale(r, mp, valid=valid)
    assert float(scale[0]) == pytest.approx(2.0)
    _, (a, b) = mean_std_scale(r, mp, valid=valid)
    assert float(a[0]) == pytest.approx(2.0, rel=1e-5) and float(b[0]) == pytest.approx(0.0, abs=1e-5)
    _, (a_all, _) = mean_std_scale(r, mp)
    assert float(a_all[0]) > 10.0  # without the mask the outliers dominate


def test_batch_items_are_independent():
    g = torch.Generator().manual_seed(2)
    r = 0.1 + torch.rand(4, 1, 10, 10, generator=g)
    mp = 0.1 + 5 * torch.rand(4, 1, 10, 10, generator=g)
    _, s_batch = median_scale(r, mp)
    _, (a_batch, b_batch) = mean_std_scale(r, mp)
    for i in range(4):
        _, s_i = median_scale(r[i, 0], mp[i, 0])
        _, (a_i, b_i) = mean_std_scale(r[i, 0], mp[i, 0])
        assert float(s_batch[i]) == pytest.approx(float(s_i), rel=1e-6)
        assert float(a_batch[i]) == pytest.approx(float(a_i), rel=1e-5)
        assert float(b_batch[i]) == pytest.approx(float(b_i), rel=1e-5, abs=1e-6)
        # numpy's median on the same pixels (independent implementation)
        ref = np.median(mp[i].numpy()) / np.median(r[i].numpy())
        assert float(s_batch[i]) == pytest.approx(ref, rel=1e-6)
    # changing item 1 leaves the others' factors unchanged
    mp2 = mp.clone()
    mp2[1] *= 7.0
    _, s2 = median_scale(r, mp2)
    torch.testing.assert_close(s2[[0, 2, 3]], s_batch[[0, 2, 3]])
    assert float(s2[1]) == pytest.approx(7.0 * float(s_batch[1]), rel=1e-5)


def test_empty_mask_and_constant_relative_give_nan():
    r = torch.ones(2, 1, 3, 3)
    mp = torch.full((2, 1, 3, 3), 2.0)
    mp[0] = 0.0  # no valid reference pixel in image 0
    scaled, scale = median_scale(r, mp)
    assert math.isnan(float(scale[0])) and float(scale[1]) == pytest.approx(2.0)
    assert torch.isnan(scaled[0]).all()
    _, (a, b) = mean_std_scale(r, mp)  # image 1: R is constant, no std ratio exists
    assert math.isnan(float(a[1])) and math.isnan(float(a[0]))


def test_numpy_in_numpy_out_and_mask_helper():
    r = np.array([[1.0, 2.0], [3.0, 4.0]])
    scaled, scale = median_scale(r, 2 * r)
    assert isinstance(scaled, np.ndarray) and float(scale) == pytest.approx(2.0)
    d = torch.tensor([0.0, -1.0, float("nan"), float("inf"), 0.05, 0.5, 31.0])
    assert valid_depth_mask(d, 0.1, 30.0).tolist() == [False, False, False, False, False, True, False]
    assert valid_depth_mask(d.numpy()).tolist() == [False, False, False, False, True, True, True]
    with pytest.raises(ValueError):
        median_scale(torch.ones(2, 2), torch.ones(3, 3))


@pytest.mark.parametrize("n_valid", [1, 2, 7, 8, 1001])
def test_median_by_selection_equals_numpy_median(n_valid):
    """The eager path selects the median (kthvalue); numpy's interpolated median is the reference,
    for odd and even counts, with NaN/0/inf and masked-out pixels around the valid ones."""
    gen = np.random.default_rng(n_valid)
    r = gen.uniform(0.5, 5.0, size=(2, 1, 40, 50)).astype(np.float32)
    m = gen.uniform(1.0, 20.0, size=r.shape).astype(np.float32)
    valid = np.zeros(r.shape, bool)
    for b in range(2):
        valid.reshape(2, -1)[b, gen.choice(2000, n_valid + b, replace=False)] = True
    r[~valid & (gen.random(r.shape) < 0.3)] = np.nan
    m[~valid & (gen.random(r.shape) < 0.3)] = 0.0
    _, scale = median_scale(torch.from_numpy(r), torch.from_numpy(m), torch.from_numpy(valid))
    for b in range(2):
        v = valid[b]
        expected = np.median(m[b][v].astype(np.float64)) / np.median(r[b][v].astype(np.float64))
        assert float(scale[b]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("case", ["inside", "outside", "at_bounds"])
def test_output_depth_equals_resize_then_mask(case):
    """resize_masked_depth / scaled_output_depth (the pipeline's output maps) against the plain
    reference: bilinear resize (torch, float64), then NaN outside [min, max]; the mask is skipped only when
    the model-resolution depth is strictly inside, which must not change the result. Within float32
    rounding (resize_bilinear: ~1e-5 of the neighbour difference); NaN exactly where the reference is
    NaN, except for pixels within that rounding of a bound (at_bounds: exactly max_depth_m)."""
    from avsnet_ros.scaling import resize_masked_depth, scaled_output_depth

    gen = torch.Generator().manual_seed(3)
    lo, hi = 0.1, 30.0
    rel = torch.rand(2, 1, 12, 20, generator=gen) + 0.5
    scale = torch.tensor([2.0, 7.0])
    if case == "outside":
        rel[0, 0, 3, 4], rel[1, 0, 5, 6], rel[1, 0, 0, 0] = 100.0, float("nan"), 0.0
    if case == "at_bounds":
        rel[:, :, :6] = hi / scale.view(2, 1, 1, 1)  # exactly max_depth_m after scaling
    depth = rel * scale.view(2, 1, 1, 1)

    def reference(x):
        up = torch.nn.functional.interpolate(x.double(), size=(45, 80), mode="bilinear", align_corners=False)
        return up.numpy(), np.where((up >= lo) & (up <= hi), up, np.nan)

    def check(got, up, expected, spread):
        near_bound = (np.abs(up - hi) <= 1e-5 * hi) | (np.abs(up - lo) <= 1e-5 * lo)
        np.testing.assert_array_equal(np.isnan(got)[~near_bound], np.isnan(expected)[~near_bound])
        both = np.isfinite(got) & np.isfinite(expected)
        assert np.all(np.abs(got - expected)[both] <= 2e-5 * spread + 1e-6 * np.abs(expected[both]))

    up, expected = reference(depth)
    spread = float(np.nanmax(depth.numpy()) - np.nanmin(depth.numpy()))
    check(resize_masked_depth(depth, (45, 80), lo, hi).numpy(), up, expected, spread)
    rel_up = torch.nn.functional.interpolate(rel, size=(45, 80), mode="bilinear", align_corners=False)
    got = scaled_output_depth(rel_up, scale, torch.zeros(2), depth, lo, hi).numpy()
    ref = rel_up.numpy() * scale.numpy().reshape(2, 1, 1, 1)  # the same resized map, scaled: exact
    np.testing.assert_array_equal(np.isnan(got), np.isnan(np.where((ref >= lo) & (ref <= hi), ref, np.nan)))
    np.testing.assert_allclose(got, np.where((ref >= lo) & (ref <= hi), ref, np.nan), rtol=1e-6, equal_nan=True)
    assert (case == "inside") == bool(np.isfinite(got).all())


@pytest.mark.parametrize("src_hw,dst_hw", [((96, 320), (720, 1280)), ((128, 256), (96, 320)), ((64, 128), (64, 128)),
                                           ((97, 331), (13, 7)), ((5, 3), (1000, 1)), ((1, 1), (4, 6))])
def test_resize_bilinear_equals_torch_interpolate(src_hw, dst_hw):
    """The CPU fast path (OpenCV per plane) against torch's bilinear, align_corners=False: upsampling,
    downsampling, mixed, identity, a 1-pixel source; batch and channels kept apart. Within float rounding of
    the interpolation weights (torch computes the source position with a float32 scale, OpenCV in double:
    ~1e-5 of the difference between neighbouring samples)."""
    import torch.nn.functional as F

    from avsnet_ros.scaling import resize_bilinear

    g = torch.Generator().manual_seed(sum(src_hw) + sum(dst_hw))
    x = torch.rand((2, 3, *src_hw), generator=g) * 10.0 + 0.5
    x[1, 2] *= 100.0  # planes of another magnitude: no cross-talk between planes
    ref = F.interpolate(x, size=dst_hw, mode="bilinear", align_corners=False)
    spread = (x.amax(dim=(2, 3)) - x.amin(dim=(2, 3)))[:, :, None, None]

    def check(got):
        assert got.shape == ref.shape and got.dtype == ref.dtype
        err = (got.double() - ref.double()).abs()
        assert bool((err <= 2e-5 * spread.double() + 1e-6 * ref.double().abs()).all()), float(err.max())

    check(resize_bilinear(x, dst_hw))
    check(resize_bilinear(x.transpose(2, 3).contiguous().transpose(2, 3), dst_hw))  # non-contiguous planes
    ref64 = F.interpolate(x.double(), size=dst_hw, mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_bilinear(x.double(), dst_hw), ref64, rtol=0, atol=0)  # float64: torch itself


@pytest.mark.parametrize("shift", [0.0, 0.35])
def test_rescale_depth_in_place_equals_the_formula(shift):
    """rescale_depth(inplace=True) (the node's scale filter on its own result) writes into the array and
    gives the new array's values bit for bit; both equal the definition (float64) to float32 rounding."""
    from avsnet_ros.scaling import rescale_depth

    rng = np.random.default_rng(5)
    depth = rng.uniform(0.5, 9.0, (72, 128)).astype(np.float32)
    depth[3, :7] = np.nan
    fresh = rescale_depth(depth, shift, 1.7, 2.3)
    reference = (depth.astype(np.float64) - shift) * 2.3 / 1.7 + shift
    np.testing.assert_allclose(fresh, reference, rtol=2e-7 * 4, equal_nan=True)
    for arr in (depth.copy(), torch.from_numpy(depth.copy())):
        out = rescale_depth(arr, shift, 1.7, 2.3, inplace=True)
        assert out is arr
        np.testing.assert_array_equal(np.asarray(out), fresh)
    with pytest.raises(ValueError):
        rescale_depth(depth.copy(), shift, 0.0, 2.3, inplace=True)
