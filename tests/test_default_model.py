"""The shipped default model: small, self-describing, and its published figures reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nightear.classifier import OnnxClassifier

MAX_MODEL_BYTES = 250 * 1024
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "drone-pass.flac"


def metrics_for(model_path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(model_path.with_name(model_path.stem + ".metrics.json").read_text())


def test_model_is_small_and_its_card_matches_its_metadata(model_path: Path) -> None:
    assert model_path.stat().st_size <= MAX_MODEL_BYTES
    info = OnnxClassifier(model_path).info
    metrics = metrics_for(model_path)
    assert metrics["model"]["bytes"] == model_path.stat().st_size
    assert abs(metrics["model"]["threshold"] - info.threshold) < 1e-4
    assert metrics["model"]["training_manifest_sha256"] == info.training_manifest_sha256
    card = model_path.with_name(model_path.stem + ".card.md").read_text()
    assert f"{metrics['test']['int8']['roc_auc']}" in card and "non-commercial" in card
    report = model_path.with_name(model_path.stem + ".report.md")
    assert report.is_file() and "![" in report.read_text()


def test_published_test_metrics_reproduce_from_the_shipped_file(
    model_path: Path, data_root: Path
) -> None:
    pytest.importorskip("sklearn", reason="evaluation needs the 'train' extra")
    from nightear_training.data import load_clips, manifest_sha256
    from nightear_training.evaluate import audio_window_probs, clip_metrics
    from nightear_training.features import eval_hop_frames
    from nightear_training.recipe import load_bank

    classifier = OnnxClassifier(model_path)
    info = classifier.info
    clips = load_clips(data_root, tuple(json.loads(info.metadata["training_sources"])))
    assert manifest_sha256(clips) == info.training_manifest_sha256, (
        "the shared data or its split changed since the model was built")
    test = [c for c in clips if c.split == "test"]
    audio = load_bank(test, info.frontend)
    probs = np.array([audio_window_probs(classifier.score, audio[c.path], info.frontend,
                                         classifier.mel_basis, classifier.window_frames,
                                         eval_hop_frames(info.frontend)).mean() for c in test])
    labels = np.array([int(c.is_drone) for c in test])
    measured = clip_metrics(probs, labels, [c.kind for c in test], info.threshold)
    published = metrics_for(model_path)["test"]["int8"]
    assert measured["confusion"] == published["confusion"]
    assert abs(measured["roc_auc"] - published["roc_auc"]) < 1e-4


def test_the_int8_file_scores_the_example_as_its_fp32_model_does(model_path: Path) -> None:
    # The threshold sits near 0.999, where a small error in logit moves an event: on x86 CPUs
    # without VNNI, 8-bit weights saturated in onnxruntime's kernel and lost the example's pass.
    pytest.importorskip("sklearn", reason="window scoring lives in the 'train' extra")
    from nightear.sources import WavSource
    from nightear_training.evaluate import audio_window_probs
    from nightear_training.features import eval_hop_frames

    def logits(path: Path) -> np.ndarray:
        classifier = OnnxClassifier(path)
        fe = classifier.info.frontend
        p = audio_window_probs(classifier.score, WavSource(EXAMPLE, fe.sample_rate).read_all(), fe,
                               classifier.mel_basis, classifier.window_frames, eval_hop_frames(fe))
        p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    int8, fp32 = logits(model_path), logits(model_path.with_name(model_path.stem + ".fp32.onnx"))
    assert fp32.max() > 5.0  # the pass is there to be heard
    assert np.abs(int8 - fp32)[fp32 > 0].max() < 0.5


def test_requantize_reproduces_the_shipped_int8_file(model_path: Path, data_root: Path,
                                                     tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="requantizing needs the 'train' extra")
    import shutil

    from nightear_training.__main__ import main

    for suffix in (".fp32.onnx", ".metrics.json"):
        shutil.copy(model_path.with_name(model_path.stem + suffix), tmp_path)
    assert main(["requantize", "--out", str(tmp_path), "--data", str(data_root)]) == 0
    assert (tmp_path / model_path.name).read_bytes() == model_path.read_bytes()
    card = (tmp_path / (model_path.stem + ".card.md")).read_text()
    assert "7-bit weights" in card and "requantized by `requantize`" in card
