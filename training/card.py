"""The model card: what the model was trained on, how it was split, what it scores on the
held-out test split (FP32 and the shipped INT8 file), in the field (false alarms per hour,
range, latency, hard negatives, unseen sources), its licence and its known limits.
Rendered from the metrics JSON only, so every figure in it was measured by the build."""

from __future__ import annotations

from typing import Any

SOURCE_NOTES = {
    "drone-audio-dataset": "DroneAudioDataset (Al-Emadi et al., IWCMC 2019): Parrot Bebop and Mambo "
    "indoors, against ESC-50 and Speech Commands backgrounds",
    "svanstrom-outdoor": "Svanstrom et al. (Data in Brief 2021): small quadcopters outdoors, "
    "helicopters, outdoor ambience",
    "purdue-outdoor": "Purdue 2018 project: DJI Phantom and 3DR Iris at one flying field, its "
    "ambience",
    "ambience": "outdoor ambience (moodist: wind, rain, animals, places, transport, towns) and "
    "frog and toad choruses of 18 North American species; background only",
}


def _row(cells: list[object]) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _split_table(split: dict[str, Any]) -> list[str]:
    return _table(["split", "clips", "drone", "background", "groups", "sha256 of the split's lines"],
                  [[name, s["clips"], s["by_label"].get("drone", 0), s["by_label"].get("background", 0),
                    s["groups"], f"`{s['sha256']}`"] for name, s in split.items()])


def _metrics_rows(label: str, m: dict[str, Any]) -> list[object]:
    c = m["confusion"]
    return [label, m["clips"], m["roc_auc"], m["accuracy"], m["precision"], m["recall"], m["f1"],
            f"{c['tn']} {c['fp']} {c['fn']} {c['tp']}"]


def _results_table(test: dict[str, Any]) -> list[str]:
    rows = [_metrics_rows("all, INT8", test["int8"]), _metrics_rows("all, FP32", test["fp32"])]
    rows += [_metrics_rows(f"{source}, INT8", m) for source, m in test["per_source"].items()]
    return _table(["test clips", "n", "ROC AUC", "accuracy", "precision", "recall", "F1",
                   "tn fp fn tp"], rows)


def _kind_table(per_kind: dict[str, Any]) -> list[str]:
    """Kinds with an error and every drone kind, worst first; the rest summed up in one line."""
    shown = [(kind, k) for kind, k in per_kind.items() if k["accuracy"] < 1.0 or "drone" in kind]
    lines = _table(["kind", "clips", "classified right", "mean p(drone)"],
                   [[kind, k["clips"], f"{k['accuracy']:.3f}", k["mean_p"]]
                    for kind, k in sorted(shown, key=lambda kv: (kv[1]["accuracy"], kv[0]))])
    rest = [k for kind, k in per_kind.items() if (kind, k) not in shown]
    if rest:
        lines += ["", f"The other {len(rest)} kinds ({sum(k['clips'] for k in rest)} clips): "
                  "every clip classified right."]
    return lines


def _metres(distance: float | None) -> str:
    return f"{distance:.0f} m" if distance is not None else "not reached even at 25 m"


def _curve_row(points: dict[str, float]) -> list[object]:
    return [f"{v:.2f}" for v in points.values()]


LEVEL_NAMES = {"0": "as recorded", "-10": "-10 dB", "-20": "-20 dB", "-30": "-30 dB"}


def _heard(cell: dict[str, int]) -> str:
    return f"{cell['heard']}/{cell['of']}"


def recordings_table(at: dict[str, Any]) -> list[str]:
    """Recordings heard per drone and level, as `heldout.table` counts them."""
    levels = list(LEVEL_NAMES)
    rows = [[drone, *(_heard(v[lvl]) for lvl in levels)] for drone, v in at["drones"].items()]
    rows.append(["**all drones**", *(f"**{_heard(at['pooled'][lvl])}**" for lvl in levels)])
    rows.append(["mean share over drones", *(f"{at['mean_share_over_drones'][lvl]:.0%}" for lvl in levels)])
    return _table(["drone", *LEVEL_NAMES.values()], rows)


