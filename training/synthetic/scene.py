"""Scene sampling for the synthetic audio-visual world: rooms, furniture, looks, rig and trajectories.

Everything visual is sampled in NORMALISED units (the room's longest horizontal side = 1) and only
then multiplied by the room scale `scale_m` (metres per normalised unit). Room, furniture, ceiling
height, camera position and motion, light position and texture periods all scale together, so the
rendered image does not depend on `scale_m` at all (the ray caster works in normalised units and only
the depth is multiplied by the scale): an image alone cannot tell a 2 m room from a 15 m one.
The echoes can: the rig's speaker and microphones sit at fixed METRIC offsets from the camera and sound
travels at a fixed 343 m/s, so arrival times and levels scale with the room.

Frames (world and rig, all right-handed):
- world: x along the room length (0 .. Lx), y along its width (0 .. Ly), z up (floor z = 0).
- rig body (REP 103): x forward, y left, z up; origin = camera optical centre. Pose = position of
  the origin in the world plus yaw (about world z), pitch (about body y, positive = nose DOWN, as
  REP 103's right-hand rule gives), roll (about body x): R_world_body = Rz(yaw) Ry(pitch) Rx(roll).
- camera optical frame (REP 103 "_optical"): z forward, x right, y down, R_body_optical below.
- speaker and microphones: fixed offsets in the body frame, in metres (RIG_OFFSETS_M); they do not
  scale with the room.

Surface ids (shared by the ray caster and the acoustics): 0: x = 0 wall, 1: x = Lx wall,
2: y = 0 wall, 3: y = Ly wall, 4: floor, 5: ceiling; box b has ids 6 + 6 b + k with k in the same
order (0: x = lo face, 1: x = hi, 2: y = lo, 3: y = hi, 4: bottom, 5: top).

Two generations of presets share this module:
- the original ones (train, test, train_seq, shifted; `Preset.families` empty): shoebox rooms from
  `sample_layout`, one frequency-flat absorption per surface, a fixed 20 cm rig, the default 3 ms sweep
  at a fixed recording gain. Their random streams and files are kept byte for byte.
- the broad ones (broad, broad_test, xsim; `Preset.families` set): room FAMILIES (shoebox, corridor,
  hall with pillars, open plan, L-shaped with irregular furniture) drawn per layout by
  `sample_family_layout`, each with its own size range (`Family.scale_range_m`, still two scales per
  layout); per-surface and per-octave-band absorption (`BAND_CENTERS_HZ`), a per-sequence microphone
  spacing and speaker pattern, and a per-frame `Emitter` (`sample_emitter`): the emitted sweep (2-50 ms,
  linear or exponential), the recording level (the direct-path sweep's peak in dBFS) and the SNR with
  coloured noise. Families guarantee a metric floor at their smallest scale: the ceiling at least
  MIN_HEIGHT_M high and the rig RIG_CLEARANCE_M away from walls and furniture (so a 30 cm wide
  microphone pair never leaves the room).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from avsnet_ros.data.poses import R_BODY_OPTICAL, rotation_world_body

__all__ = [
    "Preset",
    "PRESETS",
    "Box",
    "Look",
    "Pose",
    "Layout",
    "SequenceSpec",
    "RIG_OFFSETS_M",
    "R_BODY_OPTICAL",
    "rotation_world_body",
    "rotation_world_optical",
    "intrinsics_for",
    "sample_layout",
    "sample_sequence_spec",
    "rig_positions_m",
    "n_surfaces",
    "Family",
    "FAMILIES",
    "BAND_CENTERS_HZ",
    "MIN_HEIGHT_M",
    "RIG_CLEARANCE_M",
    "Emitter",
    "rig_offsets",
    "sample_family_layout",
    "sample_emitter",
]

#: Speaker and microphone positions in the rig body frame (REP 103: x forward, y left, z up), metres,
#: relative to the camera optical centre. Microphones 20 cm apart, speaker centred between them and
#: 2 cm forward; all 6 cm below the camera. The direct path speaker -> each microphone is 10.2 cm.
RIG_OFFSETS_M = {
    "speaker": np.array([0.02, 0.0, -0.06]),
    "mic_left": np.array([0.0, 0.10, -0.06]),
    "mic_right": np.array([0.0, -0.10, -0.06]),
}



@dataclass(frozen=True)
class Preset:
    """Distribution of one kind of dataset. Lengths are ratios to the room's longest side unless
    their name says metres. `code` keys the random streams (see writer.scene_rng)."""

    name: str
    code: int
    scale_range_m: tuple = (2.0, 15.0)  # longest horizontal room side, log-uniform
    width_ratio: tuple = (0.5, 1.0)  # Ly / Lx
    height_ratio: tuple = (0.3, 0.6)  # Lz / Lx
    n_boxes: tuple = (0, 4)  # inclusive range
    box_size: tuple = (0.08, 0.3)  # footprint side / Lx
    box_height: tuple = (0.15, 0.7)  # / Lz
    absorption: tuple = (0.05, 0.6)  # energy absorption per surface, uniform
    noise_std: tuple = (3e-4, 3e-3)  # white noise std (full scale 1), log-uniform
    hfov_deg: float = 90.0
    frames_per_sequence: int = 5
    step: tuple = (0.01, 0.03)  # forward motion per frame / Lx
    yaw_rate_deg: tuple = (-4.0, 4.0)  # per frame
    pitch_deg: tuple = (-15.0, 5.0)
    roll_deg: float = 2.0  # +- uniform
    palette: str = "indoor"  # "indoor" (muted) or "vivid"
    texture_contrast: tuple = (0.1, 0.45)  # procedural texture modulation depth per surface, uniform
    max_order: int = 3  # image-source order
    # Loudspeaker pattern p + (1 - p) cos(angle to the rig's forward axis): 1 ahead, p sideways,
    # 2p - 1 behind (0.7: a small forward-facing speaker, -8 dB behind). 1.0 = omnidirectional.
    speaker_pattern_p: float = 0.7
    layout_repeats: int = 2  # each normalised layout is used by this many sequences, at different scales
    # Re-draw the start (position and heading) until the straight walk of the whole sequence is free, so
    # the camera does not hit a wall and turn/stop mid-sequence (off for the presets that predate it:
    # their random streams and files stay byte-identical).
    free_path: bool = False
    # ---- the broad presets (all defaults below keep the original presets exactly as they were) ----
    # Room families drawn per layout, ((name, weight), ...) of FAMILIES; () = the original shoebox
    # sampler (sample_layout) with the fields above.
    families: tuple = ()
    # "ism": image sources up to max_order + the statistical diffuse tail (acoustics.diffuse_tail);
    # "hybrid": pyroomacoustics image sources (order from ism_order) + ray tracing with scattering.
    acoustic_model: str = "ism"
    ism_order: tuple = (1, 2)  # hybrid only: image-source order drawn per sequence (inclusive)
    rt_rays: int = 0  # hybrid only: rays per simulation
    air_absorption: bool = False
    # Per-surface, per-octave-band absorption: a(f) = a_1k + slope * log2(f / 1 kHz), clipped to
    # [0.01, 0.95]; a_1k uniform in `absorption`, slope uniform in band_slope (per octave).
    per_band_absorption: bool = False
    band_slope: tuple = (-0.06, 0.12)
    scattering: tuple = ()  # hybrid only: frequency-flat scattering per surface, uniform; () = none
    # Random emitter per frame (sample_emitter): sweep, recording level, SNR, coloured noise.
    random_emitter: bool = False
    sweep_ms: tuple = (2.0, 50.0)  # log-uniform
    fade_ms: tuple = (0.1, 2.0)  # uniform, at most a quarter of the sweep
    level_dbfs: tuple = (-40.0, -1.0)  # direct-path sweep peak, uniform in dB
    snr_db: tuple = (10.0, 50.0)  # direct-path peak over the noise RMS, uniform in dB
    mic_spacing_m: tuple = ()  # per sequence, uniform; () = RIG_OFFSETS_M's 20 cm
    speaker_pattern_range: tuple = ()  # per sequence, uniform; () = speaker_pattern_p
    jitter_samples: int = 3  # onset jitter +- (samples)
    depth_holes: bool = False  # random invalid (0) patches in some depth maps
    wav_format: str = "float32"  # default WAV encoding of the preset's datasets


PRESETS = {
    # The training distribution.
    "train": Preset(name="train", code=1),
    # Same distribution as train; its random streams are keyed with another code, so its scenes are
    # disjoint from train's even for the same --seed.
    "test": Preset(name="test", code=2),
    # Stage-2 (self-supervised DepthNet + PoseNet) sequences: the train distribution of rooms and looks
    # (its own random streams, code 4, so no scene is shared with test) with a camera that walks 3x
    # farther per frame (0.04-0.08 of the room length), turns 4x less (+-1 deg/frame) and starts where the
    # straight walk is free (no mid-sequence wall turns). With the
    # train preset's motion (t/z ~ 0.04, up to 4 deg yaw) the rotation flow (~11 px at 96x320) swamps
    # the depth parallax (1-5 px), PoseNet does not learn the motion from scratch and DepthNet collapses
    # to a constant (README, stage 2). Rotation carries no depth signal; forward motion does.
    "train_seq": Preset(name="train_seq", code=4, step=(0.04, 0.08), yaw_rate_deg=(-1.0, 1.0), free_path=True),
    # A differently distributed world for the zero-shot row: empty, narrower, lower rooms (no
    # furniture; width 0.25-0.5 and height 0.25-0.5 of the length against 0.5-1 and 0.3-0.6),
    # harder, more reverberant materials (absorption 0.03-0.35), more noise, vivid colours. Sizes stay
    # inside the training range (2.5-12 m), so the shift is in shape, materials and looks, not scale.
    "shifted": Preset(
        name="shifted",
        code=3,
        scale_range_m=(2.5, 12.0),
        width_ratio=(0.25, 0.5),
        height_ratio=(0.25, 0.5),
        n_boxes=(0, 0),
        absorption=(0.03, 0.35),
        noise_std=(5e-4, 5e-3),
        palette="vivid",
    ),
}

#: Shared by the broad presets (train on broad, hold out broad_test; xsim is the zero-shot world).
_BROAD = dict(
    families=(("shoebox", 0.55), ("open_plan", 0.18), ("corridor", 0.15), ("hall", 0.12)),
    scale_range_m=(1.5, 30.0),  # documentation: the families' ranges (FAMILIES) cover 1.5-30 m
    absorption=(0.03, 0.6),
    per_band_absorption=True,
    random_emitter=True,
    mic_spacing_m=(0.1, 0.3),
    speaker_pattern_range=(0.3, 1.0),
    jitter_samples=8,
    depth_holes=True,
    wav_format="int32",
)
# Broad training world: four room families of 1.5-30 m (FAMILIES; corridors and halls at the large end,
# each family spanning a factor of 3-7 in size), 0-8 boxes, per-band absorption, image sources (order 3)
# + diffuse tail, and a random rig per sequence/frame: sweep 2-50 ms linear or exponential, level -40..-1
# dBFS, SNR 10-50 dB with white/pink/brown noise, microphones 10-30 cm apart, speaker pattern 0.3-1.0.
PRESETS["broad"] = Preset(name="broad", code=5, **_BROAD)
# Same distribution, its own random streams (code 6): the broad test set.
PRESETS["broad_test"] = Preset(name="broad_test", code=6, **_BROAD)
# Cross-simulator zero-shot set: another acoustic model (pyroomacoustics hybrid: image sources of order
# 1-2 + ray tracing with per-surface scattering, air absorption, no statistical tail), other room families
# (mostly L-shaped rooms with irregular furniture, halls and corridors), harder materials, vivid colours;
# the same random rig as broad.
PRESETS["xsim"] = Preset(
    name="xsim", code=7, **{
        **_BROAD,
        "families": (("lshape", 0.4), ("hall", 0.2), ("corridor", 0.2), ("open_plan", 0.1), ("shoebox", 0.1)),
        "palette": "vivid",
        "acoustic_model": "hybrid",
        "max_order": 0,  # 0: drawn per sequence from ism_order
        "ism_order": (1, 2),
        "rt_rays": 3000,
        "air_absorption": True,
        "absorption": (0.02, 0.45),
        "band_slope": (-0.04, 0.16),
        "scattering": (0.05, 0.7),
    }
)

# Stage-2 sequences of the broad room families (self-supervised DepthNet + PoseNet, issue 13): the broad
# world's shoeboxes, open plans, corridors and halls (more furniture and pillars than train_seq's shoeboxes:
# more depth edges), train_seq's walk (0.04-0.08 of the room length per frame, +-1 deg/frame, free path),
# and stronger surface texture (contrast 0.25-0.7 against 0.1-0.45): the photometric loss, the only signal
# of stage 2, is flat on plain walls. Its own random streams (code 8); the L-shaped family stays out (xsim's).
PRESETS["broad_seq"] = Preset(name="broad_seq", code=8, **{
    **_BROAD, "step": (0.04, 0.08), "yaw_rate_deg": (-1.0, 1.0), "free_path": True, "texture_contrast": (0.25, 0.7),
    "wav_format": "float32"})

#: Centre frequencies of the octave bands of per-band absorption (pyroomacoustics' bands at 44.1 kHz).
BAND_CENTERS_HZ = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)
#: Metric floors of the family layouts at their smallest scale (module docstring).
MIN_HEIGHT_M = 0.5
RIG_CLEARANCE_M = 0.2


@dataclass(frozen=True)
class Family:
    """A kind of room of the broad presets. Ratios are to the room's longest horizontal side (x)."""

    name: str
    scale_range_m: tuple  # longest side in metres, log-uniform (two strata per layout)
    width_ratio: tuple  # Ly / Lx, uniform
    height_ratio: tuple  # Lz / Lx, uniform (corridors: Lz / Ly, see height_from_width)
    n_boxes: tuple  # furniture count, inclusive
    box_size: tuple  # footprint side / Lx, log-uniform
    box_height: tuple  # / Lz
    wall_share: float = 0.6  # share of furniture against a wall (the rest stands free)
    pillars: tuple = (0, 0)  # floor-to-ceiling pillars, inclusive count
    pillar_size: tuple = (0.015, 0.04)  # square section side / Lx
    corner_block: tuple = ()  # L-shape: a floor-to-ceiling block in a corner, footprint / side
    height_from_width: bool = False  # corridors: Lz = Ly x height_ratio
    heading_sd_deg: float = 20.0  # start heading noise around the farthest point
    yaw_rate_scale: float = 1.0  # x the preset's yaw rate


