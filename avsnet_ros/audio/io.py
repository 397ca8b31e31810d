"""Reading echo recordings: BatVision V2 wav files and BatVision V1 per-channel .npy files.

Every reader returns the project's audio layout: float32 array (channels, samples), row 0 = left,
row 1 = right, full scale = 1.0 (see docs/ARCHITECTURE.md). Bad input raises `AudioError` whose
message names the file, never a silently wrong array.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .sweep import DEFAULT_SAMPLE_RATE_HZ

__all__ = ["AudioError", "read_wav", "read_bv1_npy", "to_float32"]


class AudioError(ValueError):
    """Unusable audio: wrong sample rate, channel count, length, encoding or contents.

    `path` is the offending file (or None for in-memory buffers); it is part of the message.
    """

    def __init__(self, message: str, path: "str | os.PathLike[str] | None" = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


def to_float32(samples: np.ndarray, path: "str | os.PathLike[str] | None" = None) -> np.ndarray:
    """Convert PCM/float samples to float32 with full scale = 1.0.

    int16 -> /32768, int32 -> /2**31 (scipy also returns 24-bit PCM left-justified in int32, so the
    same divisor is right), uint8 -> (x - 128)/128, float32/float64 kept as they are.
    Raises AudioError for other dtypes and for non-finite float samples.
    """
    a = np.asarray(samples)
    if a.dtype == np.int16:
        out = a.astype(np.float32) / np.float32(32768.0)
    elif a.dtype == np.int32:
        out = (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif a.dtype == np.uint8:
        out = (a.astype(np.float32) - np.float32(128.0)) / np.float32(128.0)
    elif a.dtype in (np.float32, np.float64, np.float16):
        out = a.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise AudioError(f"audio holds {int(np.size(out) - np.isfinite(out).sum())} non-finite samples", path)
    else:
        raise AudioError(f"unsupported sample type {a.dtype} (expected int16, int32, uint8 or float)", path)
    return out


def _check_length(n: int, min_samples: int, path) -> None:
    if n == 0:
        raise AudioError("audio is empty (0 samples)", path)
    if n < min_samples:
        raise AudioError(f"audio too short: {n} samples, need at least {min_samples}", path)


def read_wav(
    path: "str | os.PathLike[str]",
    expected_rate_hz: "int | None" = DEFAULT_SAMPLE_RATE_HZ,
    channels: "int | None" = 2,
    min_samples: int = 1,
) -> "tuple[np.ndarray, int]":
    """Read a PCM or float wav file -> (float32 array (channels, N) in [-1, 1], sample_rate_hz).

    The file's channel order is kept: BatVision V2 files are (left, right), which is the project's
    row 0 = left, row 1 = right. Supported encodings: int16, int32 (and 24-bit, which scipy returns
    left-justified in int32), uint8, float32/float64.

    expected_rate_hz: required sample rate (None accepts any). channels: required channel count
    (None accepts any; a mono file then comes back as (1, N)). min_samples: shortest acceptable
    length in frames.

    Raises AudioError (message names the file) when the file is missing, truncated or not a readable wav, the
    rate differs, the channel count differs (e.g. mono where stereo is needed), the audio is empty
    or shorter than min_samples, or float samples are non-finite.
    """
    from scipy.io import wavfile

    p = Path(path)
    if not p.is_file():
        raise AudioError("no such wav file", p)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate, data = wavfile.read(str(p), mmap=False)
    except Exception as exc:  # scipy raises ValueError/EOFError/struct.error on corrupt files
        raise AudioError(f"not a readable wav file ({type(exc).__name__}: {exc})", p) from exc
    for w in caught:
        # scipy only warns when the data ends before the header's size: a truncated file must not
        # pass as a shorter recording. Other warnings (unknown chunks such as LIST metadata) are harmless.
        if "EOF" in str(w.message) or "truncat" in str(w.message).lower():
            raise AudioError(f"truncated wav file ({w.message})", p)
    rate = int(rate)
    if expected_rate_hz is not None and rate != int(expected_rate_hz):
        raise AudioError(f"sample rate {rate} Hz, expected {int(expected_rate_hz)} Hz", p)
    data = np.asarray(data)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise AudioError(f"unexpected wav data shape {data.shape}", p)
    n_frames, n_ch = data.shape
    if channels is not None and n_ch != int(channels):
        kind = "mono" if n_ch == 1 else f"{n_ch}-channel"
        raise AudioError(f"{kind} audio, expected {int(channels)} channels", p)
    _check_length(n_frames, min_samples, p)
    audio = np.ascontiguousarray(to_float32(data, p).T)
    return audio, rate


def _load_npy_channel(path: "str | os.PathLike[str]") -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise AudioError("no such .npy audio file", p)
    try:
        a = np.load(str(p), allow_pickle=False)
    except Exception as exc:  # corrupt file, pickled object array, not an .npy
        raise AudioError(f"not a readable numeric .npy file ({type(exc).__name__}: {exc})", p) from exc
    a = np.asarray(a)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise AudioError(f"expected one channel (N,), got shape {a.shape}", p)
    return a


def read_bv1_npy(
    left_path: "str | os.PathLike[str]",
    right_path: "str | os.PathLike[str]",
    min_samples: int = 1,
    scale_integers: bool = True,
) -> np.ndarray:
    """Read a BatVision V1 echo stored as one .npy per channel -> float32 (2, N), row 0 = left.

    BV1 audio is 44100 Hz (the files carry no rate). Integer files are scaled to full scale 1.0
    when scale_integers (the project's convention); the official BV1 loader only does
    .astype(float32), so pass scale_integers=False to reproduce its raw magnitudes. Float files are
    kept as they are either way.

    Raises AudioError naming the file for a missing/corrupt/pickled file, a non-1-D array, empty or
    too-short audio, non-finite samples, and (naming both files) left/right length mismatch.
    """
    chans = []
    for path in (left_path, right_path):
        a = _load_npy_channel(path)
        _check_length(a.shape[0], min_samples, path)
        if np.issubdtype(a.dtype, np.integer) and not scale_integers:
            out = a.astype(np.float32)
        elif np.issubdtype(a.dtype, np.integer) and a.dtype not in (np.int16, np.int32, np.uint8):
            raise AudioError(f"unsupported integer sample type {a.dtype}", path)
        else:
            out = to_float32(a, path)
        chans.append(out)
    if chans[0].shape[0] != chans[1].shape[0]:
        raise AudioError(
            f"left has {chans[0].shape[0]} samples but right ({right_path}) has {chans[1].shape[0]}",
            left_path,
        )
    return np.ascontiguousarray(np.stack(chans, axis=0))
