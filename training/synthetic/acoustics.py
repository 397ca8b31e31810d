"""Echoes of the synthetic world: image-source room impulse responses (pyroomacoustics) + a diffuse tail.

Pipeline for one frame (all in metres, seconds, 44.1 kHz):
1. `build_room`: a general pyroomacoustics `Room` from `wall_factory` quads: the 6 room walls
   (normals pointing out of the room) and 6 quads per box (normals pointing INTO the box, i.e. away
   from the air as for the room walls; the other orientation makes boxes acoustically invisible),
   one frequency-flat energy absorption per surface, image-source method up to `max_order`.
2. `impulse_responses`: RIRs speaker -> (left, right) microphone with pyroomacoustics' fixed
   fractional-delay offset (frac_delay_length // 2 = 40 samples) removed, so index 0 = the instant
   the sweep's first sample leaves the speaker. pyroomacoustics' amplitude law is 1 / path length,
   so the direct path (10 cm) is ~20-100x stronger than the reflections, as in real recordings.
3. `diffuse_tail`: the image-source RIR stops at order `max_order`, which would end the echo at a
   room-size-dependent time (an artificial cue). Where its smoothed energy falls below the
   statistical diffuse-field envelope 4 pi c / (V fs) * exp(-13.8 t / T60) (image density of a room
   of volume V, pyroomacoustics' 1/r amplitudes, Eyring T60 from the absorptions), Gaussian noise
   fills the difference, starting after all first-order reflections have arrived.
The speaker is mildly directional (scene.Preset.speaker_pattern_p: p + (1 - p) cos(angle to the
rig's forward axis), pyroomacoustics CardioidFamily), as the forward-facing speaker of a real rig;
the microphones are omnidirectional.
4. `render_echo`: RIR (*) the emitted sweep (avsnet_ros.audio DEFAULT_SWEEP), gain, per-channel
   gain mismatch, white noise, placed in a BatVision-layout buffer: 20000 samples, the direct-path
   sweep onset at ECHO_ONSET_SAMPLE + jitter (the emission instant is direct_path / c earlier,
   ~0.3 ms), zero-padded, float32 (2, N), row 0 = left.
"""
from __future__ import annotations

import math

import numpy as np
import pyroomacoustics as pra
from pyroomacoustics.room import wall_factory
from scipy.signal import fftconvolve

from avsnet_ros.audio import DEFAULT_SAMPLE_RATE_HZ, DEFAULT_SWEEP, ECHO_ONSET_SAMPLE, make_sweep

from .scene import SequenceSpec, n_surfaces, rig_positions_m, rotation_world_body

__all__ = [
    "SAMPLE_RATE_HZ",
    "SPEED_OF_SOUND_M_S",
    "BUFFER_SAMPLES",
    "PRA_DELAY_SAMPLES",
    "RECORDING_GAIN",
    "box_quads",
    "build_room",
    "impulse_responses",
    "speaker_directivity",
    "eyring_t60_s",
    "diffuse_tail",
    "render_echo",
    "default_sweep",
]

SAMPLE_RATE_HZ = DEFAULT_SAMPLE_RATE_HZ
#: pyroomacoustics' speed of sound (its default constant "c", 343 m/s like avsnet_ros.audio's physical
#: value); all geometry <-> time here uses the simulator's own constant so its delays and ours agree.
SPEED_OF_SOUND_M_S = float(pra.constants.get("c"))
#: Length of every echo buffer, as the real BatVision V2 wav files.
BUFFER_SAMPLES = 20000
#: pyroomacoustics delays every arrival by half its fractional-delay filter length (40 samples).
PRA_DELAY_SAMPLES = int(pra.constants.get("frac_delay_length")) // 2
#: Fixed recording gain: with pyroomacoustics' 1/r law the 10.2 cm direct path has amplitude ~9.8,
#: times ~0.7 for the speaker's pattern towards the side microphones; this puts the direct sweep
#: near 0.5 full scale (the real BV2 sample peaks at ~0.75).
RECORDING_GAIN = 0.07


