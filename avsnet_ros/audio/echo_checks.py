"""Content checks of one echo buffer before it may scale depth: silence, clipping, direct-path onset.

Silence and clipping are measured on the window the model reads (the pipeline's echo window: with
the BatVision "file" crop samples [0, echo_window_samples(max_depth_m)), 7,782 at 30 m and 44.1 kHz),
not on the whole buffer: a 20,000-sample buffer whose window is 9.4 % clipped is only 3.6 % clipped
overall. The onset check finds the direct-path sweep (matched filter) near ECHO_ONSET_SAMPLE, which
catches misaligned buffers and BatVision-layout recordings at another sample rate.

For models with the "rerender" echo front-end (audio.frontend) check_front_end judges the front-end's
result instead: the recording's direct-path level, whether the announced (or identified) sweep explains
the recording (direct-path quality), and the onset where the deconvolution found the direct path (the
matched-filter templates know only the default sweeps, so another emitter's chirp would fail them).
Echo layout: float32 (2, N), full scale 1.0 (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional, Sequence

import numpy as np

from .align import ECHO_ONSET_SAMPLE, find_onset
from .frontend import MIN_DIRECT_QUALITY, MIN_SWEEP_MATCH
from .io import AudioError
from .sweep import BATVISION_SWEEP, DEFAULT_SWEEP, make_sweep

__all__ = [
    "CLIP_LEVEL",
    "ONSET_SEARCH_MARGIN_SAMPLES",
    "SILENCE_PEAK_LEVEL",
    "EchoCheckConfig",
    "EchoFault",
    "EchoProblem",
    "DEFAULT_MIN_LEVEL_DBFS",
    "check_echo",
    "check_front_end",
    "clipped_fraction",
    "onset_templates",
]

#: A sample with |x| at or above this is clipped (full scale 1.0; float conversion of int16 peaks
#: reaches 32767/32768 = 0.99997).
CLIP_LEVEL = 0.999
#: A window whose peak |x| is below this is silent: one LSB of 16-bit audio is 1/32768 full scale,
#: so anything below it is digital silence (a muted or disconnected input), not a quiet room.
SILENCE_PEAK_LEVEL = 1.0 / 32768
#: The onset check searches this far beyond its tolerance (samples), so an onset just outside the
#: tolerance is seen as such (a search ending inside the tolerance would report its last lag).
ONSET_SEARCH_MARGIN_SAMPLES = 512
#: Quieter direct paths are rejected (echo_level): -60 dBFS is ~33 LSB of 16-bit audio, where a
#: microphone that is unplugged, muted in the mixer or pointed away records hum and noise, not a sweep.
DEFAULT_MIN_LEVEL_DBFS = -60.0


class EchoFault(Enum):
    """Why an echo is unusable. The value is the echo drop reason reported in diagnostics."""

    SILENT = "echo_silent"
    CLIPPED = "echo_clipped"
    ONSET = "echo_onset"
    LENGTH = "echo_length"
    MISMATCH = "echo_sweep_mismatch"  # the announced sweep does not explain the recording
    LEVEL = "echo_level"  # the recording's direct path is too quiet


@dataclass(frozen=True)
class EchoProblem:
    """check_echo's answer for an unusable echo: the fault and a one-line detail."""

    fault: EchoFault
    detail: str

    @property
    def reason(self) -> str:
        return self.fault.value


@dataclass(frozen=True)
class EchoCheckConfig:
    """Thresholds (depth_node parameters echo_max_clipped_fraction, echo_onset_check, ...)."""

    max_clipped_fraction: float = 0.05  # of the window's samples, both channels together
    onset_check: bool = True
    onset_tolerance_samples: int = 16  # allowed offset of the onset from ECHO_ONSET_SAMPLE
    min_onset_snr_db: float = 20.0  # matched-filter SNR of the direct path
    min_direct_quality: float = MIN_DIRECT_QUALITY  # check_front_end: direct-path compactness (0..1)
    min_level_dbfs: float = DEFAULT_MIN_LEVEL_DBFS  # check_front_end: the recording's direct-path level
    min_sweep_match: float = MIN_SWEEP_MATCH  # check_front_end: announced sweep vs the best identified one


def clipped_fraction(samples: np.ndarray) -> float:
    """Fraction of the samples (any shape) with |x| >= CLIP_LEVEL."""
    return float(np.mean(np.abs(samples) >= CLIP_LEVEL)) if samples.size else 0.0


def onset_templates(sample_rate_hz: int) -> "list[np.ndarray]":
    """Matched-filter templates of the sweeps an echo buffer may hold: DEFAULT_SWEEP (the emitter
    and the synthetic world) and BATVISION_SWEEP (the real recordings); one when they are equal."""
    templates = [make_sweep(sample_rate_hz=sample_rate_hz, **DEFAULT_SWEEP)]
    if BATVISION_SWEEP != DEFAULT_SWEEP:
        templates.append(make_sweep(sample_rate_hz=sample_rate_hz, **BATVISION_SWEEP))
    return templates


