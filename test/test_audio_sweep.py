"""Sweep synthesis against scipy.signal.chirp (same phase law) and scipy's Hann window for the fades."""
import numpy as np
import pytest
from scipy.signal import chirp
from scipy.signal.windows import hann

from avsnet_ros.audio import DEFAULT_SWEEP, make_sweep

CASES = [
    # duration_s, sample_rate_hz, f0, f1, method, scipy method
    (0.01, 44100, 20.0, 20000.0, "linear", "linear"),
    (0.05, 44100, 20.0, 20000.0, "exponential", "logarithmic"),
    (0.0234, 48000, 100.0, 12000.0, "linear", "linear"),
    (0.2, 16000, 50.0, 7000.0, "exponential", "logarithmic"),
    (0.03, 44100, 15000.0, 500.0, "linear", "linear"),  # down-sweep
    (0.03, 44100, 18000.0, 200.0, "exponential", "logarithmic"),
]


@pytest.mark.parametrize("duration_s,fs,f0,f1,method,scipy_method", CASES)
def test_matches_scipy_chirp_away_from_fades(duration_s, fs, f0, f1, method, scipy_method):
    fade_s = 0.002
    y = make_sweep(duration_s, fs, f0, f1, method=method, fade_s=fade_s)
    n = int(round(duration_s * fs))
    assert y.shape == (n,) and y.dtype == np.float32
    t = np.arange(n) / fs
    ref = chirp(t, f0, duration_s, f1, method=scipy_method)
    nf = int(round(fade_s * fs))
    np.testing.assert_allclose(y[nf : n - nf], ref[nf : n - nf], rtol=0, atol=1e-6)


@pytest.mark.parametrize("duration_s,fs,f0,f1,method,scipy_method", CASES)
def test_fades_are_half_hann_windows(duration_s, fs, f0, f1, method, scipy_method):
    fade_s = 0.001
    y = make_sweep(duration_s, fs, f0, f1, method=method, fade_s=fade_s, amplitude=0.5)
    n = y.shape[0]
    nf = int(round(fade_s * fs))
    env = np.ones(n)
    rise = hann(2 * nf, sym=False)[:nf]  # periodic Hann, first half: 0 -> just below 1
    env[:nf] = rise
    env[n - nf :] = rise[::-1]
    ref = 0.5 * env * chirp(np.arange(n) / fs, f0, duration_s, f1, method=scipy_method)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    assert y[0] == 0.0 and y[-1] == 0.0
    assert np.abs(y).max() <= 0.5 + 1e-6


def test_no_fade_and_default_sweep():
    y = make_sweep(0.01, 44100, fade_s=0.0)
    np.testing.assert_allclose(y, chirp(np.arange(441) / 44100, 20.0, 0.01, 20000.0), atol=1e-6)
    assert DEFAULT_SWEEP == dict(duration_s=0.003, f0_hz=20.0, f1_hz=20000.0, method="linear", fade_s=0.0002)
    d = make_sweep(sample_rate_hz=44100, **DEFAULT_SWEEP)
    assert d.shape == (132,)
    # The sweep covers the band: its spectrum holds most energy between 20 Hz and 20 kHz.
    spec = np.abs(np.fft.rfft(d, 8192)) ** 2
    f = np.fft.rfftfreq(8192, 1 / 44100)
    assert spec[(f > 20) & (f < 20000)].sum() / spec.sum() > 0.98


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(method="cubic"),
        dict(f1_hz=22050.0),  # at Nyquist for 44.1 kHz
        dict(duration_s=0.003, fade_s=0.002),  # fades longer than the sweep
        dict(method="exponential", f0_hz=0.0),
        dict(duration_s=0.0),
        dict(sample_rate_hz=0),
    ],
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        make_sweep(**kwargs)