def recordings_sections(metrics: dict[str, Any]) -> list[str]:
    """`evaluate`'s per-recording figures for one model file (held out only where it says)."""
    lines = []
    for key, title in (("recordings", "Per recording, shared data (not held out from a model "
                                      "trained on these sources)"),
                       ("folder_recordings", "Per recording, the new recordings")):
        at = metrics.get(key)
        if at:
            amb = at["ambience"]
            lines += [f"## {title}", "", *recordings_table(at), "",
                      f"At threshold {at['threshold']}: helicopters with an event "
                      f"{at['helicopters']['with_event']} of {at['helicopters']['of']}, backgrounds "
                      f"{at['backgrounds']['with_event']} of {at['backgrounds']['of']}; ambience "
                      f"{amb['events']} events in {amb['unique_minutes']} min ({amb['per_hour']} per hour, "
                      f"95% interval {amb['interval95'][0]}-{amb['interval95'][1]}).", ""]
            if key == "recordings":
                lines += _arriving_lines(metrics.get("recordings_arriving"))
    return lines


def _lab_model_lines(lab: dict[str, Any] | None) -> list[str]:
    """The lab task as 1.0.0 measured it (a model that heard the toys, not the split)."""
    if not lab:
        return []
    return [f"The same split scored as 1.0.0's was, by one model of the recipe trained to epoch "
            f"{lab['epochs']} on every group but the split's ({lab['trained_on']} clips: it heard "
            f"other recordings of both toys): accuracy **{lab['accuracy']}** at {lab['threshold']} "
            f"({lab['drone_clips_missed']} of {lab['drone_clips']} drone clips missed, "
            f"{lab['background_clips_over']} of {lab['clips'] - lab['drone_clips']} background clips "
            f"over{_kinds(lab)}).", ""]


def _kinds(lab: dict[str, Any], most: int = 5) -> str:
    """'; over: kind n, ...; missed: kind n, ...', the commonest errors (older metrics lack them)."""
    if "over_by_kind" not in lab:
        return ""
    return "".join(f"; {what}: " + (", ".join(f"{k} {n}" for k, n in list(lab[key].items())[:most]) or "none")
                   for what, key in (("over", "over_by_kind"), ("missed", "missed_by_kind")))


def _arriving_lines(at: dict[str, Any] | None) -> list[str]:
    """The same recordings as drones arriving in a stream (older metrics lack them)."""
    if not at:
        return []
    heard = " / ".join(_heard(at["pooled"][lvl]) for lvl in LEVEL_NAMES)
    return [f"As drones arriving in a stream the daemon has been scoring (each recording led in by "
            f"scored ambience, so its first windows are averaged with it, not alone as a "
            f"file's first windows are): heard {heard} (as recorded / -10 / -20 / -30 dB) at the "
            "same threshold.", ""]


def heldout_sections(metrics: dict[str, Any]) -> list[str]:
    """Leave one drone out at the shipped threshold, false alarms per hour of ambience and
    hard negatives, all out of fold."""
    held = metrics.get("heldout")
    if not held:
        return []
    at, fa = held["at_threshold"], metrics["false_alarms"]
    amb = at["ambience"]
    minutes = ", ".join(f"{k} {v}" for k, v in fa["minutes_by_source"].items())
    lab = at["lab_test_split"]
    of_drones, of_backgrounds = ((f" of {lab['drone_clips']}", f" of {lab['clips'] - lab['drone_clips']}")
                                 if "drone_clips" in lab else ("", ""))  # older metrics lack the count
    lines = [
        "## Leave one drone out (per recording, at the shipped threshold)", "",
        f"{len(held['folds'])} models, each trained on every group but one fold's: "
        + ", ".join(f"without {k} ({v} clips)" for k, v in held["folds"].items())
        + ". A fold holds out its drone (svanstrom-outdoor and purdue-outdoor whole: drones, site "
        "and microphone) and a quarter of the other negatives by group. A recording counts as heard "
        "when the daemon's decision logic opens an event in it; -10/-20/-30 dB: the recording "
        "fainter as the extra distance makes it (spreading and ISO 9613-1 absorption from 50 m), in "
        f"held-out ambience 20 dB under its own level. Epoch {held['chosen_epoch']} of the runs (the "
        "highest low-alarm share: drones heard as recorded, -10 and -20 dB, averaged over the "
        "thresholds for 1, 2, 4 and 8 times the target rate) and its threshold for the target, "
        f"**{held['threshold']}**, were chosen here; the shipped model is trained the same "
        "way on every group, so these figures are those of its recipe, not of the file itself. "
        "How that recipe was chosen, each change held out alike: the project's "
        "`models/nightear-drone.history.md`.", "",
        *recordings_table(at), "",
        *_arriving_lines(held.get("at_threshold_arriving")),
        f"Helicopters with an event: {at['helicopters']['with_event']} of {at['helicopters']['of']}; "
        f"outdoor background recordings with an event: {at['backgrounds']['with_event']} of "
        f"{at['backgrounds']['of']}. DroneAudioDataset grouped test split, each clip out of fold: "
        f"accuracy **{lab['accuracy']}** over {lab['clips']} clips ({lab['drone_clips_missed']}"
        f"{of_drones} drone clips missed, {lab['background_clips_over']}{of_backgrounds} background "
        "clips over the threshold).", "",
        *_lab_model_lines(metrics.get("lab_test_split")),
        "## False alarms per hour of ambience (out of fold)", "",
        f"{fa['unique_minutes']} unique minutes ({minutes}), each stretch scored by the model that "
        "never trained on it, joined into streams, through the daemon's decision logic: "
        f"**{amb['events']} events, {amb['per_hour']} per hour** (95% interval {amb['interval95'][0]}-"
        f"{amb['interval95'][1]}) at the shipped threshold, the lowest with at most "
        f"{fa['target_per_hour']} per hour.", "",
        "### Hard negatives (out of fold, at the threshold)", "",
        *_table(["sound", "minutes", "windows over threshold", "events", "events per hour"],
                [[k, v["minutes"], f"{v['share_of_windows']:.2%}", v["events"], v["events_per_hour"]]
                 for k, v in fa["hard_negatives"].items()]), "",
        "### By epoch (each at its own threshold for the target rate)", "",
        *_table(["epoch", "low-alarm share", "arriving", "threshold", *LEVEL_NAMES.values(),
                 "helicopters", "ambience events"],
                [[e, v.get("low_alarm_share", "-"), v.get("low_alarm_share_arriving", "-"), v["threshold"],
                  *(_heard(v["pooled"][lvl]) for lvl in LEVEL_NAMES),
                  f"{v['helicopters']['with_event']}/{v['helicopters']['of']}", v["ambience"]["events"]]
                 for e, v in held["by_epoch"].items()]), "",
    ]
    return lines


