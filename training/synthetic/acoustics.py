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

The broad presets (scene.py) change three things:
- per-surface, per-octave-band absorption (pyroomacoustics Material with {"coeffs", "center_freqs"} at
  scene.BAND_CENTERS_HZ, resampled to pyroomacoustics' octave filter bank): the image-source RIR is
  filtered per band by pyroomacoustics, and `diffuse_tail` fills the tail per band with each
  band's Eyring T60 (the deficit against the summed band model, shared out over the bands in
  proportion to their model energy; `band_split` is a zero-phase FFT filter bank that sums to one).
- the hybrid model (xsim): image sources of order 1-2 plus pyroomacoustics' ray tracer
  (`room.set_ray_tracing`, per-surface scattering, air absorption) for the late part, no statistical
  tail. Its random parts (is_inside test, ray tracing's scattering, the tail's Poisson sequence) are
  seeded per frame from the frame's audio stream (pra.random.seed), so files stay deterministic. The
  ray-traced part carries the same 40-sample offset as the image sources (pyroomacoustics pads it),
  so removing PRA_DELAY_SAMPLES keeps every arrival at its geometric time; its envelope is a 4 ms
  histogram (pyroomacoustics indexes it from the direct sound's arrival, ~0.3 ms late at our 5-15 cm
  direct paths, well inside a bin).
- the Emitter of each frame (scene.Emitter): its sweep replaces the default one, and the recording
  gain is set so that the louder channel's DIRECT-PATH sweep (the direct sound alone, an image-source
  simulation of order 0 of the same room and rig, convolved with the sweep, times the channel gain
  mismatch) peaks at Emitter.level_dbfs; the noise is a mix of white, pink (1/f power) and brown
  (1/f^2 power, both from 20 Hz up) noise with RMS = direct-path peak / 10^(snr_db / 20). The
  original presets keep the fixed RECORDING_GAIN and white noise (their files are unchanged).
"""
from __future__ import annotations

import math

import numpy as np
import pyroomacoustics as pra
from pyroomacoustics.room import wall_factory
from scipy.signal import fftconvolve

from avsnet_ros.audio import DEFAULT_SAMPLE_RATE_HZ, DEFAULT_SWEEP, ECHO_ONSET_SAMPLE, make_sweep

from .scene import BAND_CENTERS_HZ, SequenceSpec, n_surfaces, rig_positions_m, rotation_world_body

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
    "RT_TIME_S",
    "eyring_t60_bands_s",
    "band_split",
    "coloured_noise",
    "direct_path_rirs",
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
#: Ray tracing (hybrid model) stops after the buffer's duration (plus a margin).
RT_TIME_S = BUFFER_SAMPLES / SAMPLE_RATE_HZ + 0.01
#: Ray tracer receiver radius (m): pyroomacoustics' default; the two microphones are separate receivers.
RT_RECEIVER_RADIUS_M = 0.5


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


_BANK_CACHE: dict = {}


def _octave_bank(sample_rate_hz: int):
    """pyroomacoustics' octave filter bank of a Room at this rate (the bands materials are resampled to)."""
    bank = _BANK_CACHE.get(sample_rate_hz)
    if bank is None:
        from pyroomacoustics.acoustics import AntoniOctaveFilterBank

        bank = AntoniOctaveFilterBank(fs=sample_rate_hz, n_fft=pra.constants.get("octave_bands_n_fft"),
                                      base_frequency=pra.constants.get("octave_bands_base_freq"))
        _BANK_CACHE[sample_rate_hz] = bank
    return bank


def _materials(spec: SequenceSpec, sample_rate_hz: int) -> list:
    """(absorption, scattering) coefficient arrays per surface for wall_factory.

    Flat absorption (the original presets): ([a], [0]) exactly as before. Per-band absorption: a
    pyroomacoustics Material({"coeffs", "center_freqs": BAND_CENTERS_HZ}, scattering) resampled to the
    room's octave bands.
    """
    absorption = np.asarray(spec.absorption, dtype=np.float64)
    n = n_surfaces(spec.layout)
    if absorption.shape[0] != n:
        raise ValueError(f"need one absorption per surface ({n}), got {absorption.shape}")
    if absorption.ndim == 1 and spec.scattering is None:
        return [(np.array([absorption[i]]), np.array([0.0])) for i in range(n)]
    bank = _octave_bank(sample_rate_hz)
    out = []
    for i in range(n):
        if absorption.ndim == 1:
            energy = float(absorption[i])
        else:
            energy = {"coeffs": [float(a) for a in absorption[i]], "center_freqs": list(BAND_CENTERS_HZ)}
        scat = None if spec.scattering is None else float(spec.scattering[i])
        mat = pra.Material(energy_absorption=energy, scattering=scat)
        mat.resample(bank)
        out.append((np.asarray(mat.absorption_coeffs, dtype=np.float64),
                    np.asarray(mat.scattering_coeffs, dtype=np.float64)))
    return out


