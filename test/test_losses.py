"""Losses: SI loss against a numpy hand computation, SSIM against a scipy reference, auto-masking and
smoothness behaviour, and a few optimizer steps lowering each loss on a fixed batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from training.losses import photometric_error, self_supervised_loss, si_loss, smoothness_loss, ssim


def _si_numpy(pred, gt, valid, alpha=10.0, lam=0.85):
    g = np.log(pred[valid].astype(np.float64)) - np.log(gt[valid].astype(np.float64))
    t = g.size
    return alpha * np.sqrt((g**2).sum() / t - lam / t**2 * g.sum() ** 2)


def test_si_loss_hand_computed():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.5, 20.0, size=(2, 1, 6, 7)).astype(np.float32)
    gt = rng.uniform(0.5, 20.0, size=(2, 1, 6, 7)).astype(np.float32)
    gt[0, 0, 0, :3] = 0.0  # invalid ground truth
    gt[1, 0, 2, 2] = np.nan
    valid = rng.uniform(size=gt.shape) > 0.2
    full_valid = valid & np.isfinite(gt) & (gt > 0)
    expected = _si_numpy(pred, gt, full_valid)
    got = si_loss(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # a tiny 2-pixel case written out: g = (log 2, 0) -> sqrt(ln2^2/2 - 0.85 ln2^2/4) * 10
    small = si_loss(torch.tensor([[[[2.0, 1.0]]]]), torch.tensor([[[[1.0, 1.0]]]]))
    ln2 = np.log(2.0)
    assert float(small) == pytest.approx(10 * np.sqrt(ln2**2 / 2 - 0.85 * ln2**2 / 4), rel=1e-6)


def test_si_loss_zero_for_perfect_prediction_with_finite_gradient():
    gt = torch.rand(2, 1, 8, 8) * 10 + 0.5
    pred = gt.clone().requires_grad_(True)
    loss = si_loss(pred, gt)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    # also for a prediction that is exactly a constant multiple when lambda = 1 (pure variance term)
    pred2 = (gt * 3.0).requires_grad_(True)
    loss2 = si_loss(pred2, gt, lam=1.0)
    loss2.backward()
    assert float(loss2.detach()) == pytest.approx(0.0, abs=1e-4)
    assert torch.isfinite(pred2.grad).all()


def test_si_loss_scale_invariance_of_variance_term():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 1, 10, 10, generator=g) * 10 + 0.5
    pred = torch.rand(1, 1, 10, 10, generator=g) * 10 + 0.5
    base = float(si_loss(pred, gt, lam=1.0))
    for c in (0.1, 2.0, 7.5):
        assert float(si_loss(pred * c, gt, lam=1.0)) == pytest.approx(base, rel=1e-4)
    # with lambda = 0.85 a global scale error is penalised (that is what trains metric scale)
    assert float(si_loss(pred * 2.0, gt)) != pytest.approx(float(si_loss(pred, gt)), rel=1e-3)


def test_si_loss_ignores_invalid_pixels_and_empty_mask():
    gt = torch.rand(1, 1, 4, 4) + 1
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[..., :2, :] = True
    pred = torch.rand(1, 1, 4, 4) + 1
    a = si_loss(pred, gt, valid)
    pred2 = pred.clone()
    pred2[..., 2:, :] = 1e3
    assert float(si_loss(pred2, gt, valid)) == pytest.approx(float(a))
    empty = si_loss(pred.requires_grad_(True), gt, torch.zeros_like(valid))
    assert float(empty.detach()) == 0.0
    empty.backward()


def _ssim_numpy(x, y):
    c1, c2 = 0.01**2, 0.03**2
    f = lambda a: uniform_filter(a, size=3, mode="mirror")  # noqa: E731 (mirror = torch reflect pad)
    mx, my = f(x), f(y)
    sx = f(x * x) - mx * mx
    sy = f(y * y) - my * my
    sxy = f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sx + sy + c2))
    return np.clip((1 - s) / 2, 0, 1)


def test_ssim_matches_scipy_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(9, 11))
    y = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0, 1)
    got = ssim(torch.tensor(x)[None, None], torch.tensor(y)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, _ssim_numpy(x, y), rtol=1e-6, atol=1e-9)
    img = torch.rand(1, 3, 8, 8)
    assert float(ssim(img, img).abs().max()) < 1e-6
    assert float(photometric_error(img, img).abs().max()) < 1e-6
    other = torch.rand(1, 3, 8, 8)
    pe = photometric_error(img, other)
    assert pe.shape == (1, 1, 8, 8)
    a, b = img[0].double().numpy(), other[0].double().numpy()
    ref = 0.85 * np.mean([_ssim_numpy(a[c], b[c]) for c in range(3)], axis=0) + 0.15 * np.abs(a - b).mean(0)
    np.testing.assert_allclose(pe[0, 0].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_smoothness_edge_aware():
    disp_const = torch.full((1, 1, 8, 8), 0.3)
    img = torch.rand(1, 3, 8, 8)
    assert float(smoothness_loss(disp_const, img)) == pytest.approx(0.0, abs=1e-6)
    img_edge = torch.zeros(1, 3, 8, 8)
    img_edge[..., 4:] = 1.0
    disp = torch.full((1, 1, 8, 8), 0.2)
    disp[..., 4:] = 0.6
    aligned = float(smoothness_loss(disp, img_edge))
    misaligned = float(smoothness_loss(disp, torch.zeros(1, 3, 8, 8)))
    assert aligned < misaligned
    # mean-normalised: scaling the disparity changes nothing
    assert float(smoothness_loss(disp * 5, img_edge)) == pytest.approx(aligned, rel=1e-5)


def _shifted_triple(h=64, w=128, shift=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    big = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h + 8, w + 16, generator=g), 3, 1, 1)
    target = big[..., 4 : 4 + h, 8 : 8 + w]
    prev = big[..., 4 : 4 + h, 8 - shift : 8 - shift + w]
    nxt = big[..., 4 : 4 + h, 8 + shift : 8 + shift + w]
    K = torch.tensor([[[40.0, 0, w / 2], [0, 40.0, h / 2], [0, 0, 1]]])
    return target.contiguous(), prev.contiguous(), nxt.contiguous(), K


def test_automask_masks_static_frames():
    target, _, _, K = _shifted_triple()
    disps = {0: torch.full((1, 1, 64, 128), 0.5)}
    out = self_supervised_loss(target, [target.clone(), target.clone()], disps, [torch.eye(4)[None]] * 2, K)
    assert out.automask_fraction == 0.0
    assert float(out.photometric) == pytest.approx(0.0, abs=1e-6)


def test_correct_depth_and_pose_give_low_photometric_loss():
    # Translation t_x of the camera with a plane at depth z shifts by f t_x / z = 2 px.
    target, prev, nxt, K = _shifted_triple()
    z = 5.0
    disp_sigmoid = (1 / z - 1 / 100.0) / (1 / 0.1 - 1 / 100.0)  # disp_to_depth inverse
    disps = {0: torch.full((1, 1, 64, 128), disp_sigmoid), 1: torch.full((1, 1, 32, 64), disp_sigmoid)}
    t = 2 * z / 40.0
    # prev(u) = target(u - 2): target pixel u is seen at u + 2 in prev -> +t_x; next: -t_x
    T_prev = torch.eye(4)[None].clone()
    T_prev[0, 0, 3] = t
    T_next = torch.eye(4)[None].clone()
    T_next[0, 0, 3] = -t
    good = self_supervised_loss(target, [prev, nxt], disps, [T_prev, T_next], K, automask=False)
    bad = self_supervised_loss(target, [prev, nxt], disps, [T_next, T_prev], K, automask=False)
    assert float(good.photometric) < 0.3 * float(bad.photometric)
    assert sorted(good.per_scale) == [0, 1]


def test_optimizer_steps_lower_si_loss():
    from avsnet_ros.models import AVSNetConfig, build_model

    torch.manual_seed(0)
    model = build_model(AVSNetConfig())
    model.train()
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 64, 128, generator=g)
    spec = torch.rand(2, 2, 64, 128, generator=g) * 10
    gt = 2.0 + 6.0 * torch.rand(2, 1, 64, 128, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = si_loss(model(rgb, spec).depth_m, gt)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_optimizer_steps_lower_self_supervised_loss():
    from avsnet_ros.models import RelativeDepthConfig, build_model

    torch.manual_seed(0)
    depthnet = build_model(RelativeDepthConfig(scales=(0, 1, 2)))
    posenet = build_model(RelativeDepthConfig(kind="posenet"))
    target, prev, nxt, K = _shifted_triple()
    params = list(depthnet.parameters()) + list(posenet.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        disps = depthnet(target)
        Ts = [posenet.target_to_source(target, prev, -1), posenet.target_to_source(target, nxt, 1)]
        out = self_supervised_loss(target, [prev, nxt], disps, Ts, K)
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
