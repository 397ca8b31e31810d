"""BatVision STFT against an independent numpy reference (written here), and on the real BV2 wav."""
import cv2
import numpy as np
import pytest
import torch

from avsnet_ros.audio import (
    HOP_LENGTH,
    N_FFT,
    WIN_LENGTH,
    AudioError,
    batvision_stft,
    crop_echo,
    echo_to_spectrogram,
    read_wav,
    resize_spectrogram,
)


def reference_stft(x: np.ndarray) -> np.ndarray:
    """numpy magnitude STFT of one channel, spelled out: n_fft 512, periodic Hann(64) centred in the
    512-sample frame, hop 16, reflect padding of 256 at both ends, power 1 -> (257, N // 16 + 1)."""
    n_fft, win, hop = 512, 64, 16
    k = np.arange(win)
    hann64 = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / win)  # periodic: denominator 64, not 63
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = hann64
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] for i in range(n_frames)])
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def assert_close_rel(ours: np.ndarray, ref: np.ndarray, rel=1e-4):
    """Element-wise within rel of the value, with a floor of rel * max for near-zero bins."""
    np.testing.assert_allclose(ours, ref, rtol=rel, atol=rel * np.abs(ref).max())


def test_constants():
    assert (N_FFT, WIN_LENGTH, HOP_LENGTH) == (512, 64, 16)


def test_batched_random_against_reference():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal((3, 2, 3001)).astype(np.float32)
    spec = batvision_stft(torch.from_numpy(wave))
    assert spec.shape == (3, 2, 257, 3001 // 16 + 1) and spec.dtype == torch.float32
    for b in range(3):
        for c in range(2):
            assert_close_rel(spec[b, c].numpy(), reference_stft(wave[b, c]))
    # (2, N) input gets a batch axis; float64 stays float64 and matches tighter
    s64 = batvision_stft(torch.from_numpy(wave[1].astype(np.float64)))
    assert s64.shape == (1, 2, 257, 188) and s64.dtype == torch.float64
    np.testing.assert_allclose(s64[0, 0].numpy(), reference_stft(wave[1, 0]), rtol=1e-9, atol=1e-9)


def test_real_fixture_wav(bv2_sample_dir):
    x, fs = read_wav(bv2_sample_dir / "audio_47.wav")
    w = crop_echo(x, 30.0, fs, start="file")  # 7782 samples, the BatVision preprocessing
    spec = batvision_stft(torch.from_numpy(w)[None])
    assert spec.shape == (1, 2, 257, 487)
    assert torch.isfinite(spec).all() and spec.min() >= 0
    for c in range(2):
        assert_close_rel(spec[0, c].numpy(), reference_stft(w[c]))
    # The direct sweep near sample 288 shows up: frames around 288 // 16 = 18 hold far more energy
    # than the pre-onset frames (the first ~250 samples are noise).
    energy = spec[0].pow(2).sum(dim=(0, 1))
    assert energy[18:24].mean() > 100 * energy[2:8].mean()


def test_resize_against_opencv_bilinear():
    rng = np.random.default_rng(2)
    spec = torch.from_numpy(rng.random((2, 2, 257, 487)).astype(np.float32))
    out = resize_spectrogram(spec, (128, 256))
    assert out.shape == (2, 2, 128, 256)
    # OpenCV INTER_LINEAR = half-pixel centres, no antialias = torch bilinear align_corners=False.
    ref = cv2.resize(spec[1, 0].numpy(), (256, 128), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out[1, 0].numpy(), ref, rtol=1e-4, atol=1e-5)
    up = resize_spectrogram(spec, (300, 600))
    ref = cv2.resize(spec[0, 1].numpy(), (600, 300), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(up[0, 1].numpy(), ref, rtol=1e-4, atol=1e-5)


def test_echo_to_spectrogram_composes():
    rng = np.random.default_rng(3)
    wave = torch.from_numpy(rng.standard_normal((2, 2, 7782)).astype(np.float32))
    out = echo_to_spectrogram(wave, (64, 128))
    assert out.shape == (2, 2, 64, 128)
    torch.testing.assert_close(out, resize_spectrogram(batvision_stft(wave), (64, 128)))


def test_too_short_and_bad_rank():
    with pytest.raises(AudioError):
        batvision_stft(torch.zeros(1, 2, 200))
    with pytest.raises(ValueError):
        batvision_stft(torch.zeros(7782))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    wave = torch.from_numpy(rng.standard_normal((4, 2, 7782)).astype(np.float32))
    cpu = batvision_stft(wave)
    gpu = batvision_stft(wave.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4 * float(cpu.max()))
    out = echo_to_spectrogram(wave.cuda(), (256, 512))
    assert out.device.type == "cuda" and out.shape == (4, 2, 256, 512)


@pytest.mark.parametrize("n", [257, 300, 7782, 20000])
def test_matches_torch_stft_the_official_call(n):
    """batvision_stft (one matrix product over the 64 windowed samples) equals the baseline's
    torch.stft call (512-point FFTs, Hann(64) zero-padded to 512, centred reflect padding), at the
    shortest allowed length, lengths that are not multiples of the hop, and the real 20000 samples."""
    wave = torch.from_numpy(np.random.default_rng(n).standard_normal((2, 2, n)).astype(np.float32))
    ref = torch.stft(wave.reshape(4, n), n_fft=512, hop_length=16, win_length=64,
                     window=torch.hann_window(64, periodic=True), center=True, pad_mode="reflect",
                     normalized=False, onesided=True, return_complex=True).abs().reshape(2, 2, 257, -1)
    ours = batvision_stft(wave)
    assert ours.shape == ref.shape == (2, 2, 257, n // 16 + 1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.max()))
    ours64 = batvision_stft(wave.double())
    assert ours64.dtype == torch.float64
    ref64 = torch.stft(wave.double().reshape(4, n), n_fft=512, hop_length=16, win_length=64,
                       window=torch.hann_window(64, periodic=True, dtype=torch.float64), center=True,
                       pad_mode="reflect", return_complex=True).abs().reshape(2, 2, 257, -1)
    torch.testing.assert_close(ours64, ref64, rtol=1e-9, atol=1e-9 * float(ref64.max()))
