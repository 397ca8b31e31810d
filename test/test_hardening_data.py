"""Bad dataset rows beyond test_data_batvision.py's BV2 matrix (issue 7): audio that decodes but is
wrong (NaN/inf float samples, wrong sample rate, mono), unreadable CSV bytes, the BV1 layout's
per-channel .npy audio (escaping paths, missing/corrupt/NaN/mismatched channels), and the training
CLI on a bad tree (one-line error naming the row, or a counted skip with data.skip_bad).

Expected everywhere: DatasetError naming the CSV file and row, or a counted, logged skip when asked;
never a sample carrying NaN audio or a traceback.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsnet_ros.data import BV1Dataset, BV2Dataset, DatasetError

REPO = Path(__file__).resolve().parents[1]
BV2_HEADER = "audio path,audio file name,camera path,camera file name,depth path,depth file name"


def _bv2_tree(root: Path, bv2_sample_dir: Path, rows: int = 3) -> Path:
    loc = root / "loc"
    for sub, name in (("audio", "audio_47.wav"), ("camera", "camera_47.jpeg"), ("depth", "depth_47.npy")):
        (loc / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(bv2_sample_dir / name, loc / sub / name)
    line = "loc/audio,audio_47.wav,loc/camera,camera_47.jpeg,loc/depth,depth_47.npy"
    for split in ("train", "val", "test"):
        (loc / f"{split}.csv").write_text("\n".join([BV2_HEADER] + [line] * rows) + "\n")
    return root


def _use_audio(root: Path, row_index: int, name: str) -> None:
    csv_path = root / "loc" / "test.csv"
    lines = csv_path.read_text().splitlines()
    lines[row_index] = f"loc/audio,{name},loc/camera,camera_47.jpeg,loc/depth,depth_47.npy"
    csv_path.write_text("\n".join(lines) + "\n")


def _write_bad_wav(loc: Path, case: str) -> str:
    from scipy.io import wavfile

    rate, pcm = wavfile.read(loc / "audio" / "audio_47.wav")
    x = (pcm.astype(np.float64) / 2**31).astype(np.float32)
    if case == "nan_samples":
        x[100, 0] = np.nan
        wavfile.write(loc / "audio" / "bad.wav", rate, x)
        return "non-finite"
    if case == "inf_samples":
        x[200, 1] = -np.inf
        wavfile.write(loc / "audio" / "bad.wav", rate, x)
        return "non-finite"
    if case == "wrong_rate":
        wavfile.write(loc / "audio" / "bad.wav", 48000, x)
        return "48000 Hz"
    if case == "mono":
        wavfile.write(loc / "audio" / "bad.wav", rate, x[:, 0].copy())
        return "channels"
    raise AssertionError(case)


WAV_CASES = ["nan_samples", "inf_samples", "wrong_rate", "mono"]


@pytest.mark.parametrize("case", WAV_CASES)
def test_bv2_decodable_but_wrong_audio_names_the_row_or_is_skipped(tmp_path, bv2_sample_dir, case):
    root = _bv2_tree(tmp_path / "bv2", bv2_sample_dir)
    fragment = _write_bad_wav(root / "loc", case)
    _use_audio(root, 2, "bad.wav")  # data row 2 = file line 3
    ds = BV2Dataset(root, "test")
    assert np.isfinite(ds[0].echo).all()
    with pytest.raises(DatasetError) as err:
        ds[1]
    msg = str(err.value)
    assert "test.csv" in msg and "row 3" in msg and fragment in msg and "bad.wav" in msg, msg
    skipping = BV2Dataset(root, "test", skip_bad=True)
    samples = [skipping[i] for i in range(2)]
    assert skipping.skipped == 1 and skipping.skipped_rows[0][1] == 3
    assert all(np.isfinite(s.echo).all() for s in samples)


def test_csv_with_undecodable_bytes_names_the_file(tmp_path, bv2_sample_dir):
    root = _bv2_tree(tmp_path / "bv2", bv2_sample_dir)
    csv_path = root / "loc" / "test.csv"
    csv_path.write_bytes(csv_path.read_bytes() + b"loc/audio,\xff\xfe\xfa.wav,loc/camera,c.jpeg,loc/depth,d.npy\n")
    with pytest.raises(DatasetError) as err:
        BV2Dataset(root, "test")
    assert "test.csv" in str(err.value)


def test_csv_row_with_missing_cells_names_the_row(tmp_path, bv2_sample_dir):
    root = _bv2_tree(tmp_path / "bv2", bv2_sample_dir)
    csv_path = root / "loc" / "test.csv"
    csv_path.write_text(csv_path.read_text() + "loc/audio,audio_47.wav,loc/camera\n")
    with pytest.raises(DatasetError) as err:
        BV2Dataset(root, "test")
    assert "test.csv" in str(err.value) and "row 5" in str(err.value), str(err.value)


# ------------------------------------------------------------------------------------------------
# BV1: per-channel .npy audio
BV1_HEADER = "depth path,audio path left,audio path right,camera path left"


def _bv1_tree(root: Path, n: int = 3) -> Path:
    import cv2

    scene = root / "scene_a"
    for sub in ("camera", "depth", "audio"):
        (scene / sub).mkdir(parents=True, exist_ok=True)
    lines = [BV1_HEADER]
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(scene / "camera" / f"{i}.png"), np.full((6, 8, 3), 40 * i, np.uint8))
        np.save(scene / "depth" / f"{i}.npy", np.full((6, 8), 2000.0, np.float32))
        np.save(scene / "audio" / f"{i}_l.npy", rng.normal(0, 0.1, 3300).astype(np.float32))
        np.save(scene / "audio" / f"{i}_r.npy", rng.normal(0, 0.1, 3300).astype(np.float32))
        lines.append(f"scene_a/depth/{i}.npy,scene_a/audio/{i}_l.npy,scene_a/audio/{i}_r.npy,scene_a/camera/{i}.png")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def _bv1_break(root: Path, case: str) -> tuple[str, bool]:
    """Break data row 2 (file line 3) -> (message fragment, detected at construction)."""
    csv_path = root / "train.csv"
    lines = csv_path.read_text().splitlines()
    audio = root / "scene_a" / "audio"
    if case == "escape":
        lines[2] = lines[2].replace("scene_a/audio/1_r.npy", "scene_a/../../secret_r.npy")
        csv_path.write_text("\n".join(lines) + "\n")
        return "escapes the dataset root", True
    if case == "missing_right":
        (audio / "1_r.npy").unlink()
        return "does not exist", True
    if case == "corrupt_npy":
        (audio / "1_l.npy").write_bytes((audio / "1_l.npy").read_bytes()[:100])
        return "not a readable numeric .npy", False
    if case == "nan_npy":
        x = np.load(audio / "1_r.npy")
        x[7] = np.nan
        np.save(audio / "1_r.npy", x)
        return "non-finite", False
    if case == "length_mismatch":
        np.save(audio / "1_r.npy", np.load(audio / "1_r.npy")[:3200])
        return "1_l.npy", False
    if case == "stereo_in_one_file":
        np.save(audio / "1_l.npy", np.zeros((2, 3300), np.float32))
        return "one channel", False
    raise AssertionError(case)


BV1_CASES = ["escape", "missing_right", "corrupt_npy", "nan_npy", "length_mismatch", "stereo_in_one_file"]


@pytest.mark.parametrize("case", BV1_CASES)
def test_bv1_bad_audio_names_the_row_or_is_skipped(tmp_path, case):
    root = _bv1_tree(tmp_path / "bv1")
    fragment, at_construction = _bv1_break(root, case)
    with pytest.raises(DatasetError) as err:
        ds = BV1Dataset(root, "train")
        assert not at_construction, "construction should have raised"
        ds[0]
        ds[1]
    msg = str(err.value)
    assert "train.csv" in msg and "row 3" in msg and fragment in msg, msg
    ds = BV1Dataset(root, "train", skip_bad=True, verify=True)
    assert len(ds) == 2 and ds.skipped == 1 and ds.skipped_rows[0][1] == 3
    assert all(np.isfinite(ds[i].echo).all() for i in range(len(ds)))


# ------------------------------------------------------------------------------------------------
# the training CLI on a bad tree
def _train_cmd(data: Path, out: Path, cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "training" / "train_avs.py"), "--data", str(data), "--out", str(out),
            "--config", str(cfg), "--no-progress", "--json", *extra]


def test_train_cli_reports_the_bad_row_or_skips_it(tmp_path):
    from training.tiny_data import make_tiny_bv2

    data = make_tiny_bv2(tmp_path / "bv2", n_sequences=3, frames_per_sequence=3, size_hw=(64, 128),
                         splits=("train", "train", "val"))
    loc = next(p for p in data.iterdir() if p.is_dir())
    csv_path = loc / "train.csv"
    lines = csv_path.read_text().splitlines()
    cells = lines[2].split(",")
    wav = data / cells[0] / cells[1]
    wav.write_bytes(wav.read_bytes()[:60])  # truncated wav in data row 2 (file line 3)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: {kind: avsnet, preset: tiny, image_size_hw: [64, 128]}\n"
                   "train: {epochs: 1, batch_size: 2, val_batch_size: 3, num_workers: 0}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(_train_cmd(data, tmp_path / "run_fail", cfg), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "train.csv" in out and "row 3" in out and "Traceback" not in out, out[-3000:]
    proc = subprocess.run(_train_cmd(data, tmp_path / "run_skip", cfg, "--set", "data.skip_bad=true"), cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "skipping bad BV2 row" in out and "row 3" in out, out[-3000:]


# ------------------------------------------------------------------------------------------------
# the speed-ups of the one RGB preprocessing must not change what the models see
@pytest.mark.parametrize("size_hw", [(128, 256), (96, 320), (256, 512), (192, 640), (180, 320), (100, 300), (360, 1280),
                                     (720, 640), (719, 1279), (24, 32),
                                     (720, 1280), (800, 1400)])
def test_prepare_rgb_equals_one_step_inter_area_reference(bv2_sample_dir, size_hw):
    """prepare_rgb (float conversion once, INTER_AREA as a sparse row product then OpenCV on the width, 1/255 after the
    resize) equals the plain definition: float32 / 255, then one cv2.resize (INTER_AREA shrinking,
    INTER_LINEAR otherwise), clipped to [0, 1]; within float rounding."""
    import cv2

    from avsnet_ros.data.batvision import read_rgb
    from avsnet_ros.data.torch_dataset import prepare_rgb, prepare_rgb_sizes

    images = [read_rgb(bv2_sample_dir / "camera_47.jpeg"),
              np.random.default_rng(3).integers(0, 256, (720, 1280, 3), dtype=np.uint8)]
    h, w = size_hw
    for rgb in images:
        x = rgb.astype(np.float32) / 255.0
        shrink = h <= x.shape[0] and w <= x.shape[1]
        ref = x if (h, w) == x.shape[:2] else cv2.resize(x, (w, h),
                                                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        ref = np.clip(ref, 0.0, 1.0).transpose(2, 0, 1)
        got = prepare_rgb(rgb, size_hw).numpy()
        assert got.shape == (3, h, w) and got.dtype == np.float32
        # float rounding: the row product accumulates H / h terms in float32 (OpenCV, more precisely)
        np.testing.assert_allclose(got, ref, rtol=0, atol=max(1e-6, 1e-7 * rgb.shape[0] / h))
        # several sizes at once (the pipeline stages both models' inputs in one call): bit for bit each size alone
        sizes = [size_hw, (96, 320), (64, 1280), (720, 300)]
        for size, many in zip(sizes, prepare_rgb_sizes(rgb, sizes)):
            np.testing.assert_array_equal(many.numpy(), got if size == size_hw else prepare_rgb(rgb, size).numpy())
