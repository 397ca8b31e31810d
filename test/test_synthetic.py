"""Tests of the synthetic audio-visual world (training/synthetic, training/make_synthetic.py).

Physics is checked against geometry computed here (mirror images, plane intersections), not
against the generator's own numbers; files are checked with the project's BV2 reader.
"""
from __future__ import annotations

import filecmp
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsnet_ros.audio import ECHO_ONSET_SAMPLE, find_onset, matched_filter
from training.synthetic.acoustics import (
    BUFFER_SAMPLES,
    SAMPLE_RATE_HZ,
    build_room,
    default_sweep,
    impulse_responses,
    render_echo,
)
from training.synthetic.raycast import render
from training.synthetic.scene import (
    PRESETS,
    Box,
    Layout,
    Look,
    Pose,
    Preset,
    SequenceSpec,
    intrinsics_for,
    rig_positions_m,
    rotation_world_optical,
    sample_layout,
    sample_sequence_spec,
)
from training.synthetic.writer import GenerationOptions, generate_dataset, make_sequence_spec

REPO = Path(__file__).resolve().parents[1]
C = 343.0  # m/s: the speed of sound the physics check uses
FS = SAMPLE_RATE_HZ


def _plain_look(rgb) -> Look:
    return Look(albedo=np.asarray(rgb, float), kind=0, period=0.1, contrast=0.0, grid=np.zeros((16, 16)))


def _layout(room, boxes, position, yaw=0.0, pitch=0.0, roll=0.0, colours=None) -> Layout:
    n = 6 + 6 * len(boxes)
    rng = np.random.default_rng(0)
    colours = colours if colours is not None else [rng.uniform(0.1, 0.9, 3) for _ in range(n)]
    return Layout(
        room=np.asarray(room, float),
        boxes=[Box(np.asarray(lo, float), np.asarray(hi, float)) for lo, hi in boxes],
        looks=[_plain_look(c) for c in colours],
        light=np.array([0.5 * room[0], 0.5 * room[1], 0.95 * room[2]]),
        light_power=0.6,
        ambient=0.4,
        poses=[Pose(np.asarray(position, float), yaw, pitch, roll)],
    )


def _spec(layout, scale_m, absorption=0.2, max_order=1) -> SequenceSpec:
    n = 6 + 6 * len(layout.boxes)
    return SequenceSpec(
        layout=layout, scale_m=scale_m, absorption=np.full(n, absorption), noise_std=0.0, gain=1.0,
        channel_gain=np.ones(2), jitter=np.zeros(len(layout.poses), dtype=int), max_order=max_order,
    )


# ------------------------------------------------------------------------------------- acoustics

def _specular_path_m(src, mic, axis, value):
    """Length of the specular path src -> plane (coordinate `axis` = value) -> mic (mirror image)."""
    img = np.array(src, float)
    img[axis] = 2 * value - img[axis]
    return float(np.linalg.norm(img - mic))


