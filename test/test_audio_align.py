"""Matched-filter onset, echo window and alignment: synthetic recordings with known delays and the real BV2 wav."""
import numpy as np
import pytest

from avsnet_ros.audio import (
    BATVISION_SWEEP,
    DEFAULT_SWEEP,
    ECHO_ONSET_SAMPLE,
    AudioError,
    align_to_onset,
    crop_echo,
    echo_window_samples,
    find_onset,
    make_sweep,
    matched_filter,
    read_wav,
)

FS = 44100


def synthetic_recording(onset, sweep, n=20000, echo_delay=600, echo_gain=0.3, noise=0.01, seed=0, gains=(0.5, 0.4)):
    """Stereo recording: direct sweep at `onset`, one echo `echo_delay` later, white noise."""
    rng = np.random.default_rng(seed)
    x = noise * rng.standard_normal((2, n))
    for ch, g in enumerate(gains):
        x[ch, onset : onset + sweep.size] += g * sweep
        e = onset + echo_delay + 7 * ch  # the echo reaches the two ears at slightly different times
        x[ch, e : e + sweep.size] += g * echo_gain * sweep
    return x.astype(np.float32)


def test_echo_window_samples():
    assert echo_window_samples(30.0) == 7782  # BatVision BV2
    assert echo_window_samples(12.0) == 3112  # BatVision BV1
    assert echo_window_samples(30.0, 48000) == 8470  # int(8470.58...)
    with pytest.raises(ValueError):
        echo_window_samples(0.0)


def test_matched_filter_equals_direct_correlation():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3000))
    s = make_sweep(0.005, FS)
    corr, env = matched_filter(x, s)
    ref = np.correlate(x[0], s, mode="valid") + np.correlate(x[1], s, mode="valid")
    np.testing.assert_allclose(corr, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    assert np.all(env >= np.abs(corr) - 1e-9)


@pytest.mark.parametrize("method", ["linear", "exponential"])
@pytest.mark.parametrize("onset", [300, 1234, 5000])
def test_exact_onset_on_synthetic_recording(method, onset):
    s = make_sweep(0.01, FS, method=method)
    x = synthetic_recording(onset, s)
    r = find_onset(x, s)
    assert r.onset_sample == onset
    assert r.snr_db > 25.0
    assert 0.8 < r.peak <= 1.0  # window = scaled sweep + weak noise


def test_first_arrival_beats_a_louder_reflection():
    s = make_sweep(sample_rate_hz=FS, **DEFAULT_SWEEP)
    x = synthetic_recording(800, s, echo_delay=900, echo_gain=2.0)  # reflection twice as loud
    assert find_onset(x, s).onset_sample == 800
    assert find_onset(x, s, first_peak_fraction=1.0).onset_sample == 800 + 900  # plain arg-max
    # search_samples restricts the lags considered
    assert find_onset(x, s, search_samples=1000).onset_sample == 800


def test_mono_input_and_errors():
    s = make_sweep(0.01, FS)
    x = synthetic_recording(1000, s)
    assert find_onset(x[1], s).onset_sample == 1000
    with pytest.raises(AudioError):
        find_onset(np.zeros((2, 4000), np.float32), s)  # silent
    with pytest.raises(AudioError):
        find_onset(x[:, :100], s)  # shorter than the sweep
    bad = x.copy()
    bad[0, 5] = np.nan
    with pytest.raises(AudioError):
        find_onset(bad, s)


def test_real_batvision_onset_near_288(bv2_sample_dir):
    x, fs = read_wav(bv2_sample_dir / "audio_47.wav")
    bv = find_onset(x, make_sweep(sample_rate_hz=fs, **BATVISION_SWEEP))
    assert abs(bv.onset_sample - ECHO_ONSET_SAMPLE) <= 3, bv
    assert bv.snr_db > 40.0
    for ch in (0, 1):  # both ears agree
        assert abs(find_onset(x[ch], make_sweep(sample_rate_hz=fs, **BATVISION_SWEEP)).onset_sample - 288) <= 3
    # The finding documented in align.py: a long (10 ms) sweep does not describe these files, which is
    # why the emitter's DEFAULT_SWEEP is the BatVision one.
    assert DEFAULT_SWEEP == BATVISION_SWEEP
    long_sweep = find_onset(x, make_sweep(0.01, fs, 20.0, 20000.0, "linear"))
    assert abs(long_sweep.onset_sample - ECHO_ONSET_SAMPLE) > 30
    assert bv.peak > 2.0 * long_sweep.peak


def test_crop_echo_modes(bv2_sample_dir):
    x, fs = read_wav(bv2_sample_dir / "audio_47.wav")
    w = crop_echo(x, 30.0, fs, start="file")
    assert w.shape == (2, 7782) and w.dtype == np.float32
    np.testing.assert_array_equal(w, x[:, :7782])
    w = crop_echo(x, 12.0, fs, start="onset", onset_sample=287)
    np.testing.assert_array_equal(w, x[:, 287 : 287 + 3112])
    with pytest.raises(AudioError):
        crop_echo(x[:, :7000], 30.0, fs, start="file")  # never zero-padded
    with pytest.raises(AudioError):
        crop_echo(x, 30.0, fs, start="onset", onset_sample=20000 - 7000)
    with pytest.raises(ValueError):
        crop_echo(x, 30.0, fs, start="middle")
    # onset mode without an onset detects it with DEFAULT_SWEEP
    s = make_sweep(sample_rate_hz=FS, **DEFAULT_SWEEP)
    y = synthetic_recording(2000, s, n=12000)
    np.testing.assert_array_equal(crop_echo(y, 30.0, FS, start="onset"), y[:, 2000 : 2000 + 7782])


def test_align_to_onset():
    s = make_sweep(sample_rate_hz=FS, **DEFAULT_SWEEP)
    x = synthetic_recording(1500, s)
    onset = find_onset(x, s).onset_sample
    a = align_to_onset(x, onset, 9000)
    assert a.shape == (2, 9000)
    np.testing.assert_array_equal(a, x[:, 1500 - 288 : 1500 - 288 + 9000])
    assert find_onset(a, s).onset_sample == ECHO_ONSET_SAMPLE
    assert align_to_onset(x, onset, 100, onset_at=0)[0, 0] == x[0, 1500]
    with pytest.raises(AudioError):
        align_to_onset(x, onset, 20000)  # not enough samples after the onset: no silent padding
    with pytest.raises(AudioError):
        align_to_onset(x, 100, 5000)  # onset earlier than 288: missing pre-roll


def test_band_limited_recording_still_aligns():
    """A loudspeaker/microphone pass band (zero-phase, so the true onset is unchanged) and reverb-like noise."""
    from scipy.signal import butter, sosfiltfilt

    s = make_sweep(sample_rate_hz=FS, **DEFAULT_SWEEP)
    x = synthetic_recording(700, s, noise=0.0, echo_gain=0.8, echo_delay=250)
    sos = butter(4, [300.0, 8000.0], btype="bandpass", fs=FS, output="sos")
    x = sosfiltfilt(sos, x, axis=1) + 0.02 * np.random.default_rng(3).standard_normal(x.shape)
    r = find_onset(x, s)
    assert abs(r.onset_sample - 700) <= 2, r
