"""Depth metrics on hand-computed cases (the expected numbers are worked out by hand in the comments)."""
import math

import numpy as np
import pytest
import torch

from avsnet_ros.metrics import METRIC_KEYS, DepthMetricAccumulator, compute_depth_metrics

# gt 0 is invalid; valid pairs (pred, gt): (1.1, 1), (1.5, 2), (5, 4)
GT = np.array([[1.0, 2.0], [4.0, 0.0]])
PRED = np.array([[1.1, 1.5], [5.0, 3.0]])
EXPECTED = {
    # |d|/g: 0.1/1, 0.5/2, 1/4 = 0.1, 0.25, 0.25 -> mean 0.6/3
    "abs_rel": 0.2,
    # d^2/g: 0.01/1, 0.25/2, 1/4 = 0.01, 0.125, 0.25 -> 0.385/3
    "sq_rel": 0.12833333333333333,
    # sqrt((0.01 + 0.25 + 1)/3) = sqrt(0.42)
    "rmse": 0.6480740698407860,
    # ln 1.1 = 0.0953102, ln 0.75 = -0.2876821, ln 1.25 = 0.2231436;
    # squares 0.0090840, 0.0827610, 0.0497930 -> sqrt(0.1416380/3) = sqrt(0.0472127)
    "rmse_log": 0.21728476,
    # max ratios 1.1, 1.3333, 1.25: only 1.1 < 1.25 (1.25 is not strictly below) -> 1/3
    "delta1": 1.0 / 3.0,
    # all < 1.5625
    "delta2": 1.0,
    "delta3": 1.0,
}


def test_metric_keys_in_paper_order():
    assert METRIC_KEYS == ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")


@pytest.mark.parametrize("as_torch", [False, True])
def test_hand_computed_image(as_torch):
    pred, gt = (PRED, GT)
    if as_torch:
        pred, gt = torch.tensor(PRED, dtype=torch.float32), torch.tensor(GT, dtype=torch.float32)
    m = compute_depth_metrics(pred, gt, max_depth_m=10.0)
    assert m["valid_pixels"] == 3
    tol = 1e-6 if as_torch else 1e-7
    for k, v in EXPECTED.items():
        assert m[k] == pytest.approx(v, abs=tol), k


def test_validity_rules():
    # gt NaN, inf, negative and above max are ignored; gt == max is valid unless strict_max
    gt = np.array([np.nan, np.inf, -1.0, 31.0, 30.0, 2.0])
    pred = np.array([5.0, 5.0, 5.0, 5.0, 15.0, 2.0])
    m = compute_depth_metrics(pred, gt, max_depth_m=30.0)
    assert m["valid_pixels"] == 2
    # (15 vs 30): |d|/g = 0.5; (2 vs 2): 0 -> 0.25
    assert m["abs_rel"] == pytest.approx(0.25)
    m = compute_depth_metrics(pred, gt, max_depth_m=30.0, strict_max=True)  # paper footnote 5
    assert m["valid_pixels"] == 1 and m["abs_rel"] == 0.0


def test_prediction_clamping():
    # pred 0 is clamped to min_depth 1e-3: |1e-3 - 1| / 1 = 0.999, and the log stays finite
    m = compute_depth_metrics(np.array([0.0]), np.array([1.0]), max_depth_m=10.0)
    assert m["abs_rel"] == pytest.approx(0.999)
    assert m["rmse_log"] == pytest.approx(-math.log(1e-3))  # |ln(1e-3) - ln 1| = 6.9078
    # pred 100 above max 10 is clamped to 10: exact for gt 10
    m = compute_depth_metrics(np.array([100.0]), np.array([10.0]), max_depth_m=10.0)
    assert m["abs_rel"] == 0.0 and m["delta1"] == 1.0


def test_no_valid_pixel_gives_nan():
    m = compute_depth_metrics(np.ones((3, 3)), np.zeros((3, 3)), max_depth_m=10.0)
    assert m["valid_pixels"] == 0
    assert all(math.isnan(m[k]) for k in METRIC_KEYS)


def test_non_finite_predictions():
    pred = np.array([np.nan, 2.0, 3.0])
    gt = np.array([1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="non-finite"):
        compute_depth_metrics(pred, gt, max_depth_m=10.0)
    m = compute_depth_metrics(pred, gt, max_depth_m=10.0, invalid_pred="exclude")
    assert m["valid_pixels"] == 2 and m["excluded_pred_pixels"] == 1
    assert m["abs_rel"] == pytest.approx((0.0 + 0.25) / 2)
    # NaN prediction where the ground truth is invalid anyway is fine
    m = compute_depth_metrics(np.array([np.nan, 2.0]), np.array([0.0, 2.0]), max_depth_m=10.0)
    assert m["valid_pixels"] == 1 and m["abs_rel"] == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        compute_depth_metrics(np.ones((2, 3)), np.ones((3, 2)), max_depth_m=10.0)


def test_accumulator_means_over_images_not_pixels():
    acc = DepthMetricAccumulator(max_depth_m=10.0)
    acc.update(PRED, GT, name="a")  # abs_rel 0.2 over 3 pixels
    # 100 pixels, every prediction twice the truth: abs_rel 1.0, rmse 2; ratio 2 > 1.25^3 = 1.953 -> deltas 0
    acc.update(np.full((10, 10), 4.0), np.full((10, 10), 2.0), name="b")
    acc.update(np.ones((2, 2)), np.zeros((2, 2)), name="empty")  # skipped
    s = acc.summary()
    assert s["count"] == 2 and s["skipped"] == 1
    assert s["abs_rel"] == pytest.approx((0.2 + 1.0) / 2)  # pixel-pooled would be (0.6 + 100) / 103
    assert s["rmse"] == pytest.approx((0.6480740698407860 + 2.0) / 2)
    # 2 is not below 1.25, 1.5625 or 1.953125
    assert s["delta1"] == pytest.approx((1 / 3 + 0.0) / 2)
    assert s["delta3"] == pytest.approx((1.0 + 0.0) / 2)
    assert [m["name"] for m in acc.per_image] == ["a", "b", "empty"]
    empty = DepthMetricAccumulator(max_depth_m=10.0).summary()
    assert empty["count"] == 0 and math.isnan(empty["abs_rel"])