@pytest.mark.parametrize("reflector", ["wall", "box"])
def test_echo_buffer_reflection_arrives_at_2d_over_c(reflector):
    """Nearest reflector d metres ahead: its echo in the written buffer arrives 2 d / 343 s after emission.

    A 12 m empty room (other surfaces >= 5 m away) with a wall (or a box face, which needs normals
    into the box to reflect at all) 1.5 m in front of the rig. Reflections are isolated by
    subtracting the direct-only buffer (image-source order 0), then found by matched filtering.
    """
    scale, d = 12.0, 1.5
    if reflector == "wall":
        lay = _layout([1, 1, 1], [], [1 - d / scale, 0.5, 0.5])
        plane_x = scale
    else:
        lay = _layout([1, 1, 1], [([0.6, 0.35, 0.3], [0.7, 0.65, 0.7])], [0.6 - d / scale, 0.5, 0.5])
        plane_x = 0.6 * scale
    spec = _spec(lay, scale, max_order=1)
    sweep = default_sweep()
    full, det = render_echo(spec, 0, np.random.default_rng(0), sweep, tail=False, noise=False, return_details=True)
    direct = render_echo(spec, 0, np.random.default_rng(0), sweep, tail=False, noise=False, max_order=0)
    assert full.shape == (2, BUFFER_SAMPLES) and full.dtype == np.float32

    # Direct-path onset where BatVision files have it (jitter 0 here).
    onset = find_onset(full, sweep)
    assert abs(onset.onset_sample - ECHO_ONSET_SAMPLE) <= 1
    emission = det["emission_sample"]

    _, env = matched_filter(full - direct, sweep)
    first = int(np.argmax(env >= 0.5 * env.max()))
    while env[first + 1] >= env[first]:
        first += 1
    arrival_s = (first - emission) / FS
    assert arrival_s == pytest.approx(2 * d / C, abs=1e-3)
    # Tighter: the exact specular path from the speaker to the microphones (both ~3 m).
    pos = det["positions_m"]
    exact = np.mean([_specular_path_m(pos["speaker"], pos[m], 0, plane_x) for m in ("mic_left", "mic_right")]) / C
    assert arrival_s == pytest.approx(exact, abs=3 / FS)
    # Level: the 10 cm direct sound is much stronger than the 3 m echo (1/r law).
    _, env_direct = matched_filter(direct, sweep)
    assert env_direct.max() > 10 * env[first]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_first_reflection_of_random_rooms_matches_nearest_wall(seed):
    """Random empty rooms of the generator (2-15 m): the first reflection in the RIR arrives at the
    shortest specular path, and within 1 ms of 2 d / 343 s for the nearest wall at distance d."""
    rng = np.random.default_rng(100 + seed)
    preset = Preset(name="t", code=99, n_boxes=(0, 0))
    lay = sample_layout(rng, preset, frames=1)
    spec = sample_sequence_spec(rng, preset, lay, twin=seed % 2)
    spec.max_order = 1
    pos = rig_positions_m(lay.poses[0], spec.scale_m)
    room_m = lay.room * spec.scale_m
    cam = pos["camera"]
    dists = np.concatenate([cam, room_m - cam])  # camera to each of the 6 wall planes
    d = float(dists.min())
    rir = impulse_responses(build_room(spec), pos["speaker"], np.stack([pos["mic_left"], pos["mic_right"]], 1))
    for m, mic in enumerate(("mic_left", "mic_right")):
        paths = [_specular_path_m(pos["speaker"], pos[mic], ax, v) for ax in range(3) for v in (0.0, room_m[ax])]
        direct_m = float(np.linalg.norm(pos["speaker"] - pos[mic]))
        expected_s = min(paths) / C
        h = np.abs(rir[m])
        start = int(direct_m / C * FS) + 45  # past the direct path's 81-tap fractional-delay filter
        assert expected_s * FS > start, "test geometry: reflection overlaps the direct path"
        thresh = 0.3 * math.sqrt(1 - spec.absorption.max()) / min(paths)  # 1/r amplitude law
        k = start + int(np.argmax(h[start:] >= thresh))
        while h[k + 1] >= h[k]:
            k += 1
        assert k / FS == pytest.approx(expected_s, abs=2 / FS)
        assert k / FS == pytest.approx(2 * d / C, abs=1e-3)


def test_random_scene_buffers_follow_the_batvision_layout():
    """Generated frames (furniture, tail, noise, jitter): onset at 288 + jitter, level realistic."""
    sweep = default_sweep()
    for q in range(3):
        spec = make_sequence_spec(7, PRESETS["train"], q, frames=2, max_order=3)
        for f in range(2):
            buf, det = render_echo(spec, f, np.random.default_rng(q), sweep, return_details=True)
            assert buf.shape == (2, BUFFER_SAMPLES) and buf.dtype == np.float32
            assert np.all(np.isfinite(buf)) and np.abs(buf).max() < 1.0
            on = find_onset(buf, sweep)
            assert abs(on.onset_sample - (ECHO_ONSET_SAMPLE + int(spec.jitter[f]))) <= 1
            assert -3 <= int(spec.jitter[f]) <= 3
            # direct sweep much louder than anything 5 ms later
            direct = np.abs(buf[:, 280:800]).max()
            late = np.abs(buf[:, 288 + 220 + 441:]).max()
            assert direct > 3 * late
            assert 0.1 < direct < 1.0


