"""Figures written by training and evaluation (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from avsnet_ros.fileio import atomic_open  # noqa: E402


_INVALID_GREY = (153, 153, 153)  # no-GT / invalid pixels in the depth panels


def _save(fig, path: Path) -> None:
    """Write the figure atomically in the format of the file suffix (e.g. .png), then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_training_curves(history: Sequence[Mapping], step_losses: Sequence[float], path: Path,
                         title: str = "training") -> None:
    """Loss per step (+ epoch means), learning rate and validation metrics per epoch -> PNG."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    steps = np.arange(1, len(step_losses) + 1)
    if len(step_losses):
        ax.plot(steps, step_losses, lw=0.6, alpha=0.5, label="train loss (step)")
    if history:
        ax.plot([r["step"] for r in history], [r["train_loss"] for r in history], "o-", label="train loss (epoch mean)")
        if any("val_loss" in r for r in history):
            ax.plot([r["step"] for r in history], [r.get("val_loss", math.nan) for r in history], "s-",
                    label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    epochs = [r["epoch"] for r in history]
    ax = axes[0, 1]
    if history:
        ax.plot(epochs, [r.get("lr", math.nan) for r in history], "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate (end of epoch)")
    ax.grid(alpha=0.3)

    # validation metrics per epoch: (panel, history keys, y label, y limits)
    for ax, keys, ylabel, ylim in (
            (axes[1, 0], ("val_abs_rel", "val_sq_rel", "val_rmse_log"), "error (lower is better)", None),
            (axes[1, 1], ("val_delta1", "val_delta2", "val_delta3"), "accuracy (higher is better)", (0, 1))):
        for key in keys:
            if any(key in r for r in history):
                ax.plot(epochs, [r.get(key, math.nan) for r in history], "o-", label=key[4:])
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_depth_panel(rgb: np.ndarray, gt_m: np.ndarray, preds_m: Mapping[str, np.ndarray], path: Path,
                     max_depth_m: float, error_of: str | None = None, title: str = "") -> None:
    """Qualitative panel: RGB, GT, each prediction (same colour scale, bar in metres) + error maps.

    Depth colours are avsnet_ros.visualization's (the nodes' preview colours, fixed range
    [0, display max]); invalid pixels are grey.

    Args:
        rgb: (H, W, 3) uint8.
        gt_m: (H, W) float metres, NaN/0 invalid.
        preds_m: {label: (H, W) metres} in display order (e.g. RGB-only, echo-enhanced).
        error_of: unused label filter; every prediction gets an |pred - GT| map in the second row.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from avsnet_ros.data.samples import valid_depth
    from avsnet_ros.visualization import colorize_depth, depth_colormap, depth_display_max

    gt = np.where(valid_depth(gt_m, np.inf), gt_m, np.nan)
    vmax = depth_display_max([gt, *preds_m.values()], cap_m=max_depth_m, default_m=max_depth_m)
    n_cols = 2 + len(preds_m)
    fig, axes = plt.subplots(2, n_cols, figsize=(3.4 * n_cols, 4.6), squeeze=False)
    axes[0, 0].imshow(rgb)
    axes[0, 0].set_title("RGB")
    axes[0, 1].imshow(colorize_depth(gt, 0.0, vmax, invalid_rgb=_INVALID_GREY))
    axes[0, 1].set_title("ground truth")
    for j, (label, pred) in enumerate(preds_m.items()):
        axes[0, 2 + j].imshow(colorize_depth(pred, 0.0, vmax, invalid_rgb=_INVALID_GREY))
        axes[0, 2 + j].set_title(label)
    fig.colorbar(ScalarMappable(norm=Normalize(0.0, vmax), cmap=depth_colormap()), ax=list(axes[0, :]),
                 shrink=0.8, label="depth [m]")
    err_cmap = plt.get_cmap("inferno").with_extremes(bad="0.6")
    errors = {label: np.abs(pred - gt) for label, pred in preds_m.items()}
    err_vals = np.concatenate([e[np.isfinite(e)] for e in errors.values()] or [np.zeros(1)])
    emax = float(np.percentile(err_vals, 99)) if err_vals.size else 1.0
    emax = max(emax, 1e-3)
    axes[1, 0].axis("off")
    axes[1, 1].axis("off")
    eim = None
    for j, (label, err) in enumerate(errors.items()):
        eim = axes[1, 2 + j].imshow(err, cmap=err_cmap, vmin=0, vmax=emax)
        axes[1, 2 + j].set_title(f"|{label} - GT|")
    if eim is not None:
        fig.colorbar(eim, ax=list(axes[1, :]), shrink=0.8, label="abs. error [m]")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_gradcam_panel(rgb: np.ndarray, spectrogram: np.ndarray, cam_stft: np.ndarray,
                       cam_rgb_echo: np.ndarray, cam_rgb_only: np.ndarray | None,
                       depth_echo_m: np.ndarray, depth_rgb_m: np.ndarray | None, path: Path,
                       sample_rate_hz: float, hop_length: int, window_samples: int, title: str = "") -> None:
    """Paper figure 6: STFT Grad-CAM (time axis in ms), |echo - RGB-only| and RGB Grad-CAMs.

    Args:
        rgb: (H, W, 3) uint8 image as fed to the model.
        spectrogram: (2, F, T) magnitude STFT (left, right) before resizing to the model size.
        cam_stft: (F', T') map in [0, 1] over the model's spectrogram input (resized here to F x T).
        cam_rgb_echo / cam_rgb_only: (H, W) maps in [0, 1] over the RGB of each model.
        depth_echo_m / depth_rgb_m: (H, W) metres.
        sample_rate_hz, hop_length, window_samples: to label the STFT time axis in ms.
    """
    import cv2

    n_freq, n_time = spectrogram.shape[-2:]
    cam = cv2.resize(cam_stft.astype(np.float32), (n_time, n_freq), interpolation=cv2.INTER_LINEAR)
    duration_ms = 1000.0 * window_samples / sample_rate_hz
    extent = (0.0, duration_ms, 0.0, sample_rate_hz / 2000.0)
    panels = 3 + (1 if cam_rgb_only is not None else 0) + (1 if depth_rgb_m is not None else 0)
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.4), squeeze=False)
    axes = axes[0]
    log_spec = np.log1p(spectrogram.mean(axis=0))
    axes[0].imshow(log_spec, origin="lower", aspect="auto", extent=extent, cmap="gray")
    im = axes[0].imshow(cam, origin="lower", aspect="auto", extent=extent, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[0].set_xlabel("time [ms] (x 0.17 = metres)")
    axes[0].set_ylabel("frequency [kHz]")
    axes[0].set_title("Grad-CAM on STFT (echo model)")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    k = 1
    if depth_rgb_m is not None:
        diff = np.abs(depth_echo_m - depth_rgb_m)
        dim = axes[k].imshow(diff, cmap="viridis")
        axes[k].set_title("|echo - RGB-only| depth")
        fig.colorbar(dim, ax=axes[k], shrink=0.8, label="[m]")
        k += 1
    if cam_rgb_only is not None:
        axes[k].imshow(rgb)
        axes[k].imshow(cam_rgb_only, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[k].set_title("Grad-CAM RGB (RGB-only)")
        k += 1
    axes[k].imshow(rgb)
    axes[k].imshow(cam_rgb_echo, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[k].set_title("Grad-CAM RGB (echo model)")
    k += 1
    axes[k].imshow(rgb)
    axes[k].set_title("RGB")
    for ax in axes[1:]:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
