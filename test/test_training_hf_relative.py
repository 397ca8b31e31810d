"""Stage 2 with a transformers architecture (train_relative.py --transformers-model; training/hf_relative.py):
local-weight initialisation checked against the original model, a real self-supervised run from random
weights with an exact mid-epoch resume, the result loaded by the pipeline as a "depth" model, and clear
errors for model types that cannot be trained."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hf_tiny import save_tiny, tiny_config
from test_training_relative import _run

CONFIG = """
model: {kind: depthnet, preset: tiny, image_size_hw: [64, 128], min_depth: 0.1, max_depth: 100.0}
pose_model: {kind: posenet, preset: tiny, image_size_hw: [64, 128]}
optim: {lr: 0.0005}
train: {epochs: 2, batch_size: 2, val_batch_size: 3, num_workers: 0, log_every_steps: 1, keep_last: 10}
"""


@pytest.mark.parametrize("kind", ["depth_anything", "dpt"])
def test_local_weights_initialise_the_network(tmp_path, kind):
    """From a folder with weights: the trainable network is the pretrained one with its last activation
    removed (relu of the raw output == the original model's prediction), and its depth is
    Monodepth2's disp_to_depth of the sigmoid of that output."""
    from avsnet_ros.models.hf_depth import load_transformers_depth
    from training.hf_relative import build_transformers_depthnet

    folder = save_tiny(kind, tmp_path / kind, seed=3)
    original = load_transformers_depth(folder)
    net = build_transformers_depthnet(folder, (64, 128), 0.1, 100.0)
    rgb = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        raw = net.net._predict(rgb)
        reference = original(rgb)
        disp = net(rgb)[0]
        depth = net.depth(rgb)
    assert torch.allclose(torch.relu(raw), reference, atol=1e-5, rtol=1e-4)
    assert (raw < 0).any(), "the test needs negative raw outputs to show the ReLU is gone"
    assert torch.allclose(disp, torch.sigmoid(raw))
    expected = 1.0 / (1 / 100.0 + (1 / 0.1 - 1 / 100.0) * torch.sigmoid(raw))  # hand-written disp_to_depth
    assert torch.allclose(depth, expected, rtol=1e-5)
    assert depth.shape == (2, 1, 64, 128) and float(depth.min()) >= 0.1 - 1e-6 and float(depth.max()) <= 100.0


def test_unsupported_or_missing_folder_is_a_clear_error(tmp_path):
    from avsnet_ros.models.checkpoint import CheckpointError
    from training.hf_relative import build_transformers_depthnet

    zoe = save_tiny("zoedepth", tmp_path / "zoe")
    with pytest.raises(CheckpointError, match="zoedepth.*cannot be trained"):
        build_transformers_depthnet(zoe, (64, 128), 0.1, 100.0)
    with pytest.raises(CheckpointError, match="not a folder with a transformers config.json"):
        build_transformers_depthnet(tmp_path / "missing", (64, 128), 0.1, 100.0)


def test_train_relative_trains_depth_anything_from_scratch_and_resumes(tmp_path):
    from safetensors.torch import load_file

    from avsnet_ros.models.hf_depth import load_relative_model, relative_checkpoint_kind
    from avsnet_ros.pipeline import DepthPipeline
    from training.tiny_data import make_tiny_bv2

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=5, size_hw=(64, 128),
                         splits=("train", "train", "val"))
    cfg = tmp_path / "rel.yaml"
    cfg.write_text(CONFIG)
    source = tmp_path / "da_config"
    tiny_config("depth_anything").save_pretrained(str(source))  # config.json only: random weights
    assert not (source / "model.safetensors").exists()

    run_a = tmp_path / "run_a"
    a = _run("--data", str(data), "--out", str(run_a), "--config", str(cfg), "--save-every-steps", "2",
             "--transformers-model", str(source))
    assert a["global_step"] == 6 and a["final_val"]["count"] == 3 and 0 < a["final_val"]["abs_rel"] < 1.0
    best = run_a / "best" / "depthnet"
    assert relative_checkpoint_kind(best) == "transformers" and (run_a / "best" / "posenet").is_dir()
    doc = json.loads((best / "config.json").read_text())
    spec = doc["avsnet_ros_self_supervised"]
    assert {k: spec[k] for k in ("min_depth", "max_depth", "input")} == {"min_depth": 0.1, "max_depth": 100.0,
                                                                        "input": "rgb"}
    assert 0 < spec["output_scale"] <= 1.0 and np.isfinite(spec["output_shift"])  # calibrated on the first frames
    assert "train_relative.py" in doc["avsnet_ros_training"]["training_command"]

    # Trained: the weights moved away from the seeded random start.
    first = load_file(str(run_a / "checkpoints" / "e0000_s000000002" / "depthnet" / "model.safetensors"))
    last = load_file(str(run_a / "checkpoints" / "e0002_s000000006" / "depthnet" / "model.safetensors"))
    assert set(first) == set(last) and any(not torch.equal(first[k], last[k]) for k in first)

    # Exact resume from the checkpoint one batch into epoch 2, as for the DepthNet.
    run_b = tmp_path / "run_b"
    shutil.copytree(run_a, run_b)
    shutil.rmtree(run_b / "checkpoints" / "e0002_s000000006")
    (run_b / "checkpoints" / "latest.txt").write_text("e0001_s000000004\n")
    b = _run("--data", str(data), "--out", str(run_b), "--config", str(cfg), "--save-every-steps", "2",
             "--transformers-model", str(source), "--resume")
    assert b["resumed_from"].endswith("e0001_s000000004") and b["global_step"] == 6
    wb = load_file(str(run_b / "checkpoints" / "e0002_s000000006" / "depthnet" / "model.safetensors"))
    assert all(torch.equal(last[k], wb[k]) for k in last)
    assert b["final_val"] == a["final_val"]

    # The pipeline loads it as a depth-up-to-scale model (median scaling), metric output in metres.
    model, output_type = load_relative_model(best)
    assert output_type == "depth" and model.depth_range == (0.1, 100.0)
    from ros_support import make_tiny_checkpoints

    pipe = DepthPipeline.from_checkpoints(make_tiny_checkpoints(tmp_path / "ck")["avs"], best, device="cpu")
    assert pipe.relative_output == "depth" and pipe.scaling == "median"
    rgb = np.random.default_rng(0).integers(0, 255, (72, 128, 3), dtype=np.uint8)
    echo = np.random.default_rng(1).normal(0, 0.05, (2, 20000)).astype(np.float32)
    out = pipe(rgb, echo)
    depth = np.asarray(out.depth_m)[0]
    assert depth.shape == (72, 128) and np.isfinite(depth).all() and (depth > 0).all()


