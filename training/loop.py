"""The shared training loop of both stages: data order, optimisation, validation, logging, resume.

`Trainer` (ZoeDepth-like shape: `train_on_batch`, `train_epoch`, `validate`, `end_epoch`,
`save_checkpoint`, `resume`, `fit`) runs it; `Callback` objects get `on_train_start`, `on_step_end`,
`on_epoch_end` and `on_train_end` (tests inject them; production reads no test switches).
`run_training(...)` is the one-call form the CLIs use.

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
from avsnet_ros.fileio import atomic_open
from avsnet_ros.metrics import METRIC_KEYS
from training import checkpointing as ckpt
from training.distributed import DistContext, all_reduce_sum, broadcast_buffers

LOG = logging.getLogger("avsnet_ros.training")


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
    """What a training stage provides to `Trainer`."""

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
        with atomic_open(self.run_dir / "log.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow(row)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


# ============================================================================= trainer
@dataclass
class TrainResult:
    """Summary returned by Trainer.fit / run_training (rank 0 values; other ranks get the same numbers,
    except last_checkpoint, which only rank 0 writes)."""

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


class Callback:
    """Hooks a `Trainer` calls on every rank; subclass and override the ones you need (all no-ops here).

    Callbacks observe; they must not change the model, optimiser or RNG streams if the run is to stay
    bit-identical to one without them (tests use them to slow a run down or to hash its weights).
    """

    def on_train_start(self, trainer: "Trainer") -> None:
        """After resume (or the fresh-start hook) and DDP wrapping, before the first step."""

    def on_step_end(self, trainer: "Trainer", step: int) -> None:
        """After optimisation step `step` (= trainer.global_step, counted from 1), including a step skipped
        for a non-finite loss and after the mid-epoch checkpoint of that step, if any."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, row: Mapping[str, Any]) -> None:
        """After epoch `epoch` (counted from 1): validated, logged and checkpointed; `row` is its log.csv row."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """After the last epoch, the curves plot and the closing of the logs."""


class Trainer:
    """Trains a `TrainTask`: data order, optimisation, validation, checkpoints, exact resume, logs.

    Usage: ``Trainer(task, train_set, val_set, loop_cfg, optim_cfg, ctx, run_dir, config_dict).fit(resume)``.
    The pieces are public for tests and stages: `train_on_batch`, `train_epoch`, `validate`, `end_epoch`,
    `save_checkpoint`, `resume`. Counters (`global_step`, `history`, `step_losses`, `best_value`,
    `best_epoch`) live on the instance and go into every checkpoint.

    Args:
        task: the stage.
        train_set: map-style dataset of dict batches (its randomness is made (seed, epoch,
            index)-deterministic here).
        val_set: validation dataset (None or empty: no validation; best = lowest train loss).
        loop_cfg, optim_cfg: see LoopConfig / OptimConfig.
        ctx: from training.distributed.init_distributed.
        run_dir: output folder (created by rank 0).
        config_dict: the full resolved config (saved in the checkpoint; on resume the sections in
            resume_compare_keys must be unchanged, since the schedule and data depend on them).
        resume_compare_keys: config sections a resume must match.
        callbacks: `Callback` objects, called in order.
    """

    def __init__(self, task: TrainTask, train_set: Dataset, val_set: Dataset | None, loop_cfg: LoopConfig,
                 optim_cfg: OptimConfig, ctx: DistContext, run_dir: Path, config_dict: Mapping[str, Any],
                 resume_compare_keys: Sequence[str] = ("model", "data", "optim", "loss"),
                 callbacks: Sequence[Callback] = ()):
        self.t_start = time.perf_counter()
        self.task, self.loop_cfg, self.optim_cfg, self.ctx = task, loop_cfg, optim_cfg, ctx
        self.run_dir = Path(run_dir)
        self.config_dict = config_dict
        self.resume_compare_keys = tuple(resume_compare_keys)
        self.callbacks = list(callbacks)
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._build_data(train_set, val_set)
        # Optimisation.
        self.module = task.train_module.to(ctx.device)
        self.ddp_module: nn.Module = self.module  # DDP-wrapped in fit(), after the weights are final
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, optim_cfg)
        self.scheduler = build_scheduler(self.optimizer, optim_cfg, self.steps_per_epoch * loop_cfg.epochs)
        self.use_amp = bool(loop_cfg.amp and ctx.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        # Progress (all restored by resume()).
        self.start_epoch, self.start_batch, self.global_step = 0, 0, 0
        self.history: list[dict] = []
        self.step_losses: list[float] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.resumed_from: str | None = None
        self.last_checkpoint: Path | None = None
        self.final_val: dict = {}
        self.nonfinite_run = 0
        self.logger: RunLogger | None = None

    def _build_data(self, train_set: Dataset, val_set: Dataset | None) -> None:
        ctx, cfg = self.ctx, self.loop_cfg
        self.train_set = EpochSeededDataset(train_set, seed=cfg.seed)
        self.sampler = ResumableDistributedSampler(self.train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                                   seed=cfg.seed, shuffle=True)
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise DatasetError(
                f"training set too small: {len(train_set)} samples over {ctx.world_size} process(es) give "
                f"{self.sampler.num_samples} per process, fewer than batch_size={cfg.batch_size}")
        self.pin_memory = ctx.device.type == "cuda"
        self.val_loader = None
        if val_set is not None and len(val_set) > 0:
            self.val_loader = DataLoader(shard_for_rank(val_set, ctx), batch_size=cfg.val_batch_size,
                                         shuffle=False, num_workers=cfg.num_workers, pin_memory=self.pin_memory,
                                         worker_init_fn=_worker_init, generator=seeded_generator(cfg.seed, 0x7A1),
                                         persistent_workers=False)

    @property
    def selection_key(self) -> str:
        """The log.csv column minimised for RUN_DIR/best."""
        return f"val_{self.task.selection_metric}" if self.val_loader is not None else "train_loss"

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # ---------------------------------------------------------------- resume / checkpoints
    def resume(self, resume: bool) -> Path | None:
        """Load RUN_DIR's latest checkpoint when resuming (ResumeError when it does not fit the config).

        Restores weights, optimiser, scheduler, grad scaler, counters, history and this rank's RNG
        state. Returns the checkpoint, or None for a fresh start (no checkpoint yet).
        """
        latest = check_resume(self.run_dir, resume, self.config_dict, self.resume_compare_keys, self.loop_cfg)
        if latest is None:
            return None
        ctx = self.ctx
        state = ckpt.load_train_state(latest)
        for sub, entry in self.task.models_to_save().items():
            ckpt.load_checkpoint_weights(latest, sub, entry[0])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.start_batch = int(state["batch_in_epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.step_losses = state["step_losses"].tolist()
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        if int(state["world_size"]) != ctx.world_size:
            LOG.warning("resuming a %d-process run with %d processes: data order and RNG streams "
                        "differ from an uninterrupted run", int(state["world_size"]), ctx.world_size)
            self.start_batch = min(self.start_batch, self.steps_per_epoch)
        rng_states = state["rng"]
        ckpt.restore_rng_state(rng_states[ctx.rank if ctx.rank < len(rng_states) else 0])
        self.resumed_from = str(latest)
        self.last_checkpoint = latest if ctx.is_main else None
        if ctx.is_main:
            LOG.info("resumed from %s: epoch %d, batch %d, step %d", latest, self.start_epoch, self.start_batch,
                     self.global_step)
        return latest

    def _gather_rng(self) -> list[dict]:
        mine = ckpt.capture_rng_state()
        if not self.ctx.distributed:
            return [mine]
        import torch.distributed as dist

        everyone: list = [None] * self.ctx.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def save_checkpoint(self, epoch_next: int, batch_next: int) -> Path | None:
        """Checkpoint the position (epoch_next, batch_next): where a resumed run starts.

        Collective (the RNG states of all ranks are gathered): every rank must call it. Rank 0 writes
        and returns the checkpoint folder (also kept in `last_checkpoint`); other ranks return None.
        """
        rng_all = self._gather_rng()
        if not self.ctx.is_main:
            return None
        cfg = self.loop_cfg
        train_state = {
            "format": 1,
            "stage": self.task.name,
            "epoch": epoch_next,
            "batch_in_epoch": batch_next,
            "global_step": self.global_step,
            "epochs_total": cfg.epochs,
            "batch_size": cfg.batch_size,
            "world_size": self.ctx.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_amp else {},
            "rng": rng_all,
            "sampler": {"seed": cfg.seed, "epoch": epoch_next, "start_index": batch_next * cfg.batch_size},
            "history": self.history,
            "step_losses": torch.tensor(self.step_losses, dtype=torch.float64),
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "config_fingerprint": _config_fingerprint({k: self.config_dict.get(k) for k in self.resume_compare_keys}),
            "config_json": json.dumps(self.config_dict, sort_keys=True, default=str),
        }
        name = ckpt.checkpoint_name(epoch_next, self.global_step)
        self.last_checkpoint = ckpt.save_training_checkpoint(self.run_dir, name, self.task.models_to_save(),
                                                             train_state, keep_last=cfg.keep_last)
        return self.last_checkpoint

    # ---------------------------------------------------------------- training
    def train_on_batch(self, batch: Any) -> float | None:
        """One optimisation step on this rank's batch; returns the loss averaged over ranks.

        A non-finite loss on any rank makes every rank skip the step together (no backward, so no
        gradient all-reduce is left waiting; the schedule still advances) and returns None;
        FloatingPointError after loop_cfg.max_nonfinite_steps such steps in a row.
        """
        ctx = self.ctx
        batch = move_to_device(batch, ctx.device)
        with torch.autocast(device_type=ctx.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss, logs = self.ddp_module(batch)
        finite = torch.isfinite(loss.detach()).float()
        stats = all_reduce_sum(ctx, torch.stack([torch.nan_to_num(loss.detach().float(), 0.0, 0.0, 0.0),
                                                 1.0 - finite]).cpu().double())
        self.optimizer.zero_grad(set_to_none=True)
        if stats[1].item() > 0:
            self._skip_nonfinite_step()
            return None
        self.nonfinite_run = 0
        self.scaler.scale(loss).backward()
        grad_norm = None
        if self.optim_cfg.grad_clip_norm and self.optim_cfg.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.optim_cfg.grad_clip_norm, foreach=False)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        mean_loss = float(stats[0].item()) / ctx.world_size
        self.step_losses.append(mean_loss)
        if (ctx.is_main and self.logger is not None
                and self.global_step % max(1, self.loop_cfg.log_every_steps) == 0):
            scalars = {"loss": mean_loss, "lr": self.scheduler.get_last_lr()[0]}
            if grad_norm is not None:
                scalars["grad_norm"] = float(grad_norm)
            scalars.update({k: float(v) for k, v in logs.items() if k != "loss"})
            self.logger.scalars("train", scalars, self.global_step)
        return mean_loss

    def _skip_nonfinite_step(self) -> None:
        self.nonfinite_run += 1
        LOG.warning("non-finite loss at step %d (%d in a row): step skipped", self.global_step, self.nonfinite_run)
        if self.nonfinite_run >= self.loop_cfg.max_nonfinite_steps:
            raise FloatingPointError(
                f"{self.nonfinite_run} consecutive non-finite losses at step {self.global_step}; "
                "lower optim.lr or check the data (all-invalid depth maps?)")
        self.scheduler.step()
        self.global_step += 1
        self.step_losses.append(float("nan"))

    def train_epoch(self, epoch: int) -> float:
        """Train epoch `epoch` (0-based) from its first batch, or from the resume position; returns the
        epoch's mean training loss (steps done before a mid-epoch resume included)."""
        from tqdm.auto import tqdm

        cfg, batch_size = self.loop_cfg, self.loop_cfg.batch_size
        self.module.train()
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        first_batch = self.start_batch if epoch == self.start_epoch else 0
        self.sampler.set_start_index(first_batch * batch_size)
        loader = DataLoader(self.train_set, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                            num_workers=cfg.num_workers, pin_memory=self.pin_memory, worker_init_fn=_worker_init,
                            generator=seeded_generator(cfg.seed, epoch, 0xDA7A), persistent_workers=False)
        # The epoch's running loss also needs the steps done before a mid-epoch resume.
        done_before = [v for v in self.step_losses[len(self.step_losses) - first_batch:] if math.isfinite(v)] \
            if first_batch else []
        loss_sum, loss_n = float(sum(done_before)), len(done_before)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, initial=first_batch,
                   total=self.steps_per_epoch, disable=not (self.ctx.is_main and cfg.progress), dynamic_ncols=True)
        for batch_idx, batch in enumerate(bar, start=first_batch):
            if batch_idx >= self.steps_per_epoch:
                break
            mean_loss = self.train_on_batch(batch)
            if mean_loss is not None:
                loss_sum, loss_n = loss_sum + mean_loss, loss_n + 1
                if self.ctx.is_main:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if (cfg.save_every_steps > 0 and self.global_step % cfg.save_every_steps == 0
                        and batch_idx + 1 < self.steps_per_epoch):
                    self.save_checkpoint(epoch, batch_idx + 1)
            self._emit("on_step_end", self.global_step)
        bar.close()
        return loss_sum / max(1, loss_n)

    def validate(self) -> dict[str, float]:
        """Validation metrics reduced over ranks (see run_validation); leaves the module in train mode."""
        val = run_validation(self.task, self.val_loader, self.ctx, self.use_amp, progress=self.loop_cfg.progress)
        self.module.train()
        return val

    def end_epoch(self, epoch: int, train_loss: float) -> dict[str, Any]:
        """Validate, log, update RUN_DIR/best and checkpoint after epoch `epoch` (0-based); returns its row."""
        # DDP syncs buffers (BatchNorm statistics) from rank 0 at the START of each forward, so
        # after the last step every rank holds its own update; make them rank 0's again so that
        # validation and the saved weights are the same on every rank.
        broadcast_buffers(self.ctx, self.module)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step, "train_loss": train_loss,
                               "lr": self.scheduler.get_last_lr()[0]}
        if self.val_loader is not None:
            self.final_val = self.validate()
            row.update({f"val_{k}": v for k, v in self.final_val.items()})
        row["time_s"] = time.perf_counter() - self.t_start
        self.history.append(row)
        sel_value = row.get(self.selection_key, float("nan"))
        improved = math.isfinite(sel_value) and (self.best_value is None or sel_value < self.best_value)
        if improved:
            self.best_value, self.best_epoch = float(sel_value), epoch + 1
        if self.ctx.is_main:
            self.logger.scalars("epoch", {k: v for k, v in row.items() if k not in ("epoch", "step")},
                                self.global_step)
            self.logger.write_csv(self.history)
            if improved:
                ckpt.save_best(self.run_dir, self.task.models_to_save(),
                               {"epoch": epoch + 1, "step": self.global_step, "metric": self.selection_key,
                                "value": float(sel_value), "row": row})
        self.save_checkpoint(epoch + 1, 0)
        return row

    def fit(self, resume: bool = False, on_fresh_start: Callable[[], None] | None = None) -> TrainResult:
        """Train for loop_cfg.epochs epochs (or the rest of them after a resume).

        Args:
            resume: continue from RUN_DIR/checkpoints/latest.txt when it exists.
            on_fresh_start: called once before the first step of a fresh run (e.g. to compute the
                spectrogram statistics); not called on resume, where the weights carry them.
        """
        from tqdm.auto import tqdm

        if self.resume(resume) is None and on_fresh_start is not None:
            on_fresh_start()
        self._wrap_ddp()
        self.logger = RunLogger(self.run_dir, self.ctx, purge_step=self.global_step if self.resumed_from else None)
        self.logger.write_csv(self.history)
        self._emit("on_train_start")
        cfg = self.loop_cfg
        epoch_bar = tqdm(range(self.start_epoch, cfg.epochs), desc=f"{self.task.name} epochs",
                         initial=self.start_epoch, total=cfg.epochs,
                         disable=not (self.ctx.is_main and cfg.progress), dynamic_ncols=True)
        for epoch in epoch_bar:
            row = self.end_epoch(epoch, self.train_epoch(epoch))
            if self.ctx.is_main:
                epoch_bar.set_postfix({self.selection_key: f"{row.get(self.selection_key, float('nan')):.4f}"})
            self._emit("on_epoch_end", epoch + 1, row)
        epoch_bar.close()
        if self.ctx.is_main:
            from training.plots import plot_training_curves

            plot_training_curves(self.history, self.step_losses, self.run_dir / "curves.png",
                                 title=f"{self.task.name} training")
        self.logger.close()
        self._emit("on_train_end")
        return self.result()

    def _wrap_ddp(self) -> None:
        # DDP after the weights are final (it broadcasts rank 0's parameters and buffers); buffers
        # (BatchNorm statistics) are synced from rank 0 at every forward (DDP's default).
        if not self.ctx.distributed:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        self.ddp_module = DDP(self.module, device_ids=device_ids,
                              find_unused_parameters=getattr(self.task, "find_unused_parameters", False))

    def result(self) -> TrainResult:
        """The run summary so far."""
        final_val = self.final_val
        if not final_val and self.history:
            final_val = {k[4:]: v for k, v in self.history[-1].items() if k.startswith("val_")}
        best_dir = self.run_dir / "best"
        return TrainResult(
            run_dir=str(self.run_dir), epochs=self.loop_cfg.epochs, global_step=self.global_step,
            best_epoch=self.best_epoch, best_value=self.best_value, selection_metric=self.task.selection_metric,
            final_val=final_val, last_checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
            best_dir=str(best_dir) if best_dir.exists() else None, resumed_from=self.resumed_from,
            train_time_s=time.perf_counter() - self.t_start, world_size=self.ctx.world_size,
            device=str(self.ctx.device), history=self.history)


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
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """``Trainer(...).fit(resume, on_fresh_start)``: the call the training CLIs make (arguments as there)."""
    trainer = Trainer(task, train_set, val_set, loop_cfg, optim_cfg, ctx, run_dir, config_dict,
                      resume_compare_keys=resume_compare_keys, callbacks=callbacks)
    return trainer.fit(resume=resume, on_fresh_start=on_fresh_start)