def same_site_sections(metrics: dict[str, Any]) -> list[str]:
    """New flights of makes trained on, at sites trained on, by models that never heard them."""
    same = metrics.get("same_site")
    if not same:
        return []
    amb = same["ambience"]
    return [
        "## Same site, other flights (per recording, at the shipped threshold)", "",
        "New flights of the outdoor drones the shipped model trains on, at their own site and "
        "microphone (as a unit meets again a make it learnt from): two models of the recipe, "
        f"trained to epoch {same['epoch']} on every group but half of svanstrom-outdoor's drone "
        "recordings and the Phantom's P1 and Purdue P2 sessions or its WSU P2 session, and a "
        "quarter of the negatives; each recording scored by the model that missed it, fainter "
        "as in the leave-one-drone-out table" + (
            f" (added by `same-site` on {same['machine']['processor']} with "
            f"{same['machine']['cpus']} CPUs)" if "machine" in same else "") + ".", "",
        *recordings_table(same), "",
        f"At {same['threshold']}: helicopters with an event {same['helicopters']['with_event']} of "
        f"{same['helicopters']['of']}, outdoor backgrounds {same['backgrounds']['with_event']} of "
        f"{same['backgrounds']['of']}; " + (
            f"held-out ambience {amb['events']} events in {amb['unique_minutes']} min "
            f"({amb['per_hour']} per hour, 95% interval {amb['interval95'][0]}-{amb['interval95'][1]})."
            if amb["interval95"] else "no ambience held out."), "",
    ]


