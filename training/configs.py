"""Typed training configurations of both stages (loaded by training/config_io.py; unknown keys raise).

YAML presets: config/train_avs.yaml (tiny, CPU), config/train_avs_paper.yaml (paper size, GPU),
config/train_relative.yaml, config/train_relative_paper.yaml. Every key below may appear in them or
be overridden with `--set section.key=value`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from avsnet_ros.policy import DEFAULT_MAX_ECHO_AGE_S
from training.loop import LoopConfig, OptimConfig


@dataclass
class DataConfig:
    """Where samples come from and how they are prepared.

    --data is a BV2-layout root (BatVision V2 or the synthetic world), a BV1 root (stage 2) or a
    rosbag2 folder/.mcap. A bag has no splits: every `bag_val_every`-th sample (by time) is held
    out for validation.
    """

    train_split: str = "train"
    val_split: str = "val"
    max_depth_m: Optional[float] = None  # None: 30 m for BV2/synthetic/bags, 12 m for BV1
    hflip_prob: float = 0.5  # horizontal flip augmentation (swaps the audio channels too)
    # colour jitter (Monodepth2's ranges; avsnet_ros.data.augment) of the networks' input; stage 2's loss
    # compares the unjittered frames
    colour_jitter_prob: float = 0.0
    skip_bad: bool = False  # skip (count, log) unreadable rows instead of stopping
    max_train_samples: Optional[int] = None  # use only the first N training samples (quick runs)
    max_val_samples: Optional[int] = None
    bag_val_every: int = 10
    bag_max_echo_age_s: float = DEFAULT_MAX_ECHO_AGE_S  # the depth node's pairing window
    # stage 2 odometry from a bag: nav_msgs/Odometry topic, and the camera body frame's pose on the odometry
    # child frame (base_link) [x_m, y_m, z_m, yaw_deg, pitch_deg, roll_deg], REP 103 (avsnet_ros.data.rosbag_io)
    bag_odometry_topic: str = "/odom"
    bag_camera_pose: list = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    triplet_interval: Optional[int] = None  # stage 2: None -> 20 for BV1 (paper), 1 otherwise


@dataclass
class SILossConfig:
    """Scaled scale-invariant loss (paper eq. 4)."""

    alpha: float = 10.0
    lam: float = 0.85


@dataclass
class PhotometricLossConfig:
    """Self-supervised loss (paper eq. 5-6; Monodepth2)."""

    ssim_weight: float = 0.85  # gamma; the L1 weight beta is 1 - ssim_weight (0.15)
    smoothness_weight: float = 1e-3  # lambda
    automask: bool = True  # Monodepth2 auto-masking of static pixels
    # pose_source odometry: per image, the depth scale that warps best (1/8 .. 8, searched without gradient)
    # is applied before the loss, so DepthNet learns shape up to scale as with PoseNet; false: metric depth
    odometry_free_scale: bool = True


@dataclass
class AVSTrainConfig:
    """Stage 1: AVS-Net (or the RGB-only baseline with model.use_audio=false / --no-audio)."""

    model: dict = field(default_factory=lambda: {"kind": "avsnet", "preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: SILossConfig = field(default_factory=SILossConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    spec_stats_max_samples: Optional[int] = None  # spectrogram mean/std over at most N train samples


@dataclass
class RelativeTrainConfig:
    """Stage 2: DepthNet + PoseNet, self-supervised on frame triples."""

    model: dict = field(default_factory=lambda: {"kind": "depthnet", "preset": "tiny"})
    pose_model: dict = field(default_factory=lambda: {"kind": "posenet", "preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: PhotometricLossConfig = field(default_factory=PhotometricLossConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    # Where the camera motion between frames comes from: "posenet" (learned, the paper) or "odometry"
    # (the data's camera poses, avsnet_ros.data.poses: no PoseNet; see PhotometricLossConfig.odometry_free_scale).
    pose_source: str = "posenet"
    # A transformers depth folder (Depth Anything / DPT; config.json, + model.safetensors to start from those
    # weights) trained instead of the DepthNet (training/hf_relative.py); "" trains the DepthNet of `model`,
    # whose image_size_hw, min_depth and max_depth the transformers network uses as well.
    transformers_model: str = ""
    # A DepthNet checkpoint whose weights start the DepthNet (fine-tuning, e.g. the shipped depthnet_tiny on your
    # robot's data); its tensors must fit `model` (the input mode, depth range ... may differ). "": `model`'s init.
    init_depthnet: str = ""
