"""STFT front-end: avsnet_ros.audio.batvision_stft (torch) vs scipy.signal.stft, batch of 16 echoes.

Both compute the same magnitude spectrogram of the 30 m echo window (7782 samples, 2 channels):
Hann(64, periodic) frames every 16 samples centred on the sample, reflect-extended at the ends,
zero-padded to 512 (a circular shift of the zero-padded frame changes only the phase, so the
magnitudes agree). scipy divides by sum(window); the check below undoes that and asserts the two
agree, so the timing compares the same computation. Audio: the real BV2 recording, repeated with
different gains/shifts to fill the batch.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_util import environment, fixture_inputs, interleaved, main_for, paired_ratio, target  # noqa: E402

BATCH = 16


def scipy_stft_mag(x: np.ndarray) -> np.ndarray:
    """(B, 2, N) -> (B, 2, 257, T') magnitude with scipy, scaled like torch.stft (no 1/sum(w))."""
    from scipy.signal import get_window, stft

    win = get_window("hann", 64)  # periodic (fftbins=True), as torch.hann_window(periodic=True)
    _, _, z = stft(x, window=win, nperseg=64, noverlap=48, nfft=512, boundary="even", padded=True,
                   return_onesided=True, axis=-1)
    return np.abs(z) * win.sum()


def run(quick: bool = False) -> dict:
    import torch

    from avsnet_ros.audio import batvision_stft, echo_window_samples

    _, echo, rate = fixture_inputs()
    n = echo_window_samples(30.0, rate)
    rng = np.random.default_rng(0)
    batch = np.stack([np.roll(echo[:, : n + 64], int(s), axis=1)[:, :n] * g
                      for s, g in zip(rng.integers(0, 64, BATCH), rng.uniform(0.5, 1.5, BATCH))]).astype(np.float32)
    wave = torch.from_numpy(batch)

    # Same computation? Compare the frames both produce (scipy may append a zero-padded frame).
    ours = batvision_stft(wave).numpy()
    ref = scipy_stft_mag(batch.astype(np.float64))
    t_common = min(ours.shape[-1], ref.shape[-1]) - 1  # the last frame's right edge differs (zero pad vs reflect)
    max_rel = float(np.max(np.abs(ours[..., :t_common] - ref[..., :t_common])) / np.max(np.abs(ref)))
    if max_rel > 1e-4:
        raise AssertionError(f"scipy and torch STFT disagree ({max_rel:.2e}): "
                             "the benchmark would compare apples and pears")

    batch64 = batch.astype(np.float64)
    res = interleaved({"torch": lambda: batvision_stft(wave), "scipy32": lambda: scipy_stft_mag(batch),
                       "scipy64": lambda: scipy_stft_mag(batch64)}, rounds=8 if quick else 30, warmup=3)
    t_torch, t_scipy32, t_scipy64 = res["torch"], res["scipy32"], res["scipy64"]
    speedup = paired_ratio(res, "scipy32", "torch")
    result = {
        "name": "stft",
        "batch": BATCH,
        "samples": n,
        "spectrogram_shape": list(ours.shape),
        "max_rel_diff_vs_scipy": max_rel,
        "torch_batvision_stft": t_torch,
        "scipy_stft_float32": t_scipy32,
        "scipy_stft_float64": t_scipy64,
        "speedup_vs_scipy_float32": speedup,
        "environment": environment(),
        "targets": [target("STFT front-end speed-up vs scipy.signal.stft (batch 16)", speedup, None, ">=",
                           "x", f"torch {t_torch['median_ms']:.2f} ms vs scipy {t_scipy32['median_ms']:.2f} ms")],
    }
    return result


if __name__ == "__main__":
    raise SystemExit(main_for("stft", run))
