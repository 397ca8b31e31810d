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
from typing import Any, Mapping, Sequence

from training.config_io import ConfigError, deep_merge, load_config, parse_set_overrides

LOG = logging.getLogger("avsnet_ros.training")


def user_errors() -> tuple:
    """Exceptions that mean bad input (data, checkpoint, config, run dir), reported in one line."""
    from avsnet_ros.data.samples import DatasetError
    from avsnet_ros.models.checkpoint import CheckpointError
    from training.loop import ResumeError

    return (DatasetError, CheckpointError, ResumeError, ConfigError, FileNotFoundError)



def training_parser(prog: str, doc: str, default_config: str, group_title: str, preset_sizes: str,
                    paper_config: str) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """A training CLI's parser and its own argument group.

    The parser: description = the first paragraph of ``doc`` (the script's docstring), the config
    precedence as epilog, the common argument groups (:func:`add_common_training_args`), then the group
    ``group_title`` holding --preset tiny|paper (``preset_sizes``: the input size of each preset, for the
    help; ``paper_config``: the YAML recommended for paper runs). Returns (parser, group): the script adds
    its own flags to the group.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=doc.split("\n\n")[0],
        epilog=f"Config precedence: config/{default_config} (or --config) < --set < flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_training_args(parser, default_config)
    group = parser.add_argument_group(group_title)
    group.add_argument("--preset", choices=("tiny", "paper"), default=None,
                       help=f"model size preset with its input size ({preset_sizes}); for paper runs prefer "
                            f"--config config/{paper_config} (schedule too)")
    return parser, group


def preset_overrides(args: argparse.Namespace, sections: Sequence[str]) -> dict:
    """--preset as config overrides of the model ``sections`` (e.g. ("model", "pose_model")): each takes the
    preset and the preset's own input size (the YAML's image_size_hw belongs to the YAML's preset)."""
    if not args.preset:
        return {}
    return {section: {"preset": args.preset, "image_size_hw": None} for section in sections}


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


#: (argparse attribute, config section, key) of the dedicated flags whose value is the config value.
_VALUE_FLAGS = (
    ("epochs", "train", "epochs"),
    ("batch_size", "train", "batch_size"),
    ("seed", "train", "seed"),
    ("device", "train", "device"),
    ("num_workers", "train", "num_workers"),
    ("save_every_steps", "train", "save_every_steps"),
    ("lr", "optim", "lr"),
    ("max_train_samples", "data", "max_train_samples"),
)
#: (argparse attribute, config section, key) of the --no-* switches that set the key to False.
_OFF_SWITCHES = (("no_amp", "train", "amp"), ("no_progress", "train", "progress"))


def flag_overrides(args: argparse.Namespace) -> dict:
    """The dedicated flags as a nested override dict (applied after --set)."""
    o: dict[str, dict] = {"train": {}, "optim": {}, "data": {}}
    for attr, section, key in _VALUE_FLAGS:
        if getattr(args, attr) is not None:
            o[section][key] = getattr(args, attr)
    for attr, section, key in _OFF_SWITCHES:
        if getattr(args, attr):
            o[section][key] = False
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


def parse_training_cli(argv: list[str] | None, parser: argparse.ArgumentParser, cls, default_config: str,
                       model_kinds: Mapping[str, str], overrides):
    """Parse ``argv`` and resolve the config (:func:`load_cli_config`; ``overrides(args)`` -> the script's
    own override dict). Returns (args, cfg, yaml_path, model_cfgs, config_dict) or an exit code."""
    args = parser.parse_args(argv)
    loaded = load_cli_config(cls, args, default_config, overrides(args), model_kinds)
    if isinstance(loaded, int):
        return loaded
    return (args, *loaded)


def train_and_report(ctx, args, task, train_set, val_set, cfg, run_dir: Path, config_dict: dict, command: str,
                     resume_keys: Sequence[str], callbacks: Sequence, summary, on_fresh_start=None):
    """Write the run files (main process), run :func:`training.loop.run_training` and, on the main
    process, print ``summary(result)`` (the --json run summary) when --json was given. Returns 0."""
    from training.loop import run_training

    if ctx.is_main:
        write_run_files(run_dir, config_dict, command)
    result = run_training(task, train_set, val_set, cfg.train, cfg.optim, ctx, run_dir, args.resume, config_dict,
                          on_fresh_start=on_fresh_start, resume_compare_keys=resume_keys, callbacks=callbacks)
    if ctx.is_main:
        report = summary(result)
        if args.json:
            print_json(report)
    return 0


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


def open_train_val(data: str | Path, data_cfg):
    """(train, val) OpenedData of ``--data`` with the ``data`` config section's splits and options; val is
    None (with a warning: the best checkpoint is then chosen by training loss) where the validation
    split cannot be opened."""
    from avsnet_ros.data.samples import DatasetError
    from training.datasets import open_split

    def open_one(split: str):
        return open_split(data, split, data_cfg.max_depth_m, data_cfg.skip_bad, data_cfg.bag_val_every,
                          data_cfg.bag_max_echo_age_s, data_cfg.bag_odometry_topic, data_cfg.bag_camera_pose)

    train = open_one(data_cfg.train_split)
    try:
        val = open_one(data_cfg.val_split)
    except (FileNotFoundError, DatasetError) as exc:
        LOG.warning("no validation split (%s): best checkpoint chosen by training loss", exc)
        val = None
    return train, val


def run_summary(stage: str, run_dir: Path, best_name: str, result, yaml_path: Path, **stage_fields: Any) -> dict:
    """The --json run summary of a training CLI: ``stage``, ``stage_fields`` (counts, options of that
    stage), the best model (RUN_DIR/best/<best_name>, None without one) and the loop's result."""
    return {
        "stage": stage,
        "run_dir": str(run_dir),
        "best_model": str(run_dir / "best" / best_name) if result.best_dir else None,
        "best_epoch": result.best_epoch,
        "best_" + result.selection_metric: result.best_value,
        "final_val": result.final_val,
        "epochs": result.epochs,
        "global_step": result.global_step,
        **stage_fields,
        "resumed_from": result.resumed_from,
        "last_checkpoint": result.last_checkpoint,
        "train_time_s": round(result.train_time_s, 2),
        "world_size": result.world_size,
        "device": result.device,
        "config": str(yaml_path),
    }


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


__all__ = ["user_errors", "training_parser", "preset_overrides", "add_common_training_args",
           "parse_training_cli", "open_train_val", "train_and_report", "run_summary", "resolve_config",
           "setup_logging", "command_line", "print_json", "json_safe", "ConfigError"]
