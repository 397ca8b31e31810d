"""The paper's Tables 1 and 2 on a test split, through avsnet_ros.pipeline.DepthPipeline.

Rows (keys of the JSON summary):

| key                    | table | model                          | scaling of the relative depth R    |
| rgb_only               | 1     | AVS-Net without echoes         | - (pseudo-metric output)           |
| rgb_echo               | 1     | AVS-Net with echoes            | - (pseudo-metric output)           |
| relative_none          | 2     | DepthNet                       | none (R as if it were metres)      |
| relative_rgb_median    | 2     | DepthNet                       | median of the RGB-only AVS-Net     |
| relative_echo_median   | 2     | DepthNet                       | median of the echo AVS-Net (eq. 3) |
| relative_echo_meanstd  | 2     | DepthNet                       | mean-std of the echo AVS-Net       |
| relative_echo_local    | 2     | DepthNet                       | local scale field (scaling.local_scale) |
| relative_gt_median     | 2     | DepthNet                       | ground-truth median (upper ref.)   |

Several relative models (``build_pipelines(relative_checkpoint=[DIR, ...])``, evaluate.py
``--relative-checkpoint DIR [DIR ...]``): each gets its own block of Table 2 rows (:func:`model_row_specs`).
The first model's keys start with ``relative``, the others' with ``relative_<folder name>``; a
model's alignment ``m`` is ``affine`` (robust scale and shift in inverse depth) for disparity
models (Depth Anything relative, DPT/MiDaS) and ``median`` otherwise (DepthNet; metric zero-shot
models such as ZoeDepth: the paper's scale correction). Block: ``<p>_none`` (R as metres; 1/D for
disparity, NaN where D <= 0), ``<p>_rgb_<m>``, ``<p>_echo_<m>``, ``<p>_echo_meanstd`` (depth-like
models only), ``<p>_echo_local`` (scaling.local_scale of that kind), ``<p>_gt_<m>`` (the same
alignment with the ground truth as the reference: the upper reference). For one DepthNet these
are exactly the rows above.

Protocol (README "Evaluation and results"; the BatVision paper): every prediction is produced at (resized to)
the ground-truth size;
metrics per image with avsnet_ros.metrics.compute_depth_metrics on valid pixels (finite, > 0,
strictly below the max depth: the paper's footnote 5), then the mean over images. Ground-truth
median scaling uses the same valid mask. A predicted NaN (no depth, e.g. no valid pixel to take a
scale from) on a valid ground-truth pixel is excluded and counted in `excluded_pred_pixels`.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from avsnet_ros.data.samples import valid_depth
from avsnet_ros.metrics import METRIC_KEYS, DepthMetricAccumulator
from avsnet_ros.scaling import median_scale

LOG = logging.getLogger("avsnet_ros.training")


@dataclass(frozen=True)
class RowSpec:
    key: str
    table: int
    model: str
    scaling: str


ROW_SPECS: tuple[RowSpec, ...] = (
    RowSpec("rgb_only", 1, "AVS-Net (Only-RGB)", "-"),
    RowSpec("rgb_echo", 1, "AVS-Net (RGB-Echoes)", "-"),
    RowSpec("relative_none", 2, "DepthNet (self-supervised)", "No"),
    RowSpec("relative_rgb_median", 2, "DepthNet (self-supervised)", "RGB (median)"),
    RowSpec("relative_echo_median", 2, "DepthNet (self-supervised)", "RGB-Echoes (median)"),
    RowSpec("relative_echo_meanstd", 2, "DepthNet (self-supervised)", "RGB-Echoes (mean-std)"),
    RowSpec("relative_echo_local", 2, "DepthNet (self-supervised)", "RGB-Echoes (local)"),
    RowSpec("relative_gt_median", 2, "DepthNet (self-supervised)", "GT median (upper reference)"),
)
ROW_KEYS = tuple(r.key for r in ROW_SPECS)
DEPTHNET_LABEL = "DepthNet (self-supervised)"


def model_row_specs(prefix: str, label: str, output_type: str) -> tuple[RowSpec, ...]:
    """Table 2 rows of one relative model (module docstring); output_type "depth" | "disparity" | "metric"."""
    m = "affine" if output_type == "disparity" else "median"
    rows = [RowSpec(f"{prefix}_none", 2, label, "No"),
            RowSpec(f"{prefix}_rgb_{m}", 2, label, f"RGB ({m})"),
            RowSpec(f"{prefix}_echo_{m}", 2, label, f"RGB-Echoes ({m})")]
    if m == "median":
        rows.append(RowSpec(f"{prefix}_echo_meanstd", 2, label, "RGB-Echoes (mean-std)"))
    rows += [RowSpec(f"{prefix}_echo_local", 2, label, "RGB-Echoes (local)"),
             RowSpec(f"{prefix}_gt_{m}", 2, label, f"GT {m} (upper reference)")]
    return tuple(rows)


@dataclass
class RelativeModelRows:
    """One relative model's pipelines and rows: echo (echo AVS-Net, scaling auto), rgb (RGB-only
    AVS-Net, auto), echo_meanstd (mean-std; None for disparity models)."""

    prefix: str
    label: str
    output_type: str
    checkpoint: str
    echo: Any
    rgb: Any
    echo_meanstd: Any = None

    @property
    def alignment(self) -> str:
        return "affine" if self.output_type == "disparity" else "median"

    @property
    def specs(self) -> tuple[RowSpec, ...]:
        return model_row_specs(self.prefix, self.label, self.output_type)

    @property
    def echo_key(self) -> str:
        """The row of this model scaled by the echo AVS-Net (median or affine)."""
        return f"{self.prefix}_echo_{self.alignment}"

    @property
    def panel_label(self) -> str:
        name = "DepthNet" if self.label == DEPTHNET_LABEL else Path(self.checkpoint).name
        return f"{name} x echo {self.alignment}"
COLUMN_TITLES = {
    "abs_rel": "Abs Rel ↓", "sq_rel": "Sq Rel ↓", "rmse": "RMSE ↓", "rmse_log": "RMSE log ↓",
    "delta1": "δ<1.25 ↑", "delta2": "δ<1.25² ↑", "delta3": "δ<1.25³ ↑",
}


@dataclass
class EvalPipelines:
    """The three pipelines of the tables (all share the same relative model checkpoint).

    echo_median: AVS-Net with echoes + DepthNet, median scaling  -> rgb_echo, relative_echo_median,
        relative_none, relative_gt_median
    echo_meanstd: same models, mean-std scaling                   -> relative_echo_meanstd
    rgb_median: RGB-only AVS-Net + DepthNet, median scaling       -> rgb_only, relative_rgb_median
    """

    echo_median: Any
    echo_meanstd: Any
    rgb_median: Any
    checkpoints: dict = field(default_factory=dict)
    models: list = field(default_factory=list)  # RelativeModelRows, one per relative checkpoint

    @property
    def row_specs(self) -> tuple[RowSpec, ...]:
        """Table 1 rows, then each relative model's block (ROW_SPECS for one DepthNet)."""
        if not self.models:
            return ROW_SPECS
        return tuple(r for r in ROW_SPECS if r.table == 1) + tuple(s for m in self.models for s in m.specs)

    @property
    def panel_rows(self) -> dict[str, str]:
        """{panel label: row key} of the echo-scaled rows shown in the qualitative panels."""
        if not self.models:
            return {"DepthNet x echo median": "relative_echo_median"}
        return {m.panel_label: m.echo_key for m in self.models}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "model"


