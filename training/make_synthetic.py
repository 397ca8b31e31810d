"""Generate a synthetic audio-visual dataset (BatVision V2 layout, optionally also a rosbag2).

Example (2,000 training samples with both cores):

    python training/make_synthetic.py --out data_synth/train --n 2000 --seed 1 --preset train \
        --val-fraction 0.1 --workers 2

Scenes: rooms with box furniture, random absorption, colours and textures; each normalised layout is
rendered at two absolute scales, and everything visible scales together, so the images cannot tell
the scale while the echoes (pyroomacoustics RIRs convolved with the emitted sweep) can. See
training/synthetic/ for the physics and conventions, and the module docstring of
training/synthetic/writer.py for the files written and how seeds work. Presets:
- train, test (same distribution, disjoint scenes), train_seq (stage-2 motion), shifted (empty
  corridor-like rooms, other materials and colours: the original zero-shot set): shoebox rooms of
  2-15 m, the default 3 ms sweep at one recording gain, a 20 cm rig, float32 WAV;
- broad, broad_test: shoeboxes, corridors, pillared halls and open-plan rooms of 1.5-30 m with 0-8
  boxes, per-band absorption, and per frame a random sweep (2-50 ms, linear/exponential), level
  (-40..-1 dBFS), SNR (10-50 dB, coloured noise); microphones 10-30 cm apart; depth holes; int32 WAV;
- xsim: the cross-simulator zero-shot set (hybrid image-source + ray-tracing acoustics, mostly
  L-shaped rooms, halls and corridors, vivid colours, the broad rig).
- broad_seq: stage-2 sequences of the broad families (no L-shapes) with train_seq's walk and stronger
  surface texture (contrast 0.25-0.7); use --layout-repeats 1 (stage 2 needs no scale twins).
Robustness sets: --sweep forces every frame's emitted sweep, --level-dbfs the recording level (with
a fixed -70 dBFS noise floor); both change only the audio (RGB and depth stay byte-identical to the
unforced run with the same --seed/--preset/--n). --no-sweep-column hides the sweep (a dataset whose
sweep is unknown).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# One thread per process: the cores go to the worker processes (set before numpy/torch load).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from training.synthetic.scene import PRESETS

    p = argparse.ArgumentParser(
        description="Generate a synthetic RGB-D + binaural echo dataset in the BatVision V2 layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="dataset root (samples go to OUT/<location>/)")
    p.add_argument("--n", type=int, required=True, help="number of samples (frames)")
    p.add_argument("--seed", type=int, required=True, help="non-negative seed; same seed -> identical files")
    p.add_argument("--preset", choices=sorted(PRESETS), default="train", help="scene distribution")
    p.add_argument("--height", type=int, default=128, help="image height (px)")
    p.add_argument("--width", type=int, default=256, help="image width (px)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each)")
    p.add_argument("--split-name", default=None, help="CSV name (default: train for the train preset, else test)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of layouts (whole twin-sequence groups) written to val.csv instead")
    p.add_argument("--location", default=None, help="location folder name (default synth_<preset>_s<seed>)")
    p.add_argument("--frames-per-sequence", type=int, default=0, help="frames per sequence (0: preset, 5)")
    p.add_argument("--max-order", type=int, default=0,
                   help="image-source order (0: the preset's: 3; xsim 1-2 drawn per sequence)")
    p.add_argument("--layout-repeats", type=int, default=0,
                   help="sequences per normalised layout, each at another scale (0: preset, 2)")
    p.add_argument("--wav-format", choices=["float32", "int32", "int16"], default=None,
                   help="WAV encoding (default: the preset's: float32; int32 for broad, broad_test, xsim)")
    p.add_argument("--sweep", default="",
                   help='force every frame\'s emitted sweep, a SweepSpec text such as '
                        '"method=linear;duration_s=0.01;fade_s=0.001" (missing keys: the default sweep\'s)')
    p.add_argument("--level-dbfs", type=float, default=None,
                   help="force the recording level (direct-path sweep peak, dBFS) with a fixed noise floor "
                        "(RMS -70 dBFS, the preset's noise colour)")
    p.add_argument("--no-sweep-column", action="store_true",
                   help="write the CSV without the sweep column (a dataset whose sweep is unknown)")
    p.add_argument("--bag", default=None,
                   help="also write a rosbag2 (mcap) of the main split here (the val split, if any, to BAG_val)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")
    return p


def write_bags(out: Path, location: str, splits: dict, bag: Path) -> dict:
    """Write the generated split(s) to rosbag2 through the project's reader and writer."""
    from avsnet_ros.data.batvision import BV2Dataset
    from avsnet_ros.data.rosbag_io import write_samples_to_bag

    result = {}
    for name in splits:
        target = bag if name != "val" or len(splits) == 1 else bag.with_name(bag.name + "_val")
        ds = BV2Dataset(out, split=name, locations=[location])
        summary = write_samples_to_bag((ds[i] for i in range(len(ds))), target, depth_encoding="16UC1")
        result[name] = summary
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from training.synthetic.writer import GenerationOptions, generate_dataset

    if args.n < 1:
        print("error: --n must be >= 1", file=sys.stderr)
        return 2
    if args.seed < 0:
        print("error: --seed must be >= 0", file=sys.stderr)
        return 2
    if args.bag and Path(args.bag).exists():
        print(f"error: bag {args.bag} already exists", file=sys.stderr)
        return 2
    if args.sweep:
        from avsnet_ros.audio.frontend import SweepSpec

        try:
            SweepSpec.from_text(args.sweep)
        except ValueError as exc:
            print(f"error: --sweep: {exc}", file=sys.stderr)
            return 2
    opt = GenerationOptions(
        height=args.height, width=args.width, frames_per_sequence=args.frames_per_sequence,
        wav_format=args.wav_format or "", max_order=args.max_order, layout_repeats=args.layout_repeats,
        sweep=args.sweep, level_dbfs=args.level_dbfs, sweep_column=not args.no_sweep_column,
    )
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = "python training/make_synthetic.py " + " ".join(shlex.quote(a) for a in argv_list)
    t0 = time.perf_counter()
    try:
        summary = generate_dataset(
            args.out, args.n, args.seed, args.preset, options=opt, workers=args.workers,
            split_name=args.split_name, val_fraction=args.val_fraction, location=args.location,
            progress=not args.no_progress, command=command,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    summary["seconds"] = round(elapsed, 2)
    summary["samples_per_s"] = round(args.n / elapsed, 3)
    if args.bag:
        t1 = time.perf_counter()
        summary["bags"] = write_bags(Path(args.out), summary["location"], summary["splits"], Path(args.bag))
        summary["bag_seconds"] = round(time.perf_counter() - t1, 2)
    print(f"wrote {args.n} samples {summary['splits']} to {summary['loc_dir']} in {elapsed:.1f} s "
          f"({summary['samples_per_s']:.2f} samples/s, {args.workers} worker(s))", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
