"""The card's field sections: the fit check, leave one outdoor site out with the gunhoo range
curve, false alarms per hour per kind and the recordings that set the threshold, and the
recipe's spread over seeds. Rendered from the metrics JSON only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FIT_TARGET = 0.95  # of its own outdoor recordings; under 0.9 the card calls the model underfit
UNDERFIT_BELOW = 0.9
LEVELS = {"0": "as recorded", "-10": "-10 dB", "-20": "-20 dB", "-30": "-30 dB"}
SITE_OF = {"svanstrom": "svanstrom-outdoor", "phantom": "purdue-outdoor", "iris": "purdue-outdoor",
           "gunhoo": "gunhoo-outdoor"}


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _share(heard: int, of: int) -> str:
    return f"{heard}/{of} ({heard / of:.0%})" if of else "-"


def fit_section(metrics: dict[str, Any]) -> list[str]:
    """The shipped file on the drone recordings it trained on, at its threshold."""
    fit = metrics.get("fit")
    if not fit:
        return []
    outdoor = fit["outdoor"]
    share = outdoor["heard"] / outdoor["of"] if outdoor["of"] else 0.0
    verdict = ("**underfit**: it misses recordings it learnt from, so it cannot be expected to hear "
               "new ones" if share < UNDERFIT_BELOW else
               f"{'meets' if share >= FIT_TARGET else 'short of'} the {FIT_TARGET:.0%} target")
    rows = [[drone, "outdoor, per recording" if drone in SITE_OF else "indoor toy, per 5-s group",
             _share(v["heard"], v["of"])] for drone, v in fit["drones"].items()]
    lab = fit.get("lab_test_split")
    return [
        "## Fit: what it trained on (the shipped INT8 file, at its threshold)", "",
        "Each drone recording the shipped model trained on, counted as `nightear detect` counts a "
        "file: heard when the decision logic opens an event in it. The indoor toys' 1-s clips are "
        "joined by recording session into pieces of about 5 s.", "",
        *_table(["drone", "counted", "heard"], rows), "",
        f"Outdoor recordings heard: **{_share(outdoor['heard'], outdoor['of'])}**, {verdict}."
        + (f" DroneAudioDataset's test split (trained on), each clip by its mean window "
           f"probability: accuracy **{lab['accuracy']:.2%}** over {lab['clips']} clips." if lab else ""),
        "",
    ]


def sites_section(metrics: dict[str, Any]) -> list[str]:
    """Leave one outdoor site out at the shipped threshold: per site and level, the range curve,
    negatives, false alarms per hour per kind, and what set the threshold."""
    held = metrics.get("heldout")
    sites = held.get("sites") if held else None
    if not sites:
        return []
    amb = sites["ambience"]
    fa = held["false_alarm_curve"]
    minutes = ", ".join(f"{k} {v}" for k, v in fa["minutes_by_source"].items())
    drones = [[d, SITE_OF.get(d.split(" ")[0], ""), *(v.get(lvl, "-") for lvl in LEVELS)]
              for d, v in sites["drones"].items()]
    shares = sites["share_by_level"]
    drones.append(["mean share over drones", "", *(f"{shares[lvl]:.0%}" for lvl in LEVELS)])
    range_rows = [[d, _share(v["heard"], v["of"])] for d, v in sites["gunhoo_range"].items()]
    setters = "; ".join(f"`{s['recording']}` ({s['event_score']})" for s in sites["threshold_setters"])
    kinds = [[k, v] for k, v in sites["hard_negatives_per_hour"].items()]
    origin = f" (scores of `{held['from']}`)" if held.get("from") else ""
    return [
        "## Leave one outdoor site out (per recording, at the shipped threshold)", "",
        f"Three models of the recipe{origin}, each trained on every group but one outdoor site's "
        "(its drones, its ambience and its microphone: svanstrom-outdoor, purdue-outdoor, "
        "gunhoo-outdoor) and a third of the other negatives by group; each recording scored by the "
        "model that never heard its site. -10/-20/-30 dB: the recording fainter as the extra "
        "distance makes it (spreading and ISO 9613-1 absorption from 50 m), in held-out ambience "
        "20 dB under its own level. gunhoo-outdoor's 1-s clips are joined by session into pieces "
        "of about 5 s; its 1-m clips (the rotors' downwash on the microphone) are left out.", "",
        *_table(["drone", "site", *LEVELS.values()], drones), "",
        "gunhoo-outdoor by labelled distance, as recorded (a real range curve: one quadcopter, a "
        "Raspberry Pi node's microphone):", "",
        *_table(["distance", "heard"], range_rows), "",
        f"Helicopters with an event: {sites['helicopters']}; outdoor backgrounds: "
        f"{sites['backgrounds']}.", "",
        "### False alarms per hour of outdoor ambience (out of fold)", "",
        f"The threshold, **{sites['threshold']}**, is the lowest with at most "
        f"{held['target_per_hour']} event per hour on {fa['unique_minutes']} unique minutes of "
        f"continuous outdoor recordings ({minutes}), each recording its own stream, scored by the "
        f"model that never trained on it: **{amb['events']} events, {amb['per_hour']} per hour** "
        f"(95% interval {amb['interval95'][0]}-{amb['interval95'][1]}). The ambience recordings "
        f"most like a drone, with the highest threshold at which each raises an event: {setters}.", "",
        "What a border post hears at night sets the threshold: wind, rain, water, animals, frogs, a "
        "village at night, trains, airplanes, boats and the outdoor sites' own backgrounds. Streets "
        "and traffic (a unit is not sited by a road), a carousel and a building site (shut at night), "
        "a beehive (bees stay in at night; a hive hums a few metres), wind chimes and synthetic "
        "noise are hard negatives reported apart, with 1-s ESC-50 clips and indoor rooms:", "",
        *_table(["hard negative", "events per hour"], kinds), "",
    ]


SEED_FIGURES = (  # (key in compare.json, what it is)
    ("at_1_per_hour.threshold", "threshold for 1 false alarm / h"),
    ("at_1_per_hour.share_by_level.0", "mean share heard, as recorded"),
    ("at_1_per_hour.share_by_level.-10", "mean share heard, -10 dB"),
    ("at_1_per_hour.share_by_level.-20", "mean share heard, -20 dB"),
    ("at_1_per_hour.drones.svanstrom.0", "svanstrom heard, as recorded"),
    ("at_1_per_hour.drones.phantom.0", "Phantom heard, as recorded"),
    ("at_1_per_hour.drones.gunhoo.0", "gunhoo heard, as recorded"),
    ("at_1_per_hour.gunhoo_range.50 m.heard", "gunhoo at 50 m heard"),
    ("at_1_per_hour.ambience.events", "ambience events"),
    ("at_1_per_hour.helicopters", "helicopters with an event"),
    ("at_0.95.share_by_level.0", "at 0.95: mean share heard, as recorded"),
    ("at_0.95.share_by_level.-10", "at 0.95: mean share heard, -10 dB"),
    ("at_0.95.ambience.events", "at 0.95: ambience events"),
    ("at_0.95.helicopters", "at 0.95: helicopters with an event"),
    ("fit_at_0.95.outdoor.heard", "fit at 0.95: own outdoor recordings heard"),
    ("fit_at_0.99.outdoor.heard", "fit at 0.99: own outdoor recordings heard"),
)


def _cell(figure: dict[str, Any] | None, of: dict[str, Any] | None) -> str:
    if figure is None:
        return "-"
    text = f"{figure['mean']:.3g} ({figure['min']:g}-{figure['max']:g})"
    return f"{text} of {of['max']:g}" if of else text


def _seeds_of(spread: dict[str, Any]) -> str:
    fit = f"; fit {', '.join(map(str, spread['fit_seeds']))}" if spread.get("fit_seeds") else ""
    return f"seeds {', '.join(map(str, spread['seeds']))}{fit}"


def seeds_section(metrics: dict[str, Any]) -> list[str]:
    """The recipe's leave-one-site-out figures and fit over seeds, and other recipes' beside it:
    a change of recipe counts only beyond the range."""
    seeds = metrics.get("seeds")
    if not seeds:
        return []
    columns = {metrics["training"].get("recipe_name", "this recipe"): seeds,
               **metrics.get("seeds_beside", {})}
    rows = [[what, *(_cell(v.get(key), v.get(f"{key.removesuffix('.heard')}.of")) for v in columns.values())]
            for key, what in SEED_FIGURES if any(key in v for v in columns.values())]
    return [
        "## The recipe over seeds, beside others", "",
        "Leave one outdoor site out as above, the whole recipe trained again at each seed "
        "(`python -m nightear_training compare`), each seed at its own threshold for one false "
        "alarm an hour and at 0.95; fit: one model on every set per seed (`compare --folds fit`), "
        "its own outdoor recordings as recorded. Mean (range); a change of recipe counts only "
        "where it moves a figure beyond this range. "
        + "; ".join(f"`{name}`: {_seeds_of(v)}" for name, v in columns.items()) + ".", "",
        *_table(["figure", *(f"`{name}`" for name in columns)], rows), "",
    ]
