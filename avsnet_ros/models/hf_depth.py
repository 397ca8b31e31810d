"""Any transformers ``*ForDepthEstimation`` folder as the relative / zero-shot depth model.

A folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors``, optionally
``preprocessor_config.json``) of Depth Anything (relative or metric), DPT/MiDaS, ZoeDepth, Depth Pro
or GLPN is loaded with ``local_files_only=True``: nothing is ever downloaded. The same path
parameter also takes the project's own DepthNet checkpoints; :func:`relative_checkpoint_kind`
tells them apart from ``config.json`` (transformers: a ``model_type`` key; the project: ``kind``).

:class:`TransformersDepthModel` is a :class:`~avsnet_ros.models.relative.RelativeDepthModel`
module: ``rgb (B, 3, H, W) float in [0, 1] -> (B, 1, H, W) float32`` on the model's device, with
the image processor's resize (keep-aspect, multiple-of rule of the DPT processors) and
normalisation done in torch on that device, and the prediction resized back to (H, W). Its
``output_type`` says what the values are:

| output_type  | models                                             | values                          |
| "disparity"  | Depth Anything (relative), DPT / MiDaS             | affine-invariant inverse depth  |
| "metric"     | ZoeDepth, Depth Anything (metric), Depth Pro, GLPN | metres                          |

(the project's DepthNet is "depth": positive depth up to scale). The pipeline's ``scaling="auto"``
picks the alignment from it (README "Scaling").

A transformers architecture trained by ``training/train_relative.py --transformers-model`` with the
self-supervised losses is saved the same way, with ``"avsnet_ros_self_supervised"`` in its
config.json (:class:`SelfSupervisedSpec`): its head's final activation is dropped and the raw output
read as a sigmoid disparity (Monodepth2's depth range), so its output_type is "depth".
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocessing import luminance
from .checkpoint import CONFIG_NAME, PICKLE_SUFFIXES, WEIGHTS_NAME, CheckpointError
from .pretrained import transformers_quietly
from .relative import disp_to_depth

LOG = logging.getLogger(__name__)

PREPROCESSOR_NAME = "preprocessor_config.json"
#: config.json key of a self-supervised (train_relative.py) transformers model (SelfSupervisedSpec's fields).
SELF_SUPERVISED_KEY = "avsnet_ros_self_supervised"
#: What a relative model's output means (see the module docstring).
OUTPUT_TYPES = ("depth", "disparity", "metric")
#: transformers model_type -> output type (Depth Anything: by its depth_estimation_type).
HF_OUTPUT_TYPES = {
    "depth_anything": "disparity",  # "metric" when config.depth_estimation_type == "metric"
    "dpt": "disparity",
    "zoedepth": "metric",
    "depth_pro": "metric",
    "glpn": "metric",
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ImageProcessing:
    """The image processor's resize and normalisation, as torch ops.

    size_hw: target (height, width) px; keep_aspect_ratio: scale both sides by the factor closer
    to 1 (DPT processors); ensure_multiple_of: round each side to a multiple of this (px);
    mean/std: per-channel normalisation of [0, 1] RGB (None: no normalisation); resample:
    "bicubic" or "bilinear" (torch interpolate, antialiased).
    """

    size_hw: tuple[int, int]
    keep_aspect_ratio: bool
    ensure_multiple_of: int
    mean: Optional[tuple[float, float, float]]
    std: Optional[tuple[float, float, float]]
    resample: str = "bicubic"

    def output_size_hw(self, input_hw) -> tuple[int, int]:
        """The network input size for an image of ``input_hw`` (transformers' DPT rule)."""
        in_h, in_w = int(input_hw[0]), int(input_hw[1])
        scale_h, scale_w = self.size_hw[0] / in_h, self.size_hw[1] / in_w
        if self.keep_aspect_ratio:  # scale as little as possible
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h
        m = max(1, int(self.ensure_multiple_of))

        def constrain(val: float) -> int:
            x = round(val / m) * m
            return int(x if x >= m else math.ceil(val / m) * m)

        return constrain(scale_h * in_h), constrain(scale_w * in_w)


# Defaults of each processor class when a folder has no preprocessor_config.json.
_DEFAULT_PROCESSING = {
    "depth_anything": ImageProcessing((518, 518), True, 14, _IMAGENET_MEAN, _IMAGENET_STD),
    "dpt": ImageProcessing((384, 384), False, 1, _HALF, _HALF),
    "zoedepth": ImageProcessing((384, 512), True, 32, _HALF, _HALF, "bilinear"),
    "depth_pro": ImageProcessing((1536, 1536), False, 1, _HALF, _HALF, "bilinear"),
    "glpn": ImageProcessing((480, 640), False, 32, None, None, "bilinear"),
}
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes in processor configs; others -> bilinear


def _read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} ({what}) is not readable JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path} ({what}) must hold a JSON object")
    return doc