def build_room(spec: SequenceSpec, max_order: "int | None" = None, sample_rate_hz: int = SAMPLE_RATE_HZ,
               ray_tracing: "bool | None" = None) -> pra.Room:
    """pyroomacoustics Room (no source/mics yet) of a sequence's scene in metres.

    ray_tracing: None = as the sequence's acoustic model says (spec.acoustic_model == "hybrid":
    pyroomacoustics' ray tracer with spec.rt_rays rays, RT_RECEIVER_RADIUS_M, RT_TIME_S); False = image
    sources only.
    """
    room_m, boxes_m = _room_geometry_m(spec)
    mats = _materials(spec, sample_rate_hz)
    walls = []
    for i, c in enumerate(box_quads(np.zeros(3), room_m, normals_into_box=False)):
        walls.append(wall_factory(c, mats[i][0], mats[i][1], name=f"s{i}"))
    for b, (lo, hi) in enumerate(boxes_m):
        for k, c in enumerate(box_quads(lo, hi, normals_into_box=True)):
            sid = 6 + 6 * b + k
            walls.append(wall_factory(c, mats[sid][0], mats[sid][1], name=f"s{sid}"))
    order = spec.max_order if max_order is None else int(max_order)
    hybrid = spec.acoustic_model == "hybrid" if ray_tracing is None else bool(ray_tracing)
    if spec.acoustic_model not in ("ism", "hybrid"):
        raise ValueError(f"unknown acoustic model {spec.acoustic_model!r}")
    room = pra.Room(walls, fs=sample_rate_hz, max_order=order, air_absorption=bool(spec.air_absorption),
                    ray_tracing=False)
    if hybrid:
        if spec.rt_rays < 1:
            raise ValueError("the hybrid model needs rt_rays >= 1")
        room.set_ray_tracing(n_rays=int(spec.rt_rays), receiver_radius=RT_RECEIVER_RADIUS_M, energy_thres=1e-7,
                             time_thres=RT_TIME_S, hist_bin_size=0.004)
    return room


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
    pyroomacoustics directivity (see speaker_directivity), None = omnidirectional. A room with ray
    tracing goes through `_hybrid_rirs` (the ray-traced part gated at the earliest reflection).
    """
    room.add_source(np.asarray(speaker_m, dtype=np.float64), directivity=directivity)
    room.add_microphone_array(np.asarray(mics_m, dtype=np.float64))
    if room.simulator_state["rt_needed"]:
        rirs = [r[PRA_DELAY_SAMPLES:] for r in _hybrid_rirs(room)]
    else:
        room.compute_rir()
        rirs = [np.asarray(room.rir[m][0], dtype=np.float64)[PRA_DELAY_SAMPLES:] for m in range(2)]
    n = max(len(r) for r in rirs)
    out = np.zeros((2, n))
    for m, r in enumerate(rirs):
        out[m, : len(r)] = r
    return out


def _earliest_reflection_s(room: pra.Room, src: np.ndarray, mic: np.ndarray) -> float:
    """Lower bound of any reflected path's travel time: the shortest mirror-image distance over the
    planes of all walls (a path via a point of a plane is at least as long as the specular one)."""
    best = math.inf
    for w in room.walls:
        n = np.asarray(w.normal, dtype=np.float64)
        n = n / np.linalg.norm(n)
        c0 = np.asarray(w.corners, dtype=np.float64)[:, 0]
        img = src - 2.0 * float(np.dot(src - c0, n)) * n
        best = min(best, float(np.linalg.norm(img - mic)))
    return best / room.c


def _hybrid_rirs(room: pra.Room, ramp_s: float = 0.0005) -> list:
    """pyroomacoustics' Room.compute_rir for one source and a hybrid room (pinned 0.10.1) with two
    fixes for a rig whose microphones sit 5-15 cm from the speaker:
    - the ray-traced tail's random sequence starts at pyroomacoustics' default mixing time instead
      of the direct sound (see below: otherwise the tail is empty);
    - the ray-traced part is set to zero before the earliest possible reflection
      (`_earliest_reflection_s`, raised-cosine ramp of ramp_s): pyroomacoustics builds it from 4 ms
      histograms interpolated from the start, which puts reflected energy under the direct path.
    Returns the RIRs WITH pyroomacoustics' 40-sample offset, float64, one per microphone."""
    from pyroomacoustics.simulation import compute_ism_rir, compute_rt_rir
    from pyroomacoustics.utilities import design_highpass_filter_sos
    from scipy.signal import sosfiltfilt

    room.image_source_model()
    room.ray_tracing()
    fs, c = room.fs, room.c
    fdl = pra.constants.get("frac_delay_length")
    sos = None
    if pra.constants.get("rir_hpf_enable"):
        sos = design_highpass_filter_sos(fs, pra.constants.get("rir_hpf_fc"), **pra.constants.get("rir_hpf_kwargs"))
    volume = room.get_volume()
    src = room.sources[0]
    out = []
    for m, mic in enumerate(room.mic_array.R.T):
        ism = compute_ism_rir(src, mic, room.mic_array.directivity[m], src.directions[m, :, :],
                              room.visibility[0][m, :], fdl, c, fs, room.octave_bands, min_phase=room.min_phase,
                              air_abs_coeffs=room.air_absorption)
        # pyroomacoustics starts the tail's Poisson sequence (reflection density 4 pi c^3 t^2 / V) at the
        # direct sound's arrival; at our 5-15 cm that density is ~0 and the first gap lasts seconds: the
        # tail came out with 2 deltas (measured: -100 dB instead of the diffuse level). Start it no
        # earlier than pyroomacoustics' own default, ((2 ln 2) V / (4 pi c^3))^(1/3) (10-40 ms here,
        # where the image sources of order 1-2 still carry the response).
        t_direct = float(np.linalg.norm(src.position - mic)) / c
        t0 = max(t_direct, ((2.0 * math.log(2.0)) * volume / (4.0 * math.pi * c ** 3)) ** (1.0 / 3.0))
        rt = compute_rt_rir(t0, room.rt_histograms[m][0], room.rt_directional_responses[m],
                            room.rt_args["hist_bin_size"], room.rt_args["hist_bin_size_samples"], volume, fdl, c, fs,
                            room.octave_bands, air_abs_coeffs=room.air_absorption)
        gate = fdl // 2 + _earliest_reflection_s(room, np.asarray(src.position, dtype=np.float64), mic) * fs
        idx = np.arange(rt.shape[0])
        rt = rt * (0.5 - 0.5 * np.cos(np.pi * np.clip((idx - gate) / (ramp_s * fs), 0.0, 1.0)))
        rir = np.zeros(max(ism.shape[0], rt.shape[0]))
        rir[: ism.shape[0]] += ism
        rir[: rt.shape[0]] += rt
        if sos is not None:
            rir = np.ascontiguousarray(sosfiltfilt(sos, rir))
        out.append(rir.astype(np.float64))
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
    """Late-reverberation fill (2, length) to add to `rir` (2, L) (see module docstring, step 3);
    per band when spec.absorption is per band (n_surfaces, bands).

    The fill has the energy the image-source RIR lacks relative to the diffuse-field envelope,
    smoothed over `window` samples, ramped in over start_s .. 1.5 start_s.
    """
    if np.asarray(spec.absorption).ndim == 2:
        return _diffuse_tail_bands(rir, spec, start_s, rng, length, sample_rate_hz, window)
    fs = float(sample_rate_hz)
    v, _ = _volume_surface(spec)
    t60 = eyring_t60_s(spec)
    t = np.arange(length) / fs
    model = _speaker_power(spec) * 4.0 * math.pi * SPEED_OF_SOUND_M_S / (v * fs) * np.exp(-13.8155 * t / t60)
    out = np.zeros((rir.shape[0], length))
    for m, deficit in enumerate(_energy_deficits(rir, model, t, start_s, window)):
        out[m] = rng.standard_normal(length) * np.sqrt(deficit)
    return out


