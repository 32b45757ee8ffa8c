"""The model card: what the model was trained on, how it was split, what it scores on the
held-out test split (FP32 and the shipped INT8 file), its licence and its known limits.
Rendered from the metrics JSON only, so every figure in it was measured by the build."""

from __future__ import annotations

from typing import Any


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _split_table(split: dict[str, Any]) -> list[str]:
    lines = [_row(["split", "clips", "drone", "background", "groups", "sha256 of the split's lines"]),
             _row(["---"] * 6)]
    for name, s in split.items():
        lines.append(_row([name, s["clips"], s["by_label"].get("drone", 0),
                           s["by_label"].get("background", 0), s["groups"], f"`{s['sha256']}`"]))
    return lines


def _metrics_table(results: dict[str, Any]) -> list[str]:
    lines = [_row(["split", "model", "ROC AUC", "accuracy", "precision", "recall", "F1",
                   "confusion (tn fp fn tp)"]), _row(["---"] * 8)]
    for split in ("test", "val"):
        for tag in ("int8", "fp32"):
            m = results[split][tag]
            c = m["confusion"]
            lines.append(_row([split, tag.upper(), m["roc_auc"], m["accuracy"], m["precision"],
                               m["recall"], m["f1"], f"{c['tn']} {c['fp']} {c['fn']} {c['tp']}"]))
    return lines


def _kind_table(per_kind: dict[str, Any]) -> list[str]:
    """Kinds with an error and every drone kind, worst first; the rest summed up in one line."""
    lines = [_row(["kind", "clips", "classified right", "mean p(drone)"]), _row(["---"] * 4)]
    shown = [(kind, k) for kind, k in per_kind.items() if k["accuracy"] < 1.0 or "drone" in kind]
    for kind, k in sorted(shown, key=lambda kv: (kv[1]["accuracy"], kv[0])):
        lines.append(_row([kind, k["clips"], f"{k['accuracy']:.3f}", k["mean_p"]]))
    rest = [k for kind, k in per_kind.items() if (kind, k) not in shown]
    if rest:
        lines += ["", f"The other {len(rest)} kinds ({sum(k['clips'] for k in rest)} clips): "
                  "every clip classified right."]
    return lines


def render(metrics: dict[str, Any]) -> str:
    model, training, machine = metrics["model"], metrics["training"], metrics["machine"]
    test = metrics["test"]
    agree = test["int8_vs_fp32_windows"]
    lines = [
        f"# {model['name']} {model['version']}",
        "",
        "Binary drone / background classifier over 0.816-s log-mel windows (16 kHz, n_fft 1024, "
        "hop 256, 64 mel bands 30-8000 Hz), a 4-block CNN, static INT8 (QDQ, per-channel weights). "
        f"File `{model['file']}`, {model['bytes']:,} bytes; decision threshold "
        f"{model['threshold']} (fewest clip errors on the validation split). Written by "
        "`python -m nightear_training build-default`; every figure below comes from that run's "
        f"`{model['name']}.metrics.json`.",
        "",
        "## Data",
        "DroneAudioDataset (Al-Emadi et al., IWCMC 2019), binary part: Parrot Bebop and Mambo "
        "recorded indoors (clean, and mixed with noise by the data set's authors) against ESC-50 "
        "environmental sounds and Speech Commands background noise. See `datasets.md`.",
        "",
        "Grouped split, no recording on two sides: ESC-50 by its folds (1-3 train, 4 val, 5 test), "
        "the long noise recordings by position (first 70% / 15% / 15%), drone chunks by a hash of "
        "their group. Training manifest sha256 "
        f"`{model['training_manifest_sha256']}`.",
        "",
        *_split_table(metrics["split"]),
        "",
        "## Results on the held-out test split",
        "Clip score = mean of its windows' probabilities (windows every 0.256 s), thresholded at "
        "the model's threshold.",
        "",
        *_metrics_table(metrics),
        "",
        f"The {len(test['int8_misclassified'])} misclassified test clips (at most 20) are listed in "
        "the metrics file, furthest from the threshold first. INT8 against FP32 over all test "
        f"windows: AUC {agree['auc_fp32']:.5f} (FP32) vs "
        f"{agree['auc_int8']:.5f} (INT8), drop {agree['auc_drop']:+.5f}; largest probability "
        f"difference {agree['max_abs_diff']:.4f}, mean {agree['mean_abs_diff']:.4f}; same decision "
        f"on {agree['decision_agreement']:.2%} of windows.",
        "",
        "### Per kind (test split, INT8, worst first)",
        *_kind_table(test["int8"]["per_kind"]),
        "",
        "## Training",
        f"{training['epochs_run']} epochs (best {training['best_epoch']}, early stopping on "
        f"validation AUC), training {training['train_seconds'] / 60:.1f} min, whole build "
        f"{training['total_seconds'] / 60:.1f} min on {machine['processor']} with "
        f"{machine['cpus']} CPUs ({machine['platform']}, Python {machine['python']}).",
        "",
        "## Licence",
        "The DroneAudioDataset has no licence file (its README asks for the citation); its "
        "background clips come from ESC-50 (CC BY-NC 3.0) and Speech Commands (CC BY 4.0). This "
        "model inherits ESC-50's **non-commercial** restriction: research and non-commercial use "
        "only.",
        "",
        "## Known limits",
        "- Two small indoor quadcopters only, recorded close: outdoor, distant, faint or other "
        "drones (larger multirotors hum at 40-100 Hz) are out of its training distribution; "
        "judge it on field recordings before trusting it.",
        "- The test split comes from the same recording sessions as training (chunk-level groups "
        "for the drones): it measures generalisation to new seconds of known drones, not to new "
        "drones, places or microphones.",
        "- Helicopters, engines and other harmonic machinery are the likeliest false alarms; "
        "see the per-kind table.",
        "- The threshold minimises clip errors on the validation split; it is not yet chosen for "
        "a false-alarm rate per hour of real night ambience.",
        "",
    ]
    return "\n".join(lines)
