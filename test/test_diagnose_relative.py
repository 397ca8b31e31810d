"""training/diagnose_relative.py, the stage-2 structure figures of the README: oracles with known answers."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn


class _Constant(nn.Module):
    """A collapsed relative model: the same depth everywhere."""

    def __init__(self, size_hw):
        super().__init__()
        self.config = SimpleNamespace(image_size_hw=size_hw)

    def depth(self, rgb):
        return torch.full((rgb.shape[0], 1, *rgb.shape[-2:]), 3.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from training.tiny_data import make_tiny_bv2

    return make_tiny_bv2(tmp_path_factory.mktemp("diag"), n_sequences=2, frames_per_sequence=4, size_hw=(64, 128),
                         splits=("test",))


def test_a_constant_map_scores_exactly_the_constant_floor(tiny):
    from training.diagnose_relative import diagnose

    out = diagnose(_Constant((64, 128)), str(tiny), "test", n=0)
    assert out["images"] == 4  # 2 sequences x 2 centre frames
    assert out["abs_rel_med"] == pytest.approx(out["abs_rel_const"], abs=1e-12) and out["abs_rel_const"] > 0.01
    assert out["log_std_pred"] == pytest.approx(0.0, abs=1e-9) and out["frac_beats_const"] == 0.0


def test_cli_reads_a_self_supervised_transformers_folder(tiny, tmp_path, capsys):
    import json

    from hf_tiny import save_tiny
    from training.diagnose_relative import main
    from training.hf_relative import build_transformers_depthnet

    folder = build_transformers_depthnet(save_tiny("depth_anything", tmp_path / "src"), (64, 128), 0.1, 100.0) \
        .save_folder(tmp_path / "da")
    assert main(["--depthnet", str(folder), "--data", str(tiny), "--split", "test", "--n", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["images"] == 4 and out["abs_rel_med"] > 0 and 0.0 <= out["frac_beats_const"] <= 1.0
    disparity = save_tiny("dpt", tmp_path / "dpt")  # affine-invariant disparity: refused, not mis-scored
    with pytest.raises(SystemExit):
        main(["--depthnet", str(disparity), "--data", str(tiny), "--split", "test", "--json"])
    assert "disparity" in capsys.readouterr().err