FAMILIES = {
    # As the original rooms (boxes against walls or free-standing), smaller on average.
    "shoebox": Family("shoebox", (1.5, 9.0), (0.5, 1.0), (0.3, 0.6), (0, 8), (0.06, 0.3), (0.15, 0.7)),
    # Wide, low rooms with scattered free-standing furniture (desks, partitions).
    "open_plan": Family("open_plan", (4.0, 30.0), (0.6, 1.0), (0.1, 0.22), (2, 8), (0.03, 0.15), (0.2, 0.8),
                        wall_share=0.2),
    # Long narrow corridors (width 0.06-0.25 of the length, up to 30 m) with a few cabinets along the walls.
    "corridor": Family("corridor", (9.0, 30.0), (0.06, 0.25), (0.9, 2.0), (0, 3), (0.01, 0.05), (0.2, 0.6),
                       wall_share=1.0, height_from_width=True, heading_sd_deg=4.0, yaw_rate_scale=0.25),
    # Large halls with a grid of floor-to-ceiling pillars and some furniture.
    "hall": Family("hall", (10.0, 30.0), (0.5, 1.0), (0.15, 0.4), (0, 4), (0.03, 0.12), (0.1, 0.5),
                   pillars=(2, 8), wall_share=0.5),
    # L-shaped rooms (a floor-to-ceiling block fills one corner) with irregular furniture: thin shelves,
    # long benches, cubes (xsim).
    "lshape": Family("lshape", (1.5, 20.0), (0.5, 1.0), (0.3, 0.6), (1, 6), (0.02, 0.4), (0.05, 0.9),
                     corner_block=(0.3, 0.6), wall_share=0.5),
}


