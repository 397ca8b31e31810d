"""Echo alignment: direct-path onset by matched filtering, echo-window cropping, onset alignment.

Matched filter: the recording is cross-correlated with the known sweep (FFT, per channel, summed
over channels); `onset_sample` is the lag at which the sweep's first sample sits in the recording.
The onset is taken from the Hilbert envelope of the correlation (insensitive to the phase shifts a
loudspeaker and microphone add) and is the FIRST envelope peak that reaches `first_peak_fraction`
of the largest one: the direct path arrives first, while a reflection can be louder (in the real
BatVision recording below, the left channel's strongest arrival is a reflection 300 samples later).

What the real BatVision V2 recording shows (assets/batvision_v2_sample/audio_47.wav, 44.1 kHz):
the sound rises out of the noise at sample ~284 and the emitted 20 Hz - 20 kHz sweep is short.
Scanning templates with this module's find_onset (both channels summed; 0.2 ms fades) gave:

    template                          onset  SNR dB  peak   left / right alone
    linear 1 ms                        319    50.0   0.40   320 / 318
    linear 2 ms                        294    49.2   0.27   293 / 294
    linear 3 ms  (= BATVISION_SWEEP)   287    50.2   0.29   287 / 287
    linear 4 ms                        278    48.9   0.25   278 / 278
    linear 5 ms                        270    47.0   0.20   270 / 268
    linear 10 ms (0.2 ms fades)        209    15.8   0.08   249 / 209
    linear 10 ms, 2 ms fades           209    42.9   0.09   353 / 209
    exponential 0.5 / 1 / 3 ms         292 / 274 / 212 (SNR 35 / 33 / 27 dB)

Between 2 and 5 ms the estimate moves by ~8 samples per ms of template length: the recorded energy
sits in a 2-5 kHz band (loudspeaker and microphone response), so a template whose sweep rate differs
from the emitted one is offset by the time its 2-5 kHz part is shifted. The 3 ms linear up-sweep
gives the highest SNR, the same onset on both channels, and 287, one sample from the documented
onset 288 (ECHO_ONSET_SAMPLE): it is `sweep.BATVISION_SWEEP`. The plain arg-max (first_peak_fraction
=1) picks a louder reflection at 596 with that template, which is why the first-peak rule exists.
A 10 ms sweep does not describe these files (onset 209, ears disagree). So DEFAULT_SWEEP, what our
emitter plays and the synthetic world convolves, IS the BatVision sweep; the emitter aligns its own
recordings so that the onset lands at ECHO_ONSET_SAMPLE, which keeps every echo buffer in the BatVision
file layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import AudioError
from .sweep import BATVISION_WINDOW_SPEED_M_S, DEFAULT_SAMPLE_RATE_HZ, DEFAULT_SWEEP, make_sweep

__all__ = [
    "ECHO_ONSET_SAMPLE",
    "OnsetResult",
    "echo_window_samples",
    "matched_filter",
    "find_onset",
    "crop_echo",
    "align_to_onset",
]

#: Sample index of the direct-path sweep onset in every echo buffer (as in the real BV2 files).
ECHO_ONSET_SAMPLE = 288


@dataclass(frozen=True)
class OnsetResult:
    """Matched-filter onset.

    onset_sample: index of the sweep's first sample in the recording.
    snr_db: 20 log10(envelope peak / RMS of the envelope at lags whose window ends before the onset,
        i.e. correlation with pre-onset noise only); when fewer than 16 such lags exist, the median
        envelope over the searched lags is the noise reference instead.
    peak: normalised matched-filter envelope at the onset, env[k] / (|s| sum_c |x_c[k:k+S]|), in
        [0, 1]: 1 means each channel's window is a scaled (possibly phase-shifted) copy of the sweep.
    """

    onset_sample: int
    snr_db: float
    peak: float


def echo_window_samples(
    max_depth_m: float, sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ,
    speed_of_sound_m_s: float = BATVISION_WINDOW_SPEED_M_S,
) -> int:
    """Samples of the round trip to max_depth_m: int(2 d / c * fs) (BatVision; 7782 for 30 m, 3112 for 12 m)."""
    if not max_depth_m > 0:
        raise ValueError(f"max_depth_m must be positive, got {max_depth_m}")
    if not sample_rate_hz > 0 or not speed_of_sound_m_s > 0:
        raise ValueError("sample_rate_hz and speed_of_sound_m_s must be positive")
    # Same operation order as the BatVision loader: int((2 * max_depth / 340) * sr).
    return int((2 * float(max_depth_m) / float(speed_of_sound_m_s)) * sample_rate_hz)


def _as_channels(recording) -> np.ndarray:
    a = np.asarray(recording)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise AudioError(f"recording must be (channels, samples) or (samples,), got shape {a.shape}")
    return a


def matched_filter(recording, sweep) -> "tuple[np.ndarray, np.ndarray]":
    """FFT cross-correlation of each channel with the sweep, summed over channels.

    recording: (C, N) or (N,); sweep: (S,), S <= N. Returns (corr, envelope), both float64
    (N - S + 1,): corr[k] = sum_c sum_n x_c[k + n] s[n] (numpy.correlate 'valid'), envelope = |analytic
    signal of corr| (Hilbert transform done in the same FFT).
    """
    x = _as_channels(recording).astype(np.float64)
    s = np.asarray(sweep, dtype=np.float64).reshape(-1)
    n, m = x.shape[1], s.shape[0]
    if m == 0 or n < m:
        raise AudioError(f"recording of {n} samples is shorter than the {m}-sample sweep")
    nfft = 1 << int(np.ceil(np.log2(n + m - 1)))
    spec = np.fft.rfft(x, nfft, axis=1).sum(axis=0) * np.conj(np.fft.rfft(s, nfft))
    # Analytic signal: keep DC and Nyquist, double positive frequencies, zero negative ones.
    full = np.zeros(nfft, dtype=np.complex128)
    half = nfft // 2
    full[0] = spec[0]
    full[1:half] = 2.0 * spec[1:half]
    full[half] = spec[half]
    analytic = np.fft.ifft(full)[: n - m + 1]
    return analytic.real.copy(), np.abs(analytic)


def find_onset(
    recording,
    sweep,
    search_samples: "int | None" = None,
    first_peak_fraction: float = 0.5,
) -> OnsetResult:
    """Direct-path onset of `sweep` in `recording` by matched filtering.

    recording: (C, N) or (N,) float; sweep: (S,) the emitted sweep at the recording's rate.
    search_samples: only onsets in [0, search_samples) are considered (None: all N - S + 1).
    first_peak_fraction: the onset is the first envelope peak reaching this fraction of the
    largest envelope value in the search range (1.0 gives the plain arg-max).

    Raises AudioError when the recording is shorter than the sweep or all-zero/non-finite.
    """
    x = _as_channels(recording)
    if not np.all(np.isfinite(x)):
        raise AudioError("recording holds non-finite samples")
    s = np.asarray(sweep, dtype=np.float64).reshape(-1)
    corr, env = matched_filter(x, s)
    if search_samples is not None:
        if search_samples < 1:
            raise ValueError(f"search_samples must be >= 1, got {search_samples}")
        corr, env = corr[:search_samples], env[:search_samples]
    top = float(env.max())
    if not top > 0:
        raise AudioError("recording is silent: the matched filter output is zero everywhere")
    if not 0 < first_peak_fraction <= 1:
        raise ValueError(f"first_peak_fraction must be in (0, 1], got {first_peak_fraction}")
    k = int(np.argmax(env >= first_peak_fraction * top))
    while k + 1 < env.shape[0] and env[k + 1] >= env[k]:  # climb to the local peak
        k += 1
    m = s.shape[0]
    noise_lags = env[: max(k - m, 0)]
    noise = float(np.sqrt(np.mean(noise_lags**2))) if noise_lags.shape[0] >= 16 else float(np.median(env))
    snr_db = float(20.0 * np.log10(env[k] / max(noise, 1e-300)))
    seg = x[:, k : k + m].astype(np.float64)
    denom = float(np.linalg.norm(s) * np.linalg.norm(seg, axis=1).sum())
    # Envelope, not the raw correlation: phase-insensitive, and <= 1 by Cauchy-Schwarz because the
    # sweep and its Hilbert transform are orthogonal with equal norms.
    peak = min(float(env[k] / denom), 1.0) if denom > 0 else 0.0
    return OnsetResult(onset_sample=k, snr_db=snr_db, peak=peak)


def crop_echo(
    recording,
    max_depth_m: float,
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ,
    start: str = "file",
    onset_sample: "int | None" = None,
) -> np.ndarray:
    """Cut the echo window for max_depth_m -> float32 (C, echo_window_samples(max_depth_m, fs)).

    start="file": from sample 0 (the BatVision preprocessing; models trained on BatVision-layout
    buffers need it). start="onset": from onset_sample; when onset_sample is None it is detected
    with find_onset and the project's DEFAULT_SWEEP at sample_rate_hz.
    Never pads: raises AudioError when the recording holds fewer samples than the window needs.
    """
    x = _as_channels(recording)
    window = echo_window_samples(max_depth_m, sample_rate_hz)
    if start == "file":
        begin = 0
    elif start == "onset":
        if onset_sample is None:
            onset_sample = find_onset(x, make_sweep(sample_rate_hz=sample_rate_hz, **DEFAULT_SWEEP)).onset_sample
        begin = int(onset_sample)
        if begin < 0:
            raise ValueError(f"onset_sample must be >= 0, got {onset_sample}")
    else:
        raise ValueError(f"start must be 'file' or 'onset', got {start!r}")
    if x.shape[1] < begin + window:
        raise AudioError(
            f"recording of {x.shape[1]} samples is too short for a {window}-sample echo window "
            f"({max_depth_m} m at {sample_rate_hz} Hz) starting at sample {begin}"
        )
    return np.ascontiguousarray(x[:, begin : begin + window], dtype=np.float32)


def align_to_onset(recording, onset_sample: int, out_samples: int, onset_at: int = ECHO_ONSET_SAMPLE) -> np.ndarray:
    """Shift a recording so that its onset lands at onset_at -> float32 (C, out_samples).

    Returns recording[:, onset_sample - onset_at : onset_sample - onset_at + out_samples]. Never pads:
    raises AudioError when the recording starts too late (onset_sample < onset_at: record a longer
    pre-roll) or ends too early (fewer than out_samples samples from the new start).
    """
    x = _as_channels(recording)
    onset_sample, out_samples, onset_at = int(onset_sample), int(out_samples), int(onset_at)
    if out_samples < 1 or onset_at < 0:
        raise ValueError("out_samples must be >= 1 and onset_at >= 0")
    begin = onset_sample - onset_at
    if begin < 0:
        raise AudioError(
            f"onset at sample {onset_sample} is earlier than the target {onset_at}: the recording "
            f"lacks {-begin} samples of pre-roll"
        )
    if x.shape[1] < begin + out_samples:
        raise AudioError(
            f"recording of {x.shape[1]} samples ends {begin + out_samples - x.shape[1]} samples too early "
            f"for {out_samples} samples with the onset at {onset_at}"
        )
    return np.ascontiguousarray(x[:, begin : begin + out_samples], dtype=np.float32)