def build_pipelines(avs_checkpoint=None, rgb_checkpoint=None, relative_checkpoint=None,
                    device: str = "auto") -> EvalPipelines:
    """DepthPipelines from checkpoint dirs; None = the shipped ones (assets/checkpoints/...).

    relative_checkpoint: one folder or a sequence of folders, each a DepthNet checkpoint or a
    transformers ``*ForDepthEstimation`` folder (avsnet_ros.models.hf_depth; the kind is read from
    its config.json); each becomes one block of Table 2 rows.
    """
    from avsnet_ros.models.hf_depth import load_relative_model
    from avsnet_ros.paths import asset_path
    from avsnet_ros.pipeline import DepthPipeline

    avs = Path(avs_checkpoint) if avs_checkpoint else asset_path("checkpoints", "avsnet_tiny")
    rgb = Path(rgb_checkpoint) if rgb_checkpoint else asset_path("checkpoints", "avsnet_tiny_rgb")
    if relative_checkpoint is None or (not isinstance(relative_checkpoint, (str, os.PathLike))
                                       and not relative_checkpoint):
        rels = [asset_path("checkpoints", "depthnet_tiny")]
    elif isinstance(relative_checkpoint, (str, os.PathLike)):
        rels = [Path(relative_checkpoint)]
    else:
        rels = [Path(r) for r in relative_checkpoint]
    paths = (("--avs-checkpoint", avs), ("--rgb-checkpoint", rgb), *(("--relative-checkpoint", r) for r in rels))
    for what, p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{what}: checkpoint {p} does not exist")
    from avsnet_ros.models.checkpoint import load_model
    from avsnet_ros.pipeline import select_device

    dev = select_device(device)
    avs_model, avs_cfg = load_model(avs, dev)
    rgb_model, rgb_cfg = load_model(rgb, dev)
    for what, p, cfg, kind in (("--avs-checkpoint", avs, avs_cfg, "avsnet"),
                               ("--rgb-checkpoint", rgb, rgb_cfg, "avsnet")):
        if cfg.kind != kind:
            raise ValueError(f"{what} {p} holds a {cfg.kind!r} model, expected {kind!r}")
    if not avs_cfg.use_audio:
        LOG.warning("--avs-checkpoint %s is an RGB-only model: the rgb_echo row will not use echoes", avs)
    if rgb_cfg.use_audio:
        LOG.warning("--rgb-checkpoint %s uses echoes: the rgb_only row is not an RGB-only baseline", rgb)
    # One copy of each network; the pipelines differ only in the AVS-Net and the scaling.
    models: list[RelativeModelRows] = []
    checkpoints = {"avs_echo": str(avs), "avs_rgb": str(rgb)}
    used: set[str] = set()
    for i, rel in enumerate(rels):
        try:
            rel_model, output_type = load_relative_model(rel, dev)
        except ValueError as exc:  # CheckpointError included: name the flag
            raise type(exc)(f"--relative-checkpoint: {exc}") from None
        if i == 0:
            prefix = "relative"
        else:
            prefix = f"relative_{_slug(rel.name)}"
            while prefix in used or prefix == "relative":
                prefix += "_"
        used.add(prefix)
        model_type = getattr(rel_model, "model_type", None)
        if model_type is None:
            label = DEPTHNET_LABEL
        elif output_type == "depth":  # a transformers architecture trained by train_relative.py
            label = f"{rel.name} ({model_type}, self-supervised)"
        else:
            label = f"{rel.name} ({model_type}, zero-shot {output_type})"
        models.append(RelativeModelRows(
            prefix, label, output_type, str(rel),
            echo=DepthPipeline(avs_model, rel_model, device=dev, scaling="auto"),
            rgb=DepthPipeline(rgb_model, rel_model, device=dev, scaling="auto"),
            echo_meanstd=None if output_type == "disparity" else DepthPipeline(avs_model, rel_model, device=dev,
                                                                                 scaling="mean_std")))
        checkpoints["relative" if i == 0 else prefix] = str(rel)
    first = models[0]
    return EvalPipelines(first.echo, first.echo_meanstd, first.rgb, checkpoints, models)