# ------------------------------------------------------------------------------------- ray caster

def _brute_force_depth(layout, pose, k, pixels):
    """Independent reference: intersect each pixel ray with every face rectangle, take the nearest."""
    r = rotation_world_optical(pose)
    p = pose.position
    faces = []  # (axis, value, lo(3), hi(3))
    z = np.zeros(3)
    for ax in range(3):
        for v in (0.0, layout.room[ax]):
            faces.append((ax, v, z, layout.room))
    for b in layout.boxes:
        for ax in range(3):
            for v in (b.lo[ax], b.hi[ax]):
                faces.append((ax, v, b.lo, b.hi))
    out = []
    for (v_px, u_px) in pixels:
        d = r @ np.array([(u_px - k[0, 2]) / k[0, 0], (v_px - k[1, 2]) / k[1, 1], 1.0])
        best = np.inf
        for ax, val, lo, hi in faces:
            if abs(d[ax]) < 1e-12:
                continue
            t = (val - p[ax]) / d[ax]
            if t <= 0:
                continue
            x = p + t * d
            others = [i for i in range(3) if i != ax]
            if all(lo[i] - 1e-9 <= x[i] <= hi[i] + 1e-9 for i in others):
                best = min(best, t)
        out.append(best)
    return np.array(out)


def test_depth_of_a_known_wall_and_floor_is_analytic():
    """Camera level, facing +x, 2.5 units from the far wall: every far-wall pixel has z-depth 2.5;
    floor pixels have z = h * fy / (v - cy) (camera h above the floor)."""
    h, w = 48, 96
    k = intrinsics_for(h, w, 90.0)
    lay = _layout([4.0, 3.0, 2.0], [], [1.5, 1.5, 0.6])
    depth, rgb, sid = render(lay, lay.poses[0], k, h, w)
    far = sid == 1
    assert far.sum() > 100
    np.testing.assert_allclose(depth[far], 2.5, rtol=0, atol=1e-9)
    floor = sid == 4
    vv = np.broadcast_to(np.arange(h)[:, None], (h, w))
    assert floor.sum() > 50
    np.testing.assert_allclose(depth[floor], 0.6 * k[1, 1] / (vv[floor] - k[1, 2]), rtol=1e-9)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8


