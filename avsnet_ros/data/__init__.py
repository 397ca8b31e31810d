"""Data sources -> `Sample`s: BatVision V1/V2 (and synthetic BV2-layout) files, rosbag2 recordings.

torch-free on import; the torch Datasets (TorchSampleDataset, TorchTripletDataset, prepare_rgb)
are loaded on first access.
"""
from avsnet_ros.data.batvision import (
    BV1Dataset,
    BV1TripletDataset,
    BV2Dataset,
    SampleTriplet,
    TripletDataset,
    detect_layout,
    load_bv1_csv,
    load_bv2_csv,
)
from avsnet_ros.data.rosbag_io import (
    DEFAULT_TOPICS,
    BagReadReport,
    BagTopics,
    bag_info,
    iter_bag_samples,
    read_bag_samples,
    write_samples_to_bag,
)
from avsnet_ros.data.samples import (
    DatasetError,
    Sample,
    SampleListDataset,
    nominal_intrinsics,
    scale_intrinsics,
)

_TORCH_NAMES = ("TorchSampleDataset", "TorchTripletDataset", "prepare_rgb", "resize_depth_nearest", "echo_spectrogram")

__all__ = [
    "BV1Dataset",
    "BV1TripletDataset",
    "BV2Dataset",
    "BagReadReport",
    "BagTopics",
    "DEFAULT_TOPICS",
    "DatasetError",
    "Sample",
    "SampleListDataset",
    "SampleTriplet",
    "TripletDataset",
    "bag_info",
    "detect_layout",
    "iter_bag_samples",
    "load_bv1_csv",
    "load_bv2_csv",
    "nominal_intrinsics",
    "read_bag_samples",
    "scale_intrinsics",
    "write_samples_to_bag",
    *_TORCH_NAMES,
]


def __getattr__(name):
    if name in ("prepare_rgb", "echo_spectrogram"):
        from avsnet_ros import preprocessing

        return getattr(preprocessing, name)
    if name in _TORCH_NAMES:
        from avsnet_ros.data import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
