"""Rig-independent echo front-end: deconvolve by the emitted sweep, normalise, re-render canonically.

A recording is the emitted sweep s convolved with the room's impulse response h (speaker, room and
microphones together), times the rig's gain, plus noise. Models that read a magnitude STFT of the
raw recording learn the sweep's time-frequency picture and the gain along with the room (a 30 ms
exponential sweep or a -30 dBFS recording looks like another room to them). This module removes both:

1. **Deconvolution** (swept-sine measurement): H = X S* / (|S|^2 + eps), a regularised inverse (Wiener
   with a flat noise floor eps = `regularisation` x the mean of |S|^2 over the sweep's band), so
   frequencies the sweep never excited are damped instead of divided by ~0.
2. **Direct-path normalisation**: the direct sound (speaker -> microphone, 5-15 cm) depends only on
   the rig, never on the room. Its level is read from the envelope of the impulse response band-limited
   by the canonical sweep (the first envelope peak reaching half the largest one, as align.find_onset),
   per channel, so the recording gain and the two microphones' gains cancel.
3. **Canonical re-rendering**: H x C (C = the canonical sweep, DEFAULT_SWEEP = BatVision's 3 ms
   linear sweep) is what the canonical sweep would have recorded; it is shifted so that the direct
   path lands at ECHO_ONSET_SAMPLE and scaled so that the direct sweep peaks at CANONICAL_PEAK
   (about the level of the synthetic world and of the real BatVision V2 sample). BatVision-format
   models keep their input layout.

When the sweep is not known (a dataset or bag without a description, an old emitter),
`identify_sweep` tries a grid of 20 Hz - 20 kHz sweeps (1-100 ms, linear and exponential) and keeps
the one whose deconvolved direct path is the most compact (`direct_quality`): deconvolving by the
right sweep collapses the direct sound into one short pulse; a wrong sweep leaves a residual chirp
spread over the length difference. The same measure detects a mismatch between the announced sweep
and the recording: its quality falls far below the best identified sweep's (`FrontEndResult.match`
below MIN_SWEEP_MATCH); no sweep at all explains a recording below MIN_DIRECT_QUALITY.

Echo layout (in and out): float (2, N), row 0 = left, full scale 1.0, direct path near
ECHO_ONSET_SAMPLE. All times in samples at the sweep's sample rate.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Optional, Sequence

import numpy as np
from scipy import fft as sfft

from .align import ECHO_ONSET_SAMPLE
from .io import AudioError
from .sweep import DEFAULT_SAMPLE_RATE_HZ, DEFAULT_SWEEP, make_sweep

__all__ = [
    "CANONICAL_PEAK",
    "MIN_DIRECT_QUALITY",
    "MIN_SWEEP_MATCH",
    "GOOD_DIRECT_QUALITY",
    "FRONTEND_MODES",
    "SweepSpec",
    "CANONICAL_SWEEP",
    "FrontEndResult",
    "deconvolve_spectrum",
    "direct_quality",
    "identify_sweep",
    "candidate_sweeps",
    "rerender",
    "EchoFrontEnd",
]

#: Peak of the re-rendered direct-path sweep (full scale 1.0): the synthetic world's level (~0.5) and
#: below the real BatVision V2 sample's 0.75, so re-rendered echoes sit where the models were trained.
CANONICAL_PEAK = 0.5
#: Below this direct-path compactness no sweep explains the recording (module docstring): not an echo
#: of a sweep. Measured on simulated rooms (test/test_audio_frontend.py): the played sweep gives
#: 0.9-1.0, a length off by 3x or more 0.03-0.3; a similar sweep (3 ms linear vs 3 ms exponential)
#: 0.7-0.8, which re-renders nearly as well. The real BatVision V2 recording gives 0.28 with its own
#: 3 ms sweep and at most 0.39 with any (its loudspeaker and microphones ring for ~1 ms): absolute
#: compactness alone cannot tell a ringing rig from a wrong sweep, hence the relative MIN_SWEEP_MATCH.
MIN_DIRECT_QUALITY = 0.2
#: An announced sweep whose quality is below this fraction of the best identified sweep's does not
#: describe the recording (FrontEndResult.match): the sweep was changed without announcing it.
MIN_SWEEP_MATCH = 0.5
#: An announced sweep this compact is taken as right without comparing (simulated rooms: 0.9-1.0).
GOOD_DIRECT_QUALITY = 0.8
#: "rerender": this module; "raw": the recording as it is (models trained before the front-end).
FRONTEND_MODES = ("raw", "rerender")

# Direct-path windows (samples at 44.1 kHz, scaled with the rate): the pulse (+-0.36 ms) against the
# region around it (-1.5 ms .. +7 ms): room reflections come >= ~1 ms later and are 10-100x weaker.
_PULSE_HALF_S = 0.00036
_REGION_BEFORE_S = 0.0015
_REGION_AFTER_S = 0.007
#: How far after ECHO_ONSET_SAMPLE the direct path is searched for (a misaligned buffer is still found).
_SEARCH_AFTER_S = 0.012
_FIRST_PEAK_FRACTION = 0.5


@dataclass(frozen=True)
class SweepSpec:
    """What a chirp emitter plays: avsnet_ros.audio.make_sweep's arguments (amplitude excluded).

    Text form (a dataset CSV's `sweep` column, a bag's or dataset's sweep description, the emitter's
    `avsnet/chirp` topic): "method=linear;f0_hz=20;f1_hz=20000;duration_s=0.003;fade_s=0.0002;
    sample_rate_hz=44100" (keys in any order; missing keys take DEFAULT_SWEEP's values).
    """

    duration_s: float = float(DEFAULT_SWEEP["duration_s"])
    f0_hz: float = float(DEFAULT_SWEEP["f0_hz"])
    f1_hz: float = float(DEFAULT_SWEEP["f1_hz"])
    method: str = str(DEFAULT_SWEEP["method"])
    fade_s: float = float(DEFAULT_SWEEP["fade_s"])
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ

    def __post_init__(self):
        method = "exponential" if self.method == "logarithmic" else self.method
        object.__setattr__(self, "method", method)
        self.waveform()  # validates (ValueError with make_sweep's message)

    def waveform(self) -> np.ndarray:
        """float32 (samples,), peak 1: make_sweep(**self)."""
        return _waveform(self)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        d = self.to_dict()
        return ";".join(f"{k}={_fmt(v)}" for k, v in d.items())

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown sweep description key(s) {unknown}; known: {sorted(known)}")
        kw = {}
        for k, v in d.items():
            kw[k] = str(v) if k == "method" else (int(float(v)) if k == "sample_rate_hz" else float(v))
        return cls(**kw)

    @classmethod
    def from_text(cls, text: str) -> "SweepSpec":
        """Parse to_text()'s form; raises ValueError naming the bad part."""
        d = {}
        for part in str(text).strip().split(";"):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"bad sweep description part {part!r} (want key=value) in {text!r}")
            k, v = part.split("=", 1)
            d[k.strip()] = v.strip()
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad sweep description {text!r}: {exc}") from None


