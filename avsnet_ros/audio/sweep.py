"""Sine-sweep (chirp) synthesis for the emitter and the synthetic world.

The phase law is exactly scipy.signal.chirp's: `make_sweep(..., method="linear")` equals
`scipy.signal.chirp(t, f0, duration_s, f1, method="linear")` and `method="exponential"` equals
scipy's `method="logarithmic"`, with t = arange(n) / sample_rate_hz and n = round(duration_s * fs),
before the fades. The fades are half Hann windows, so the sweep starts and ends at exactly 0.
"""
from __future__ import annotations

import numpy as np

__all__ = ["make_sweep", "DEFAULT_SWEEP", "BATVISION_SWEEP", "DEFAULT_SAMPLE_RATE_HZ", "SPEED_OF_SOUND_M_S",
           "BATVISION_WINDOW_SPEED_M_S", "sweep_samples"]

#: The echo contract's sample rate (BatVision V2's recordings, the models, the echo message).
DEFAULT_SAMPLE_RATE_HZ = 44100

#: Speed of sound in air at about 20 degC: physical geometry (simulated arrivals, the emitter's timing).
SPEED_OF_SOUND_M_S = 343.0

#: Not a physical value: the BatVision loader sizes its echo window as int((2 d / 340) * fs) (7782
#: samples for 30 m); audio.align.echo_window_samples keeps 340 so the windows match the dataset's.
BATVISION_WINDOW_SPEED_M_S = 340.0

#: Best matched-filter template for the sweep in the real BatVision V2 recordings (a 20 Hz - 20 kHz
#: chirp of undocumented length). Measured on assets/batvision_v2_sample/audio_47.wav, see
#: avsnet_ros.audio.align (module docstring): a 3 ms linear up-sweep puts the direct-path onset at
#: sample 287, next to ECHO_ONSET_SAMPLE = 288; long templates (10 ms) lock onto reflections.
BATVISION_SWEEP = dict(duration_s=0.003, f0_hz=20.0, f1_hz=20000.0, method="linear", fade_s=0.0002)

#: What the chirp emitter plays and what the synthetic world convolves (docs/ARCHITECTURE.md): the
#: BatVision sweep, so that our own recordings look like the dataset the models are trained on.
DEFAULT_SWEEP = dict(BATVISION_SWEEP)

_METHODS = {"linear": "linear", "exponential": "exponential", "logarithmic": "exponential"}


def sweep_samples(duration_s: float, sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ) -> int:
    """Number of samples of a sweep of duration_s seconds: round(duration_s * sample_rate_hz)."""
    return int(round(float(duration_s) * float(sample_rate_hz)))


def make_sweep(
    duration_s: float = 0.05,
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ,
    f0_hz: float = 20.0,
    f1_hz: float = 20000.0,
    method: str = "linear",
    fade_s: float = 0.002,
    amplitude: float = 1.0,
) -> np.ndarray:
    """Sine sweep from f0_hz to f1_hz -> float32 (samples,), samples = round(duration_s * fs).

    method: "linear" (instantaneous frequency f0 + (f1 - f0) t / T) or "exponential" (f0 (f1/f0)^(t/T),
    scipy's "logarithmic"; that name is accepted as an alias). Phase 0 at t = 0 (a cosine, as
    scipy.signal.chirp with phi=0). fade_s: length of each half-Hann fade (in and out), 0 for none;
    both fades together must fit in the sweep. amplitude: peak value (full scale = 1.0).

    Raises ValueError for non-positive duration, rate or frequencies (exponential), frequencies at or
    above Nyquist, an unknown method, or fades longer than half the sweep.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown sweep method {method!r}: use 'linear' or 'exponential'")
    kind = _METHODS[method]
    fs = float(sample_rate_hz)
    if fs <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    nyquist = fs / 2.0
    for name, f in (("f0_hz", f0_hz), ("f1_hz", f1_hz)):
        if not 0 <= f < nyquist:
            raise ValueError(f"{name}={f} must lie in [0, Nyquist={nyquist}) Hz")
    n = sweep_samples(duration_s, sample_rate_hz)
    if n < 2:
        raise ValueError(f"sweep of {duration_s} s at {sample_rate_hz} Hz has fewer than 2 samples")
    T = float(duration_s)
    t = np.arange(n, dtype=np.float64) / fs
    if kind == "linear":
        phase = 2.0 * np.pi * (f0_hz * t + 0.5 * (f1_hz - f0_hz) / T * t * t)
    else:
        if f0_hz <= 0 or f1_hz <= 0:
            raise ValueError("an exponential sweep needs f0_hz > 0 and f1_hz > 0")
        if f0_hz == f1_hz:
            phase = 2.0 * np.pi * f0_hz * t
        else:
            beta = T / np.log(f1_hz / f0_hz)
            phase = 2.0 * np.pi * beta * f0_hz * (np.power(f1_hz / f0_hz, t / T) - 1.0)
    y = np.cos(phase)
    n_fade = int(round(float(fade_s) * fs))
    if n_fade < 0:
        raise ValueError(f"fade_s must be >= 0, got {fade_s}")
    if 2 * n_fade > n:
        raise ValueError(f"fades of {fade_s} s each do not fit in a {duration_s} s sweep")
    if n_fade > 0:
        # Half Hann: 0 at the first sample, rising to just below 1 (the periodic Hann's first half).
        ramp = 0.5 * (1.0 - np.cos(np.pi * np.arange(n_fade) / n_fade))
        y[:n_fade] *= ramp
        y[n - n_fade:] *= ramp[::-1]
    return (float(amplitude) * y).astype(np.float32)
