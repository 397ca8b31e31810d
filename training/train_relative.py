#!/usr/bin/env python3
"""Stage 2: self-supervised DepthNet + PoseNet on frame triples (Monodepth2 style, paper eq. 5-6).

    python training/train_relative.py --data ROOT_OR_BAG --out runs/relative [--config YAML]
        [--epochs N] [--resume] [--device auto|cpu|cuda] [--seed S] [--save-every-steps N] [--json]
    torchrun --nproc_per_node 2 training/train_relative.py --data ... --out ...     (DDP)

Frame triples (t - k, t, t + k) inside one sequence: BV1 (scene runs, k = 20 as in the paper),
BV2-layout folders with 'sequence'/'frame' columns (the synthetic world, k = 1), or a rosbag2.
Validation: the joint loss and, where the centre frame has ground truth, the depth metrics after
ground-truth median scaling. --transformers-model DIR trains a transformers architecture (Depth
Anything, DPT; DIR's weights if it has them, else random) with the same losses instead of the
DepthNet (training/hf_relative.py); best/depthnet is then a save_pretrained folder.
Writes RUN_DIR/best/depthnet (+ posenet), checkpoints/, log.csv, tensorboard/, curves.png,
config.yaml and COMMAND.txt.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = "train_relative.yaml"
RESUME_KEYS = ("model", "pose_model", "data", "optim", "loss", "pose_source", "transformers_model", "init_depthnet")
POSE_SOURCES = ("posenet", "odometry")
LOG = logging.getLogger("avsnet_ros.training")


def build_parser() -> argparse.ArgumentParser:
    from training.cli_common import training_parser

    p, group = training_parser("train_relative.py", __doc__, DEFAULT_CONFIG, "model and data",
                               "DepthNet/PoseNet: tiny 96x320, paper 192x640", "train_relative_paper.yaml")
    group.add_argument("--interval", type=int, default=None,
                       help="frame offset k of the triples (default: 20 for BV1, 1 otherwise)")
    group.add_argument("--pose-source", choices=POSE_SOURCES, default=None,
                       help="camera motion between frames: posenet (learned, the paper; default) or odometry "
                            "(the data's camera pose columns, avsnet_ros.data.poses: no PoseNet is trained)")
    group.add_argument("--transformers-model", default=None, metavar="DIR",
                       help="train this transformers depth folder (save_pretrained: config.json, and "
                            "model.safetensors to start from its weights; Depth Anything or DPT) with the "
                            "self-supervised losses instead of the DepthNet; read locally, never downloaded")
    group.add_argument("--init-depthnet", default=None, metavar="DIR",
                       help="start the DepthNet from this checkpoint's weights (fine-tuning, e.g. "
                            "assets/checkpoints/depthnet_tiny on your own data); its tensors must fit the model config")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    """This script's flags as config overrides (applied last)."""
    from training.cli_common import preset_overrides

    extra = preset_overrides(args, ("model", "pose_model"))
    if args.interval is not None:
        extra["data"] = {"triplet_interval": args.interval}
    if args.pose_source is not None:
        extra["pose_source"] = args.pose_source
    if args.transformers_model is not None:
        extra["transformers_model"] = str(Path(args.transformers_model).expanduser().resolve())
    if args.init_depthnet is not None:
        extra["init_depthnet"] = str(Path(args.init_depthnet).expanduser().resolve())
    return extra


