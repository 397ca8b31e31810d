"""Tiny random-initialised transformers depth models saved with save_pretrained (no weights downloaded).

Each < 0.5 M parameters; preprocessor_config.json written as plain JSON with a small size, so a
forward at 64 x 128 takes milliseconds on the CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_KINDS = ("depth_anything", "dpt", "zoedepth")


def _beit(image_size: int = 64):
    from transformers import BeitConfig

    return BeitConfig(image_size=image_size, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=64, use_relative_position_bias=True, reshape_hidden_states=False,
                      out_features=["stage1", "stage2", "stage3", "stage4"])


def tiny_config(kind: str, metric: bool = False):
    """A transformers config of ``kind`` (TINY_KINDS); metric=True: Depth Anything's metric head."""
    from transformers import DepthAnythingConfig, Dinov2Config, DPTConfig, ZoeDepthConfig

    if kind == "depth_anything":
        dino = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
        return DepthAnythingConfig(backbone_config=dino, neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32,
                                   head_hidden_size=16, reassemble_hidden_size=32, patch_size=14,
                                   depth_estimation_type="metric" if metric else "relative", max_depth=20)
    if kind == "dpt":
        return DPTConfig(backbone_config=_beit(), neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32,
                         head_in_index=-1)
    if kind == "zoedepth":
        return ZoeDepthConfig(backbone_config=_beit(), neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32,
                              bottleneck_features=32, num_relative_features=16, bin_embedding_dim=16,
                              num_attractors=[8, 4, 2, 1],
                              bin_configurations=[{"n_bins": 16, "min_depth": 0.1, "max_depth": 10.0}])
    raise ValueError(kind)


def save_tiny(kind: str, out_dir, size_hw=(64, 128), seed: int = 0, metric: bool = False,
              processor: bool = True) -> Path:
    """Build ``kind`` with random weights (seeded), save_pretrained to out_dir (+ a small
    preprocessor_config.json at size_hw unless processor=False); returns the folder."""
    from transformers import AutoModelForDepthEstimation

    torch.manual_seed(seed)
    model = AutoModelForDepthEstimation.from_config(tiny_config(kind, metric)).eval()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    if processor:
        multiple = {"depth_anything": 14, "dpt": 16, "zoedepth": 32}[kind]
        doc = {"size": {"height": int(size_hw[0]), "width": int(size_hw[1])}, "keep_aspect_ratio": kind != "dpt",
               "ensure_multiple_of": multiple, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
               "image_std": [0.229, 0.224, 0.225], "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255}
        (out / "preprocessor_config.json").write_text(json.dumps(doc, indent=2))
    return out
