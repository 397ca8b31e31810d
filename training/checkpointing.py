"""Atomic training checkpoints and exact resume state.

Layout of a run directory (rank 0 writes it):

    RUN_DIR/
      checkpoints/
        e0002_s000120/            one complete checkpoint (written as a temp dir, then renamed)
          <model name>/           config.json + model.safetensors (avsnet_ros.models.checkpoint)
          train_state.pt          optimiser, scheduler, grad scaler, epoch, step, RNG, sampler, history
        latest.txt                name of the newest complete checkpoint (avsnet_ros.fileio)
      best/<model name>/          model dir(s) of the best validation Abs Rel (+ best.json)

A SIGKILL at any moment leaves either the previous checkpoint or the new one referenced by
latest.txt, never a half-written one. train_state.pt holds only tensors, numbers, strings, lists
and dicts, so it loads with `torch.load(weights_only=True)` (no code execution).
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from avsnet_ros.fileio import atomic_open, atomic_write_json, atomic_write_text, fsync_dir
from avsnet_ros.models.checkpoint import load_model, save_checkpoint

LATEST_FILE = "latest.txt"
TRAIN_STATE_FILE = "train_state.pt"


# ----------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy's global generator and python's `random`.

    Stored as tensors/ints/floats/None only, so the dict survives torch.load(weights_only=True).
    """
    np_state = np.random.get_state()  # ('MT19937', uint32[624], pos, has_gauss, cached_gaussian)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of capture_rng_state."""
    torch.set_rng_state(state["torch"].cpu())
    np_s = state["numpy"]
    np.random.set_state(("MT19937", np_s["keys"].numpy().astype(np.uint32), int(np_s["pos"]),
                         int(np_s["has_gauss"]), float(np_s["cached_gaussian"])))
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()),
                     py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ----------------------------------------------------------------------------- atomic files
def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through avsnet_ros.fileio.atomic_open (temp file in the same folder, fsync, os.replace)."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


# ----------------------------------------------------------------------------- checkpoints
def _save_model_dir(path: Path, entry) -> None:
    """entry = (module, model_config) or (module, model_config, extra dict for config.json). A module
    with ``save_folder(path, extra)`` (training.hf_relative: a transformers model) writes its own format."""
    module, config = entry[0], entry[1]
    extra = entry[2] if len(entry) > 2 else None
    if hasattr(module, "save_folder"):
        module.save_folder(path, extra)
    else:
        save_checkpoint(path, module, config, extra=extra)


def checkpoint_name(epoch: int, step: int) -> str:
    """Folder name of a checkpoint: epochs completed (or current epoch) and global step."""
    return f"e{epoch:04d}_s{step:09d}"


def save_training_checkpoint(
    run_dir: str | Path,
    name: str,
    models: Mapping[str, tuple],
    train_state: Mapping[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write one complete checkpoint and point latest.txt at it.

    Args:
        run_dir: the run directory.
        name: checkpoint folder name (see checkpoint_name).
        models: {subdir: (module, model_config[, extra])}; each saved with save_checkpoint (the
            unwrapped module, no DDP "module." prefix; extra goes into config.json).
        train_state: plain data + tensors (optimizer/scheduler state dicts, counters, RNG ...).
        keep_last: number of complete checkpoints to keep (older ones are removed).

    Returns:
        Path of the checkpoint folder.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for sub, entry in models.items():
        _save_model_dir(tmp / sub, entry)
    atomic_torch_save(dict(train_state), tmp / TRAIN_STATE_FILE)
    _publish_dir(tmp, final)  # same name again (e.g. a resumed run re-reaching it): replaced
    atomic_write_text(ckpt_root / LATEST_FILE, name + "\n")
    _prune(ckpt_root, keep=max(1, keep_last), protect=name)
    return final


def _prune(ckpt_root: Path, keep: int, protect: str) -> None:
    complete = sorted(p for p in ckpt_root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / TRAIN_STATE_FILE).is_file())
    for old in complete[:-keep]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".*.tmp*"):  # leftovers of killed writers
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder latest.txt names, or None when the run has no checkpoint yet."""
    ckpt_root = Path(run_dir) / "checkpoints"
    pointer = ckpt_root / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    path = ckpt_root / name
    if not (path / TRAIN_STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {name!r} but {path / TRAIN_STATE_FILE} is missing")
    return path


def load_train_state(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """torch.load(train_state.pt, weights_only=True): refuses pickled code.

    A payload that would need code to unpickle, or a truncated/corrupt file, raises CheckpointError
    naming the file (a user error the CLIs report in one line; test_hardening_checkpoints.py).
    """
    from avsnet_ros.models.checkpoint import CheckpointError

    path = Path(ckpt_dir) / TRAIN_STATE_FILE
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError (code-carrying payload), RuntimeError/OSError (truncated)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(
            f"cannot load {path}: {type(exc).__name__}: {first}. It is truncated or needs code to unpickle "
            "(refused with weights_only=True; nothing in it was executed)."
        ) from None


def load_checkpoint_weights(ckpt_dir: str | Path, sub: str, module: nn.Module) -> Any:
    """Load weights of `ckpt_dir/sub` (strict) into `module`; returns the saved model config."""
    if hasattr(module, "load_folder"):  # its own format (see _save_model_dir)
        return module.load_folder(Path(ckpt_dir) / sub)
    loaded, config = load_model(Path(ckpt_dir) / sub, device="cpu")
    module.load_state_dict(loaded.state_dict(), strict=True)
    return config


def save_best(run_dir: str | Path, models: Mapping[str, tuple], info: Mapping) -> Path:
    """Replace RUN_DIR/best with the given model(s) atomically (temp dir + rename) + best.json."""
    run_dir = Path(run_dir)
    final = run_dir / "best"
    tmp = run_dir / f".best.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for sub, entry in models.items():
        _save_model_dir(tmp / sub, entry)
    atomic_write_json(tmp / "best.json", dict(info))
    _publish_dir(tmp, final)
    return final


def _publish_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory ``tmp`` to ``final`` (same parent) by rename, replacing an
    existing ``final`` (moved aside first, then deleted); both directories are fsynced."""
    fsync_dir(tmp)
    if final.exists():
        old = final.parent / f".{final.name}.old{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def state_dict_hash(module: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes) in key order."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
