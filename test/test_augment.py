"""Colour jitter (avsnet_ros.data.augment): HSV against colorsys, the other steps by hand, the datasets'
draws (own stream, one draw per triple, originals kept for the loss) and stage 2's use of them."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from avsnet_ros.data.augment import ColourJitter, draw_colour_jitter, hsv_to_rgb, jitter_colour, rgb_to_hsv


def _pixels(n: int = 400, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = rng.random((3, 1, n)).astype(np.float32)
    x[:, 0, :8] = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5],
                            [1, 1, 0], [0.2, 0.7, 0.7]], np.float32).T  # greys, primaries, ties
    return torch.from_numpy(x)


def test_hsv_matches_colorsys_both_ways():
    x = _pixels()
    hsv = rgb_to_hsv(x)
    ref = np.array([colorsys.rgb_to_hsv(*map(float, x[:, 0, i])) for i in range(x.shape[-1])]).T
    np.testing.assert_allclose(hsv[:, 0].numpy(), ref, atol=1e-5)
    back = np.array([colorsys.hsv_to_rgb(*map(float, ref[:, i])) for i in range(ref.shape[1])]).T
    np.testing.assert_allclose(hsv_to_rgb(hsv)[:, 0].numpy(), back, atol=1e-5)
    np.testing.assert_allclose(hsv_to_rgb(hsv).numpy(), x.numpy(), atol=1e-5)


def test_hue_shift_matches_colorsys():
    x = _pixels(seed=1)
    y = jitter_colour(x, ColourJitter(hue_turns=0.07))
    ref = []
    for i in range(x.shape[-1]):
        h, s, v = colorsys.rgb_to_hsv(*map(float, x[:, 0, i]))
        ref.append(colorsys.hsv_to_rgb((h + 0.07) % 1.0, s, v))
    np.testing.assert_allclose(y[:, 0].numpy(), np.array(ref).T, atol=1e-5)


def test_brightness_contrast_saturation_by_hand():
    x = _pixels(seed=2)
    r, g, b = x.numpy()
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    np.testing.assert_allclose(jitter_colour(x, ColourJitter(brightness=1.5)).numpy(), np.clip(1.5 * x.numpy(), 0, 1),
                               atol=1e-6)
    # contrast 0: every pixel at the mean grey; saturation 0: each pixel at its own grey
    np.testing.assert_allclose(jitter_colour(x, ColourJitter(contrast=0.0)).numpy(),
                               np.full_like(x.numpy(), gray.mean()), atol=1e-6)
    np.testing.assert_allclose(jitter_colour(x, ColourJitter(saturation=0.0)).numpy(), np.stack([gray] * 3), atol=1e-6)
    c = 0.8
    np.testing.assert_allclose(jitter_colour(x, ColourJitter(contrast=c)).numpy(),
                               np.clip(c * x.numpy() + (1 - c) * gray.mean(), 0, 1), atol=1e-6)
    assert torch.equal(jitter_colour(x, ColourJitter()), x)  # the neutral draw changes nothing
    # a batch: the contrast mean is per image
    batch = torch.stack([x, x * 0.5])
    out = jitter_colour(batch, ColourJitter(contrast=0.0))
    assert out[0].mean() == pytest.approx(gray.mean(), abs=1e-6) and out[1].mean() == pytest.approx(0.5 * gray.mean(),
                                                                                                    abs=1e-6)


def test_draws_stay_in_monodepth2_ranges():
    rng = np.random.default_rng(0)
    draws = [draw_colour_jitter(rng) for _ in range(500)]
    for name, lo, hi in (("brightness", 0.8, 1.2), ("contrast", 0.8, 1.2), ("saturation", 0.8, 1.2),
                         ("hue_turns", -0.1, 0.1)):
        v = np.array([getattr(d, name) for d in draws])
        assert v.min() >= lo and v.max() <= hi and v.max() - v.min() > 0.8 * (hi - lo), name


@pytest.fixture(scope="module")
def triplets(tmp_path_factory):
    from avsnet_ros.data.batvision import BV2Dataset, TripletDataset
    from training.tiny_data import make_tiny_bv2

    root = make_tiny_bv2(tmp_path_factory.mktemp("tiny"), n_sequences=2, frames_per_sequence=6, size_hw=(32, 64),
                         splits=("train", "train"))
    return TripletDataset(BV2Dataset(root, "train"), 1)


def test_triplet_dataset_jitters_the_inputs_only(triplets):
    from avsnet_ros.data.torch_dataset import TorchTripletDataset

    plain = TorchTripletDataset(triplets, (32, 64), hflip_prob=0.5, seed=4)
    jittered = TorchTripletDataset(triplets, (32, 64), hflip_prob=0.5, seed=4, colour_jitter_prob=0.5)
    n_jittered = 0
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        jittered.set_epoch(epoch)
        for i in range(len(triplets)):
            a, b = plain[i], jittered[i]
            assert "rgb_aug" not in a
            assert bool(a["flipped"]) == bool(b["flipped"])  # the flips do not move when the jitter is on
            for key in ("rgb_prev", "rgb", "rgb_next"):
                assert torch.equal(a[key], b[key])  # the loss's frames are the originals
            draw = jittered.colour_decision(i)
            if draw is None:
                assert all(torch.equal(b[k], b[k + "_aug"]) for k in ("rgb_prev", "rgb", "rgb_next"))
                continue
            n_jittered += 1
            for key in ("rgb_prev", "rgb", "rgb_next"):  # one draw for the three frames
                assert not torch.equal(b[key], b[key + "_aug"])
                torch.testing.assert_close(b[key + "_aug"], jitter_colour(b[key], draw))
            assert jittered.colour_decision(i) == draw  # reproducible
    assert 0 < n_jittered < 2 * len(triplets)


def test_stage2_feeds_the_networks_the_jittered_frames_and_the_loss_the_originals():
    from avsnet_ros.models import RelativeDepthConfig, build_model
    from training.relative_task import RelativeTrainModule

    torch.manual_seed(0)
    depthnet = build_model(RelativeDepthConfig(preset="tiny", image_size_hw=(64, 128)))
    module = RelativeTrainModule(depthnet, None, ssim_weight=0.85, smoothness_weight=1e-3, automask=True)
    rgb = torch.rand(2, 3, 3, 64, 128)
    aug = jitter_colour(rgb, ColourJitter(1.1, 0.9, 0.8, 0.05))
    t = torch.eye(4).repeat(2, 1, 1)
    t[:, 0, 3] = 0.1
    k = torch.tensor([[64.0, 0, 64], [0, 64, 32], [0, 0, 1]]).repeat(2, 1, 1)
    common = {"K": k, "has_pose": torch.tensor([True, True]), "T_prev": t, "T_next": t.inverse()}
    originals = {"rgb_prev": rgb[:, 0], "rgb": rgb[:, 1], "rgb_next": rgb[:, 2], **common}
    with_aug = {**originals, "rgb_prev_aug": aug[:, 0], "rgb_aug": aug[:, 1], "rgb_next_aug": aug[:, 2]}
    depthnet.eval()  # no batch-norm statistics updates between the calls
    with torch.no_grad():
        loss_aug = module.loss(with_aug).loss
        # reference: the network fed the jittered target by hand, the loss on the original frames
        inner = depthnet.forward
        depthnet.forward = lambda x: inner(aug[:, 1])
        try:
            loss_ref = module.loss(originals).loss
        finally:
            depthnet.forward = inner
        loss_plain = module.loss(originals).loss
        all_jittered = {**originals, "rgb_prev": aug[:, 0], "rgb": aug[:, 1], "rgb_next": aug[:, 2]}
        loss_all_jittered = module.loss(all_jittered).loss
    assert float(loss_aug) == pytest.approx(float(loss_ref), rel=1e-6)
    assert float(loss_aug) != pytest.approx(float(loss_plain), rel=1e-4)
    assert float(loss_aug) != pytest.approx(float(loss_all_jittered), rel=1e-4)
