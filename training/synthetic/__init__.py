"""The synthetic audio-visual world: scale-ambiguous rooms whose echoes obey physics.

Modules:
- scene: presets, scale-free layouts (room, box furniture, looks, light, camera trajectory), the
  rig (REP 103 body frame, speaker and microphone offsets in metres), per-sequence scale/acoustics.
- raycast: vectorised numpy ray caster -> z-depth, shaded RGB, surface ids.
- acoustics: pyroomacoustics image-source RIRs (room walls + box faces), diffuse late tail, the
  emitted sweep, BatVision-layout echo buffers (onset at sample 288 + jitter, 20000 samples).
- writer: seeds, sample rendering, BV2-layout files and CSVs, multiprocessing.
CLI: training/make_synthetic.py.
"""
from .acoustics import BUFFER_SAMPLES, SAMPLE_RATE_HZ, SPEED_OF_SOUND_M_S, default_sweep, render_echo
from .raycast import render
from .scene import PRESETS, RIG_OFFSETS_M, Preset, intrinsics_for, sample_layout, sample_sequence_spec
from .writer import GenerationOptions, generate_dataset, make_sequence_spec, render_sample, scene_rng

__all__ = [
    "BUFFER_SAMPLES",
    "SAMPLE_RATE_HZ",
    "SPEED_OF_SOUND_M_S",
    "PRESETS",
    "RIG_OFFSETS_M",
    "Preset",
    "GenerationOptions",
    "default_sweep",
    "render_echo",
    "render",
    "intrinsics_for",
    "sample_layout",
    "sample_sequence_spec",
    "generate_dataset",
    "make_sequence_spec",
    "render_sample",
    "scene_rng",
]
