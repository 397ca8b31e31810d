"""Export of the inference graph (AVS-Net + relative model + scaling): torch.export or TorchScript.

The exported graph takes the *preprocessed* tensors of :meth:`DepthPipeline.preprocess`
(RGB already resized, spectrogram already computed; the STFT stays outside because it is
cheap and the crop/resize of variable-length audio is host-side logic):

    forward(rgb_avs (B, 3, Ha, Wa) [0, 1], spectrogram (B, 2, Ha, Wa), rgb_rel (B, 3, Hr, Wr))
        -> (depth_m (B, 1, Hr, Wr) scaled relative depth, NaN outside [min, max] depth,
            scale (B,), pseudo_depth_m (B, 1, Ha, Wa), confidence (B,))

Two formats, both captured at fixed input sizes and batch size (scaling is
:func:`avsnet_ros.scaling.scale_relative`, the pipeline's own implementation; models/ never
imports the pipeline: a pipeline is only passed in as an object):

- :func:`export_program`: ``torch.export`` ExportedProgram saved as ``.pt2`` (the format PyTorch
  recommends from 2.x on; load with ``torch.export.load(path).module()``);
- :func:`export_torchscript`: ``torch.jit.trace`` saved with ``torch.jit.save`` (deprecated by
  PyTorch 2.13 but still supported; load with :func:`load_torchscript` or ``torch.jit.load``),
  for C++ (libtorch) deployments.

ONNX export is available through :func:`export_onnx` only when the ``onnx`` package is installed
(it is not a dependency of the project).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..fileio import atomic_open


class InferenceGraph(nn.Module):
    """AVS-Net + relative model + scaling as one module of tensors (see module docstring)."""

    def __init__(self, avs_model: nn.Module, relative_model: Optional[nn.Module], scaling: str = "median"):
        super().__init__()
        self.avs_model = avs_model
        self.relative_model = relative_model
        self.scaling = scaling if relative_model is not None else "none"
        self.min_depth_m = float(avs_model.config.min_depth_m)
        self.max_depth_m = float(avs_model.config.max_depth_m)
        self.use_audio = bool(avs_model.config.use_audio)

    def forward(self, rgb_avs: torch.Tensor, spectrogram: torch.Tensor, rgb_rel: torch.Tensor):
        from avsnet_ros.scaling import mask_depth_range, scale_relative

        pseudo = self.avs_model(rgb_avs, spectrogram if self.use_audio else None).depth_m
        relative = self.relative_model(rgb_rel) if self.relative_model is not None else None
        depth, scale, _, conf = scale_relative(pseudo, relative, self.min_depth_m, self.max_depth_m, self.scaling)
        return mask_depth_range(depth, self.min_depth_m, self.max_depth_m), scale, pseudo, conf


def example_inputs(pipeline, batch_size: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random inputs of the right sizes for ``pipeline`` (a DepthPipeline) on its device."""
    g = torch.Generator().manual_seed(seed)
    ha, wa = pipeline.input_size_hw()
    hr, wr = pipeline.relative_size_hw or (ha, wa)
    rgb_avs = torch.rand(batch_size, 3, ha, wa, generator=g)
    spec = torch.rand(batch_size, 2, ha, wa, generator=g) * 10.0
    rgb_rel = torch.rand(batch_size, 3, hr, wr, generator=g)
    return tuple(t.to(pipeline.device) for t in (rgb_avs, spec, rgb_rel))


def _graph(pipeline) -> InferenceGraph:
    return InferenceGraph(pipeline.avs_model, pipeline.relative_model, pipeline.scaling).eval()


def _atomic_save(path: Union[str, Path], save_fn) -> Path:
    """``save_fn(file)`` into a temporary file that replaces ``path`` only once complete (fileio)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as fh:
        save_fn(fh)
    return out


def export_program(pipeline, path: Union[str, Path], batch_size: int = 1) -> Path:
    """``torch.export`` the pipeline's inference graph and save it (``.pt2``) to ``path``."""
    inputs = example_inputs(pipeline, batch_size)
    with torch.no_grad():
        program = torch.export.export(_graph(pipeline), inputs, strict=False)
    return _atomic_save(path, lambda fh: torch.export.save(program, fh))


def load_torchscript(path: Union[str, Path], map_location: Optional[str] = None):
    """``torch.jit.load`` without PyTorch 2.13's deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=map_location)


def export_torchscript(pipeline, path: Union[str, Path], batch_size: int = 1) -> Path:
    """Trace the pipeline's inference graph and save it (``torch.jit.save``) to ``path``.

    Load it with ``torch.jit.load(path)``; inputs as :class:`InferenceGraph` (fixed sizes and batch).
    """
    inputs = example_inputs(pipeline, batch_size)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks become constants: expected, the graph is traced for fixed sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # transformers' gradient-checkpointing probe
        traced = torch.jit.trace(_graph(pipeline), inputs, check_trace=False, strict=False)
        return _atomic_save(path, lambda fh: torch.jit.save(traced, fh))


def export_onnx(pipeline, path: Union[str, Path], batch_size: int = 1, opset: int = 17) -> Path:
    """ONNX export of the same graph; requires the optional ``onnx`` package."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("ONNX export needs the 'onnx' package (pip install onnx); "
                           "use export_torchscript otherwise") from exc
    inputs = example_inputs(pipeline, batch_size)
    out = Path(path)
    torch.onnx.export(
        _graph(pipeline),
        inputs,
        str(out),
        input_names=["rgb_avs", "spectrogram", "rgb_rel"],
        output_names=["depth_m", "scale", "pseudo_depth_m", "confidence"],
        opset_version=opset,
    )
    return out


__all__ = ["InferenceGraph", "export_program", "export_torchscript", "load_torchscript", "export_onnx",
           "example_inputs"]
