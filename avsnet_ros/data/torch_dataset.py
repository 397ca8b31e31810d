"""torch Datasets over Samples: model-size tensors for stage 1 (AVS-Net) and stage 2 (triples).

TorchSampleDataset(base, image_size_hw) -> dict of tensors per item:
    rgb          (3, H, W) float32 in [0, 1]
    spectrogram  (2, H, W) float32 raw magnitude STFT (the model applies log1p and standardisation):
                 echo cut to its first echo_window_samples(max_depth_m) samples ("file" mode, the
                 BatVision preprocessing) BEFORE the STFT, then bilinear resize to (H, W)
    depth_m      (1, H, W) float32 metres, 0 where invalid (nearest-neighbour resize)
    valid        (1, H, W) bool: finite, > 0 and <= max_depth_m
    K            (3, 3) float32 intrinsics rescaled to (H, W) (and mirrored with the image)
    index        int64 index into the dataset; frame_index int64; stamp_ns int64
    has_depth    bool: False when the sample carries no ground truth (depth_m all 0, valid False)
Horizontal flip augmentation (hflip_prob) mirrors RGB, depth, valid and K and swaps the left and
right audio channels (what was heard on the left is on the right in the mirrored scene). The flip
decision is a pure function of (seed, epoch, index), so it is reproducible, identical across
DataLoader workers and resumable; call set_epoch(epoch) each epoch to draw new flips.
Colour jitter (colour_jitter_prob; avsnet_ros.data.augment, Monodepth2's ranges) is drawn the same
way (its own stream: the flips do not change when it is switched on). Stage 1 jitters `rgb` itself;
stage 2 (triples) adds rgb_aug / rgb_prev_aug / rgb_next_aug, one draw for the three frames, for the
networks' input, and keeps rgb / rgb_prev / rgb_next unjittered for the photometric loss.

Resizing: RGB with OpenCV INTER_AREA when shrinking (anti-aliased) and INTER_LINEAR otherwise, in
float32; depth with INTER_NEAREST_EXACT (pixel centres, no mixing of depths across edges). Sizes
used by the models: 256x512 (AVS-Net paper), 192x640 (DepthNet paper), 128x256 / 96x320 (tiny).
RGB and echo preprocessing (prepare_rgb, echo_spectrogram) are avsnet_ros.preprocessing's, the
module the inference pipeline uses too (re-exported here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from avsnet_ros.data.augment import ColourJitter, draw_colour_jitter, jitter_colour
from avsnet_ros.data.poses import mirror_x, target_to_source
from avsnet_ros.data.samples import DatasetError, Sample, flip_intrinsics, scale_intrinsics, valid_depth
from avsnet_ros.preprocessing import checked_size_hw, echo_spectrogram, prepare_rgb, prepare_rgb_sizes  # noqa: F401

__all__ = [
    "TorchSampleDataset",
    "TorchTripletDataset",
    "prepare_rgb",
    "prepare_rgb_sizes",
    "resize_depth_nearest",
    "echo_spectrogram",
]


def resize_depth_nearest(depth_m: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """(H, W) float32 depth -> (h, w) by nearest neighbour at pixel centres (NaN kept)."""
    import cv2

    h, w = checked_size_hw(size_hw)
    d = np.asarray(depth_m, dtype=np.float32)
    if d.shape == (h, w):
        return d.copy()
    return cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


class _FlipMixin:
    hflip_prob: float
    colour_jitter_prob: float
    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of flips (the decision depends on (seed, epoch, index))."""
        self.epoch = int(epoch)

    def flip_decision(self, index: int) -> bool:
        if self.hflip_prob <= 0.0:
            return False
        if self.hflip_prob >= 1.0:
            return True
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return bool(rng.random() < self.hflip_prob)

    def colour_decision(self, index: int) -> "ColourJitter | None":
        """The colour jitter of item `index` this epoch, or None (not jittered)."""
        if self.colour_jitter_prob <= 0.0:
            return None
        rng = np.random.default_rng([self.seed, self.epoch, int(index), _COLOUR_STREAM])
        if rng.random() >= self.colour_jitter_prob:
            return None
        return draw_colour_jitter(rng)


_COLOUR_STREAM = 0xC0104  # a fourth seed word: the colour draws never reuse the flips' stream


def _check_prob(p: float, name: str = "hflip_prob") -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return p


