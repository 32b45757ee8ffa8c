"""Evaluation: what a model's numbers mean in the field.

Clip metrics (ROC AUC, accuracy, F1, confusion, per kind), ROC and PR curves with recall at
fixed false-positive rates, false alarms per hour of background through the daemon's own
decision logic, recall against SNR and simulated distance (the detection range), and alert
latency through the daemon's pipeline. Works on probabilities from any scorer (torch, or the
FP32 or INT8 ONNX model through the daemon's classifier), so a card's figures are those of
the shipped file. `nightear_training.build` runs all of it; a notebook can call each part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig, EventTracker, WindowScore
from nightear.frontend import FrontendConfig, MelBasis, log_mel
from nightear.pipeline import Detector
from nightear_training.data import EXCLUDED, Clip
from nightear_training.features import clip_windows, eval_hop_frames, pad_to
from nightear_training.propagation import Scene, ambience_at, at_distance, drone_at
from nightear_training.quantize import agreement
from nightear_training.signals import change_speed, mix_at_snr, random_crop


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


# --- field evaluation: curves, false alarms per hour, range, latency ----------------------

Scorer = Callable[[np.ndarray], np.ndarray]  # windows (k, n_mels, frames) -> (k,) p(drone)
RECALL_FPRS = (0.01, 0.001)  # window false-positive rates at which recall is reported


def audio_window_probs(score: Scorer, y: np.ndarray, frontend: FrontendConfig, mel_basis: MelBasis,
                       window_frames: int, hop_frames: int) -> np.ndarray:
    """Probabilities of the windows the daemon would score on `y` (every hop, no padding
    beyond one window for audio shorter than a window)."""
    features = log_mel(pad_to(y, frontend.samples_for_frames(window_frames)), frontend, mel_basis)
    return score(clip_windows(features, window_frames, hop_frames))


def count_events(stream_probs: Sequence[np.ndarray], threshold: float,
                 decision: DecisionConfig = DecisionConfig()) -> int:
    """Events the daemon's decision logic raises on these window-probability streams."""
    events = 0
    for probs in stream_probs:
        tracker = EventTracker(decision, threshold)
        for i, p in enumerate(probs):
            events += sum(c.kind == "open" for c in tracker.push(WindowScore(i, i + 1, float(p))))
    return events


def false_alarm_curve(stream_probs: Sequence[np.ndarray], hours: float, thresholds: Sequence[float],
                      decision: DecisionConfig = DecisionConfig()) -> list[dict[str, float]]:
    """Events per hour of background at each threshold."""
    return [{"threshold": round(float(t), 5),
             "events": (n := count_events(stream_probs, float(t), decision)),
             "per_hour": round(n / hours, 3)} for t in thresholds]


def threshold_for_rate(curve: list[dict[str, float]], per_hour: float) -> float:
    """The lowest threshold whose false alarms per hour stay at or under `per_hour`."""
    ok = [point["threshold"] for point in curve if point["per_hour"] <= per_hour]
    return float(min(ok)) if ok else float(max(point["threshold"] for point in curve))


