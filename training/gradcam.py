"""Grad-CAM (Selvaraju et al., ICCV 2017) for AVS-Net: where does the depth come from?

As in the paper's figure 6, the score is the mean predicted depth of the image; the maps are taken
at the last stage of the audio encoder (over the STFT, whose horizontal axis is echo travel time,
i.e. distance) and at a stage of the visual branch (over the RGB).

    weights_c = mean_{h,w} d score / d A_c(h, w)        (global-average-pooled gradients)
    cam(h, w) = ReLU( sum_c weights_c * A_c(h, w) ),  normalised to [0, 1] per image

A target module must output a (B, C, h, w) tensor (or a tuple whose first item is one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: Default target layers of avsnet_ros.models.avsnet.AVSNet (names from named_modules()).
AUDIO_LAYER = "audio_encoder.resnet.encoder.stages.-1"  # last ResNet stage: (B, C, H/32, W/32)
RGB_LAYER = "visual.neck.convs.1"  # DPT neck projection of a mid-level backbone stage: (B, C, H/8, W/8)


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """Module by dotted name; integer parts index ModuleLists (negative allowed, e.g. 'stages.-1')."""
    module = model
    for part in name.split("."):
        if part.lstrip("-").isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
            module = module[int(part)]
        else:
            if not hasattr(module, part):
                raise AttributeError(f"{type(model).__name__} has no submodule {name!r} (at {part!r})")
            module = getattr(module, part)
    return module


@dataclass
class GradCAMResult:
    """cams: {name: (B, h, w) float in [0, 1]} at the target layers' resolution; score: (B,)."""

    cams: dict
    score: torch.Tensor


def _first_tensor(output):
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    raise TypeError(f"Grad-CAM target returned {type(output).__name__}, not a tensor")


def grad_cam(forward: Callable[[], torch.Tensor], model: nn.Module, layers: Mapping[str, str]) -> GradCAMResult:
    """Grad-CAM maps of several layers from one backward pass.

    Args:
        forward: closure running the model and returning the score per image (B,) (e.g. the mean
            predicted depth); called once with gradients enabled.
        model: the module that owns the layers.
        layers: {map name: dotted module name}.
    """
    activations: dict[str, torch.Tensor] = {}
    handles = []
    for key, name in layers.items():
        module = resolve_module(model, name)

        def hook(_mod, _inp, out, key=key):
            act = _first_tensor(out)
            if act.dim() != 4:
                raise ValueError(f"Grad-CAM layer {layers[key]!r} outputs shape {tuple(act.shape)}, need (B, C, h, w)")
            act.retain_grad()
            activations[key] = act

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            score = forward()
            if score.dim() != 1:
                raise ValueError(f"Grad-CAM score must be (B,), got {tuple(score.shape)}")
            missing = [k for k in layers if k not in activations]
            if missing:
                raise RuntimeError(f"Grad-CAM layers {missing} were not run by the forward pass")
            model.zero_grad(set_to_none=True)
            score.sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    cams = {}
    for key, act in activations.items():
        grad = act.grad
        if grad is None:
            raise RuntimeError(f"no gradient reached Grad-CAM layer {layers[key]!r}")
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        cam = F.relu((weights * act).sum(dim=1)).detach()  # (B, h, w)
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        cams[key] = (cam / peak).float()
    model.zero_grad(set_to_none=True)
    return GradCAMResult(cams=cams, score=score.detach())


def avsnet_grad_cam(model: nn.Module, rgb: torch.Tensor, spectrogram: torch.Tensor | None,
                    audio_layer: str = AUDIO_LAYER, rgb_layer: str = RGB_LAYER) -> GradCAMResult:
    """Grad-CAM of an AVSNet for the mean predicted depth.

    Args:
        model: AVSNet (echo model or RGB-only baseline).
        rgb: (B, 3, H, W) in [0, 1]; spectrogram: (B, 2, H, W) raw magnitude (None for RGB-only).

    Returns:
        GradCAMResult with cams "rgb" (B, H/8, W/8) and, for the echo model, "stft" (B, H/32, W/32):
        the audio map lies over the resized STFT (rows = frequency, columns = time).
    """
    layers = {"rgb": rgb_layer}
    use_audio = bool(getattr(model.config, "use_audio", False))
    if use_audio:
        if spectrogram is None:
            raise ValueError("the echo model needs a spectrogram for Grad-CAM")
        layers["stft"] = audio_layer
    # Inputs that require grad make every activation part of the graph, even when the weights are
    # frozen (requires_grad=False, as an inference pipeline may leave them).
    rgb_in = rgb.detach().clone().float().requires_grad_(True)
    spec_in = spectrogram.detach().clone().float().requires_grad_(True) if use_audio else None

    def forward() -> torch.Tensor:
        out = model(rgb_in, spec_in)
        return out.depth_m.float().flatten(1).mean(dim=1)

    result = grad_cam(forward, model, layers)
    for p in model.parameters():
        p.grad = None
    return result


def upsample_cam(cam: torch.Tensor, size_hw) -> torch.Tensor:
    """(B, h, w) -> (B, H, W) bilinear, renormalised to [0, 1]."""
    up = F.interpolate(cam[:, None], size=tuple(size_hw), mode="bilinear", align_corners=False)[:, 0]
    up = up.clamp_min(0)
    return up / up.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