@dataclass
class Box:
    """Axis-aligned box (furniture) in normalised world units; lo < hi per axis."""

    lo: np.ndarray
    hi: np.ndarray


@dataclass
class Look:
    """Appearance of one surface: linear-RGB albedo in [0, 1] and a procedural texture.

    kind: 0 plain mottled, 1 planks/stripes, 2 tiles, 3 fine noise. period: texture period in
    normalised units (so textures scale with the room). contrast: texture modulation depth.
    grid: (G, G) random values for the value noise.
    """

    albedo: np.ndarray
    kind: int
    period: float
    contrast: float
    grid: np.ndarray
    axis: int = 0  # plank direction (0 or 1 of the face's two in-plane axes)


@dataclass
class Pose:
    """Rig pose in normalised world units / radians (see module docstring for the frames)."""

    position: np.ndarray
    yaw: float
    pitch: float
    roll: float


@dataclass
class Layout:
    """A scale-free scene: room, furniture, looks, light and the camera trajectory (normalised)."""

    room: np.ndarray  # (3,) normalised extents, room[0] = 1
    boxes: list
    looks: list  # one Look per surface id
    light: np.ndarray  # (3,) point light position
    light_power: float
    ambient: float
    poses: list  # one Pose per frame
    layout_index: int = 0
    family: str = "shoebox"  # FAMILIES key (the original presets: always shoebox)


