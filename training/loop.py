"""The shared training loop of both stages: data order, optimisation, validation, logging, resume.

A stage plugs in as a `TrainTask` (training/avs_task.py, training/relative_task.py):
  - `train_module`: an nn.Module whose forward(batch) returns (loss, logs); DDP wraps it, so
    gradients are averaged across ranks in backward.
  - `validate_batch(batch) -> list[dict]`: per-image metrics (keys of avsnet_ros.metrics.METRIC_KEYS,
    optionally "loss" and "valid_pixels") computed with the unwrapped model.
  - `models_to_save()`: {subdir: (module, model_config)} written with avsnet_ros.models.checkpoint.

Exact resume: the data order of epoch e is a permutation seeded by (seed, e)
(`ResumableDistributedSampler`), per-sample augmentation randomness is seeded by (seed, e, index)
(`EpochSeededDataset`, independent of DataLoader workers), DataLoaders get their own generator (so
creating one never consumes the global RNG), and a checkpoint stores optimiser, scheduler, grad
scaler, the global RNG states of every rank, and the position inside the epoch. A run killed
(even by SIGKILL, between two `--save-every-steps` checkpoints) and resumed replays exactly the
same steps and ends with bit-identical weights on CPU.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from avsnet_ros.data.samples import DatasetError
from avsnet_ros.metrics import METRIC_KEYS
from training import checkpointing as ckpt
from training.distributed import DistContext, all_reduce_sum, broadcast_buffers

LOG = logging.getLogger("avsnet_ros.training")

# Test/debug hooks (environment variables, read once per run):
#   AVSNET_TRAIN_STEP_DELAY_S: sleep this long after each optimisation step (lets a test SIGKILL a
#       run between two checkpoints without racing it to the end; changes no numbers).
#   AVSNET_WRITE_WEIGHT_HASH: a folder; at the end every rank writes rank<r>.sha256 with the hash of
#       its model weights (the DDP test compares the ranks).
ENV_STEP_DELAY = "AVSNET_TRAIN_STEP_DELAY_S"
ENV_WEIGHT_HASH_DIR = "AVSNET_WRITE_WEIGHT_HASH"


class ResumeError(ValueError):
    """The run directory cannot be resumed with this configuration (the message says why)."""


# ============================================================================= configuration
@dataclass
class OptimConfig:
    """AdamW + learning-rate schedule (stepped once per optimisation step).

    schedule: "onecycle" (torch OneCycleLR: warm-up over pct_start of the steps from lr/div_factor
    to lr, then cosine down to lr/(div_factor*final_div_factor)), "cosine" (CosineAnnealingLR from
    lr to lr*min_lr_ratio) or "constant".
    """

    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    pct_start: float = 0.1
    div_factor: float = 25.0
    final_div_factor: float = 100.0
    min_lr_ratio: float = 0.01
    grad_clip_norm: float = 1.0  # max total L2 norm of the gradients; 0 disables clipping


@dataclass
class LoopConfig:
    """Loop settings. batch_size is per process (torchrun: global batch = batch_size * N)."""

    epochs: int = 10
    batch_size: int = 8
    val_batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision (float16 autocast + GradScaler); only on CUDA
    num_workers: int = 0
    save_every_steps: int = 0  # extra mid-epoch checkpoints every N global steps (0: epoch ends only)
    keep_last: int = 2  # complete checkpoints kept in RUN_DIR/checkpoints
    log_every_steps: int = 10
    max_nonfinite_steps: int = 20  # consecutive skipped (NaN/inf loss) steps before aborting
    progress: bool = True  # tqdm bars (rank 0)


# ============================================================================= data order
def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-like mixing, stable across runs and platforms)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + ((x << 6) & 0xFFFFFFFFFFFFFFFF) + (x >> 2))
        x &= 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (epoch-seeded permutation, rank shard) that can start mid-epoch.

    With num_replicas=1, rank=0 it needs no process group. `set_start_index(k)` skips the first
    k indices of this rank's shard of the current epoch (k = batches done * batch size).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.start_index = 0

    def set_start_index(self, start_index: int) -> None:
        if not 0 <= start_index <= self.num_samples:
            raise ValueError(f"start index {start_index} outside [0, {self.num_samples}]")
        self.start_index = start_index

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class EpochSeededDataset(Dataset):
    """Makes a dataset's random augmentation a function of (seed, epoch, index).

    Around each base[i] call the global torch/numpy/python RNGs are seeded from
    derive_seed(seed, epoch, i) and restored afterwards, so the sample is the same whether it is
    loaded in the main process or a worker, before or after a resume; the caller's RNG streams are
    untouched.
    """

    def __init__(self, base: Dataset, seed: int):
        self.base = base
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):  # e.g. TorchSampleDataset's (seed, epoch, index) flips
            self.base.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        s = derive_seed(self.seed, self.epoch, index)
        np_state = np.random.get_state()
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            np.random.seed(s % (2 ** 32))
            random.seed(s)
            try:
                return self.base[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


def seeded_generator(*parts: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def _worker_init(worker_id: int) -> None:
    # Keep each worker single-threaded: 2-core machines, and workers only decode images/STFTs.
    torch.set_num_threads(1)


# ============================================================================= task protocol
class TrainTask(Protocol):
    """What a training stage provides to `run_training`."""

    name: str
    selection_metric: str  # validation key minimised for RUN_DIR/best ("abs_rel" or "loss")
    train_module: nn.Module

    def models_to_save(self) -> dict[str, tuple]: ...  # {subdir: (module, config[, extra])}

    def validate_batch(self, batch: Mapping[str, Any]) -> list[dict[str, float]]: ...


def move_to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and torch.is_tensor(batch[0]):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


# ============================================================================= optimiser
def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    # foreach=False: the single-tensor path gives the same arithmetic on every run and device count.
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                             foreach=False)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    total_steps = max(1, int(total_steps))
    if cfg.schedule == "onecycle":
        # OneCycleLR needs a warm-up of more than one step (pct_start * total_steps > 1); very short
        # runs (tests, smoke runs) get the shortest valid warm-up instead of a division by zero.
        pct_start = min(max(cfg.pct_start, 1.5 / total_steps), 0.9)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct_start,
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor, anneal_strategy="cos",
            cycle_momentum=False)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps,
                                                          eta_min=cfg.lr * cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


# ============================================================================= validation
def run_validation(task: TrainTask, loader: DataLoader, ctx: DistContext, amp: bool,
                   desc: str = "val", progress: bool = True) -> dict[str, float]:
    """Mean over images of each per-image metric, reduced across ranks (sums and counts).

    Images without a valid pixel (NaN metrics) are left out of the mean, as in evaluation.
    Returns {key: mean, ..., "count": images used}.
    """
    from tqdm.auto import tqdm

    keys = list(METRIC_KEYS) + ["loss"]
    sums = torch.zeros(len(keys), dtype=torch.float64)
    counts = torch.zeros(len(keys), dtype=torch.float64)
    images = torch.zeros(1, dtype=torch.float64)
    for module in task.models_to_save().values():
        module[0].eval()
    bar = tqdm(loader, desc=desc, leave=False, disable=not (ctx.is_main and progress), dynamic_ncols=True)
    with torch.no_grad():
        for batch in bar:
            batch = move_to_device(batch, ctx.device)
            with torch.autocast(device_type=ctx.device.type, dtype=torch.float16,
                                enabled=amp and ctx.device.type == "cuda"):
                per_image = task.validate_batch(batch)
            for metrics in per_image:
                valid_image = math.isfinite(float(metrics.get("abs_rel", float("nan"))))
                images += float(valid_image)
                for j, key in enumerate(keys):
                    v = metrics.get(key)
                    if v is not None and math.isfinite(float(v)):
                        sums[j] += float(v)
                        counts[j] += 1.0
    sums = all_reduce_sum(ctx, sums)
    counts = all_reduce_sum(ctx, counts)
    images = all_reduce_sum(ctx, images)
    out = {k: (float(sums[j] / counts[j]) if counts[j] > 0 else float("nan")) for j, k in enumerate(keys)}
    out["count"] = int(images.item())
    return out


def shard_for_rank(dataset: Dataset, ctx: DistContext) -> Dataset:
    """Every world_size-th item from rank: no padding, so reduced means count each image once."""
    if not ctx.distributed:
        return dataset
    return Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))


# ============================================================================= logging
class RunLogger:
    """Rank-0 TensorBoard writer + CSV of per-epoch rows (rewritten from the history each epoch)."""

    def __init__(self, run_dir: Path, ctx: DistContext, purge_step: int | None):
        self.run_dir = run_dir
        self.enabled = ctx.is_main
        self.tb = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        if self.tb is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                self.tb.add_scalar(f"{prefix}/{key}", float(value), step)

    def write_csv(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not self.enabled:
            return
        columns: list[str] = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
        path = self.run_dir / "log.csv"
        tmp = path.with_name(f".log.csv.tmp{os.getpid()}")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
        os.replace(tmp, path)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


# ============================================================================= main loop
@dataclass
class TrainResult:
    """Summary returned by run_training (rank 0 values; other ranks get the same numbers)."""

    run_dir: str
    epochs: int
    global_step: int
    best_epoch: Optional[int]
    best_value: Optional[float]
    selection_metric: str
    final_val: dict
    last_checkpoint: Optional[str]
    best_dir: Optional[str]
    resumed_from: Optional[str]
    train_time_s: float
    world_size: int
    device: str
    history: list = field(default_factory=list)


def _config_fingerprint(cfg_dict: Mapping) -> str:
    return json.dumps(cfg_dict, sort_keys=True, default=str)


def check_resume(run_dir: Path, resume: bool, config_dict: Mapping[str, Any], compare_keys: Sequence[str],
                 loop_cfg: LoopConfig) -> Path | None:
    """The checkpoint to resume from (None: fresh start); ResumeError when the run dir cannot be used.

    Cheap (reads train_state.pt only): CLIs call it before loading data so that a wrong --out or a
    changed config fails at once. A run directory with checkpoints is never overwritten without
    --resume; --resume needs the same model/data/optim/loss sections, epochs and batch size (they
    fix the schedule and the data order).
    """
    run_dir = Path(run_dir)
    latest = ckpt.latest_checkpoint(run_dir) if run_dir.exists() else None
    if latest is None:
        return None
    if not resume:
        raise ResumeError(
            f"{run_dir} already holds checkpoints ({latest.name}); pass --resume to continue it or "
            "choose a new --out")
    state = ckpt.load_train_state(latest)
    saved_fp = json.loads(state["config_fingerprint"])
    now_fp = json.loads(_config_fingerprint({k: config_dict.get(k) for k in compare_keys}))
    if saved_fp != now_fp:
        diff = sorted(k for k in set(saved_fp) | set(now_fp) if saved_fp.get(k) != now_fp.get(k))
        raise ResumeError(f"cannot resume {latest}: config sections {diff} differ from the saved "
                          "run (they fix the schedule and the data); use the saved config.yaml")
    if int(state["epochs_total"]) != loop_cfg.epochs or int(state["batch_size"]) != loop_cfg.batch_size:
        raise ResumeError(f"cannot resume {latest}: it was started with epochs="
                          f"{state['epochs_total']}, batch_size={state['batch_size']}")
    return latest


def run_training(
    task: TrainTask,
    train_set: Dataset,
    val_set: Dataset | None,
    loop_cfg: LoopConfig,
    optim_cfg: OptimConfig,
    ctx: DistContext,
    run_dir: Path,
    resume: bool,
    config_dict: Mapping[str, Any],
    on_fresh_start: Callable[[], None] | None = None,
    resume_compare_keys: Sequence[str] = ("model", "data", "optim", "loss"),
) -> TrainResult:
    """Train `task` for loop_cfg.epochs epochs (or the rest of them after a resume).

    Args:
        task: the stage.
        train_set: map-style dataset of dict batches (its randomness is made (seed, epoch,
            index)-deterministic here).
        val_set: validation dataset (None: no validation; best = lowest train loss).
        loop_cfg, optim_cfg: see LoopConfig / OptimConfig.
        ctx: from training.distributed.init_distributed.
        run_dir: output folder (created by rank 0).
        resume: continue from RUN_DIR/checkpoints/latest.txt when it exists.
        config_dict: the full resolved config (saved in the checkpoint; on resume the sections in
            resume_compare_keys must be unchanged, since the schedule and data depend on them).
        on_fresh_start: called once before the first step of a fresh run (e.g. to compute the
            spectrogram statistics); not called on resume, where the weights carry them.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    step_delay_s = float(os.environ.get(ENV_STEP_DELAY, "0") or 0)

    # ---------------------------------------------------------------- data
    seeded_train = EpochSeededDataset(train_set, seed=loop_cfg.seed)
    sampler = ResumableDistributedSampler(seeded_train, num_replicas=ctx.world_size, rank=ctx.rank,
                                          seed=loop_cfg.seed, shuffle=True)
    batch_size = loop_cfg.batch_size
    steps_per_epoch = sampler.num_samples // batch_size
    if steps_per_epoch < 1:
        raise DatasetError(
            f"training set too small: {len(train_set)} samples over {ctx.world_size} process(es) give "
            f"{sampler.num_samples} per process, fewer than batch_size={batch_size}")
    total_steps = steps_per_epoch * loop_cfg.epochs
    pin = ctx.device.type == "cuda"

    val_loader = None
    if val_set is not None and len(val_set) > 0:
        val_loader = DataLoader(shard_for_rank(val_set, ctx), batch_size=loop_cfg.val_batch_size,
                                shuffle=False, num_workers=loop_cfg.num_workers, pin_memory=pin,
                                worker_init_fn=_worker_init,
                                generator=seeded_generator(loop_cfg.seed, 0x7A1),
                                persistent_workers=False)

    # ---------------------------------------------------------------- optimisation
    module = task.train_module.to(ctx.device)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, total_steps)
    use_amp = bool(loop_cfg.amp and ctx.device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # ---------------------------------------------------------------- resume
    start_epoch, start_batch, global_step = 0, 0, 0
    history: list[dict] = []
    step_losses: list[float] = []
    best_value: float | None = None
    best_epoch: int | None = None
    resumed_from: str | None = None
    fingerprint = {k: config_dict.get(k) for k in resume_compare_keys}
    latest = check_resume(run_dir, resume, config_dict, resume_compare_keys, loop_cfg)
    if latest is not None:
        state = ckpt.load_train_state(latest)
        for sub, entry in task.models_to_save().items():
            ckpt.load_checkpoint_weights(latest, sub, entry[0])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        start_batch = int(state["batch_in_epoch"])
        global_step = int(state["global_step"])
        history = list(state["history"])
        step_losses = state["step_losses"].tolist()
        best_value = state.get("best_value")
        best_epoch = state.get("best_epoch")
        rng_states = state["rng"]
        if int(state["world_size"]) != ctx.world_size:
            LOG.warning("resuming a %d-process run with %d processes: data order and RNG streams "
                        "differ from an uninterrupted run", int(state["world_size"]), ctx.world_size)
            start_batch = min(start_batch, steps_per_epoch)
        ckpt.restore_rng_state(rng_states[ctx.rank if ctx.rank < len(rng_states) else 0])
        resumed_from = str(latest)
        if ctx.is_main:
            LOG.info("resumed from %s: epoch %d, batch %d, step %d", latest, start_epoch, start_batch,
                     global_step)
    elif on_fresh_start is not None:
        on_fresh_start()

    # DDP after the weights are final (it broadcasts rank 0's parameters and buffers).
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Buffers (BatchNorm statistics) are synced from rank 0 at every forward (DDP's default).
        ddp_module: nn.Module = DDP(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                    else None,
                                    find_unused_parameters=getattr(task, "find_unused_parameters", False))
    else:
        ddp_module = module

    logger = RunLogger(run_dir, ctx, purge_step=global_step if resumed_from else None)
    logger.write_csv(history)

    def gather_rng() -> list[dict]:
        mine = ckpt.capture_rng_state()
        if not ctx.distributed:
            return [mine]
        import torch.distributed as dist

        everyone: list = [None] * ctx.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def save(epoch_next: int, batch_next: int) -> Path | None:
        rng_all = gather_rng()  # collective: every rank must call save()
        if not ctx.is_main:
            return None
        train_state = {
            "format": 1,
            "stage": task.name,
            "epoch": epoch_next,
            "batch_in_epoch": batch_next,
            "global_step": global_step,
            "epochs_total": loop_cfg.epochs,
            "batch_size": batch_size,
            "world_size": ctx.world_size,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {},
            "rng": rng_all,
            "sampler": {"seed": loop_cfg.seed, "epoch": epoch_next, "start_index": batch_next * batch_size},
            "history": history,
            "step_losses": torch.tensor(step_losses, dtype=torch.float64),
            "best_value": best_value,
            "best_epoch": best_epoch,
            "config_fingerprint": _config_fingerprint(fingerprint),
            "config_json": json.dumps(config_dict, sort_keys=True, default=str),
        }
        name = ckpt.checkpoint_name(epoch_next, global_step)
        return ckpt.save_training_checkpoint(run_dir, name, task.models_to_save(), train_state,
                                             keep_last=loop_cfg.keep_last)

    nonfinite_run = 0
    last_ckpt: Path | None = ckpt.latest_checkpoint(run_dir) if ctx.is_main and run_dir.exists() else None
    final_val: dict = {}
    epoch_bar = tqdm(range(start_epoch, loop_cfg.epochs), desc=f"{task.name} epochs", initial=start_epoch,
                     total=loop_cfg.epochs, disable=not (ctx.is_main and loop_cfg.progress),
                     dynamic_ncols=True)
    for epoch in epoch_bar:
        module.train()
        seeded_train.set_epoch(epoch)
        sampler.set_epoch(epoch)
        first_batch = start_batch if epoch == start_epoch else 0
        sampler.set_start_index(first_batch * batch_size)
        loader = DataLoader(seeded_train, batch_size=batch_size, sampler=sampler, drop_last=True,
                            num_workers=loop_cfg.num_workers, pin_memory=pin, worker_init_fn=_worker_init,
                            generator=seeded_generator(loop_cfg.seed, epoch, 0xDA7A),
                            persistent_workers=False)
        epoch_loss_sum, epoch_loss_n = 0.0, 0
        # The epoch's running loss also needs the steps done before a mid-epoch resume.
        done_before = ([v for v in step_losses[len(step_losses) - first_batch:] if math.isfinite(v)]
                       if first_batch else [])
        epoch_loss_sum += float(sum(done_before))
        epoch_loss_n += len(done_before)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{loop_cfg.epochs}", leave=False, initial=first_batch,
                   total=steps_per_epoch, disable=not (ctx.is_main and loop_cfg.progress), dynamic_ncols=True)
        for batch_idx, batch in enumerate(bar, start=first_batch):
            if batch_idx >= steps_per_epoch:
                break
            batch = move_to_device(batch, ctx.device)
            with torch.autocast(device_type=ctx.device.type, dtype=torch.float16, enabled=use_amp):
                loss, logs = ddp_module(batch)
            finite = torch.isfinite(loss.detach()).float()
            stats = all_reduce_sum(ctx, torch.stack([torch.nan_to_num(loss.detach().float(), 0.0, 0.0, 0.0),
                                                     1.0 - finite]).cpu().double())
            optimizer.zero_grad(set_to_none=True)
            if stats[1].item() > 0:
                # NaN/inf on some rank: every rank skips this step together (no backward, so no
                # gradient all-reduce is left waiting); the schedule still advances.
                nonfinite_run += 1
                LOG.warning("non-finite loss at step %d (%d in a row): step skipped", global_step,
                            nonfinite_run)
                if nonfinite_run >= loop_cfg.max_nonfinite_steps:
                    raise FloatingPointError(
                        f"{nonfinite_run} consecutive non-finite losses at step {global_step}; "
                        "lower optim.lr or check the data (all-invalid depth maps?)")
                scheduler.step()
                global_step += 1
                step_losses.append(float("nan"))
                continue
            nonfinite_run = 0
            scaler.scale(loss).backward()
            grad_norm = None
            if optim_cfg.grad_clip_norm and optim_cfg.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, optim_cfg.grad_clip_norm, foreach=False)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            global_step += 1
            mean_loss = float(stats[0].item()) / ctx.world_size
            step_losses.append(mean_loss)
            epoch_loss_sum += mean_loss
            epoch_loss_n += 1
            if ctx.is_main:
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if global_step % max(1, loop_cfg.log_every_steps) == 0:
                    scalars = {"loss": mean_loss, "lr": scheduler.get_last_lr()[0]}
                    if grad_norm is not None:
                        scalars["grad_norm"] = float(grad_norm)
                    for k, v in logs.items():
                        if k != "loss":
                            scalars[k] = float(v)
                    logger.scalars("train", scalars, global_step)
            if step_delay_s > 0:
                time.sleep(step_delay_s)
            if (loop_cfg.save_every_steps > 0 and global_step % loop_cfg.save_every_steps == 0
                    and batch_idx + 1 < steps_per_epoch):
                saved = save(epoch, batch_idx + 1)
                last_ckpt = saved or last_ckpt
        bar.close()

        # ------------------------------------------------------------ end of epoch
        # DDP syncs buffers (BatchNorm statistics) from rank 0 at the START of each forward, so
        # after the last step every rank holds its own update; make them rank 0's again so that
        # validation and the saved weights are the same on every rank.
        broadcast_buffers(ctx, module)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": global_step,
                               "train_loss": epoch_loss_sum / max(1, epoch_loss_n),
                               "lr": scheduler.get_last_lr()[0]}
        if val_loader is not None:
            val = run_validation(task, val_loader, ctx, use_amp, progress=loop_cfg.progress)
            module.train()
            row.update({f"val_{k}": v for k, v in val.items()})
            final_val = val
        row["time_s"] = time.perf_counter() - t_start
        history.append(row)
        sel_key = f"val_{task.selection_metric}" if val_loader is not None else "train_loss"
        sel_value = row.get(sel_key, float("nan"))
        improved = math.isfinite(sel_value) and (best_value is None or sel_value < best_value)
        if improved:
            best_value, best_epoch = float(sel_value), epoch + 1
        if ctx.is_main:
            logger.scalars("epoch", {k: v for k, v in row.items() if k not in ("epoch", "step")}, global_step)
            logger.write_csv(history)
            if improved:
                ckpt.save_best(run_dir, task.models_to_save(),
                               {"epoch": epoch + 1, "step": global_step, "metric": sel_key,
                                "value": float(sel_value), "row": row})
            epoch_bar.set_postfix({sel_key: f"{sel_value:.4f}"})
        saved = save(epoch + 1, 0)
        last_ckpt = saved or last_ckpt
    epoch_bar.close()

    if ctx.is_main:
        from training.plots import plot_training_curves

        plot_training_curves(history, step_losses, run_dir / "curves.png", title=f"{task.name} training")
    logger.close()
    hash_dir = os.environ.get(ENV_WEIGHT_HASH_DIR)
    if hash_dir:
        Path(hash_dir).mkdir(parents=True, exist_ok=True)
        digest = "\n".join(f"{sub} {ckpt.state_dict_hash(entry[0])}" for sub, entry in
                           sorted(task.models_to_save().items()))
        (Path(hash_dir) / f"rank{ctx.rank}.sha256").write_text(digest + "\n")
    if not final_val and history:
        final_val = {k[4:]: v for k, v in history[-1].items() if k.startswith("val_")}
    return TrainResult(
        run_dir=str(run_dir), epochs=loop_cfg.epochs, global_step=global_step, best_epoch=best_epoch,
        best_value=best_value, selection_metric=task.selection_metric, final_val=final_val,
        last_checkpoint=str(last_ckpt) if last_ckpt else None,
        best_dir=str(run_dir / "best") if (run_dir / "best").exists() else None,
        resumed_from=resumed_from, train_time_s=time.perf_counter() - t_start,
        world_size=ctx.world_size, device=str(ctx.device), history=history)
