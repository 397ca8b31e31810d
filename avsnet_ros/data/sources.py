"""Data sources: opening recorded data by path (a folder or a rosbag2) for the replay source, the chirp
emitter's replay backend and tools.

    resolve_data_path("")        -> the bundled assets/demo_sequence (else assets/batvision_v2_sample)
    is_bag(path)                 -> rosbag2 folder (metadata.yaml or *.mcap/*.db3) or a .mcap/.db3 file
    open_dataset(path, split)    -> BV2Dataset over a BV2-layout folder (<split>.csv) or a folder of
                                    loose BV2 instances (audio_<id>.wav, camera_<id>.jpeg, depth_<id>.npy)
    load_samples(path, split)    -> all Samples of a folder or bag (bags: data.rosbag_io.read_bag_samples)
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["resolve_data_path", "is_bag", "open_dataset", "load_samples"]


def resolve_data_path(path: str) -> Path:
    """'' -> the bundled default (assets/demo_sequence, else assets/batvision_v2_sample)."""
    from avsnet_ros.paths import asset_path

    if path:
        p = Path(os.path.expanduser(path))
        if not p.exists():
            raise FileNotFoundError(f"replay data {str(p)!r} does not exist")
        return p
    for name in ("demo_sequence", "batvision_v2_sample"):
        candidate = asset_path(name)
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no bundled replay data under assets/ (demo_sequence, batvision_v2_sample)")


def is_bag(path: "str | Path") -> bool:
    """A rosbag2: a folder with metadata.yaml or *.mcap/*.db3 files, or a single .mcap/.db3 file.

    The one rule for the replay source, the chirp emitter's replay backend and training's --data.
    """
    p = Path(path)
    if p.is_file():
        return p.suffix in (".mcap", ".db3")
    if p.is_dir():
        return (p / "metadata.yaml").is_file() or any(p.glob("*.mcap")) or any(p.glob("*.db3"))
    return False


def _has_csv(path: Path, split: str) -> bool:
    if (path / f"{split}.csv").is_file():
        return True
    return any((d / f"{split}.csv").is_file() for d in path.iterdir() if d.is_dir())


def _loose_instances_tree(path: Path, split: str) -> Path:
    """A temporary BV2 tree (symlinks + one CSV) over loose audio_<id>.wav/camera_<id>.jpeg/
    depth_<id>.npy files, so BV2Dataset reads them exactly like the official layout."""
    ids = sorted(p.stem[len("audio_"):] for p in path.glob("audio_*.wav")
                 if (path / f"camera_{p.stem[len('audio_'):]}.jpeg").is_file())
    if not ids:
        raise FileNotFoundError(f"{str(path)!r} holds no <split>.csv and no audio_<id>.wav + camera_<id>.jpeg pairs")
    root = Path(tempfile.mkdtemp(prefix="avsnet_replay_"))
    loc = root / path.name
    loc.mkdir()
    header = "audio path,audio file name,camera path,camera file name,depth path,depth file name\n"
    rows = []
    for i in ids:
        for name in (f"audio_{i}.wav", f"camera_{i}.jpeg", f"depth_{i}.npy"):
            if (path / name).is_file():
                os.symlink((path / name).resolve(), loc / name)
        if not (path / f"depth_{i}.npy").is_file():
            raise FileNotFoundError(f"{str(path)!r}: depth_{i}.npy is missing")
        rows.append(f"{loc.name},audio_{i}.wav,{loc.name},camera_{i}.jpeg,{loc.name},depth_{i}.npy\n")
    (loc / f"{split}.csv").write_text(header + "".join(rows))
    return root


def open_dataset(path: Path, split: str):
    """BV2Dataset over a BV2-layout folder or a folder of loose instances."""
    from avsnet_ros.data.batvision import BV2Dataset

    if not _has_csv(path, split):
        path = _loose_instances_tree(path, split)
    return BV2Dataset(path, split=split)


def load_samples(path: Path, split: str = "test") -> list:
    """All Samples of a folder or bag (the chirp emitter's replay backend uses their echoes)."""
    if is_bag(path):
        from avsnet_ros.data.rosbag_io import read_bag_samples

        samples, _report = read_bag_samples(path)
        return samples
    dataset = open_dataset(path, split)
    return [dataset[i] for i in range(len(dataset))]