@dataclass
class SequenceSpec:
    """One sequence = a layout at an absolute scale with its acoustic parameters."""

    layout: Layout
    scale_m: float  # metres per normalised unit (= the room's longest horizontal side in metres)
    absorption: np.ndarray  # (n_surfaces,) energy absorption per surface
    noise_std: float
    gain: float  # overall recording gain
    channel_gain: np.ndarray  # (2,) small left/right gain mismatch
    jitter: np.ndarray  # (frames,) int onset jitter in samples
    max_order: int = 3
    sequence_index: int = 0
    speaker_pattern_p: float = 0.7
    meta: dict = field(default_factory=dict)
    # ---- the broad presets (defaults = the original presets) ----
    # absorption may also be (n_surfaces, len(BAND_CENTERS_HZ)): per surface and octave band.
    scattering: "np.ndarray | None" = None  # (n_surfaces,) hybrid model only
    mic_spacing_m: float = 0.2  # left-right microphone distance (rig_offsets)
    acoustic_model: str = "ism"  # "ism" (+ diffuse tail) or "hybrid" (+ ray tracing)
    rt_rays: int = 0
    air_absorption: bool = False
    emitters: "list | None" = None  # one Emitter per frame; None = the default sweep at the fixed gain

    def rig_offsets(self) -> dict:
        return rig_offsets(self.mic_spacing_m)


@dataclass(frozen=True)
class Emitter:
    """What the rig emits and records in one frame.

    sweep: the emitted sweep (avsnet_ros.audio.frontend.SweepSpec). level_dbfs: the direct-path sweep's
    peak in the recording (louder channel, dBFS); None = the original fixed gain (acoustics.RECORDING_GAIN
    x the sequence gain) with white noise of the sequence's noise_std. snr_db: direct-path peak over the
    noise RMS (dB). noise_colour: amplitude weights of white, pink and brown noise at 1 kHz.
    """

    sweep: object
    level_dbfs: "float | None" = None
    snr_db: "float | None" = None
    noise_colour: tuple = (1.0, 0.0, 0.0)


def n_surfaces(layout: Layout) -> int:
    return 6 + 6 * len(layout.boxes)


def rotation_world_optical(pose: Pose) -> np.ndarray:
    """R_world_optical (3, 3): maps optical-frame directions to world directions."""
    return rotation_world_body(pose.yaw, pose.pitch, pose.roll) @ R_BODY_OPTICAL


def intrinsics_for(height: int, width: int, hfov_deg: float = 90.0) -> np.ndarray:
    """Pinhole K (3, 3) float64 for an image of (height, width) px with square pixels.

    fx = fy = (W / 2) / tan(hfov / 2); principal point at the centre in the pixel-centre convention
    ((W - 1) / 2, (H - 1) / 2), the convention of avsnet_ros.data.samples.scale_intrinsics.
    """
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def rig_offsets(mic_spacing_m: float = 0.2) -> dict:
    """Body-frame offsets of RIG_OFFSETS_M with the microphones mic_spacing_m apart (y = +-spacing / 2)."""
    if mic_spacing_m == 0.2:
        return RIG_OFFSETS_M
    half = 0.5 * float(mic_spacing_m)
    return {
        "speaker": RIG_OFFSETS_M["speaker"].copy(),
        "mic_left": np.array([0.0, half, -0.06]),
        "mic_right": np.array([0.0, -half, -0.06]),
    }


def rig_positions_m(pose: Pose, scale_m: float, offsets: "dict | None" = None) -> dict:
    """World positions in metres of the camera, speaker and both microphones for a normalised pose.

    offsets: body-frame offsets (rig_offsets); None = RIG_OFFSETS_M."""
    r = rotation_world_body(pose.yaw, pose.pitch, pose.roll)
    cam = np.asarray(pose.position, dtype=np.float64) * scale_m
    out = {"camera": cam}
    for name, off in (RIG_OFFSETS_M if offsets is None else offsets).items():
        out[name] = cam + r @ off
    return out


# ----------------------------------------------------------------------------------------- looks

