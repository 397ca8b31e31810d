"""Unsafe and broken checkpoints at the places users meet them (issue 7).

test_models_checkpoint.py covers avsnet_ros.models.checkpoint.load_model itself (pickle refusal,
truncation, shape mismatch, bad config); test_training_resume.py covers SIGKILL + resume. This file
covers the entry points above them:
- DepthPipeline.from_checkpoints (pickle payload file or directory, truncated weights, shape
  mismatch, a checkpoint of the wrong kind) -> CheckpointError/ValueError naming the path;
- the depth node: configure fails cleanly (stays unconfigured, /diagnostics-visible startup error,
  nothing executed) and succeeds after the parameter is fixed; the `depth_node` process exits 1 with
  a one-line reason instead of a traceback;
- training resume: a train_state.pt carrying a pickle payload, or truncated, is refused by
  `train_avs.py --resume` with a clear error and nothing is executed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this object calls open(marker, 'w'): the marker file proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tiny_checkpoints):
    root = tmp_path_factory.mktemp("hardening_ckpt")
    paths = {k: Path(v) for k, v in tiny_checkpoints.items()}
    marker = root / "pwned.txt"
    bad = root / "bad"
    bad.mkdir()
    # a pickle file given as the checkpoint path
    torch.save({"state_dict": _Payload(marker)}, bad / "evil.pt")
    # a checkpoint directory holding only a pickle
    (bad / "evil_dir").mkdir()
    torch.save({"model": _Payload(marker)}, bad / "evil_dir" / "pytorch_model.bin")
    # truncated weights
    trunc = bad / "truncated"
    trunc.mkdir()
    (trunc / "config.json").write_bytes((paths["avs"] / "config.json").read_bytes())
    data = (paths["avs"] / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) * 2 // 3])
    # shape mismatch: the config asks for more bins than the weights hold
    shape = bad / "shape"
    shape.mkdir()
    doc = json.loads((paths["avs"] / "config.json").read_text())
    doc["n_bins"] = int(doc["n_bins"]) * 2
    (shape / "config.json").write_text(json.dumps(doc))
    (shape / "model.safetensors").write_bytes(data)
    return {"good": paths, "marker": marker, "evil_file": bad / "evil.pt", "evil_dir": bad / "evil_dir",
            "truncated": trunc, "shape": shape}


BAD_CASES = {
    "evil_file": "refusing",
    "evil_dir": "refusing",
    "truncated": "truncated",
    "shape": "shape mismatch",
}


# the shape case is built from an AVS-Net checkpoint: it belongs in the avs slot only
SLOT_CASES = [("avs", c) for c in sorted(BAD_CASES)] + [("relative", c) for c in sorted(BAD_CASES) if c != "shape"]


@pytest.mark.parametrize("slot,case", SLOT_CASES)
def test_pipeline_from_checkpoints_refuses(ckpts, case, slot):
    from avsnet_ros.models.checkpoint import CheckpointError
    from avsnet_ros.pipeline import DepthPipeline

    good = ckpts["good"]
    bad = ckpts[case]
    kwargs = dict(avs_checkpoint=good["avs"], relative_checkpoint=good["rel"], device="cpu")
    kwargs["avs_checkpoint" if slot == "avs" else "relative_checkpoint"] = bad
    with pytest.raises(CheckpointError, match=BAD_CASES[case]) as info:
        DepthPipeline.from_checkpoints(**kwargs)
    assert str(bad) in str(info.value)
    assert not ckpts["marker"].exists(), "a pickle payload was executed"


def test_pipeline_from_checkpoints_refuses_wrong_kind(ckpts):
    from avsnet_ros.pipeline import DepthPipeline

    good = ckpts["good"]
    with pytest.raises(ValueError, match="expected an AVS-Net"):
        DepthPipeline.from_checkpoints(good["rel"], good["rel"], device="cpu")
    with pytest.raises(ValueError, match="expected a DepthNet"):
        DepthPipeline.from_checkpoints(good["avs"], good["avs"], device="cpu")


@pytest.mark.ros
def test_depth_node_configure_fails_cleanly_then_recovers(ckpts, ros):
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from avsnet_ros.nodes.depth_node import DepthNode

    good = ckpts["good"]
    context, executor = ros
    node = DepthNode("depth_node_bad_ckpt", context=context, parameter_overrides=[
        Parameter("autostart", value=False), Parameter("device", value="cpu"),
        Parameter("avs_checkpoint", value=str(good["avs"])),
        Parameter("relative_checkpoint", value=str(good["rel"])),
        Parameter("torch_threads", value=1)])
    executor.add_node(node)
    for case, fragment in sorted(BAD_CASES.items()):
        for param in ("avs_checkpoint", "relative_checkpoint"):
            if case == "shape" and param == "relative_checkpoint":
                continue
            node.set_parameters([Parameter("avs_checkpoint", value=str(good["avs"])),
                                 Parameter("relative_checkpoint", value=str(good["rel"])),
                                 Parameter(param, value=str(ckpts[case]))])
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE, (case, param)
            assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
            assert fragment in node.startup_error and str(ckpts[case]) in node.startup_error, node.startup_error
            assert node.pipeline is None
    assert not ckpts["marker"].exists(), "a pickle payload was executed"
    node.set_parameters([Parameter("avs_checkpoint", value=str(good["avs"])),
                         Parameter("relative_checkpoint", value=str(good["rel"]))])
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.pipeline is not None


@pytest.mark.ros
def test_depth_node_process_exits_with_a_clear_message(ckpts):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "avsnet_ros.nodes.depth_node", "--ros-args", "-p",
         f"avs_checkpoint:={ckpts['evil_file']}",
         "-p", "device:=cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "refusing" in out and str(ckpts["evil_file"]) in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not ckpts["marker"].exists()


def _run_dir_with_state(root: Path, payload: bytes) -> Path:
    """A run dir whose latest checkpoint's train_state.pt holds `payload`."""
    run = root / "run"
    ck = run / "checkpoints" / "e0001_s000005"
    ck.mkdir(parents=True)
    (ck / "train_state.pt").write_bytes(payload)
    (run / "checkpoints" / "latest.txt").write_text("e0001_s000005\n")
    return run


@pytest.mark.parametrize("case", ["pickle_payload", "truncated"])
def test_resume_refuses_unsafe_or_truncated_train_state(tmp_path, case):
    from training.tiny_data import make_tiny_bv2

    marker = tmp_path / "pwned.txt"
    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=3, size_hw=(64, 128))
    evil = tmp_path / "evil.pt"
    if case == "pickle_payload":
        torch.save({"optimizer": _Payload(marker), "epoch": 1}, evil)
        payload = evil.read_bytes()
    else:
        torch.save({"epoch": torch.arange(100000)}, evil)
        payload = evil.read_bytes()[:5000]
    run = _run_dir_with_state(tmp_path, payload)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: {kind: avsnet, preset: tiny, image_size_hw: [64, 128]}\n"
                   "train: {epochs: 1, batch_size: 2, num_workers: 0}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train_avs.py"), "--data", str(data), "--out",
                           str(run),
                           "--config", str(cfg), "--resume", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert not marker.exists(), "the pickle payload in train_state.pt was executed"
    assert proc.returncode == 2, out[-3000:]
    assert "train_state.pt" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
