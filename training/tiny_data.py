"""A tiny BV2-layout dataset built from the bundled real BatVision V2 instance, for smoke runs and tests.

    python -m training.tiny_data --out /tmp/tiny_bv2 --sequences 6 --frames 5

Each sequence is the real instance (assets/batvision_v2_sample) downscaled, with a per-sequence
depth scale (ground truth and echo amplitude change together) and a per-frame horizontal shift
(camera motion for frame triples), written with the official columns plus 'sequence' and 'frame'.
This is NOT training data for real results (use BatVision or training/make_synthetic.py); it only
exercises every code path on real file formats in seconds.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Sequence

import numpy as np

HEADER = ["audio path", "audio file name", "camera path", "camera file name", "depth path", "depth file name",
          "sequence", "frame"]


def make_tiny_bv2(out: str | Path, n_sequences: int = 6, frames_per_sequence: int = 5,
                  size_hw: Sequence[int] = (64, 128), splits: Sequence[str] = ("train", "val", "test"),
                  seed: int = 0, location: str = "tiny_location", shift_px: int = 3) -> Path:
    """Write the tree under `out` and return it.

    Sequences are dealt to the splits round-robin (sequence k -> splits[k % len(splits)]); every
    split gets at least one sequence when n_sequences >= len(splits).
    """
    import cv2
    from scipy.io import wavfile

    from avsnet_ros.audio.io import read_wav
    from avsnet_ros.data.batvision import read_rgb
    from avsnet_ros.paths import asset_path

    src = asset_path("batvision_v2_sample")
    rgb_full = read_rgb(src / "camera_47.jpeg")
    depth_mm_full = np.load(src / "depth_47.npy", allow_pickle=False)
    wave, sr = read_wav(src / "audio_47.wav")
    h, w = int(size_hw[0]), int(size_hw[1])
    rgb0 = cv2.resize(rgb_full, (w, h), interpolation=cv2.INTER_AREA)
    depth0 = cv2.resize(depth_mm_full, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    rng = np.random.default_rng(seed)
    out = Path(out)
    loc = out / location
    for sub in ("audio", "camera", "depth"):
        (loc / sub).mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {s: [] for s in splits}
    sample_id = 0
    for k in range(n_sequences):
        split = splits[k % len(splits)]
        scale = float(rng.uniform(0.5, 1.5))
        brightness = float(rng.uniform(0.8, 1.1))
        for f in range(frames_per_sequence):
            rgb = np.roll(rgb0, shift=f * shift_px, axis=1).astype(np.float32) * brightness
            rgb = np.clip(rgb, 0, 255).astype(np.uint8)
            depth = np.roll(depth0, shift=f * shift_px, axis=1).astype(np.float64) * scale
            depth = np.clip(np.rint(depth), 0, 65535).astype(np.uint16)
            echo = (wave * np.float32(min(1.0, 0.6 / scale))).astype(np.float32)
            name = f"{sample_id:05d}"
            cv2.imwrite(str(loc / "camera" / f"camera_{name}.jpeg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            np.save(loc / "depth" / f"depth_{name}.npy", depth)
            wavfile.write(loc / "audio" / f"audio_{name}.wav", sr, np.ascontiguousarray(echo.T))
            rows[split].append([f"{location}/audio", f"audio_{name}.wav", f"{location}/camera",
                                f"camera_{name}.jpeg", f"{location}/depth", f"depth_{name}.npy", f"seq{k:03d}", f])
            sample_id += 1
    for split, split_rows in rows.items():
        with open(loc / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(HEADER)
            writer.writerows(split_rows)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--sequences", type=int, default=6)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(make_tiny_bv2(a.out, a.sequences, a.frames, (a.height, a.width), seed=a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
