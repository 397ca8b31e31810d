"""Training CLIs and their building blocks: --help, strict typed configs and precedence, data order,
RNG state round trips, atomic checkpoint files."""
from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.config_io import ConfigError, load_config, parse_set_overrides  # noqa: E402
from training.configs import AVSTrainConfig, RelativeTrainConfig  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize("script, flags", [
    ("train_avs.py", ["--data", "--out", "--no-audio", "--resume", "--save-every-steps", "--device", "--json"]),
    ("train_relative.py", ["--data", "--out", "--resume", "--interval", "--json"]),
    ("evaluate.py", ["--data", "--split", "--avs-checkpoint", "--rgb-checkpoint", "--relative-checkpoint",
                     "--zero-shot-data", "--max-depth-m", "--bag", "--json"]),
])
def test_cli_help(script, flags):
    proc = _run(str(REPO / "training" / script), "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in flags:
        assert flag in proc.stdout, flag


@pytest.mark.parametrize("name, cls", [("train_avs.yaml", AVSTrainConfig), ("train_avs_paper.yaml", AVSTrainConfig),
                                       ("train_relative.yaml", RelativeTrainConfig),
                                       ("train_relative_paper.yaml", RelativeTrainConfig)])
def test_shipped_configs_load_strictly(name, cls):
    from avsnet_ros.models.config import config_from_dict

    cfg = load_config(cls, REPO / "config" / name)
    model = config_from_dict(dict(cfg.model))
    paper = "paper" in name
    assert model.preset == ("paper" if paper else "tiny")
    if cls is AVSTrainConfig:
        assert tuple(model.image_size_hw) == ((256, 512) if paper else (128, 256))
    else:
        assert tuple(model.image_size_hw) == ((192, 640) if paper else (96, 320))
        assert config_from_dict(dict(cfg.pose_model)).kind == "posenet"


def test_unknown_keys_and_bad_types_raise_with_their_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(AVSTrainConfig, bad)
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(AVSTrainConfig, None, {"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match="schedule"):
        load_config(AVSTrainConfig, None, {"optim": {"schedule": "linear"}})
    with pytest.raises(ConfigError, match="nope"):
        load_config(RelativeTrainConfig, None, {"nope": 1})
    assert parse_set_overrides(["optim.lr=0.001", "data.max_depth_m=null", "train.amp=false"]) == {
        "optim": {"lr": 1e-3}, "data": {"max_depth_m": None}, "train": {"amp": False}}
    # YAML 1.1 reads "1e-3" as a string; float fields accept it.
    assert load_config(AVSTrainConfig, None, parse_set_overrides(["optim.lr=1e-3"])).optim.lr == 1e-3
    cfg = load_config(AVSTrainConfig, None, {"optim": {"betas": [0.8, 0.9]}, "train": {"epochs": 3}})
    assert cfg.optim.betas == (0.8, 0.9) and cfg.train.epochs == 3 and isinstance(cfg.optim.lr, float)


def test_precedence_yaml_then_set_then_flags(capsys):
    import yaml

    from training import train_avs, train_relative

    rc = train_avs.main(["--data", "x", "--out", "y", "--print-config", "--set", "train.epochs=7", "--set",
                         "optim.lr=0.01", "--epochs", "3", "--no-audio"])
    assert rc == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["epochs"] == 3  # flag beats --set
    assert cfg["optim"]["lr"] == 0.01  # --set beats the YAML
    assert cfg["train"]["batch_size"] == 8  # from config/train_avs.yaml
    assert cfg["model"]["use_audio"] is False
    assert train_avs.main(["--data", "x", "--out", "y", "--set", "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert train_relative.main(["--data", "x", "--out", "y", "--set", "model.kind=avsnet", "--print-config"]) == 2
    assert "error: config" in capsys.readouterr().err


def test_sampler_is_epoch_seeded_sharded_and_resumable():
    from training.loop import ResumableDistributedSampler

    data = list(range(23))
    s = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=5)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e0) == data and e0 != e1  # a permutation, different per epoch
    s.set_epoch(0)
    assert list(s) == e0  # ... and the same again for the same epoch
    s.set_start_index(8)
    assert list(s) == e0[8:] and len(s) == 15
    ranks = [ResumableDistributedSampler(data, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == 12 and set(a) | set(b) == set(data)


def test_epoch_seeded_dataset_is_order_independent_and_leaves_global_rng_alone():
    from training.loop import EpochSeededDataset

    class Noisy:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return (torch.rand(1).item(), float(np.random.rand()), random.random())

    ds = EpochSeededDataset(Noisy(), seed=1)
    torch.manual_seed(0)
    before = torch.get_rng_state().clone()
    forward = [ds[i] for i in range(4)]
    assert torch.equal(torch.get_rng_state(), before)
    backward = [ds[i] for i in reversed(range(4))][::-1]
    assert forward == backward
    ds.set_epoch(1)
    assert [ds[i] for i in range(4)] != forward


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    from training.checkpointing import atomic_torch_save, capture_rng_state, restore_rng_state

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.normal())
    atomic_torch_save({"rng": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"]
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(loaded)
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.normal())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]
    assert not list(tmp_path.glob(".*tmp*"))  # temp file renamed away


def test_training_checkpoint_is_complete_or_absent(tmp_path):
    from avsnet_ros.models.builder import build_model
    from avsnet_ros.models.config import RelativeDepthConfig
    from training.checkpointing import latest_checkpoint, load_train_state, save_training_checkpoint

    cfg = RelativeDepthConfig(kind="posenet", preset="tiny", image_size_hw=(64, 128))
    model = build_model(cfg)
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save_training_checkpoint(tmp_path, f"e0000_s{step:09d}", {"posenet": (model, cfg)}, {"step": step},
                                 keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["e0000_s000000002", "e0000_s000000003", "latest.txt"]
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "e0000_s000000003" and load_train_state(latest)["step"] == 3
    # A leftover temp dir of a killed writer is neither "latest" nor kept.
    (tmp_path / "checkpoints" / ".e0000_s000000004.tmp123").mkdir()
    save_training_checkpoint(tmp_path, "e0000_s000000005", {"posenet": (model, cfg)}, {"step": 5}, keep_last=2)
    assert not list((tmp_path / "checkpoints").glob(".*"))
    assert dataclasses.asdict(cfg)["kind"] == "posenet"
