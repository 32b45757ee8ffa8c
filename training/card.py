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


def field_sections(metrics: dict[str, Any]) -> list[str]:
    """False alarms, hard negatives, range, latency, unseen sources: shared with the report."""
    field, lines = metrics["field"], []
    fa = metrics.get("false_alarms")
    if fa:
        at = next((p for p in fa["curve"] if p["threshold"] >= metrics["model"]["threshold"]), None)
        minutes = ", ".join(f"{k} {v}" for k, v in fa["minutes_by_source"].items())
        lines += ["## False alarms per hour", "",
                  f"{fa['unique_minutes']} unique minutes of background ({minutes}), each clip once, "
                  f"joined into one stream per source and fold, scored by {fa['folds']} models each "
                  f"trained without that fold's recordings ({fa['fold_epochs']} epochs, same recipe), "
                  "through the daemon's decision logic. The threshold is the lowest with at most "
                  f"{fa['target_per_hour']} false alarm per hour: **{metrics['model']['threshold']}**, "
                  f"where {at['events'] if at else '?'} events were raised "
                  f"({at['per_hour'] if at else '?'} per hour).", "",
                  "### Hard negatives (share of windows over the threshold, out-of-fold)", "",
                  *_table(["kind", "windows", "over threshold"],
                          [[k, v["windows"], f"{v['share_over_threshold']:.2%}"]
                           for k, v in fa["hard_negatives"].items()]), ""]
    scene = field["scene"]
    snr, slow = field["recall_vs_snr_db"], field["low_blade_pass_recall_vs_snr_db"]
    dist = field["recall_vs_distance_m"]
    lines += ["## Recall against SNR and distance (held-out drones, INT8, window recall)", "",
              *_table(["SNR dB", *snr.keys()], [["held-out drones", *_curve_row(snr)],
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
              f"{lat['passes']} held-out drone passes {lat['distance_m']:.0f} m away, after 3 s of "
              "ambience, through the daemon's pipeline in 0.1-s blocks: from drone onset to the event "
              f"opening, median **{lat['median_s']} s**, 90th percentile **{lat['p90_s']} s**; "
              f"{lat['missed']} passes raised no event.", ""]
    loso = metrics.get("leave_one_source_out")
    if loso:
        lines += ["## Leave one source out (trained without it, tested on all of it)", "",
                  *_table(["source", "drone clips", "background clips", "clip ROC AUC", "window recall",
                           "window false-positive rate"],
                          [[s, v["drone_clips"], v["background_clips"], v["clip_roc_auc"],
                            v["window_recall"], v["window_false_positive_rate"]] for s, v in loso.items()]),
                  ""]
    if metrics.get("uncertain_clips"):
        lines += ["## Clips left out (drone perhaps inaudible)", "",
                  *_table(["clip", "mean p(drone)", "windows over threshold"],
                          [[u["clip"], u["mean_p"], f"{u['share_over_threshold']:.0%}"]
                           for u in metrics["uncertain_clips"]]), ""]
    return lines


def _recipe_text(a: dict[str, Any]) -> str:
    return (
        "Trained on examples drawn afresh every batch, half drone, half background. A drone is a "
        f"real recording sped up or slowed by {a['speed'][0]}-{a['speed'][1]}x "
        f"({a['large_drone_probability']:.0%} slowed {a['large_drone_speed'][0]}-"
        f"{a['large_drone_speed'][1]}x, a large multirotor's blade pass) or "
        f"({a['synthetic_probability']:.0%}) a synthetic multirotor of {a['blade_pass_hz'][0]:.0f}-"
        f"{a['blade_pass_hz'][1]:.0f} Hz blade pass; {1 - a['clean_probability']:.0%} of drones are "
        f"absorbed over {a['distance_m'][0]:.0f}-{a['distance_m'][1]:.0f} m (ISO 9613-1) and mixed "
        f"into real background at {a['snr_db'][0]:.0f} to {a['snr_db'][1]:+.0f} dB SNR. Background "
        f"is a real recording ({a['background_mix_probability']:.0%} two mixed). Every example "
        f"gets a microphone tilt of {a['tilt_db_per_octave'][0]} to {a['tilt_db_per_octave'][1]} "
        f"dB/octave and a level of {a['level_dbfs'][0]:.0f} to {a['level_dbfs'][1]:.0f} dBFS."
    )


def render(metrics: dict[str, Any]) -> str:
    model, training, test = metrics["model"], metrics["training"], metrics["test"]
    machine = metrics["machine"]
    agree = test["int8_vs_fp32_windows"]
    sources = "\n".join(f"- `{s}`: {SOURCE_NOTES.get(s, s)}" for s in model["sources"])
    lines = [
        f"# {model['name']} {model['version']}", "",
        "Binary drone / background classifier over 0.816-s log-mel windows (16 kHz, n_fft 1024, hop "
        "256, 64 mel bands 30-8000 Hz), a 4-block CNN, static INT8 (QDQ, per-channel weights). "
        f"File `{model['file']}`, {model['bytes']:,} bytes; decision threshold {model['threshold']}. "
        "Written by `python -m nightear_training build-default`; every figure here comes from that "
        f"run's `{model['name']}.metrics.json`; curves in `{model['name']}.report.md`.", "",
        "## Data", sources, "",
        _recipe_text(training["recipe"]["augment"]),
        "Grouped split, no recording on two sides (see `datasets.md`). Training manifest sha256 "
        f"`{model['training_manifest_sha256']}`.", "",
        *_split_table(metrics["split"]), "",
        "## Held-out test split", "",
        "Clip score = mean of its windows' probabilities (windows every 0.256 s).", "",
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
        f"{training['epochs_run']} epochs (best {training['best_epoch']}, early stopping on validation "
        f"AUC): {training['train_seconds'] / 60:.1f} min; the whole build with every evaluation "
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
        "- Large multirotors are represented only by slowed-down small drones and synthetic hum.",
        "- The background minutes behind false alarms per hour are daytime and household sounds "
        "as much as night ambience; a new site's first nights are the real test.",
        "",
    ]
    return "\n".join(lines)