def _fmt(v) -> str:
    return f"{v:.9g}" if isinstance(v, float) else str(v)


_wave_cache: "dict[SweepSpec, np.ndarray]" = {}


def _waveform(spec: SweepSpec) -> np.ndarray:
    w = _wave_cache.get(spec)
    if w is None:
        w = make_sweep(duration_s=spec.duration_s, sample_rate_hz=spec.sample_rate_hz, f0_hz=spec.f0_hz,
                       f1_hz=spec.f1_hz, method=spec.method, fade_s=spec.fade_s)
        if len(_wave_cache) > 256:
            _wave_cache.clear()
        _wave_cache[spec] = w
    return w


@functools.lru_cache(maxsize=64)
def _sweep_spectrum(spec: SweepSpec, nfft: int) -> np.ndarray:
    """rfft of spec's waveform (float64) zero-padded to nfft; cached, as a stream from one rig asks for the
    same (sweep, buffer length) on every echo (read-only: callers must not write into it)."""
    f = sfft.rfft(_waveform(spec).astype(np.float64), nfft)
    f.setflags(write=False)
    return f


#: The sweep every re-rendered echo is expressed in: what BatVision V2 plays (sweep.DEFAULT_SWEEP).
CANONICAL_SWEEP = SweepSpec()


@dataclass(frozen=True)
class FrontEndResult:
    """One echo through the front-end.

    echo: float32 (2, N) re-rendered (or the input itself in "raw" mode).
    sweep: the sweep used for deconvolution (announced or identified); None in "raw" mode.
    identified: True when the sweep was found by identify_sweep (not announced).
    quality: direct-path compactness in [0, 1] (mean over channels); 1.0 in "raw" mode.
    direct_level: (2,) the recording's peak over the direct-path sweep (full scale 1.0): the rig's level.
    direct_sample: where the direct path was found in the input (samples).
    match: for an announced sweep, its quality over the best identified sweep's (capped at 1; 1 when
        the announced sweep is GOOD_DIRECT_QUALITY compact, when identified, and in "raw" mode).
        Below MIN_SWEEP_MATCH the announcement does not describe the recording.
    derived: model inputs a pipeline computed from this echo once, kept for later calls given this result
        (DepthPipeline.attach_spectrogram: the spectrogram at its input size, keyed by what it depends on).
    """

    echo: np.ndarray
    sweep: Optional[SweepSpec]
    identified: bool
    quality: float
    direct_level: np.ndarray = field(default_factory=lambda: np.ones(2))
    direct_sample: int = ECHO_ONSET_SAMPLE
    match: float = 1.0
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def level_dbfs(self) -> float:
        """20 log10 of the louder channel's direct-path level (-inf for silence)."""
        peak = float(np.max(self.direct_level))
        return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def _analytic_envelope(x: np.ndarray) -> np.ndarray:
    """|analytic signal| of real (C, N) along the last axis (scipy.signal.hilbert's rule)."""
    n = x.shape[-1]
    spec = sfft.fft(x, axis=-1)
    h = np.zeros(n)
    h[0] = 1.0
    if n % 2 == 0:
        h[n // 2] = 1.0
        h[1: n // 2] = 2.0
    else:
        h[1: (n + 1) // 2] = 2.0
    return np.abs(sfft.ifft(spec * h, axis=-1))


def _band_mask(nfft: int, sample_rate_hz: float, f0_hz: float, f1_hz: float) -> np.ndarray:
    f = np.arange(nfft // 2 + 1) * (sample_rate_hz / nfft)
    return (f >= max(f0_hz, 0.0)) & (f <= f1_hz)


def deconvolve_spectrum(recording: np.ndarray, sweep: np.ndarray, nfft: int, *, band_hz=None,
                        sample_rate_hz: float = DEFAULT_SAMPLE_RATE_HZ, regularisation: float = 1e-3,
                        noise_to_signal: float = 0.0) -> np.ndarray:
    """Regularised inverse: rfft of the impulse response, complex (C, nfft // 2 + 1).

    recording (C, N), sweep (S,) (or its rfft at nfft, complex (nfft // 2 + 1,)); nfft >= N + S avoids circular
    wrap. H = X S* / (|S|^2 + eps) with
    eps = max(regularisation x the mean of |S|^2 over band_hz (f0, f1) (the whole spectrum when None),
    noise_to_signal x N): the Wiener term for white noise of variance noise_to_signal x a^2 under a
    direct path of amplitude a (E|N(f)|^2 = N sigma^2 for an unnormalised FFT of N samples).
    """
    x = sfft.rfft(np.asarray(recording, dtype=np.float64), nfft, axis=-1)
    s = sweep if np.iscomplexobj(sweep) else sfft.rfft(np.asarray(sweep, dtype=np.float64), nfft)
    power = s.real ** 2 + s.imag ** 2
    if band_hz is not None:
        mask = _band_mask(nfft, sample_rate_hz, band_hz[0], band_hz[1])
        ref = float(np.mean(power[mask])) if mask.any() else float(np.mean(power))
    else:
        ref = float(np.mean(power))
    n = np.asarray(recording).shape[-1]
    eps = max(regularisation * ref, float(noise_to_signal) * n, 1e-30)
    return x * (np.conj(s) / (power + eps))


def _direct_path(env: np.ndarray, sample_rate_hz: float, expected: int) -> "tuple[int, np.ndarray, float]":
    """First envelope peak of the channel sum near `expected` -> (index, per-channel peak, quality)."""
    fs = float(sample_rate_hz)
    total = env.sum(axis=0)
    stop = min(total.shape[0], expected + int(_SEARCH_AFTER_S * fs))
    head = total[:stop]
    if head.size == 0 or not np.any(head > 0):
        return expected, np.zeros(env.shape[0]), 0.0
    top = float(head.max())
    above = np.flatnonzero(head >= _FIRST_PEAK_FRACTION * top)
    i = int(above[0])
    half = max(1, int(round(_PULSE_HALF_S * fs)))
    # Walk up to the local maximum of this first arrival (within the pulse half-width).
    i = i + int(np.argmax(head[i: i + half + 1]))
    peaks = env[:, max(0, i - 2): i + 3].max(axis=1)
    lo, hi = max(0, i - int(_REGION_BEFORE_S * fs)), min(total.shape[0], i + int(_REGION_AFTER_S * fs))
    e = env ** 2
    pulse = e[:, max(0, i - half): i + half + 1].sum(axis=1)
    region = e[:, lo:hi].sum(axis=1)
    q = pulse / np.maximum(region, 1e-300)
    return i, peaks, float(np.mean(q))


def _noise_to_signal(echo: np.ndarray, sweep_samples: int, expected: int) -> float:
    """sigma^2 / a^2: the noise variance before the direct path (samples [0, expected - 48)) over the
    squared direct-path amplitude (the recording's peak over the direct sweep; the sweep peaks at 1).
    0 when the buffer has no noise-only lead-in (then only the flat floor regularises)."""
    lead = expected - 48
    if lead < 64 or echo.shape[-1] < expected + sweep_samples:
        return 0.0
    sigma2 = float(np.mean(echo[:, :lead] ** 2))
    a = float(np.max(np.abs(echo[:, lead: expected + sweep_samples + 48])))
    return sigma2 / (a * a) if a > 0 else 0.0


def _process(echo: np.ndarray, sweep: SweepSpec, canonical: SweepSpec, regularisation: float,
             render: bool, expected: int = ECHO_ONSET_SAMPLE):
    fs = float(sweep.sample_rate_hz)
    s = sweep.waveform()
    c = canonical.waveform()
    n = echo.shape[-1]
    nfft = sfft.next_fast_len(n + max(s.shape[0], c.shape[0]), real=True)
    h = deconvolve_spectrum(echo, _sweep_spectrum(sweep, nfft), nfft, band_hz=(sweep.f0_hz, sweep.f1_hz),
                            sample_rate_hz=fs, regularisation=regularisation,
                            noise_to_signal=_noise_to_signal(echo, s.shape[0], expected))
    cf = _sweep_spectrum(canonical, nfft)
    # The impulse response band-limited by the canonical sweep's power spectrum (zero phase): its
    # envelope peaks at each arrival with height amplitude x sum(c^2).
    g = sfft.irfft(h * (cf.real ** 2 + cf.imag ** 2), nfft, axis=-1)[:, :n]
    env = _analytic_envelope(g)
    i, peaks, quality = _direct_path(env, fs, expected)
    # The recording's own direct-path level (its peak over the direct sweep): the Wiener estimate
    # below shrinks with the SNR, this does not.
    level = np.max(np.abs(echo[:, max(0, i - 48): i + s.shape[0] + 48]), axis=1)
    if not render:
        return None, i, level, quality
    y = sfft.irfft(h * cf, nfft, axis=-1)
    shift = ECHO_ONSET_SAMPLE - i
    out = np.zeros((echo.shape[0], n))
    if shift >= 0:
        out[:, shift:] = y[:, : n - shift]
    else:
        out[:, : n + shift] = y[:, -shift: n]
    # Normalise by the direct path of the same (Wiener) estimate, so its frequency-dependent shrinkage
    # scales the direct path and the reflections alike: amplitude = envelope peak / sum(c^2).
    direct = peaks / float(np.sum(c.astype(np.float64) ** 2))
    gain = CANONICAL_PEAK / np.maximum(direct, 1e-12)
    out *= gain[:, None]
    return out.astype(np.float32), i, level, quality


def direct_quality(echo: np.ndarray, sweep: SweepSpec, *, regularisation: float = 1e-3) -> float:
    """Compactness of the direct path after deconvolution by `sweep` (0..1, see the module docstring)."""
    echo = _checked(echo)
    return _process(echo, sweep, CANONICAL_SWEEP, regularisation, render=False)[3]


def candidate_sweeps(sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ) -> "list[SweepSpec]":
    """The identification grid: 20 Hz - 20 kHz, 1-100 ms (about 12 % steps), linear and exponential,
    0.2 ms fades (a fade mismatch costs little compactness)."""
    durations = np.geomspace(0.001, 0.1, 41)
    out = []
    for d in durations:
        for method in ("linear", "exponential"):
            out.append(SweepSpec(duration_s=float(round(d, 6)), method=method, fade_s=0.0002,
                                 sample_rate_hz=int(sample_rate_hz)))
    return out


def identify_sweep(echo: np.ndarray, candidates: Optional[Sequence[SweepSpec]] = None, *,
                   regularisation: float = 1e-3,
                   sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ) -> "tuple[SweepSpec, float]":
    """The candidate sweep (default candidate_sweeps(), then refined) that best explains `echo` ->
    (sweep, quality).

    Only the head of the buffer (direct path and its region) is deconvolved, so a candidate costs
    one FFT of a few thousand samples.
    """
    echo = _checked(echo)
    refine = candidates is None
    if candidates is None:
        candidates = candidate_sweeps(sample_rate_hz)

    def search(cands):
        best, best_q = None, -1.0
        for cand in cands:
            fs = cand.sample_rate_hz
            head_n = ECHO_ONSET_SAMPLE + int((_SEARCH_AFTER_S + _REGION_AFTER_S) * fs) + cand.waveform().shape[0]
            q = _process(echo[:, :head_n], cand, CANONICAL_SWEEP, regularisation, render=False)[3]
            if q > best_q:
                best, best_q = cand, q
        return best, best_q

    best, best_q = search(candidates)
    if refine and best is not None:
        # The default grid's 12 % steps leave a residual chirp of up to 12 % of a long linear sweep's
        # length, which can make the other law look better on the grid: search +-20 % around the best
        # in 1 % steps, both laws.
        fine = [replace(best, duration_s=float(round(best.duration_s * f, 7)), method=m)
                for f in np.linspace(0.8, 1.2, 41) for m in ("linear", "exponential")]
        best2, q2 = search(fine)
        if q2 > best_q:
            best, best_q = best2, q2
    return best, float(best_q)


def _checked(echo) -> np.ndarray:
    x = np.asarray(echo)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise AudioError(f"echo must be (channels, samples), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise AudioError("echo holds NaN or infinite samples")
    return x.astype(np.float64, copy=False)


def rerender(echo: np.ndarray, sweep: SweepSpec, *, canonical: SweepSpec = CANONICAL_SWEEP,
             regularisation: float = 1e-3) -> FrontEndResult:
    """Deconvolve `echo` (2, N) by `sweep`, normalise by the direct path, render with `canonical`.

    Returns the re-rendered (2, N) float32 echo (direct path at ECHO_ONSET_SAMPLE peaking at
    CANONICAL_PEAK) with the quality and the recording's direct-path level. A silent channel gives a
    level of 0 and quality 0 (the caller's checks reject it); it never divides by zero.
    """
    x = _checked(echo)
    if sweep.sample_rate_hz != canonical.sample_rate_hz:
        raise AudioError(f"sweep at {sweep.sample_rate_hz} Hz but the canonical sweep is at "
                         f"{canonical.sample_rate_hz} Hz")
    out, i, level, quality = _process(x, sweep, canonical, regularisation, render=True)
    return FrontEndResult(echo=out, sweep=sweep, identified=False, quality=quality, direct_level=level,
                          direct_sample=i)


class EchoFrontEnd:
    """The front-end a pipeline or dataset applies to every echo (mode from the model's config).

    mode "raw": the echo unchanged (quality 1). mode "rerender": rerender() with the announced sweep,
    or, when none is announced, the sweep identified from the recording. Identification is sticky: the
    last identified sweep is tried first and the grid is searched again only when it is not clearly
    right (quality < GOOD_DIRECT_QUALITY), so a stream from one simulated-like rig pays for the grid
    once. A search whose best sweep is still below GOOD_DIRECT_QUALITY (a real rig that rings, or no
    sweep explains the recording) is not repeated for the next RETRY_AFTER echoes, which reuse its
    answer while its sweep explains them about as well as it explained the searched one (within a
    factor SKIP_TOLERANCE): the grid costs ~0.1 s and such a stream would otherwise pay it on every
    echo, while a changed input (a sweep after silence, another rig) is searched again at once.
    reset() forgets the identification (e.g. after a warm-up on a silent buffer).
    """

    RETRY_AFTER = 32
    SKIP_TOLERANCE = 0.7

    def __init__(self, mode: str = "rerender", *, regularisation: float = 1e-3,
                 sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ):
        if mode not in FRONTEND_MODES:
            raise ValueError(f"echo front-end mode must be one of {FRONTEND_MODES}, got {mode!r}")
        self.mode = mode
        self.regularisation = float(regularisation)
        self.canonical = replace(CANONICAL_SWEEP, sample_rate_hz=int(sample_rate_hz))
        self.reset()

    def reset(self) -> None:
        """Forget the sticky identification: the next unannounced echo searches the grid."""
        self._last_identified: Optional[SweepSpec] = None
        self._found_quality = -1.0  # the identified sweep's quality on the echo it was found on
        self._skip_searches = 0

    def identified(self, echo: np.ndarray, sticky_quality: Optional[float] = None) -> "tuple[SweepSpec, float]":
        """The sweep that best explains `echo` (sticky, see the class docstring) and its quality on it.
        sticky_quality: the last identified sweep's quality on `echo` when the caller has it already."""
        sweep = self._last_identified
        if sweep is None:
            q = -1.0
        elif sticky_quality is not None:
            q = float(sticky_quality)
        else:
            q = direct_quality(echo, sweep, regularisation=self.regularisation)
        similar = self.SKIP_TOLERANCE * self._found_quality <= q <= self._found_quality / self.SKIP_TOLERANCE
        if q >= GOOD_DIRECT_QUALITY:
            pass
        elif self._skip_searches > 0 and similar:
            self._skip_searches -= 1
        else:
            found, _ = identify_sweep(echo, regularisation=self.regularisation,
                                      sample_rate_hz=self.canonical.sample_rate_hz)
            # The grid ranks candidates on the buffer's head (fast); rank the winner and the canonical
            # sweep (BatVision's, the likeliest on BatVision-format data) on the whole buffer, the measure
            # every result reports: on a real rig that rings the head can prefer a sweep that explains the
            # whole recording worse (the BatVision sample: a 0.9 ms exponential, 0.17, vs its own 0.28).
            found_q = direct_quality(echo, found, regularisation=self.regularisation)
            canonical_q = direct_quality(echo, self.canonical, regularisation=self.regularisation)
            if canonical_q > found_q:
                found, found_q = self.canonical, canonical_q
            if found_q > q:
                sweep, q = found, found_q
            self._found_quality = q
            self._skip_searches = self.RETRY_AFTER if q < GOOD_DIRECT_QUALITY else 0
        self._last_identified = sweep
        return sweep, q

    def __call__(self, echo: np.ndarray, sweep: Optional[SweepSpec] = None) -> FrontEndResult:
        if self.mode == "raw":
            return FrontEndResult(echo=np.asarray(echo, dtype=np.float32), sweep=None, identified=False, quality=1.0)
        if sweep is None:
            # The last identified sweep usually explains this echo too: render with it once and let its
            # quality decide (rather than judging it, then rendering it again).
            last = self._last_identified
            result = None if last is None else rerender(echo, last, canonical=self.canonical,
                                                        regularisation=self.regularisation)
            best, _ = self.identified(echo, None if result is None else result.quality)
            if result is None or best != last:
                result = rerender(echo, best, canonical=self.canonical, regularisation=self.regularisation)
            return replace(result, identified=True)
        result = rerender(echo, sweep, canonical=self.canonical, regularisation=self.regularisation)
        if result.quality >= GOOD_DIRECT_QUALITY:
            return result
        # Not clearly the played sweep: compare with the sweep that explains the recording best (a real
        # rig's ringing lowers both alike; a wrong announcement only the announced one's).
        _, best_q = self.identified(echo, result.quality if sweep == self._last_identified else None)
        return replace(result, match=min(1.0, result.quality / max(best_q, 1e-9)))