def relative_checkpoint_kind(path: Union[str, os.PathLike]) -> str:
    """"transformers" or "avsnet_ros" for a relative-model path, from its ``config.json``.

    "transformers": a directory whose ``config.json`` has a ``model_type`` key (it must also hold
    ``model.safetensors``: pickle weights are refused). Everything else is "avsnet_ros", whose loader
    (``checkpoint.load_model``) reports missing directories, pickle files and bad configs itself.
    Raises :class:`CheckpointError` naming the path for an unreadable ``config.json`` or a
    transformers folder without ``model.safetensors``.
    """
    p = Path(path).expanduser()
    if not (p.is_dir() and (p / CONFIG_NAME).is_file()):
        return "avsnet_ros"
    doc = _read_json(p / CONFIG_NAME, "model config")
    if "model_type" not in doc:
        return "avsnet_ros"
    if not (p / WEIGHTS_NAME).is_file():
        pickles = sorted(q.name for q in p.iterdir() if q.suffix in PICKLE_SUFFIXES)
        extra = (f": refusing the pickle weights {pickles} (nothing in them was run); re-save the model with "
                 "save_pretrained (safetensors)") if pickles else ""
        raise CheckpointError(f"transformers model folder {p} has no {WEIGHTS_NAME}{extra}")
    return "transformers"


def hf_output_type(config) -> str:
    """"disparity", "metric" or "depth" (self-supervised here: :data:`SELF_SUPERVISED_KEY`) for a
    transformers depth config (ValueError for unknown model types)."""
    model_type = getattr(config, "model_type", None)
    if SelfSupervisedSpec.from_config(config) is not None:
        return "depth"
    if model_type == "depth_anything" and getattr(config, "depth_estimation_type", "relative") == "metric":
        return "metric"
    if model_type not in HF_OUTPUT_TYPES:
        raise ValueError(f"transformers model_type {model_type!r}: output type unknown (supported: "
                         f"{sorted(HF_OUTPUT_TYPES)})")
    return HF_OUTPUT_TYPES[model_type]


@dataclass(frozen=True)
class SelfSupervisedSpec:
    """The :data:`SELF_SUPERVISED_KEY` entry of a transformers model trained by train_relative.py:
    depth = disp_to_depth(sigmoid(output_scale * head + output_shift), min_depth, max_depth), the
    network fed ``input`` ("rgb" or "luminance")."""

    min_depth: float
    max_depth: float
    input: str = "rgb"
    output_scale: float = 1.0
    output_shift: float = 0.0

    @classmethod
    def from_config(cls, config) -> "Optional[SelfSupervisedSpec]":
        """The spec of a transformers config, None when it has no entry; ValueError for a malformed one."""
        entry = getattr(config, SELF_SUPERVISED_KEY, None)
        if entry is None:
            return None
        try:
            spec = cls(float(entry["min_depth"]), float(entry["max_depth"]), str(entry.get("input", "rgb")),
                       float(entry.get("output_scale", 1.0)), float(entry.get("output_shift", 0.0)))
        except (TypeError, KeyError, ValueError, AttributeError):
            raise ValueError(f"{SELF_SUPERVISED_KEY} must be {{'min_depth': m, 'max_depth': m[, 'input', "
                             f"'output_scale', 'output_shift']}}, got {entry!r}") from None
        if not (0 < spec.min_depth < spec.max_depth and math.isfinite(spec.max_depth)):
            raise ValueError(f"{SELF_SUPERVISED_KEY}: need 0 < min_depth < max_depth, got {spec.min_depth}, "
                             f"{spec.max_depth}")
        if spec.input not in ("rgb", "luminance"):
            raise ValueError(f"{SELF_SUPERVISED_KEY}: input must be 'rgb' or 'luminance', got {spec.input!r}")
        if not (math.isfinite(spec.output_scale) and math.isfinite(spec.output_shift) and spec.output_scale > 0):
            raise ValueError(f"{SELF_SUPERVISED_KEY}: need output_scale > 0 and a finite output_shift, got "
                             f"{spec.output_scale}, {spec.output_shift}")
        return spec


