"""BatVision V1/V2 loaders, frame triples, bad rows, and the torch dataset (flip, resize, STFT crop).

References are independent of the code under test: PIL for JPEG decoding, scipy.io.wavfile for the
wav, numpy for the millimetre conversion, a numpy STFT written here, and hand-computed triples.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from avsnet_ros.data import (
    BV1Dataset,
    BV1TripletDataset,
    BV2Dataset,
    DatasetError,
    SampleListDataset,
    TripletDataset,
)

BV2_HEADER = "audio path,audio file name,camera path,camera file name,depth path,depth file name"
LOC = "fixture_location"


def _fixture_reference(bv2_sample_dir: Path):
    from PIL import Image
    from scipy.io import wavfile

    rgb = np.asarray(Image.open(bv2_sample_dir / "camera_47.jpeg").convert("RGB"))
    rate, pcm = wavfile.read(bv2_sample_dir / "audio_47.wav")
    assert rate == 44100 and pcm.dtype == np.int32
    echo = (pcm.T.astype(np.float64) / 2**31).astype(np.float32)
    mm = np.load(bv2_sample_dir / "depth_47.npy")
    depth = np.where(mm == 0, np.nan, mm.astype(np.float64) / 1000.0)
    return rgb, echo, depth


def test_bv2_fixture_sample_matches_independent_reading(bv2_tree, bv2_sample_dir):
    ds = BV2Dataset(bv2_tree, "test")
    assert len(ds) == 1 and ds.locations == [LOC] and ds.max_depth_m == 30.0
    s = ds[0]
    rgb, echo, depth = _fixture_reference(bv2_sample_dir)
    assert s.rgb.dtype == np.uint8 and np.array_equal(s.rgb, rgb)
    assert s.echo.dtype == np.float32 and s.echo.shape == (2, 20000) and np.array_equal(s.echo, echo)
    assert s.sample_rate_hz == 44100
    assert s.depth_m.dtype == np.float32 and s.depth_m.shape == (720, 1280)
    assert np.array_equal(np.isnan(s.depth_m), np.isnan(depth))
    np.testing.assert_allclose(s.depth_m[~np.isnan(depth)], depth[~np.isnan(depth)], rtol=1e-6)
    assert abs(np.isnan(s.depth_m).mean() - 0.2166) < 1e-3  # README: about 21.7 % without measurement
    assert np.nanmax(s.depth_m) == pytest.approx(15.711, abs=1e-4)
    # Nominal ZED 2 HD720 intrinsics, no rescale for a 1280x720 image.
    np.testing.assert_array_equal(s.intrinsics, [[530, 0, 639.5], [0, 530, 359.5], [0, 0, 1]])
    assert (s.sequence_id, s.frame_index) == (LOC, 0)
    assert "test.csv:row 2" in s.source
    # valid_mask: finite, > 0, <= max depth
    assert s.valid_mask(30.0).sum() == np.isfinite(depth).sum()
    assert s.valid_mask(1.0).sum() == (np.nan_to_num(depth) > 0).sum() - (np.nan_to_num(depth) > 1.0).sum()


def test_bv2_location_folder_as_root(bv2_tree):
    a = BV2Dataset(bv2_tree, "val")[0]
    b = BV2Dataset(bv2_tree / LOC, "val")[0]  # CSV paths start with the location: resolved on the parent
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.echo, b.echo)


def test_bv2_paths_relative_to_location_folder(tmp_path, bv2_sample_dir):
    loc = tmp_path / "loc"
    for sub, name in (("audio", "audio_47.wav"), ("camera", "camera_47.jpeg"), ("depth", "depth_47.npy")):
        (loc / sub).mkdir(parents=True)
        shutil.copy(bv2_sample_dir / name, loc / sub / name)
    (loc / "test.csv").write_text(f"{BV2_HEADER}\naudio,audio_47.wav,camera,camera_47.jpeg,depth,depth_47.npy\n")
    assert BV2Dataset(loc, "test")[0].rgb.shape == (720, 1280, 3)


def _make_bv2_tree(root: Path, bv2_sample_dir: Path, rows_per_loc: dict, extra_header="", extra=None, index_col=False):
    """Locations whose rows all point at the real fixture files (copied once per location)."""
    for loc, n in rows_per_loc.items():
        for sub, name in (("audio", "audio_47.wav"), ("camera", "camera_47.jpeg"), ("depth", "depth_47.npy")):
            (root / loc / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(bv2_sample_dir / name, root / loc / sub / name)
        lines = [("," if index_col else "") + BV2_HEADER + extra_header]
        for i in range(n):
            row = f"{loc}/audio,audio_47.wav,{loc}/camera,camera_47.jpeg,{loc}/depth,depth_47.npy"
            lines.append((f"{i}," if index_col else "") + row + (extra(loc, i) if extra else ""))
        (root / loc / "test.csv").write_text("\n".join(lines) + "\n")
    return root


def test_bv2_optional_columns_index_column_and_triplets(tmp_path, bv2_sample_dir):
    # Synthetic layout: pandas index column, sequence/frame/stamp/intrinsics columns, two locations.
    def extra(loc, i):
        seq = f"{loc}_seq{i // 4}"  # sequences of 4 frames
        return f",{seq},{i % 4},{1_000_000_000 + i * 50_000_000},{600 + i},{601 + i},{640.5},{360.25}"

    root = _make_bv2_tree(tmp_path, bv2_sample_dir, {"a": 8, "b": 5},
                          extra_header=",sequence,frame,stamp_ns,fx,fy,cx,cy", extra=extra, index_col=True)
    ds = BV2Dataset(root, "test")
    assert len(ds) == 13 and ds.locations == ["a", "b"]
    keys = ds.frame_keys()
    assert keys[:5] == [("a_seq0", 0), ("a_seq0", 1), ("a_seq0", 2), ("a_seq0", 3), ("a_seq1", 0)]
    s = ds[9]  # location b, row 1
    assert (s.sequence_id, s.frame_index, s.stamp_ns) == ("b_seq0", 1, 1_050_000_000)
    np.testing.assert_array_equal(s.intrinsics, [[601, 0, 640.5], [0, 602, 360.25], [0, 0, 1]])
    # Triples inside one sequence only: a_seq0, a_seq1 (4 frames each) -> 2 each; b_seq0 (4) -> 2; b_seq1 (1) -> 0.
    tri = ds.triplets(1)
    assert len(tri) == 6
    assert tri.indices[:2] == [(0, 1, 2), (1, 2, 3)]
    for a, b, c in tri.indices:
        assert keys[a][0] == keys[b][0] == keys[c][0]
        assert keys[a][1] == keys[b][1] - 1 and keys[c][1] == keys[b][1] + 1
    assert len(ds.triplets(2)) == 0  # 4-frame sequences hold no (t-2, t, t+2) with both ends inside
    p, c, n = tri[0]
    assert (p.frame_index, c.frame_index, n.frame_index) == (0, 1, 2)


def test_bv2_default_stamps_sequences_and_missing_split(tmp_path, bv2_sample_dir):
    root = _make_bv2_tree(tmp_path, bv2_sample_dir, {"x": 3})
    ds = BV2Dataset(root, "test", frame_period_s=0.25)
    assert [ds[i].stamp_ns for i in range(3)] == [250_000_000, 500_000_000, 750_000_000]
    assert ds.frame_keys() == [("x", 0), ("x", 1), ("x", 2)]
    with pytest.raises(DatasetError, match="no train.csv"):
        BV2Dataset(root, "train")


# ------------------------------------------------------------------------------------------------
# bad rows
@pytest.fixture()
def bad_tree(tmp_path, bv2_sample_dir):
    """A location with 3 rows: row 2 good, row 3 the case under test, row 4 good."""
    return _make_bv2_tree(tmp_path / "bv2", bv2_sample_dir, {"loc": 3})


def _set_row(root: Path, row_index: int, audio="loc/audio,audio_47.wav", camera="loc/camera,camera_47.jpeg",
             depth="loc/depth,depth_47.npy"):
    csv_path = root / "loc" / "test.csv"
    lines = csv_path.read_text().splitlines()
    lines[row_index] = f"{audio},{camera},{depth}"
    csv_path.write_text("\n".join(lines) + "\n")


def _corrupt(root: Path, case: str, tmp_path: Path) -> str:
    """Apply one bad-input case to data row 2 (file line 3); return the expected message fragment."""
    loc = root / "loc"
    if case == "escape":
        _set_row(root, 2, camera="loc/../../outside,camera_47.jpeg")
        return "escapes the dataset root"
    if case == "absolute":
        _set_row(root, 2, depth=f"{loc / 'depth'},depth_47.npy")
        return "is absolute"
    if case == "missing":
        _set_row(root, 2, audio="loc/audio,audio_missing.wav")
        return "does not exist"
    if case == "truncated_jpeg":
        data = (loc / "camera" / "camera_47.jpeg").read_bytes()
        (loc / "camera" / "bad.jpeg").write_bytes(data[: len(data) // 2])
        _set_row(root, 2, camera="loc/camera,bad.jpeg")
        return "truncated JPEG"
    if case == "not_an_image":
        (loc / "camera" / "bad.jpeg").write_bytes(b"this is not an image at all" * 10)
        _set_row(root, 2, camera="loc/camera,bad.jpeg")
        return "not a decodable image"
    if case == "corrupt_wav":
        data = (loc / "audio" / "audio_47.wav").read_bytes()
        (loc / "audio" / "bad.wav").write_bytes(b"RIFX" + data[4:40])
        _set_row(root, 2, audio="loc/audio,bad.wav")
        return "not a readable wav"
    if case == "short_wav":
        from scipy.io import wavfile

        wavfile.write(loc / "audio" / "bad.wav", 44100, np.zeros((7000, 2), np.int32))  # < 7782 samples
        _set_row(root, 2, audio="loc/audio,bad.wav")
        return "too short"
    if case == "corrupt_npy":
        data = (loc / "depth" / "depth_47.npy").read_bytes()
        (loc / "depth" / "bad.npy").write_bytes(data[:1000])
        _set_row(root, 2, depth="loc/depth,bad.npy")
        return "not a readable numeric .npy"
    if case == "pickled_npy":
        np.save(loc / "depth" / "bad.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        _set_row(root, 2, depth="loc/depth,bad.npy")
        return "not a readable numeric .npy"
    if case == "depth_size":
        np.save(loc / "depth" / "bad.npy", np.ones((360, 640), np.uint16))
        _set_row(root, 2, depth="loc/depth,bad.npy")
        return "differs from the camera image size"
    raise AssertionError(case)


CONSTRUCTION_CASES = ["escape", "absolute", "missing"]
LOAD_CASES = ["truncated_jpeg", "not_an_image", "corrupt_wav", "short_wav", "corrupt_npy", "pickled_npy", "depth_size"]


@pytest.mark.parametrize("case", CONSTRUCTION_CASES + LOAD_CASES)
def test_bad_row_raises_dataset_error_naming_csv_and_row(bad_tree, case, tmp_path):
    fragment = _corrupt(bad_tree, case, tmp_path)
    with pytest.raises(DatasetError) as err:
        ds = BV2Dataset(bad_tree, "test")
        assert case in LOAD_CASES, "construction should have raised"
        ds[0]  # the good row loads
        ds[1]
    msg = str(err.value)
    assert "test.csv" in msg and "row 3" in msg and fragment in msg, msg
    assert err.value.row == 3


@pytest.mark.parametrize("case", CONSTRUCTION_CASES + LOAD_CASES)
def test_bad_row_skipped_and_counted_when_asked(bad_tree, case, tmp_path, caplog):
    fragment = _corrupt(bad_tree, case, tmp_path)
    caplog.set_level(logging.WARNING, logger="avsnet_ros.data.batvision")
    # verify=True decodes every row up front: the bad one is dropped before any __getitem__.
    ds = BV2Dataset(bad_tree, "test", skip_bad=True, verify=True)
    assert len(ds) == 2 and ds.skipped == 1
    assert ds.skipped_rows[0][1] == 3 and fragment in ds.skipped_rows[0][2]
    assert [s.source.rsplit(" ", 1)[1] for s in (ds[0], ds[1])] == ["2", "4"]
    assert any("skipping bad BV2 row" in r.message and "row 3" in r.message for r in caplog.records)
    if case in LOAD_CASES:
        # Without verify, the corrupt row is found on load: counted, logged, next good row returned.
        lazy = BV2Dataset(bad_tree, "test", skip_bad=True)
        assert len(lazy) == 3 and lazy.skipped == 0
        s = lazy[1]
        assert s.source.endswith("row 4") and lazy.skipped == 1
        assert lazy[1].source.endswith("row 4") and lazy.skipped == 1  # not counted twice


def test_missing_column_and_bad_optional_values(tmp_path, bv2_sample_dir):
    root = _make_bv2_tree(tmp_path, bv2_sample_dir, {"loc": 1})
    csv_path = root / "loc" / "test.csv"
    csv_path.write_text("audio path,audio file name,camera path,camera file name,depth path\n"
                        "loc/audio,a,loc/c,c,loc/d\n")
    with pytest.raises(DatasetError, match=r"test.csv, row 1: missing column\(s\) \['depth file name'\]"):
        BV2Dataset(root, "test")
    csv_path.write_text(f"{BV2_HEADER},fx,fy,cx,cy\nloc/audio,audio_47.wav,loc/camera,camera_47.jpeg,loc/depth,depth_47.npy,500,,1,2\n")
    with pytest.raises(DatasetError, match="row 2: intrinsics columns"):
        BV2Dataset(root, "test")


# ------------------------------------------------------------------------------------------------
# BV1
def _make_bv1_tree(root: Path, scenes: "list[tuple[str, int]]"):
    """BV1 layout: <scene>/{camera,depth,audio}/..., one .npy per audio channel, small PNG images."""
    import cv2

    lines = ["depth path,audio path left,audio path right,camera path left"]
    for run, (scene, n) in enumerate(scenes):
        for sub in ("camera", "depth", "audio"):
            (root / scene / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"{run}_{i:04d}"
            img = np.full((6, 8, 3), (run * 40 + i) % 256, np.uint8)
            cv2.imwrite(str(root / scene / "camera" / f"{stem}.png"), img)
            depth = np.full((6, 8), 2500.0, np.float32)
            depth[0, 0], depth[0, 1], depth[0, 2], depth[0, 3] = np.nan, np.inf, 0.0, 13000.0
            np.save(root / scene / "depth" / f"{stem}.npy", depth)
            np.save(root / scene / "audio" / f"{stem}_l.npy", np.full(3200, 0.25, np.float32))
            np.save(root / scene / "audio" / f"{stem}_r.npy", np.full(3200, -0.5, np.float32))
            lines.append(f"{scene}/depth/{stem}.npy,{scene}/audio/{stem}_l.npy,{scene}/audio/{stem}_r.npy,"
                         f"{scene}/camera/{stem}.png")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def test_bv1_samples_scenes_and_triplets(tmp_path):
    # Scene runs: A (45 rows), B (44 rows), A again (41 rows, a new sequence).
    root = _make_bv1_tree(tmp_path / "bv1", [("A", 45), ("B", 44), ("A", 41)])
    ds = BV1Dataset(root, "train")
    assert len(ds) == 130 and ds.max_depth_m == 12.0
    s = ds[0]
    assert s.echo.shape == (2, 3200) and np.all(s.echo[0] == 0.25) and np.all(s.echo[1] == -0.5)
    assert s.rgb.shape == (6, 8, 3)
    assert np.isnan(s.depth_m[0, :3]).all() and s.depth_m[0, 3] == np.float32(13.0)
    assert s.depth_m[1, 1] == np.float32(2.5)
    assert s.valid_mask(12.0)[0, 3] == False and s.valid_mask(12.0)[1, 1]  # noqa: E712  13 m > 12 m
    keys = ds.frame_keys()
    # scene = folder part of 'camera path left'; a scene seen again later starts a new sequence
    assert keys[0] == ("A/camera", 0) and keys[45] == ("B/camera", 0)
    assert keys[89] == ("A/camera#1", 0) and keys[129] == ("A/camera#1", 40)
    tri = BV1TripletDataset(root, "train", interval=20)
    # Hand count: a run of n frames gives max(0, n - 40) triples: 5 + 4 + 1.
    assert len(tri) == 10
    assert tri.indices[0] == (0, 20, 40) and tri.indices[4] == (4, 24, 44)
    assert tri.indices[5] == (45, 65, 85) and tri.indices[9] == (89, 109, 129)
    p, c, n = tri[9]
    assert (p.sequence_id, c.sequence_id, n.sequence_id) == ("A/camera#1",) * 3
    assert len(BV1TripletDataset(root, "train", interval=21)) == 5  # 3 + 2 + 0
    # Audio shorter than the 12 m window (3112 samples) is refused with the row named.
    np.save(root / "A" / "audio" / "0_0000_r.npy", np.zeros(3000, np.float32))
    with pytest.raises(DatasetError, match="row 2: audio:.*too short"):
        ds[0]


def test_triplet_dataset_over_sample_list():
    from avsnet_ros.data import Sample

    def mk(seq, f):
        return Sample(rgb=np.zeros((2, 2, 3), np.uint8), echo=np.zeros((2, 8000), np.float32), sample_rate_hz=44100,
                      depth_m=None, intrinsics=np.eye(3), stamp_ns=f, sequence_id=seq, frame_index=f)

    samples = [mk("s", f) for f in (0, 1, 2, 4, 5, 6)] + [mk("t", f) for f in (0, 1, 2)]
    tri = TripletDataset(SampleListDataset(samples), 1)
    # Frame 3 of "s" is missing: (2,3,4) and (3,4,5) do not exist; t gives (0,1,2).
    assert tri.indices == [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
    with pytest.raises(ValueError):
        TripletDataset(SampleListDataset(samples), 0)


# ------------------------------------------------------------------------------------------------
# torch dataset
def _numpy_stft_magnitude(x: np.ndarray) -> np.ndarray:
    """Independent reference of the BatVision STFT: n_fft 512, Hann(64) periodic zero-padded to 512
    in the middle, hop 16, centred with reflect padding, magnitude. x (N,) -> (257, N // 16 + 1)."""
    n_fft, win, hop = 512, 64, 16
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    wpad = np.zeros(n_fft)
    wpad[(n_fft - win) // 2:(n_fft - win) // 2 + win] = w
    xp = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = np.stack([xp[t * hop:t * hop + n_fft] for t in range(x.size // hop + 1)], axis=1)
    return np.abs(np.fft.rfft(frames * wpad[:, None], axis=0))


def test_torch_dataset_tensors(bv2_tree):
    import torch

    from avsnet_ros.data import TorchSampleDataset

    base = BV2Dataset(bv2_tree, "test")
    s = base[0]
    item = TorchSampleDataset(base, (256, 512))[0]
    assert item["rgb"].shape == (3, 256, 512) and item["rgb"].dtype == torch.float32
    assert 0.0 <= float(item["rgb"].min()) and float(item["rgb"].max()) <= 1.0
    # Area resize of an exact 2.5x reduction keeps the image mean.
    assert float(item["rgb"].mean()) == pytest.approx(s.rgb.mean() / 255.0, abs=2e-3)
    # Depth: nearest neighbour at pixel centres, 0 where invalid; valid = finite & > 0 & <= 30 m.
    ys = np.floor((np.arange(256) + 0.5) * 720 / 256).astype(int)
    xs = np.floor((np.arange(512) + 0.5) * 1280 / 512).astype(int)
    ref = s.depth_m[np.ix_(ys, xs)]
    ref_valid = np.isfinite(ref) & (ref > 0) & (ref <= 30)
    assert item["depth_m"].shape == (1, 256, 512) and item["valid"].dtype == torch.bool
    assert np.array_equal(item["valid"][0].numpy(), ref_valid)
    assert np.array_equal(item["depth_m"][0].numpy(), np.where(ref_valid, ref, 0).astype(np.float32))
    # K rescaled: fx 530 * 512/1280 = 212, cx = (639.5 + 0.5) * 0.4 - 0.5 = 255.5 (image centre).
    np.testing.assert_allclose(item["K"].numpy(), [[212, 0, 255.5], [0, 530 * 256 / 720, 127.5], [0, 0, 1]], rtol=1e-6)
    assert item["spectrogram"].shape == (2, 256, 512) and int(item["index"]) == 0
    # Spectrogram of the first 7782 samples (30 m window) before the STFT: with the native STFT size
    # (257 x 487) the resize is the identity, so it must equal the numpy reference on the crop.
    native = TorchSampleDataset(base, (257, 487))[0]["spectrogram"].numpy()
    for ch in range(2):
        ref_spec = _numpy_stft_magnitude(s.echo[ch, :7782])
        assert ref_spec.shape == (257, 487)
        np.testing.assert_allclose(native[ch], ref_spec, rtol=1e-4, atol=1e-4 * ref_spec.max())
    # ... and not the spectrogram of the uncropped buffer's first frames (which sees later samples).
    full = _numpy_stft_magnitude(s.echo[0])[:, :487]
    assert np.abs(full - native[0]).max() > 1e-3 * full.max()
    # 12 m window (3112 samples) for a 12 m dataset:
    small = TorchSampleDataset(base, (257, 195), max_depth_m=12.0)[0]["spectrogram"].numpy()
    np.testing.assert_allclose(small[1], _numpy_stft_magnitude(s.echo[1, :3112]), rtol=1e-4,
                               atol=1e-4 * small[1].max())


def test_torch_dataset_hflip_mirrors_image_depth_and_swaps_audio(bv2_tree):
    from avsnet_ros.data import TorchSampleDataset

    base = BV2Dataset(bv2_tree, "test")
    plain = TorchSampleDataset(base, (96, 160), hflip_prob=0.0)[0]
    flipped = TorchSampleDataset(base, (96, 160), hflip_prob=1.0)[0]
    assert not bool(plain["flipped"]) and bool(flipped["flipped"])
    assert np.array_equal(flipped["rgb"].numpy(), plain["rgb"].numpy()[:, :, ::-1])
    assert np.array_equal(flipped["depth_m"].numpy(), plain["depth_m"].numpy()[:, :, ::-1])
    assert np.array_equal(flipped["valid"].numpy(), plain["valid"].numpy()[:, :, ::-1])
    # Left and right channels swapped (the two channels of the real recording differ).
    assert not np.allclose(plain["spectrogram"][0].numpy(), plain["spectrogram"][1].numpy())
    assert np.array_equal(flipped["spectrogram"][0].numpy(), plain["spectrogram"][1].numpy())
    assert np.array_equal(flipped["spectrogram"][1].numpy(), plain["spectrogram"][0].numpy())
    # K mirrored: cx' = (W - 1) - cx, the rest unchanged.
    kp, kf = plain["K"].numpy(), flipped["K"].numpy()
    assert kf[0, 2] == pytest.approx(159 - kp[0, 2]) and kf[0, 0] == kp[0, 0] and kf[1, 2] == kp[1, 2]


def test_flip_decisions_are_seeded_and_per_epoch():
    from avsnet_ros.data import TorchSampleDataset

    base = SampleListDataset([])
    a = TorchSampleDataset(base, (8, 8), hflip_prob=0.5, seed=3)
    b = TorchSampleDataset(base, (8, 8), hflip_prob=0.5, seed=3)
    c = TorchSampleDataset(base, (8, 8), hflip_prob=0.5, seed=4)
    da = [a.flip_decision(i) for i in range(400)]
    assert da == [b.flip_decision(i) for i in range(400)]
    assert da != [c.flip_decision(i) for i in range(400)]
    assert 0.4 < np.mean(da) < 0.6
    a.set_epoch(1)
    assert da != [a.flip_decision(i) for i in range(400)]
    with pytest.raises(ValueError):
        TorchSampleDataset(base, (8, 8), hflip_prob=1.5)


def test_torch_triplet_dataset(tmp_path):
    from avsnet_ros.data import TorchTripletDataset

    root = _make_bv1_tree(tmp_path / "bv1", [("A", 5)])
    tri = BV1TripletDataset(root, "train", interval=2)
    assert len(tri) == 1
    item = TorchTripletDataset(tri, (12, 16))[0]
    assert item["rgb_prev"].shape == item["rgb"].shape == item["rgb_next"].shape == (3, 12, 16)
    # Each frame has a constant grey level (run 0: frame i -> level i): 0, 2, 4.
    for key, level in (("rgb_prev", 0), ("rgb", 2), ("rgb_next", 4)):
        assert np.allclose(item[key].numpy(), level / 255.0, atol=1e-6)
    np.testing.assert_allclose(item["K"].numpy()[0, 0], 530 * 16 / 1280, rtol=1e-5)  # nominal K, 8 -> 16 px wide
    assert "spectrogram" not in item and item["depth_m"].shape == (1, 12, 16)
    with_audio = TorchTripletDataset(tri, (12, 16), with_audio=True, hflip_prob=1.0)[0]
    assert with_audio["spectrogram"].shape == (2, 12, 16) and bool(with_audio["flipped"])