def main(argv: list[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the CLI with ``argv`` (default sys.argv[1:]); ``callbacks``: training.loop.Callback objects
    handed to the Trainer (tests: test/train_with_hooks.py). Returns the exit code."""
    from avsnet_ros.data.samples import DatasetError
    from training.cli_common import (command_line, open_train_val, parse_training_cli, run_distributed, run_summary,
                                     seed_everything, train_and_report)
    from training.config_io import ConfigError
    from training.configs import RelativeTrainConfig

    parsed = parse_training_cli(argv, build_parser(), RelativeTrainConfig, DEFAULT_CONFIG,
                                {"model": "depthnet", "pose_model": "posenet"}, _overrides)
    if isinstance(parsed, int):
        return parsed
    args, cfg, yaml_path, model_cfgs, config_dict = parsed
    depth_cfg, pose_cfg = model_cfgs["model"], model_cfgs["pose_model"]

    from avsnet_ros.data.batvision import TripletDataset
    from avsnet_ros.data.torch_dataset import TorchTripletDataset
    from avsnet_ros.models.builder import build_model
    from training.datasets import FirstN, data_kind
    from training.loop import check_resume
    from training.relative_task import RelativeTask

    def train(ctx) -> int:
        seed = cfg.train.seed
        seed_everything(seed)
        if cfg.pose_source not in POSE_SOURCES:
            raise ConfigError(f"pose_source must be one of {', '.join(POSE_SOURCES)}, got {cfg.pose_source!r}")
        if cfg.transformers_model and cfg.init_depthnet:
            raise ConfigError("--init-depthnet starts a DepthNet; --transformers-model trains another network "
                              "(its folder's weights are its start): give one of them")

        kind = data_kind(args.data, cfg.data.train_split)
        interval = cfg.data.triplet_interval or (20 if kind == "bv1" else 1)
        run_dir = Path(args.out)
        config_dict["data"]["triplet_interval"] = interval
        check_resume(run_dir, args.resume, config_dict, RESUME_KEYS, cfg.train)  # fail fast, before loading data

        train_data, val_data = open_train_val(args.data, cfg.data)
        max_depth_m = train_data.max_depth_m
        train_triplets = TripletDataset(train_data.dataset, interval)
        if len(train_triplets) == 0:
            raise DatasetError(f"{args.data} ({cfg.data.train_split}) has no frame triple (t-{interval}, t, "
                             f"t+{interval}) inside one sequence: check the sequence/frame columns or --interval")
        if cfg.pose_source == "odometry":
            _require_poses(train_triplets, args.data)
        train_base = FirstN(train_triplets, cfg.data.max_train_samples) if cfg.data.max_train_samples \
            else train_triplets
        val_base = None
        if val_data is not None:
            val_base = TripletDataset(val_data.dataset, interval)
            if cfg.data.max_val_samples:
                val_base = FirstN(val_base, cfg.data.max_val_samples)
            if len(val_base) == 0:
                LOG.warning("validation split has no frame triple: no validation")
                val_base = None
        size_hw = tuple(depth_cfg.image_size_hw)
        train_set = TorchTripletDataset(train_base, size_hw, hflip_prob=cfg.data.hflip_prob, seed=seed,
                                        colour_jitter_prob=cfg.data.colour_jitter_prob,
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

        if cfg.transformers_model:
            import torch

            from training.hf_relative import build_transformers_depthnet

            depthnet = build_transformers_depthnet(cfg.transformers_model, depth_cfg.image_size_hw,
                                                   depth_cfg.min_depth, depth_cfg.max_depth, seed=seed,
                                                   input_mode=depth_cfg.input)
            pretrained = (Path(cfg.transformers_model) / "model.safetensors").is_file()
            # the head's level and spread into the sigmoid, from the first training frames (no augmentation)
            first = TorchTripletDataset(train_base, size_hw, hflip_prob=0.0, seed=seed, max_depth_m=max_depth_m)
            rgb = torch.stack([first[i]["rgb"] for i in range(min(8, len(first)))])
            a, b = depthnet.calibrate_output(rgb)
            LOG.info("head calibrated into the sigmoid: a %.4g, b %.4g (resume replaces them)", a, b)
            LOG.info("stage 2 network: transformers %s from %s (%s)", depthnet.config.model_type,
                     cfg.transformers_model, "its weights" if pretrained else "random weights")
        else:
            depthnet = build_model(depth_cfg)
            if cfg.init_depthnet:
                _init_from(depthnet, cfg.init_depthnet)
        posenet = build_model(pose_cfg) if cfg.pose_source == "posenet" else None
        command = command_line(argv, "training/train_relative.py")
        task = RelativeTask(depthnet, depth_cfg, posenet, pose_cfg, cfg.loss.ssim_weight, cfg.loss.smoothness_weight,
                            cfg.loss.automask, max_depth_m, val_has_depth, cfg.loss.odometry_free_scale)
        task.extra = {"training_command": command, "data": str(args.data), "triplet_interval": interval}

        def summary(result) -> dict:
            return run_summary("relative", run_dir, "depthnet", result, yaml_path, train_triples=len(train_set),
                               val_triples=0 if val_set is None else len(val_set), triplet_interval=interval)

        return train_and_report(ctx, args, task, train_set, val_set, cfg, run_dir, config_dict, command, RESUME_KEYS,
                                callbacks, summary)

    return run_distributed(cfg.train.device, train)


def _init_from(depthnet, path) -> None:
    """Load the DepthNet checkpoint at ``path`` into ``depthnet`` (strict: every tensor, same shapes)."""
    from avsnet_ros.models.checkpoint import CheckpointError, load_model, load_state_into

    loaded, loaded_cfg = load_model(path)
    if loaded_cfg.kind != "depthnet":
        raise CheckpointError(f"--init-depthnet {path} holds a {loaded_cfg.kind!r} model, not a DepthNet")
    load_state_into(depthnet, loaded.state_dict(), source=f"--init-depthnet {path}")
    LOG.info("DepthNet starts from the weights of %s", path)


def _require_poses(triplets, data) -> None:
    """pose_source odometry: every frame of the triples needs a camera pose (checked without loading
    the images when the dataset has CSV rows)."""
    from avsnet_ros.data.poses import POSE_COLUMNS
    from avsnet_ros.data.samples import DatasetError

    rows = getattr(triplets.base, "rows", None)
    if rows is None:
        missing = [i for i in range(min(len(triplets), 8)) if any(s.pose_world_cam is None for s in triplets[i])]
    else:
        used = {i for triple in triplets.indices for i in triple}
        missing = [i for i in sorted(used) if rows[i].pose_world_cam is None]
    if missing:
        from avsnet_ros.data.sources import is_bag

        fix = ("record nav_msgs/Odometry on data.bag_odometry_topic (default /odom) while the camera runs, and set "
               "data.bag_camera_pose to the camera's pose on the base" if is_bag(data)
               else f"add the columns {', '.join(POSE_COLUMNS)}")
        raise DatasetError(f"--pose-source odometry: {data} has frames without a camera pose (e.g. index "
                           f"{missing[0]}; {len(missing)} found): {fix}")


if __name__ == "__main__":
    raise SystemExit(main())
