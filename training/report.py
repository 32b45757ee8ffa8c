"""The evaluation report: markdown plus PNG plots (matplotlib) next to the model, drawn from
the metrics JSON alone so that every curve is one the build measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _roc_pr(metrics: dict[str, Any], folder: Path) -> list[str]:
    curves = metrics["test"]["windows"]
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    roc.plot(curves["roc"]["fpr"], curves["roc"]["tpr"])
    roc.set(xscale="log", xlim=(1e-4, 1), xlabel="false-positive rate (windows)", ylabel="recall",
            title=f"ROC, test windows (AUC {curves['roc_auc']})")
    pr.plot(curves["pr"]["recall"], curves["pr"]["precision"])
    pr.set(xlabel="recall", ylabel="precision", title=f"PR (AP {curves['average_precision']})")
    for ax in (roc, pr):
        ax.grid(alpha=0.3)
    return [_save(fig, folder / "roc_pr.png")]


def _false_alarms(metrics: dict[str, Any], folder: Path) -> list[str]:
    fa = metrics.get("false_alarms")
    if not fa:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["threshold"] for p in fa["curve"]]
    ax.plot(xs, [max(p["per_hour"], 1e-2) for p in fa["curve"]], marker=".")
    ax.axhline(fa["target_per_hour"], color="r", ls="--", label=f"target {fa['target_per_hour']}/h")
    ax.axvline(metrics["model"]["threshold"], color="k", ls=":", label="chosen threshold")
    ax.set(yscale="log", xlabel="threshold", ylabel="false alarms per hour",
           title=f"{fa['unique_minutes']} unique minutes of background, {fa['folds']}-fold")
    ax.legend()
    ax.grid(alpha=0.3)
    return [_save(fig, folder / "false_alarms.png")]


def _recall(metrics: dict[str, Any], folder: Path) -> list[str]:
    field = metrics["field"]
    fig, (by_snr, by_distance) = plt.subplots(1, 2, figsize=(9, 4))
    for key, label in (("recall_vs_snr_db", "held-out drones"),
                       ("low_blade_pass_recall_vs_snr_db", "slowed to 40-100 Hz blade pass")):
        points = field[key]
        by_snr.plot([float(k) for k in points], list(points.values()), marker="o", label=label)
    by_snr.set(xlabel="SNR (dB, RMS)", ylabel="window recall", ylim=(0, 1.02), title="recall vs SNR")
    by_snr.legend()
    points = field["recall_vs_distance_m"]
    by_distance.plot([float(k) for k in points], list(points.values()), marker="o")
    scene = field["scene"]
    by_distance.set(xscale="log", xlabel="distance (m)", ylabel="window recall", ylim=(0, 1.02),
                    title=f"{scene['source_dba']} dBA at 1 m in {scene['ambient_dba']} dBA")
    for ax in (by_snr, by_distance):
        ax.grid(alpha=0.3)
    return [_save(fig, folder / "recall.png")]


def write(metrics: dict[str, Any], out_dir: Path, name: str) -> Path:
    """Write `<name>.report.md` and its plots in `<name>.report/`; returns the markdown path."""
    folder = out_dir / f"{name}.report"
    folder.mkdir(parents=True, exist_ok=True)
    images = _roc_pr(metrics, folder) + _false_alarms(metrics, folder) + _recall(metrics, folder)
    from nightear_training.card import field_sections  # the card's tables, shared

    lines = [f"# Evaluation report: {name} {metrics['model']['version']}", "",
             "Figures and curves from the build's metrics JSON (`python -m nightear_training "
             "build-default`).", ""]
    lines += [f"![{image}]({folder.name}/{image})" for image in images]
    lines += ["", *field_sections(metrics)]
    path = out_dir / f"{name}.report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
