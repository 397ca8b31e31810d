"""The one sample type every data source produces, and the conversions all sources share.

A `Sample` is one RGB frame with the echo recorded with it and (optionally) ground-truth depth, in
the I/O conventions of docs/ARCHITECTURE.md: RGB uint8 (H, W, 3); echo float32 (2, N) with row 0 =
left, row 1 = right, full scale 1.0; depth float32 metres with NaN where there is no measurement;
intrinsics in pixels of the stored image. BatVision files, synthetic BV2-layout folders and rosbags
all turn into the same Samples, so training, evaluation and replay cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "Sample",
    "DatasetError",
    "SampleListDataset",
    "ZED2_HD720_SIZE_HW",
    "ZED2_HD720_INTRINSICS",
    "nominal_intrinsics",
    "scale_intrinsics",
    "flip_intrinsics",
    "intrinsics_matrix",
    "depth_mm_to_m",
    "depth_m_to_mm",
    "valid_depth",
]

# Nominal intrinsics of the ZED 2 left camera at HD720 (1280 x 720), the camera BatVision V2 was
# recorded with. The dataset ships no calibration, so this is derived from the Stereolabs ZED 2
# datasheet: focal length 2.12 mm, 2 um pixels, HD720 read out 2x2-binned (4 um effective pixels)
# -> f = 2.12 mm / 4 um = 530 px; principal point at the image centre (pixel-centre convention,
# (W-1)/2, (H-1)/2). Per-unit factory calibrations of ZED 2 cameras at HD720 lie within about 1-2 %
# of this. Users with their unit's calibration pass it to the dataset (`intrinsics=`).
ZED2_HD720_SIZE_HW = (720, 1280)
ZED2_HD720_INTRINSICS = np.array(
    [[530.0, 0.0, 639.5], [0.0, 530.0, 359.5], [0.0, 0.0, 1.0]], dtype=np.float64
)


class DatasetError(ValueError):
    """A dataset row (or bag message) that cannot give a correct sample.

    The message names the CSV file (or bag) and the 1-based row number as counted in the file
    (the header is row 1, the first data row is row 2), so a user can open the file at that line.
    Attributes: `csv_path` (str or None), `row` (int or None), `reason` (str).
    """

    def __init__(self, reason: str, csv_path=None, row: "int | None" = None):
        self.csv_path = None if csv_path is None else str(csv_path)
        self.row = row
        self.reason = reason
        where = ""
        if self.csv_path is not None:
            where = f"{self.csv_path}" + (f", row {row}" if row is not None else "") + ": "
        super().__init__(where + reason)


@dataclass
class Sample:
    """One RGB frame + echo (+ optional ground-truth depth).

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        echo: (2, N) float32, row 0 = left, row 1 = right, full scale 1.0, onset-aligned buffer as
            a BatVision file (direct sweep near sample 288).
        sample_rate_hz: echo sample rate (44100 by contract).
        depth_m: (H, W) float32 metres, NaN where there is no measurement, or None when the source
            has no ground truth. Values above the dataset's max depth are kept (see valid_mask).
        intrinsics: (3, 3) float64 pinhole K in pixels of `rgb`.
        stamp_ns: capture time of the frame (ns); the echo is stamped at the same time in bags.
        sequence_id: which continuous recording the frame belongs to (frame triples never cross it).
        frame_index: position of the frame in its sequence (integer frame counter).
        source: human-readable origin, e.g. "path/test.csv:row 2" or "bag.mcap:/camera/image_raw#5".
        sweep: the emitted sweep (avsnet_ros.audio.frontend.SweepSpec) when the source describes it (a
            dataset's `sweep` column or sweep.txt, a bag's avsnet/chirp topic), else None (unknown).
        pose_world_cam: (4, 4) float64 T_world_optical, the camera's optical frame in a fixed
            odometry frame (metres; avsnet_ros.data.poses), or None when the source has no odometry.
    """

    rgb: np.ndarray
    echo: np.ndarray
    sample_rate_hz: int
    depth_m: "np.ndarray | None"
    intrinsics: np.ndarray
    stamp_ns: int
    sequence_id: str = ""
    frame_index: int = 0
    source: str = ""
    sweep: "object | None" = None
    pose_world_cam: "np.ndarray | None" = None

    def valid_mask(self, max_depth_m: float, min_depth_m: float = 0.0) -> np.ndarray:
        """(H, W) bool: finite ground truth with min_depth_m < depth <= max_depth_m.

        All False when the sample has no depth.
        """
        if self.depth_m is None:
            return np.zeros(self.rgb.shape[:2], dtype=bool)
        return valid_depth(self.depth_m, max_depth_m, min_depth_m)

    @property
    def size_hw(self) -> "tuple[int, int]":
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def valid_depth(depth_m: np.ndarray, max_depth_m: float, min_depth_m: float = 0.0,
                strict_max: bool = False) -> np.ndarray:
    """Boolean mask of usable depth: finite and min_depth_m < d <= max_depth_m (d < max_depth_m with
    ``strict_max``). The one numpy validity rule (samples, metrics, evaluation, bag decoding,
    scaling's numpy path); ``max_depth_m=np.inf`` gives "finite and > 0"."""
    d = np.asarray(depth_m)
    with np.errstate(invalid="ignore"):
        below = (d < max_depth_m) if strict_max else (d <= max_depth_m)
        return np.isfinite(d) & (d > min_depth_m) & below


def depth_mm_to_m(depth_mm: np.ndarray) -> np.ndarray:
    """Depth in millimetres (any numeric dtype) -> float32 metres, NaN where invalid.

    Invalid = 0, negative, NaN or +-inf (BatVision: 0 = no measurement; BV1 files also hold NaN and
    inf). The division is done in float32 (x.astype(float32) / float32(1000)), identically for npy
    files and 16UC1 bag images, so both paths give the same bits.
    """
    d = np.asarray(depth_mm)
    if not (np.issubdtype(d.dtype, np.integer) or np.issubdtype(d.dtype, np.floating)):
        raise ValueError(f"depth must be numeric, got dtype {d.dtype}")
    out = d.astype(np.float32) / np.float32(1000.0)
    out[~valid_depth(out, np.inf)] = np.nan
    return out


def depth_m_to_mm(depth_m: np.ndarray) -> "tuple[np.ndarray, int]":
    """float metres (NaN invalid) -> (uint16 millimetres with 0 = invalid, number of pixels dropped).

    Pixels above 65.535 m do not fit uint16 and become 0 (invalid); their count is returned so the
    caller can report it. For depths that came from uint16 mm this inverts depth_mm_to_m exactly.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    mm = np.rint(d * 1000.0)
    ok = np.isfinite(mm) & (mm > 0)
    too_far = ok & (mm > 65535)
    ok &= ~too_far
    out = np.zeros(d.shape, dtype=np.uint16)
    out[ok] = mm[ok].astype(np.uint16)
    return out, int(too_far.sum())


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(3, 3) float64 pinhole matrix from focal lengths and principal point in pixels."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def scale_intrinsics(k: np.ndarray, from_hw: Sequence[int], to_hw: Sequence[int]) -> np.ndarray:
    """Rescale K ((3, 3) or batched (..., 3, 3)) from an image of size from_hw to a resized image of size to_hw.

    The one intrinsics rescaling of the package (the nodes' CameraInfo and the torch geometry call it).
    Uses the pixel-centre convention of resizing with align_corners=False (OpenCV, torch bilinear):
    a pixel centre x maps to (x + 0.5) * s - 0.5, so fx' = fx * sx and cx' = (cx + 0.5) * sx - 0.5.
    """
    k = np.asarray(k, dtype=np.float64)
    sy = float(to_hw[0]) / float(from_hw[0])
    sx = float(to_hw[1]) / float(from_hw[1])
    out = k.copy()
    out[..., 0, 0] = k[..., 0, 0] * sx
    out[..., 0, 1] = k[..., 0, 1] * sx
    out[..., 0, 2] = (k[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = k[..., 1, 1] * sy
    out[..., 1, 2] = (k[..., 1, 2] + 0.5) * sy - 0.5
    return out


def flip_intrinsics(k: np.ndarray, width: int) -> np.ndarray:
    """K of the horizontally mirrored image of the given width: cx' = (W - 1) - cx (skew negated)."""
    out = np.asarray(k, dtype=np.float64).copy()
    out[0, 2] = (width - 1) - out[0, 2]
    out[0, 1] = -out[0, 1]
    return out


def nominal_intrinsics(size_hw: Sequence[int]) -> np.ndarray:
    """The nominal ZED 2 HD720 intrinsics rescaled to an image of size_hw (see ZED2_HD720_INTRINSICS).

    An image that is not 16:9 gets the focal length scaled per axis, which is what resizing a
    1280x720 frame to that size would do.
    """
    return scale_intrinsics(ZED2_HD720_INTRINSICS, ZED2_HD720_SIZE_HW, size_hw)


class SampleListDataset:
    """A map-style dataset over Samples already in memory (e.g. read from a rosbag).

    Provides what TripletDataset and TorchSampleDataset need: len, getitem, frame_keys(),
    max_depth_m.
    """

    def __init__(self, samples: Sequence[Sample], max_depth_m: float = 30.0):
        self.samples = list(samples)
        self.max_depth_m = float(max_depth_m)
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def frame_keys(self) -> "list[tuple[str, int]]":
        """(sequence_id, frame_index) of every sample, in dataset order, without loading files."""
        return [(s.sequence_id, int(s.frame_index)) for s in self.samples]