def field_sections(metrics: dict[str, Any]) -> list[str]:
    """False alarms, hard negatives, range, latency, unseen sources: shared with the report."""
    field, lines = metrics["field"], []
    lines += heldout_sections(metrics) + same_site_sections(metrics) + recordings_sections(metrics)
    scene = field["scene"]
    snr, slow = field["recall_vs_snr_db"], field["low_blade_pass_recall_vs_snr_db"]
    dist = field["recall_vs_distance_m"]
    lines += ["## Recall against SNR and distance (test-split drones, INT8, window recall)", "",
              "The shipped model trained on every group, these clips too: the curves below show "
              "the scene and the pipeline, not how unseen drones are heard (that is the "
              "leave-one-drone-out section).", "",
              *_table(["SNR dB", *snr.keys()], [["test-split drones", *_curve_row(snr)],
                                               ["slowed to 40-100 Hz blade pass", *_curve_row(slow)]]),
              "", *_table(["distance m", *dist.keys()], [["recall", *_curve_row(dist)]]), "",
              "SNR: RMS of the drone over RMS of real night ambience held at the scene's ambient "
              "level. Distance simulated by spherical spreading and ISO 9613-1 absorption (15 C, 70% "
              "RH) for the clean close indoor drone recordings taken as a small quadcopter of "
              f"{scene['source_dba']} dBA at 1 m, in real night ambience (test-split crickets, "
              f"insects, wind, frogs, outdoor sites) at {scene['ambient_dba']} dBA. **Detection range: "
              f"{_metres(field['range_m']['recall_50'])} at 50% recall, "
              f"{_metres(field['range_m']['recall_90'])} at 90%.**", ""]
    lat = field["latency"]
    lines += ["## Alert latency", "",
              f"{lat['passes']} test-split drone passes {lat['distance_m']:.0f} m away, after 3 s of "
              "ambience, through the daemon's pipeline in 0.1-s blocks: from drone onset to the event "
              f"opening, median **{lat['median_s']} s**, 90th percentile **{lat['p90_s']} s**; "
              f"{lat['missed']} passes raised no event.", ""]
    if metrics.get("uncertain_clips"):
        lines += ["## Clips left out (drone perhaps inaudible)", "",
                  *_table(["clip", "mean p(drone)", "windows over threshold"],
                          [[u["clip"], u["mean_p"], f"{u['share_over_threshold']:.0%}"]
                           for u in metrics["uncertain_clips"]]), ""]
    return lines


def _recipe_text(a: dict[str, Any]) -> str:
    pools = ", ".join(f"{name} {weight:.0%}" for name, weight in a["background_pools"])
    share = a.get("positive_share", 0.5)  # metrics written before the knob held half
    weights = dict(a.get("drone_weights") or ())
    drawn = "each as often as the others" + ("" if not weights else " but " + ", ".join(
        f"{k} at {v:g}x" for k, v in sorted(weights.items())))
    native = a.get("native_speed_probability", 0.0)  # metrics written before the knob lack it
    audible = a.get("audible_db")
    mixed = 1 - a.get("clean_probability", 0.0)  # recipes from 4.0.0 on lack the removed knobs
    labels = ("" if not audible else
              f" Each positive is labelled by how well its drone is heard over its bed: 0 where its "
              f"third-best third-octave band stands under {audible[0]:.0f} dB over the bed's, 1 from "
              f"{audible[1]:.0f} dB, a soft label in between.")
    return (
        f"Trained on examples drawn afresh every batch, {share:.0%} drone, {1 - share:.0%} "
        "background. A drone is "
        f"drawn first (Bebop, Mambo, the Svanstrom quadcopters, the Phantoms, the Iris: {drawn}), "
        "then one of its recordings, "
        + (f"{native:.0%} played at the rate it was recorded at, the others " if native else "")
        + "sped up or slowed by "
        f"{a['speed'][0]}-{a['speed'][1]}x{_other_drones(a)}; "
        f"{a['lowpass_probability']:.0%} are absorbed over {a['distance_m'][0]:.0f}-"
        f"{a['distance_m'][1]:.0f} m of air (ISO 9613-1), and {mixed:.0%} are "
        f"mixed into real background at {a['snr_db'][0]:.0f} to {a['snr_db'][1]:+.0f} dB SNR.{labels} "
        f"Negatives and beds are drawn by kind ({pools}; beds never a helicopter), "
        f"{a['background_mix_probability']:.0%} of them two backgrounds mixed. Every example "
        f"gets a microphone tilt of {a['tilt_db_per_octave'][0]} to {a['tilt_db_per_octave'][1]} "
        f"dB/octave and a level of {a['level_dbfs'][0]:.0f} to {a['level_dbfs'][1]:.0f} dBFS."
    )


def _other_drones(a: dict[str, Any]) -> str:
    """' (10% slowed to a large multirotor's blade pass, 15% synthetic)' where a recipe (2.x)
    drew such drones; nothing where it drew none or lacks the knobs."""
    large, synthetic = a.get("large_drone_probability", 0.0), a.get("synthetic_probability", 0.0)
    return (f" ({large:.0%} slowed to a large multirotor's blade pass, {synthetic:.0%} synthetic)"
            if large or synthetic else "")


def _decision_text(model: dict) -> str:
    """The decision logic the threshold was chosen for (models before 3.2.0 do not say)."""
    d = model.get("decision")
    return (f", chosen for a moving mean over {d['smooth_windows']} windows, an event opening after "
            f"{d['open_windows']} over it and closing after {d['close_windows']} under it (metadata "
            "`decision`; other settings move the false alarms per hour)") if d else ""


