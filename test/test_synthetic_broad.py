"""Tests of the broad synthetic world (presets broad, broad_test, xsim; training/synthetic).

Levels and arrival times are measured from the written files or buffers with estimators written
here (a band-limited matched filter, mirror images), not read back from the generator's numbers.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from avsnet_ros.audio import ECHO_ONSET_SAMPLE, matched_filter, read_wav
from avsnet_ros.audio.frontend import SweepSpec
from training.synthetic.acoustics import (
    SAMPLE_RATE_HZ,
    build_room,
    eyring_t60_bands_s,
    render_echo,
)
from training.synthetic.scene import (
    FAMILIES,
    MIN_HEIGHT_M,
    PRESETS,
    Box,
    Layout,
    Look,
    Pose,
    SequenceSpec,
    rig_positions_m,
)
from training.synthetic.writer import GenerationOptions, depth_hole_mask, generate_dataset, make_sequence_spec

REPO = Path(__file__).resolve().parents[1]
FS = SAMPLE_RATE_HZ
C = 343.0


def direct_level_dbfs(echo: np.ndarray, sweep: np.ndarray, band=(300.0, 15000.0), up: int = 8) -> float:
    """Peak level (dBFS, louder channel) of the direct-path sweep in a recording: the band-limited,
    8x upsampled cross-correlation with the sweep near ECHO_ONSET_SAMPLE, over the same correlation of
    the sweep with itself (so a direct path a x sweep gives a). The band keeps out what the octave
    filters of per-band simulations remove below ~90 Hz and most brown noise."""
    x = np.asarray(echo, np.float64)
    s = np.asarray(sweep, np.float64)
    nfft = 1 << int(math.ceil(math.log2(x.shape[1] + s.size)))
    spec = np.fft.rfft(s, nfft)
    f = np.fft.rfftfreq(nfft, 1.0 / FS)
    w = ((f >= band[0]) & (f <= band[1])).astype(float)
    w = np.convolve(w, np.hanning(65) / np.hanning(65).sum(), mode="same")
    r = np.fft.irfft(np.fft.rfft(x, nfft) * np.conj(spec) * w, nfft * up)
    ref = np.fft.irfft(np.abs(spec) ** 2 * w, nfft * up)
    lo, hi = (ECHO_ONSET_SAMPLE - 30) * up, (ECHO_ONSET_SAMPLE + 30) * up
    return 20.0 * math.log10(np.abs(r[:, lo:hi]).max() / np.abs(ref).max())


def _read_csv(path: Path) -> "list[dict]":
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _files(root: Path, sub: str) -> dict:
    return {p.name: p.read_bytes() for p in sorted(root.rglob(f"{sub}/*"))}


@pytest.fixture(scope="module")
def broad_sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("broad")
    opt = GenerationOptions(height=24, width=48, frames_per_sequence=3)
    out = {}
    out["broad"] = generate_dataset(base / "broad", 6, seed=21, preset="broad", options=opt, workers=1, progress=False)
    out["broad_test"] = generate_dataset(base / "broad_test", 3, seed=21, preset="broad_test", options=opt, workers=1,
                                         progress=False)
    out["xsim"] = generate_dataset(base / "xsim", 3, seed=21, preset="xsim", options=opt, workers=1, progress=False)
    return base, out


@pytest.mark.parametrize("name", ["broad", "broad_test", "xsim"])
def test_new_presets_write_int32_wavs_with_their_sweep_and_level(broad_sets, name):
    base, summaries = broad_sets
    loc = Path(summaries[name]["loc_dir"])
    split = "train" if name == "broad" else "test"
    rows = _read_csv(loc / f"{split}.csv")
    meta = _read_csv(loc / f"{split}_meta.csv")
    assert len(rows) == len(meta) == summaries[name]["n"]
    info = json.loads((loc / "generation.json").read_text())
    assert info["options"]["wav_format"] == "int32"
    sweeps = []
    for row, m in zip(rows, meta):
        wav = base / name / row["audio path"] / row["audio file name"]
        _, raw = wavfile.read(wav)
        assert raw.dtype == np.int32 and raw.shape == (20000, 2)
        echo, rate = read_wav(wav)
        assert rate == FS and echo.shape == (2, 20000) and echo.dtype == np.float32
        sweep = SweepSpec.from_text(row["sweep"])
        sweeps.append(sweep)
        assert sweep.f0_hz == 20.0 and sweep.f1_hz == 20000.0 and 0.002 <= sweep.duration_s <= 0.05
        assert 0.0001 <= sweep.fade_s <= min(0.002, sweep.duration_s / 4) + 0.5e-6  # rounded to 1 us
        level = float(m["level_dbfs"])
        assert -40.0 <= level <= -1.0 and 10.0 <= float(m["snr_db"]) <= 50.0
        assert direct_level_dbfs(echo, sweep.waveform()) == pytest.approx(level, abs=1.5)
        assert abs(float(m["onset_sample"]) - ECHO_ONSET_SAMPLE) <= 8.5
        assert 0.1 <= float(m["mic_spacing_m"]) <= 0.3 and m["family"] in FAMILIES
        depth = np.load(base / name / row["depth path"] / row["depth file name"])
        assert depth.dtype == np.uint16
        assert np.mean(depth == 0) == pytest.approx(float(m["hole_fraction"]), abs=1e-4)
    # every frame draws its own sweep
    assert len({s.to_text() for s in sweeps}) == len(sweeps)
    models = {m["acoustic_model"] for m in meta}
    if name == "xsim":
        assert all(m["ray_tracing"] == "1" for m in meta)
        assert models <= {"hybrid_ism1+rt3000", "hybrid_ism2+rt3000"}
    else:
        assert all(m["ray_tracing"] == "0" for m in meta) and models == {"ism3+diffuse"}


def test_broad_and_broad_test_share_no_scene(broad_sets):
    base, summaries = broad_sets
    a = _files(Path(summaries["broad"]["loc_dir"]), "camera")
    b = _files(Path(summaries["broad_test"]["loc_dir"]), "camera")
    assert a["camera_0.jpeg"] != b["camera_0.jpeg"]


def test_forced_sweep_and_level_change_only_the_audio(tmp_path):
    opt = GenerationOptions(height=24, width=48, frames_per_sequence=2)
    forced_sweep = "method=exponential;duration_s=0.01;fade_s=0.001"
    plain = generate_dataset(tmp_path / "plain", 4, seed=12, preset="broad_test", options=opt, workers=1,
                             progress=False)
    forced = generate_dataset(
        tmp_path / "forced", 4, seed=12, preset="broad_test", workers=1, progress=False,
        options=GenerationOptions(height=24, width=48, frames_per_sequence=2, sweep=forced_sweep, level_dbfs=-30.0),
    )
    hidden = generate_dataset(
        tmp_path / "hidden", 4, seed=12, preset="broad_test", workers=1, progress=False,
        options=GenerationOptions(height=24, width=48, frames_per_sequence=2, sweep=forced_sweep, level_dbfs=-3.0,
                                  sweep_column=False),
    )
    p_loc, f_loc, h_loc = (Path(s["loc_dir"]) for s in (plain, forced, hidden))
    for sub in ("camera", "depth"):
        assert _files(p_loc, sub) == _files(f_loc, sub) == _files(h_loc, sub)
    pa, fa = _files(p_loc, "audio"), _files(f_loc, "audio")
    assert all(pa[k] != fa[k] for k in pa)
    want = SweepSpec.from_text(forced_sweep)
    rows, meta = _read_csv(f_loc / "test.csv"), _read_csv(f_loc / "test_meta.csv")
    assert {r["sweep"] for r in rows} == {want.to_text()}
    for row, m in zip(rows, meta):
        echo, _ = read_wav(tmp_path / "forced" / row["audio path"] / row["audio file name"])
        assert float(m["level_dbfs"]) == pytest.approx(-30.0, abs=1e-3)
        assert float(m["snr_db"]) == pytest.approx(40.0, abs=1e-3)  # fixed -70 dBFS noise floor
        assert direct_level_dbfs(echo, want.waveform()) == pytest.approx(-30.0, abs=1.5)
    h_rows, h_meta = _read_csv(h_loc / "test.csv"), _read_csv(h_loc / "test_meta.csv")
    assert "sweep" not in h_rows[0] and "fx" in h_rows[0]
    for row, m in zip(h_rows, h_meta):
        echo, _ = read_wav(tmp_path / "hidden" / row["audio path"] / row["audio file name"])
        assert float(m["snr_db"]) == pytest.approx(67.0, abs=1e-3)
        assert direct_level_dbfs(echo, want.waveform()) == pytest.approx(-3.0, abs=1.5)
    # the unforced run drew its own sweeps and levels
    assert {r["sweep"] for r in _read_csv(p_loc / "test.csv")} != {want.to_text()}


def test_cli_forced_options_and_errors(tmp_path):
    script = str(REPO / "training" / "make_synthetic.py")
    base = [sys.executable, script, "--n", "2", "--seed", "3", "--height", "16", "--width", "32", "--workers", "1",
            "--no-progress", "--frames-per-sequence", "2"]
    res = subprocess.run(base + ["--out", str(tmp_path / "a"), "--preset", "train", "--sweep",
                                 "method=linear;duration_s=0.03;fade_s=0.001", "--level-dbfs", "-12",
                                 "--no-sweep-column"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    loc = tmp_path / "a" / "synth_train_s3"
    rows, meta = _read_csv(loc / "train.csv"), _read_csv(loc / "train_meta.csv")
    assert "sweep" not in rows[0]
    assert [float(m["level_dbfs"]) for m in meta] == [-12.0, -12.0]
    echo, _ = read_wav(loc / "audio" / "audio_0.wav")
    assert echo.dtype == np.float32 and wavfile.read(loc / "audio" / "audio_0.wav")[1].dtype == np.float32
    sweep = SweepSpec(duration_s=0.03, method="linear", fade_s=0.001)
    assert direct_level_dbfs(echo, sweep.waveform()) == pytest.approx(-12.0, abs=1.5)
    bad = subprocess.run(base + ["--out", str(tmp_path / "b"), "--sweep", "method=sawtooth"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and "--sweep" in bad.stderr


def test_old_presets_get_the_default_sweep_column(tmp_path):
    s = generate_dataset(tmp_path, 2, seed=1, preset="shifted", options=GenerationOptions(height=16, width=32),
                         workers=1, progress=False)
    rows = _read_csv(Path(s["loc_dir"]) / "test.csv")
    assert [SweepSpec.from_text(r["sweep"]) for r in rows] == [SweepSpec(), SweepSpec()]
    meta = _read_csv(Path(s["loc_dir"]) / "test_meta.csv")
    assert {m["family"] for m in meta} == {"shoebox"} and {m["mic_spacing_m"] for m in meta} == {"0.2000"}


# ------------------------------------------------------------------------------------ geometry

def _inside_free(p: np.ndarray, room_m: np.ndarray, boxes_m: list, clearance: float) -> bool:
    if np.any(p < clearance) or np.any(p > room_m - clearance):
        return False
    return not any(np.all(p > lo - clearance) and np.all(p < hi + clearance) for lo, hi in boxes_m)


@pytest.mark.parametrize("preset", ["broad", "xsim"])
def test_family_rooms_are_in_range_and_the_rig_fits(preset):
    """Every family: the longest side in the family's range (both twins), a corridor's width 0.06-0.25
    of its length, the ceiling >= MIN_HEIGHT_M, and speaker and microphones inside the room, >= 4 cm
    from every wall and box at both scales, every frame."""
    p = PRESETS[preset]
    seen = set()
    for q in range(0, 120, 2):
        for twin in (0, 1):
            spec = make_sequence_spec(4, p, q + twin, 5, 3)
            lay, fam = spec.layout, FAMILIES[spec.layout.family]
            seen.add(fam.name)
            assert lay.room[0] == 1.0 and lay.room[1] <= 1.0
            assert fam.scale_range_m[0] <= spec.scale_m <= fam.scale_range_m[1]
            room_m = lay.room * spec.scale_m
            assert room_m[2] >= MIN_HEIGHT_M - 1e-9
            if fam.name == "corridor":
                assert 0.06 <= lay.room[1] <= 0.25 and room_m[0] <= 30.0
            boxes_m = [(b.lo * spec.scale_m, b.hi * spec.scale_m) for b in lay.boxes]
            for pose in lay.poses:
                pos = rig_positions_m(pose, spec.scale_m, spec.rig_offsets())
                spacing = np.linalg.norm(pos["mic_left"] - pos["mic_right"])
                assert spacing == pytest.approx(spec.mic_spacing_m, abs=1e-9) and 0.1 - 1e-9 <= spacing <= 0.3 + 1e-9
                for k in ("speaker", "mic_left", "mic_right"):
                    assert _inside_free(pos[k], room_m, boxes_m, 0.04), (fam.name, k, spec.scale_m)
        # twins share the image, not the scale
        a, b = make_sequence_spec(4, p, q, 5, 3), make_sequence_spec(4, p, q + 1, 5, 3)
        assert a.layout.family == b.layout.family and b.scale_m > a.scale_m
    want = {f for f, _ in p.families}
    assert seen == want


def test_family_sizes_cover_1_5_to_30_m_roughly_log_uniformly():
    scales = np.array([make_sequence_spec(9, PRESETS["broad"], q, 1, 3).scale_m for q in range(400)])
    assert scales.min() >= 1.5 and scales.max() <= 30.0
    edges = np.log([1.5, 3.0, 6.0, 12.0, 30.0])
    density = np.histogram(np.log(scales), bins=edges)[0] / np.diff(edges) / scales.size
    uniform = 1.0 / math.log(20.0)
    assert np.all(density > 0.6 * uniform) and np.all(density < 1.5 * uniform), density


def test_depth_hole_masks():
    rng = np.random.default_rng(0)
    masks = [depth_hole_mask(rng, 40, 80) for _ in range(200)]
    with_holes = [m for m in masks if m.any()]
    assert 0.35 < len(with_holes) / len(masks) < 0.65
    frac = np.array([m.mean() for m in with_holes])
    assert frac.min() > 0.001 and frac.max() < 0.3


# ------------------------------------------------------------------------------------ acoustics

def _plain_look() -> Look:
    return Look(albedo=np.full(3, 0.5), kind=0, period=0.1, contrast=0.0, grid=np.zeros((16, 16)))


def _test_spec(position, absorption, *, model="ism", max_order=1, boxes=(), scattering=None) -> SequenceSpec:
    lay = Layout(room=np.array([1.0, 1.0, 1.0]), boxes=[Box(np.asarray(lo, float), np.asarray(hi, float))
                                                        for lo, hi in boxes],
                 looks=[_plain_look()] * (6 + 6 * len(boxes)), light=np.array([0.5, 0.5, 0.9]), light_power=0.5,
                 ambient=0.3, poses=[Pose(np.asarray(position, float), 0.0, 0.0, 0.0)])
    n = 6 + 6 * len(boxes)
    return SequenceSpec(layout=lay, scale_m=12.0, absorption=np.broadcast_to(absorption, (n, 8)).copy(),
                        noise_std=0.0, gain=1.0, channel_gain=np.ones(2), jitter=np.zeros(1, dtype=int),
                        max_order=max_order, scattering=scattering, acoustic_model=model,
                        rt_rays=2000 if model == "hybrid" else 0, mic_spacing_m=0.25)


def _earliest_mirror_path_m(pos: dict, room_m: np.ndarray) -> float:
    paths = []
    for m in ("mic_left", "mic_right"):
        for ax in range(3):
            for v in (0.0, room_m[ax]):
                img = np.array(pos["speaker"])
                img[ax] = 2 * v - img[ax]
                paths.append(float(np.linalg.norm(img - pos[m])))
    return min(paths)


def test_hybrid_model_ray_traces_and_keeps_arrival_times():
    """xsim's model: a 12 m room, wall 1.5 m ahead. The room runs pyroomacoustics' ray tracer, its
    first reflection arrives at the mirror-image path (~2 d / c), and the ray-traced tail carries
    energy where the order-1 image sources have none."""
    d = 1.5
    spec = _test_spec([1 - d / 12.0, 0.5, 0.5], 0.2, model="hybrid", scattering=np.full(6, 0.3))
    room = build_room(spec)
    assert room.simulator_state["rt_needed"] and room.rt_args["n_rays"] == 2000
    assert not build_room(spec, ray_tracing=False).simulator_state["rt_needed"]
    sweep = SweepSpec().waveform()
    full, det = render_echo(spec, 0, np.random.default_rng(0), sweep, noise=False, return_details=True)
    assert det["ray_tracing"] and det["max_order"] == 1
    direct = render_echo(replace(spec, acoustic_model="ism"), 0, np.random.default_rng(0), sweep, tail=False,
                         noise=False, max_order=0)
    refl = full - direct
    emission = det["emission_sample"]
    pos = det["positions_m"]
    img = np.array(pos["speaker"])
    img[0] = 2 * 12.0 - img[0]
    exact = np.mean([np.linalg.norm(img - pos[m]) for m in ("mic_left", "mic_right")]) / C
    _, env = matched_filter(refl, sweep)
    first = int(np.argmax(env >= 0.5 * env.max()))
    while env[first + 1] >= env[first]:
        first += 1
    assert (first - emission) / FS == pytest.approx(exact, abs=3 / FS)
    assert exact == pytest.approx(2 * d / C, abs=1e-3)
    # late energy (after 100 ms) comes from the ray tracer: order-1 image sources end at ~70 ms
    late = slice(int(emission + 0.1 * FS), int(emission + 0.3 * FS))
    assert np.sqrt(np.mean(refl[:, late] ** 2)) > 1e-3 * np.abs(refl).max()


def test_hybrid_model_puts_nothing_before_the_first_reflection():
    """Rig 36 cm above the floor of a 3 m room: the floor echo comes 1.8 ms after the direct sound,
    inside the ray tracer's first 4 ms histogram bin (pyroomacoustics alone spreads that bin's energy
    from the direct sound on: ~70 % of the reflections' peak lands before the first reflection).
    Before the earliest mirror-image path only pyroomacoustics' zero-phase 10 Hz high-pass leaves a
    trace (a few %)."""
    spec = _test_spec([0.5, 0.5, 0.12], 0.2, model="hybrid", scattering=np.full(6, 0.5))
    spec.scale_m = 3.0
    sweep = SweepSpec().waveform()
    full, det = render_echo(spec, 0, np.random.default_rng(0), sweep, noise=False, return_details=True)
    direct = render_echo(replace(spec, acoustic_model="ism"), 0, np.random.default_rng(0), sweep, tail=False,
                         noise=False, max_order=0)
    refl = full - direct
    first = det["emission_sample"] + _earliest_mirror_path_m(det["positions_m"], np.full(3, 3.0)) / C * FS
    assert 40 < first - det["emission_sample"] < 0.004 * FS
    assert np.abs(refl[:, : int(first) - 3]).max() < 0.1 * np.abs(refl).max()


def _decay_t60_s(h: np.ndarray, fc: float, t0: float, t1: float) -> float:
    """T60 from the slope of the smoothed energy of h (direct path removed) in a 2/3-octave Hann band."""
    h = h.copy()
    h[: int(0.002 * FS)] = 0.0
    f = np.fft.rfftfreq(h.size, 1.0 / FS)
    u = np.clip(np.log2(np.maximum(f, 1.0) / fc) * 3.0, -1.0, 1.0)
    x = np.fft.irfft(np.fft.rfft(h) * (0.5 + 0.5 * np.cos(np.pi * u)), h.size)
    sm = np.convolve(x ** 2, np.ones(882) / 882, mode="same")
    t = np.arange(h.size) / FS
    keep = (t > t0) & (t < t1)
    return -60.0 / np.polyfit(t[keep], 10 * np.log10(sm[keep]), 1)[0]


def test_per_band_absorption_sets_per_band_decay():
    """Hard at low frequencies, absorbent at high ones (0.05 + 0.1 per octave): the RIR (image sources
    + per-band diffuse tail) decays per band at that band's Eyring T60 (within 25 %)."""
    from training.synthetic.scene import BAND_CENTERS_HZ

    absorption = np.clip(0.05 + 0.1 * np.arange(8), 0.0, 0.9)  # 125 Hz .. 16 kHz
    spec = _test_spec([0.3, 0.4, 0.45], absorption, max_order=3)
    spec.scale_m = 4.0
    t60 = eyring_t60_bands_s(spec)
    assert t60[1] > 5 * t60[6]
    _, det = render_echo(spec, 0, np.random.default_rng(1), SweepSpec().waveform(), noise=False,
                         return_details=True)
    for b in (1, 3, 6):
        got = _decay_t60_s(det["rir"][0], BAND_CENTERS_HZ[b], 0.03, min(0.4, 0.03 + 0.5 * t60[b]))
        assert got == pytest.approx(t60[b], rel=0.25), b