def test_train_relative_refuses_a_type_it_cannot_train(tmp_path):
    from training.tiny_data import make_tiny_bv2

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=4, size_hw=(64, 128),
                         splits=("train", "train", "val"))
    cfg = tmp_path / "rel.yaml"
    cfg.write_text(CONFIG)
    zoe = save_tiny("zoedepth", tmp_path / "zoe")
    proc = _run("--data", str(data), "--out", str(tmp_path / "run"), "--config", str(cfg),
                "--transformers-model", str(zoe), ok=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "zoedepth" in proc.stderr and "cannot be trained" in proc.stderr and "Traceback" not in proc.stderr


def test_luminance_input_is_saved_and_sees_no_colour(tmp_path):
    """model.input luminance: two images with equal BT.601 luminance but other colours give the same depth, after
    a save/load round trip too; the rgb model with the same weights tells them apart."""
    from avsnet_ros.models.hf_depth import load_transformers_depth
    from training.hf_relative import build_transformers_depthnet

    folder = save_tiny("depth_anything", tmp_path / "src", seed=1)
    lum = build_transformers_depthnet(folder, (64, 128), 0.1, 100.0, input_mode="luminance").eval()
    rgb_net = build_transformers_depthnet(folder, (64, 128), 0.1, 100.0).eval()
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 64, 128, generator=g) * 0.5 + 0.25
    y = 0.299 * a[:, 0] + 0.587 * a[:, 1] + 0.114 * a[:, 2]
    b = a.clone()  # shift red against green so that Y stays: 0.299 dR + 0.587 dG = 0
    b[:, 0] += 0.1
    b[:, 1] -= 0.1 * 0.299 / 0.587
    assert torch.allclose(0.299 * b[:, 0] + 0.587 * b[:, 1] + 0.114 * b[:, 2], y, atol=1e-6)
    loaded = load_transformers_depth(lum.save_folder(tmp_path / "lum"))
    assert loaded.input_mode == "luminance"
    with torch.no_grad():  # the raw head outputs (a random head saturates the sigmoid)
        for model in (lum.net._predict, loaded._predict):
            assert torch.allclose(model(a), model(b), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(rgb_net.net._predict(a), rgb_net.net._predict(b), rtol=1e-4, atol=1e-5)


def test_pretrained_head_is_calibrated_into_the_sigmoid(tmp_path):
    """The head's output is mapped to mean -3 / spread <= 1 before the sigmoid (a head with a wide spread saturates
    it: every pixel at min or max depth, no gradient); a ~0 output is only shifted; order kept; train_relative saves
    (a, b)."""
    from avsnet_ros.models.hf_depth import load_transformers_depth
    from training.hf_relative import CALIBRATED_LOGIT_MEAN, build_transformers_depthnet
    from training.tiny_data import make_tiny_bv2

    folder = save_tiny("depth_anything", tmp_path / "src", seed=2)
    net = build_transformers_depthnet(folder, (64, 128), 0.1, 100.0).eval()
    rgb = torch.rand(4, 3, 64, 128, generator=torch.Generator().manual_seed(5))
    # a head with a pretrained-like spread of values (the random tiny head's spread is ~1e-5: Depth Anything's
    # head gain scales it up to std >> 1)
    net.net.model.head.max_depth = 1e8
    with torch.no_grad():
        raw = net.net._predict(rgb)
        before = net(rgb)[0]
        a, b = net.calibrate_output(rgb)
        logits = raw * a + b
        after = net(rgb)[0]
    def dead(disp):  # fraction of pixels where the sigmoid's slope is ~0 (no gradient reaches the head)
        return float((disp * (1 - disp) < 0.01).float().mean())

    assert float(raw.std()) > 1.0 and dead(before) > 0.5
    assert float(logits.mean()) == pytest.approx(CALIBRATED_LOGIT_MEAN, abs=1e-3)
    assert float(logits.std()) == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(after, torch.sigmoid(logits)) and a > 0 and dead(after) < 0.2

    # a head whose outputs are ~0 (a random start): never amplified, only moved to the calibrated level
    net.net.model.head.max_depth = 1e-6  # Depth Anything's head gain
    with torch.no_grad():
        raw = net.net._predict(rgb)
        a, b = net.calibrate_output(rgb)
    assert float(raw.std()) < 1e-4 and a == 1.0
    assert float((raw * a + b).mean()) == pytest.approx(CALIBRATED_LOGIT_MEAN, abs=1e-4)

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=4, size_hw=(64, 128),
                         splits=("train", "train", "val"))
    cfg = tmp_path / "rel.yaml"
    cfg.write_text(CONFIG.replace("epochs: 2", "epochs: 1"))
    run = tmp_path / "run"
    _run("--data", str(data), "--out", str(run), "--config", str(cfg), "--transformers-model", str(folder))
    saved = json.loads((run / "best" / "depthnet" / "config.json").read_text())["avsnet_ros_self_supervised"]
    assert saved["output_shift"] != 0.0
    assert load_transformers_depth(run / "best" / "depthnet").output_affine == (saved["output_scale"],
                                                                               saved["output_shift"])
