"""Stage 2 with a transformers depth architecture (Depth Anything, DPT) in place of the DepthNet.

``train_relative.py --transformers-model DIR`` trains it with the same self-supervised losses
(RelativeTrainModule): DIR is a ``save_pretrained`` folder; with ``model.safetensors`` its weights
initialise the network (fine-tuning from local weights), with config.json alone it starts from
random weights (from scratch). Nothing is downloaded.

The head's final activation is dropped and its raw output read as a sigmoid disparity over the
DepthNet config's depth range (Monodepth2's disp_to_depth), as DepthNet's decoder does; the
network sees the DepthNet config's image size (rounded to the backbone's patch multiple in the
graph). Checkpoints and ``best/depthnet`` are ``save_pretrained`` folders with
``"avsnet_ros_self_supervised": {"min_depth", "max_depth"}`` in config.json and a
preprocessor_config.json at that size: the depth node, pipeline and every CLI load them through
``--relative-checkpoint`` / ``relative_checkpoint`` like any transformers model (output "depth":
median / mean-std scaling, as the DepthNet).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch
from torch import nn

from avsnet_ros.models.checkpoint import WEIGHTS_NAME, CheckpointError
from avsnet_ros.models.hf_depth import (SELF_SUPERVISED_KEY, TRAINABLE_MODEL_TYPES, ImageProcessing,
                                        SelfSupervisedSpec, TransformersDepthModel, drop_output_activation,
                                        load_transformers_depth, read_image_processing, write_image_processing)
from avsnet_ros.models.pretrained import transformers_quietly

#: mean sigmoid input after calibrate_output: disparity sigmoid(-3) = 0.047, depth ~2 (relative units) over the
#: default 0.1 .. 100 range (the stage-2 rooms: 0.6-8.8 m), in the sigmoid's responsive part
CALIBRATED_LOGIT_MEAN = -3.0
#: the backbone patch multiple the network input is rounded to, per model type
_MULTIPLE = {"depth_anything": 14, "dpt": 16}


class TransformersDepthNet(nn.Module):
    """The DepthNet interface the stage-2 losses use, over a :class:`TransformersDepthModel`.

    forward(rgb (B, 3, H, W) in [0, 1]) -> {0: sigmoid disparity (B, 1, H, W)} (one scale: the
    transformers heads predict at one resolution); depth(rgb) -> depth (B, 1, H, W) in
    [min_depth, max_depth]; ``config`` has min_depth / max_depth (m). ``save_folder`` /
    ``load_folder`` are the checkpoint hooks of training.checkpointing.
    """

    def __init__(self, net: TransformersDepthModel):
        super().__init__()
        if net.depth_range is None:
            raise ValueError("TransformersDepthNet needs a self-supervised TransformersDepthModel (depth_range set)")
        self.net = net
        self.config = SimpleNamespace(min_depth=net.depth_range[0], max_depth=net.depth_range[1],
                                      kind="transformers", model_type=net.model_type)

    def forward(self, rgb: torch.Tensor) -> dict[int, torch.Tensor]:
        return {0: self.net.disparity(rgb)}

    def depth(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(rgb)

    def save_folder(self, path, extra: Optional[dict] = None) -> Path:
        """save_pretrained (safetensors) + preprocessor_config.json into ``path``; ``extra`` (the training
        command, data ...) goes into config.json under avsnet_ros_training."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        config = self.net.model.config
        a, b = self.net.output_affine
        spec = SelfSupervisedSpec(self.config.min_depth, self.config.max_depth, self.net.input_mode, a, b)
        setattr(config, SELF_SUPERVISED_KEY, asdict(spec))
        if extra:
            json.dumps(dict(extra))  # fails early if extra is not JSON
            config.avsnet_ros_training = dict(extra)
        with transformers_quietly():
            self.net.model.save_pretrained(str(out), safe_serialization=True)
        write_image_processing(out, self.net.processing)
        return out

    def load_folder(self, path) -> Any:
        """Strict weight load from a folder written by :meth:`save_folder` (resume); returns its config."""
        loaded = load_transformers_depth(path)
        if (loaded.model_type, loaded.depth_range, loaded.input_mode) != (self.net.model_type, self.net.depth_range,
                                                                          self.net.input_mode):
            raise CheckpointError(f"{path}: {loaded.model_type} over {loaded.depth_range} m, this run trains "
                                  f"{self.net.model_type} over {self.net.depth_range} m")
        self.net.model.load_state_dict(loaded.model.state_dict(), strict=True)
        self.net.output_affine = loaded.output_affine
        return loaded.model.config

    @torch.no_grad()
    def calibrate_output(self, rgb: torch.Tensor) -> tuple[float, float]:
        """Set the output affine (a, b) so that this batch's head outputs enter the sigmoid with mean
        CALIBRATED_LOGIT_MEAN and a spread of at most 1 (once, before training). A pretrained head's
        disparities (Depth Anything: 0-20) would saturate the sigmoid and stop its gradient: a = 1 / std
        shrinks them. A random head's outputs are ~0 (std ~1e-5): a stays 1 (never amplified) and b
        starts the depth at the same level as a pretrained start instead of the sigmoid's midpoint
        (depth ~0.2 relative units, from where a from-scratch run drove its level to max_depth and
        saturated). Keeps the order of the values (a > 0). Returns (a, b)."""
        was_training = self.training
        self.eval()
        raw = self.net._predict(rgb).float()
        self.train(was_training)
        a = 1.0 / max(float(raw.std()), 1.0)
        b = CALIBRATED_LOGIT_MEAN - float(raw.mean()) * a
        self.net.output_affine = (a, b)
        return a, b


