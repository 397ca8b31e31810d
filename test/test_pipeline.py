"""DepthPipeline on the real BatVision V2 fixture with tiny random checkpoints: shapes, ranges, the
scale against a numpy median, consistency with the training preprocessing, batching, scale reuse,
pseudo-metric-only mode, and clear errors for bad audio."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from avsnet_ros.audio import AudioError, read_wav
from avsnet_ros.models import AVSNetConfig, RelativeDepthConfig, build_model, save_checkpoint
from avsnet_ros.pipeline import DepthPipeline, select_device


@pytest.fixture(scope="module")
def fixture_inputs(bv2_sample_dir):
    bgr = cv2.imread(str(bv2_sample_dir / "camera_47.jpeg"), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    echo, rate = read_wav(bv2_sample_dir / "audio_47.wav")
    return rgb, echo, rate


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    torch.manual_seed(0)
    avs_cfg = AVSNetConfig()
    avs = build_model(avs_cfg)
    avs.set_spectrogram_stats([0.05, 0.05], [0.1, 0.1])
    save_checkpoint(root / "avs", avs, avs_cfg)
    rgb_cfg = AVSNetConfig(use_audio=False)
    save_checkpoint(root / "avs_rgb", build_model(rgb_cfg), rgb_cfg)
    rel_cfg = RelativeDepthConfig()
    save_checkpoint(root / "rel", build_model(rel_cfg), rel_cfg)
    return root


@pytest.fixture(scope="module")
def pipe(checkpoints):
    return DepthPipeline.from_checkpoints(checkpoints / "avs", checkpoints / "rel", device="cpu")


def test_real_fixture_gives_finite_depth_in_range(pipe, fixture_inputs):
    rgb, echo, rate = fixture_inputs
    assert rgb.shape == (720, 1280, 3)
    res = pipe(rgb, echo, sample_rate_hz=rate)
    assert res.depth_m.shape == (1, 720, 1280) and res.depth_m.dtype == np.float32
    assert res.pseudo_depth_m.shape == (1, 720, 1280) and res.relative_depth.shape == (1, 720, 1280)
    finite = np.isfinite(res.depth_m)
    assert finite.mean() > 0.5
    assert res.depth_m[finite].min() >= pipe.min_depth_m and res.depth_m[finite].max() <= pipe.max_depth_m
    assert np.isfinite(res.pseudo_depth_m).all()
    assert res.scale.shape == (1,) and np.isfinite(res.scale).all() and res.scale[0] > 0
    assert 0.0 <= res.confidence[0] <= 1.0
    assert res.shift[0] == 0.0
    small = pipe(rgb, echo, sample_rate_hz=rate, output_size_hw=(90, 160))
    assert small.depth_m.shape == (1, 90, 160)


def test_scale_and_confidence_against_numpy(pipe, fixture_inputs):
    rgb, echo, rate = fixture_inputs
    res = pipe(rgb, echo, sample_rate_hz=rate)
    batch = pipe.preprocess(rgb, echo, rate)
    with torch.no_grad():
        mp = pipe.avs_model(batch.rgb_avs, batch.spectrogram).depth_m
        rel = pipe.relative_model(batch.rgb_rel)
        mp_r = torch.nn.functional.interpolate(mp, size=rel.shape[-2:], mode="bilinear", align_corners=False)
    m, r = mp_r[0, 0].double().numpy(), rel[0, 0].double().numpy()
    valid = (m > 0.1 * 1.001) & (m < 30.0 * 0.999) & (r > 0)
    scale = np.median(m[valid]) / np.median(r[valid])
    assert res.scale[0] == pytest.approx(scale, rel=1e-5)
    resid = np.log(m[valid]) - np.log(r[valid] * scale)
    conf = valid.mean() * np.exp(-1.4826 * np.median(np.abs(resid - np.median(resid))))
    assert res.confidence[0] == pytest.approx(conf, rel=1e-3, abs=1e-4)
    # final depth = scale * R (resized) with NaN outside the range
    up = torch.nn.functional.interpolate(rel, size=(720, 1280), mode="bilinear", align_corners=False)
    up = up[0, 0].numpy() * res.scale[0]
    expected = np.where((up >= 0.1) & (up <= 30.0), up, np.nan)
    np.testing.assert_allclose(res.depth_m[0], expected, rtol=1e-5, equal_nan=True)


def test_preprocessing_matches_training_data_path(pipe, fixture_inputs):
    from avsnet_ros.data.torch_dataset import echo_spectrogram, prepare_rgb

    rgb, echo, rate = fixture_inputs
    batch = pipe.preprocess(rgb, echo, rate)
    torch.testing.assert_close(batch.rgb_avs[0], prepare_rgb(rgb, (128, 256)))
    torch.testing.assert_close(batch.rgb_rel[0], prepare_rgb(rgb, (96, 320)))
    torch.testing.assert_close(batch.spectrogram[0], echo_spectrogram(echo, (128, 256), 30.0, rate, "file"))


def test_batch_equals_single_calls(pipe, fixture_inputs):
    rgb, echo, rate = fixture_inputs
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    both = pipe([rgb, flipped], [echo, echo[::-1].copy()], sample_rate_hz=rate, output_size_hw=(72, 128))
    one = pipe(flipped, echo[::-1].copy(), sample_rate_hz=rate, output_size_hw=(72, 128))
    assert both.depth_m.shape == (2, 72, 128) and both.scale.shape == (2,)
    np.testing.assert_allclose(both.depth_m[1], one.depth_m[0], rtol=1e-5, atol=1e-5, equal_nan=True)
    assert both.scale[1] == pytest.approx(one.scale[0], rel=1e-5)


def test_scale_reuse_matches_full_call(checkpoints, pipe, fixture_inputs):
    rgb, echo, rate = fixture_inputs
    full = pipe(rgb, echo, sample_rate_hz=rate)
    est = pipe.scale_only(rgb, echo, sample_rate_hz=rate)
    assert est.scale[0] == pytest.approx(full.scale[0], rel=1e-6)
    assert est.pseudo_depth_m.shape == (1, 128, 256)
    reused = pipe.depth_from_scale(rgb, est.scale[0])
    assert reused.shape == (720, 1280)
    np.testing.assert_allclose(reused, full.depth_m[0], rtol=1e-6, equal_nan=True)
    assert pipe.relative(rgb).shape == (1, 96, 320)
    ms = DepthPipeline.from_checkpoints(checkpoints / "avs", checkpoints / "rel", device="cpu", scaling="mean_std")
    res = ms(rgb, echo, sample_rate_hz=rate)
    assert res.shift[0] != 0.0
    est = ms.scale_only(rgb, echo, sample_rate_hz=rate)
    np.testing.assert_allclose(ms.depth_from_scale(rgb, est.scale, est.shift), res.depth_m[0], rtol=1e-5, atol=1e-5,
                               equal_nan=True)


def test_pseudo_metric_only_and_rgb_only(checkpoints, fixture_inputs):
    rgb, echo, rate = fixture_inputs
    only = DepthPipeline.from_checkpoints(checkpoints / "avs", relative_checkpoint=False, device="cpu")
    assert only.pseudo_metric_only
    res = only(rgb, echo, sample_rate_hz=rate)
    assert res.relative_depth is None and res.scale[0] == 1.0
    np.testing.assert_array_equal(res.depth_m, res.pseudo_depth_m)
    with pytest.raises(RuntimeError, match="pseudo-metric-only"):
        only.depth_from_scale(rgb, 1.0)
    rgb_only = DepthPipeline.from_checkpoints(checkpoints / "avs_rgb", checkpoints / "rel", device="cpu")
    a = rgb_only(rgb, None, sample_rate_hz=rate)
    b = rgb_only(rgb, echo, sample_rate_hz=rate)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)


def test_bad_inputs_raise_clear_errors(pipe, fixture_inputs):
    rgb, echo, rate = fixture_inputs
    with pytest.raises(AudioError, match="sample rate"):
        pipe(rgb, echo, sample_rate_hz=48000)
    with pytest.raises(AudioError, match="too short"):
        pipe(rgb, echo[:, :1000], sample_rate_hz=rate)
    with pytest.raises(AudioError, match="required"):
        pipe(rgb, None, sample_rate_hz=rate)
    with pytest.raises(AudioError, match=r"\(2, N\)"):
        pipe(rgb, echo[:1], sample_rate_hz=rate)
    bad = echo.copy()
    bad[0, 5] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        pipe(rgb, bad, sample_rate_hz=rate)
    with pytest.raises(ValueError, match="2 images but 1 echo"):
        pipe([rgb, rgb], [echo], sample_rate_hz=rate)
    with pytest.raises(ValueError, match="uint8"):
        pipe(rgb.astype(np.float32), echo, sample_rate_hz=rate)
    with pytest.raises(ValueError, match="same size"):
        pipe([rgb, rgb[:100]], [echo, echo], sample_rate_hz=rate)


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")
    with pytest.raises(ValueError):
        select_device("tpu")


def test_depth_only_gives_the_same_depth_without_the_extra_maps(checkpoints, pipe, fixture_inputs):
    """depth_only (the depth node's call) returns the full call's depth, scale, shift and confidence
    bit for bit, at the default and a custom output size, and no pseudo-metric/relative maps."""
    rgb, echo, rate = fixture_inputs
    only = DepthPipeline.from_checkpoints(checkpoints / "avs", relative_checkpoint=False, device="cpu")
    for p in (pipe, only):
        for size in (None, (240, 320)):
            full = p(rgb, echo, sample_rate_hz=rate, output_size_hw=size)
            lean = p(rgb, echo, sample_rate_hz=rate, output_size_hw=size, depth_only=True)
            assert lean.pseudo_depth_m is None and lean.relative_depth is None
            assert lean.depth_m.shape == full.depth_m.shape == (1,) + (size or rgb.shape[:2])
            assert lean.depth_m.flags.c_contiguous and lean.depth_m.dtype == np.float32
            np.testing.assert_array_equal(lean.depth_m, full.depth_m)
            for key in ("scale", "shift", "confidence"):
                np.testing.assert_array_equal(getattr(lean, key), getattr(full, key))


def test_staged_batch_matches_training_path_per_image_and_is_not_overwritten(pipe, fixture_inputs):
    """The frame path writes every image and echo of a batch into one buffer: each slot equals the
    training preprocessing of its own image, and a later call does not overwrite an earlier batch."""
    from avsnet_ros.preprocessing import echo_spectrogram, prepare_rgb

    rgb, echo, rate = fixture_inputs
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    swapped = echo[::-1].copy()
    batch = pipe.preprocess([rgb, flipped], [echo, swapped], rate)
    kept = [t.clone() for t in (batch.rgb_avs, batch.rgb_rel, batch.spectrogram)]
    for i, (im, e) in enumerate(((rgb, echo), (flipped, swapped))):
        torch.testing.assert_close(batch.rgb_avs[i], prepare_rgb(im, (128, 256)), rtol=0, atol=0)
        torch.testing.assert_close(batch.rgb_rel[i], prepare_rgb(im, (96, 320)), rtol=0, atol=0)
        torch.testing.assert_close(batch.spectrogram[i], echo_spectrogram(e, (128, 256), 30.0, rate, "file"))
    pipe.preprocess([flipped, rgb], [swapped, echo], rate)  # a second call with other content
    for before, now in zip(kept, (batch.rgb_avs, batch.rgb_rel, batch.spectrogram)):
        torch.testing.assert_close(now, before, rtol=0, atol=0)


def test_local_scaling_through_the_pipeline_and_its_reuse(checkpoints, fixture_inputs):
    """scaling "local": the published depth is scaling.local_scale of the model-resolution maps (R and Mp
    resized to R's grid, Mp unsaturated), bilinearly resized and range-masked; its reported scale is the
    global median factor; depth_from_scale with the result's fit reproduces it, and a doubled scale
    doubles the depth (a filtered scale moves the whole field)."""
    import torch.nn.functional as F

    from avsnet_ros.scaling import local_scale

    rgb, echo, rate = fixture_inputs
    loc = DepthPipeline.from_checkpoints(checkpoints / "avs", checkpoints / "rel", device="cpu", scaling="local")
    med = DepthPipeline.from_checkpoints(checkpoints / "avs", checkpoints / "rel", device="cpu", scaling="median")
    res = loc(rgb, echo, sample_rate_hz=rate)
    assert res.local_fit is not None and res.depth_m.shape == (1, 720, 1280)
    assert res.scale[0] == pytest.approx(med(rgb, echo, sample_rate_hz=rate).scale[0], rel=1e-5)
    # independent reference from the models' raw outputs
    batch = loc.preprocess(rgb, echo, rate)
    with torch.inference_mode():
        pseudo, rel = loc._forward(batch)
        ref = F.interpolate(pseudo.float(), size=rel.shape[-2:], mode="bilinear", align_corners=False)
        valid = (ref > loc.min_depth_m) & (ref < loc.max_depth_m) & torch.isfinite(rel) & (rel > 0)
        expected, _ = local_scale(rel.float(), ref, valid)
        expected = F.interpolate(expected, size=(720, 1280), mode="bilinear", align_corners=False)[0, 0].numpy()
    expected = np.where((expected >= loc.min_depth_m) & (expected <= loc.max_depth_m), expected, np.nan)
    np.testing.assert_allclose(res.depth_m[0], expected, rtol=1e-4, atol=1e-4, equal_nan=True)
    reused = loc.depth_from_scale(rgb, res.scale[0], local_fit=res.local_fit)
    np.testing.assert_allclose(reused, res.depth_m[0], rtol=1e-4, atol=1e-4, equal_nan=True)
    doubled = loc.depth_from_scale(rgb, 2 * res.scale[0], local_fit=res.local_fit)
    both = np.isfinite(doubled) & np.isfinite(reused)
    assert both.mean() > 0.3
    np.testing.assert_allclose(doubled[both], 2 * reused[both], rtol=1e-4)


def test_attached_spectrogram_gives_the_same_depth_and_follows_its_echo(pipe, fixture_inputs):
    """prepare_echo(spectrogram=True) (the depth node's echo thread) computes the model's input spectrogram
    once; calls given that result use it: the training data path's spectrogram (an independent
    implementation) and the same depth bit for bit as the call that computes it per frame. A copy of the
    result with another echo (dataclasses.replace shares the cache) does not take the old one."""
    import dataclasses

    from avsnet_ros.data.torch_dataset import echo_spectrogram

    rgb, echo, rate = fixture_inputs
    plain = pipe.prepare_echo(echo, None, rate)
    ready = pipe.prepare_echo(echo, None, rate, spectrogram=True)
    assert not plain.derived and len(ready.derived) == 1
    spec = pipe._attached_spectrogram(ready)
    assert spec.shape == (2, 128, 256) and not spec.requires_grad
    torch.testing.assert_close(spec, echo_spectrogram(ready.echo, (128, 256), 30.0, rate, "file"))
    a, b = pipe(rgb, plain, sample_rate_hz=rate), pipe(rgb, ready, sample_rate_hz=rate)
    for name in ("depth_m", "pseudo_depth_m", "relative_depth", "scale", "confidence"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # batches: every echo attached -> stacked; one missing -> all computed on the frame path, same numbers
    two = pipe([rgb, rgb], [ready, ready], sample_rate_hz=rate, output_size_hw=(72, 128))
    mixed = pipe([rgb, rgb], [ready, plain], sample_rate_hz=rate, output_size_hw=(72, 128))
    np.testing.assert_array_equal(two.depth_m, mixed.depth_m)
    # another echo in a copy of the result: its own spectrogram, not the cached one
    other = dataclasses.replace(ready, echo=np.ascontiguousarray(ready.echo[::-1]))
    assert other.derived is ready.derived and pipe._attached_spectrogram(other) is None
    got = pipe.preprocess(rgb, other, rate).spectrogram[0]
    torch.testing.assert_close(got, echo_spectrogram(other.echo, (128, 256), 30.0, rate, "file"))
    assert not torch.equal(got, spec)