def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _sample_look(rng: np.random.Generator, role: str, preset: Preset, base=None) -> Look:
    vivid = preset.palette == "vivid"
    if base is not None:
        # Variation of a shared colour (e.g. the four walls of one room).
        albedo = np.clip(base * rng.uniform(0.9, 1.1, size=3), 0.02, 0.95)
    elif role == "ceiling":
        albedo = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3 if vivid else 0.1), rng.uniform(0.7, 0.95))
    elif role == "floor":
        albedo = _hsv_to_rgb(
            rng.uniform(0.02, 0.12) if rng.uniform() < 0.6 else rng.uniform(0, 1),
            rng.uniform(0.2, 0.9 if vivid else 0.6),
            rng.uniform(0.15, 0.7),
        )
    elif role == "wall":
        albedo = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.3, 0.9) if vivid else rng.uniform(0.0, 0.35),
                             rng.uniform(0.45, 0.9))
    else:  # furniture
        albedo = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.3, 1.0) if vivid else rng.uniform(0.1, 0.7),
                             rng.uniform(0.15, 0.85))
    if role == "floor":
        kind = int(rng.choice([1, 2, 3, 0], p=[0.35, 0.35, 0.2, 0.1]))
    elif role == "ceiling":
        kind = int(rng.choice([0, 2], p=[0.7, 0.3]))
    elif role == "wall":
        kind = int(rng.choice([0, 1, 3], p=[0.6, 0.2, 0.2]))
    else:
        kind = int(rng.choice([0, 1, 3], p=[0.4, 0.4, 0.2]))
    period = float(np.exp(rng.uniform(np.log(0.02), np.log(0.12))))
    contrast = float(rng.uniform(preset.texture_contrast[0], preset.texture_contrast[1]))
    grid = rng.uniform(0.0, 1.0, size=(16, 16))
    return Look(albedo=np.asarray(albedo, dtype=np.float64), kind=kind, period=period, contrast=contrast, grid=grid,
                axis=int(rng.integers(0, 2)))


# --------------------------------------------------------------------------------------- layouts

def _uniform(rng, lo_hi):
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _against_wall(side: int, room: np.ndarray, sx: float, sy: float, x0: float, y0: float,
                  gap: float) -> "tuple[float, float]":
    """A footprint (x0, y0, sx, sy) moved against wall `side` (0: x = 0, 1: x = Lx, 2: y = 0, 3: y = Ly),
    `gap` away from it; the other coordinate is kept."""
    if side == 0:
        return gap, y0
    if side == 1:
        return room[0] - sx - gap, y0
    if side == 2:
        return x0, gap
    return x0, room[1] - sy - gap


_MARGIN = 0.1  # rig clearance from walls and furniture footprints, normalised (>= 0.2 m at 2 m scale)


def _free_xy(xy: np.ndarray, room: np.ndarray, boxes: list, margin: float = _MARGIN) -> bool:
    x, y = float(xy[0]), float(xy[1])
    if not (margin <= x <= room[0] - margin and margin <= y <= room[1] - margin):
        return False
    for b in boxes:
        if b.lo[0] - margin <= x <= b.hi[0] + margin and b.lo[1] - margin <= y <= b.hi[1] + margin:
            return False
    return True


def _sample_boxes(rng, preset: Preset, room: np.ndarray) -> list:
    n = int(rng.integers(preset.n_boxes[0], preset.n_boxes[1] + 1))
    boxes: list = []
    tries = 0
    while len(boxes) < n and tries < 60:
        tries += 1
        sx, sy = _uniform(rng, preset.box_size), _uniform(rng, preset.box_size)
        sx, sy = min(sx, 0.5 * room[0]), min(sy, 0.5 * room[1])
        # Furniture stands on short legs: a small gap under the box keeps its bottom face off the
        # floor plane (coplanar faces confuse the image-source visibility test).
        z0 = room[2] * float(rng.uniform(0.02, 0.12))
        h = room[2] * _uniform(rng, preset.box_height)
        h = min(h, 0.9 * room[2] - z0)
        # Mostly against a wall (with a small gap), sometimes free-standing.
        gap = 0.015
        if rng.uniform() < 0.6:
            side = int(rng.integers(0, 4))
            x0 = float(rng.uniform(gap, room[0] - sx - gap))
            y0 = float(rng.uniform(gap, room[1] - sy - gap))
            x0, y0 = _against_wall(side, room, sx, sy, x0, y0, gap)
        else:
            x0 = float(rng.uniform(gap, room[0] - sx - gap))
            y0 = float(rng.uniform(gap, room[1] - sy - gap))
        lo = np.array([x0, y0, z0])
        hi = np.array([x0 + sx, y0 + sy, z0 + h])
        sep = 0.02
        if any(np.all(lo < b.hi + sep) and np.all(b.lo - sep < hi) for b in boxes):
            continue
        boxes.append(Box(lo=lo, hi=hi))
    return boxes


def _sample_start(rng, room: np.ndarray, boxes: list, margin: float = _MARGIN, heading_sd_deg: float = 20.0):
    """A free start point and a heading roughly towards a far point of the room, or None."""
    for _ in range(200):
        xy = np.array([rng.uniform(0, room[0]), rng.uniform(0, room[1])])
        if _free_xy(xy, room, boxes, margin):
            break
    else:  # furniture leaves no free spot: the caller removes a box and tries again
        return None
    z = room[2] * float(rng.uniform(0.35, 0.6))
    # Look roughly towards a far point of the room (a camera facing a wall at 20 cm shows nothing).
    best, best_d = None, -1.0
    for _ in range(8):
        tgt = np.array([rng.uniform(0, room[0]), rng.uniform(0, room[1])])
        dist = float(np.hypot(*(tgt - xy)))
        if dist > best_d:
            best, best_d = tgt, dist
    yaw = math.atan2(best[1] - xy[1], best[0] - xy[0]) + math.radians(float(rng.normal(0.0, heading_sd_deg)))
    return xy, z, yaw