def test_broad_seq_walks_the_broad_families_with_stronger_texture():
    """The stage-2 preset (issue 13): the broad families without xsim's L-shapes, train_seq's walk (forward
    steps of 0.04-0.08 of the room length, <= 1 deg/frame of yaw), and texture contrast 0.25-0.7 where the
    original presets draw 0.1-0.45."""
    seq, train = PRESETS["broad_seq"], PRESETS["train"]
    contrasts, old, families, all_steps = [], [], set(), []
    for q in range(40):
        spec = make_sequence_spec(4, seq, q, 5, 3)
        families.add(spec.layout.family)
        contrasts += [lk.contrast for lk in spec.layout.looks]
        old += [lk.contrast for lk in make_sequence_spec(4, train, q, 5, 3).layout.looks]
        poses = spec.layout.poses
        steps = [float(np.linalg.norm(b.position[:2] - a.position[:2])) for a, b in zip(poses, poses[1:])]
        yaw = [abs(b.yaw - a.yaw) for a, b in zip(poses, poses[1:])]
        all_steps += steps
        # a walk that found no free straight path stops and turns 15 degrees (the trajectory's rule)
        assert all(s == 0.0 or 0.04 * 0.999 <= s <= 0.08 * 1.001 for s in steps), (spec.layout.family, steps)
        assert all(d <= math.radians(16.5) for d, s in zip(yaw, steps) if s == 0.0)
        assert all(d <= math.radians(1.0 + 2.0) for d, s in zip(yaw, steps) if s > 0.0), yaw
    assert np.mean(np.asarray(all_steps) > 0) > 0.9  # the free-path draw: nearly every frame moves
    assert "lshape" not in families and len(families) >= 3
    assert min(contrasts) >= 0.25 and max(contrasts) <= 0.7 and np.mean(contrasts) > 0.4
    assert min(old) >= 0.1 and max(old) <= 0.45