def test_depth_matches_brute_force_reference_with_furniture():
    rng = np.random.default_rng(3)
    h, w = 40, 80
    k = intrinsics_for(h, w, 90.0)
    for seed in range(4):
        lay = sample_layout(np.random.default_rng(seed), PRESETS["train"], frames=1)
        if not lay.boxes:
            continue
        depth, _, _ = render(lay, lay.poses[0], k, h, w)
        pix = [(int(rng.integers(0, h)), int(rng.integers(0, w))) for _ in range(60)]
        ref = _brute_force_depth(lay, lay.poses[0], k, pix)
        got = np.array([depth[v, u] for v, u in pix])
        np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_rgb_and_depth_agree_in_geometry():
    """Untextured, shadow-free scene with distinct colours: every depth discontinuity is a surface
    boundary with a colour edge, and inside one surface the colour varies smoothly."""
    h, w = 64, 128
    k = intrinsics_for(h, w, 90.0)
    colours = [[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.1], [0.1, 0.9, 0.9], [0.9, 0.1, 0.9]]
    colours += [[0.95, 0.95, 0.95]] * 6 + [[0.05, 0.05, 0.05]] * 6
    boxes = [([2.2, 0.6, 0.0001], [2.6, 1.2, 0.9]), ([1.6, 1.8, 0.3], [1.9, 2.2, 0.5])]
    lay = _layout([4.0, 3.0, 2.0], boxes, [0.4, 1.5, 1.0], yaw=0.1, pitch=-0.25, colours=colours)
    lay.light = np.array([0.5, 1.5, 1.9])  # behind the camera: no visible box shadows
    depth, rgb, sid = render(lay, lay.poses[0], k, h, w)
    assert len(np.unique(sid)) >= 6
    rgbf = rgb.astype(float)
    for axis in (0, 1):
        # Inverse depth is affine in pixel coordinates on a plane, so its first difference is
        # locally constant on a surface and only changes slope at a crease; an occlusion boundary
        # is a spike: one pair whose step dwarfs both neighbouring steps.
        g = np.diff(1.0 / depth, axis=axis)
        g = np.moveaxis(g, axis, 0)
        spike = np.zeros_like(g, dtype=bool)
        mid = np.abs(g[1:-1])
        spike[1:-1] = (mid > 4 * np.maximum(np.abs(g[:-2]), np.abs(g[2:]))) & (mid > 0.01)
        jump = np.moveaxis(spike, 0, axis)
        dsid = np.diff(sid.astype(int), axis=axis) != 0
        dcol = np.abs(np.diff(rgbf, axis=axis)).max(axis=-1)
        assert jump.sum() > 10
        assert np.all(dsid[jump]), "a depth discontinuity inside one surface"
        assert np.all(dcol[jump] > 20), "a depth discontinuity without a colour edge"
        assert dcol[~dsid].max() <= 8, "colour jumps inside one untextured surface"


def test_image_is_scale_ambiguous_and_echo_is_not():
    """The same layout at two scales: identical RGB, depth scaled, echo arrivals scaled."""
    spec_a = make_sequence_spec(11, PRESETS["train"], 0, frames=1, max_order=1)
    spec_b = make_sequence_spec(11, PRESETS["train"], 1, frames=1, max_order=1)  # its twin
    assert spec_a.layout.layout_index == spec_b.layout.layout_index
    assert spec_b.scale_m > 1.3 * spec_a.scale_m
    k = intrinsics_for(32, 64)
    d_a, rgb_a, _ = render(spec_a.layout, spec_a.layout.poses[0], k, 32, 64)
    d_b, rgb_b, _ = render(spec_b.layout, spec_b.layout.poses[0], k, 32, 64)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_allclose(d_a * spec_a.scale_m * (spec_b.scale_m / spec_a.scale_m), d_b * spec_b.scale_m,
                               rtol=1e-12)
    for s in (spec_a, spec_b):
        s.noise_std = 0.0
    e_a = render_echo(spec_a, 0, np.random.default_rng(0), tail=False, noise=False)
    e_b = render_echo(spec_b, 0, np.random.default_rng(0), tail=False, noise=False)
    assert not np.allclose(e_a, e_b)


# ------------------------------------------------------------------------------------- writer

def _files(root: Path):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    opt = GenerationOptions(height=24, width=48, frames_per_sequence=4)
    a = generate_dataset(base / "a", 10, seed=5, options=opt, workers=1, progress=False, val_fraction=0.34)
    b = generate_dataset(base / "b", 10, seed=5, options=opt, workers=2, progress=False, val_fraction=0.34)
    c = generate_dataset(base / "c", 10, seed=6, options=opt, workers=1, progress=False, val_fraction=0.34,
                         location=a["location"])
    return base, a, b, c


def test_same_seed_gives_identical_files_any_worker_count(tiny_sets):
    base, a, b, _ = tiny_sets
    fa, fb = _files(base / "a"), _files(base / "b")
    assert fa == fb and len(fa) == 3 * 10 + 5  # 10 x (wav, jpeg, npy) + 2 csv + 2 meta csv + json
    for rel in fa:
        assert filecmp.cmp(base / "a" / rel, base / "b" / rel, shallow=False), rel


