"""The model card: what the model was trained on, how it was split, what it scores on the
held-out test split (FP32 and the shipped INT8 file), in the field (false alarms per hour,
range, latency, hard negatives, unseen sources), its licence and its known limits.
Rendered from the metrics JSON only, so every figure in it was measured by the build."""

from __future__ import annotations

from typing import Any

from nightear.decision import DEFAULT_HOP_SECONDS, EARLIER_HOP_SECONDS
from nightear_training.card_field import fit_section, seeds_section, sites_section

SOURCE_NOTES = {
    "drone-audio-dataset": "DroneAudioDataset (Al-Emadi et al., IWCMC 2019): Parrot Bebop and Mambo "
    "indoors, against ESC-50 and Speech Commands backgrounds",
    "svanstrom-outdoor": "Svanstrom et al. (Data in Brief 2021): small quadcopters outdoors, "
    "helicopters, outdoor ambience",
    "purdue-outdoor": "Purdue 2018 project: DJI Phantom and 3DR Iris at one flying field, its "
    "ambience",
    "gunhoo-outdoor": "gunhoo/Drone-Tracking (ACM MobiSys 2019 poster): one small quadcopter at "
    "10-50 m through a Raspberry Pi node's microphone, its site; its 1-m clips left out",
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


def _arriving_lines(at: dict[str, Any] | None) -> list[str]:
    """The same recordings as drones arriving in a stream (older metrics lack them)."""
    if not at:
        return []
    heard = " / ".join(_heard(at["pooled"][lvl]) for lvl in LEVEL_NAMES)
    return [f"As drones arriving in a stream the daemon has been scoring (each recording led in by "
            f"scored ambience, so its first windows are averaged with it, not alone as a "
            f"file's first windows are): heard {heard} (as recorded / -10 / -20 / -30 dB) at the "
            "same threshold.", ""]


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
    lines += (fit_section(metrics) + sites_section(metrics) + seeds_section(metrics)
              + same_site_sections(metrics) + recordings_sections(metrics))
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


def _plain_text(recipe: dict[str, Any]) -> str:
    p, t = recipe["plain"], recipe["train"]
    return (
        "The plain recipe: "
        f"one-window examples, {p['positive_share']:.0%} drone, drawn afresh every batch. A "
        "background is drawn data set first (each shared set a pool), then a recording and a random "
        f"crop, at a gain of {p['background_gain_db'][0]:.0f} to {p['background_gain_db'][1]:+.0f} dB, "
        f"{p['second_background_probability']:.0%} with a second background at "
        f"{p['second_background_gain_db'][0]:.0f} to {p['second_background_gain_db'][1]:+.0f} dB. A "
        "positive adds a real drone recording (data set first, then recording) at "
        f"{p['speed'][0]}-{p['speed'][1]}x its rotor rate (resampled), {p['lowpass_probability']:.0%} "
        f"low-passed (2nd-order Butterworth, {p['lowpass_hz'][0] / 1000:g}-{p['lowpass_hz'][1] / 1000:g} "
        f"kHz), at {p['snr_db'][0]:.0f} to {p['snr_db'][1]:+.0f} dB broadband SNR over the background "
        f"(its level floored at {p['floor_dbfs']:.0f} dBFS), clipped to +-1. " + _network_text(t)
    )


def _network_text(t: dict[str, Any]) -> str:
    """The network and schedule; metrics of 3.4.0 and before (they name `pool_bands`) describe
    its head on fixed bands, with dropout."""
    head = ("a mean over bands and frames" if t.get("global_pool", "pool_bands" not in t)
            else "a mean over frames per band, dropout")
    masks = (f"; SpecAugment masks of up to {t['mask_bands']} bands and {t['mask_frames']} frames"
             if t.get("mask_bands") or t.get("mask_frames") else "")  # 3.4.0's metrics name them
    return (
        f"Network: {len(t['channels'])} blocks of 3x3 convolutions "
        f"({'-'.join(map(str, t['channels']))} channels, batch norm, ReLU, 2x2 max-pool), {head}, one "
        f"linear layer; AdamW (weight decay {t['weight_decay']:g}), one-cycle to {t['learning_rate']:g} "
        f"over {t['epochs'] * t['batches_per_epoch']:,} steps of {t['batch_size']}{masks}."
    )


def _recipe_text(a: dict[str, Any], t: dict[str, Any]) -> str:
    """The field recipe (`FieldSampler`)."""
    pools = ", ".join(f"{name} {weight:.0%}" for name, weight in a["background_pools"])
    share = a.get("positive_share", 0.5)  # metrics written before the knob held half
    return (
        f"Trained on examples drawn afresh every batch, {share:.0%} drone, {1 - share:.0%} "
        "background. A drone is drawn first (each make and site as often as the others), then one "
        f"of its recordings, sped up or slowed by {a['speed'][0]}-{a['speed'][1]}x; "
        f"{a['lowpass_probability']:.0%} are absorbed over {a['distance_m'][0]:.0f}-"
        f"{a['distance_m'][1]:.0f} m of air (ISO 9613-1), and mixed into real background at "
        f"{a['snr_db'][0]:.0f} to {a['snr_db'][1]:+.0f} dB SNR. Negatives and beds are drawn by kind "
        f"({pools}; beds never a helicopter), {a['background_mix_probability']:.0%} of them two "
        f"backgrounds mixed. Every example gets a microphone tilt of {a['tilt_db_per_octave'][0]} to "
        f"{a['tilt_db_per_octave'][1]} dB/octave and a level of {a['level_dbfs'][0]:.0f} to "
        f"{a['level_dbfs'][1]:.0f} dBFS. " + _network_text(t)
    )


def _decision_text(model: dict) -> str:
    """The decision logic the threshold was chosen for (models before 3.2.0 do not say)."""
    d = model.get("decision")
    if not d:
        return ""
    hop = d.get("hop_seconds", EARLIER_HOP_SECONDS)
    return (f", chosen for a moving mean over {d['smooth_windows']} windows of {hop:g} s, an event "
            f"opening after {d['open_windows']} over it and closing after {d['close_windows']} under it "
            "(metadata `decision`; other settings move the false alarms per hour)")


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
        _plain_text(training["recipe"]) if training["recipe"].get("plain")
        else _recipe_text(training["recipe"]["augment"], training["recipe"]["train"]),
        "Grouped split, no recording on two sides (see `datasets.md`). Training manifest sha256 "
        f"`{model['training_manifest_sha256']}`.", "",
        *_split_table(metrics["split"]), "",
        "## Test split (trained on: see the held-out sections for what it never heard)", "",
        f"Clip score = mean of its windows' probabilities (windows every {DEFAULT_HOP_SECONDS:g} s, as "
        "the daemon scores them).", "",
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
        f"{training['clips']} clips (every group): "
        f"{training['train_seconds'] / 60:.1f} min; the whole build with every evaluation "
        f"{metrics['total_seconds'] / 60:.1f} min; on {machine['processor']} with {machine['cpus']} "
        f"CPUs ({machine['platform']}, Python {machine['python']}).", "",
        "## Licence", "",
        "The DroneAudioDataset has no licence file (its README asks for the citation); its "
        "background clips come from ESC-50 (CC BY-NC 3.0) and Speech Commands (CC BY 4.0); the "
        "Purdue recordings state no licence; gunhoo-outdoor's repository is MIT-licensed and reserves "
        "the rights to its poster (used for research and training; the audio is not redistributed). "
        "This model inherits ESC-50's **non-commercial** "
        "restriction: research and non-commercial use only.", "",
        "## Known limits", "",
        "- Few real outdoor drones (a dozen sessions): range and recall at a distance rest on "
        "simulation (spreading, absorption, mixing), not on recordings of drones far away.",
        "- No recording of a large multirotor (40-100 Hz blade pass): such drones may go unheard.",
        "- Three outdoor sites and two indoor toys in all: leaving a site out leaves two to learn "
        "from, so the held-out figures are a floor for the shipped model, which hears all three.",
        "- The ambience behind false alarms per hour was partly produced for listening (edited, "
        "some looped); a new site's first nights are the real test.",
        "- The test split below is part of the shipped model's training (it trains on every "
        "group): its clip figures, range and latency check the file, they are not held out.",
        "",
    ]
    return "\n".join(lines)