def build_transformers_depthnet(folder, image_size_hw, min_depth: float, max_depth: float,
                                seed: Optional[int] = None, input_mode: str = "rgb") -> TransformersDepthNet:
    """A trainable transformers depth network from ``folder`` (config.json [+ model.safetensors]).

    With weights: ``from_pretrained(local_files_only=True)`` (the head's last activation is then
    dropped, so its output starts as the pretrained prediction before the sigmoid); without: random
    weights from the config (``seed`` seeds them). The network input is ``image_size_hw`` rounded to
    the patch multiple, normalised as the folder's processor says (or the model type's default);
    ``input_mode`` "luminance" feeds it Y in all three channels (RelativeDepthConfig.input).
    Raises CheckpointError for a missing/unreadable folder or an unsupported model type.
    """
    from transformers import AutoConfig, AutoModelForDepthEstimation

    p = Path(folder).expanduser()
    if not (p.is_dir() and (p / "config.json").is_file()):
        raise CheckpointError(f"--transformers-model {p}: not a folder with a transformers config.json")
    try:
        config = AutoConfig.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"--transformers-model {p}: unreadable config.json: {type(exc).__name__}: {exc}") \
            from None
    model_type = getattr(config, "model_type", None)
    if model_type not in TRAINABLE_MODEL_TYPES:
        raise CheckpointError(f"--transformers-model {p}: model_type {model_type!r} cannot be trained self-supervised "
                              f"here (supported: {', '.join(TRAINABLE_MODEL_TYPES)})")
    for stale in (SELF_SUPERVISED_KEY, "avsnet_ros_training"):  # a folder this script wrote: start afresh
        if hasattr(config, stale):
            delattr(config, stale)
    try:
        if (p / WEIGHTS_NAME).is_file():
            with transformers_quietly():
                model = AutoModelForDepthEstimation.from_pretrained(str(p), config=config, local_files_only=True,
                                                                    use_safetensors=True)
        else:
            if seed is not None:
                torch.manual_seed(seed)
            model = AutoModelForDepthEstimation.from_config(config)
    except Exception as exc:
        raise CheckpointError(f"--transformers-model {p}: cannot build the model: {type(exc).__name__}: {exc}") \
            from None
    drop_output_activation(model)
    base = read_image_processing(p, model_type)
    processing = ImageProcessing((int(image_size_hw[0]), int(image_size_hw[1])), False,
                                 _MULTIPLE.get(model_type, base.ensure_multiple_of), base.mean, base.std,
                                 base.resample)
    net = TransformersDepthModel(model.train(), processing, "depth", name=p.name,
                                 depth_range=(float(min_depth), float(max_depth)), input_mode=input_mode)
    return TransformersDepthNet(net)

