"""avsnet_ros.visualization: the one depth colouriser (nodes' preview, demo PNGs, training panels)
against OpenCV's own colour map, the matplotlib colour bar against it, the display range by hand,
and the panels that use it."""
from __future__ import annotations

import cv2
import numpy as np

from avsnet_ros import visualization as vis


def test_colorize_depth_is_opencv_turbo_on_a_fixed_range():
    depth = np.array([[0.0, 2.5, 5.0, 10.0, 12.0, np.nan]], np.float32)
    rgb = vis.colorize_depth(depth, 0.0, 10.0)
    # reference: OpenCV directly on hand-normalised bytes (0, 64, 128, 255, 255 (clipped))
    bytes_ = np.array([[0, 64, 128, 255, 255]], np.uint8)
    ref = cv2.applyColorMap(bytes_, cv2.COLORMAP_TURBO)[:, :, ::-1]
    np.testing.assert_array_equal(rgb[:, :5], ref)
    assert (rgb[0, 5] == 0).all()
    grey = vis.colorize_depth(depth, 0.0, 10.0, invalid_rgb=(153, 153, 153))
    np.testing.assert_array_equal(grey[0, 5], [153, 153, 153])
    np.testing.assert_array_equal(grey[:, :5], ref)


def test_matplotlib_colour_bar_uses_the_same_colours():
    cmap = vis.depth_colormap()
    lut = vis.depth_colormap_lut()
    for value_m in (0.0, 10.0):
        expected = vis.colorize_depth(np.array([[value_m]], np.float32), 0.0, 10.0)[0, 0]
        got = np.round(np.asarray(cmap(value_m / 10.0))[:3] * 255).astype(np.uint8)
        np.testing.assert_array_equal(got, expected)
    # interior: within one LUT entry (matplotlib floors, colorize rounds)
    mid = np.asarray(cmap(0.5))[:3] * 255
    assert min(np.abs(mid - lut[i]).max() for i in (127, 128)) < 0.51


def test_depth_display_max_by_hand():
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[10.0, np.nan, 0.0, -1.0]])
    assert vis.depth_display_max([a, b], percentile=50) == 10.0  # medians 2 and 10 (b: only 10 is valid)
    assert vis.depth_display_max([a, b], cap_m=8.0, percentile=50) == 8.0
    assert vis.depth_display_max([a, None], percentile=100) == 3.0
    assert vis.depth_display_max([np.full((2, 2), np.nan)], default_m=7.0) == 7.0


def test_depth_panel_tiles_and_legend():
    rgb = np.zeros((60, 120, 3), np.uint8)
    depth = np.full((60, 120), 5.0, np.float32)
    panel = vis.depth_panel([("RGB", rgb), ("depth", depth), ("missing", None)], 0.0, 10.0, height=120)
    assert panel.shape == (120, 3 * 240 + 70, 3) and panel.dtype == np.uint8
    # bottom-right of the depth tile (away from the label) has the colour of 5 m
    np.testing.assert_array_equal(panel[110, 2 * 240 - 5], vis.colorize_depth(depth[:1, :1], 0.0, 10.0)[0, 0])
    np.testing.assert_array_equal(panel[110, 3 * 240 - 5], [0, 0, 0])
    legend = panel[:, 3 * 240:]
    np.testing.assert_array_equal(legend, vis.depth_legend(120, 0.0, 10.0))
    np.testing.assert_array_equal(legend[0, 0], vis.colorize_depth(np.zeros((1, 1), np.float32), 0.0, 10.0)[0, 0])


def test_training_depth_panel_renders(tmp_path):
    from training.plots import plot_depth_panel

    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 9, (32, 48)).astype(np.float32)
    gt[:4] = np.nan
    path = tmp_path / "panel.png"
    plot_depth_panel(np.zeros((32, 48, 3), np.uint8), gt, {"pred": gt * 1.1}, path, max_depth_m=30.0)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 200