class TorchSampleDataset(_FlipMixin, torch.utils.data.Dataset):
    """Stage-1 tensors from any Sample dataset (BV2Dataset, BV1Dataset, SampleListDataset, ...).

    Args:
        base: map-style dataset returning Sample.
        image_size_hw: output (H, W), e.g. (256, 512).
        audio_crop: "file" (BatVision preprocessing, default) or "onset".
        max_depth_m: echo window and depth validity; default base.max_depth_m (else 30 m).
        hflip_prob: probability of the horizontal flip augmentation (0 = never).
        seed: seed of the flip decisions.
        with_audio: False skips the STFT (spectrogram omitted), e.g. for RGB-only evaluation.
        audio_frontend: the model's echo front-end ("raw" or "rerender", AVSNetConfig.audio_frontend),
            applied with each sample's announced sweep (Sample.sweep; None = identified).
        colour_jitter_prob: probability of the colour jitter (0 = never; module docstring).
    """

    def __init__(
        self,
        base,
        image_size_hw: Sequence[int] = (256, 512),
        audio_crop: str = "file",
        max_depth_m: "float | None" = None,
        hflip_prob: float = 0.0,
        seed: int = 0,
        with_audio: bool = True,
        audio_frontend: str = "raw",
        colour_jitter_prob: float = 0.0,
    ):
        from avsnet_ros.audio.frontend import EchoFrontEnd

        if audio_crop not in ("file", "onset"):
            raise ValueError(f"audio_crop must be 'file' or 'onset', got {audio_crop!r}")
        self.base = base
        self.image_size_hw = checked_size_hw(image_size_hw)
        self.audio_crop = audio_crop
        self.max_depth_m = float(max_depth_m if max_depth_m is not None else getattr(base, "max_depth_m", 30.0))
        self.hflip_prob = _check_prob(hflip_prob)
        self.colour_jitter_prob = _check_prob(colour_jitter_prob, "colour_jitter_prob")
        self.seed = int(seed)
        self.epoch = 0
        self.with_audio = bool(with_audio)
        # one per dataset copy (DataLoader workers each get their own): identification is sticky per rig
        self.frontend = EchoFrontEnd(audio_frontend) if audio_frontend != "raw" else None

    def __len__(self) -> int:
        return len(self.base)

    def _depth(self, s: Sample, flip: bool) -> "tuple[torch.Tensor, torch.Tensor, bool]":
        h, w = self.image_size_hw
        if s.depth_m is None:
            return torch.zeros(1, h, w), torch.zeros(1, h, w, dtype=torch.bool), False
        d = resize_depth_nearest(s.depth_m, self.image_size_hw)
        valid = valid_depth(d, self.max_depth_m)
        d = np.where(valid, d, np.float32(0.0)).astype(np.float32)
        if flip:
            d, valid = d[:, ::-1], valid[:, ::-1]
        return (torch.from_numpy(np.ascontiguousarray(d))[None],
                torch.from_numpy(np.ascontiguousarray(valid))[None], True)

    def _k(self, s: Sample, flip: bool) -> torch.Tensor:
        k = scale_intrinsics(s.intrinsics, s.rgb.shape[:2], self.image_size_hw)
        if flip:
            k = flip_intrinsics(k, self.image_size_hw[1])
        return torch.from_numpy(k.astype(np.float32))

    def _rgb(self, s: Sample, flip: bool) -> torch.Tensor:
        x = prepare_rgb(s.rgb, self.image_size_hw)
        return x.flip(-1).contiguous() if flip else x

    def _spectrogram(self, s: Sample, flip: bool) -> torch.Tensor:
        from avsnet_ros.audio.io import AudioError

        echo = np.asarray(s.echo, dtype=np.float32)
        if echo.ndim != 2 or echo.shape[0] != 2:
            raise DatasetError(f"{s.source}: echo must be (2, N), got {echo.shape}")
        if flip:
            echo = echo[::-1]  # swap left and right
        try:
            return echo_spectrogram(echo, self.image_size_hw, self.max_depth_m, s.sample_rate_hz, self.audio_crop,
                                    frontend=self.frontend, sweep=getattr(s, "sweep", None))
        except AudioError as exc:
            raise DatasetError(f"{s.source}: echo: {exc}") from exc

    def __getitem__(self, index: int) -> "dict[str, torch.Tensor]":
        s = self.base[index]
        flip = self.flip_decision(index)
        depth, valid, has_depth = self._depth(s, flip)
        rgb = self._rgb(s, flip)
        jitter = self.colour_decision(index)
        item = {
            "rgb": rgb if jitter is None else jitter_colour(rgb, jitter),
            "depth_m": depth,
            "valid": valid,
            "K": self._k(s, flip),
            "index": torch.tensor(int(index), dtype=torch.int64),
            "frame_index": torch.tensor(int(s.frame_index), dtype=torch.int64),
            "stamp_ns": torch.tensor(int(s.stamp_ns), dtype=torch.int64),
            "has_depth": torch.tensor(has_depth),
            "flipped": torch.tensor(flip),
        }
        if self.with_audio:
            item["spectrogram"] = self._spectrogram(s, flip)
        return item


