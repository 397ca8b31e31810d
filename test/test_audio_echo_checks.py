"""avsnet_ros.audio.echo_checks on the real BV2 echo: silence and clipping are measured on the
window the model reads (issue 10 item 5), compared with hand-counted fractions."""
from __future__ import annotations

import numpy as np
import pytest

from avsnet_ros.audio.echo_checks import (EchoCheckConfig, EchoFault, check_echo, clipped_fraction,
                                          onset_templates)
from ros_support import FIXTURE

RATE_HZ = 44100
WINDOW = int(2 * 30.0 / 340.0 * RATE_HZ)  # BatVision echo window for 30 m, by hand: 7782 samples


@pytest.fixture(scope="module")
def echo():
    from avsnet_ros.audio import read_wav

    buf, rate = read_wav(FIXTURE / "audio_47.wav")
    assert rate == RATE_HZ and buf.shape == (2, 20000)
    assert np.abs(buf).max() < 0.999  # the recording itself is not clipped
    return buf


@pytest.fixture(scope="module")
def templates():
    return onset_templates(RATE_HZ)


def _check(buf, templates, start=0, **config):
    return check_echo(buf, window_start_sample=start, window_samples=WINDOW, templates=templates,
                      config=EchoCheckConfig(**config))


def test_window_is_the_pipelines(tiny_checkpoints):
    from avsnet_ros.pipeline import DepthPipeline

    assert WINDOW == 7782
    ckpt = tiny_checkpoints
    pipe = DepthPipeline.from_checkpoints(ckpt["avs"], ckpt["rel"], device="cpu")
    assert pipe.min_echo_samples() == WINDOW and pipe.avs_config.audio_crop == "file"


def test_clean_echo_passes(echo, templates):
    assert _check(echo, templates) is None


def test_clipping_in_the_window_is_rejected_though_the_buffer_average_is_low(echo, templates):
    clipped = echo.copy()
    n = round(0.094 * 2 * WINDOW)  # 1463 samples: 9.4 % of the window's samples
    left = n // 2 + 1
    clipped[0, 3000:3000 + left] = 1.0
    clipped[1, 3000:3000 + n - left] = -1.0
    assert clipped_fraction(clipped[:, :WINDOW]) == pytest.approx(1463 / 15564, abs=1e-12)
    assert clipped_fraction(clipped) == pytest.approx(1463 / 40000, abs=1e-12)  # 3.66 %: whole buffer passes 5 %
    problem = _check(clipped, templates, max_clipped_fraction=0.05)
    assert problem is not None and problem.fault is EchoFault.CLIPPED and problem.reason == "echo_clipped"
    assert "9.4 %" in problem.detail
    # the same clipped samples after the window are samples the model never reads
    outside = echo.copy()
    outside[:, WINDOW + 100:WINDOW + 100 + 4000] = 1.0  # 20 % of the buffer
    assert _check(outside, templates) is None


def test_window_start_follows_the_onset_crop(echo, templates):
    """With the "onset" crop the model reads [288, 288 + 7782): clipping just past sample 7782 is inside."""
    buf = echo.copy()
    buf[:, WINDOW:WINDOW + 280] = 1.0  # 560 of 15564 window samples = 3.6 %
    assert _check(buf, templates, start=0, max_clipped_fraction=0.03) is None
    problem = _check(buf, templates, start=288, max_clipped_fraction=0.03)
    assert problem is not None and problem.fault is EchoFault.CLIPPED


def test_silence_in_the_window(echo, templates):
    silent_window = echo.copy()
    silent_window[:, :WINDOW] = 0.0  # sound only after the samples the model reads
    problem = _check(silent_window, templates)
    assert problem is not None and problem.reason == "echo_silent"
    problem = _check(np.zeros_like(echo), templates)
    assert problem is not None and problem.reason == "echo_silent"
    # a quiet but not silent echo (-60 dB) is not silence
    assert _check(echo * 1e-3, templates) is None


def test_onset_and_length(echo, templates):
    problem = _check(np.ascontiguousarray(echo[:, 150:]), templates)  # onset moved to ~138
    assert problem is not None and problem.fault is EchoFault.ONSET
    assert _check(np.ascontiguousarray(echo[:, 150:]), templates, onset_check=False) is None
    problem = _check(np.ascontiguousarray(echo[:, :WINDOW - 1]), templates)
    assert problem is not None and problem.reason == "echo_length"
    with pytest.raises(ValueError):
        _check(echo, templates, start=-1)
