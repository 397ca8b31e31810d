"""Open --data for training and evaluation: BV2-layout folder, BV1 root, or a rosbag2.

All three give a map-style dataset of avsnet_ros.data Samples (the loaders live in
avsnet_ros/data; this module only chooses among them and splits bags).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from avsnet_ros.data.batvision import BV1Dataset, BV2Dataset, detect_layout
from avsnet_ros.data.samples import SampleListDataset
from avsnet_ros.data.sources import is_bag

LOG = logging.getLogger("avsnet_ros.training")

#: Max depth of each source (README "Data": BV2 30 m, BV1 12 m; the synthetic world uses BV2's 30 m).
DEFAULT_MAX_DEPTH_M = {"bv2": 30.0, "bv1": 12.0, "bag": 30.0}


@dataclass
class OpenedData:
    """A dataset of Samples with what training/evaluation need to know about it."""

    dataset: Any  # len(), [i] -> Sample, frame_keys(), max_depth_m
    kind: str  # "bv2" | "bv1" | "bag"
    max_depth_m: float
    path: Path
    split: str


_BAG_CACHE: dict[tuple, list] = {}


def _bag_samples(path: Path, max_echo_age_s: float, odometry_topic: str = "/odom",
                 camera_pose: Sequence[float] = (0.0,) * 6) -> list:
    key = (str(path.resolve()), float(max_echo_age_s), odometry_topic, tuple(float(v) for v in camera_pose))
    if key not in _BAG_CACHE:
        from avsnet_ros.data.rosbag_io import BagTopics, read_bag_samples

        samples, report = read_bag_samples(path, max_echo_age_s=max_echo_age_s,
                                           topics=BagTopics(odometry=odometry_topic), camera_pose_in_base=camera_pose)
        LOG.info("bag %s: %d samples (%s)", path, len(samples), report)
        if not samples:
            raise ValueError(f"bag {path} gave no camera frame paired with an echo ({report})")
        _BAG_CACHE[key] = samples
    return _BAG_CACHE[key]


def data_kind(path: str | Path, split: str = "train") -> str:
    """"bag", "bv1" or "bv2" without loading samples (reads at most one CSV header)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file or directory")
    if is_bag(path):
        return "bag"
    return detect_layout(path, split)


def open_split(path: str | Path, split: str, max_depth_m: float | None = None, skip_bad: bool = False,
               bag_val_every: int = 10, bag_max_echo_age_s: float = 0.5, bag_odometry_topic: str = "/odom",
               bag_camera_pose: Sequence[float] = (0.0,) * 6) -> OpenedData:
    """Samples of one split.

    Args:
        path: BV2 root/location folder, BV1 root, or a rosbag2.
        split: "train" | "val" | "test" (or any CSV name). For a bag: "train" = all samples but
            every bag_val_every-th, "val" = those, anything else = all samples.
        max_depth_m: None -> the source's default (30 m BV2/synthetic/bag, 12 m BV1).
        bag_odometry_topic, bag_camera_pose: a bag's odometry (nav_msgs/Odometry) and the camera's pose on
            the odometry child frame (data.rosbag_io.iter_bag_samples): Sample.pose_world_cam.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file or directory")
    if is_bag(path):
        md = float(max_depth_m or DEFAULT_MAX_DEPTH_M["bag"])
        samples = _bag_samples(path, bag_max_echo_age_s, bag_odometry_topic, bag_camera_pose)
        every = max(2, int(bag_val_every))
        if split == "train":
            chosen = [s for i, s in enumerate(samples) if i % every != every - 1]
        elif split == "val":
            chosen = [s for i, s in enumerate(samples) if i % every == every - 1]
        else:
            chosen = list(samples)
        return OpenedData(SampleListDataset(chosen, max_depth_m=md), "bag", md, path, split)
    kind = detect_layout(path, split)
    md = float(max_depth_m or DEFAULT_MAX_DEPTH_M[kind])
    if kind == "bv1":
        ds = BV1Dataset(path, split, max_depth_m=md, skip_bad=skip_bad)
    else:
        ds = BV2Dataset(path, split, max_depth_m=md, skip_bad=skip_bad)
    return OpenedData(ds, kind, md, path, split)


class FirstN:
    """The first n items of a dataset (keeps frame_keys/max_depth_m for triplets)."""

    def __init__(self, base, n: int):
        self.base = base
        self.n = min(int(n), len(base))
        self.max_depth_m = getattr(base, "max_depth_m", 30.0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.base[i]

    def frame_keys(self):
        return self.base.frame_keys()[: self.n]
