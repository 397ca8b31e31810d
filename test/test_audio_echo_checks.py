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


# ------------------------------------------------------------------------------------------------
# check_front_end: the "rerender" front-end's result (issue 12), on hand-made FrontEndResults
def _result(quality=0.9, level=0.3, direct_sample=288, identified=False, match=1.0):
    from avsnet_ros.audio.frontend import FrontEndResult, SweepSpec

    return FrontEndResult(echo=np.zeros((2, 10), np.float32), sweep=SweepSpec(), identified=identified,
                          quality=quality, direct_level=np.array([level, level / 2]), direct_sample=direct_sample,
                          match=match)


def test_front_end_check_accepts_a_good_result():
    from avsnet_ros.audio.echo_checks import check_front_end

    assert check_front_end(_result()) is None
    # at the limits (default: quality 0.2, match 0.5, -60 dBFS = 0.001 full scale, 288 +- 16)
    assert check_front_end(_result(quality=0.2, match=0.5, level=0.001, direct_sample=288 + 16)) is None
    assert check_front_end(_result(direct_sample=288 - 16)) is None


@pytest.mark.parametrize("quality", [0.19, 0.0, float("nan")])
def test_front_end_check_low_quality_is_a_sweep_mismatch(quality):
    from avsnet_ros.audio.echo_checks import check_front_end

    problem = check_front_end(_result(quality=quality))
    assert problem.fault is EchoFault.MISMATCH and problem.reason == "echo_sweep_mismatch"
    assert "announced sweep (duration_s=0.003;" in problem.detail
    identified = check_front_end(_result(quality=0.1, identified=True))
    assert identified.fault is EchoFault.MISMATCH and "identified sweep" in identified.detail
    # the threshold is the config's (depth_node echo_min_quality)
    assert check_front_end(_result(quality=0.15), EchoCheckConfig(min_direct_quality=0.1)) is None


@pytest.mark.parametrize("match", [0.49, 0.0, float("nan")])
def test_front_end_check_poor_match_is_a_sweep_mismatch(match):
    """A compact-enough announced sweep that explains the recording far worse than the identified one."""
    from avsnet_ros.audio.echo_checks import check_front_end

    problem = check_front_end(_result(quality=0.3, match=match))
    assert problem.fault is EchoFault.MISMATCH and "not what was played" in problem.detail
    assert check_front_end(_result(quality=0.3, match=0.3), EchoCheckConfig(min_sweep_match=0.25)) is None


def test_front_end_check_quiet_direct_path_is_a_level_fault_named_first():
    from avsnet_ros.audio.echo_checks import check_front_end

    # louder channel 0.0009 full scale = -60.9 dBFS < -60; also a bad quality and onset: the level is named
    problem = check_front_end(_result(quality=0.1, level=0.0009, direct_sample=600))
    assert problem.fault is EchoFault.LEVEL and problem.reason == "echo_level" and "-60.9 dBFS" in problem.detail
    assert check_front_end(_result(level=0.0)).fault is EchoFault.LEVEL  # silence: -inf dBFS
    assert check_front_end(_result(level=0.0009), EchoCheckConfig(min_level_dbfs=-70.0)) is None


def test_front_end_check_onset_uses_the_deconvolved_direct_path():
    from avsnet_ros.audio.echo_checks import check_front_end

    for found in (288 + 17, 288 - 17, 1000):
        problem = check_front_end(_result(direct_sample=found))
        assert problem.fault is EchoFault.ONSET and f"sample {found}" in problem.detail
    assert check_front_end(_result(direct_sample=1000), EchoCheckConfig(onset_check=False)) is None
    assert check_front_end(_result(direct_sample=300), EchoCheckConfig(onset_tolerance_samples=12)) is None
    assert check_front_end(_result(direct_sample=301), EchoCheckConfig(onset_tolerance_samples=12)).fault \
        is EchoFault.ONSET