def default_sweep(sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """The emitted sweep (float32 (S,)): avsnet_ros.audio.DEFAULT_SWEEP."""
    return make_sweep(sample_rate_hz=sample_rate_hz, **DEFAULT_SWEEP)


def box_quads(lo: np.ndarray, hi: np.ndarray, normals_into_box: bool) -> list:
    """The 6 faces of an axis-aligned box as (3, 4) corner arrays (face order as scene.py's ids).

    pyroomacoustics takes a wall's normal from its corner order (right-hand rule, counter-clockwise
    around the normal). normals_into_box=False gives outward normals (room walls: away from the air
    inside); True gives normals into the box (furniture: away from the air outside).
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    quads = []
    for ax in range(3):
        a, b = [i for i in range(3) if i != ax]
        for side, val in ((0, lo[ax]), (1, hi[ax])):
            pts = []
            for ua, ub in ((0, 0), (1, 0), (1, 1), (0, 1)):
                p = np.zeros(3)
                p[ax] = val
                p[a] = (lo, hi)[ua][a]
                p[b] = (lo, hi)[ub][b]
                pts.append(p)
            c = np.array(pts).T
            normal = np.cross(c[:, 1] - c[:, 0], c[:, 3] - c[:, 0])
            outward = 1.0 if side == 1 else -1.0
            want = -outward if normals_into_box else outward
            if normal[ax] * want < 0:
                c = c[:, ::-1].copy()
            quads.append(c)
    return quads


def _room_geometry_m(spec: SequenceSpec):
    lay, s = spec.layout, spec.scale_m
    room_m = lay.room * s
    boxes_m = [(b.lo * s, b.hi * s) for b in lay.boxes]
    return room_m, boxes_m


def build_room(spec: SequenceSpec, max_order: "int | None" = None, sample_rate_hz: int = SAMPLE_RATE_HZ) -> pra.Room:
    """pyroomacoustics Room (no source/mics yet) of a sequence's scene in metres."""
    room_m, boxes_m = _room_geometry_m(spec)
    absorption = np.asarray(spec.absorption, dtype=np.float64)
    if absorption.shape != (n_surfaces(spec.layout),):
        raise ValueError(f"need one absorption per surface ({n_surfaces(spec.layout)}), got {absorption.shape}")
    walls = []
    for i, c in enumerate(box_quads(np.zeros(3), room_m, normals_into_box=False)):
        walls.append(wall_factory(c, np.array([absorption[i]]), np.array([0.0]), name=f"s{i}"))
    for b, (lo, hi) in enumerate(boxes_m):
        for k, c in enumerate(box_quads(lo, hi, normals_into_box=True)):
            sid = 6 + 6 * b + k
            walls.append(wall_factory(c, np.array([absorption[sid]]), np.array([0.0]), name=f"s{sid}"))
    order = spec.max_order if max_order is None else int(max_order)
    return pra.Room(walls, fs=sample_rate_hz, max_order=order, air_absorption=False, ray_tracing=False)


def speaker_directivity(pose, pattern_p: float):
    """pyroomacoustics directivity p + (1 - p) cos(theta) about the rig's forward axis (None if p >= 1)."""
    if pattern_p >= 1.0:
        return None
    from pyroomacoustics.directivities import CardioidFamily, DirectionVector

    fwd = rotation_world_body(pose.yaw, pose.pitch, pose.roll)[:, 0]
    azimuth = math.atan2(fwd[1], fwd[0])
    colatitude = math.acos(max(-1.0, min(1.0, fwd[2])))
    return CardioidFamily(DirectionVector(azimuth=azimuth, colatitude=colatitude, degrees=False), p=float(pattern_p))


def impulse_responses(room: pra.Room, speaker_m: np.ndarray, mics_m: np.ndarray, directivity=None) -> np.ndarray:
    """RIRs (2, L) float64 from the speaker to mics_m (3, 2) [left, right], index 0 = emission.

    pyroomacoustics' constant 40-sample fractional-delay offset is removed, so an arrival over a path
    of length r (metres) peaks at sample r / SPEED_OF_SOUND_M_S * fs. directivity: the speaker's
    pyroomacoustics directivity (see speaker_directivity), None = omnidirectional.
    """
    room.add_source(np.asarray(speaker_m, dtype=np.float64), directivity=directivity)
    room.add_microphone_array(np.asarray(mics_m, dtype=np.float64))
    room.compute_rir()
    rirs = [np.asarray(room.rir[m][0], dtype=np.float64)[PRA_DELAY_SAMPLES:] for m in range(2)]
    n = max(len(r) for r in rirs)
    out = np.zeros((2, n))
    for m, r in enumerate(rirs):
        out[m, : len(r)] = r
    return out


def _volume_surface(spec: SequenceSpec):
    room_m, boxes_m = _room_geometry_m(spec)
    lx, ly, lz = room_m
    v = lx * ly * lz
    faces = [ly * lz, ly * lz, lx * lz, lx * lz, lx * ly, lx * ly]
    for lo, hi in boxes_m:
        ex = hi - lo
        v -= ex[0] * ex[1] * ex[2]
        faces += [ex[1] * ex[2]] * 2 + [ex[0] * ex[2]] * 2 + [ex[0] * ex[1]] * 2
    return v, np.array(faces)


def eyring_t60_s(spec: SequenceSpec) -> float:
    """Eyring reverberation time (s): 0.161 V / (-S ln(1 - mean absorption)), area-weighted."""
    v, areas = _volume_surface(spec)
    a = float(np.sum(areas * spec.absorption) / np.sum(areas))
    return 0.161 * v / (-np.sum(areas) * math.log(max(1e-6, 1.0 - a)))


def diffuse_tail(
    rir: np.ndarray,
    spec: SequenceSpec,
    start_s: float,
    rng: np.random.Generator,
    length: int,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    window: int = 256,
) -> np.ndarray:
    """Late-reverberation fill (2, length) to add to `rir` (2, L) (see module docstring, step 3).

    The fill has the energy the image-source RIR lacks relative to the diffuse-field envelope,
    smoothed over `window` samples, ramped in over start_s .. 1.5 start_s.
    """
    fs = float(sample_rate_hz)
    v, _ = _volume_surface(spec)
    t60 = eyring_t60_s(spec)
    t = np.arange(length) / fs
    # A directional speaker radiates less power than an omnidirectional one of the same on-axis
    # level: mean of (p + (1 - p) cos)^2 over the sphere = p^2 + (1 - p)^2 / 3.
    p = min(1.0, float(spec.speaker_pattern_p))
    power = p * p + (1.0 - p) ** 2 / 3.0
    model = power * 4.0 * math.pi * SPEED_OF_SOUND_M_S / (v * fs) * np.exp(-13.8155 * t / t60)
    h = np.zeros((rir.shape[0], length))
    n = min(length, rir.shape[1])
    h[:, :n] = rir[:, :n]
    kernel = np.ones(window) / window
    ramp = np.clip((t - start_s) / (0.5 * start_s), 0.0, 1.0)
    out = np.zeros_like(h)
    for m in range(h.shape[0]):
        e_ism = np.convolve(h[m] ** 2, kernel, mode="same")
        deficit = np.clip(model - e_ism, 0.0, None) * ramp
        out[m] = rng.standard_normal(length) * np.sqrt(deficit)
    return out


def render_echo(
    spec: SequenceSpec,
    frame: int,
    rng: np.random.Generator,
    sweep: "np.ndarray | None" = None,
    *,
    tail: bool = True,
    noise: bool = True,
    max_order: "int | None" = None,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    return_details: bool = False,
):
    """The binaural echo buffer of one frame: float32 (2, BUFFER_SAMPLES), row 0 = left.

    The direct-path sweep onset lies at ECHO_ONSET_SAMPLE + spec.jitter[frame] (+ the sub-sample
    part of the direct delay); the emission instant is `emission_sample` = that onset minus the
    direct path's travel time. With return_details=True also returns a dict with `rir` (2, L)
    (index 0 = emission), `emission_sample` (float), `direct_m` (2,), positions and `t60_s`.
    """
    if sweep is None:
        sweep = default_sweep(sample_rate_hz)
    pose = spec.layout.poses[frame]
    pos = rig_positions_m(pose, spec.scale_m)
    mics = np.stack([pos["mic_left"], pos["mic_right"]], axis=1)
    room = build_room(spec, max_order=max_order, sample_rate_hz=sample_rate_hz)
    rir = impulse_responses(room, pos["speaker"], mics, speaker_directivity(pose, spec.speaker_pattern_p))
    fs = float(sample_rate_hz)
    direct_m = np.linalg.norm(mics - pos["speaker"][:, None], axis=0)
    t60 = eyring_t60_s(spec)
    if tail:
        # After every first-order wall reflection has arrived: twice the largest distance from the
        # rig to a room-wall plane (the image-source part is exact before that).
        room_m = spec.layout.room * spec.scale_m
        cam = pos["camera"]
        start_s = 2.0 * float(np.max(np.maximum(cam, room_m - cam))) / SPEED_OF_SOUND_M_S
        length = min(BUFFER_SAMPLES, int(math.ceil(min(1.2 * t60, BUFFER_SAMPLES / fs) * fs)) + 1)
        length = max(length, rir.shape[1])
        fill = diffuse_tail(rir, spec, start_s, rng, length, sample_rate_hz)
        full = np.zeros((2, length))
        full[:, : rir.shape[1]] = rir
        rir = full + fill
    wet = np.stack([fftconvolve(rir[m], sweep.astype(np.float64)) for m in range(2)])
    wet *= RECORDING_GAIN * spec.gain * np.asarray(spec.channel_gain)[:, None]
    onset = ECHO_ONSET_SAMPLE + int(spec.jitter[frame])
    delay_samples = int(round(float(np.mean(direct_m)) / SPEED_OF_SOUND_M_S * fs))
    emission = onset - delay_samples
    buf = np.zeros((2, BUFFER_SAMPLES))
    n = min(wet.shape[1], BUFFER_SAMPLES - emission)
    buf[:, emission: emission + n] = wet[:, :n]
    if noise:
        buf += spec.noise_std * rng.standard_normal(buf.shape)
    buf = np.clip(buf, -1.0, 1.0).astype(np.float32)
    if not return_details:
        return buf
    return buf, {
        "rir": rir,
        "emission_sample": float(emission),
        "onset_sample": float(emission) + float(np.mean(direct_m)) / SPEED_OF_SOUND_M_S * fs,
        "direct_m": direct_m,
        "positions_m": pos,
        "t60_s": t60,
    }
