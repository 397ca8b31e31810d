"""The BatVision spectrogram front-end, in torch (CPU or GPU: the device of the input).

Exactly the official baseline (AmandineBtto/Batvision-Dataset, UNetSoundOnly, which calls
torchaudio.transforms.Spectrogram(n_fft=512, win_length=64, hop_length=16, power=1.0)): torch.stft
with torch.hann_window(64) (periodic=True, torch's and torchaudio's default), the 64-sample window
zero-padded to 512 in the middle of the frame (torch.stft's rule for win_length < n_fft), center=True
with reflect padding of n_fft // 2 samples, onesided, not normalised, magnitude (power 1).
Per channel -> (B, 2, 257, T) with T = N // 16 + 1 (487 for the 7782-sample 30 m window).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .io import AudioError

__all__ = ["N_FFT", "WIN_LENGTH", "HOP_LENGTH", "batvision_stft", "resize_spectrogram", "echo_to_spectrogram"]

N_FFT = 512
WIN_LENGTH = 64
HOP_LENGTH = 16

_window_cache: "dict[tuple, torch.Tensor]" = {}


def _window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (str(device), dtype)
    w = _window_cache.get(key)
    if w is None:
        w = torch.hann_window(WIN_LENGTH, periodic=True, dtype=dtype, device=device)
        _window_cache[key] = w
    return w


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
    spec = torch.stft(
        wave.reshape(b * c, n),
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        window=_window(wave.device, wave.dtype),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return spec.abs().reshape(b, c, spec.shape[-2], spec.shape[-1])


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
