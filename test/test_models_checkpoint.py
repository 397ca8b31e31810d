"""Checkpoint directories: strict round trip, atomic writes, and clear refusals (truncation, shape
mismatch, missing/unexpected keys, bad config, pickle payloads that must never execute)."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from avsnet_ros.models import AVSNetConfig, RelativeDepthConfig, build_model, load_model, save_checkpoint
from avsnet_ros.models.checkpoint import CheckpointError, load_checkpoint_config


@pytest.fixture(scope="module")
def avs_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = AVSNetConfig()
    model = build_model(cfg).eval()
    model.set_spectrogram_stats([0.7, 0.8], [1.5, 1.6])
    path = tmp_path_factory.mktemp("ckpt") / "avs"
    save_checkpoint(path, model, cfg, extra={"command": "python training/train_avs.py --data X", "epoch": 3})
    return path, model, cfg


def test_round_trip_avsnet(avs_ckpt):
    path, model, cfg = avs_ckpt
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    loaded, loaded_cfg = load_model(path, "cpu")
    assert loaded_cfg == cfg
    assert not loaded.training
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(loaded.spec_std, torch.tensor([1.5, 1.6]))
    g = torch.Generator().manual_seed(1)
    rgb, spec = torch.rand(1, 3, 128, 256, generator=g), torch.rand(1, 2, 128, 256, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(loaded(rgb, spec).depth_m, model(rgb, spec).depth_m, rtol=0, atol=0)
    _, extra = load_checkpoint_config(path)
    assert extra == {"command": "python training/train_avs.py --data X", "epoch": 3}


@pytest.mark.parametrize("kind", ["depthnet", "posenet"])
def test_round_trip_relative(tmp_path, kind):
    cfg = RelativeDepthConfig(kind=kind, scales=(0, 1, 2))
    model = build_model(cfg)
    save_checkpoint(tmp_path / kind, model, cfg)
    loaded, loaded_cfg = load_model(tmp_path / kind)
    assert loaded_cfg == cfg and type(loaded) is type(model)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=0, atol=0)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_truncated_weights(avs_ckpt, tmp_path):
    path = _copy(avs_ckpt[0], tmp_path / "trunc")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(path)


def test_shape_mismatch_lists_keys(avs_ckpt, tmp_path):
    path = _copy(avs_ckpt[0], tmp_path / "shape")
    doc = json.loads((path / "config.json").read_text())
    doc["n_bins"] = 8
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="shape mismatch") as info:
        load_model(path)
    assert "visual.metric_head.seed_bin_regressor.conv2.weight" in str(info.value)


def test_missing_and_unexpected_keys(avs_ckpt, tmp_path):
    path = _copy(avs_ckpt[0], tmp_path / "keys")
    doc = json.loads((path / "config.json").read_text())
    doc["use_audio"] = False  # weights hold an audio branch the config does not build
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="unexpected keys") as info:
        load_model(path)
    assert "audio_encoder." in str(info.value)
    rgb_cfg = AVSNetConfig(use_audio=False)
    save_checkpoint(tmp_path / "rgb", build_model(rgb_cfg), rgb_cfg)
    doc = json.loads((tmp_path / "rgb" / "config.json").read_text())
    doc["use_audio"] = True
    (tmp_path / "rgb" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(tmp_path / "rgb")


def test_bad_config(avs_ckpt, tmp_path):
    path = _copy(avs_ckpt[0], tmp_path / "cfg")
    doc = json.loads((path / "config.json").read_text())
    doc["bins_typo"] = 3
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="unknown keys"):
        load_model(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")


class _Payload:
    """Unpickling this object calls open(marker, 'w'), creating the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "model.pt"
    torch.save({"state_dict": _Payload(marker)}, evil)
    assert not marker.exists()
    # sanity: a plain unpickler WOULD execute it (so the test can fail)
    probe = tmp_path / "probe.pkl"
    probe.write_bytes(pickle.dumps(_Payload(tmp_path / "probe_marker")))
    with open(probe, "rb") as fh:
        pickle.load(fh).close()
    assert (tmp_path / "probe_marker").exists()

    with pytest.raises(CheckpointError, match="refusing") as info:
        load_model(evil)
    assert "Nothing in it was executed" in str(info.value)
    assert not marker.exists()
    # a checkpoint directory that holds only a pickle file
    d = tmp_path / "dir"
    d.mkdir()
    os.replace(evil, d / "weights.pth")
    with pytest.raises(CheckpointError, match="refusing"):
        load_model(d)
    assert not marker.exists()
    # a pickle renamed to model.safetensors is not parsed as a pickle at all
    d2 = tmp_path / "dir2"
    d2.mkdir()
    torch.save({"x": _Payload(marker)}, d2 / "model.safetensors")
    (d2 / "config.json").write_text(json.dumps({"kind": "depthnet"}))
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_model(d2)
    assert not marker.exists()


def test_bare_tensor_file_is_explained(tmp_path):
    f = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, f)
    with pytest.raises(CheckpointError, match="bare torch file"):
        load_model(f)
