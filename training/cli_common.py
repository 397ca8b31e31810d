"""Argument groups, config resolution and output conventions shared by the training CLIs.

Conventions: human-readable progress and logs go to stderr; with --json the LAST line of stdout is
one JSON object (the run summary), so `... --json | tail -n 1 | python -m json.tool` works.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

from training.config_io import ConfigError, deep_merge, load_config, parse_set_overrides

LOG = logging.getLogger("avsnet_ros.training")


def user_errors() -> tuple:
    """Exceptions that mean bad input (data, checkpoint, config, run dir), reported in one line."""
    from avsnet_ros.data.samples import DatasetError
    from avsnet_ros.models.checkpoint import CheckpointError
    from training.loop import ResumeError

    return (DatasetError, CheckpointError, ResumeError, ConfigError, FileNotFoundError)



def add_common_training_args(parser: argparse.ArgumentParser, default_config: str) -> None:
    paths = parser.add_argument_group("paths")
    paths.add_argument("--data", required=True,
                       help="BV2-layout root (BatVision V2 or synthetic), BV1 root, or rosbag2 folder/.mcap")
    paths.add_argument("--out", required=True, help="run directory (checkpoints, logs, plots)")
    paths.add_argument("--config", default=None,
                       help=f"training YAML (default: config/{default_config}); flags override it")
    train = parser.add_argument_group("training (override the YAML)")
    train.add_argument("--epochs", type=int, default=None, help="number of epochs")
    train.add_argument("--batch-size", type=int, default=None, help="batch size per process")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    train.add_argument("--seed", type=int, default=None, help="seed of init, data order and augmentation")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                       help="auto: CUDA when available (each torchrun process takes cuda:LOCAL_RANK)")
    train.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes")
    train.add_argument("--max-train-samples", type=int, default=None,
                       help="use only the first N training samples (quick runs)")
    train.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    ckpt = parser.add_argument_group("checkpointing")
    ckpt.add_argument("--resume", action="store_true",
                      help="continue from RUN_DIR/checkpoints/latest.txt (fresh start if there is none)")
    ckpt.add_argument("--save-every-steps", type=int, default=None,
                      help="also checkpoint every N optimisation steps inside an epoch (0: epoch ends only)")
    misc = parser.add_argument_group("config and output")
    misc.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override any config key, e.g. --set optim.schedule=cosine (repeatable)")
    misc.add_argument("--json", action="store_true", help="print the run summary as one JSON line (last line)")
    misc.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    misc.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def flag_overrides(args: argparse.Namespace) -> dict:
    """The dedicated flags as a nested override dict (applied after --set)."""
    o: dict[str, dict] = {"train": {}, "optim": {}, "data": {}}
    if args.epochs is not None:
        o["train"]["epochs"] = args.epochs
    if args.batch_size is not None:
        o["train"]["batch_size"] = args.batch_size
    if args.seed is not None:
        o["train"]["seed"] = args.seed
    if args.device is not None:
        o["train"]["device"] = args.device
    if args.num_workers is not None:
        o["train"]["num_workers"] = args.num_workers
    if args.save_every_steps is not None:
        o["train"]["save_every_steps"] = args.save_every_steps
    if args.no_amp:
        o["train"]["amp"] = False
    if args.no_progress:
        o["train"]["progress"] = False
    if args.lr is not None:
        o["optim"]["lr"] = args.lr
    if args.max_train_samples is not None:
        o["data"]["max_train_samples"] = args.max_train_samples
    return {k: v for k, v in o.items() if v}


def resolve_config(cls, args: argparse.Namespace, default_config: str, extra: Mapping | None = None):
    """Dataclass defaults <- YAML <- --set <- flags <- extra; exits with a clear message on error."""
    from avsnet_ros.paths import config_path

    yaml_path = Path(args.config) if args.config else config_path(default_config)
    overrides = deep_merge(parse_set_overrides(args.set), flag_overrides(args))
    if extra:
        overrides = deep_merge(overrides, extra)
    return load_config(cls, yaml_path, overrides), yaml_path


def load_cli_config(cls, args: argparse.Namespace, default_config: str, extra: Mapping | None,
                    model_kinds: Mapping[str, str]):
    """Resolve a training CLI's config and the typed model config of each section of ``model_kinds``
    ({config section: required model kind}, e.g. {"model": "avsnet"}).

    Returns (cfg, yaml_path, {section: model config}, config_dict (cfg as a dict with the model sections
    filled from their presets)), or an exit code: 2 after printing ``error: config: ...`` (bad YAML or
    --set, unknown key, wrong model kind), 0 after printing the resolved config for --print-config.
    """
    import yaml

    from avsnet_ros.models.config import asdict as model_asdict
    from avsnet_ros.models.config import config_from_dict
    from training.config_io import to_dict

    try:
        cfg, yaml_path = resolve_config(cls, args, default_config, extra)
        model_cfgs = {section: config_from_dict(dict(getattr(cfg, section))) for section in model_kinds}
    except (ConfigError, ValueError) as exc:
        print(f"error: config: {exc}", file=sys.stderr)
        return 2
    wrong = [f"{section}.kind must be {kind!r}, got {model_cfgs[section].kind!r}"
             for section, kind in model_kinds.items() if model_cfgs[section].kind != kind]
    if wrong:
        print("error: config: " + "; ".join(wrong), file=sys.stderr)
        return 2
    config_dict = to_dict(cfg)
    for section, model_cfg in model_cfgs.items():
        config_dict[section] = model_asdict(model_cfg)
    if args.print_config:
        print(yaml.safe_dump(config_dict, sort_keys=False))
        return 0
    return cfg, yaml_path, model_cfgs, config_dict


def run_distributed(device: str, body) -> int:
    """Start the (DDP or single) process context, set up logging and run ``body(ctx) -> exit code``.

    A device that cannot be used (``--device cuda`` without CUDA) and the user errors of
    :func:`user_errors` become ``error: ...`` on stderr (main process) and exit code 2; the process
    group is cleaned up in every case.
    """
    from training.distributed import cleanup, init_distributed

    try:
        ctx = init_distributed(device)
    except (RuntimeError, ValueError) as exc:  # e.g. --device cuda without CUDA
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(ctx.is_main)
    try:
        return body(ctx)
    except user_errors() as exc:
        if ctx.is_main:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cleanup(ctx)


def setup_logging(is_main: bool) -> None:
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, stream=sys.stderr,
                        format="[%(asctime)s %(levelname)s] %(message)s", datefmt="%H:%M:%S")


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and python's ``random`` from one seed."""
    import random

    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def write_run_files(run_dir: Path, config_dict: Mapping, command: str) -> None:
    """RUN_DIR/config.yaml (the resolved config) and COMMAND.txt (one line appended per start/resume)."""
    import yaml

    from avsnet_ros.fileio import atomic_write_text

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(dict(config_dict), sort_keys=False))
    with open(run_dir / "COMMAND.txt", "a") as fh:
        fh.write(command + "\n")


def command_line(argv: list[str] | None, script: str) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    prefix = "torchrun --nproc_per_node " + os.environ["WORLD_SIZE"] + " " if int(
        os.environ.get("WORLD_SIZE", "1")) > 1 else "python "
    return prefix + shlex.join([script] + args)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf -> None, tensors/numpy scalars -> Python numbers, Paths -> str, keys -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return json_safe(obj.item())
        except (ValueError, RuntimeError):
            pass
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_json(summary: Mapping) -> None:
    """One JSON object on one line of stdout (NaN/inf -> null)."""
    sys.stdout.flush()
    print(json.dumps(json_safe(summary), sort_keys=False), flush=True)


__all__ = ["user_errors", "add_common_training_args", "resolve_config", "setup_logging", "command_line", "print_json",
           "json_safe", "ConfigError"]
