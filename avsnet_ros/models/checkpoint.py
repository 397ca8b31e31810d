"""Checkpoint directories: ``config.json`` + ``model.safetensors``, loaded without executing code.

Layout of a checkpoint directory::

    config.json         the typed model config (``asdict``) plus "extra" (free-form JSON: training
                        command, metrics, ...) and "format_version"
    model.safetensors   the model's state dict (tensors only)

Both files are written atomically (avsnet_ros.fileio: temporary file in the same directory, fsync,
``os.replace``), so a crash never leaves a half-written checkpoint under the final name. Loading is strict: the
network is rebuilt from ``config.json`` and every tensor must match by name and shape.

Pickle payloads are refused: a ``.pt``/``.pth``/``.bin``/``.ckpt`` file is only ever opened with
``torch.load(weights_only=True)``, which does not run code; a payload that would need to run code
is reported as refused (nothing in it is executed), and a plain-tensor torch file is reported as
"not a checkpoint directory" (it carries no config).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..fileio import atomic_write_bytes, atomic_write_text
from .builder import build_model
from .config import AVSNetConfig, ModelConfig, RelativeDepthConfig, asdict, config_from_dict, replace

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
_RESERVED = ("extra", "format_version")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely and exactly; the message names the path and keys."""


def save_checkpoint(path_dir: PathLike, model: nn.Module, config: ModelConfig, extra: Optional[dict] = None) -> Path:
    """Write ``model`` (state dict) and ``config`` (+ ``extra``, JSON-serialisable) to ``path_dir``.

    Returns the directory. Tensors are saved on CPU, contiguous, each with its own storage (so
    tied/shared tensors never trip safetensors).
    """
    from safetensors.torch import save

    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    doc = asdict(config)
    doc["extra"] = dict(extra or {})
    doc["format_version"] = FORMAT_VERSION
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"  # fails early if extra is not JSON
    atomic_write_bytes(out / WEIGHTS_NAME, save(state, metadata={"kind": config.kind}))
    atomic_write_text(out / CONFIG_NAME, text)
    return out


def refuse_pickle_file(path: PathLike) -> None:
    """Raise :class:`CheckpointError` for a torch/pickle file, without executing anything in it."""
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying payloads, others for garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refusing to load {p}: it is a pickle payload that torch.load(weights_only=True) rejects "
            f"({type(exc).__name__}: {first}). Nothing in it was executed. Checkpoints are directories "
            f"with {CONFIG_NAME} + {WEIGHTS_NAME}."
        ) from None
    kind = type(obj).__name__
    raise CheckpointError(
        f"{p} is a bare torch file ({kind} of plain tensors), not a checkpoint directory: it has no "
        f"{CONFIG_NAME} to rebuild the model from. Load it into a model built from a config and write "
        "it with avsnet_ros.models.checkpoint.save_checkpoint()."
    )


def _resolve_dir(path_dir: PathLike) -> Path:
    p = Path(path_dir).expanduser()
    if p.is_file():
        if p.name == WEIGHTS_NAME or p.name == CONFIG_NAME:
            return p.parent
        refuse_pickle_file(p)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint directory {p} does not exist")
    if not (p / WEIGHTS_NAME).is_file():
        pickles = sorted(q for q in p.iterdir() if q.suffix in PICKLE_SUFFIXES)
        if pickles:
            refuse_pickle_file(pickles[0])
        raise CheckpointError(f"checkpoint directory {p} has no {WEIGHTS_NAME}")
    if not (p / CONFIG_NAME).is_file():
        raise CheckpointError(f"checkpoint directory {p} has no {CONFIG_NAME}")
    return p


def load_checkpoint_config(path_dir: PathLike) -> tuple[ModelConfig, dict]:
    """(typed config, extra dict) from a checkpoint directory's ``config.json``."""
    p = _resolve_dir(path_dir)
    try:
        doc = json.loads((p / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p / CONFIG_NAME} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{p / CONFIG_NAME} must hold a JSON object")
    extra = doc.pop("extra", {}) or {}
    version = doc.pop("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{p / CONFIG_NAME}: unsupported format_version {version} (expected {FORMAT_VERSION})")
    try:
        config = config_from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{p / CONFIG_NAME}: invalid model config: {exc}") from None
    return config, extra


def load_state_dict_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file; truncated/corrupt files raise :class:`CheckpointError`."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.suffix in PICKLE_SUFFIXES:
        refuse_pickle_file(p)
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...
        size = p.stat().st_size if p.exists() else 0
        raise CheckpointError(
            f"{p} is truncated or not a safetensors file ({size} bytes): {type(exc).__name__}: {exc}"
        ) from None


def _for_building(config: ModelConfig) -> ModelConfig:
    # The saved tensors replace any pretrained initialisation: do not touch pretrained paths (they
    # may not exist on this machine).
    if isinstance(config, AVSNetConfig):
        return replace(config, visual_pretrained_path=None, audio_pretrained_path=None)
    if isinstance(config, RelativeDepthConfig):
        return replace(config, encoder_pretrained_path=None)
    return config


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict load with one clear error listing missing, unexpected and shape-mismatched keys."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"shape mismatch for {len(mismatched)} tensors: {mismatched[:20]}")
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:20]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
        raise CheckpointError(f"{source} does not match the model built from its config; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_model(path_dir: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly.

    Returns ``(model in eval mode on device, config)``. Raises :class:`CheckpointError` for a
    missing/corrupt/truncated file, a pickle payload, or missing/unexpected/mis-shaped tensors.
    """
    p = _resolve_dir(path_dir)
    config, _ = load_checkpoint_config(p)
    state = load_state_dict_file(p / WEIGHTS_NAME)
    model = build_model(_for_building(config))
    load_state_into(model, state, source=str(p / WEIGHTS_NAME))
    return model.to(device).eval(), config


__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_model",
    "load_checkpoint_config",
    "load_state_dict_file",
    "load_state_into",
    "refuse_pickle_file",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
]
