"""Colour augmentation of training images (Monodepth2's: brightness, contrast, saturation, hue).

A self-supervised depth network that only ever sees one palette can learn colour -> depth shortcuts
(floor colour = near, ceiling colour = far) that fail on other rooms. Monodepth2 (Godard et al. 2019,
sec. 4) jitters the colours of the network's INPUT with probability 0.5, leaving the images the
photometric loss compares untouched; the same jitter is applied to every frame of a triple.

    jitter_colour(rgb (..., 3, H, W) in [0, 1], ColourJitter) -> same shape, in [0, 1]

Order and definitions follow torchvision's ColorJitter (fixed order): brightness x*b; contrast
c*x + (1 - c)*mean(gray); saturation s*x + (1 - s)*gray; hue: HSV hue shifted by h turns; clamped to
[0, 1] after each step. gray = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avsnet_ros.preprocessing import luminance as _gray

__all__ = ["ColourJitter", "draw_colour_jitter", "jitter_colour", "rgb_to_hsv", "hsv_to_rgb"]

# Monodepth2's ranges (torchvision ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1))
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.2, 0.2, 0.2, 0.1


@dataclass(frozen=True)
class ColourJitter:
    """Factors of one draw: brightness, contrast, saturation (1 = unchanged), hue shift in turns."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue_turns: float = 0.0


def draw_colour_jitter(rng: np.random.Generator) -> ColourJitter:
    """One draw of Monodepth2's ranges: factors uniform in [1 - r, 1 + r], hue in [-0.1, 0.1] turns."""
    b, c, s = (float(rng.uniform(1.0 - r, 1.0 + r)) for r in (BRIGHTNESS, CONTRAST, SATURATION))
    return ColourJitter(b, c, s, float(rng.uniform(-HUE, HUE)))


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV with h in [0, 1) turns (colorsys.rgb_to_hsv per pixel)."""
    r, g, b = x.unbind(-3)
    maxc, _ = x.max(dim=-3)
    minc, _ = x.min(dim=-3)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_hsv (colorsys.hsv_to_rgb per pixel)."""
    h, s, v = x.unbind(-3)
    h6 = (h % 1.0) * 6.0
    i = torch.floor(h6)
    f = h6 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v], dim=-1).gather(-1, i[..., None])[..., 0]
    g = torch.stack([t, v, v, q, p, p], dim=-1).gather(-1, i[..., None])[..., 0]
    b = torch.stack([p, p, t, v, v, q], dim=-1).gather(-1, i[..., None])[..., 0]
    return torch.stack([r, g, b], dim=-3)


def jitter_colour(x: torch.Tensor, j: ColourJitter) -> torch.Tensor:
    """x (..., 3, H, W) float in [0, 1] with the jitter j applied (module docstring); a new tensor."""
    if x.shape[-3] != 3:
        raise ValueError(f"expected (..., 3, H, W) RGB, got {tuple(x.shape)}")
    y = (x * j.brightness).clamp(0.0, 1.0)
    mean = _gray(y).mean(dim=(-3, -2, -1), keepdim=True)
    y = (j.contrast * y + (1.0 - j.contrast) * mean).clamp(0.0, 1.0)
    y = (j.saturation * y + (1.0 - j.saturation) * _gray(y)).clamp(0.0, 1.0)
    if j.hue_turns != 0.0:
        hsv = rgb_to_hsv(y)
        hsv = torch.stack([(hsv[..., 0, :, :] + j.hue_turns) % 1.0, hsv[..., 1, :, :], hsv[..., 2, :, :]], dim=-3)
        y = hsv_to_rgb(hsv).clamp(0.0, 1.0)
    return y
