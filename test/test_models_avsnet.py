"""AVS-Net (stage 1): shapes and ranges, gradients through the echo branch and the cross attention,
the RGB-only baseline ignoring echoes, configs, and loading local pretrained weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avsnet_ros.models import AVSNet, AVSNetConfig, asdict, build_model, config_from_dict
from avsnet_ros.models.config import replace

H, W = 128, 256


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    audio = build_model(AVSNetConfig())
    torch.manual_seed(0)
    rgb_only = build_model(AVSNetConfig(use_audio=False))
    return audio.eval(), rgb_only.eval()


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(b, 3, H, W, generator=g)
    spec = torch.rand(b, 2, H, W, generator=g) * 20.0
    return rgb, spec


def test_output_shapes_and_ranges(models):
    model, _ = models
    cfg = model.config
    rgb, spec = _inputs()
    with torch.no_grad():
        out = model(rgb, spec)
    assert out.depth_m.shape == (2, 1, H, W)
    assert out.relative_depth.shape == (2, 1, H, W)
    assert out.bin_centers_m.shape[:2] == (2, cfg.n_bins)
    assert torch.isfinite(out.depth_m).all()
    assert float(out.depth_m.min()) >= cfg.min_depth_m and float(out.depth_m.max()) <= cfg.max_depth_m
    assert float(out.bin_centers_m.min()) >= cfg.min_depth_m - 1e-5
    assert float(out.bin_centers_m.max()) <= cfg.max_depth_m + 1e-5
    assert float(out.relative_depth.min()) >= 0.0
    # queries: bottleneck tokens (1/32 of the input); keys: audio tokens (1/32 of the spectrogram)
    q = (H // 32) * (W // 32)
    assert out.attention.shape == (2, cfg.attention_heads, q, q)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, cfg.attention_heads, q))


def test_gradients_reach_audio_branch_and_attention(models):
    from training.losses import si_loss

    model, _ = models
    model.train()
    model.zero_grad()
    rgb, spec = _inputs()
    out = model(rgb, spec)
    out.attention.retain_grad()
    gt = torch.full_like(out.depth_m, 3.0)
    si_loss(out.depth_m, gt).backward()
    model.eval()
    assert out.attention.grad is not None and float(out.attention.grad.abs().sum()) > 0
    stem = model.audio_encoder.resnet.embedder.embedder.convolution.weight.grad
    assert stem is not None and float(stem.abs().sum()) > 0
    attn = model.visual.metric_head.fusion
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        grad = getattr(attn, name).weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_audio_changes_output(models):
    model, _ = models
    rgb, spec = _inputs(b=1)
    other = torch.rand(1, 2, H, W, generator=torch.Generator().manual_seed(5)) * 20.0
    with torch.no_grad():
        a = model(rgb, spec).depth_m
        b = model(rgb, other).depth_m
    assert float((a - b).abs().max()) > 1e-4


def test_rgb_only_ignores_echo(models):
    audio, model = models
    rgb, spec = _inputs(b=1)
    other = torch.rand(1, 2, H, W, generator=torch.Generator().manual_seed(5)) * 20.0
    with torch.no_grad():
        a = model(rgb, spec)
        b = model(rgb, other)
        c = model(rgb, None)
    assert a.attention is None
    torch.testing.assert_close(a.depth_m, b.depth_m, rtol=0, atol=0)
    torch.testing.assert_close(a.depth_m, c.depth_m, rtol=0, atol=0)
    # same code path: the baseline's tensors are the echo model's minus the audio branch and fusion
    keys_audio = set(audio.state_dict())
    keys_rgb = set(model.state_dict())
    assert keys_rgb < keys_audio
    assert all(k.startswith(("audio_encoder.", "visual.metric_head.fusion.")) for k in keys_audio - keys_rgb)


def test_echo_model_requires_spectrogram(models):
    model, _ = models
    with pytest.raises(ValueError, match="spectrogram"):
        model(torch.rand(1, 3, H, W), None)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 100, 256), torch.rand(1, 2, 100, 256))


def test_spectrogram_normalisation_log1p_and_stats(models):
    model, _ = models
    spec = torch.rand(1, 2, 4, 5) * 50
    model.set_spectrogram_stats([1.5, 2.0], [0.5, 4.0])
    try:
        got = model.normalise_spectrogram(spec).numpy()
        x = np.log1p(spec.numpy().astype(np.float64))
        ref = np.stack([(x[0, 0] - 1.5) / 0.5, (x[0, 1] - 2.0) / 4.0])[None]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError):
            model.set_spectrogram_stats([0.0, 0.0], [1.0, 0.0])
    finally:
        model.set_spectrogram_stats([0.0, 0.0], [1.0, 1.0])


def test_config_presets_and_validation():
    tiny = AVSNetConfig()
    assert tiny.image_size_hw == (128, 256) and tiny.n_bins == 16
    paper = AVSNetConfig(preset="paper")
    # ZoeDepth-N's published architecture and a ResNet-18 for the echoes
    assert paper.image_size_hw == (256, 512)
    assert paper.neck_hidden_sizes == (256, 512, 1024, 1024) and paper.backbone_layers == 24
    assert paper.n_bins == 64 and paper.bin_centers_type == "softplus"
    assert paper.audio_hidden_sizes == (64, 128, 256, 512) and paper.audio_depths == (2, 2, 2, 2)
    assert config_from_dict(asdict(paper)) == paper
    assert config_from_dict(asdict(tiny)) == tiny
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_dict({**asdict(tiny), "n_binz": 3})
    with pytest.raises(ValueError, match="multiples of 32"):
        AVSNetConfig(image_size_hw=(100, 256))
    with pytest.raises(ValueError, match="preset"):
        AVSNetConfig(preset="huge")
    assert replace(tiny, use_audio=False).use_audio is False


def test_paper_audio_branch_is_resnet18():
    from avsnet_ros.models.avsnet import AudioEncoder

    enc = AudioEncoder(AVSNetConfig(preset="paper"))
    n = sum(p.numel() for p in enc.resnet.parameters())
    # torchvision's resnet18 without its fc layer has 11,176,512 parameters; 2 input channels
    # instead of 3 remove 64 * 7 * 7 stem weights.
    assert n == 11_176_512 - 64 * 7 * 7


def test_visual_weights_from_local_folder(tmp_path):
    """The paper path: ZoeDepth weights from a local folder (from_pretrained, no download)."""
    from transformers import ZoeDepthForDepthEstimation

    from avsnet_ros.models.avsnet import zoedepth_config

    cfg = AVSNetConfig(use_audio=False)
    torch.manual_seed(1)
    stock = ZoeDepthForDepthEstimation(zoedepth_config(cfg))
    stock.save_pretrained(tmp_path / "zoe")
    torch.manual_seed(2)
    model = AVSNet(replace(cfg, visual_pretrained_path=str(tmp_path / "zoe")))
    ref = stock.state_dict()
    for key, value in model.visual.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        AVSNet(replace(cfg, visual_pretrained_path=str(tmp_path / "missing")))


def test_audio_weights_from_local_rgb_resnet(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    cfg = AVSNetConfig()
    rgb_resnet = ResNetModel(
        ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[2, 2, 2, 2],
                     layer_type="basic")
    )
    rgb_resnet.save_pretrained(tmp_path / "resnet")
    model = AVSNet(replace(cfg, audio_pretrained_path=str(tmp_path / "resnet")))
    got = model.audio_encoder.resnet.state_dict()
    src = rgb_resnet.state_dict()
    stem = "embedder.embedder.convolution.weight"
    assert got[stem].shape[1] == 2
    # stem: colour average spread over 2 channels (same response to a uniform input)
    torch.testing.assert_close(got[stem].sum(1), src[stem].sum(1))
    torch.testing.assert_close(got["encoder.stages.3.layers.1.layer.1.convolution.weight"],
                               src["encoder.stages.3.layers.1.layer.1.convolution.weight"])


def test_cross_attention_matches_torch_multihead_attention():
    """Eq. 1-2 against torch's own nn.MultiheadAttention with the same projections."""
    from avsnet_ros.models.avsnet import CrossModalAttention

    torch.manual_seed(3)
    c, ca, heads = 16, 24, 4
    ours = CrossModalAttention(c, ca, heads).eval()
    ref = torch.nn.MultiheadAttention(c, heads, kdim=ca, vdim=ca, batch_first=True).eval()
    with torch.no_grad():
        ref.q_proj_weight.copy_(ours.q_proj.weight)
        ref.k_proj_weight.copy_(ours.k_proj.weight)
        ref.v_proj_weight.copy_(ours.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    fv = torch.randn(2, c, 3, 5)
    fa = torch.randn(2, 7, ca)
    with torch.no_grad():
        fused, weights = ours(fv, fa)
        q = fv.flatten(2).transpose(1, 2)
        att, ref_w = ref(q, fa, fa, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(weights, ref_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused, (att + q).transpose(1, 2).reshape(2, c, 3, 5), rtol=1e-5, atol=1e-5)


def test_every_trainable_parameter_gets_a_gradient():
    """DDP without find_unused_parameters needs every trainable parameter in the graph."""
    from training.losses import si_loss

    for use_audio in (True, False):
        model = build_model(AVSNetConfig(use_audio=use_audio)).train()
        out = model(torch.rand(2, 3, 64, 128), torch.rand(2, 2, 64, 128))
        si_loss(out.depth_m, torch.rand_like(out.depth_m) + 1).backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert unused == [], unused


def test_training_backward_after_inference_mode_pipeline_at_same_size():
    """transformers' BEiT caches its relative-position index process-wide; an index first made
    under torch.inference_mode (DepthPipeline) used to break every later backward at that size
    ("Inference tensors cannot be saved for backward"). Sizes unique to this test, so the pipeline
    call is the first one at its size in the process."""
    from transformers.models.beit.modeling_beit import BeitRelativePositionBias

    from avsnet_ros.pipeline import DepthPipeline
    from training.losses import si_loss

    size_pipe, size_stock = (96, 160), (160, 96)
    torch.manual_seed(0)
    model = build_model(AVSNetConfig(image_size_hw=size_pipe))
    pipe = DepthPipeline(model, None, device="cpu")
    rng = np.random.default_rng(0)
    rgb = (rng.random((*size_pipe, 3)) * 255).astype(np.uint8)
    echo = (rng.standard_normal((2, pipe.min_echo_samples())) * 0.1).astype(np.float32)
    res = pipe(rgb, echo)
    assert np.isfinite(res.pseudo_depth_m).all()

    # Another user of BEiT in the process poisons transformers' cache for a second size.
    window = (size_stock[0] // 16, size_stock[1] // 16)
    with torch.inference_mode():
        stock_index = BeitRelativePositionBias.generate_relative_position_index(window)
    assert stock_index.is_inference()  # the cache entry is an inference tensor

    model.train()
    for size in (size_pipe, size_stock):
        model.zero_grad()
        out = model(torch.rand(1, 3, *size), torch.rand(1, 2, *size))
        si_loss(out.depth_m, torch.full_like(out.depth_m, 3.0)).backward()
        grad = model.visual.backbone.beit.layers[0].relative_position_bias.relative_position_bias_table.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the index the model uses is transformers' (same values), as a normal tensor
    from avsnet_ros.models.avsnet import _autograd_safe_position_index

    ours = _autograd_safe_position_index(window)
    assert not ours.is_inference()
    torch.testing.assert_close(ours, stock_index.clone())
