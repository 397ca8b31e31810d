#!/usr/bin/env python3
"""Stage 1: train AVS-Net (RGB + echoes -> pseudo-metric depth) or its RGB-only baseline.

    python training/train_avs.py --data ROOT_OR_BAG --out runs/avs [--no-audio] [--config YAML]
        [--epochs N] [--resume] [--device auto|cpu|cuda] [--seed S] [--save-every-steps N] [--json]
    torchrun --nproc_per_node 2 training/train_avs.py --data ... --out ...     (DDP)

Supervised with the scaled scale-invariant loss (paper eq. 4) on BV2-layout folders (BatVision V2
or the synthetic world) or a rosbag2. Writes to RUN_DIR: checkpoints/ (resume state), best/model
(lowest validation Abs Rel; config.json + model.safetensors), log.csv, tensorboard/, curves.png,
config.yaml (the resolved config) and COMMAND.txt.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = "train_avs.yaml"
RESUME_KEYS = ("model", "data", "optim", "loss", "spec_stats_max_samples")
LOG = logging.getLogger("avsnet_ros.training")


def build_parser() -> argparse.ArgumentParser:
    from training.cli_common import training_parser

    p, model = training_parser("train_avs.py", __doc__, DEFAULT_CONFIG, "model", "tiny 128x256, paper 256x512",
                               "train_avs_paper.yaml")
    model.add_argument("--no-audio", action="store_true",
                       help="train the RGB-only baseline (model.use_audio=false; same code path)")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    """This script's flags as config overrides (applied last)."""
    from training.cli_common import preset_overrides

    extra = preset_overrides(args, ("model",))
    if args.no_audio:
        extra.setdefault("model", {})["use_audio"] = False
    return extra


def main(argv: list[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the CLI with ``argv`` (default sys.argv[1:]); ``callbacks``: training.loop.Callback objects
    handed to the Trainer (tests: test/train_with_hooks.py). Returns the exit code."""
    from training.cli_common import (command_line, open_train_val, parse_training_cli, run_distributed, run_summary,
                                     seed_everything, train_and_report)
    from training.configs import AVSTrainConfig

    parsed = parse_training_cli(argv, build_parser(), AVSTrainConfig, DEFAULT_CONFIG, {"model": "avsnet"},
                                _overrides)
    if isinstance(parsed, int):
        return parsed
    args, cfg, yaml_path, model_cfgs, config_dict = parsed
    model_cfg = model_cfgs["model"]

    from avsnet_ros.data.torch_dataset import TorchSampleDataset
    from avsnet_ros.models.builder import build_model
    from training.avs_task import AVSTask, compute_spectrogram_stats
    from training.datasets import FirstN
    from training.loop import check_resume

    def train(ctx) -> int:
        seed = cfg.train.seed
        seed_everything(seed)

        run_dir = Path(args.out)
        check_resume(run_dir, args.resume, config_dict, RESUME_KEYS, cfg.train)  # fail fast, before loading data

        train_data, val_data = open_train_val(args.data, cfg.data)
        max_depth_m = train_data.max_depth_m
        if max_depth_m > model_cfg.max_depth_m:
            LOG.warning("data max depth %.1f m exceeds the model's max_depth_m %.1f m: farther pixels "
                        "cannot be predicted", max_depth_m, model_cfg.max_depth_m)
        train_base = train_data.dataset
        if cfg.data.max_train_samples:
            train_base = FirstN(train_base, cfg.data.max_train_samples)
        val_base = None
        if val_data is not None:
            val_base = val_data.dataset
            if cfg.data.max_val_samples:
                val_base = FirstN(val_base, cfg.data.max_val_samples)

        size_hw = tuple(model_cfg.image_size_hw)
        use_audio = bool(model_cfg.use_audio)
        train_set = TorchSampleDataset(train_base, size_hw, audio_crop=model_cfg.audio_crop, max_depth_m=max_depth_m,
                                       hflip_prob=cfg.data.hflip_prob, seed=seed,
                                       colour_jitter_prob=cfg.data.colour_jitter_prob, with_audio=use_audio,
                                       audio_frontend=model_cfg.audio_frontend)
        val_set = None
        if val_base is not None and len(val_base) > 0:
            val_set = TorchSampleDataset(val_base, size_hw, audio_crop=model_cfg.audio_crop, max_depth_m=max_depth_m,
                                         hflip_prob=0.0, seed=seed, with_audio=use_audio,
                                         audio_frontend=model_cfg.audio_frontend)
        if ctx.is_main:
            LOG.info("stage 1 (%s): %d train / %d val samples from %s (%s, max depth %.0f m), %s preset at %dx%d, "
                     "%d process(es) on %s", "RGB+echo" if use_audio else "RGB-only", len(train_set),
                     0 if val_set is None else len(val_set), args.data, train_data.kind, max_depth_m,
                     model_cfg.preset, size_hw[0], size_hw[1], ctx.world_size, ctx.device)

        model = build_model(model_cfg)
        command = command_line(argv, "training/train_avs.py")
        extra_json = {"training_command": command, "data": str(args.data), "max_depth_m_data": max_depth_m}
        task = AVSTask(model, model_cfg, cfg.loss.alpha, cfg.loss.lam, max_depth_m)
        task.extra = extra_json

        def on_fresh_start() -> None:
            if not use_audio:
                return
            stats_set = TorchSampleDataset(train_base, size_hw, audio_crop=model_cfg.audio_crop,
                                           max_depth_m=max_depth_m, hflip_prob=0.0, seed=seed, with_audio=True,
                                           audio_frontend=model_cfg.audio_frontend)
            mean, std, n = compute_spectrogram_stats(stats_set, ctx, cfg.spec_stats_max_samples,
                                                     num_workers=cfg.train.num_workers, progress=cfg.train.progress)
            model.set_spectrogram_stats(mean, std)
            extra_json["spec_stats_samples"] = n
            if ctx.is_main:
                LOG.info("spectrogram log1p stats over %d training samples: mean %s std %s", n,
                         [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()])

        def summary(result) -> dict:
            report = run_summary("avs", run_dir, "model", result, yaml_path, use_audio=use_audio,
                                 train_samples=len(train_set), val_samples=0 if val_set is None else len(val_set))
            LOG.info("done: best %s %.4f at epoch %s -> %s", result.selection_metric,
                     result.best_value if result.best_value is not None else float("nan"), result.best_epoch,
                     report["best_model"])
            return report

        return train_and_report(ctx, args, task, train_set, val_set, cfg, run_dir, config_dict, command, RESUME_KEYS,
                                callbacks, summary, on_fresh_start=on_fresh_start)

    return run_distributed(cfg.train.device, train)


if __name__ == "__main__":
    raise SystemExit(main())
