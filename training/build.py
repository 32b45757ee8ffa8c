"""One call that rebuilds a model from the shared data: split, features, training, threshold,
ONNX export, INT8 quantization, FP32-vs-INT8 check, evaluation on the held-out test split,
metrics JSON and model card. `build_default()` makes the shipped model."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.frontend import FrontendConfig, librosa_mel_basis
from nightear_training import card
from nightear_training.data import Clip, load_clips, manifest_sha256, split_summary
from nightear_training.evaluate import accuracy_threshold, clip_metrics, misclassified
from nightear_training.export import export_onnx, model_metadata
from nightear_training.features import features_for
from nightear_training.quantize import agreement, quantize_int8
from nightear_training.train import TrainConfig, clip_probabilities, torch_scorer, train

MODEL_NAME = "nightear-drone"
MODEL_VERSION = "1.0.0"
CALIBRATION_WINDOWS = 512


@dataclass(frozen=True)
class BuildConfig:
    out_dir: Path = Path("models")
    work_dir: Path = Path("runs/build-default")
    name: str = MODEL_NAME
    version: str = MODEL_VERSION
    data_root: Path | None = None
    max_clips_per_split: int | None = None  # a tiny build for notebooks and CI
    train: TrainConfig = field(default_factory=TrainConfig)


def _subsample(clips: list[Clip], limit: int | None, seed: int) -> list[Clip]:
    """At most `limit` clips per split and label, chosen at random but reproducibly."""
    if limit is None:
        return clips
    rng = np.random.default_rng(seed)
    out: list[Clip] = []
    for split in ("train", "val", "test"):
        for label in ("background", "drone"):
            members = [c for c in clips if c.split == split and c.label == label]
            pick = rng.permutation(len(members))[: max(1, limit // 2)]
            out.extend(members[i] for i in sorted(pick))
    return out


def _calibration_windows(features: list[np.ndarray], labels: np.ndarray, width: int,
                         seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = np.concatenate([
        rng.choice(np.flatnonzero(labels == y), CALIBRATION_WINDOWS // 2, replace=True)
        for y in (0, 1)
    ])
    out = []
    for i in picks:
        start = rng.integers(0, features[i].shape[1] - width + 1)
        out.append(features[i][:, start : start + width])
    return np.stack(out)


def build(config: BuildConfig = BuildConfig(), log=print) -> dict[str, object]:
    """Build, check and document a model; returns the metrics written next to it."""
    started = time.perf_counter()
    clips = _subsample(load_clips(config.data_root), config.max_clips_per_split, config.train.seed)
    frontend = FrontendConfig()
    mel_basis = librosa_mel_basis(frontend)
    log(f"{len(clips)} clips; computing log-mel features with the edge front-end")
    features = features_for(clips, frontend, mel_basis, config.train.window_frames)
    by_split = {s: [i for i, c in enumerate(clips) if c.split == s] for s in ("train", "val", "test")}
    labels = np.array([int(c.is_drone) for c in clips])

    def part(split: str) -> tuple[list[np.ndarray], np.ndarray]:
        return [features[i] for i in by_split[split]], labels[by_split[split]]

    (tr_f, tr_y), (va_f, va_y), (te_f, _) = part("train"), part("val"), part("test")
    log(f"split: train {len(tr_f)}, val {len(va_f)}, test {len(te_f)} clips; "
        f"features in {time.perf_counter() - started:.0f} s")
    train_started = time.perf_counter()
    model, history = train(tr_f, tr_y, va_f, va_y, config.train, log)
    train_seconds = time.perf_counter() - train_started

    val_probs, _ = clip_probabilities(torch_scorer(model), va_f, config.train.window_frames)
    threshold = accuracy_threshold(val_probs, va_y)
    log(f"decision threshold {threshold:.3f} (chosen on the validation split)")

    config.out_dir.mkdir(parents=True, exist_ok=True)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    metadata = model_metadata(frontend, mel_basis, config.train.window_frames, threshold,
                              config.name, config.version, manifest_sha256(clips))
    fp32_path = export_onnx(model, config.work_dir / f"{config.name}.fp32.onnx",
                            frontend.n_mels, config.train.window_frames, metadata)
    int8_path = quantize_int8(fp32_path, config.out_dir / f"{config.name}.onnx",
                              _calibration_windows(tr_f, tr_y, config.train.window_frames,
                                                   config.train.seed))

    results = _evaluate(fp32_path, int8_path, clips, by_split, features, labels, threshold, log)
    metrics = {
        "model": {"name": config.name, "version": config.version,
                  "file": int8_path.name, "bytes": int8_path.stat().st_size,
                  "threshold": round(threshold, 4), "training_manifest_sha256": metadata[
                      "training_manifest_sha256"]},
        "split": split_summary(clips),
        "training": {"epochs_run": len(history.val_auc), "best_epoch": history.best_epoch,
                     "train_seconds": round(train_seconds, 1),
                     "total_seconds": round(time.perf_counter() - started, 1),
                     "config": {k: v for k, v in asdict(config.train).items()},
                     "history": asdict(history)},
        "machine": _machine(),
        **results,
    }
    (config.out_dir / f"{config.name}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (config.out_dir / f"{config.name}.card.md").write_text(card.render(metrics))
    log(f"wrote {int8_path} ({int8_path.stat().st_size / 1024:.0f} KiB), its card and metrics "
        f"in {time.perf_counter() - started:.0f} s")
    return metrics


def _evaluate(fp32_path: Path, int8_path: Path, clips: list[Clip], by_split: dict[str, list[int]],
              features: list[np.ndarray], labels: np.ndarray, threshold: float,
              log=print) -> dict[str, object]:
    """Score val and test through the daemon's classifier, FP32 and INT8 files alike."""
    window = OnnxClassifier(int8_path).window_frames
    out: dict[str, object] = {}
    for split in ("val", "test"):
        idx = by_split[split]
        feats, y = [features[i] for i in idx], labels[idx]
        kinds = [clips[i].kind for i in idx]
        names = [f"{clips[i].source}/{clips[i].relpath}" for i in idx]
        per_model: dict[str, object] = {}
        window_probs, clip_probs = {}, {}
        for tag, path in (("fp32", fp32_path), ("int8", int8_path)):
            probs, per_clip = clip_probabilities(OnnxClassifier(path).score, feats, window)
            per_model[tag] = clip_metrics(probs, y, kinds, threshold)
            window_probs[tag], clip_probs[tag] = np.concatenate(per_clip), probs
        window_labels = np.concatenate([np.full(len(p), yy) for p, yy in zip(per_clip, y, strict=True)])
        agree = agreement(window_probs["fp32"], window_probs["int8"], window_labels, threshold)
        per_model["int8_vs_fp32_windows"] = {**asdict(agree), "auc_drop": round(agree.auc_drop, 5),
                                             "ok": agree.ok}
        per_model["int8_misclassified"] = misclassified(clip_probs["int8"], y, names, threshold)
        out[split] = per_model
        m8, m32 = per_model["int8"], per_model["fp32"]
        log(f"{split}: INT8 AUC {m8['roc_auc']:.5f} acc {m8['accuracy']:.4f} F1 {m8['f1']:.4f}; "
            f"FP32 AUC {m32['roc_auc']:.5f}; window AUC drop {agree.auc_drop:+.5f}, "
            f"decision agreement {agree.decision_agreement:.4f}")
        if not agree.ok:
            log(f"WARNING: INT8 model strays from FP32 on {split}: {agree}")
    return out


def _machine() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
