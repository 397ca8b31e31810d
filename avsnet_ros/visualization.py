"""Depth colourisation shared by the nodes and training (numpy + OpenCV; matplotlib only on request; no ROS).

One colour scale everywhere: OpenCV's turbo colour map on a FIXED metric range (not per-image
min-max), so a colour means the same metres in /avsnet/depth_preview, the `avsnet-launch --demo`
PNGs and the evaluation figures. Users:
- ``colorize_depth``: depth_node's preview, the demo PNGs, training/plots.py's depth panels;
- ``depth_legend``: the colour bar (in metres) beside an OpenCV panel;
- ``depth_colormap``: the same colours as a matplotlib colormap, for matplotlib colour bars;
- ``depth_display_max``: the shared robust display range of a set of depth maps;
- ``depth_panel``: RGB | depth tiles | colour bar as one uint8 image (the demo PNGs).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Optional, Sequence

import numpy as np

from avsnet_ros.data.samples import valid_depth

__all__ = [
    "INVALID_RGB",
    "colorize_depth",
    "depth_colormap",
    "depth_colormap_lut",
    "depth_display_max",
    "depth_legend",
    "depth_panel",
]

INVALID_RGB = (0, 0, 0)  # colour of NaN/no-return pixels in the previews


@lru_cache(maxsize=1)
def depth_colormap_lut() -> np.ndarray:
    """(256, 3) uint8 RGB: the turbo lookup table (entry i = colour of normalised depth i / 255)."""
    import cv2

    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_TURBO)
    lut = bgr[:, 0, ::-1].copy()
    lut.setflags(write=False)
    return lut


def colorize_depth(depth_m: np.ndarray, min_depth_m: float, max_depth_m: float,
                   invalid_rgb: Sequence[int] = INVALID_RGB) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB with the turbo colour map on a fixed metric range.

    The range is fixed (not per-frame min-max) so colours mean the same metres in every frame;
    depths outside it take the end colours; non-finite pixels get ``invalid_rgb`` (black).
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(depth)
    norm = np.zeros(depth.shape, dtype=np.float32)
    span = max(float(max_depth_m) - float(min_depth_m), 1e-6)
    norm[valid] = np.clip((depth[valid] - float(min_depth_m)) / span, 0.0, 1.0)
    rgb = depth_colormap_lut()[(norm * 255.0 + 0.5).astype(np.uint8)]
    rgb[~valid] = np.asarray(invalid_rgb, dtype=np.uint8)
    return rgb


def depth_colormap(invalid_rgb: Optional[Sequence[int]] = None):
    """The colours of :func:`colorize_depth` as a matplotlib ``ListedColormap`` (for colour bars)."""
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(depth_colormap_lut().astype(np.float64) / 255.0, name="avsnet_depth")
    if invalid_rgb is not None:
        cmap = cmap.with_extremes(bad=np.asarray(invalid_rgb, dtype=np.float64) / 255.0)
    return cmap


def depth_display_max(depth_maps: Iterable[np.ndarray], cap_m: Optional[float] = None, percentile: float = 99.0,
                      default_m: float = 10.0) -> float:
    """Upper end of a shared display range: the largest per-map ``percentile`` of the valid
    (finite, > 0) depths, clipped to ``cap_m``; ``default_m`` (clipped too) when no map has a valid pixel.
    The percentile keeps a few far outliers from washing out the colours."""
    vmax = None
    for depth in depth_maps:
        if depth is None:
            continue
        d = np.asarray(depth, dtype=np.float64)
        vals = d[valid_depth(d, np.inf)]
        if vals.size:
            p = float(np.percentile(vals, percentile))
            vmax = p if vmax is None else max(vmax, p)
    if vmax is None:
        vmax = float(default_m)
    if cap_m is not None:
        vmax = min(vmax, float(cap_m))
    return vmax


def depth_legend(height: int, min_depth_m: float, max_depth_m: float, width: int = 70, ticks: int = 6) -> np.ndarray:
    """(height, width, 3) uint8 RGB colour bar for colorize_depth's range, labelled in metres
    (nearest at the top), to put beside a preview."""
    import cv2

    bar_w = max(width // 3, 8)
    values = np.linspace(min_depth_m, max_depth_m, height, dtype=np.float32)[:, None]
    bar = colorize_depth(np.repeat(values, bar_w, axis=1), min_depth_m, max_depth_m)
    legend = np.full((height, width, 3), 255, dtype=np.uint8)
    legend[:, :bar_w] = bar
    for i in range(ticks):
        frac = i / (ticks - 1)
        y = int(round(frac * (height - 1)))
        value = min_depth_m + frac * (max_depth_m - min_depth_m)
        cv2.line(legend, (bar_w, y), (bar_w + 4, y), (0, 0, 0), 1)
        ty = min(max(y + 4, 10), height - 2)
        cv2.putText(legend, f"{value:.1f}m", (bar_w + 6, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return legend


def depth_panel(tiles: Sequence[tuple[str, Optional[np.ndarray]]], min_depth_m: float, max_depth_m: float,
                height: int = 240) -> np.ndarray:
    """One RGB uint8 image: labelled tiles side by side + a colour bar in metres.

    tiles: (label, image) in display order; image is (H, W, 3) uint8 RGB, (H, W) depth in metres
    (coloured with :func:`colorize_depth` on [min_depth_m, max_depth_m]) or None (a black tile).
    Every tile is resized to the first image's aspect ratio at ``height`` rows.
    """
    import cv2

    shapes = [img.shape[:2] for _, img in tiles if img is not None]
    if not shapes:
        raise ValueError("depth_panel needs at least one image")
    h0, w0 = shapes[0]
    size = (max(int(round(w0 * height / h0)), 1), int(height))
    out = []
    for label, img in tiles:
        if img is None:
            img = np.zeros((h0, w0, 3), dtype=np.uint8)
        elif img.ndim == 2:
            img = colorize_depth(img, min_depth_m, max_depth_m)
        tile = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA)
        cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        out.append(tile)
    out.append(depth_legend(int(height), min_depth_m, max_depth_m))
    return np.hstack(out)