def curves(labels: np.ndarray, probs: np.ndarray) -> dict[str, object]:
    """ROC and precision-recall curves (thinned for plotting) with AUC, AP and recall at
    fixed false-positive rates."""
    fpr, tpr, _ = roc_curve(labels, probs)
    precision, recall, _ = precision_recall_curve(labels, probs)
    step_roc, step_pr = max(1, len(fpr) // 400), max(1, len(recall) // 400)
    return {
        "roc_auc": round(float(roc_auc_score(labels, probs)), 5),
        "average_precision": round(float(average_precision_score(labels, probs)), 5),
        "recall_at_fpr": {str(f): round(float(np.interp(f, fpr, tpr)), 4) for f in RECALL_FPRS},
        "roc": {"fpr": fpr[::step_roc].round(5).tolist(), "tpr": tpr[::step_roc].round(5).tolist()},
        "pr": {"recall": recall[::step_pr].round(5).tolist(),
               "precision": precision[::step_pr].round(5).tolist()},
    }


def recall_curve(score: Scorer, drones: Sequence[np.ndarray], ambience: Sequence[np.ndarray],
                 conditions: Sequence[float], place: Callable[[np.ndarray, np.ndarray, float], np.ndarray],
                 threshold: float, frontend: FrontendConfig, mel_basis: MelBasis, window_frames: int,
                 seed: int = 0) -> dict[str, float]:
    """Window recall (mean over drone clips) for each condition (an SNR or a distance);
    `place(drone, ambience_crop, condition)` builds the mixture."""
    out: dict[str, float] = {}
    for condition in conditions:
        rng = np.random.default_rng(seed)  # the same pairs of drone and ambience everywhere
        recalls = []
        for drone in drones:
            bed = random_crop(ambience[rng.integers(len(ambience))], len(drone), rng)
            probs = audio_window_probs(score, place(drone, bed, condition), frontend, mel_basis,
                                       window_frames, eval_hop_frames(frontend))
            recalls.append(float((probs >= threshold).mean()))
        out[str(condition)] = round(float(np.mean(recalls)), 4)
    return out


def range_at_recall(recall_by_distance: dict[str, float], level: float) -> float | None:
    """The distance (m) at which recall falls to `level`, interpolated in log distance;
    None when recall is under `level` even at the nearest distance."""
    points = sorted((float(d), r) for d, r in recall_by_distance.items())
    if points[0][1] < level:
        return None
    for (d0, r0), (d1, r1) in zip(points, points[1:], strict=False):
        if r1 < level <= r0:
            frac = (r0 - level) / (r0 - r1)
            return round(float(np.exp(np.log(d0) + frac * (np.log(d1) - np.log(d0)))), 1)
    return points[-1][0]  # still over `level` at the farthest distance tried


def alert_latencies(classifier: OnnxClassifier, passes: Sequence[np.ndarray],
                    ambience: Sequence[np.ndarray], distance_m: float, scene: Scene = Scene(),
                    lead_seconds: float = 3.0, block_seconds: float = 0.1,
                    seed: int = 0) -> list[float | None]:
    """Seconds from drone onset to the event opening, through the daemon's own pipeline fed
    in blocks like a microphone: `lead_seconds` of ambience, then the drone `distance_m` away
    in it. None where no event opened while the drone was there."""
    rng = np.random.default_rng(seed)
    rate = classifier.info.frontend.sample_rate
    lead, block = int(lead_seconds * rate), int(block_seconds * rate)
    latencies: list[float | None] = []
    for drone in passes:
        bed = random_crop(ambience[rng.integers(len(ambience))], lead + len(drone), rng)
        stream = ambience_at(bed, scene, rate)
        stream[lead:] += drone_at(drone, distance_m, scene, rate)
        detector, opened = Detector(classifier, DecisionConfig()), None
        for start in range(0, len(stream), block):
            output = detector.push(stream[start : start + block])
            opened = next((c.event.end_s for c in output.changes if c.kind == "open"), None)
            if opened is not None and opened < lead_seconds:  # a false alarm in the ambience:
                detector.finish()  # close it and keep listening for the drone
                opened = None
            if opened is not None:
                break
        latencies.append(None if opened is None else round(opened - lead_seconds, 3))
    return latencies


SNRS_DB = (-15, -10, -5, 0, 5, 10, 15, 20)
DISTANCES_M = (25, 50, 100, 150, 200, 300, 400, 500, 700, 1000)
LATENCY_DISTANCE_M = 100.0
NIGHT_KINDS = ("background", "background:site", "esc50:crickets", "esc50:insects", "esc50:wind",
               "esc50:frog")
MAX_DRONE_CLIPS = 60  # per condition, to keep the sweep to a minute or two


def _scored(classifier: OnnxClassifier, clips: Sequence[Clip],
            audio: dict[Path, np.ndarray]) -> list[np.ndarray]:
    fe = classifier.info.frontend
    return [audio_window_probs(classifier.score, audio[c.path], fe, classifier.mel_basis,
                               classifier.window_frames, eval_hop_frames(fe)) for c in clips]


def split_report(int8: OnnxClassifier, fp32: OnnxClassifier, clips: Sequence[Clip],
                 audio: dict[Path, np.ndarray]) -> dict[str, object]:
    """Clip metrics (INT8 and FP32, all and per source), window curves and INT8-vs-FP32."""
    threshold = int8.info.threshold
    labels = np.array([int(c.is_drone) for c in clips])
    kinds = [c.kind for c in clips]
    windows8, windows32 = _scored(int8, clips, audio), _scored(fp32, clips, audio)
    means8 = np.array([w.mean() for w in windows8])
    means32 = np.array([w.mean() for w in windows32])
    window_labels = np.concatenate([np.full(len(w), y) for w, y in zip(windows8, labels, strict=True)])
    agree = agreement(np.concatenate(windows32), np.concatenate(windows8), window_labels, threshold)
    per_source = {}
    for source in sorted({c.source for c in clips}):
        mask = np.array([c.source == source for c in clips])
        if 0 < labels[mask].sum() < mask.sum():
            per_source[source] = clip_metrics(means8[mask], labels[mask],
                                              [kinds[i] for i in np.flatnonzero(mask)], threshold)
    return {
        "int8": clip_metrics(means8, labels, kinds, threshold),
        "fp32": clip_metrics(means32, labels, kinds, threshold),
        "per_source": per_source,
        "windows": curves(window_labels, np.concatenate(windows8)),
        "int8_vs_fp32_windows": {**asdict(agree), "auc_drop": round(agree.auc_drop, 5), "ok": agree.ok},
        "int8_misclassified": misclassified(means8, labels, [f"{c.source}/{c.relpath}" for c in clips],
                                            threshold),
    }


def field_report(classifier: OnnxClassifier, test: Sequence[Clip], audio: dict[Path, np.ndarray],
                 scene: Scene = Scene(), seed: int = 0) -> dict[str, object]:
    """Recall against SNR (all held-out drones, and drones slowed to a large multirotor's
    40-100 Hz blade pass, over night ambience at the scene's level), against distance (the
    clean close recordings as 1-m sources), detection range and alert latency, all through
    `classifier`."""
    fe, basis, width = classifier.info.frontend, classifier.mel_basis, classifier.window_frames
    threshold, rate = classifier.info.threshold, fe.sample_rate
    rng = np.random.default_rng(seed)
    night = [audio[c.path] for c in test if c.kind in NIGHT_KINDS] or [
        audio[c.path] for c in test if not c.is_drone]
    drones = [audio[c.path][: 5 * rate] for c in test if c.is_drone]
    drones = [drones[i] for i in sorted(rng.permutation(len(drones))[:MAX_DRONE_CLIPS])]
    close = [audio[c.path] for c in test if c.kind.endswith(":clean")] or drones  # no added noise
    close = [close[i] for i in sorted(rng.permutation(len(close))[:MAX_DRONE_CLIPS])]
    slowed = [change_speed(d, float(f), rate) for d, f in
              zip(drones, rng.uniform(0.25, 0.45, len(drones)), strict=True)]

    def snr(drone: np.ndarray, bed: np.ndarray, value: float) -> np.ndarray:
        # the night at the scene's ambient level, the drone `value` dB over it: levels a
        # microphone in the field records, not a drone pushed past full scale
        return mix_at_snr(drone, ambience_at(bed, scene, rate), value)

    def distance(drone: np.ndarray, bed: np.ndarray, value: float) -> np.ndarray:
        return at_distance(drone, bed, value, scene, rate)

    by_distance = recall_curve(classifier.score, close, night, DISTANCES_M, distance, threshold,
                               fe, basis, width, seed)
    passes = _passes(test, audio, rate)
    latencies = alert_latencies(classifier, passes, night, LATENCY_DISTANCE_M, scene, seed=seed)
    heard = [x for x in latencies if x is not None]
    return {
        "recall_vs_snr_db": recall_curve(classifier.score, drones, night, SNRS_DB, snr, threshold,
                                         fe, basis, width, seed),
        "low_blade_pass_recall_vs_snr_db": recall_curve(classifier.score, slowed, night, SNRS_DB, snr,
                                                        threshold, fe, basis, width, seed),
        "recall_vs_distance_m": by_distance,
        "range_m": {"recall_50": range_at_recall(by_distance, 0.5),
                    "recall_90": range_at_recall(by_distance, 0.9)},
        "scene": asdict(scene), "drone_clips": len(drones), "close_drone_clips": len(close),
        "latency": {"distance_m": LATENCY_DISTANCE_M, "passes": len(latencies),
                    "missed": len(latencies) - len(heard),
                    "median_s": round(float(np.median(heard)), 3) if heard else None,
                    "p90_s": round(float(np.percentile(heard, 90)), 3) if heard else None},
    }


def _passes(test: Sequence[Clip], audio: dict[Path, np.ndarray], rate: int) -> list[np.ndarray]:
    """Drone passes of 3-5 s: a test group's consecutive 1-s chunks joined, or the first 5 s
    of a longer recording."""
    groups: dict[tuple[str, str], list[Clip]] = {}
    for c in test:
        if c.is_drone:
            groups.setdefault((c.source, c.group), []).append(c)
    passes = []
    for members in groups.values():
        joined = np.concatenate([audio[c.path] for c in sorted(members, key=lambda c: c.relpath)])
        if len(joined) >= 3 * rate:
            passes.append(joined[: 5 * rate])
    return passes[:MAX_DRONE_CLIPS]


def evaluate_model(int8: OnnxClassifier, fp32: OnnxClassifier | None, clips: Sequence[Clip],
                   audio: dict[Path, np.ndarray], log: Callable[[str], None] = print) -> dict[str, object]:
    """Everything a card reports about one model file on the held-out test split."""
    test = [c for c in clips if c.split == "test"]
    out: dict[str, object] = {"test": split_report(int8, fp32 or int8, test, audio)}
    m = out["test"]["int8"]  # type: ignore[index]
    log(f"test: INT8 AUC {m['roc_auc']:.5f} acc {m['accuracy']:.4f} F1 {m['f1']:.4f}")
    out["field"] = field_report(int8, test, audio)
    field = out["field"]
    log(f"range at 50% / 90% recall: {field['range_m']}; latency {field['latency']}")  # type: ignore[index]
    uncertain = [c for c in clips if c.split == EXCLUDED]
    out["uncertain_clips"] = [
        {"clip": f"{c.source}/{c.relpath}", "mean_p": round(float(p.mean()), 4),
         "share_over_threshold": round(float((p >= int8.info.threshold).mean()), 4)}
        for c, p in zip(uncertain, _scored(int8, uncertain, audio), strict=True)]
    return out


def recording_figures(classifier: OnnxClassifier, data_root: Path | None, extra: Sequence[Clip],
                      max_clips_per_split: int | None,
                      log: Callable[[str], None] = print) -> dict[str, object]:
    """Per recording, as the field counts (an event or not, as recorded and 10-30 dB fainter),
    with false alarms per hour of ambience: on the shared data cut as the leave-one-drone-out
    folds cut it (held out only for a model that never trained on these sources), and on new
    recordings as one fold of their own."""
    from nightear_training import heldout
    from nightear_training.build import _subsample
    from nightear_training.data import ALL_SOURCES, load_clips
    from nightear_training.per_recording import arriving
    from nightear_training.recipe import Recipe, load_bank

    recipe = Recipe(frontend=classifier.info.frontend)
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(
        recipe.train, window_frames=classifier.window_frames))
    shared = _subsample(load_clips(data_root, ALL_SOURCES), max_clips_per_split, 0)
    audio = load_bank([*shared, *extra], classifier.info.frontend)
    basis, threshold = classifier.mel_basis, classifier.info.threshold
    sets = heldout.fold_sets(recipe, shared, audio, basis)
    scores = heldout.merge([heldout.score_items(classifier.score, items) for _, _, items in sets])
    out: dict[str, object] = {"recordings": heldout.table(scores, threshold)}
    if scores["streams"]:
        out["recordings_arriving"] = heldout.table(arriving(scores), threshold)  # as drones arriving
    drones = tuple(sorted({c.drone for c in extra if c.is_drone}))
    if drones:
        own = heldout.Fold("new recordings", drones, tuple(sorted({c.source for c in extra})))
        ambience = [c for c in shared if c.source == "ambience"]
        items = heldout.fold_items(own, [*extra, *ambience] if not any(
            not c.is_drone for c in extra) else list(extra), audio, recipe, basis)
        out["folder_recordings"] = heldout.table(heldout.score_items(classifier.score, items), threshold)
    log(f"per recording at {threshold}: {out['recordings']['pooled']}")  # type: ignore[index]
    return out


