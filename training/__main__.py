"""`python -m nightear_training build-default | split`: rebuild the shipped model, show the split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nightear.errors import NightearError
from nightear_training.build import BuildConfig, build
from nightear_training.data import load_clips, split_summary
from nightear_training.train import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nightear_training")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-default", help="rebuild the default model into --out")
    b.add_argument("--out", type=Path, default=Path("models"), help="where the model, card and metrics go")
    b.add_argument("--work", type=Path, default=Path("runs/build-default"), help="FP32 model and scratch")
    b.add_argument("--data", type=Path, help="data root (default: $NIGHTEAR_DATA or ../shared/data)")
    b.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    b.add_argument("--seed", type=int, default=TrainConfig.seed)
    b.add_argument("--max-clips-per-split", type=int, help="tiny build: at most this many clips per split")
    s = sub.add_parser("split", help="print the grouped split's counts and hashes as JSON")
    s.add_argument("--data", type=Path)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (FileNotFoundError, NightearError) as exc:
        print(f"nightear_training: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "split":
        print(json.dumps(split_summary(load_clips(args.data)), indent=2))
        return 0
    config = BuildConfig(out_dir=args.out, work_dir=args.work, data_root=args.data,
                         max_clips_per_split=args.max_clips_per_split,
                         train=TrainConfig(epochs=args.epochs, seed=args.seed))
    build(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
