"""Audio readers: encodings, channel order, the real BV2 wav (checked with the stdlib wave module), and each error."""
import struct
import wave

import numpy as np
import pytest
from scipy.io import wavfile

from avsnet_ros.audio import AudioError, read_bv1_npy, read_wav

N = 1000
LEFT = np.sin(np.linspace(0, 20, N))  # distinct channels so a swap would show
RIGHT = -0.5 * np.cos(np.linspace(0, 7, N))


def write_stereo(path, dtype, rate=44100):
    if dtype == np.int16:
        data = np.round(np.stack([LEFT, RIGHT], 1) * 32767).astype(np.int16)
    elif dtype == np.int32:
        data = np.round(np.stack([LEFT, RIGHT], 1) * (2**31 - 1)).astype(np.int32)
    else:
        data = np.stack([LEFT, RIGHT], 1).astype(dtype)
    wavfile.write(str(path), rate, data)
    return path


@pytest.mark.parametrize("dtype,tol", [(np.int16, 2.0 / 32768), (np.int32, 1e-7), (np.float32, 1e-7)])
def test_encodings_and_channel_order(tmp_path, dtype, tol):
    p = write_stereo(tmp_path / "x.wav", dtype)
    x, fs = read_wav(p)
    assert fs == 44100 and x.shape == (2, N) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], LEFT, atol=tol)  # row 0 = left = first channel in the file
    np.testing.assert_allclose(x[1], RIGHT, atol=tol)


def test_int16_full_scale(tmp_path):
    wavfile.write(str(tmp_path / "s.wav"), 44100, np.array([[-32768, 32767], [0, 16384]], np.int16))
    x, _ = read_wav(tmp_path / "s.wav")
    np.testing.assert_array_equal(x, np.array([[-1.0, 0.0], [32767 / 32768, 0.5]], np.float32))


def test_real_bv2_wav_against_stdlib_wave(bv2_sample_dir):
    path = bv2_sample_dir / "audio_47.wav"
    x, fs = read_wav(path)
    assert fs == 44100 and x.shape == (2, 20000) and x.dtype == np.float32
    with wave.open(str(path), "rb") as w:  # independent reader
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 4, 44100, 20000)
        raw = w.readframes(20000)
    ints = np.array(struct.unpack("<40000i", raw), dtype=np.float64).reshape(20000, 2).T
    np.testing.assert_allclose(x, ints / 2**31, rtol=0, atol=1e-9)
    assert np.abs(x).max() <= 1.0


def test_mono_allowed_when_asked(tmp_path):
    wavfile.write(str(tmp_path / "m.wav"), 16000, (LEFT * 1000).astype(np.int16))
    x, fs = read_wav(tmp_path / "m.wav", expected_rate_hz=None, channels=1)
    assert fs == 16000 and x.shape == (1, N)


def _raises_naming(path, fn, *args, match=None, **kwargs):
    with pytest.raises(AudioError, match=match) as info:
        fn(*args, **kwargs)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_wav_errors_name_the_file(tmp_path, bv2_sample_dir):
    p = write_stereo(tmp_path / "r48k.wav", np.int16, rate=48000)
    _raises_naming(p, read_wav, p, match="sample rate 48000")
    mono = tmp_path / "mono.wav"
    wavfile.write(str(mono), 44100, (LEFT * 1000).astype(np.int16))
    _raises_naming(mono, read_wav, mono, match="mono")
    empty = tmp_path / "empty.wav"
    wavfile.write(str(empty), 44100, np.zeros((0, 2), np.int16))
    _raises_naming(empty, read_wav, empty, match="empty")
    short = write_stereo(tmp_path / "short.wav", np.int16)
    _raises_naming(short, read_wav, short, min_samples=7782, match="too short")
    missing = tmp_path / "missing.wav"
    _raises_naming(missing, read_wav, missing, match="no such")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a RIFF file at all" * 10)
    _raises_naming(garbage, read_wav, garbage, match="not a readable wav")
    truncated = tmp_path / "truncated.wav"  # cut on a frame boundary: scipy alone would return 100 frames
    truncated.write_bytes((bv2_sample_dir / "audio_47.wav").read_bytes()[: 44 + 8 * 100])
    _raises_naming(truncated, read_wav, truncated, match="truncated")
    nan = tmp_path / "nan.wav"
    d = np.zeros((100, 2), np.float32)
    d[10, 1] = np.nan
    wavfile.write(str(nan), 44100, d)
    _raises_naming(nan, read_wav, nan, match="non-finite")
    quad = tmp_path / "quad.wav"
    wavfile.write(str(quad), 44100, np.zeros((100, 4), np.int16))
    _raises_naming(quad, read_wav, quad, match="4-channel")


def test_bv1_npy(tmp_path):
    left, right = tmp_path / "l.npy", tmp_path / "r.npy"
    np.save(left, LEFT.astype(np.float32))
    np.save(right, RIGHT.astype(np.float32))
    x = read_bv1_npy(left, right)
    assert x.shape == (2, N) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], LEFT, atol=1e-7)
    np.testing.assert_allclose(x[1], RIGHT, atol=1e-7)
    np.save(left, np.array([-32768, 16384], np.int16))
    np.save(right, np.array([0, 32767], np.int16))
    np.testing.assert_array_equal(read_bv1_npy(left, right), [[-1.0, 0.5], [0.0, 32767 / 32768]])
    # raw magnitudes as the official BV1 loader (astype(float32) only)
    np.testing.assert_array_equal(read_bv1_npy(left, right, scale_integers=False), [[-32768, 16384], [0, 32767]])


def test_bv1_npy_errors(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, LEFT.astype(np.float32))
    shorter = tmp_path / "shorter.npy"
    np.save(shorter, LEFT[:500].astype(np.float32))
    with pytest.raises(AudioError, match="right") as info:
        read_bv1_npy(good, shorter)
    assert str(good) in str(info.value) and str(shorter) in str(info.value)
    missing = tmp_path / "missing.npy"
    _raises_naming(missing, read_bv1_npy, good, missing, match="no such")
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _raises_naming(pickled, read_bv1_npy, pickled, good, match="not a readable")
    twod = tmp_path / "twod.npy"
    np.save(twod, np.zeros((2, 100), np.float32))
    _raises_naming(twod, read_bv1_npy, good, twod, match="one channel")
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros(0, np.float32))
    _raises_naming(empty, read_bv1_npy, empty, good, match="empty")
    _raises_naming(good, read_bv1_npy, good, good, min_samples=3112, match="too short")
    nonfinite = tmp_path / "inf.npy"
    a = LEFT.astype(np.float32)
    a[3] = np.inf
    np.save(nonfinite, a)
    _raises_naming(nonfinite, read_bv1_npy, good, nonfinite, match="non-finite")