def _speaker_power(spec: SequenceSpec) -> float:
    """A directional speaker radiates less power than an omnidirectional one of the same on-axis level:
    the mean of (p + (1 - p) cos)^2 over the sphere = p^2 + (1 - p)^2 / 3."""
    p = min(1.0, float(spec.speaker_pattern_p))
    return p * p + (1.0 - p) ** 2 / 3.0


def _energy_deficits(rir: np.ndarray, model: np.ndarray, t: np.ndarray, start_s: float, window: int):
    """Per channel of rir (M, L): the energy the image-source RIR lacks under the diffuse envelope `model`
    (length,), its own energy smoothed over `window` samples, ramped in over start_s .. 1.5 start_s."""
    length = model.shape[-1]
    h = np.zeros((rir.shape[0], length))
    n = min(length, rir.shape[1])
    h[:, :n] = rir[:, :n]
    kernel = np.ones(window) / window
    ramp = np.clip((t - start_s) / (0.5 * start_s), 0.0, 1.0)
    for m in range(h.shape[0]):
        e_ism = np.convolve(h[m] ** 2, kernel, mode="same")
        yield np.clip(model - e_ism, 0.0, None) * ramp


def _volume_band_areas(spec: SequenceSpec):
    """Volume (m^3), surface areas (n_surfaces,) with box faces within 1 % of the room's length of a
    coplanar room surface (an L-shape's block against the walls, pillar ends at floor and ceiling)
    counted as covering that much of the room surface instead of adding to it."""
    v, areas = _volume_surface(spec)
    areas = areas.astype(np.float64).copy()
    room_m, boxes_m = _room_geometry_m(spec)
    tol = 0.01 * spec.scale_m
    for b, (lo, hi) in enumerate(boxes_m):
        for k in range(6):
            ax, side = k // 2, k % 2
            coord = (lo, hi)[side][ax]
            wall = 0.0 if side == 0 else room_m[ax]
            if abs(coord - wall) < tol:
                sid = 6 + 6 * b + k
                areas[k] = max(0.0, areas[k] - areas[sid])
                areas[sid] = 0.0
    return v, areas


