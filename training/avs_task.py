"""Stage 1 task: AVS-Net (or its RGB-only baseline) trained with the scaled SI loss (paper eq. 4)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from avsnet_ros.metrics import compute_depth_metrics
from training.distributed import DistContext, all_reduce_sum
from training.losses import si_loss

LOG = logging.getLogger("avsnet_ros.training")


class AVSTrainModule(nn.Module):
    """forward(batch) -> (SI loss, logs). Batch: rgb (B,3,H,W) [0,1], spectrogram (B,2,H,W)
    magnitude, depth_m (B,1,H,W) metres (0 invalid), valid (B,1,H,W) bool."""

    def __init__(self, model: nn.Module, alpha: float, lam: float):
        super().__init__()
        self.model = model
        self.alpha = float(alpha)
        self.lam = float(lam)

    def forward(self, batch: Mapping[str, torch.Tensor]):
        use_audio = bool(self.model.config.use_audio)
        out = self.model(batch["rgb"], batch["spectrogram"] if use_audio else None)
        loss = si_loss(out.depth_m.float(), batch["depth_m"], batch["valid"], alpha=self.alpha, lam=self.lam)
        return loss, {}


class AVSTask:
    """TrainTask for training.loop.Trainer (see there)."""

    name = "avs"
    selection_metric = "abs_rel"
    # transformers' DPT neck has weights no forward uses (fusion_stage.layers.0.residual_layer1:
    # the first fusion layer has no earlier feature to add); DDP must be told.
    find_unused_parameters = True

    def __init__(self, model: nn.Module, model_config: Any, alpha: float, lam: float, max_depth_m: float):
        self.model = model
        self.model_config = model_config
        self.train_module = AVSTrainModule(model, alpha, lam)
        self.max_depth_m = float(max_depth_m)
        self.extra: dict = {}  # goes into the checkpoint's config.json (training command, ...)

    def models_to_save(self) -> dict[str, tuple]:
        return {"model": (self.model, self.model_config, dict(self.extra))}

    def validate_batch(self, batch: Mapping[str, torch.Tensor]) -> list[dict[str, float]]:
        """Per-image metrics at the model resolution (metrics of avsnet_ros.metrics, the paper's
        strict max-depth mask) + the per-image SI loss."""
        use_audio = bool(self.model.config.use_audio)
        out = self.model(batch["rgb"], batch["spectrogram"] if use_audio else None)
        pred = out.depth_m.float()
        gt = batch["depth_m"].float()
        valid = batch["valid"]
        results = []
        for i in range(pred.shape[0]):
            gt_i = torch.where(valid[i, 0], gt[i, 0], torch.zeros_like(gt[i, 0]))
            m = compute_depth_metrics(pred[i, 0], gt_i, max_depth_m=self.max_depth_m, strict_max=True)
            if valid[i].any():
                m["loss"] = float(si_loss(pred[i:i + 1], gt[i:i + 1], valid[i:i + 1], alpha=self.train_module.alpha,
                                          lam=self.train_module.lam))
            results.append(m)
        return results


def compute_spectrogram_stats(dataset, ctx: DistContext, max_samples: int | None = None,
                              batch_size: int = 16, num_workers: int = 0,
                              progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and std of log1p(magnitude spectrogram) over a dataset.

    Args:
        dataset: a TorchSampleDataset WITHOUT flip augmentation (items with "spectrogram" (2,H,W)).
        ctx: ranks split the samples and sum (count, sum, sum of squares) in float64.
        max_samples: use only the first N samples (None: all).

    Returns:
        (mean (2,), std (2,), number of samples used).
    """
    from tqdm.auto import tqdm

    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    indices = list(range(ctx.rank, n, ctx.world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    acc = torch.zeros(5, dtype=torch.float64)  # count, sum_l, sum_r, sumsq_l, sumsq_r
    for batch in tqdm(loader, desc="spectrogram stats", leave=False, disable=not (ctx.is_main and progress)):
        x = torch.log1p(batch["spectrogram"].double().clamp_min(0.0))  # (B, 2, H, W)
        acc[0] += x[:, 0].numel()
        acc[1:3] += x.sum(dim=(0, 2, 3))
        acc[3:5] += (x * x).sum(dim=(0, 2, 3))
    acc = all_reduce_sum(ctx, acc)
    count = acc[0]
    if count <= 0:
        raise ValueError("no training sample to compute the spectrogram statistics from")
    mean = acc[1:3] / count
    var = (acc[3:5] / count - mean * mean).clamp_min(0.0)
    std = var.sqrt().clamp_min(1e-6)
    return mean.float(), std.float(), n
