"""Evaluation of clip scores: ROC AUC, accuracy, F1, confusion and a per-kind breakdown.

Works on probabilities from any scorer (torch, the FP32 or the INT8 ONNX model through the
daemon's own classifier), so the figures in a card are those of the shipped file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def clip_metrics(
    probs: np.ndarray, labels: np.ndarray, kinds: Sequence[str], threshold: float
) -> dict[str, object]:
    """Binary metrics at `threshold` plus, per kind, the share of clips classified right."""
    predicted = probs >= threshold
    truth = labels.astype(bool)
    tp = int((predicted & truth).sum())
    tn = int((~predicted & ~truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    per_kind: dict[str, dict[str, float | int]] = {}
    for kind in sorted(set(kinds)):
        mask = np.array([k == kind for k in kinds])
        per_kind[kind] = {
            "clips": int(mask.sum()),
            "accuracy": round(float((predicted[mask] == truth[mask]).mean()), 4),
            "mean_p": round(float(probs[mask].mean()), 4),
        }
    return {
        "clips": len(labels), "threshold": round(float(threshold), 4),
        "roc_auc": round(float(roc_auc_score(truth, probs)), 5),
        "accuracy": round(float((predicted == truth).mean()), 5),
        "precision": round(precision, 5), "recall": round(recall, 5),
        "f1": round(2 * precision * recall / (precision + recall) if precision + recall else 0.0, 5),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "per_kind": per_kind,
    }


def accuracy_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The threshold with the fewest clip errors (ties: the highest, fewer false alarms),
    half-way between the two scores it separates."""
    order = np.argsort(probs)
    p, y = probs[order], labels[order].astype(bool)
    # errors when thresholding just above p[i]: positives at or below i + negatives above i
    errors = np.cumsum(y) + (~y).sum() - np.cumsum(~y)
    candidates = np.concatenate(([(~y).sum()], errors))  # index 0: threshold below everything
    best = len(candidates) - 1 - int(np.argmin(candidates[::-1]))
    low = p[best - 1] if best > 0 else 0.0
    high = p[best] if best < len(p) else 1.0
    return float(np.clip((low + high) / 2, 0.05, 0.95))


def misclassified(
    probs: np.ndarray, labels: np.ndarray, names: Sequence[str], threshold: float, limit: int = 20
) -> list[tuple[str, float]]:
    """The clips furthest on the wrong side of the threshold: where to listen first."""
    wrong = [(abs(p - threshold), n, float(p)) for p, y, n in zip(probs, labels, names, strict=True)
             if (p >= threshold) != bool(y)]
    return [(n, round(p, 4)) for _, n, p in sorted(wrong, reverse=True)[:limit]]