def _sample_trajectory(rng, preset: Preset, room: np.ndarray, boxes: list, frames: int,
                       margin: float = _MARGIN, heading_sd_deg: float = 20.0, yaw_rate_scale: float = 1.0) -> list:
    """Smooth camera path: start in free space, walk forward with a slow turn; turn away from obstacles."""
    start = _sample_start(rng, room, boxes, margin, heading_sd_deg)
    if start is None:
        return None
    xy, z, yaw = start
    yaw_rate = math.radians(_uniform(rng, preset.yaw_rate_deg))
    if yaw_rate_scale != 1.0:
        yaw_rate *= yaw_rate_scale
    step = _uniform(rng, preset.step)
    if preset.free_path:
        for _ in range(50):  # keep the last draw if no free straight walk is found
            if all(_free_xy(xy + k * step * np.array([math.cos(yaw + k * yaw_rate), math.sin(yaw + k * yaw_rate)]),
                            room, boxes, margin) for k in range(1, frames + 1)):
                break
            start = _sample_start(rng, room, boxes, margin, heading_sd_deg)
            if start is None:
                return None
            xy, z, yaw = start
    pitch0 = math.radians(_uniform(rng, preset.pitch_deg))
    roll0 = math.radians(float(rng.uniform(-preset.roll_deg, preset.roll_deg)))
    bob_phase = float(rng.uniform(0, 2 * math.pi))
    poses = []
    pos = np.array([xy[0], xy[1], z])
    for f in range(frames):
        pitch = pitch0 + math.radians(1.0) * math.sin(bob_phase + 0.9 * f)
        roll = roll0 + math.radians(0.5) * math.sin(bob_phase + 1.3 * f)
        zf = z + 0.003 * math.sin(bob_phase + 1.7 * f)
        poses.append(Pose(position=np.array([pos[0], pos[1], zf]), yaw=yaw, pitch=pitch, roll=roll))
        # Next position: keep the slow turn; near an obstacle try turns of up to 30 degrees, and if
        # every direction is blocked stay in place and turn 15 degrees (motion stays small).
        base = yaw + yaw_rate + float(rng.normal(0.0, math.radians(0.5)))
        turn_sign = 1.0 if yaw_rate >= 0 else -1.0
        moved = False
        for dyaw_deg in (0.0, 10.0, -10.0, 20.0, -20.0, 30.0, -30.0):
            cand = base + turn_sign * math.radians(dyaw_deg)
            nxt = pos[:2] + step * np.array([math.cos(cand), math.sin(cand)])
            if _free_xy(nxt, room, boxes, margin):
                pos = np.array([nxt[0], nxt[1], z])
                yaw = cand
                moved = True
                break
        if not moved:
            yaw = yaw + turn_sign * math.radians(15.0)
    return poses


def sample_layout(rng: np.random.Generator, preset: Preset, frames: int, layout_index: int = 0) -> Layout:
    """Sample a scale-free scene and a camera trajectory of `frames` poses (normalised units)."""
    room = np.array([1.0, _uniform(rng, preset.width_ratio), _uniform(rng, preset.height_ratio)])
    boxes = _sample_boxes(rng, preset, room)
    poses = _sample_trajectory(rng, preset, room, boxes, frames)
    while poses is None:
        if not boxes:
            raise RuntimeError("could not place the rig in an empty room")  # cannot happen: margin < room / 2
        boxes = boxes[:-1]
        poses = _sample_trajectory(rng, preset, room, boxes, frames)
    wall_base, looks = _room_looks(rng, preset)
    for _ in boxes:
        lk = _sample_look(rng, "furniture", preset)
        looks.extend([lk] * 6)
    return _lit_layout(rng, room, boxes, looks, poses, layout_index)


def _room_looks(rng: np.random.Generator, preset: Preset) -> "tuple[np.ndarray, list]":
    """(the walls' shared albedo, looks of the 4 walls, the floor and the ceiling) in surface-id order."""
    wall_base = _sample_look(rng, "wall", preset).albedo
    looks = [_sample_look(rng, "wall", preset, base=wall_base) for _ in range(4)]
    looks.append(_sample_look(rng, "floor", preset))
    looks.append(_sample_look(rng, "ceiling", preset))
    return wall_base, looks


def _lit_layout(rng: np.random.Generator, room: np.ndarray, boxes: list, looks: list, poses: list,
                layout_index: int, family: str = "shoebox") -> Layout:
    """The Layout with a point light near the ceiling, its power and the ambient level drawn."""
    light = np.array([rng.uniform(0.2, 0.8) * room[0], rng.uniform(0.2, 0.8) * room[1], 0.92 * room[2]])
    return Layout(room=room, boxes=boxes, looks=looks, light=light, light_power=float(rng.uniform(0.5, 0.9)),
                  ambient=float(rng.uniform(0.25, 0.45)), poses=poses, layout_index=layout_index, family=family)


def sample_sequence_spec(
    rng: np.random.Generator,
    preset: Preset,
    layout: Layout,
    twin: int = 0,
    sequence_index: int = 0,
) -> SequenceSpec:
    """Absolute scale and acoustics for one sequence of `layout`.

    The scale is log-uniform over preset.scale_range_m (the broad presets: over the layout's family's
    Family.scale_range_m); with layout_repeats R the log-range is cut into R equal strata and twin j
    draws from stratum j, so the R sequences sharing a layout (and hence identical images) are
    guaranteed to have clearly different scales, while each scale is still log-uniform over the whole
    range marginally.
    """
    if preset.families:
        return _sample_broad_sequence_spec(rng, preset, layout, twin, sequence_index)
    lo, hi = math.log(preset.scale_range_m[0]), math.log(preset.scale_range_m[1])
    r = max(1, preset.layout_repeats)
    u = (twin % r + float(rng.uniform())) / r
    scale_m = math.exp(lo + u * (hi - lo))
    ns = n_surfaces(layout)
    absorption = rng.uniform(preset.absorption[0], preset.absorption[1], size=ns)
    # A box is one material: all its faces share the first face's absorption.
    for b in range(len(layout.boxes)):
        absorption[6 + 6 * b: 12 + 6 * b] = absorption[6 + 6 * b]
    noise_std = math.exp(rng.uniform(math.log(preset.noise_std[0]), math.log(preset.noise_std[1])))
    gain = 10.0 ** (rng.normal(0.0, 0.5) / 20.0)  # +-0.5 dB recording level variation
    channel_gain = 10.0 ** (rng.normal(0.0, 0.2, size=2) / 20.0)
    jitter = rng.integers(-3, 4, size=len(layout.poses))
    return SequenceSpec(
        layout=layout,
        scale_m=scale_m,
        absorption=absorption,
        noise_std=noise_std,
        gain=gain,
        channel_gain=channel_gain,
        jitter=jitter,
        max_order=preset.max_order,
        sequence_index=sequence_index,
        speaker_pattern_p=preset.speaker_pattern_p,
    )


