"""Pretrained-weight loaders: local transformers model folders -> our architectures (never downloads).

- :func:`load_visual_pretrained`: ZoeDepth weights (``from_pretrained(local_files_only=True)``) into
  AVS-Net's visual branch, copying every tensor whose name and shape match;
- :func:`load_local_resnet`: a transformers ResNet adapted to the configured input channels (the
  AVS-Net audio encoder, DepthNet/PoseNet encoders).

Used by models/avsnet.py and models/relative.py (one implementation for both).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from transformers import ResNetConfig, ResNetModel, ZoeDepthConfig, ZoeDepthForDepthEstimation
from transformers.utils import logging as hf_logging

LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def transformers_quietly():
    """transformers' tqdm bars ("Loading weights", "Writing model shards") off for the block, restored after.

    Why: they are written to stderr on every load and save; in a node's log or a CLI's output they are
    noise around the lines that matter (the node logs what it loaded)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def check_local_model_dir(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"{what}: {p} is not a local transformers model folder (config.json + weights). Weights are "
            "never downloaded: copy e.g. a saved ZoeDepth/ResNet folder to disk and point to it."
        )
    return p


def load_visual_pretrained(visual: ZoeDepthForDepthEstimation, path: str, zcfg: ZoeDepthConfig) -> None:
    """Load local ZoeDepth weights (``from_pretrained(local_files_only=True)``) into ``visual``.

    The architecture is ours (``zcfg``); every tensor of the saved model whose name and shape match
    is copied. Missing backbone/neck weights mean the folder is not a compatible ZoeDepth model:
    that raises instead of silently training from random features.
    """
    p = check_local_model_dir(path, "visual_pretrained_path")
    with transformers_quietly():
        stock = ZoeDepthForDepthEstimation.from_pretrained(str(p), local_files_only=True)
    src = stock.state_dict()
    dst = visual.state_dict()
    copied, mismatched = {}, []
    for key, value in src.items():
        if key in dst:
            if dst[key].shape == value.shape:
                copied[key] = value
            else:
                mismatched.append(f"{key}: saved {tuple(value.shape)} vs model {tuple(dst[key].shape)}")
    core_missing = [k for k in dst if k not in copied and not k.startswith("metric_head.")]
    if core_missing or mismatched:
        raise ValueError(
            f"ZoeDepth weights in {p} do not fit the configured architecture; mismatched: {mismatched[:10]}, "
            f"missing backbone/neck keys: {core_missing[:10]} ({len(core_missing)} in all)"
        )
    visual.load_state_dict(copied, strict=False)
    head_missing = [k for k in dst if k.startswith("metric_head.") and k not in copied]
    if head_missing:
        LOG.warning("metric head starts from random weights for %d tensors (e.g. %s)", len(head_missing),
                    head_missing[:3])


def load_local_resnet(path: str, rcfg: ResNetConfig) -> ResNetModel:
    """A transformers ResNet from a local folder adapted to ``rcfg.num_channels`` input channels.

    An RGB (3-channel) stem is repeated k times and divided by k for 3k input channels (Monodepth2's
    pose encoder), otherwise averaged over its colours and spread over the new channels, so that
    the response to a uniform input is unchanged.
    """
    p = check_local_model_dir(path, "pretrained ResNet path")
    with transformers_quietly():
        stock = ResNetModel.from_pretrained(str(p), local_files_only=True)
    model = ResNetModel(rcfg)
    src = dict(stock.state_dict())
    stem = "embedder.embedder.convolution.weight"
    n_in = rcfg.num_channels
    if stem in src and src[stem].shape[1] != n_in:
        w = src[stem]
        if n_in % w.shape[1] == 0:
            k = n_in // w.shape[1]
            src[stem] = w.repeat(1, k, 1, 1) / k
        else:
            src[stem] = w.sum(dim=1, keepdim=True).repeat(1, n_in, 1, 1) / n_in
    dst = model.state_dict()
    missing = [k for k in dst if k not in src]
    bad = [f"{k}: {tuple(src[k].shape)} vs {tuple(dst[k].shape)}"
           for k in dst if k in src and src[k].shape != dst[k].shape]
    if missing or bad:
        raise ValueError(f"ResNet weights in {p} do not fit the configured widths/depths: "
                         f"missing {missing[:10]}, shape {bad[:10]}")
    model.load_state_dict({k: src[k] for k in dst})
    return model


__all__ = ["check_local_model_dir", "load_visual_pretrained", "load_local_resnet"]
