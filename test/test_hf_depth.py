"""transformers depth models as the relative / zero-shot model (avsnet_ros/models/hf_depth.py).

Tiny random-initialised Depth Anything (Dinov2 backbone), DPT (BEiT backbone) and ZoeDepth configs
(test/hf_tiny.py, no weights) are saved with save_pretrained and loaded back by path, offline,
then run through the pipeline and training/evaluate.py. References: transformers' own PIL image
processor (resize + normalise), hand-computed alignments from the pipeline's returned factors,
numpy metrics recomputed from the saved predictions.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_tiny import TINY_KINDS, save_tiny

REPO = Path(__file__).resolve().parents[1]
AVS_HW = (64, 128)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    out = {kind: save_tiny(kind, root / kind, seed=i) for i, kind in enumerate(TINY_KINDS)}
    out["depth_anything_metric"] = save_tiny("depth_anything", root / "da_metric", metric=True)
    # as train_relative.py --transformers-model writes it (training/hf_relative.py): depth up to scale
    from training.hf_relative import build_transformers_depthnet

    net = build_transformers_depthnet(out["depth_anything"], AVS_HW, 0.1, 100.0)
    out["da_selfsup"] = net.save_folder(root / "da_selfsup")
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from avsnet_ros.models import AVSNetConfig, RelativeDepthConfig, build_model, save_checkpoint

    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    paths = {}
    for key, cfg in (("avs", AVSNetConfig(preset="tiny", image_size_hw=AVS_HW)),
                     ("rgb", AVSNetConfig(preset="tiny", image_size_hw=AVS_HW, use_audio=False)),
                     ("rel", RelativeDepthConfig(preset="tiny", image_size_hw=AVS_HW))):
        model = build_model(cfg)
        if key == "avs":
            model.set_spectrogram_stats([0.03, 0.03], [0.08, 0.08])
        save_checkpoint(root / key, model, cfg)
        paths[key] = root / key
    return paths


def _inputs(seed=0, hw=(90, 160), batch=2):
    from avsnet_ros.audio import echo_window_samples

    rng = np.random.default_rng(seed)
    rgb = [(rng.random((*hw, 3)) * 255).astype(np.uint8) for _ in range(batch)]
    n = echo_window_samples(30.0, 44100) + 2000
    echo = [(rng.normal(0, 0.05, (2, n))).astype(np.float32) for _ in range(batch)]
    return rgb, echo


# ----------------------------------------------------------------------------- loading
def test_kind_and_output_type_come_from_config_json(folders, checkpoints):
    from avsnet_ros.models.hf_depth import TransformersDepthModel, load_relative_model, relative_checkpoint_kind
    from avsnet_ros.models.relative import DepthNet

    assert relative_checkpoint_kind(checkpoints["rel"]) == "avsnet_ros"
    model, out = load_relative_model(checkpoints["rel"])
    assert isinstance(model, DepthNet) and out == "depth"
    expected = {"depth_anything": "disparity", "dpt": "disparity", "zoedepth": "metric",
                "depth_anything_metric": "metric", "da_selfsup": "depth"}
    for key, output_type in expected.items():
        assert relative_checkpoint_kind(folders[key]) == "transformers"
        model, out = load_relative_model(folders[key])
        assert isinstance(model, TransformersDepthModel) and out == output_type == model.output_type
        assert not model.training
        assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_loading_never_touches_the_network(folders, monkeypatch):
    from avsnet_ros.models.hf_depth import load_relative_model

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model, out = load_relative_model(folders["dpt"])
    assert out == "disparity"


def test_missing_or_unreadable_folders_are_clear_errors(folders, tmp_path):
    from avsnet_ros.models.checkpoint import CheckpointError
    from avsnet_ros.models.hf_depth import load_relative_model

    with pytest.raises(CheckpointError, match="does not exist"):
        load_relative_model(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    (broken / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"config.json.*not readable JSON"):
        load_relative_model(broken)
    (broken / "config.json").write_text(json.dumps({"hidden_size": 3}))  # neither transformers nor ours
    with pytest.raises(CheckpointError, match="invalid model config|truncated"):
        load_relative_model(broken)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folders["dpt"] / "config.json").read_text())
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"no model.safetensors: refusing the pickle weights.*pytorch_model.bin"):
        load_relative_model(pickled)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((folders["dpt"] / "config.json").read_text())
    (truncated / "model.safetensors").write_bytes((folders["dpt"] / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot load transformers depth model"):
        load_relative_model(truncated)
    unknown = tmp_path / "unknown_type"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                                                     "num_attention_heads": 1, "intermediate_size": 8}))
    (unknown / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="output type unknown"):
        load_relative_model(unknown)


def test_processor_resize_and_normalise_match_transformers_pil_processor(folders):
    """The in-graph resize + normalisation equals transformers' DPT PIL processor on the same image
    (same network size; values up to the resampler difference torch vs PIL)."""
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    from avsnet_ros.models.hf_depth import load_relative_model

    model, _ = load_relative_model(folders["depth_anything"])
    doc = json.loads((folders["depth_anything"] / "preprocessor_config.json").read_text())
    proc = DPTImageProcessorPil(size=doc["size"], keep_aspect_ratio=doc["keep_aspect_ratio"],
                                ensure_multiple_of=doc["ensure_multiple_of"], image_mean=doc["image_mean"],
                                image_std=doc["image_std"], resample=doc["resample"])
    rng = np.random.default_rng(1)
    ys, xs = np.mgrid[0:96, 0:256]
    smooth = (127 + 100 * np.sin(ys / 9.0)[..., None] * np.cos(xs[..., None] / 13.0 + np.arange(3))).astype(np.uint8)
    img = np.clip(smooth.astype(int) + rng.integers(-5, 6, smooth.shape), 0, 255).astype(np.uint8)
    reference = proc(images=img, return_tensors="pt")["pixel_values"]
    seen = {}
    hook = model.model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0)
    finally:
        hook.remove()
    ours = seen["pixel_values"]
    assert ours.shape == reference.shape == (1, 3, 70, 168)
    assert model.input_size_for((96, 256)) == (70, 168)
    diff = (ours - reference).abs()
    assert float(diff.mean()) < 0.03 and float(diff.max()) < 0.5, (float(diff.mean()), float(diff.max()))
    assert out.shape == (1, 1, 96, 256) and out.dtype == torch.float32  # back at the input size


# ----------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("kind", TINY_KINDS + ("depth_anything_metric",))
def test_pipeline_with_each_model_shapes_units_nan_policy(kind, folders, checkpoints):
    from avsnet_ros.pipeline import DepthPipeline

    pipe = DepthPipeline.from_checkpoints(checkpoints["avs"], folders[kind], device="cpu", scaling="auto")
    disparity = kind in ("depth_anything", "dpt")
    assert pipe.relative_output == ("disparity" if disparity else "metric")
    assert pipe.scaling == ("affine" if disparity else "median")
    rgb, echo = _inputs()
    res = pipe(rgb, echo)
    assert res.depth_m.shape == (2, 90, 160) and res.depth_m.dtype == np.float32
    assert res.relative_depth.shape == (2, 90, 160) and res.scale.shape == res.shift.shape == (2,)
    d = res.depth_m
    finite = np.isfinite(d)
    assert np.all((d[finite] >= pipe.min_depth_m) & (d[finite] <= pipe.max_depth_m))
    # independent recomputation from the returned factors and relative map (metres, NaN policy)
    r = res.relative_depth.astype(np.float64)
    s, t = res.scale.astype(np.float64)[:, None, None], res.shift.astype(np.float64)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if disparity:
            inv = s * r + t
            expected = np.where(inv > 0, 1.0 / inv, np.nan)  # no depth where the aligned disparity <= 0
        else:
            assert np.all(res.shift == 0)
            expected = s * r
        expected = np.where((expected >= pipe.min_depth_m) & (expected <= pipe.max_depth_m), expected, np.nan)
    np.testing.assert_allclose(d, expected, rtol=2e-4, atol=1e-5, equal_nan=True)
    # a reused scale (the node between echoes) gives the same depth as the full call
    again = pipe.depth_from_scale(rgb[0], res.scale[0], res.shift[0])
    np.testing.assert_allclose(again, d[0], rtol=1e-4, atol=1e-5, equal_nan=True)
    # the node's scale filter: rescaling a depth map to a new factor = applying that factor afresh
    if np.isfinite(res.scale[0]) and res.scale[0] > 0:
        moved = pipe.rescale_depth(d[0], float(res.shift[0]), float(res.scale[0]), float(res.scale[0]) * 1.1)
        with np.errstate(divide="ignore", invalid="ignore"):
            fresh = 1.0 / (1.1 * s[0] * r[0] + t[0]) if disparity else 1.1 * s[0] * r[0]
        ok = np.isfinite(moved) & np.isfinite(d[0])
        np.testing.assert_allclose(moved[ok], fresh[ok], rtol=1e-3)


def test_disparity_model_refuses_median_and_depthnet_refuses_affine(folders, checkpoints):
    from avsnet_ros.pipeline import DepthPipeline

    for mode in ("median", "mean_std", "local"):  # no factor of 1 / D aligns a shifted disparity
        with pytest.raises(ValueError, match="affine"):
            DepthPipeline.from_checkpoints(checkpoints["avs"], folders["dpt"], device="cpu", scaling=mode)
    with pytest.raises(ValueError, match="aligns disparity"):
        DepthPipeline.from_checkpoints(checkpoints["avs"], checkpoints["rel"], device="cpu", scaling="affine")
    pipe = DepthPipeline.from_checkpoints(checkpoints["avs"], checkpoints["rel"], device="cpu", scaling="auto")
    assert pipe.scaling == "median" and pipe.relative_output == "depth"  # the DepthNet default is unchanged


def test_missing_transformers_folder_is_a_clear_error_in_from_checkpoints(checkpoints, tmp_path):
    from avsnet_ros.models.checkpoint import CheckpointError
    from avsnet_ros.pipeline import DepthPipeline

    with pytest.raises(CheckpointError, match=str(tmp_path / "gone")):
        DepthPipeline.from_checkpoints(checkpoints["avs"], tmp_path / "gone", device="cpu")


# ----------------------------------------------------------------------------- evaluate.py
def test_evaluate_prints_one_table2_block_per_model(folders, checkpoints, tmp_path):
    from test_evaluate import numpy_metrics
    from training.tiny_data import make_tiny_bv2

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=2, frames_per_sequence=2, size_hw=(80, 144), splits=("test",))
    out = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "training" / "evaluate.py"), "--data", str(data), "--split", "test",
           "--avs-checkpoint", str(checkpoints["avs"]), "--rgb-checkpoint", str(checkpoints["rgb"]),
           "--relative-checkpoint", str(checkpoints["rel"]), str(folders["dpt"]),
           "--relative-checkpoint", str(folders["zoedepth"]), str(folders["da_selfsup"]),
           "--out", str(out), "--save-predictions", "--panels", "1", "--no-gradcam", "--device", "cpu", "--json",
           "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    depthnet = ["relative_none", "relative_rgb_median", "relative_echo_median", "relative_echo_meanstd",
                "relative_echo_local", "relative_gt_median"]
    dpt = ["relative_dpt_none", "relative_dpt_rgb_affine", "relative_dpt_echo_affine", "relative_dpt_echo_local",
           "relative_dpt_gt_affine"]
    zoe = ["relative_zoedepth_none", "relative_zoedepth_rgb_median", "relative_zoedepth_echo_median",
           "relative_zoedepth_echo_meanstd", "relative_zoedepth_echo_local", "relative_zoedepth_gt_median"]
    with open(out / "results.csv", newline="") as fh:
        rows = {r["row"]: r for r in csv.DictReader(fh)}
    selfsup = ["relative_da_selfsup_none", "relative_da_selfsup_rgb_median", "relative_da_selfsup_echo_median",
               "relative_da_selfsup_echo_meanstd", "relative_da_selfsup_gt_median"]
    for key in ["rgb_only", "rgb_echo", *depthnet, *dpt, *zoe, *selfsup]:
        assert key in summary and key in rows, key
        if key in dpt:
            # random weights: the disparity fit may find no alignment (a <= 0) -> NaN predictions, which
            # are excluded and counted, never scored as numbers
            assert int(rows[key]["count"]) >= 1 or int(rows[key]["excluded_pred_pixels"]) > 0, rows[key]
        else:  # median scaling of a positive map always gives a depth
            assert summary[key]["count"] >= 1, key
    assert "relative_dpt_echo_meanstd" not in summary  # mean-std cannot align a disparity
    table = (out / "results.md").read_text()
    assert "dpt (dpt, zero-shot disparity)" in table and "zoedepth (zoedepth, zero-shot metric)" in table
    assert "da_selfsup (depth_anything, self-supervised)" in table
    assert "RGB-Echoes (affine)" in table and "GT affine (upper reference)" in table
    assert len(list((out / "panels").glob("test_*.png"))) == 1  # one panel with every model's echo row
    # the reported numbers are the metrics of the saved predictions (numpy recomputation)
    npz = sorted((out / "predictions" / "test").glob("*.npz"))
    assert npz
    for key in ("relative_zoedepth_echo_median", "relative_zoedepth_none", *dpt):
        per = []
        for f in npz:
            z = np.load(f)
            m = numpy_metrics(z[key], z["gt_m"], float(z["max_depth_m"]))
            if m is not None:
                per.append(m["abs_rel"])
        assert len(per) == summary[key]["count"], key
        if per:
            assert summary[key]["abs_rel"] == pytest.approx(float(np.mean(per)), rel=1e-4), key
    for f in npz:
        z = np.load(f)
        # zoedepth's "No" row is its metric output itself, in metres (its bins span 0.1..10 m)
        none = z["relative_zoedepth_none"]
        assert np.nanmin(none) >= 0.1 - 1e-4 and np.nanmax(none) <= 10.0 + 1e-4
        # the echo-aligned disparity: NaN or inside the AVS-Net depth range (REP 117)
        d = z["relative_dpt_echo_affine"]
        assert np.all(np.isnan(d) | ((d >= 0.1 - 1e-6) & (d <= 30.0 + 1e-4)))


def test_loads_and_saves_print_no_progress_bars_and_leave_them_as_they_were(folders, tmp_path, capfd):
    from transformers import AutoModelForDepthEstimation
    from transformers.utils import logging as hf_logging

    from avsnet_ros.models.hf_depth import load_relative_model
    from training.hf_relative import build_transformers_depthnet

    hf_logging.enable_progress_bar()
    capfd.readouterr()
    # the reference: transformers itself draws its bars on stderr (what a node's log would show)
    AutoModelForDepthEstimation.from_pretrained(str(folders["depth_anything"]), local_files_only=True)
    assert "Loading weights" in capfd.readouterr().err
    load_relative_model(folders["depth_anything"])
    net = build_transformers_depthnet(folders["depth_anything"], AVS_HW, 0.1, 100.0)
    net.save_folder(tmp_path / "saved")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # restored for the user's own transformers calls
    with pytest.raises(Exception):
        load_relative_model(tmp_path / "saved" / "missing")
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a user who turned them off keeps them off
    load_relative_model(folders["depth_anything"])
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