# --------------------------------------------------------------------------- broad presets: families

def _log_uniform(rng, lo_hi) -> float:
    return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


def family_margin(fam: Family) -> float:
    """Normalised rig clearance of a family: RIG_CLEARANCE_M at its smallest scale."""
    return RIG_CLEARANCE_M / fam.scale_range_m[0]


def _family_room(rng, fam: Family) -> np.ndarray:
    width = _uniform(rng, fam.width_ratio)
    base = width if fam.height_from_width else 1.0
    h_lo = max(fam.height_ratio[0] * base, MIN_HEIGHT_M / fam.scale_range_m[0])
    h_hi = max(fam.height_ratio[1] * base, h_lo)
    return np.array([1.0, width, float(rng.uniform(h_lo, h_hi))])


def _overlaps(lo, hi, boxes, sep: float = 0.02) -> bool:
    return any(np.all(lo < b.hi + sep) and np.all(b.lo - sep < hi) for b in boxes)


def _family_structure(rng, fam: Family, room: np.ndarray) -> list:
    """Architecture (drawn before the furniture): the L-shape's corner block or the hall's pillars."""
    boxes: list = []
    gap = 0.004  # off the walls/floor/ceiling: no coplanar faces (image-source visibility)
    zgap = 0.003 * room[2]
    if fam.corner_block:
        sx = room[0] * _uniform(rng, fam.corner_block)
        sy = room[1] * _uniform(rng, fam.corner_block)
        corner = int(rng.integers(0, 4))
        x0 = gap if corner % 2 == 0 else room[0] - sx - gap
        y0 = gap if corner // 2 == 0 else room[1] - sy - gap
        boxes.append(Box(lo=np.array([x0, y0, zgap]), hi=np.array([x0 + sx, y0 + sy, room[2] - zgap])))
    n_p = int(rng.integers(fam.pillars[0], fam.pillars[1] + 1))
    if n_p > 0:
        # A jittered grid of nx x ny pillars (nx along the length).
        nx = max(1, min(n_p, int(round(math.sqrt(n_p * room[0] / room[1])))))
        ny = max(1, n_p // nx)
        side = _uniform(rng, fam.pillar_size)
        for i in range(nx):
            for j in range(ny):
                cx = room[0] * (i + 0.5) / nx + float(rng.uniform(-0.1, 0.1)) * room[0] / nx
                cy = room[1] * (j + 0.5) / ny + float(rng.uniform(-0.1, 0.1)) * room[1] / ny
                lo = np.array([cx - side / 2, cy - side / 2, zgap])
                hi = np.array([cx + side / 2, cy + side / 2, room[2] - zgap])
                if lo[0] > gap and lo[1] > gap and hi[0] < room[0] - gap and hi[1] < room[1] - gap \
                        and not _overlaps(lo, hi, boxes):
                    boxes.append(Box(lo=lo, hi=hi))
    return boxes


def _family_furniture(rng, fam: Family, room: np.ndarray, boxes: list) -> list:
    """Furniture boxes (log-uniform footprint sides, on short legs) added to `boxes`."""
    n = int(rng.integers(fam.n_boxes[0], fam.n_boxes[1] + 1))
    out = list(boxes)
    placed, tries = 0, 0
    gap = 0.015 if fam.name != "corridor" else 0.004
    while placed < n and tries < 80:
        tries += 1
        if fam.name == "corridor":  # cabinets: short along the corridor, 15-35 % of its width deep
            sx = _log_uniform(rng, fam.box_size)
            sy = room[1] * float(rng.uniform(0.15, 0.35))
        else:
            sx, sy = _log_uniform(rng, fam.box_size), _log_uniform(rng, fam.box_size)
        sx, sy = min(sx, 0.5 * room[0]), min(sy, 0.5 * room[1])
        z0 = room[2] * float(rng.uniform(0.02, 0.12))
        h = min(room[2] * _uniform(rng, fam.box_height), 0.9 * room[2] - z0)
        x0 = float(rng.uniform(gap, room[0] - sx - gap))
        y0 = float(rng.uniform(gap, room[1] - sy - gap))
        if rng.uniform() < fam.wall_share:
            side = int(rng.integers(0, 4)) if fam.name != "corridor" else int(rng.integers(2, 4))
            x0, y0 = _against_wall(side, room, sx, sy, x0, y0, gap)
        lo = np.array([x0, y0, z0])
        hi = np.array([x0 + sx, y0 + sy, z0 + h])
        if _overlaps(lo, hi, out):
            continue
        out.append(Box(lo=lo, hi=hi))
        placed += 1
    return out


def sample_family_layout(rng: np.random.Generator, preset: Preset, frames: int, layout_index: int = 0) -> Layout:
    """Sample a scale-free scene of one of the preset's room families (broad presets).

    The family is drawn first (weights in preset.families), then the room, its architecture (pillars,
    corner block), furniture, the camera path (clearance family_margin), looks and light; everything
    from `rng`, in normalised units.
    """
    names = [f for f, _ in preset.families]
    weights = np.array([w for _, w in preset.families], dtype=np.float64)
    fam = FAMILIES[names[int(rng.choice(len(names), p=weights / weights.sum()))]]
    room = _family_room(rng, fam)
    structure = _family_structure(rng, fam, room)
    boxes = _family_furniture(rng, fam, room, structure)
    margin = family_margin(fam)
    kw = dict(margin=margin, heading_sd_deg=fam.heading_sd_deg, yaw_rate_scale=fam.yaw_rate_scale)
    poses = _sample_trajectory(rng, preset, room, boxes, frames, **kw)
    while poses is None:
        if len(boxes) <= len(structure):
            if not structure:
                raise RuntimeError(f"could not place the rig in an empty {fam.name}")
            structure = structure[:-1]  # pillars leave no free spot: drop one
            boxes = list(structure)
        else:
            boxes = boxes[:-1]
        poses = _sample_trajectory(rng, preset, room, boxes, frames, **kw)
    wall_base, looks = _room_looks(rng, preset)
    n_struct = sum(1 for b in boxes if any(b is s for s in structure))
    pillar_look = _sample_look(rng, "wall", preset, base=wall_base if fam.corner_block else None)
    for i, _ in enumerate(boxes):
        lk = pillar_look if i < n_struct else _sample_look(rng, "furniture", preset)
        looks.extend([lk] * 6)
    return _lit_layout(rng, room, boxes, looks, poses, layout_index, family=fam.name)


def _band_absorption(rng, n: int, preset: Preset) -> np.ndarray:
    """(n, len(BAND_CENTERS_HZ)) absorption: a_1k + slope * log2(f / 1 kHz), clipped to [0.01, 0.95]."""
    a1k = rng.uniform(preset.absorption[0], preset.absorption[1], size=n)
    slope = rng.uniform(preset.band_slope[0], preset.band_slope[1], size=n)
    octaves = np.log2(np.asarray(BAND_CENTERS_HZ) / 1000.0)
    return np.clip(a1k[:, None] + slope[:, None] * octaves[None, :], 0.01, 0.95)


def _sample_broad_sequence_spec(rng, preset: Preset, layout: Layout, twin: int, sequence_index: int) -> SequenceSpec:
    fam = FAMILIES[layout.family]
    lo, hi = math.log(fam.scale_range_m[0]), math.log(fam.scale_range_m[1])
    r = max(1, preset.layout_repeats)
    u = (twin % r + float(rng.uniform())) / r
    scale_m = math.exp(lo + u * (hi - lo))
    ns = n_surfaces(layout)
    absorption = _band_absorption(rng, ns, preset) if preset.per_band_absorption else \
        rng.uniform(preset.absorption[0], preset.absorption[1], size=ns)
    scattering = rng.uniform(preset.scattering[0], preset.scattering[1], size=ns) if preset.scattering else None
    for b in range(len(layout.boxes)):  # a box is one material
        absorption[6 + 6 * b: 12 + 6 * b] = absorption[6 + 6 * b]
        if scattering is not None:
            scattering[6 + 6 * b: 12 + 6 * b] = scattering[6 + 6 * b]
    channel_gain = 10.0 ** (rng.normal(0.0, 0.2, size=2) / 20.0)
    jitter = rng.integers(-preset.jitter_samples, preset.jitter_samples + 1, size=len(layout.poses))
    spacing = _uniform(rng, preset.mic_spacing_m) if preset.mic_spacing_m else 0.2
    pattern = _uniform(rng, preset.speaker_pattern_range) if preset.speaker_pattern_range else preset.speaker_pattern_p
    order = preset.max_order
    if preset.acoustic_model == "hybrid" and order <= 0:
        order = int(rng.integers(preset.ism_order[0], preset.ism_order[1] + 1))
    return SequenceSpec(
        layout=layout,
        scale_m=scale_m,
        absorption=absorption,
        noise_std=0.0,  # the broad presets set the noise per frame (Emitter.snr_db)
        gain=1.0,
        channel_gain=channel_gain,
        jitter=jitter,
        max_order=order,
        sequence_index=sequence_index,
        speaker_pattern_p=round(pattern, 4),
        scattering=scattering,
        mic_spacing_m=round(spacing, 4),
        acoustic_model=preset.acoustic_model,
        rt_rays=preset.rt_rays,
        air_absorption=preset.air_absorption,
    )


def sample_emitter(rng: np.random.Generator, preset: Preset) -> Emitter:
    """One frame's Emitter of a random-emitter preset: a 20 Hz - 20 kHz sweep of preset.sweep_ms
    (log-uniform), linear or exponential, fades preset.fade_ms (at most a quarter of the sweep),
    level preset.level_dbfs and SNR preset.snr_db (uniform in dB), noise colour weights ~ Dirichlet(1, 1, 1).
    Durations and fades are rounded to 1 us so the sweep's text form is exact (a fade capped at a quarter
    of the sweep may therefore exceed it by up to 0.5 us, far below one sample)."""
    from avsnet_ros.audio.frontend import SweepSpec

    method = "linear" if rng.uniform() < 0.5 else "exponential"
    duration = round(_log_uniform(rng, (preset.sweep_ms[0] * 1e-3, preset.sweep_ms[1] * 1e-3)), 6)
    fade = round(min(_uniform(rng, preset.fade_ms) * 1e-3, duration / 4.0), 6)
    level = round(_uniform(rng, preset.level_dbfs), 3)
    snr = round(_uniform(rng, preset.snr_db), 3)
    colour = tuple(round(float(c), 4) for c in rng.dirichlet([1.0, 1.0, 1.0]))
    sweep = SweepSpec(duration_s=duration, f0_hz=20.0, f1_hz=20000.0, method=method, fade_s=fade)
    return Emitter(sweep=sweep, level_dbfs=level, snr_db=snr, noise_colour=colour)
