"""Build a network from its typed configuration (one entry point for all kinds)."""
from __future__ import annotations

from torch import nn

from .config import AVSNetConfig, ModelConfig, RelativeDepthConfig


def build_model(config: ModelConfig) -> nn.Module:
    """``config.kind`` "avsnet" -> :class:`AVSNet`, "depthnet" -> :class:`DepthNet`, "posenet" -> :class:`PoseNet`."""
    if isinstance(config, AVSNetConfig):
        from .avsnet import AVSNet

        return AVSNet(config)
    if isinstance(config, RelativeDepthConfig):
        from .relative import DepthNet, PoseNet

        return DepthNet(config) if config.kind == "depthnet" else PoseNet(config)
    raise TypeError(f"not a model config: {type(config).__name__}")


__all__ = ["build_model"]