def eyring_t60_bands_s(spec: SequenceSpec) -> np.ndarray:
    """Eyring T60 (s) per octave band of per-band absorption (n_surfaces, bands) -> (bands,)."""
    v, areas = _volume_band_areas(spec)
    a = np.asarray(spec.absorption, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    mean_a = np.sum(areas[:, None] * a, axis=0) / np.sum(areas)
    return 0.161 * v / (-np.sum(areas) * np.log(np.maximum(1e-6, 1.0 - mean_a)))


def _t60_summary(spec: SequenceSpec) -> float:
    """One T60 for the meta file: flat absorption as always; per band the mean of 500 Hz and 1 kHz."""
    if np.asarray(spec.absorption).ndim == 1:
        return eyring_t60_s(spec)
    t = eyring_t60_bands_s(spec)
    return float(0.5 * (t[2] + t[3]))


def _band_masks(n: int, sample_rate_hz: float, centers=BAND_CENTERS_HZ) -> np.ndarray:
    """(bands, n // 2 + 1) amplitude masks over rfft bins: raised-cosine crossovers in log frequency
    at the geometric means of adjacent centres; they sum to 1 at every bin (first band down to DC,
    last band up to Nyquist)."""
    f = np.fft.rfftfreq(n, 1.0 / sample_rate_hz)
    lf = np.log2(np.maximum(f, 1.0))
    c = np.log2(np.asarray(centers, dtype=np.float64))
    edges = 0.5 * (c[:-1] + c[1:])
    # Crossover b between band b and b + 1: weight of the upper band rises over +-0.5 octave.
    up = [np.clip((lf - e) / 1.0 + 0.5, 0.0, 1.0) for e in edges]
    up = [0.5 - 0.5 * np.cos(np.pi * u) for u in up]
    masks = []
    for b in range(len(c)):
        m = np.ones_like(f)
        if b > 0:
            m = m * up[b - 1]
        if b < len(c) - 1:
            m = m * (1.0 - up[b])
        masks.append(m)
    return np.array(masks)


def band_split(x: np.ndarray, sample_rate_hz: float = SAMPLE_RATE_HZ) -> "tuple[np.ndarray, np.ndarray]":
    """Zero-phase octave split of x (..., n) -> (bands (..., B, n) summing to x, white-noise variance
    share of each band (B,))."""
    n = x.shape[-1]
    masks = _band_masks(n, sample_rate_hz)
    spec = np.fft.rfft(x, axis=-1)
    out = np.fft.irfft(spec[..., None, :] * masks, n, axis=-1)
    share = np.mean(masks ** 2, axis=-1)
    return out, share


def _diffuse_tail_bands(rir: np.ndarray, spec: SequenceSpec, start_s: float, rng: np.random.Generator, length: int,
                        sample_rate_hz: int, window: int) -> np.ndarray:
    """diffuse_tail for per-band absorption (n_surfaces, bands): a fill (2, length) per band.

    Band b's diffuse-field envelope is share_b x 4 pi c / (V fs) x exp(-13.8 t / T60_b); the deficit of
    the image-source RIR's smoothed energy against their sum is shared out over the bands in proportion
    to their envelopes, and each band of Gaussian noise carries its part.
    """
    fs = float(sample_rate_hz)
    v, _ = _volume_band_areas(spec)
    t60 = eyring_t60_bands_s(spec)
    t = np.arange(length) / fs
    power = _speaker_power(spec)
    noise = rng.standard_normal((rir.shape[0], length))
    bands, share = band_split(noise, fs)
    model_b = share[:, None] * (power * 4.0 * math.pi * SPEED_OF_SOUND_M_S / (v * fs)) \
        * np.exp(-13.8155 * t[None, :] / t60[:, None])
    model = model_b.sum(axis=0)
    frac = model_b / np.maximum(model, 1e-300)
    out = np.zeros((rir.shape[0], length))
    for m, deficit in enumerate(_energy_deficits(rir, model, t, start_s, window)):
        out[m] = np.sum(bands[m] * np.sqrt(deficit[None, :] * frac / share[:, None]), axis=0)
    return out


def coloured_noise(rng: np.random.Generator, shape: tuple, colour=(1.0, 0.0, 0.0),
                   sample_rate_hz: float = SAMPLE_RATE_HZ) -> np.ndarray:
    """Gaussian noise (C, N) of unit RMS per channel: amplitude spectrum w_white + w_pink sqrt(1 kHz / f)
    + w_brown (1 kHz / f) (f floored at 20 Hz, no DC). colour = (1, 0, 0): plain white noise
    rng.standard_normal(shape) (the original presets' noise)."""
    white = rng.standard_normal(shape)
    w = tuple(float(c) for c in colour)
    if w == (1.0, 0.0, 0.0):
        return white
    n = shape[-1]
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate_hz), 20.0)
    amp = w[0] + w[1] * np.sqrt(1000.0 / f) + w[2] * (1000.0 / f)
    amp[0] = 0.0
    y = np.fft.irfft(np.fft.rfft(white, axis=-1) * amp, n, axis=-1)
    rms = np.sqrt(np.mean(y ** 2, axis=-1, keepdims=True))
    return y / np.maximum(rms, 1e-30)