def _frontend_text(recipe: dict) -> str:
    """'0.992-s log-mel windows (16 kHz, n_fft 512, hop 160, 64 mel bands 30-8000 Hz)'."""
    fe, frames = recipe["frontend"], recipe["train"]["window_frames"]
    seconds = ((frames - 1) * fe["hop_length"] + fe["n_fft"]) / fe["sample_rate"]
    return (f"{seconds:.3f}-s log-mel windows ({fe['sample_rate'] // 1000} kHz, n_fft {fe['n_fft']}, "
            f"hop {fe['hop_length']}, {fe['n_mels']} mel bands {fe['fmin']:g}-{fe['fmax']:g} Hz)")


def render(metrics: dict[str, Any]) -> str:
    model, training, test = metrics["model"], metrics["training"], metrics["test"]
    machine = metrics["machine"]
    agree = test["int8_vs_fp32_windows"]
    sources = "\n".join(f"- `{s}`: {SOURCE_NOTES.get(s, s)}" for s in model["sources"])
    requantized = (f" and requantized by `requantize` ({metrics['requantized']['cpus']} CPUs, "
                   f"{metrics['requantized']['platform']}: the test-split, field and INT8 figures "
                   "are from that run)") if "requantized" in metrics else ""
    lines = [
        f"# {model['name']} {model['version']}", "",
        f"Binary drone / background classifier over {_frontend_text(training['recipe'])}, a "
        f"{len(training['recipe']['train']['channels'])}-block CNN, static INT8 (QDQ, per-channel "
        f"7-bit weights). File `{model['file']}`, {model['bytes']:,} bytes; decision threshold "
        f"{model['threshold']}{_decision_text(model)}. Written by "
        f"`python -m nightear_training build-default`{requantized}"
        f"; every figure here comes from `{model['name']}.metrics.json`; curves in "
        f"`{model['name']}.report.md`.", "",
        "## Data", sources, "",
        _recipe_text(training["recipe"]["augment"]),
        "Grouped split, no recording on two sides (see `datasets.md`). Training manifest sha256 "
        f"`{model['training_manifest_sha256']}`.", "",
        *_split_table(metrics["split"]), "",
        "## Test split (trained on: see the held-out sections for what it never heard)", "",
        "Clip score = mean of its windows' probabilities (windows every 0.25 s, as the daemon "
        "scores them).", "",
        *_results_table(test), "",
        f"Windows: ROC AUC {test['windows']['roc_auc']}, average precision "
        f"{test['windows']['average_precision']}, recall "
        + ", ".join(f"{v:.3f} at {k} false-positive rate"
                    for k, v in test["windows"]["recall_at_fpr"].items())
        + f". INT8 against FP32 over all test windows: AUC {agree['auc_fp32']:.5f} vs "
        f"{agree['auc_int8']:.5f} (drop {agree['auc_drop']:+.5f}), same decision on "
        f"{agree['decision_agreement']:.2%} of windows, largest probability difference "
        f"{agree['max_abs_diff']:.3f}.", "",
        "### Per kind (test split, INT8, worst first)", *_kind_table(test["int8"]["per_kind"]), "",
        *field_sections(metrics),
        "## Training", "",
        f"{training['epochs_run']} epochs of {training['recipe']['train']['epochs']} on "
        f"{training['clips']} clips (every group), the epoch chosen by leaving one drone out: "
        f"{training['train_seconds'] / 60:.1f} min; the whole build with every evaluation "
        f"{metrics['total_seconds'] / 60:.1f} min; on {machine['processor']} with {machine['cpus']} "
        f"CPUs ({machine['platform']}, Python {machine['python']}).", "",
        "## Licence", "",
        "The DroneAudioDataset has no licence file (its README asks for the citation); its "
        "background clips come from ESC-50 (CC BY-NC 3.0) and Speech Commands (CC BY 4.0); the "
        "Purdue recordings state no licence. This model inherits ESC-50's **non-commercial** "
        "restriction: research and non-commercial use only.", "",
        "## Known limits", "",
        "- Few real outdoor drones (a dozen sessions): range and recall at a distance rest on "
        "simulation (spreading, absorption, mixing), not on recordings of drones far away.",
        "- No recording of a large multirotor (40-100 Hz blade pass): such drones may go unheard.",
        "- Five drones in all: leaving one out leaves four to learn from, so the held-out figures "
        "are a floor for the shipped model, which hears all five.",
        "- The ambience behind false alarms per hour was partly produced for listening (edited, "
        "some looped); a new site's first nights are the real test.",
        "- The test split below is part of the shipped model's training (it trains on every "
        "group): its clip figures, range and latency check the file, they are not held out.",
        "",
    ]
    return "\n".join(lines)
