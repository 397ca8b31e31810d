"""Shared pytest fixtures: the bundled real BatVision V2 instance, test isolation, an rclpy context
(`ros`) and tiny checkpoints (`tiny_checkpoints`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BV2_SAMPLE_DIR = REPO_ROOT / "assets" / "batvision_v2_sample"

# Keep the torch thread pool small: the suite must run on 2 cores next to ROS executors.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def bv2_sample_dir() -> Path:
    """Folder with the real BV2 instance: audio_47.wav, camera_47.jpeg, depth_47.npy."""
    assert (BV2_SAMPLE_DIR / "audio_47.wav").is_file(), "bundled BV2 fixture missing"
    return BV2_SAMPLE_DIR


@pytest.fixture(scope="session")
def bv2_tree(tmp_path_factory, bv2_sample_dir) -> Path:
    """A temporary BV2 tree holding the real instance in one location with one-row CSVs.

    Layout (as the official dataset): ROOT/<location>/{audio,camera,depth}/..., and
    ROOT/<location>/{train,val,test}.csv with paths relative to ROOT.
    """
    import shutil

    root = tmp_path_factory.mktemp("bv2")
    loc = "fixture_location"
    for sub, name in (("audio", "audio_47.wav"), ("camera", "camera_47.jpeg"), ("depth", "depth_47.npy")):
        (root / loc / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(bv2_sample_dir / name, root / loc / sub / name)
    header = "audio path,audio file name,camera path,camera file name,depth path,depth file name\n"
    row = f"{loc}/audio,audio_47.wav,{loc}/camera,camera_47.jpeg,{loc}/depth,depth_47.npy\n"
    for split in ("train", "val", "test"):
        (root / loc / f"{split}.csv").write_text(header + row)
    return root


@pytest.fixture(scope="module")
def ros():
    """(context, executor): a private rclpy context and a spinning MultiThreadedExecutor, one per test
    module (ros_support.ros_context; nodes added to the executor are shut down with it)."""
    from ros_support import ros_context

    with ros_context() as (context, executor):
        yield context, executor


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict[str, str]:
    """Random-initialised tiny checkpoints, one set per test module (ros_support.make_tiny_checkpoints):
    {"avs": RGB + echo AVS-Net, "rgb": RGB-only AVS-Net, "rel": DepthNet} -> checkpoint directory.
    Shared by the module's tests: read them, never modify them."""
    from ros_support import make_tiny_checkpoints

    return make_tiny_checkpoints(tmp_path_factory.mktemp("tiny_checkpoints"))