class TorchTripletDataset(TorchSampleDataset):
    """Stage-2 tensors from a TripletDataset: rgb_prev, rgb, rgb_next (3, H, W) in [0, 1], K (3, 3)
    at (H, W), plus the centre frame's depth_m/valid/has_depth (for validation) and, with
    with_audio=True, its spectrogram. One flip decision per triple mirrors all three frames.
    With colour_jitter_prob > 0 also rgb_prev_aug, rgb_aug, rgb_next_aug: the networks' inputs (one
    colour jitter for the triple, or the frames themselves when this item is not jittered).
    Odometry: has_pose (bool) and T_prev / T_next (4, 4) float32, the centre camera's optical frame
    to the previous / next camera's (metres, the transform training.losses.warp_source takes),
    mirrored with the images; identity when a frame of the triple has no pose (has_pose False).
    Default size 192x640 (the DepthNet paper resolution).
    """

    def __init__(self, triplets, image_size_hw: Sequence[int] = (192, 640), hflip_prob: float = 0.0,
                 seed: int = 0, with_audio: bool = False, max_depth_m: "float | None" = None,
                 audio_crop: str = "file", colour_jitter_prob: float = 0.0):
        super().__init__(triplets, image_size_hw, audio_crop=audio_crop, max_depth_m=max_depth_m,
                         hflip_prob=hflip_prob, seed=seed, with_audio=with_audio,
                         colour_jitter_prob=colour_jitter_prob)

    def __getitem__(self, index: int) -> "dict[str, torch.Tensor]":
        prev, center, nxt = self.base[index]
        flip = self.flip_decision(index)
        depth, valid, has_depth = self._depth(center, flip)
        item = {
            "rgb_prev": self._rgb(prev, flip),
            "rgb": self._rgb(center, flip),
            "rgb_next": self._rgb(nxt, flip),
            "K": self._k(center, flip),
            "depth_m": depth,
            "valid": valid,
            "has_depth": torch.tensor(has_depth),
            "index": torch.tensor(int(index), dtype=torch.int64),
            "frame_index": torch.tensor(int(center.frame_index), dtype=torch.int64),
            "stamp_ns": torch.tensor(int(center.stamp_ns), dtype=torch.int64),
            "flipped": torch.tensor(flip),
        }
        item.update(_odometry(prev, center, nxt, flip))
        if self.colour_jitter_prob > 0.0:  # the keys exist for every item (batches collate), jittered or not
            jitter = self.colour_decision(index)
            for key in ("rgb_prev", "rgb", "rgb_next"):
                item[key + "_aug"] = item[key] if jitter is None else jitter_colour(item[key], jitter)
        if self.with_audio:
            item["spectrogram"] = self._spectrogram(center, flip)
        return item


def _odometry(prev: Sample, center: Sample, nxt: Sample, flip: bool) -> "dict[str, torch.Tensor]":
    """has_pose, T_prev, T_next of a triple (see TorchTripletDataset)."""
    poses = (prev.pose_world_cam, center.pose_world_cam, nxt.pose_world_cam)
    if any(p is None for p in poses):
        eye = torch.eye(4)
        return {"has_pose": torch.tensor(False), "T_prev": eye, "T_next": eye.clone()}
    out = {"has_pose": torch.tensor(True)}
    for key, source in (("T_prev", poses[0]), ("T_next", poses[2])):
        t = target_to_source(poses[1], source)
        out[key] = torch.from_numpy((mirror_x(t) if flip else t).astype(np.float32))
    return out