def _to_numpy_hw(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def _resize_to(pred: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Bilinear resize (align_corners=False) to the ground-truth size when not already there."""
    if tuple(pred.shape) == tuple(size_hw):
        return pred
    t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size_hw), mode="bilinear", align_corners=False)[0, 0].numpy()


def gt_valid_mask(gt_m: np.ndarray, max_depth_m: float) -> np.ndarray:
    """The metrics' valid mask: finite, > 0 and strictly below max_depth_m (paper footnote 5)."""
    return valid_depth(gt_m, max_depth_m, strict_max=True)


def predict_rows(pipes: EvalPipelines, rgbs: list, echoes: list, gts: list, sample_rate_hz: int,
                 max_depth_m: float, sweeps: "list | None" = None) -> list[dict[str, np.ndarray]]:
    """Every row's prediction (H, W) float32 metres at the GT size for a batch of one GT size.

    sweeps: the emitted sweep of each echo (Sample.sweep; None entries or None = unknown, identified by
    the echo front-end of models trained with one).

    Returns one dict per sample: {row key: prediction} plus "scale:<row key>" (the multiplicative
    factor of the echo, RGB and GT rows of each model: median ratio, or the affine fit's a).
    """
    from avsnet_ros.scaling import disparity_affine_scale, disparity_to_depth

    size_hw = tuple(gts[0].shape)
    models = pipes.models or [RelativeModelRows("relative", DEPTHNET_LABEL, "depth", "", pipes.echo_median,
                                                pipes.rgb_median, pipes.echo_meanstd)]
    out: list[dict] = [{} for _ in gts]
    for k, mod in enumerate(models):
        kw = dict(sample_rate_hz=sample_rate_hz, output_size_hw=size_hw, sweep=sweeps)
        r_echo = mod.echo(rgbs, echoes, **kw)
        r_rgb = mod.rgb(rgbs, echoes, **kw)
        r_ms = mod.echo_meanstd(rgbs, echoes, **kw) if mod.echo_meanstd is not None else None
        p, m, disparity = mod.prefix, mod.alignment, mod.output_type == "disparity"
        for b, gt in enumerate(gts):
            preds = out[b]
            relative = _resize_to(_to_numpy_hw(r_echo.relative_depth[b]), size_hw)
            valid = gt_valid_mask(gt, max_depth_m)
            gt0 = np.nan_to_num(gt, nan=0.0).astype(np.float64)
            if disparity:
                scaled_gt, (scale_gt, _) = disparity_affine_scale(relative.astype(np.float64), gt0, valid=valid)
                as_depth = disparity_to_depth(torch.from_numpy(relative)[None, None], torch.ones(1),
                                              torch.zeros(1))[0, 0].numpy()
            else:
                scaled_gt, scale_gt = median_scale(relative.astype(np.float64), gt0, valid=valid)
                as_depth = relative
            pseudo_echo = _resize_to(_to_numpy_hw(r_echo.pseudo_depth_m[b]), size_hw)
            if k == 0:
                preds["rgb_only"] = _resize_to(_to_numpy_hw(r_rgb.pseudo_depth_m[b]), size_hw)
                preds["rgb_echo"] = pseudo_echo
            preds[f"{p}_none"] = as_depth
            preds[f"{p}_rgb_{m}"] = _resize_to(_to_numpy_hw(r_rgb.depth_m[b]), size_hw)
            preds[f"{p}_echo_{m}"] = _resize_to(_to_numpy_hw(r_echo.depth_m[b]), size_hw)
            if r_ms is not None:
                preds[f"{p}_echo_meanstd"] = _resize_to(_to_numpy_hw(r_ms.depth_m[b]), size_hw)
            preds[f"{p}_echo_local"] = local_echo_depth(relative, pseudo_echo, mod.echo.min_depth_m,
                                                        mod.echo.max_depth_m,
                                                        kind="disparity" if disparity else "depth")
            preds[f"{p}_gt_{m}"] = np.asarray(scaled_gt, dtype=np.float32)
            preds[f"scale:{p}_echo_{m}"] = float(np.asarray(r_echo.scale)[b])
            preds[f"scale:{p}_rgb_{m}"] = float(np.asarray(r_rgb.scale)[b])
            preds[f"scale:{p}_gt_{m}"] = float(scale_gt)
    return out


def local_echo_depth(relative: np.ndarray, pseudo_m: np.ndarray, min_depth_m: float, max_depth_m: float,
                     kind: str = "depth") -> np.ndarray:
    """The relative_echo_local row: avsnet_ros.scaling.local_scale of R against the echo AVS-Net's Mp
    (both (H, W) at the GT size; kind "disparity" for disparity models), reference pixels where Mp is
    unsaturated (as the pipeline's median);
    NaN outside [min_depth_m, max_depth_m] like the pipeline's depth_m."""
    from avsnet_ros.scaling import local_scale, unsaturated_mask

    mp = torch.from_numpy(np.ascontiguousarray(pseudo_m, dtype=np.float32))
    depth, _ = local_scale(torch.from_numpy(np.ascontiguousarray(relative, dtype=np.float32)), mp,
                           valid=unsaturated_mask(mp, min_depth_m, max_depth_m), kind=kind)
    d = depth.numpy()
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(d) & (d >= min_depth_m) & (d <= max_depth_m), d, np.nan).astype(np.float32)


@dataclass
class SplitResult:
    """Evaluation of one dataset: summaries per row and per-image metrics."""

    name: str
    data: str
    max_depth_m: float
    summaries: dict
    per_image: list
    n_samples: int
    n_without_gt: int
    skipped_rows: int
    row_specs: tuple = ROW_SPECS  # the rows evaluated (EvalPipelines.row_specs)


def _batches(n: int, batch_size: int) -> Iterable[list[int]]:
    for start in range(0, n, batch_size):
        yield list(range(start, min(n, start + batch_size)))


def evaluate_split(pipes: EvalPipelines, dataset, name: str, data_path: str, max_depth_m: float, out_dir: Path | None,
                   batch_size: int = 8, save_predictions: bool = False, panel_indices: Sequence[int] = (),
                   gradcam: bool = True, progress: bool = True, max_samples: int | None = None) -> SplitResult:
    """Run every row over `dataset` (Samples with depth) and aggregate.

    Args:
        pipes: from build_pipelines.
        dataset: map-style dataset of avsnet_ros.data Samples.
        name: label of the dataset in outputs ("test", "zero_shot").
        out_dir: where predictions/ (with save_predictions), panels/ and gradcam/ go (None: nowhere).
        panel_indices: dataset indices that get a qualitative panel (and Grad-CAM maps).
    """
    from tqdm.auto import tqdm

    specs = pipes.row_specs
    row_keys = tuple(r.key for r in specs)
    accs = {key: DepthMetricAccumulator(max_depth_m, strict_max=True, invalid_pred="exclude") for key in row_keys}
    per_image: list[dict] = []
    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    n_without_gt = 0
    panel_set = set(int(i) for i in panel_indices)
    pred_dir = out_dir / "predictions" / name if (out_dir is not None and save_predictions) else None
    if pred_dir is not None:
        pred_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=n, desc=f"evaluate {name}", disable=not progress, dynamic_ncols=True)
    for idx in _batches(n, batch_size):
        samples = [(i, dataset[i]) for i in idx]
        bar.update(len(samples))
        with_gt = [(i, s) for i, s in samples if s.depth_m is not None]
        n_without_gt += len(samples) - len(with_gt)
        groups: dict[tuple, list] = {}
        for i, s in with_gt:
            groups.setdefault((tuple(s.depth_m.shape), tuple(s.rgb.shape), int(s.sample_rate_hz)), []).append((i, s))
        for (size_hw, _rgb_shape, sr), group in groups.items():
            gts = [np.asarray(s.depth_m, dtype=np.float32) for _, s in group]
            preds = predict_rows(pipes, [s.rgb for _, s in group], [s.echo for _, s in group], gts, sr, max_depth_m,
                                 sweeps=[s.sweep for _, s in group])
            for (i, s), gt, p in zip(group, gts, preds):
                for key in row_keys:
                    m = accs[key].update(p[key], gt, name=s.source)
                    row = {"dataset": name, "row": key, "index": i, "source": s.source,
                           "sequence_id": s.sequence_id, "frame_index": s.frame_index}
                    row.update({k: m[k] for k in METRIC_KEYS})
                    row["valid_pixels"] = m["valid_pixels"]
                    row["excluded_pred_pixels"] = m["excluded_pred_pixels"]
                    row["scale"] = p.get(f"scale:{key}", "")
                    per_image.append(row)
                if pred_dir is not None:
                    arrays = {key: p[key].astype(np.float32) for key in row_keys}
                    np.savez_compressed(pred_dir / f"{i:06d}.npz", gt_m=gt, max_depth_m=np.float64(max_depth_m),
                                        **arrays)
                if out_dir is not None and i in panel_set:
                    _write_panel(out_dir, name, i, s, gt, p, max_depth_m, pipes.panel_rows)
                    if gradcam:
                        try:
                            _write_gradcam(out_dir, name, i, s, pipes, p)
                        except Exception as exc:  # noqa: BLE001 - a figure must not abort the evaluation
                            LOG.warning("Grad-CAM for %s #%d failed: %s", name, i, exc)
    bar.close()
    summaries = {}
    for key in row_keys:
        s = accs[key].summary()
        s["excluded_pred_pixels"] = int(sum(m.get("excluded_pred_pixels", 0) for m in accs[key].per_image))
        summaries[key] = s
    skipped = int(getattr(dataset, "skipped", 0) or 0)
    return SplitResult(name, str(data_path), float(max_depth_m), summaries, per_image, n, n_without_gt, skipped, specs)


