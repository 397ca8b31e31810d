"""The synthetic audio-visual world: scale-ambiguous rooms whose echoes obey physics.

Modules:
- scene: presets (the original shoebox world; broad/broad_test with room families and a random rig;
  xsim), scale-free layouts (room, box furniture, pillars, looks, light, camera trajectory), the rig
  (REP 103 body frame, speaker and microphone offsets in metres), per-sequence scale/acoustics, the
  per-frame Emitter (sweep, recording level, SNR, noise colour).
- raycast: vectorised numpy ray caster -> z-depth, shaded RGB, surface ids.
- acoustics: pyroomacoustics RIRs (room walls + box faces; image sources + diffuse late tail, flat or
  per octave band; or the hybrid image-source + ray-tracing model), the emitted sweep, recording level
  and coloured noise, BatVision-layout echo buffers (onset at sample 288 + jitter, 20000 samples).
- writer: seeds, sample rendering, depth holes, BV2-layout files and CSVs (with the `sweep` column),
  forced sweep/level runs, multiprocessing.
CLI: training/make_synthetic.py.
"""
from .acoustics import BUFFER_SAMPLES, SAMPLE_RATE_HZ, SPEED_OF_SOUND_M_S, default_sweep, render_echo
from .raycast import render
from .scene import (FAMILIES, PRESETS, RIG_OFFSETS_M, Emitter, Family, Preset, intrinsics_for, sample_family_layout,
                    sample_layout, sample_sequence_spec)
from .writer import GenerationOptions, generate_dataset, make_sequence_spec, render_sample, scene_rng

__all__ = [
    "BUFFER_SAMPLES",
    "SAMPLE_RATE_HZ",
    "SPEED_OF_SOUND_M_S",
    "PRESETS",
    "FAMILIES",
    "RIG_OFFSETS_M",
    "Preset",
    "Family",
    "Emitter",
    "sample_family_layout",
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