def check_echo(echo: np.ndarray, *, window_start_sample: int, window_samples: int,
               templates: Sequence[np.ndarray], config: EchoCheckConfig = EchoCheckConfig()) -> Optional[EchoProblem]:
    """Content checks of a decoded echo -> EchoProblem, or None when it is usable.

    echo: (2, N) float32, full scale 1.0, onset near ECHO_ONSET_SAMPLE. window_start_sample and
    window_samples: the samples the model reads (pipeline: start 0 for the "file" crop, the window
    length is DepthPipeline.min_echo_samples()). templates: onset_templates(sample_rate_hz).
    Order: window length, silence (window peak < SILENCE_PEAK_LEVEL), clipping (fraction of the
    window's samples >= CLIP_LEVEL above max_clipped_fraction), then the onset (if enabled).
    """
    start, length = int(window_start_sample), int(window_samples)
    if start < 0 or length < 1:
        raise ValueError(f"window must start at >= 0 and hold >= 1 sample, got start {start}, length {length}")
    if echo.shape[-1] < start + length:
        return EchoProblem(EchoFault.LENGTH, f"{echo.shape[-1]} samples cannot hold the model's window "
                                             f"[{start}, {start + length})")
    window = echo[..., start: start + length]
    peak = float(np.max(np.abs(window)))
    if peak < SILENCE_PEAK_LEVEL:
        return EchoProblem(EchoFault.SILENT, f"peak {peak:.3g} of full scale in the model's window "
                                             f"[{start}, {start + length}): digital silence")
    clipped = clipped_fraction(window)
    if clipped > config.max_clipped_fraction:
        return EchoProblem(EchoFault.CLIPPED, f"{100 * clipped:.1f} % of the model's window [{start}, "
                                              f"{start + length}) at full scale")
    if not config.onset_check:
        return None
    return _check_onset(echo, templates, config)


def _check_onset(echo: np.ndarray, templates: Sequence[np.ndarray], config: EchoCheckConfig) -> Optional[EchoProblem]:
    tol = int(config.onset_tolerance_samples)
    search = ECHO_ONSET_SAMPLE + tol + ONSET_SEARCH_MARGIN_SAMPLES
    found = []
    for template in templates:
        head = echo[:, : min(echo.shape[1], search + template.shape[0] - 1)]
        if head.shape[1] < template.shape[0] + ECHO_ONSET_SAMPLE + tol:
            return EchoProblem(EchoFault.LENGTH,
                               f"{echo.shape[1]} samples cannot hold the onset at {ECHO_ONSET_SAMPLE}")
        try:
            onset = find_onset(head, template, search_samples=min(search, head.shape[1] - template.shape[0] + 1))
        except AudioError as exc:
            return EchoProblem(EchoFault.SILENT, str(exc))
        if abs(onset.onset_sample - ECHO_ONSET_SAMPLE) <= tol and onset.snr_db >= config.min_onset_snr_db:
            return None
        found.append(f"onset {onset.onset_sample} at {onset.snr_db:.1f} dB")
    return EchoProblem(EchoFault.ONSET, f"no direct-path sweep at sample {ECHO_ONSET_SAMPLE} +- {tol} with SNR >= "
                                        f"{config.min_onset_snr_db} dB ({'; '.join(found)}): misaligned buffer or "
                                        "wrong sample rate")


def check_front_end(result, config: EchoCheckConfig = EchoCheckConfig()) -> Optional[EchoProblem]:
    """Checks of an echo front-end result (audio.frontend.FrontEndResult) -> EchoProblem, or None.

    Run after check_echo (with its onset check off: this one replaces it). Order: the recording's
    direct-path level (result.level_dbfs < min_level_dbfs: echo_level; a quiet recording also
    deconvolves poorly, so this names the cause first), the quality (result.quality <
    min_direct_quality: echo_sweep_mismatch, the sweep used does not explain the recording; or
    result.match < min_sweep_match: echo_sweep_mismatch, the announced sweep explains it far worse than
    the best identified sweep: not what was played), then,
    if config.onset_check, the direct path found by the deconvolution (|result.direct_sample -
    ECHO_ONSET_SAMPLE| > onset_tolerance_samples: echo_onset). NaN compares as failing.
    """
    level = float(result.level_dbfs)
    if not level >= config.min_level_dbfs:
        return EchoProblem(EchoFault.LEVEL, f"direct path at {level:.1f} dBFS < {config.min_level_dbfs:g} dBFS: "
                                            "microphones muted, unplugged or far too quiet")
    quality = float(result.quality)
    if not quality >= config.min_direct_quality:
        sweep = result.sweep.to_text() if result.sweep is not None else "none"
        how = "identified" if result.identified else "announced"
        return EchoProblem(EchoFault.MISMATCH, f"direct-path quality {quality:.2f} < {config.min_direct_quality:g}: "
                                               f"the {how} sweep ({sweep}) does not explain the recording")
    match = float(getattr(result, "match", 1.0))
    if not match >= config.min_sweep_match:
        return EchoProblem(EchoFault.MISMATCH, f"the announced sweep does not explain the recording: {match:.2f} "
                                               f"of the best sweep's quality (< {config.min_sweep_match:g}), "
                                               f"not what was played ({result.sweep.to_text()})")
    if config.onset_check:
        tol = int(config.onset_tolerance_samples)
        found = int(result.direct_sample)
        if abs(found - ECHO_ONSET_SAMPLE) > tol:
            return EchoProblem(EchoFault.ONSET, f"direct path at sample {found}, not {ECHO_ONSET_SAMPLE} +- {tol}: "
                                                "misaligned buffer or wrong sample rate")
    return None