def direct_path_rirs(spec: SequenceSpec, pos: dict, directivity, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """The direct sound alone (2, L): the same room, rig and speaker pattern at image-source order 0."""
    mics = np.stack([pos["mic_left"], pos["mic_right"]], axis=1)
    room = build_room(spec, max_order=0, sample_rate_hz=sample_rate_hz, ray_tracing=False)
    return impulse_responses(room, pos["speaker"], mics, directivity)


def _seed_pra(rng: np.random.Generator) -> None:
    """Seed pyroomacoustics' package RNGs (numpy and libroom) from the frame's stream."""
    a, b = (int(v) for v in rng.integers(0, 2 ** 63 - 1, size=2, dtype=np.int64))
    pra.random.seed(numpy=a, libroom=b)


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
    direct path's travel time. sweep: the emitted waveform; None = the frame's Emitter's sweep
    (spec.emitters) or the default sweep. With return_details=True also returns a dict with `rir`
    (2, L) (index 0 = emission), `emission_sample` (float), `direct_m` (2,), positions, `t60_s`,
    `level_dbfs` (the direct-path sweep's peak, louder channel), `snr_db`, `noise_rms`, `clipped`
    (samples beyond full scale before clipping), `ray_tracing` (bool) and `max_order`.
    """
    emitter = spec.emitters[frame] if spec.emitters else None
    if sweep is None:
        sweep = emitter.sweep.waveform() if emitter is not None else default_sweep(sample_rate_hz)
    pose = spec.layout.poses[frame]
    pos = rig_positions_m(pose, spec.scale_m, spec.rig_offsets())
    mics = np.stack([pos["mic_left"], pos["mic_right"]], axis=1)
    room = build_room(spec, max_order=max_order, sample_rate_hz=sample_rate_hz)
    hybrid = bool(room.simulator_state["rt_needed"])
    if hybrid:
        _seed_pra(rng)
    directivity = speaker_directivity(pose, spec.speaker_pattern_p)
    rir = impulse_responses(room, pos["speaker"], mics, directivity)
    fs = float(sample_rate_hz)
    direct_m = np.linalg.norm(mics - pos["speaker"][:, None], axis=0)
    per_band = np.asarray(spec.absorption).ndim == 2
    t60 = _t60_summary(spec)
    if tail and not hybrid:
        # After every first-order wall reflection has arrived: twice the largest distance from the
        # rig to a room-wall plane (the image-source part is exact before that).
        room_m = spec.layout.room * spec.scale_m
        cam = pos["camera"]
        start_s = 2.0 * float(np.max(np.maximum(cam, room_m - cam))) / SPEED_OF_SOUND_M_S
        t60_max = float(np.max(eyring_t60_bands_s(spec))) if per_band else t60
        length = min(BUFFER_SAMPLES, int(math.ceil(min(1.2 * t60_max, BUFFER_SAMPLES / fs) * fs)) + 1)
        length = max(length, rir.shape[1])
        fill = diffuse_tail(rir, spec, start_s, rng, length, sample_rate_hz)
        full = np.zeros((2, length))
        full[:, : rir.shape[1]] = rir
        rir = full + fill
    sweep64 = np.asarray(sweep).astype(np.float64)
    wet = np.stack([fftconvolve(rir[m], sweep64) for m in range(2)])
    channel_gain = np.asarray(spec.channel_gain)
    direct = direct_path_rirs(spec, pos, directivity, sample_rate_hz)
    direct_unit = max(float(np.max(np.abs(fftconvolve(direct[m], sweep64)))) * float(channel_gain[m])
                      for m in range(2))
    level = None if emitter is None else emitter.level_dbfs
    if level is None:
        gain = RECORDING_GAIN * spec.gain
    else:
        gain = 10.0 ** (float(level) / 20.0) / direct_unit
    wet *= gain * channel_gain[:, None]
    direct_peak = direct_unit * gain
    onset = ECHO_ONSET_SAMPLE + int(spec.jitter[frame])
    delay_samples = int(round(float(np.mean(direct_m)) / SPEED_OF_SOUND_M_S * fs))
    emission = onset - delay_samples
    buf = np.zeros((2, BUFFER_SAMPLES))
    n = min(wet.shape[1], BUFFER_SAMPLES - emission)
    buf[:, emission: emission + n] = wet[:, :n]
    if level is None:
        noise_rms = spec.noise_std
        if noise:
            buf += spec.noise_std * rng.standard_normal(buf.shape)
    else:
        noise_rms = direct_peak / 10.0 ** (float(emitter.snr_db) / 20.0)
        if noise:
            buf += noise_rms * coloured_noise(rng, buf.shape, emitter.noise_colour, fs)
    clipped = int(np.count_nonzero(np.abs(buf) > 1.0))
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
        "level_dbfs": 20.0 * math.log10(direct_peak),
        "snr_db": 20.0 * math.log10(direct_peak / noise_rms) if noise_rms > 0 else math.inf,
        "noise_rms": float(noise_rms),
        "clipped": clipped,
        "ray_tracing": hybrid and bool(room.simulator_state.get("rt_done", False)),
        "max_order": int(room.max_order),
    }
