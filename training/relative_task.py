"""Stage 2 task: DepthNet + PoseNet, self-supervised on frame triples (paper eq. 5-6, Monodepth2)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from avsnet_ros.metrics import compute_depth_metrics
from avsnet_ros.models.relative import disp_to_depth
from avsnet_ros.scaling import median_scale
from training.losses import best_depth_scale, self_supervised_loss


#: Weight of the pull of the depth's level towards metric under a free odometry scale. Without it
#: the level drifted (median depth ~0.2 m at the start, 9.5 m after one epoch, 11 m after two, towards the
#: sigmoid's flat end at max_depth); at 0.01 it is a small share of the photometric loss (~0.02).
ODOMETRY_ANCHOR_WEIGHT = 0.01
#: The depth factors the free odometry scale chooses from: 1/8 .. 8, steps of 0.17 in log.
FREE_SCALE_FACTORS = torch.exp(torch.linspace(-math.log(8.0), math.log(8.0), 25))


class RelativeTrainModule(nn.Module):
    """forward(batch) -> (joint loss, logs). Batch (TorchTripletDataset): rgb_prev, rgb, rgb_next
    (B, 3, H, W) in [0, 1] and K (B, 3, 3) in pixels of H x W; optionally rgb_prev_aug, rgb_aug,
    rgb_next_aug (colour-jittered: the networks' inputs, the loss uses the originals); without a
    PoseNet also has_pose (B,) and T_prev, T_next (B, 4, 4): the odometry, in metres (the depth is metric only without
    odometry_free_scale)."""

    def __init__(self, depthnet: nn.Module, posenet: "nn.Module | None", ssim_weight: float,
                 smoothness_weight: float, automask: bool, odometry_free_scale: bool = True):
        super().__init__()
        self.depthnet = depthnet
        self.posenet = posenet  # None: the batch's odometry (T_prev, T_next) moves the cameras
        self.odometry_free_scale = bool(odometry_free_scale)
        self.ssim_weight = float(ssim_weight)
        self.smoothness_weight = float(smoothness_weight)
        self.automask = bool(automask)

    def loss(self, batch: Mapping[str, torch.Tensor]):
        target, prev, nxt = batch["rgb"], batch["rgb_prev"], batch["rgb_next"]
        # the networks see the colour-jittered frames when the data has them; the loss compares the originals
        net_target = batch.get("rgb_aug", target)
        disps = self.depthnet(net_target)
        anchor = None
        if self.posenet is None:
            if "has_pose" not in batch or not bool(batch["has_pose"].all()):
                raise ValueError("pose_source odometry: a frame triple has no camera pose (the data needs the "
                                 "pose columns cam_x_m ... cam_roll_deg on every frame; avsnet_ros.data.poses)")
            transforms = [batch["T_prev"].float(), batch["T_next"].float()]
            if self.odometry_free_scale:
                transforms, anchor = self._free_scale(target, [prev, nxt], disps, transforms, batch["K"].float())
        else:
            transforms = [self.posenet.target_to_source(net_target, batch.get("rgb_prev_aug", prev), -1),
                          self.posenet.target_to_source(net_target, batch.get("rgb_next_aug", nxt), +1)]
        cfg = self.depthnet.config
        out = self_supervised_loss(target, [prev, nxt], disps, transforms, batch["K"].float(),
                                   min_depth=cfg.min_depth, max_depth=cfg.max_depth,
                                   smoothness_weight=self.smoothness_weight, ssim_weight=self.ssim_weight,
                                   automask=self.automask)
        if anchor is not None:
            out.loss = out.loss + anchor
        return out

    def _free_scale(self, target, sources, disps, transforms, K) -> tuple[list, torch.Tensor]:
        """Odometry with a free scale per image: the factor f (1/8 .. 8, 25 steps) for which depth * f
        warps best at 1/4 resolution (losses.best_depth_scale); depth * f warps as the translations / f.
        Also returns the anchor: ODOMETRY_ANCHOR_WEIGHT * mean (log f)^2, whose gradient moves each
        image's mean log depth by log f (towards metric), leaving the shape to the photometric loss."""
        scales = dict(disps) if isinstance(disps, Mapping) else dict(enumerate(disps))
        coarse = scales[2] if 2 in scales else scales[max(scales)]
        cfg = self.depthnet.config
        _, depth = disp_to_depth(coarse, cfg.min_depth, cfg.max_depth)
        f = best_depth_scale(target, sources, depth.detach(), transforms, K, FREE_SCALE_FACTORS)
        level = depth.log().mean(dim=(1, 2, 3))
        anchor = ODOMETRY_ANCHOR_WEIGHT * ((level - (level.detach() + f.log())) ** 2).mean()
        out = []
        for t in transforms:
            t = t.clone()
            t[:, :3, 3] = t[:, :3, 3] / f[:, None]
            out.append(t)
        return out, anchor

    def forward(self, batch: Mapping[str, torch.Tensor]):
        out = self.loss(batch)
        logs = {"photometric": out.photometric.detach(), "smoothness": out.smoothness.detach(),
                "automask_fraction": torch.tensor(out.automask_fraction)}
        return out.loss, logs


class RelativeTask:
    """TrainTask for training.loop.Trainer.

    posenet None (pose_source odometry): the cameras move by the data's odometry; no PoseNet is
    trained or saved.
    Validation: the joint loss, and when the centre frames have ground truth, the depth metrics of
    the relative depth scaled by the ground-truth median (the usual protocol for self-supervised
    depth), over valid pixels strictly below max_depth_m.
    """

    name = "relative"
    find_unused_parameters = False

    def __init__(self, depthnet: nn.Module, depth_config: Any, posenet: nn.Module, pose_config: Any,
                 ssim_weight: float, smoothness_weight: float, automask: bool, max_depth_m: float,
                 val_has_depth: bool, odometry_free_scale: bool = True):
        self.depthnet = depthnet
        self.posenet = posenet
        # a transformers backbone (training/hf_relative.py) may hold parameters its depth head never reads
        # (e.g. DINOv2's mask token): DDP must not wait for their gradients
        self.find_unused_parameters = hasattr(depthnet, "save_folder")
        self.depth_config = depth_config
        self.pose_config = pose_config
        self.train_module = RelativeTrainModule(depthnet, posenet, ssim_weight, smoothness_weight, automask,
                                                odometry_free_scale)
        self.max_depth_m = float(max_depth_m)
        self.selection_metric = "abs_rel" if val_has_depth else "loss"
        self.extra: dict = {}

    def models_to_save(self) -> dict[str, tuple]:
        out = {"depthnet": (self.depthnet, self.depth_config, dict(self.extra))}
        if self.posenet is not None:
            out["posenet"] = (self.posenet, self.pose_config, dict(self.extra))
        return out

    def validate_batch(self, batch: Mapping[str, torch.Tensor]) -> list[dict[str, float]]:
        batch_loss = float(self.train_module.loss(batch).loss)
        depth_rel = self.depthnet.depth(batch["rgb"]).float()  # (B, 1, H, W) relative units
        gt = batch["depth_m"].float()
        valid = batch["valid"] & (gt < self.max_depth_m)
        results = []
        for i in range(depth_rel.shape[0]):
            m: dict[str, float] = {"loss": batch_loss}
            if bool(batch["has_depth"][i]) and bool(valid[i].any()):
                scaled, _ = median_scale(depth_rel[i, 0], gt[i, 0], valid=valid[i, 0])
                gt_i = torch.where(valid[i, 0], gt[i, 0], torch.zeros_like(gt[i, 0]))
                m.update(compute_depth_metrics(scaled, gt_i, max_depth_m=self.max_depth_m, strict_max=True))
            results.append(m)
        return results
