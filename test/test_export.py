"""Export of the inference graph (AVS-Net + relative model + scaling) matches eager within 1e-4."""
from __future__ import annotations

import pytest
import torch

from avsnet_ros.models import AVSNetConfig, RelativeDepthConfig, build_model
from avsnet_ros.models.export import (
    InferenceGraph,
    example_inputs,
    export_onnx,
    export_program,
    export_torchscript,
    load_torchscript,
)
from avsnet_ros.pipeline import DepthPipeline

NAMES = ("depth_m", "scale", "pseudo_depth_m", "confidence")


@pytest.fixture(scope="module")
def echo_pipe():
    torch.manual_seed(0)
    return DepthPipeline(build_model(AVSNetConfig()), build_model(RelativeDepthConfig()), device="cpu")


def _compare(pipe, exported_fn):
    graph = InferenceGraph(pipe.avs_model, pipe.relative_model, pipe.scaling).eval()
    inputs = example_inputs(pipe, seed=7)  # not the inputs the export was captured with
    with torch.no_grad():
        eager = graph(*inputs)
        exported = exported_fn(*inputs)
    for name, a, b in zip(NAMES, eager, exported):
        assert a.shape == b.shape, name
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, equal_nan=True, msg=name)
    assert torch.isfinite(eager[1]).all() and float(eager[1].min()) > 0
    # the eager graph reproduces the pipeline's own scaling step
    with torch.no_grad():
        pseudo = pipe.avs_model(inputs[0], inputs[1] if pipe.use_audio else None).depth_m
    torch.testing.assert_close(eager[2], pseudo)


def test_torchscript_matches_eager(echo_pipe, tmp_path):
    module = load_torchscript(export_torchscript(echo_pipe, tmp_path / "avsnet_depth.ts"))
    _compare(echo_pipe, module)


@pytest.mark.slow
def test_torch_export_rgb_only_pseudo_metric(tmp_path):
    # torch.export is slow to capture (seconds): the smaller RGB-only, pseudo-metric-only graph
    torch.manual_seed(1)
    pipe = DepthPipeline(build_model(AVSNetConfig(use_audio=False)), None, device="cpu")
    path = export_program(pipe, tmp_path / "rgb_only.pt2")
    _compare(pipe, torch.export.load(str(path)).module())


def test_onnx_needs_onnx_package(tmp_path):
    try:
        import onnx  # noqa: F401
    except ImportError:
        pipe = DepthPipeline(build_model(AVSNetConfig(use_audio=False)), None, device="cpu")
        with pytest.raises(RuntimeError, match="onnx"):
            export_onnx(pipe, tmp_path / "x.onnx")
    else:  # pragma: no cover - onnx is not a project dependency
        pytest.skip("onnx is installed: ONNX export is not part of this suite")
