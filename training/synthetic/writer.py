"""Generate synthetic sequences and write them in the BatVision V2 layout (optionally also a rosbag2).

Output of `generate_dataset(out_dir, ...)` (the official BV2 layout; README "Data" and the BatVision paper):

    out_dir/<location>/audio/audio_<id>.wav     2 ch (left, right), 44100 Hz, 20000 frames, float32
                                                 (or int32/int16 PCM), direct sweep onset at 288 + jitter
    out_dir/<location>/camera/camera_<id>.jpeg  RGB, JPEG quality 95
    out_dir/<location>/depth/depth_<id>.npy     uint16 millimetres, 0 = invalid (z-depth)
    out_dir/<location>/<split>.csv              the 6 official columns + sequence, frame, stamp_ns,
                                                 fx, fy, cx, cy (paths relative to out_dir) + sweep (the
                                                 emitted sweep, SweepSpec.to_text(); left out with
                                                 GenerationOptions.sweep_column=False)
    out_dir/<location>/<split>_meta.csv         per-sample scene facts (scale, room size, T60, pose, ...,
                                                 level_dbfs, snr_db, mic_spacing_m, family, acoustic_model)
    out_dir/<location>/generation.json          preset, options and conventions (no timestamps)

Randomness and seeds: every random stream is a numpy SeedSequence with entropy (SEED_SALT, seed)
and spawn_key (preset.code, stream, index...): layouts are keyed by (code, 0, layout index),
sequences (scale, materials, noise level, jitter, microphone spacing) by (code, 1, sequence index),
the audio noise (and diffuse tail, and pyroomacoustics' own RNG in the hybrid model) of frame f by
(code, 2, sequence index, f), the emitter of frame f (sweep, level, SNR, noise colour; random-emitter
presets) by (code, 3, sequence index, f) and the depth holes of frame f by (code, 4, sequence index, f).
Sample id i is frame i % F of sequence i // F. So a dataset is a pure function of (seed, preset,
options): byte-identical files for the same seed, whatever the number of workers. Forcing the sweep
or the recording level (GenerationOptions.sweep / level_dbfs) replaces the drawn values after the
draws, so it changes the audio only: RGB and depth stay byte-identical to the unforced dataset.
A forced level comes with a fixed noise floor (FORCED_NOISE_DBFS RMS, the preset's noise colour), so a
quieter recording has a lower SNR, as with a real microphone. Scenes of two datasets coincide only
if both the seed and the preset code agree; train (code 1) and test (code 2) therefore never share
a scene, even for equal seeds, and the shipped sets use different seeds as well (train 1, test 2,
shifted 3; broad 11, broad_test 12, xsim 13).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avsnet_ros.data.poses import POSE_COLUMNS
from avsnet_ros.fileio import atomic_write_bytes

from .scene import (PRESETS, Emitter, Preset, intrinsics_for, sample_emitter, sample_family_layout, sample_layout,
                    sample_sequence_spec)

__all__ = [
    "SEED_SALT",
    "FRAME_PERIOD_NS",
    "SEQUENCE_GAP_NS",
    "GenerationOptions",
    "scene_rng",
    "make_sequence_spec",
    "render_sample",
    "generate_dataset",
    "BV2_HEADER",
    "EXTRA_COLUMNS",
    "SWEEP_COLUMN",
    "META_COLUMNS",
    "FORCED_NOISE_DBFS",
    "depth_hole_mask",
    "frame_emitter",
]

#: Mixed into every seed so that these streams differ from other users of the same integer seed.
SEED_SALT = 0x5A5E_A1D0
#: Frames of a sequence are 0.2 s apart (one sweep every 200 ms, about the physical limit for 30 m).
FRAME_PERIOD_NS = 200_000_000
#: Extra gap between consecutive sequences: sample i of sequence q is stamped
#: i * FRAME_PERIOD_NS + q * SEQUENCE_GAP_NS (monotonic; a replay at recorded timing has 1.2 s pauses).
SEQUENCE_GAP_NS = 1_000_000_000

BV2_HEADER = ["audio path", "audio file name", "camera path", "camera file name", "depth path", "depth file name"]
#: The camera's pose (avsnet_ros.data.poses.POSE_COLUMNS: metres, degrees) is odometry for stage 2.
EXTRA_COLUMNS = ["sequence", "frame", "stamp_ns", "fx", "fy", "cx", "cy", *POSE_COLUMNS]
#: The emitted sweep of the row (avsnet_ros.audio.frontend.SweepSpec.to_text()).
SWEEP_COLUMN = "sweep"
META_COLUMNS = [
    "id", "sequence", "frame", "layout", "scale_m", "room_x_m", "room_y_m", "room_z_m", "n_boxes",
    "cam_x_m", "cam_y_m", "cam_z_m", "yaw_deg", "pitch_deg", "roll_deg", "mean_absorption", "t60_s",
    "noise_std", "onset_sample", "median_depth_m",
    # level_dbfs: the direct-path sweep's peak (louder channel); snr_db: that peak over the noise RMS;
    # acoustic_model: ism<order>+diffuse or hybrid_ism<order>+rt<rays>; ray_tracing: 1 if the ray
    # tracer ran; hole_fraction: share of depth pixels set invalid; clipped: samples beyond full scale.
    "level_dbfs", "snr_db", "mic_spacing_m", "family", "acoustic_model", "ray_tracing", "speaker_pattern_p",
    "hole_fraction", "clipped",
]
#: Noise floor (RMS, dBFS) of runs with a forced recording level (GenerationOptions.level_dbfs).
FORCED_NOISE_DBFS = -70.0

_STREAM_LAYOUT, _STREAM_SEQUENCE, _STREAM_AUDIO, _STREAM_EMITTER, _STREAM_HOLES = 0, 1, 2, 3, 4


@dataclass
class GenerationOptions:
    """Everything a dataset depends on besides (seed, preset)."""

    height: int = 128
    width: int = 256
    frames_per_sequence: int = 0  # 0: the preset's value
    wav_format: str = ""  # float32 | int32 | int16; "": the preset's (float32; int32 for the broad presets)
    jpeg_quality: int = 95
    max_order: int = 0  # 0: the preset's value (xsim: drawn per sequence)
    layout_repeats: int = 0  # 0: the preset's value (sequences sharing one normalised layout)
    sweep: str = ""  # SweepSpec text: every frame emits this sweep ("": the preset's)
    level_dbfs: "float | None" = None  # every frame's direct-path peak (dBFS), noise at FORCED_NOISE_DBFS
    sweep_column: bool = True  # write the `sweep` column (False: a dataset whose sweep is unknown)

    def resolved(self, preset: Preset) -> "GenerationOptions":
        out = GenerationOptions(**asdict(self))
        if out.frames_per_sequence <= 0:
            out.frames_per_sequence = preset.frames_per_sequence
        if out.max_order <= 0:
            out.max_order = preset.max_order
        if out.layout_repeats <= 0:
            out.layout_repeats = preset.layout_repeats
        if not out.wav_format:
            out.wav_format = preset.wav_format
        if out.wav_format not in ("float32", "int32", "int16"):
            raise ValueError(f"wav_format must be float32, int32 or int16, got {out.wav_format!r}")
        if out.sweep:
            from avsnet_ros.audio.frontend import SweepSpec

            forced = SweepSpec.from_text(out.sweep)  # ValueError for a bad description
            if forced.sample_rate_hz != 44100:
                raise ValueError(f"the forced sweep must be at the world's 44100 Hz, not {forced.sample_rate_hz} Hz")
            out.sweep = forced.to_text()
        if out.level_dbfs is not None:
            out.level_dbfs = float(out.level_dbfs)
            if not -120.0 < out.level_dbfs <= 0.0:
                raise ValueError(f"level_dbfs must be in (-120, 0] dBFS, got {out.level_dbfs}")
        if out.height < 8 or out.width < 8:
            raise ValueError(f"image size {out.height}x{out.width} is too small")
        return out


def scene_rng(seed: int, preset: Preset, stream: int, *index: int) -> np.random.Generator:
    """The random generator of one stream (see module docstring)."""
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    ss = np.random.SeedSequence(entropy=[SEED_SALT, int(seed)],
                                spawn_key=(int(preset.code), int(stream)) + tuple(int(i) for i in index))
    return np.random.default_rng(ss)


def make_sequence_spec(seed: int, preset: Preset, sequence_index: int, frames: int, max_order: int,
                       layout_repeats: "int | None" = None, sweep: str = "", level_dbfs: "float | None" = None):
    """The SequenceSpec of sequence `sequence_index` (layout shared with its twins).

    layout_repeats: sequences per normalised layout (None: the preset's value); sequence q uses
    layout q // layout_repeats at scale stratum q % layout_repeats. max_order <= 0 keeps the
    sequence's own order (xsim draws it). sweep / level_dbfs: forced emitter (GenerationOptions);
    spec.emitters is set for random-emitter presets and forced runs (None otherwise: the original
    default sweep at the fixed gain).
    """
    r = max(1, preset.layout_repeats if layout_repeats is None else int(layout_repeats))
    if r != preset.layout_repeats:
        from dataclasses import replace

        preset = replace(preset, layout_repeats=r)
    layout_index, twin = divmod(int(sequence_index), r)
    sampler = sample_family_layout if preset.families else sample_layout
    layout = sampler(scene_rng(seed, preset, _STREAM_LAYOUT, layout_index), preset, frames, layout_index)
    spec = sample_sequence_spec(
        scene_rng(seed, preset, _STREAM_SEQUENCE, sequence_index), preset, layout, twin=twin,
        sequence_index=sequence_index
    )
    if int(max_order) > 0:
        spec.max_order = int(max_order)
    if preset.random_emitter or sweep or level_dbfs is not None:
        spec.emitters = [frame_emitter(seed, preset, sequence_index, f, sweep, level_dbfs)
                         for f in range(len(layout.poses))]
    return spec


def frame_emitter(seed: int, preset: Preset, sequence_index: int, frame: int, sweep: str = "",
                  level_dbfs: "float | None" = None) -> Emitter:
    """The Emitter of one frame: drawn from its own stream (random-emitter presets) or the original
    default sweep at the fixed gain; then the forced sweep / level replace the drawn values."""
    from dataclasses import replace

    from avsnet_ros.audio.frontend import SweepSpec

    if preset.random_emitter:
        em = sample_emitter(scene_rng(seed, preset, _STREAM_EMITTER, sequence_index, frame), preset)
    else:
        em = Emitter(sweep=SweepSpec())
    if sweep:
        em = replace(em, sweep=SweepSpec.from_text(sweep))
    if level_dbfs is not None:
        em = replace(em, level_dbfs=float(level_dbfs), snr_db=float(level_dbfs) - FORCED_NOISE_DBFS)
    return em


def depth_hole_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Invalid-depth patches (bool (H, W)): none in half of the frames, else 1-4 ellipses or rectangles
    of 3-12 % of the image side (half-axes), placed uniformly (normalised coordinates)."""
    mask = np.zeros((height, width), dtype=bool)
    if rng.uniform() < 0.5:
        return mask
    v, u = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    for _ in range(int(rng.integers(1, 5))):
        cu, cv = rng.uniform(0, 1), rng.uniform(0, 1)
        au, av = rng.uniform(0.03, 0.12), rng.uniform(0.03, 0.12)
        if rng.uniform() < 0.5:
            mask |= ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2 <= 1.0
        else:
            mask |= (np.abs(u - cu) <= au) & (np.abs(v - cv) <= av)
    return mask


def render_sample(spec, frame: int, seed: int, preset: Preset, k: np.ndarray, height: int, width: int):
    """One frame -> (rgb uint8 (H,W,3), depth_m float32 (H,W) z-depth metres, echo float32 (2, 20000),
    info dict with 'surface_id' (H,W) and acoustics.render_echo's details)."""
    from .acoustics import render_echo
    from .raycast import render

    pose = spec.layout.poses[frame]
    depth_n, rgb, sid = render(spec.layout, pose, k, height, width)
    depth_m = (depth_n * spec.scale_m).astype(np.float32)
    rng = scene_rng(seed, preset, _STREAM_AUDIO, spec.sequence_index, frame)
    echo, det = render_echo(spec, frame, rng, return_details=True)
    info = {"surface_id": sid, **det}
    return rgb, depth_m, echo, info


def _wav_bytes(echo: np.ndarray, fmt: str, sample_rate_hz: int) -> bytes:
    from scipy.io import wavfile

    x = np.ascontiguousarray(echo.T)
    if fmt == "int16":
        x = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    elif fmt == "int32":
        x = np.clip(np.round(x.astype(np.float64) * 2147483647.0), -2147483648, 2147483647).astype(np.int32)
    else:
        x = x.astype(np.float32)
    buf = io.BytesIO()
    wavfile.write(buf, sample_rate_hz, x)
    return buf.getvalue()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def _sequence_job(job: dict) -> list:
    """Worker: generate and write all frames of one sequence; returns one row dict per frame."""
    import cv2

    from avsnet_ros.audio.frontend import SweepSpec
    from avsnet_ros.data.samples import depth_m_to_mm

    from .acoustics import SAMPLE_RATE_HZ

    preset = PRESETS[job["preset"]]
    opt = GenerationOptions(**job["options"])
    loc_dir = Path(job["loc_dir"])
    location = loc_dir.name
    seq = int(job["sequence"])
    spec = make_sequence_spec(job["seed"], preset, seq, opt.frames_per_sequence, opt.max_order, opt.layout_repeats,
                              sweep=opt.sweep, level_dbfs=opt.level_dbfs)
    k = intrinsics_for(opt.height, opt.width, preset.hfov_deg)
    seq_id = f"{preset.name}-s{job['seed']}-q{seq:05d}"
    default_sweep_text = SweepSpec().to_text()
    rows = []
    for f in range(job["n_frames"]):
        sample_id = seq * opt.frames_per_sequence + f
        rgb, depth_m, echo, info = render_sample(spec, f, job["seed"], preset, k, opt.height, opt.width)
        mm, dropped = depth_m_to_mm(depth_m)
        if dropped:
            raise RuntimeError(f"sample {sample_id}: {dropped} depth pixels beyond 65.535 m")
        hole_fraction = 0.0
        if preset.depth_holes:
            holes = depth_hole_mask(scene_rng(job["seed"], preset, _STREAM_HOLES, seq, f), opt.height, opt.width)
            mm[holes] = 0
            hole_fraction = float(holes.mean())
        ok, jpg = cv2.imencode(".jpeg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(opt.jpeg_quality)])
        if not ok:
            raise RuntimeError(f"sample {sample_id}: JPEG encoding failed")
        _write(loc_dir / "audio" / f"audio_{sample_id}.wav", _wav_bytes(echo, opt.wav_format, SAMPLE_RATE_HZ))
        _write(loc_dir / "camera" / f"camera_{sample_id}.jpeg", jpg.tobytes())
        _write(loc_dir / "depth" / f"depth_{sample_id}.npy", _npy_bytes(mm))
        pose = spec.layout.poses[f]
        cam = info["positions_m"]["camera"]
        stamp = sample_id * FRAME_PERIOD_NS + seq * SEQUENCE_GAP_NS
        sweep_text = spec.emitters[f].sweep.to_text() if spec.emitters else default_sweep_text
        if spec.acoustic_model == "hybrid":
            model = f"hybrid_ism{info['max_order']}+rt{spec.rt_rays}"
        else:
            model = f"ism{info['max_order']}+diffuse"
        noise_fmt = ".6f" if spec.emitters is None else ".4e"
        rows.append(
            {
                "csv": [
                    f"{location}/audio", f"audio_{sample_id}.wav",
                    f"{location}/camera", f"camera_{sample_id}.jpeg",
                    f"{location}/depth", f"depth_{sample_id}.npy",
                    seq_id, str(f), str(stamp),
                    *[format(float(v), ".6f") for v in (k[0, 0], k[1, 1], k[0, 2], k[1, 2])],
                    *[f"{v:.4f}" for v in cam], *[f"{math.degrees(a):.3f}" for a in (pose.yaw, pose.pitch, pose.roll)],
                    *([sweep_text] if opt.sweep_column else []),
                ],
                "meta": [
                    sample_id, seq_id, f, spec.layout.layout_index, f"{spec.scale_m:.6f}",
                    *[f"{v:.4f}" for v in spec.layout.room * spec.scale_m], len(spec.layout.boxes),
                    *[f"{v:.4f}" for v in cam],
                    f"{math.degrees(pose.yaw):.3f}", f"{math.degrees(pose.pitch):.3f}",
                    f"{math.degrees(pose.roll):.3f}",
                    f"{float(np.mean(spec.absorption)):.4f}", f"{info['t60_s']:.4f}",
                    format(info["noise_rms"], noise_fmt),
                    f"{info['onset_sample']:.3f}", f"{float(np.median(depth_m)):.4f}",
                    f"{info['level_dbfs']:.3f}", f"{info['snr_db']:.3f}", f"{spec.mic_spacing_m:.4f}",
                    spec.layout.family, model, int(info["ray_tracing"]), f"{spec.speaker_pattern_p:.4f}",
                    f"{hole_fraction:.4f}", info["clipped"],
                ],
                "layout": spec.layout.layout_index,
            }
        )
    return rows


def _init_worker() -> None:
    """Each worker uses one thread (the machine's cores go to the worker processes)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001 - optional
        pass


def generate_dataset(
    out_dir,
    n: int,
    seed: int,
    preset: "str | Preset" = "train",
    *,
    options: "GenerationOptions | None" = None,
    workers: int = 2,
    split_name: "str | None" = None,
    val_fraction: float = 0.0,
    location: "str | None" = None,
    progress: bool = True,
    command: "str | None" = None,
) -> dict:
    """Generate n samples into out_dir (BV2 layout, see module docstring) and return a summary dict.

    Args:
        out_dir: dataset root (created); the samples go to out_dir/<location>/.
        n: number of samples (frames); sequences of F frames, the last one possibly shorter.
        seed: non-negative integer; with the preset it fixes every file byte for byte.
        preset: a name of scene.PRESETS ('train', 'test', 'train_seq', 'shifted', 'broad', 'broad_test',
            'xsim') or a registered Preset.
        options: image size, frames per sequence, wav format, forced sweep / level, sweep column, ...
            (GenerationOptions).
        workers: worker processes (each single-threaded); 1 = in this process.
        split_name: CSV name (default: 'train' for the train and broad presets, else 'test').
        val_fraction: share of LAYOUTS (whole groups of twin sequences, so no image of val appears in
            the main split) written to val.csv instead (taken from the end).
        location: location folder name (default 'synth_<preset>_s<seed>').
    Returns: {'n', 'splits': {name: count}, 'location', 'loc_dir', 'sequences', 'layouts'}.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        preset = PRESETS[preset]
    elif preset.name not in PRESETS or PRESETS[preset.name] != preset:
        raise ValueError("custom presets must be registered in scene.PRESETS (workers look them up by name)")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    opt = (options or GenerationOptions()).resolved(preset)
    split_name = split_name or ("train" if preset.name in ("train", "broad") else "test")
    location = location or f"synth_{preset.name}_s{seed}"
    out_dir = Path(out_dir)
    loc_dir = out_dir / location
    for sub in ("audio", "camera", "depth"):
        (loc_dir / sub).mkdir(parents=True, exist_ok=True)

    fps = opt.frames_per_sequence
    n_seq = math.ceil(n / fps)
    jobs = [
        {
            "preset": preset.name, "seed": int(seed), "sequence": q, "n_frames": min(fps, n - q * fps),
            "options": asdict(opt), "loc_dir": str(loc_dir),
        }
        for q in range(n_seq)
    ]
    n_layouts = math.ceil(n_seq / max(1, opt.layout_repeats))
    n_val_layouts = int(round(val_fraction * n_layouts))
    first_val_layout = n_layouts - n_val_layouts

    results: "list[list]" = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="sample", desc=f"synthetic {preset.name} seed {seed}", dynamic_ncols=True)
    try:
        if workers <= 1:
            for job in jobs:
                rows = _sequence_job(job)
                results.append(rows)
                if bar is not None:
                    bar.update(len(rows))
        else:
            import multiprocessing as mp

            # Workers come from a forkserver, never a plain fork: forking a process that already runs
            # threads (torch's OpenMP pool, rclpy executors, pytest plugins) can deadlock the child
            # on a lock held by a thread that was not copied (seen in the test suite). The server is
            # a fresh single-threaded process that imports the heavy modules (pyroomacoustics, cv2,
            # torch via avsnet_ros.audio) once, so each worker still starts without ~3 s of imports.
            if "forkserver" in mp.get_all_start_methods():
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload([__name__, f"{__package__}.acoustics", f"{__package__}.raycast", "cv2"])
            else:
                ctx = mp.get_context("spawn")
            with ctx.Pool(processes=int(workers), initializer=_init_worker) as pool:
                for rows in pool.imap(_sequence_job, jobs, chunksize=1):
                    results.append(rows)
                    if bar is not None:
                        bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()

    splits = {split_name: [], "val": []} if n_val_layouts > 0 else {split_name: []}
    meta = {name: [] for name in splits}
    for rows in results:
        for r in rows:
            name = "val" if (n_val_layouts > 0 and r["layout"] >= first_val_layout) else split_name
            splits[name].append(r["csv"])
            meta[name].append(r["meta"])
    for name, rows in splits.items():
        _write_csv(loc_dir / f"{name}.csv", BV2_HEADER + EXTRA_COLUMNS + ([SWEEP_COLUMN] if opt.sweep_column else []),
                   rows)
        _write_csv(loc_dir / f"{name}_meta.csv", META_COLUMNS, meta[name])
    from .acoustics import BUFFER_SAMPLES, ECHO_ONSET_SAMPLE, RECORDING_GAIN, SAMPLE_RATE_HZ, SPEED_OF_SOUND_M_S
    from .scene import RIG_OFFSETS_M

    info = {
        "generator": "training/synthetic (avsnet_ros)",
        "command": command,
        "seed": int(seed),
        "n": n,
        "preset": asdict(preset),
        "options": asdict(opt),
        "splits": {k: len(v) for k, v in splits.items()},
        "val_fraction": val_fraction,
        "sequences": n_seq,
        "layouts": n_layouts,
        "audio": {
            "sample_rate_hz": SAMPLE_RATE_HZ, "samples": BUFFER_SAMPLES, "channels": ["left", "right"],
            "onset_sample": ECHO_ONSET_SAMPLE,
            "onset_jitter_samples": [-preset.jitter_samples, preset.jitter_samples], "format": opt.wav_format,
            "speed_of_sound_m_s": SPEED_OF_SOUND_M_S,
            "recording_gain": (RECORDING_GAIN if not (preset.random_emitter or opt.level_dbfs is not None)
                               else "per frame: direct-path peak at level_dbfs (meta)"),
            "forced_noise_dbfs": FORCED_NOISE_DBFS if opt.level_dbfs is not None else None,
        },
        "rig_offsets_m_body_rep103": {k: v.tolist() for k, v in RIG_OFFSETS_M.items()},
        "mic_spacing_m": list(preset.mic_spacing_m) if preset.mic_spacing_m else 0.2,
        "depth": "z-depth, uint16 millimetres, 0 = invalid",
    }
    _write(loc_dir / "generation.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return {
        "n": n, "splits": {k: len(v) for k, v in splits.items()}, "location": location, "loc_dir": str(loc_dir),
        "sequences": n_seq, "layouts": n_layouts,
    }


def _write_csv(path: Path, header: list, rows: list) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    _write(path, buf.getvalue().encode())