# ----------------------------------------------------------------------------- figures
def _write_panel(out_dir: Path, name: str, index: int, sample, gt: np.ndarray, preds: Mapping, max_depth_m: float,
                 panel_rows: Mapping[str, str]):
    from training.plots import plot_depth_panel

    rgb = sample.rgb
    if rgb.shape[:2] != gt.shape:
        import cv2

        rgb = cv2.resize(rgb, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_AREA)
    plot_depth_panel(
        rgb, gt,
        {"RGB-only": preds["rgb_only"], "echo-enhanced": preds["rgb_echo"],
         **{label: preds[key] for label, key in panel_rows.items()}},
        out_dir / "panels" / f"{name}_{index:06d}.png", max_depth_m=max_depth_m,
        title=f"{name} #{index}: {sample.source}")


def _write_gradcam(out_dir: Path, name: str, index: int, sample, pipes: EvalPipelines, preds: Mapping):
    from avsnet_ros.audio.spectrogram import HOP_LENGTH, batvision_stft
    from training.gradcam import avsnet_grad_cam, upsample_cam
    from training.plots import plot_gradcam_panel

    echo_model, echo_inputs = _model_and_inputs(pipes.echo_median, sample)
    rgb_model, rgb_inputs = _model_and_inputs(pipes.rgb_median, sample)
    res_echo = avsnet_grad_cam(echo_model, echo_inputs["rgb"], echo_inputs["spectrogram"])
    res_rgb = avsnet_grad_cam(rgb_model, rgb_inputs["rgb"], None)
    size_hw = tuple(echo_inputs["rgb"].shape[-2:])
    rgb_small = (echo_inputs["rgb"][0].detach().cpu().permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
    cfg = echo_model.config
    from avsnet_ros.audio.align import crop_echo, echo_window_samples

    echo = pipes.echo_median.prepare_echo(sample.echo, sample.sweep, sample.sample_rate_hz).echo  # what the model read
    window = crop_echo(echo, cfg.max_depth_m, sample.sample_rate_hz, start=cfg.audio_crop)
    spec = batvision_stft(torch.from_numpy(window)).numpy()
    with torch.no_grad():
        d_echo = echo_model(echo_inputs["rgb"], echo_inputs["spectrogram"]).depth_m[0, 0].float().cpu().numpy()
        d_rgb = rgb_model(rgb_inputs["rgb"], None).depth_m[0, 0].float().cpu().numpy()
    plot_gradcam_panel(
        rgb_small, spec[0] if spec.ndim == 4 else spec,
        res_echo.cams["stft"][0].cpu().numpy(),
        upsample_cam(res_echo.cams["rgb"], size_hw)[0].cpu().numpy(),
        upsample_cam(res_rgb.cams["rgb"], size_hw)[0].cpu().numpy(),
        d_echo, d_rgb, out_dir / "gradcam" / f"{name}_{index:06d}.png",
        sample_rate_hz=sample.sample_rate_hz, hop_length=HOP_LENGTH,
        window_samples=echo_window_samples(cfg.max_depth_m, sample.sample_rate_hz),
        title=f"{name} #{index}: Grad-CAM of the mean predicted depth")


def _model_and_inputs(pipe, sample) -> tuple[torch.nn.Module, dict]:
    """The pipeline's AVS-Net module and its preprocessed model inputs for one sample."""
    batch = pipe.preprocess(sample.rgb, sample.echo, sample.sample_rate_hz, need_relative=False, sweep=sample.sweep)
    return pipe.avs_model, {"rgb": batch.rgb_avs, "spectrogram": batch.spectrogram}



# ----------------------------------------------------------------------------- reports
def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.3f}"