#: model types whose head can be trained self-supervised (its last activation is dropped).
TRAINABLE_MODEL_TYPES = ("depth_anything", "dpt")


def drop_output_activation(model: nn.Module) -> nn.Module:
    """Replace the depth head's final activation (ReLU / sigmoid) by the identity, in place: the raw
    output then goes through a sigmoid as a disparity (Monodepth2), which a ReLU would cut at zero.
    Depth Anything: ``head.activation2`` (its ``* max_depth`` stays, a constant gain); DPT: the last
    module of ``head.head``. ValueError for other model types."""
    model_type = getattr(model.config, "model_type", None)
    if model_type == "depth_anything":
        model.head.activation2 = nn.Identity()
    elif model_type == "dpt" and isinstance(model.head.head[-1], (nn.ReLU, nn.Sigmoid)):
        model.head.head[-1] = nn.Identity()
    else:
        raise ValueError(f"transformers model_type {model_type!r} cannot be trained self-supervised here "
                         f"(supported: {', '.join(TRAINABLE_MODEL_TYPES)})")
    return model


def write_image_processing(path: Union[str, os.PathLike], processing: ImageProcessing) -> Path:
    """``processing`` as a ``preprocessor_config.json`` in ``path`` (read back by :func:`read_image_processing`)."""
    from ..fileio import atomic_write_json

    doc = {"size": {"height": int(processing.size_hw[0]), "width": int(processing.size_hw[1])},
           "keep_aspect_ratio": bool(processing.keep_aspect_ratio),
           "ensure_multiple_of": int(processing.ensure_multiple_of),
           "do_normalize": processing.mean is not None, "do_rescale": True, "rescale_factor": 1 / 255,
           "resample": {v: k for k, v in _RESAMPLE.items()}[processing.resample]}
    if processing.mean is not None:
        doc["image_mean"], doc["image_std"] = list(processing.mean), list(processing.std)
    out = Path(path) / PREPROCESSOR_NAME
    atomic_write_json(out, doc)
    return out


def read_image_processing(path: Union[str, os.PathLike], model_type: str) -> ImageProcessing:
    """The folder's ``preprocessor_config.json`` (if any) over the processor defaults of ``model_type``.

    Read as plain JSON (no processor class, no hub). ``do_rescale`` is implied (the pipeline gives
    [0, 1] RGB); ``do_normalize: false`` drops mean/std; ``size`` may be {"height", "width"},
    {"shortest_edge"} or an int. Not applied: ZoeDepth's ``do_pad`` (reflect padding against border
    artefacts, removed again by its post-processing) and test-time flip averaging.
    """
    base = _DEFAULT_PROCESSING.get(model_type, ImageProcessing((384, 384), False, 1, _HALF, _HALF))
    f = Path(path) / PREPROCESSOR_NAME
    if not f.is_file():
        return base
    doc = _read_json(f, "image processor config")
    try:
        size = doc.get("size", None)
        if size is None:
            size_hw = base.size_hw
        elif isinstance(size, int):
            size_hw = (size, size)
        elif "height" in size and "width" in size:
            size_hw = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            size_hw = (int(size["shortest_edge"]),) * 2
        else:
            raise ValueError(f"size {size!r}")
        if min(size_hw) < 1:
            raise ValueError(f"size {size_hw}")
        multiple = int(doc.get("ensure_multiple_of", doc.get("size_divisor", base.ensure_multiple_of)) or 1)
        keep = bool(doc.get("keep_aspect_ratio", base.keep_aspect_ratio))
        mean, std = base.mean, base.std
        if "image_mean" in doc:
            mean = tuple(float(v) for v in doc["image_mean"])
        if "image_std" in doc:
            std = tuple(float(v) for v in doc["image_std"])
        if doc.get("do_normalize", mean is not None) is False:
            mean = std = None
        if mean is not None and (len(mean) != 3 or len(std) != 3 or min(std) <= 0):
            raise ValueError(f"image_mean {mean} / image_std {std}")
        resample = _RESAMPLE.get(doc.get("resample"), base.resample) if "resample" in doc else base.resample
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{f}: unsupported image processor settings: {exc}") from None
    return ImageProcessing(size_hw, keep, max(1, multiple), mean, std, resample)


