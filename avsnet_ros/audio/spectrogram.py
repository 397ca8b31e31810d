"""The BatVision spectrogram front-end, in torch (CPU or GPU: the device of the input).

Exactly the official baseline (AmandineBtto/Batvision-Dataset, UNetSoundOnly, which calls
torchaudio.transforms.Spectrogram(n_fft=512, win_length=64, hop_length=16, power=1.0)): torch.stft
with torch.hann_window(64) (periodic=True, torch's and torchaudio's default), the 64-sample window
zero-padded to 512 in the middle of the frame (torch.stft's rule for win_length < n_fft), center=True
with reflect padding of n_fft // 2 samples, onesided, not normalised, magnitude (power 1).
Per channel -> (B, 2, 257, T) with T = N // 16 + 1 (487 for the 7782-sample 30 m window).

Computed as matrix products instead of torch.stft's 512-point FFTs: only the 64 windowed samples
of each frame are non-zero, and where they sit inside the 512-sample frame (offset 224) changes only
the phase, so the magnitude is |sum_k hann[k] x[16 t - 32 + k] exp(-2 pi i f k / 512)| over the
64 samples (reflect padding: the same samples torch.stft's centred reflect padding gives). The
periodic Hann window is symmetric about its centre k = 32 (hann[32 + m] = hann[32 - m], hann[0] = 0),
so with the phase taken about the centre (again magnitude-neutral) the sum folds into
    real = sum_{m=0}^{31} hann[32+m] (x[32+m] + x[32-m]) cos(2 pi f m / 512)   (the m = 0 term halved)
    imag = sum_{m=1}^{31} hann[32+m] (x[32+m] - x[32-m]) sin(2 pi f m / 512)
two products over 32 and 31 samples: half the multiply-adds of the plain 64-sample product. Equal to
torch.stft up to float rounding (test_audio_stft.py compares with scipy and torch.stft); on CPU
0.54 ms vs 0.8 ms for the plain product for a 30 m window pair (bench/bench_stft.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .io import AudioError

__all__ = ["N_FFT", "WIN_LENGTH", "HOP_LENGTH", "batvision_stft", "resize_spectrogram", "echo_to_spectrogram"]

N_FFT = 512
WIN_LENGTH = 64
HOP_LENGTH = 16

_basis_cache: "dict[tuple, torch.Tensor]" = {}


def _basis(device: torch.device, dtype: torch.dtype) -> "tuple[torch.Tensor, torch.Tensor]":
    """(32, 257) hann[32 + m] cos(2 pi f m / 512) (row m = 0 halved) and (31, 257) hann[32 + m]
    sin(2 pi f m / 512) for m = 1..31: the folded basis (module docstring); built in float64."""
    key = (str(device), dtype)
    basis = _basis_cache.get(key)
    if basis is None:
        half = WIN_LENGTH // 2
        m = torch.arange(half, dtype=torch.float64)
        f = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)
        window = torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float64)[half:]  # hann[32 + m]
        angle = (2.0 * math.pi / N_FFT) * m[:, None] * f[None, :]
        cos = torch.cos(angle) * window[:, None]
        cos[0] *= 0.5  # x[32] enters the folded sum twice (m = 0: x[32 + 0] + x[32 - 0])
        sin = (torch.sin(angle) * window[:, None])[1:]
        basis = (cos.to(device=device, dtype=dtype).contiguous(), sin.to(device=device, dtype=dtype).contiguous())
        _basis_cache[key] = basis
    return basis


def batvision_stft(wave: torch.Tensor) -> torch.Tensor:
    """Magnitude STFT per channel: wave (B, C, N) or (C, N) float -> (B, C, 257, N // 16 + 1).

    Float16/bfloat16 inputs are computed in float32; float64 stays float64. Raises AudioError when
    N <= n_fft // 2 (reflect padding needs more samples) and ValueError for a wrong rank.
    """
    if not isinstance(wave, torch.Tensor):
        wave = torch.as_tensor(wave)
    if wave.dim() == 2:
        wave = wave.unsqueeze(0)
    if wave.dim() != 3:
        raise ValueError(f"wave must be (B, C, N) or (C, N), got shape {tuple(wave.shape)}")
    b, c, n = wave.shape
    if n <= N_FFT // 2:
        raise AudioError(f"waveform of {n} samples is too short for the centred STFT (needs > {N_FFT // 2})")
    if wave.dtype != torch.float64:
        wave = wave.to(torch.float32)
    half = WIN_LENGTH // 2  # the window's first sample is 32 samples before the frame centre 16 t
    padded = F.pad(wave.reshape(b * c, 1, n), (half, half), mode="reflect")[:, 0]
    frames = padded.unfold(-1, WIN_LENGTH, HOP_LENGTH)  # (B*C, T, 64) views, T = N // 16 + 1
    behind = frames[..., 1:half + 1].flip(-1)  # x[32 - m], m = 0..31
    cos, sin = _basis(wave.device, wave.dtype)
    real = torch.matmul(frames[..., half:] + behind, cos)  # (B*C, T, 257)
    imag = torch.matmul(frames[..., half + 1:] - behind[..., 1:], sin)
    return torch.hypot(real, imag).transpose(1, 2).reshape(b, c, N_FFT // 2 + 1, -1)


def resize_spectrogram(spec: torch.Tensor, size_hw: "tuple[int, int]") -> torch.Tensor:
    """Bilinear resize (align_corners=False, no antialias) of (B, C, F, T) -> (B, C, H, W)."""
    if spec.dim() == 3:
        spec = spec.unsqueeze(0)
    if spec.dim() != 4:
        raise ValueError(f"spec must be (B, C, F, T), got shape {tuple(spec.shape)}")
    h, w = int(size_hw[0]), int(size_hw[1])
    if tuple(spec.shape[-2:]) == (h, w):
        return spec
    return F.interpolate(spec, size=(h, w), mode="bilinear", align_corners=False)


def echo_to_spectrogram(wave: torch.Tensor, size_hw: "tuple[int, int]") -> torch.Tensor:
    """wave (B, 2, N) (already cropped to the echo window) -> raw magnitude spectrogram (B, 2, H, W)."""
    return resize_spectrogram(batvision_stft(wave), size_hw)