def markdown_tables(results: Sequence[SplitResult], meta: Mapping[str, Any]) -> str:
    """Markdown with the paper's columns: Table 1 (AVS-Net) and Table 2 (relative + scaling)."""
    cols = " | ".join(COLUMN_TITLES[k] for k in METRIC_KEYS)
    sep = " | ".join("---" for _ in METRIC_KEYS)
    lines = ["# Evaluation", ""]
    for k, v in meta.items():
        lines.append(f"- {k}: `{v}`")
    for table, title, with_scaling in ((1, "Table 1: AVS-Net pseudo-metric depth", False),
                                       (2, "Table 2: relative depth scaled to metres", True)):
        lines += ["", f"## {title}", "",
                  f"| Dataset | Model |{' Scaling |' if with_scaling else ''} {cols} | images |",
                  f"| --- | --- |{' --- |' if with_scaling else ''} {sep} | --- |"]
        for res in results:
            for spec in res.row_specs:
                if spec.table != table:
                    continue
                s = res.summaries[spec.key]
                vals = " | ".join(_fmt(s[k]) for k in METRIC_KEYS)
                scaling = f" {spec.scaling} |" if with_scaling else ""
                lines.append(f"| {res.name} | {spec.model} |{scaling} {vals} | {s['count']} |")
    lines.append("")
    return "\n".join(lines)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_reports(out_dir: Path, results: Sequence[SplitResult], summary: Mapping[str, Any], meta: Mapping) -> dict:
    """results.md, results.csv (one line per dataset x row), per_image.csv, results.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_text(out_dir / "results.md", markdown_tables(results, meta))
    rows_csv = out_dir / "results.csv"
    with open(rows_csv.with_suffix(".csv.tmp"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "row", "table", "model", "scaling", *METRIC_KEYS, "count", "skipped",
                    "excluded_pred_pixels"])
        for res in results:
            for spec in res.row_specs:
                s = res.summaries[spec.key]
                w.writerow([res.name, spec.key, spec.table, spec.model, spec.scaling, *[s[k] for k in METRIC_KEYS],
                            s["count"], s["skipped"], s["excluded_pred_pixels"]])
    os.replace(rows_csv.with_suffix(".csv.tmp"), rows_csv)
    per_csv = out_dir / "per_image.csv"
    fields = ["dataset", "row", "index", "source", "sequence_id", "frame_index", *METRIC_KEYS, "valid_pixels",
              "excluded_pred_pixels", "scale"]
    with open(per_csv.with_suffix(".csv.tmp"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for res in results:
            for row in res.per_image:
                w.writerow(row)
    os.replace(per_csv.with_suffix(".csv.tmp"), per_csv)
    _atomic_text(out_dir / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    return {"markdown": str(out_dir / "results.md"), "csv": str(rows_csv), "per_image_csv": str(per_csv),
            "json": str(out_dir / "results.json")}


def summary_rows(res: SplitResult) -> dict:
    """{row key: {metric: value, count}} for the JSON summary."""
    out = {}
    for key in (r.key for r in res.row_specs):
        s = res.summaries[key]
        out[key] = {k: s[k] for k in METRIC_KEYS}
        out[key]["count"] = int(s["count"])
    return out


def panel_indices_for(n: int, k: int) -> list[int]:
    """k indices spread evenly over n samples."""
    if n <= 0 or k <= 0:
        return []
    return sorted(set(int(round(x)) for x in np.linspace(0, n - 1, min(k, n))))
