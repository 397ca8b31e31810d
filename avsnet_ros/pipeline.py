"""The one inference API: RGB frame(s) + binaural echo -> metric depth (paper section 3.2.2).

    rgb uint8 (H, W, 3) ──resize (cv2 INTER_AREA, as training)──> AVS-Net input  ─┐ written into one host
    echo (2, N) float32 ──crop echo window ("file": first echo_window_samples) ─>  │ buffer, one host->device
                           ──> magnitude STFT + resize (avsnet_ros.audio, on device)│ copy (avsnet_ros.preprocessing)
    AVS-Net(rgb, spectrogram) -> pseudo-dense metric depth Mp
    relative model(rgb)       -> relative depth R
    scaling (median, paper eq. 3 | mean_std | affine | none; auto by the relative model's output
        type, README "Scaling") over the valid pixels of Mp -> M = s R (+ b), or 1 / (s D + b) for
        a disparity model (affine)
        (avsnet_ros.scaling.scale_relative, on the device)
    M resized to output_size_hw (default: the input image size) on the device; NaN outside
    [min_depth_m, max_depth_m] (scaling.resize_masked_depth); one device -> host copy of the maps
    (none on the CPU)

Scale statistics use the pixels where Mp is strictly inside (min_depth_m, max_depth_m) (saturated
bins carry no scale information) and R is finite and > 0, on the relative model's grid (Mp is
resized to it bilinearly).

Confidence (B,) in [0, 1]: ``valid_fraction * exp(-spread)`` where ``valid_fraction`` is the share
of pixels used for the scale and ``spread`` = 1.4826 * MAD over those pixels of
``log(Mp) - log(M)`` (the robust std of the log residual between the echo model's pseudo-metric
depth and the scaled relative depth: 0 when R has exactly Mp's structure; 0.1 ~ 10 % disagreement
gives 0.90). 0 when no pixel is valid (scale NaN, depth all NaN).

Pseudo-metric-only mode: without a relative model (``relative_checkpoint=False``, or None when no
shipped DepthNet checkpoint exists) or with ``scaling="none"``, depth_m is Mp itself, scale = 1,
shift = 0, relative_depth is None and the confidence reduces to the valid fraction (nothing
independent to compare Mp with).

Reusing a scale between echoes (the depth node): ``scale_only(rgb, echo)`` when a fresh echo
arrives, then ``depth_from_scale(rgb, scale, shift)`` (relative model only) for the frames that
follow.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from avsnet_ros.audio import DEFAULT_SAMPLE_RATE_HZ, echo_to_spectrogram, echo_window_samples
from avsnet_ros.audio.frontend import EchoFrontEnd, FrontEndResult, SweepSpec
from avsnet_ros.preprocessing import FrameStager, as_image_list, checked_echoes, crop_echoes
from avsnet_ros.scaling import (SCALING_MODES, LocalScaleFit, apply_local_scale, disparity_to_depth,
                                mask_depth_range, rescale_depth, rescale_disparity_depth, resize_bilinear,
                                resize_masked_depth,
                                resolve_scaling, scale_relative,
                                scaled_output_depth)

LOG = logging.getLogger(__name__)


def select_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """"auto" -> CUDA when available else CPU; "cpu"; "cuda" / "cuda:N" (RuntimeError if unavailable)."""
    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


@dataclass
class PipelineResult:
    """Batched result; arrays are numpy float32.

    depth_m: (B, H, W) final metric depth at output_size_hw, NaN outside [min_depth_m, max_depth_m]
        or where no scale exists.
    pseudo_depth_m: (B, H, W) AVS-Net's pseudo-dense metric depth Mp at output_size_hw (None with depth_only).
    relative_depth: (B, H, W) relative depth R at output_size_hw in the relative model's own units
        (disparity for a disparity model, metres for a metric one; None in pseudo-metric-only mode or with depth_only).
    scale: (B,) multiplicative factor (median: median(Mp)/median(R); mean_std: a; affine: a of
        1 / depth = a D + b; none: 1).
    confidence: (B,) in [0, 1] (module docstring).
    shift: (B,) additive term (mean_std: b; affine: b; otherwise 0): depth = scale * R + shift, or
        1 / (scale * D + shift) with affine scaling.
    local_fit: scaling "local" only: the scale field (scaling.LocalScaleFit; depth = R * field, scale =
        its global median factor); pass it to depth_from_scale to reuse it on later frames.
    echo_quality, echo_level_dbfs: (B,) the echo front-end's direct-path quality (0..1) and the
        recording's direct-path level (dBFS), None for an RGB-only model (prepare_echo).
    """

    depth_m: np.ndarray
    pseudo_depth_m: Optional[np.ndarray]
    relative_depth: Optional[np.ndarray]
    scale: np.ndarray
    confidence: np.ndarray
    shift: np.ndarray
    local_fit: Optional[LocalScaleFit] = None
    echo_quality: Optional[np.ndarray] = None
    echo_level_dbfs: Optional[np.ndarray] = None


class ScaleEstimate(NamedTuple):
    """Result of :meth:`DepthPipeline.scale_only`: (scale (B,), confidence (B,), pseudo_depth_m (B, h, w) at the
    AVS-Net input size, shift (B,))."""

    scale: np.ndarray
    confidence: np.ndarray
    pseudo_depth_m: np.ndarray
    shift: np.ndarray
    echo_quality: Optional[np.ndarray] = None


@dataclass
class PreparedBatch:
    """Device tensors of one batch: rgb_avs (B,3,Ha,Wa) [0,1], spectrogram (B,2,Ha,Wa) or None,
    rgb_rel (B,3,Hr,Wr) or None, input_size_hw of the given images, single (one (H,W,3) image given)."""

    rgb_avs: torch.Tensor
    spectrogram: Optional[torch.Tensor]
    rgb_rel: Optional[torch.Tensor]
    input_size_hw: tuple[int, int]
    single: bool
    echoes: "Optional[list[FrontEndResult]]" = None

    def echo_quality(self) -> Optional[np.ndarray]:
        return None if self.echoes is None else np.array([e.quality for e in self.echoes], dtype=np.float32)

    def echo_level_dbfs(self) -> Optional[np.ndarray]:
        return None if self.echoes is None else np.array([e.level_dbfs for e in self.echoes], dtype=np.float32)


class DepthPipeline:
    """AVS-Net + relative depth model + scaling.

    Build with :meth:`from_checkpoints` (directories written by ``save_checkpoint``; None = the
    shipped ones under assets/checkpoints) or directly from in-memory models (tests, evaluation
    during training)::

        DepthPipeline(avs_model, relative_model=None, device="auto", scaling="auto", amp=False,
                      relative_image_size_hw=None)

    ``relative_model``: a :class:`~avsnet_ros.models.DepthNet` or any RelativeDepthModel module
    (``as_relative_model``; a transformers model from ``models.hf_depth``); its input size is
    ``relative_image_size_hw``, else the DepthNet's config size, else the transformers processor's
    size for the AVS-Net input aspect, else the AVS-Net size. ``scaling`` "auto" (and every other
    value) is resolved against the model's ``output_type`` (``scaling.resolve_scaling``;
    ``self.scaling`` holds the result). Models are put in eval mode on ``device``.
    """

    def __init__(
        self,
        avs_model: nn.Module,
        relative_model: Optional[Any] = None,
        device: Union[str, torch.device] = "auto",
        scaling: str = "auto",
        amp: bool = False,
        relative_image_size_hw: Optional[Sequence[int]] = None,
    ):
        from avsnet_ros.models.relative import as_relative_model

        if scaling not in SCALING_MODES:
            raise ValueError(f"scaling must be one of {SCALING_MODES}, got {scaling!r}")
        cfg = getattr(avs_model, "config", None)
        if cfg is None or getattr(cfg, "kind", None) != "avsnet":
            raise TypeError("avs_model must be an AVSNet (with .config of kind 'avsnet')")
        self.device = select_device(device)
        self._stager = FrameStager(self.device)
        self.avs_config = cfg
        # the AVS-Net checkpoint's contract (read-only by convention; the config is frozen)
        self.min_depth_m, self.max_depth_m = float(cfg.min_depth_m), float(cfg.max_depth_m)
        self.sample_rate_hz, self.use_audio = int(cfg.sample_rate_hz), bool(cfg.use_audio)
        #: The checkpoint's echo front-end ("raw" for checkpoints trained before it existed).
        self.frontend = EchoFrontEnd(getattr(cfg, "audio_frontend", "raw"), sample_rate_hz=self.sample_rate_hz)
        self.avs_model = avs_model.to(self.device).eval()
        self.amp = bool(amp) and self.device.type == "cuda"
        self.relative_model = None
        self.relative_size_hw: Optional[tuple[int, int]] = None
        if relative_model is not None:
            rel = as_relative_model(relative_model)
            if relative_image_size_hw is None and hasattr(rel, "input_size_for"):
                relative_image_size_hw = rel.input_size_for(cfg.image_size_hw)  # transformers processor size
            size = relative_image_size_hw or getattr(rel, "image_size_hw", None) or cfg.image_size_hw
            self.relative_size_hw = (int(size[0]), int(size[1]))
            if isinstance(rel, nn.Module):
                rel = rel.to(self.device).eval()
            self.relative_model = rel
        #: "depth" (DepthNet), "disparity" or "metric" (transformers models, models.hf_depth)
        self.relative_output = str(getattr(self.relative_model, "output_type", "depth"))
        if self.relative_model is not None:
            self.scaling = resolve_scaling(scaling, self.relative_output)
        else:  # pseudo-metric only: nothing to align, any mode is accepted as given
            self.scaling = "median" if scaling == "auto" else scaling
        if self.relative_model is None and scaling != "none":
            LOG.info("no relative depth model: pseudo-metric-only mode (depth = AVS-Net output)")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoints(
        cls,
        avs_checkpoint: Optional[Union[str, Path]] = None,
        relative_checkpoint: Optional[Union[str, Path, bool]] = None,
        device: Union[str, torch.device] = "auto",
        scaling: str = "auto",
        amp: bool = False,
    ) -> "DepthPipeline":
        """Load checkpoint directories (strict, no code execution).

        avs_checkpoint None -> assets/checkpoints/avsnet_tiny (error if not shipped).
        relative_checkpoint None -> assets/checkpoints/depthnet_tiny, or pseudo-metric-only mode
        (logged) when it is not shipped; False or "none" -> pseudo-metric-only mode. A DepthNet
        checkpoint or a transformers ``*ForDepthEstimation`` folder (``models.hf_depth``: kind read
        from config.json, loaded offline); a missing or unreadable folder raises CheckpointError.
        """
        from avsnet_ros.models.checkpoint import load_model
        from avsnet_ros.paths import asset_path

        dev = select_device(device)
        if avs_checkpoint is None:
            avs_checkpoint = asset_path("checkpoints", "avsnet_tiny")
            if not Path(avs_checkpoint).is_dir():
                raise FileNotFoundError(
                    f"no shipped AVS-Net checkpoint at {avs_checkpoint}; pass avs_checkpoint=DIR "
                    "(a directory written by training/train_avs.py)"
                )
        avs_model, avs_cfg = load_model(avs_checkpoint, dev)
        if avs_cfg.kind != "avsnet":
            raise ValueError(f"{avs_checkpoint} holds a {avs_cfg.kind!r} model, expected an AVS-Net ('avsnet')")
        relative = None
        if relative_checkpoint is None:
            shipped = asset_path("checkpoints", "depthnet_tiny")
            if Path(shipped).is_dir():
                relative_checkpoint = shipped
            else:
                LOG.warning("no relative checkpoint given and none shipped at %s: pseudo-metric-only mode", shipped)
        if (relative_checkpoint is not None and relative_checkpoint is not False
                and str(relative_checkpoint).lower() != "none"):
            from avsnet_ros.models.hf_depth import load_relative_model

            relative, _ = load_relative_model(relative_checkpoint, dev)
        return cls(avs_model, relative, device=dev, scaling=scaling, amp=amp)

    # ------------------------------------------------------------------ properties
    @property
    def pseudo_metric_only(self) -> bool:
        return self.relative_model is None or self.scaling == "none"

    def input_size_hw(self) -> tuple[int, int]:
        """AVS-Net input size (h, w)."""
        return (int(self.avs_config.image_size_hw[0]), int(self.avs_config.image_size_hw[1]))

    def min_echo_samples(self) -> int:
        """Shortest echo buffer accepted ("file" crop: the echo window for max_depth_m; "onset" needs more)."""
        return echo_window_samples(self.max_depth_m, self.sample_rate_hz)

    def describe(self) -> str:
        rel = "none (pseudo-metric only)" if self.relative_model is None else (
            f"{type(self.relative_model).__name__} ({self.relative_output}) at {self.relative_size_hw}")
        return (
            f"AVS-Net {self.avs_config.preset} {'RGB+echo' if self.use_audio else 'RGB-only'} "
            f"at {self.input_size_hw()}, "
            f"relative: {rel}, scaling {self.scaling}, device {self.device}{', AMP' if self.amp else ''}"
        )

    # ------------------------------------------------------------------ preprocessing
    def prepare_echo(self, echo, sweep: Optional[SweepSpec] = None,
                     sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ, spectrogram: bool = False) -> FrontEndResult:
        """One echo (2, N) through this model's front-end (audio.frontend.EchoFrontEnd; "raw" returns it
        unchanged with quality 1). sweep: the emitted sweep when known (the emitter's avsnet/chirp, a
        dataset's `sweep` column), else None (identified from the recording). A FrontEndResult passed
        as ``echo`` to __call__/scale_only is used as it is, so a caller that checks the quality first
        (the depth node) pays for the front-end once per echo. spectrogram=True also computes the
        model's input spectrogram (attach_spectrogram), so calls given the result skip the echo crop
        and STFT too. Raises AudioError like __call__."""
        e = checked_echoes(echo, 1, sample_rate_hz, self.sample_rate_hz)[0]
        result = self.frontend(e, sweep)
        return self.attach_spectrogram(result) if spectrogram else result

    def _spectrogram_key(self) -> tuple:
        """What this pipeline's input spectrogram of an echo depends on (FrontEndResult.derived's key)."""
        return ("spectrogram", str(self.device), self.input_size_hw(), self.avs_config.audio_crop,
                float(self.max_depth_m), int(self.sample_rate_hz))

    def attach_spectrogram(self, result: FrontEndResult) -> FrontEndResult:
        """Compute the model's input spectrogram of a front-end result ((2, h, w) float32 on this
        pipeline's device: the echo window, STFT, resize, as preprocess does) and keep it in
        ``result.derived``; returns `result`. Calls given the result then take it instead of cropping
        and transforming the echo again: the depth node does this on its echo thread, once per echo, so
        the frame that pairs with the echo skips ~1.7 ms of STFT (1280x720 + 30 m window on 2 CPU cores,
        bench/bench_pipeline.py). The same function on the same window, so the depth is the same bit for
        bit (test_pipeline.py). Nothing for an RGB-only model. Raises AudioError for a too short echo."""
        if not self.use_audio:
            return result
        if self._attached_spectrogram(result) is None:
            window = self._echo_windows([result])[0]
            with torch.no_grad():  # not inference_mode: the tensor may meet autograd-enabled code later
                wave = torch.from_numpy(window).to(self.device)[None]
                # with the echo it came from: a dataclasses.replace(result, echo=...) copy shares the dict
                result.derived[self._spectrogram_key()] = (result.echo,
                                                           echo_to_spectrogram(wave, self.input_size_hw())[0])
        return result

    def _attached_spectrogram(self, result: FrontEndResult) -> Optional[torch.Tensor]:
        """attach_spectrogram's (2, h, w) for `result` when it was made from this very echo, else None."""
        entry = result.derived.get(self._spectrogram_key())
        return entry[1] if entry is not None and entry[0] is result.echo else None

    def _echo_windows(self, fronted: "list[FrontEndResult]") -> "list[np.ndarray]":
        """The model's echo window of each front-end result (config ``audio_crop``): the STFT's input."""
        return crop_echoes([f.echo for f in fronted], len(fronted), self.sample_rate_hz, self.sample_rate_hz,
                           self.max_depth_m, self.avs_config.audio_crop)

    def _front_end(self, echo, batch: int, sample_rate_hz: int, sweep) -> "list[FrontEndResult]":
        if isinstance(echo, FrontEndResult):
            echo = [echo]
        if isinstance(echo, (list, tuple)) and echo and all(isinstance(e, FrontEndResult) for e in echo):
            if len(echo) != batch:
                raise ValueError(f"got {batch} images but {len(echo)} echo buffers")
            return list(echo)
        raw = checked_echoes(echo, batch, sample_rate_hz, self.sample_rate_hz)
        sweeps = list(sweep) if isinstance(sweep, (list, tuple)) else [sweep] * batch
        return [self.frontend(e, s) for e, s in zip(raw, sweeps)]

    def preprocess(self, rgb, echo=None, sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ, need_avs: bool = True,
                   need_relative: bool = True, sweep=None) -> PreparedBatch:
        """uint8 RGB (H, W, 3) / (B, H, W, 3) / list, echo (2, N) / (B, 2, N) / list -> device tensors.

        RGB is resized on the host like the training data (avsnet_ros.preprocessing.prepare_rgb:
        INTER_AREA when shrinking) straight into one float32 buffer, together with the echoes cut to
        the echo window (config ``audio_crop``); that buffer goes to the device in one copy (none on
        the CPU) and the STFT runs there.
        """
        images, single = as_image_list(rgb)
        size = images[0].shape[:2]
        use_rel = need_relative and self.relative_model is not None
        use_echo = need_avs and self.use_audio
        sizes = ([self.input_size_hw()] if need_avs else []) + ([self.relative_size_hw] if use_rel else [])
        echoes = fronted = spec = None
        if use_echo:
            fronted = self._front_end(echo, len(images), sample_rate_hz, sweep)
            ready = [self._attached_spectrogram(f) for f in fronted]
            if all(r is not None for r in ready):
                spec = ready[0][None] if len(ready) == 1 else torch.stack(ready)
            else:
                echoes = self._echo_windows(fronted)
        staged = self._stager.stage(images, list(dict.fromkeys(sizes)), echoes)
        rgb_avs = staged.rgb[self.input_size_hw()] if need_avs else None
        rgb_rel = staged.rgb[self.relative_size_hw] if use_rel else None
        if use_echo and spec is None:
            spec = echo_to_spectrogram(staged.echo, self.input_size_hw())
        return PreparedBatch(rgb_avs, spec, rgb_rel, (int(size[0]), int(size[1])), single, fronted)

    # ------------------------------------------------------------------ inference
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    def _forward(self, batch: PreparedBatch) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        with self._autocast():
            pseudo = self.avs_model(batch.rgb_avs, batch.spectrogram).depth_m.float()
            relative = None
            if batch.rgb_rel is not None:
                relative = self.relative_model(batch.rgb_rel).float()
        return pseudo, relative

    def _resize(self, x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size_hw):
            return x
        return resize_bilinear(x, size_hw)

    @torch.inference_mode()
    def __call__(self, rgb, echo=None, sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ,
                 output_size_hw: Optional[Sequence[int]] = None,
                 depth_only: bool = False, sweep=None) -> PipelineResult:
        """RGB + echo -> :class:`PipelineResult` (batched; B = 1 for a single image).

        echo: (2, N) / (B, 2, N) / list of buffers, or FrontEndResults from prepare_echo. sweep: the
        emitted SweepSpec (one, or one per image) when known; None lets the front-end identify it.

        depth_only: skip resizing and copying pseudo_depth_m and relative_depth to the output size
        (both None in the result), for callers that publish only the depth (the depth node).
        Scaling, resizing and masking run on the model's device; the maps reach the host in one
        copy (on the CPU the result arrays are the tensors' own memory).
        """
        batch = self.preprocess(rgb, echo, sample_rate_hz, need_relative=not self.pseudo_metric_only, sweep=sweep)
        pseudo, relative = self._forward(batch)
        fits: list = []
        depth, scale, shift, conf = scale_relative(
            pseudo, relative, self.min_depth_m, self.max_depth_m, "none" if self.pseudo_metric_only else self.scaling,
            local_fit_out=fits)
        out_hw = self._output_size(output_size_hw, batch)
        keep_relative = relative is not None and not depth_only
        if relative is not None and self.scaling == "affine":
            # 1 / (a D + b) is not linear in D: resize the disparity, then invert (NaN where a D + b <= 0)
            rel_out = self._resize(relative, out_hw)
            maps = [mask_depth_range(disparity_to_depth(rel_out, scale, shift), self.min_depth_m, self.max_depth_m,
                                     inplace=True)]
            names = ["depth"]
            if keep_relative:
                maps.append(rel_out)
                names.append("relative")
        elif relative is not None and self.scaling in ("mean_std", "local"):
            # mean_std leaves invalid R pixels unscaled and local scales each pixel by its own factor (not one
            # affine map of R): resize the scaled depth itself
            grid = torch.cat([depth, relative], dim=1) if keep_relative else depth
            maps = [resize_masked_depth(grid, out_hw, self.min_depth_m, self.max_depth_m)]
            names = ["depth", "relative"] if keep_relative else ["depth"]
        else:
            # median: depth = scale * R; pseudo-metric-only: depth = Mp (scale 1, shift 0). Bilinear
            # resizing is linear: one resize of the source serves the depth and its own map.
            source = relative if relative is not None else pseudo
            source_out = self._resize(source, out_hw)
            # depth_only: the resized source is not returned, so the depth is written over it
            maps = [scaled_output_depth(source_out, scale, shift, depth, self.min_depth_m, self.max_depth_m,
                                        inplace=depth_only)]
            names = ["depth"]
            if not depth_only:
                maps.append(source_out)
                names.append("relative" if relative is not None else "pseudo")
        if not depth_only and "pseudo" not in names:
            maps.append(self._resize(pseudo, out_hw))
            names.append("pseudo")
        host = self._to_host(maps)
        out = dict(zip(names, (m[:, c] for m in host for c in range(m.shape[1]))))
        small = torch.stack([scale, conf, shift]).cpu().numpy()
        return PipelineResult(
            depth_m=np.ascontiguousarray(out["depth"]),
            pseudo_depth_m=np.ascontiguousarray(out["pseudo"]) if "pseudo" in out else None,
            relative_depth=np.ascontiguousarray(out["relative"]) if "relative" in out else None,
            scale=small[0].astype(np.float32),
            confidence=small[1].astype(np.float32),
            shift=small[2].astype(np.float32),
            local_fit=fits[0] if fits else None,
            echo_quality=batch.echo_quality(),
            echo_level_dbfs=batch.echo_level_dbfs(),
        )

    def _output_size(self, output_size_hw, batch: PreparedBatch) -> tuple[int, int]:
        size = output_size_hw or batch.input_size_hw
        return (int(size[0]), int(size[1]))

    def _to_host(self, maps: "list[torch.Tensor]") -> "list[np.ndarray]":
        """Device maps (B, C_i, H, W) -> numpy: on the CPU their own memory; on a GPU one copy of all."""
        if self.device.type == "cpu":
            return [m.numpy() for m in maps]
        host = torch.cat(maps, dim=1).cpu().numpy()  # the one device -> host copy
        out, c = [], 0
        for m in maps:
            out.append(host[:, c: c + m.shape[1]])
            c += m.shape[1]
        return out

    @torch.inference_mode()
    def scale_only(self, rgb, echo=None, sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ, sweep=None) -> ScaleEstimate:
        """Scale (and shift) from one RGB + echo pair, for reuse on the next frames (no output resizing)."""
        batch = self.preprocess(rgb, echo, sample_rate_hz, need_relative=not self.pseudo_metric_only, sweep=sweep)
        pseudo, relative = self._forward(batch)
        _, scale, shift, conf = scale_relative(
            pseudo, relative, self.min_depth_m, self.max_depth_m, "none" if self.pseudo_metric_only else self.scaling
        )
        small = torch.stack([scale, conf, shift]).cpu().numpy()
        return ScaleEstimate(scale=small[0], confidence=small[1], pseudo_depth_m=pseudo[:, 0].cpu().numpy(),
                             shift=small[2], echo_quality=batch.echo_quality())

    @torch.inference_mode()
    def relative(self, rgb) -> np.ndarray:
        """Relative depth (B, Hr, Wr) at the relative model's input size (relative units)."""
        if self.relative_model is None:
            raise RuntimeError("pseudo-metric-only pipeline: there is no relative depth model")
        batch = self.preprocess(rgb, None, need_avs=False)
        with self._autocast():
            rel = self.relative_model(batch.rgb_rel).float()
        return rel[:, 0].cpu().numpy()

    @torch.inference_mode()
    def depth_from_scale(self, rgb, scale, shift=0.0, output_size_hw: Optional[Sequence[int]] = None,
                         local_fit: Optional[LocalScaleFit] = None) -> np.ndarray:
        """Metric depth from the relative model and a given (reused) scale: scale * R + shift
        (affine scaling: 1 / (scale * D + shift), NaN where that is <= 0).

        rgb: one (H, W, 3) image -> (H, W); a batch -> (B, H, W). NaN outside [min, max] depth.
        local_fit (scaling "local", from an earlier PipelineResult): depth = R * its field *
        (scale / its global scale), i.e. the reused field, moved by a (filtered) scale.
        """
        if self.relative_model is None:
            raise RuntimeError("pseudo-metric-only pipeline: a scale cannot be reused without a relative model")
        batch = self.preprocess(rgb, None, need_avs=False)
        with self._autocast():
            rel = self.relative_model(batch.rgb_rel).float()
        b = rel.shape[0]
        if local_fit is not None:
            ratio = np.asarray(scale, dtype=np.float32).reshape(-1) / local_fit.global_scale.cpu().numpy().reshape(-1)
            local = apply_local_scale(rel, local_fit) * torch.as_tensor(ratio, device=rel.device).view(-1, 1, 1, 1)
            depth = resize_masked_depth(local, self._output_size(output_size_hw, batch), self.min_depth_m,
                                        self.max_depth_m)
            out = self._to_host([depth])[0][:, 0]
            return np.ascontiguousarray(out[0] if batch.single else out)
        s = torch.as_tensor(np.asarray(scale, dtype=np.float32).reshape(-1)).to(rel.device).expand(b).view(b, 1, 1, 1)
        t = torch.as_tensor(np.asarray(shift, dtype=np.float32).reshape(-1)).to(rel.device).expand(b).view(b, 1, 1, 1)
        rel_out = self._resize(rel, self._output_size(output_size_hw, batch))
        if self.scaling == "affine":  # as the full call: resize D, then 1 / (s D + t)
            depth = mask_depth_range(disparity_to_depth(rel_out, s.view(b), t.view(b)), self.min_depth_m,
                                     self.max_depth_m, inplace=True)
            out = self._to_host([depth])[0][:, 0]
            return np.ascontiguousarray(out[0] if batch.single else out)
        # as the full call computes a median-scaled depth: resize R, then scale (bilinear is linear)
        depth = scaled_output_depth(rel_out, s.view(b), t.view(b), rel * s + t, self.min_depth_m, self.max_depth_m,
                                    inplace=True)
        out = self._to_host([depth])[0][:, 0]
        return np.ascontiguousarray(out[0] if batch.single else out)

    def rescale_depth(self, depth_m, shift: float, from_scale: float, to_scale: float, inplace: bool = False):
        """A depth map this pipeline made with (from_scale, shift) -> the same relative map at to_scale
        (numpy or torch): ``scaling.rescale_depth`` (depth = s R + t; inplace=True may write into
        depth_m), or ``rescale_disparity_depth`` with affine scaling (1 / depth = s D + t; always a new
        map). For the node's scale filter."""
        if self.scaling == "affine":
            return rescale_disparity_depth(depth_m, shift, from_scale, to_scale)
        return rescale_depth(depth_m, shift, from_scale, to_scale, inplace=inplace)


__all__ = [
    "select_device",
    "DepthPipeline",
    "PipelineResult",
    "ScaleEstimate",
    "PreparedBatch",
    "SCALING_MODES",
]
