"""Audio front-end: sweeps, echo alignment, the BatVision STFT and audio file readers (no ROS).

Audio layout everywhere: float32 (channels=2, samples), row 0 = left, row 1 = right, full scale 1.0,
44100 Hz by default, direct-path sweep onset at ECHO_ONSET_SAMPLE (see docs/ARCHITECTURE.md).
"""
from .align import (
    ECHO_ONSET_SAMPLE,
    OnsetResult,
    align_to_onset,
    crop_echo,
    echo_window_samples,
    find_onset,
    matched_filter,
)
from .io import AudioError, read_bv1_npy, read_wav, to_float32
from .spectrogram import HOP_LENGTH, N_FFT, WIN_LENGTH, batvision_stft, echo_to_spectrogram, resize_spectrogram
from .sweep import (BATVISION_SWEEP, BATVISION_WINDOW_SPEED_M_S, DEFAULT_SAMPLE_RATE_HZ, DEFAULT_SWEEP,
                    SPEED_OF_SOUND_M_S, make_sweep, sweep_samples)

__all__ = [
    "AudioError",
    "BATVISION_SWEEP",
    "BATVISION_WINDOW_SPEED_M_S",
    "DEFAULT_SAMPLE_RATE_HZ",
    "DEFAULT_SWEEP",
    "ECHO_ONSET_SAMPLE",
    "HOP_LENGTH",
    "N_FFT",
    "OnsetResult",
    "SPEED_OF_SOUND_M_S",
    "WIN_LENGTH",
    "align_to_onset",
    "batvision_stft",
    "crop_echo",
    "echo_to_spectrogram",
    "echo_window_samples",
    "find_onset",
    "make_sweep",
    "matched_filter",
    "read_bv1_npy",
    "read_wav",
    "resize_spectrogram",
    "sweep_samples",
    "to_float32",
]