def evaluate_file(model: Path, data_root: Path | None = None, extra: Sequence[Clip] = (),
                  out_dir: Path | None = None, max_clips_per_split: int | None = None,
                  log: Callable[[str], None] = print) -> dict[str, object]:
    """Measure a model file on the shared test split plus `extra` clips (new field
    recordings: their test split, or all of them if none is marked test); write
    `<name>.eval.json` and a report beside the model or in `out_dir`."""
    import json

    from nightear_training import report
    from nightear_training.build import _subsample
    from nightear_training.data import load_clips
    from nightear_training.recipe import load_bank

    classifier = OnnxClassifier(model)
    sources = tuple(json.loads(classifier.info.metadata.get("training_sources",
                                                            '["drone-audio-dataset"]')))
    clips = [c for c in _subsample(load_clips(data_root, sources), max_clips_per_split, 0)
             if c.split == "test"]
    clips += ([c for c in extra if c.split == "test"]
              or [dataclasses.replace(c, split="test") for c in extra])
    audio = load_bank(clips, classifier.info.frontend)
    metrics = {"model": {"name": classifier.info.name, "version": classifier.info.version,
                         "file": model.name, "bytes": model.stat().st_size,
                         "threshold": classifier.info.threshold, "sources": list(sources)}}
    metrics.update(evaluate_model(classifier, None, clips, audio, log))
    metrics.update(recording_figures(classifier, data_root, extra, max_clips_per_split, log))
    out_dir = out_dir or model.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{classifier.info.name}.eval.json").write_text(json.dumps(metrics, indent=1) + "\n")
    report.write(metrics, out_dir, f"{classifier.info.name}.eval")
    log(f"wrote {out_dir / classifier.info.name}.eval.json and its report")
    return metrics
