#!/usr/bin/env python3
"""Stage 2: self-supervised DepthNet + PoseNet on frame triples (Monodepth2 style, paper eq. 5-6).

    python training/train_relative.py --data ROOT_OR_BAG --out runs/relative [--config YAML]
        [--epochs N] [--resume] [--device auto|cpu|cuda] [--seed S] [--save-every-steps N] [--json]
    torchrun --nproc_per_node 2 training/train_relative.py --data ... --out ...     (DDP)

Frame triples (t - k, t, t + k) inside one sequence: BV1 (scene runs, k = 20 as in the paper),
BV2-layout folders with 'sequence'/'frame' columns (the synthetic world, k = 1), or a rosbag2.
Validation: the joint loss and, where the centre frame has ground truth, the depth metrics after
ground-truth median scaling. Writes RUN_DIR/best/depthnet (+ posenet), checkpoints/, log.csv,
tensorboard/, curves.png, config.yaml and COMMAND.txt.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = "train_relative.yaml"
RESUME_KEYS = ("model", "pose_model", "data", "optim", "loss")
LOG = logging.getLogger("avsnet_ros.training")


def build_parser() -> argparse.ArgumentParser:
    from training.cli_common import add_common_training_args

    p = argparse.ArgumentParser(
        prog="train_relative.py", description=__doc__.split("\n\n")[0],
        epilog="Config precedence: config/train_relative.yaml (or --config) < --set < flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_training_args(p, DEFAULT_CONFIG)
    model = p.add_argument_group("model and data")
    model.add_argument("--preset", choices=("tiny", "paper"), default=None,
                       help="DepthNet/PoseNet size preset with its input size (tiny 96x320, paper 192x640); for "
                            "paper runs prefer --config config/train_relative_paper.yaml")
    model.add_argument("--interval", type=int, default=None,
                       help="frame offset k of the triples (default: 20 for BV1, 1 otherwise)")
    return p


def main(argv: list[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the CLI with ``argv`` (default sys.argv[1:]); ``callbacks``: training.loop.Callback objects
    handed to the Trainer (tests: test/train_with_hooks.py). Returns the exit code."""
    args = build_parser().parse_args(argv)

    from avsnet_ros.data.samples import DatasetError
    from training.cli_common import (command_line, load_cli_config, print_json, run_distributed, seed_everything,
                                     write_run_files)
    from training.configs import RelativeTrainConfig

    extra: dict = {}
    if args.preset:
        extra["model"] = {"preset": args.preset, "image_size_hw": None}
        extra["pose_model"] = {"preset": args.preset, "image_size_hw": None}
    if args.interval is not None:
        extra["data"] = {"triplet_interval": args.interval}
    loaded = load_cli_config(RelativeTrainConfig, args, DEFAULT_CONFIG, extra,
                             {"model": "depthnet", "pose_model": "posenet"})
    if isinstance(loaded, int):
        return loaded
    cfg, yaml_path, model_cfgs, config_dict = loaded
    depth_cfg, pose_cfg = model_cfgs["model"], model_cfgs["pose_model"]

    from avsnet_ros.data.batvision import TripletDataset
    from avsnet_ros.data.torch_dataset import TorchTripletDataset
    from avsnet_ros.models.builder import build_model
    from training.datasets import FirstN, data_kind, open_split
    from training.loop import check_resume, run_training
    from training.relative_task import RelativeTask

    def train(ctx) -> int:
        seed = cfg.train.seed
        seed_everything(seed)

        kind = data_kind(args.data, cfg.data.train_split)
        interval = cfg.data.triplet_interval or (20 if kind == "bv1" else 1)
        run_dir = Path(args.out)
        config_dict["data"]["triplet_interval"] = interval
        check_resume(run_dir, args.resume, config_dict, RESUME_KEYS, cfg.train)  # fail fast, before loading data

        train_data = open_split(args.data, cfg.data.train_split, cfg.data.max_depth_m, cfg.data.skip_bad,
                                cfg.data.bag_val_every, cfg.data.bag_max_echo_age_s)
        max_depth_m = train_data.max_depth_m
        train_triplets = TripletDataset(train_data.dataset, interval)
        if len(train_triplets) == 0:
            raise DatasetError(f"{args.data} ({cfg.data.train_split}) has no frame triple (t-{interval}, t, "
                             f"t+{interval}) inside one sequence: check the sequence/frame columns or --interval")
        train_base = FirstN(train_triplets, cfg.data.max_train_samples) if cfg.data.max_train_samples \
            else train_triplets
        val_base = None
        try:
            val_data = open_split(args.data, cfg.data.val_split, cfg.data.max_depth_m, cfg.data.skip_bad,
                                  cfg.data.bag_val_every, cfg.data.bag_max_echo_age_s)
            val_base = TripletDataset(val_data.dataset, interval)
            if cfg.data.max_val_samples:
                val_base = FirstN(val_base, cfg.data.max_val_samples)
            if len(val_base) == 0:
                LOG.warning("validation split has no frame triple: no validation")
                val_base = None
        except (FileNotFoundError, DatasetError) as exc:
            LOG.warning("no validation split (%s): best checkpoint chosen by training loss", exc)
        size_hw = tuple(depth_cfg.image_size_hw)
        train_set = TorchTripletDataset(train_base, size_hw, hflip_prob=cfg.data.hflip_prob, seed=seed,
                                        max_depth_m=max_depth_m)
        val_set = None
        val_has_depth = False
        if val_base is not None:
            val_set = TorchTripletDataset(val_base, size_hw, hflip_prob=0.0, seed=seed, max_depth_m=max_depth_m)
            val_has_depth = val_base[0].center.depth_m is not None
        if ctx.is_main:
            LOG.info("stage 2: %d train / %d val triples (interval %d) from %s (%s), %s preset at %dx%d, "
                     "%d process(es) on %s", len(train_set), 0 if val_set is None else len(val_set), interval,
                     args.data, train_data.kind, depth_cfg.preset, size_hw[0], size_hw[1], ctx.world_size, ctx.device)

        depthnet = build_model(depth_cfg)
        posenet = build_model(pose_cfg)
        command = command_line(argv, "training/train_relative.py")
        task = RelativeTask(depthnet, depth_cfg, posenet, pose_cfg, cfg.loss.ssim_weight, cfg.loss.smoothness_weight,
                            cfg.loss.automask, max_depth_m, val_has_depth)
        task.extra = {"training_command": command, "data": str(args.data), "triplet_interval": interval}

        if ctx.is_main:
            write_run_files(run_dir, config_dict, command)
        result = run_training(task, train_set, val_set, cfg.train, cfg.optim, ctx, run_dir, args.resume,
                              config_dict, resume_compare_keys=RESUME_KEYS,
                              callbacks=callbacks)
        if ctx.is_main:
            summary = {
                "stage": "relative",
                "run_dir": str(run_dir),
                "best_model": str(run_dir / "best" / "depthnet") if result.best_dir else None,
                "best_epoch": result.best_epoch,
                "best_" + result.selection_metric: result.best_value,
                "final_val": result.final_val,
                "epochs": result.epochs,
                "global_step": result.global_step,
                "train_triples": len(train_set),
                "val_triples": 0 if val_set is None else len(val_set),
                "triplet_interval": interval,
                "resumed_from": result.resumed_from,
                "last_checkpoint": result.last_checkpoint,
                "train_time_s": round(result.train_time_s, 2),
                "world_size": result.world_size,
                "device": result.device,
                "config": str(yaml_path),
            }
            if args.json:
                print_json(summary)
        return 0

    return run_distributed(cfg.train.device, train)


if __name__ == "__main__":
    raise SystemExit(main())
