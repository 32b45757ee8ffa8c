"""`python -m nightear_training build-default | requantize | same-site | add-seeds | compare |
fit | site | evaluate | array-eval | split | fetch-data`: rebuild the shipped model (or only its
INT8 file, or add its same-site figures or its spread over seeds), compare recipes over seeds,
check a model file's fit or one site, measure a model file (alone, or behind each microphone
array), show the grouped split, or download the public recordings."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from nightear.errors import NightearError
from nightear_training.data import ALL_SOURCES, load_clips, load_folder, split_summary
from nightear_training.fetch import RAW_URL, FetchError, fetch_data

TRAIN_EXTRA = "pip install 'nightear[train]' (or -e '.[train]' in a clone)"
RECIPE_NAMES = ("field", "plain")  # `recipe.RECIPES`' keys, here without importing torch
DEFAULT_RECIPE = "field"  # the shipped model's: `recipe.DEFAULT_RECIPE`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nightear_training")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-default", help="rebuild the default model, its card and report into --out")
    b.add_argument("--out", type=Path, default=Path("models"), help="where model, card, report go")
    b.add_argument("--data", type=Path, help="data root (default: $NIGHTEAR_DATA or ../shared/data)")
    b.add_argument("--folder", type=Path, help="also train on new recordings: a folder with labels.csv")
    b.add_argument("--recipe", choices=RECIPE_NAMES, default=DEFAULT_RECIPE,
                   help=f"the recipe (default {DEFAULT_RECIPE}, the shipped model's)")
    b.add_argument("--epochs", type=int, help="the schedule's length (default: the recipe's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-heldout", action="store_true",
                   help="skip the leave-one-site-out models (quick: threshold from validation clips)")
    b.add_argument("--heldout-from", type=Path, metavar="PKL",
                   help="a `compare` run's <recipe>-seed<n>.pkl of this recipe and seed: its held-out "
                        "scores instead of training those models again")
    b.add_argument("--heldout-scores", type=Path, help="also pickle the raw held-out scores here")
    b.add_argument("--max-clips-per-split", type=int, help="tiny build: clips per source, split, label")
    q = sub.add_parser("requantize", help="quantize --out's FP32 model again and remeasure its INT8 file")
    q.add_argument("--out", type=Path, default=Path("models"), help="where the built model is")
    q.add_argument("--data", type=Path)
    m = sub.add_parser("same-site", help="add new flights of trained makes at trained sites, "
                       "heard by models that missed them, to --out's metrics and card")
    m.add_argument("--out", type=Path, default=Path("models"), help="where the built model is")
    m.add_argument("--data", type=Path)
    e = sub.add_parser("evaluate", help="measure a model file on the test split (and a folder)")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--data", type=Path)
    e.add_argument("--folder", type=Path, help="new recordings: a folder with labels.csv")
    e.add_argument("--out", type=Path, help="where the report goes (default: beside the model)")
    e.add_argument("--max-clips-per-split", type=int)
    a = sub.add_parser("array-eval", help="bearing error and recall with and without the beam")
    a.add_argument("--model", type=Path, required=True)
    a.add_argument("--data", type=Path)
    a.add_argument("--out", type=Path, help="where the report goes (default: beside the model)")
    a.add_argument("--max-passes", type=int, default=40, help="drone passes per SNR")
    d = sub.add_parser("add-seeds", help="add the recipe's spread over seeds (compare's per-seed "
                       "summaries) to --out's metrics and card")
    d.add_argument("runs", nargs="+", type=Path, metavar="SEED_JSON", help="<recipe>-seed<n>.json files")
    d.add_argument("--beside", nargs="+", type=Path, default=[], metavar="SEED_JSON",
                   help="other recipes' summaries, set beside it in the card (e.g. the plain recipe's)")
    d.add_argument("--out", type=Path, default=Path("models"), help="where the built model is")
    c = sub.add_parser("compare", help="recipes by leave one outdoor site out over seeds: each "
                       "figure's mean and range, in --out/compare.json")
    c.add_argument("recipes", nargs="+", choices=RECIPE_NAMES, metavar="RECIPE",
                   help=f"one or more of {', '.join(RECIPE_NAMES)}")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--folds", choices=("sites", "all", "fit"), default="sites",
                   help="sites: the three outdoor sites; all: the indoor toys too; fit: none held "
                        "out, one model on every set counted on its own recordings (quicker)")
    c.add_argument("--processes", type=int, default=2, help="seeds trained at once, one core each")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--data", type=Path)
    t = sub.add_parser("fit", help="a model file on the drone recordings it trained on, at its threshold")
    t.add_argument("--model", type=Path, required=True)
    t.add_argument("--data", type=Path)
    o = sub.add_parser("site", help="a model file on one outdoor site's held-out fold, at its threshold")
    o.add_argument("--model", type=Path, required=True)
    o.add_argument("--site", choices=("svanstrom", "purdue", "gunhoo"), required=True)
    o.add_argument("--data", type=Path)
    h = sub.add_parser("hop", help="a compare run's stored scores as if one window in K were scored "
                       "(fewer windows a second): drones heard, false alarms and alert delay per K")
    h.add_argument("runs", type=Path, nargs="+", metavar="RUN.pkl")
    h.add_argument("--every", type=int, nargs="+", default=[1, 2], metavar="K")
    s = sub.add_parser("split", help="print the grouped split's counts and hashes as JSON")
    s.add_argument("--data", type=Path)
    f = sub.add_parser("fetch-data", help="download the public recordings into DIR, laid out as "
                       "../shared/data (resumable; each file checked against its manifest's sha256)")
    f.add_argument("dir", type=Path, metavar="DIR")
    f.add_argument("--source", action="append", dest="sources", metavar="NAME",
                   help="only this source (repeatable): drone-audio-dataset, svanstrom-outdoor, "
                        "purdue-outdoor")
    f.add_argument("--base-url", default=None,
                   help="a mirror laid out as raw.githubusercontent.com (OWNER/REPO/COMMIT/PATH)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (FileNotFoundError, ValueError, NightearError, FetchError) as exc:
        print(f"nightear_training: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # the edge install: fetch-data and split run, training does not
        print(f"nightear_training: error: {args.command} needs the 'train' extra ({exc}): {TRAIN_EXTRA}",
              file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "fetch-data":
        fetch_data(args.dir, args.sources, args.base_url or RAW_URL)
        print(f"NIGHTEAR_DATA={args.dir} now holds the public recordings")
        return 0
    if args.command == "add-seeds":
        from nightear_training.build import BuildConfig, add_seeds

        add_seeds(BuildConfig(out_dir=args.out), args.runs, args.beside)
        return 0
    if args.command == "compare":
        from nightear_training.compare import compare

        compare(args.recipes, args.seeds, args.out, args.folds, args.data, args.processes)
        return 0
    if args.command == "fit":
        from nightear_training.compare import fit_of_file

        print(json.dumps(fit_of_file(args.model, args.data), indent=1))
        return 0
    if args.command == "site":
        from nightear_training.compare import file_on_site

        print(json.dumps(file_on_site(args.model, args.site, args.data), indent=1))
        return 0
    if args.command == "hop":
        import pickle

        from nightear_training.compare import hop_comparison

        print(json.dumps({str(run): hop_comparison(pickle.loads(run.read_bytes()), args.every)
                          for run in args.runs}, indent=1))
        return 0
    if args.command == "split":
        print(json.dumps(split_summary(load_clips(args.data, ALL_SOURCES)), indent=2))
        return 0
    if args.command == "array-eval":
        from nightear_training.array_eval import evaluate_array

        evaluate_array(args.model, args.data, args.out, args.max_passes)
        return 0
    if args.command == "requantize":
        from nightear_training.build import BuildConfig, requantize

        requantize(BuildConfig(out_dir=args.out, data_root=args.data))
        return 0
    if args.command == "same-site":
        from nightear_training.build import BuildConfig, add_same_site

        add_same_site(BuildConfig(out_dir=args.out, data_root=args.data))
        return 0
    extra = tuple(load_folder(args.folder)) if args.folder else ()
    if args.command == "evaluate":
        from nightear_training.evaluate import evaluate_file

        evaluate_file(args.model, args.data, extra, args.out, args.max_clips_per_split)
        return 0
    from nightear_training.build import BuildConfig, build
    from nightear_training.recipe import RECIPES

    recipe = RECIPES[args.recipe]
    epochs = recipe.train.epochs if args.epochs is None else args.epochs
    recipe = replace(recipe, train=replace(recipe.train, epochs=epochs, seed=args.seed))
    build(BuildConfig(out_dir=args.out, data_root=args.data, recipe_name=args.recipe, recipe=recipe,
                      max_clips_per_split=args.max_clips_per_split, heldout=not args.no_heldout,
                      heldout_scores=args.heldout_scores, heldout_from=args.heldout_from,
                      extra_clips=extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