def test_different_seeds_differ(tiny_sets):
    base, a, _, c = tiny_sets
    loc = a["location"]
    for kind, name in (("audio", "audio_0.wav"), ("camera", "camera_0.jpeg"), ("depth", "depth_0.npy")):
        assert (base / "a" / loc / kind / name).read_bytes() != (base / "c" / loc / kind / name).read_bytes()


def test_written_dataset_loads_with_the_bv2_reader(tiny_sets):
    from avsnet_ros.data.batvision import BV2Dataset

    base, a, _, _ = tiny_sets
    assert a["splits"] == {"train": 8, "val": 2}  # 3 sequences of 4, 4, 2 frames; twins share layout 0
    ds = BV2Dataset(base / "a", split="train")
    val = BV2Dataset(base / "a", split="val")
    assert len(ds) == 8 and len(val) == 2
    keys = ds.frame_keys()
    assert keys[:4] == [("train-s5-q00000", f) for f in range(4)]
    assert len(ds.triplets(1)) == 4  # frames 1, 2 of each 4-frame sequence
    stamps = [r.stamp_ns for r in ds.rows]
    assert stamps[1] - stamps[0] == 200_000_000 and all(b > a for a, b in zip(stamps, stamps[1:]))
    k = intrinsics_for(24, 48, 90.0)
    sweep = default_sweep()
    for i in (0, 5):
        s = ds[i]
        assert s.rgb.shape == (24, 48, 3) and s.depth_m.shape == (24, 48)
        np.testing.assert_allclose(s.intrinsics, k, atol=1e-6)
        assert np.all(np.isfinite(s.depth_m)) and 0.05 < np.nanmin(s.depth_m) and np.nanmax(s.depth_m) < 30
        assert s.echo.shape == (2, BUFFER_SAMPLES) and s.sample_rate_hz == 44100
        assert abs(find_onset(s.echo, sweep).onset_sample - ECHO_ONSET_SAMPLE) <= 4
    # twins (sequences 0 and 1 share layout 0): same image, depth in proportion to the scale
    s0, s4 = ds[0], ds[4]
    np.testing.assert_array_equal(s0.rgb, s4.rgb)
    ratio = s4.depth_m / s0.depth_m
    assert np.nanmax(ratio) / np.nanmin(ratio) < 1.01 and abs(np.nanmedian(ratio) - 1) > 0.2


def test_cli_writes_bv2_and_rosbag(tmp_path):
    from avsnet_ros.data.batvision import BV2Dataset
    from avsnet_ros.data.rosbag_io import read_bag_samples

    out, bag = tmp_path / "d", tmp_path / "bag"
    cmd = [sys.executable, str(REPO / "training" / "make_synthetic.py"), "--out", str(out), "--n", "3",
           "--seed", "2", "--preset", "shifted", "--height", "16", "--width", "32", "--workers", "1",
           "--wav-format", "int16", "--bag", str(bag), "--no-progress", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    ds = BV2Dataset(out, split="test")
    assert len(ds) == 3
    samples, report = read_bag_samples(bag)
    assert len(samples) == 3
    for s_file, s_bag in zip((ds[i] for i in range(3)), samples):
        np.testing.assert_array_equal(s_file.rgb, s_bag.rgb)
        np.testing.assert_array_equal(s_file.echo, s_bag.echo)
        np.testing.assert_array_equal(np.nan_to_num(s_file.depth_m), np.nan_to_num(s_bag.depth_m))
        assert (s_file.sequence_id, s_file.frame_index) == (s_bag.sequence_id, s_bag.frame_index)
    bad = subprocess.run(cmd[:2] + ["--out", str(tmp_path / "e"), "--n", "0", "--seed", "1"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and "--n" in bad.stderr
