"""training.loop.Trainer in-process: callback order, one step against a hand-driven AdamW, non-finite steps.

A toy regression task (one linear layer, 12 samples) keeps it fast; the real stages and the bit-identical
resume run as subprocesses in test_training_resume.py / test_training_ddp.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from training.distributed import DistContext
from training.loop import Callback, LoopConfig, OptimConfig, Trainer


class PairSet(torch.utils.data.Dataset):
    """x (3,) -> y = x . (1, -2, 0.5) + 0.25, fixed values (no randomness)."""

    def __init__(self, n: int = 12, poison: tuple[int, ...] = ()):
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.25
        for i in poison:
            self.y[i] = float("nan")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class LinearModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, batch):
        loss = ((self.lin(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        return loss, {"loss": loss.detach()}


class LinearTask:
    name = "toy"
    selection_metric = "abs_rel"

    def __init__(self):
        torch.manual_seed(0)
        self.train_module = LinearModule()

    def models_to_save(self) -> dict:
        return {}  # checkpoints then hold train_state.pt only (enough for these tests)

    def validate_batch(self, batch) -> list[dict]:
        pred = self.train_module.lin(batch["x"])[:, 0]
        return [{"abs_rel": float((p - y).abs() / y.abs()), "loss": float((p - y) ** 2)}
                for p, y in zip(pred, batch["y"])]


class Recorder(Callback):
    def __init__(self):
        self.events: list = []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.global_step))

    def on_step_end(self, trainer, step):
        assert step == trainer.global_step
        self.events.append(("step", step))

    def on_epoch_end(self, trainer, epoch, row):
        self.events.append(("epoch", epoch, row["step"], trainer.last_checkpoint.name))

    def on_train_end(self, trainer):
        self.events.append(("end", trainer.global_step))


def _cfgs(**loop):
    base = dict(epochs=2, batch_size=4, val_batch_size=4, progress=False, amp=False, log_every_steps=1)
    base.update(loop)
    return LoopConfig(**base), OptimConfig(lr=0.05, schedule="constant", grad_clip_norm=0.0)


def test_callbacks_see_every_step_epoch_and_the_end(tmp_path):
    loop_cfg, optim_cfg = _cfgs(save_every_steps=2)
    rec = Recorder()
    trainer = Trainer(LinearTask(), PairSet(), PairSet(4), loop_cfg, optim_cfg, DistContext(), tmp_path / "run",
                      {"model": "toy"}, callbacks=[rec])
    result = trainer.fit()
    # 12 samples / batch 4 = 3 steps per epoch, 2 epochs; epoch-end checkpoints are e<epochs done>_s<step>.
    assert rec.events == [("start", 0), ("step", 1), ("step", 2), ("step", 3),
                          ("epoch", 1, 3, "e0001_s000000003"), ("step", 4), ("step", 5), ("step", 6),
                          ("epoch", 2, 6, "e0002_s000000006"), ("end", 6)]
    assert result.global_step == 6 and result.final_val["count"] == 4
    assert [r["epoch"] for r in result.history] == [1, 2]
    # save_every_steps=2 wrote a mid-epoch checkpoint at step 2 (epoch 0, batch 2) and 4 (epoch 1,
    # batch 1); keep_last=2 left the two newest complete ones.
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["e0001_s000000004", "e0002_s000000006"]


def test_train_on_batch_is_one_plain_adamw_step(tmp_path):
    loop_cfg, optim_cfg = _cfgs()
    task = LinearTask()
    reference = copy.deepcopy(task.train_module)
    trainer = Trainer(task, PairSet(), None, loop_cfg, optim_cfg, DistContext(), tmp_path / "run", {})
    data = PairSet()
    batch = {"x": data.x[:4], "y": data.y[:4]}
    loss = trainer.train_on_batch(batch)
    # Reference: the textbook loop with torch's AdamW (constant lr 0.05, no clipping).
    opt = torch.optim.AdamW(reference.parameters(), lr=0.05, betas=(0.9, 0.999), weight_decay=0.01, foreach=False)
    ref_loss, _ = reference(batch)
    opt.zero_grad()
    ref_loss.backward()
    opt.step()
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-6)
    for (name, p), q in zip(task.train_module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=name)
    assert trainer.global_step == 1 and trainer.step_losses == [pytest.approx(float(ref_loss.detach()))]


def test_non_finite_loss_skips_the_step_then_aborts(tmp_path):
    loop_cfg, optim_cfg = _cfgs(max_nonfinite_steps=3)
    task = LinearTask()
    before = {k: v.clone() for k, v in task.train_module.state_dict().items()}
    data = PairSet(poison=(0,))
    trainer = Trainer(task, data, None, loop_cfg, optim_cfg, DistContext(), tmp_path / "run", {})
    bad = {"x": data.x[:4], "y": data.y[:4]}
    assert trainer.train_on_batch(bad) is None
    assert trainer.train_on_batch(bad) is None
    for k, v in task.train_module.state_dict().items():
        assert torch.equal(v, before[k]), k  # no update from a NaN batch
    assert trainer.global_step == 2 and all(v != v for v in trainer.step_losses)  # NaN recorded
    good = {"x": data.x[4:8], "y": data.y[4:8]}
    assert trainer.train_on_batch(good) is not None  # a finite step resets the run of skipped steps
    assert trainer.train_on_batch(bad) is None and trainer.train_on_batch(bad) is None
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite losses"):
        trainer.train_on_batch(bad)
