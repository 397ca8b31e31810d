#!/usr/bin/env python3
"""Test-side launcher: run a training CLI's main() with test callbacks injected into its Trainer.

    python test/train_with_hooks.py [--step-delay-s S] [--weight-hash-dir DIR] {avs,relative} CLI_ARGS...
    python -m torch.distributed.run --nproc_per_node 2 test/train_with_hooks.py --weight-hash-dir DIR relative ...

Not a test module (no test_ prefix, so pytest does not collect it); subprocess tests use it where they
need a hook inside the training process:
  --step-delay-s: sleep after every optimisation step (lets test_training_resume.py SIGKILL a run
      between two checkpoints without racing it to the end; sleeping changes no number).
  --weight-hash-dir: at the end every rank writes rank<r>.sha256, one "<model subdir> <sha256>" line per
      saved model (training.checkpointing.state_dict_hash), so test_training_ddp.py can compare ranks.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.checkpointing import state_dict_hash  # noqa: E402
from training.loop import Callback, Trainer  # noqa: E402


class StepDelay(Callback):
    """Sleeps `delay_s` seconds after each optimisation step."""

    def __init__(self, delay_s: float):
        self.delay_s = float(delay_s)

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        time.sleep(self.delay_s)


class WeightHash(Callback):
    """Writes DIR/rank<r>.sha256 with the hash of each saved model's weights after training."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: Trainer) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{sub} {state_dict_hash(entry[0])}" for sub, entry in sorted(trainer.task.models_to_save().items())]
        (self.out_dir / f"rank{trainer.ctx.rank}.sha256").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after the stage word belongs to the CLI, untouched.
    split = next((i for i, a in enumerate(argv) if a in ("avs", "relative")), None)
    if split is None:
        print("usage: train_with_hooks.py [--step-delay-s S] [--weight-hash-dir DIR] {avs,relative} CLI_ARGS...",
              file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--step-delay-s", type=float, default=0.0)
    parser.add_argument("--weight-hash-dir", type=Path, default=None)
    parser.add_argument("stage", choices=("avs", "relative"))
    args = parser.parse_args(argv[:split + 1])
    cli_argv = argv[split + 1:]
    callbacks: list[Callback] = []
    if args.step_delay_s > 0:
        callbacks.append(StepDelay(args.step_delay_s))
    if args.weight_hash_dir is not None:
        callbacks.append(WeightHash(args.weight_hash_dir))
    if args.stage == "avs":
        from training.train_avs import main as cli_main
    else:
        from training.train_relative import main as cli_main
    return cli_main(cli_argv, callbacks=callbacks)


if __name__ == "__main__":
    raise SystemExit(main())