class TransformersDepthModel(nn.Module):
    """A transformers depth model as a relative model: rgb (B, 3, H, W) in [0, 1] -> (B, 1, H, W) float32.

    Values: disparity (relative units), metres or depth up to scale, as ``output_type`` says;
    resized back to (H, W) bilinearly. ``depth_range`` (min, max) m: a self-supervised model (its
    head without final activation; :meth:`disparity` gives the sigmoid disparity the losses train).
    Depth Pro's canonical inverse depth is turned into metres with its predicted field of view
    (transformers' post-processing). ``image_size_hw`` is None (any input size):
    the pipeline stages frames at :meth:`input_size_for` its AVS-Net input size.
    """

    def __init__(self, model: nn.Module, processing: ImageProcessing, output_type: str, name: str = "",
                 depth_range: Optional[tuple[float, float]] = None, input_mode: str = "rgb",
                 output_affine: tuple[float, float] = (1.0, 0.0)):
        super().__init__()
        #: (a, b): a self-supervised model's disparity is sigmoid(a * head output + b) (training/hf_relative.py
        #: sets them once from a batch when it starts from pretrained weights, so the sigmoid is not saturated)
        self.output_affine = (float(output_affine[0]), float(output_affine[1]))
        if input_mode not in ("rgb", "luminance"):
            raise ValueError(f"input_mode must be 'rgb' or 'luminance', got {input_mode!r}")
        #: "luminance": the network sees Y (BT.601) in all three channels (a self-supervised model trained so)
        self.input_mode = input_mode
        if output_type not in ("disparity", "metric", "depth"):
            raise ValueError(f"output_type must be 'disparity', 'metric' or 'depth', got {output_type!r}")
        if (output_type == "depth") != (depth_range is not None):
            raise ValueError("output_type 'depth' (self-supervised) goes with a depth_range (min, max) and only then")
        self.model = model
        self.depth_range = None if depth_range is None else (float(depth_range[0]), float(depth_range[1]))
        self.processing = processing
        self.output_type = output_type
        self.model_type = str(getattr(model.config, "model_type", ""))
        self.name = name or self.model_type
        self.image_size_hw: Optional[tuple[int, int]] = None
        mean = processing.mean or (0.0, 0.0, 0.0)
        std = processing.std or (1.0, 1.0, 1.0)
        self.register_buffer("rgb_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def input_size_for(self, reference_hw) -> tuple[int, int]:
        """The processor's network input size for images of ``reference_hw`` (h, w): the size the
        pipeline stages frames at (for the AVS-Net input aspect), so the in-graph resize is the identity."""
        return self.processing.output_size_hw(reference_hw)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if self.depth_range is not None:
            return disp_to_depth(self.disparity(rgb), *self.depth_range)[1]
        return self._predict(rgb)

    def disparity(self, rgb: torch.Tensor) -> torch.Tensor:
        """Self-supervised models: rgb (B, 3, H, W) in [0, 1] -> sigmoid disparity (B, 1, H, W) in (0, 1)
        (depth = 1 / (1/max + (1/min - 1/max) * disparity), relative.disp_to_depth)."""
        if self.depth_range is None:
            raise ValueError(f"{self.name}: disparity() is for self-supervised models (depth_range set)")
        a, b = self.output_affine
        return torch.sigmoid(self._predict(rgb) * a + b)

    def _predict(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must be (B, 3, H, W) in [0, 1], got {tuple(rgb.shape)}")
        in_hw = tuple(int(v) for v in rgb.shape[-2:])
        net_hw = self.processing.output_size_hw(in_hw)
        x = rgb.float()
        if net_hw != in_hw:
            x = F.interpolate(x, size=net_hw, mode=self.processing.resample, align_corners=False, antialias=True)
            x = x.clamp(0.0, 1.0)  # bicubic overshoot; the processors resize uint8 images
        if self.input_mode == "luminance":
            x = luminance(x).expand(-1, 3, -1, -1)
        x = (x - self.rgb_mean) / self.rgb_std
        out = self.model(pixel_values=x)
        pred = out.predicted_depth.float()
        if pred.dim() == 3:
            pred = pred[:, None]  # (B, H', W') -> (B, 1, H', W')
        if self.model_type == "depth_pro":
            pred = self._depth_pro_metres(pred, getattr(out, "field_of_view", None))
        if tuple(pred.shape[-2:]) != in_hw:
            pred = F.interpolate(pred, size=in_hw, mode="bilinear", align_corners=False)
        return pred

    @staticmethod
    def _depth_pro_metres(inverse: torch.Tensor, fov_deg: Optional[torch.Tensor]) -> torch.Tensor:
        # transformers' DepthPro post-processing: depth = 1 / clamp(inv * W / f), f = W / (2 tan(fov / 2))
        if fov_deg is not None:
            inverse = inverse * (2.0 * torch.tan(0.5 * torch.deg2rad(fov_deg.float()))).view(-1, 1, 1, 1)
        return 1.0 / inverse.clamp(1e-4, 1e4)


def load_transformers_depth(path: Union[str, os.PathLike],
                            device: Union[str, torch.device] = "cpu") -> TransformersDepthModel:
    """Load a ``save_pretrained`` folder of a ``*ForDepthEstimation`` model (local files only, eval mode).

    Raises :class:`CheckpointError` for a missing/unreadable folder, a model type without a known
    output type, or weights that do not load.
    """
    p = Path(path).expanduser()
    if relative_checkpoint_kind(p) != "transformers":
        raise CheckpointError(f"{p} is not a transformers model folder (config.json has no model_type)")
    try:
        from transformers import AutoConfig, AutoModelForDepthEstimation

        config = AutoConfig.from_pretrained(str(p), local_files_only=True)
        output_type = hf_output_type(config)
        spec = SelfSupervisedSpec.from_config(config)
        with transformers_quietly():
            model = AutoModelForDepthEstimation.from_pretrained(str(p), local_files_only=True, use_safetensors=True)
        if spec is not None:
            drop_output_activation(model)
    except CheckpointError:
        raise
    except Exception as exc:  # ValueError (unknown type), OSError, safetensors errors, ...
        raise CheckpointError(f"cannot load transformers depth model from {p}: {type(exc).__name__}: {exc}") from None
    processing = read_image_processing(p, config.model_type)
    if spec is None:
        wrapped = TransformersDepthModel(model, processing, output_type, name=p.name)
    else:
        wrapped = TransformersDepthModel(model, processing, output_type, name=p.name,
                                         depth_range=(spec.min_depth, spec.max_depth), input_mode=spec.input,
                                         output_affine=(spec.output_scale, spec.output_shift))
    return wrapped.to(device).eval()


def load_relative_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu"):
    """A relative model from a folder of either kind -> (module in eval mode on device, output_type).

    avsnet_ros DepthNet checkpoints give (DepthNet, "depth"); transformers folders give
    (:class:`TransformersDepthModel`, "disparity" | "metric" | "depth"). Raises :class:`CheckpointError` /
    ValueError (a project checkpoint that is not a DepthNet) with the path in the message.
    """
    if relative_checkpoint_kind(path) == "transformers":
        model = load_transformers_depth(path, device)
        return model, model.output_type
    from .checkpoint import load_model

    model, cfg = load_model(path, device)
    if cfg.kind != "depthnet":
        raise ValueError(f"{path} holds a {cfg.kind!r} model, expected a DepthNet ('depthnet') or a transformers "
                         "depth model")
    return model, "depth"


def relative_output_type(model) -> str:
    """"depth" | "disparity" | "metric" of a relative model (its ``output_type``, else "depth")."""
    return str(getattr(model, "output_type", "depth"))


__all__ = [
    "OUTPUT_TYPES",
    "HF_OUTPUT_TYPES",
    "SELF_SUPERVISED_KEY",
    "TRAINABLE_MODEL_TYPES",
    "ImageProcessing",
    "TransformersDepthModel",
    "relative_checkpoint_kind",
    "hf_output_type",
    "SelfSupervisedSpec",
    "drop_output_activation",
    "write_image_processing",
    "read_image_processing",
    "load_transformers_depth",
    "load_relative_model",
    "relative_output_type",
]
