"""ONNX export: the trained network plus the contract the daemon checks on load.

Metadata keys are the ones `nightear.classifier.REQUIRED_METADATA` lists; the mel basis
travels as JSON so the daemon builds its front-end from the model file alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from nightear.classifier import REQUIRED_METADATA
from nightear.frontend import FEATURE_VERSION, FrontendConfig, MelBasis

LABELS = ("background", "drone")
INPUT_NAME, OUTPUT_NAME = "logmel", "p_drone"
OPSET = 18


def model_metadata(
    config: FrontendConfig, mel_basis: MelBasis, window_frames: int, threshold: float,
    name: str, version: str, manifest_sha256: str, extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The metadata_props every nightear model carries."""
    meta = {
        "feature_version": FEATURE_VERSION,
        "sample_rate": str(config.sample_rate), "n_fft": str(config.n_fft),
        "hop_length": str(config.hop_length), "n_mels": str(config.n_mels),
        "fmin": repr(float(config.fmin)), "fmax": repr(float(config.fmax)),
        "window_frames": str(window_frames), "labels": json.dumps(list(LABELS)),
        "threshold": f"{threshold:.6f}", "model_name": name, "model_version": version,
        "training_manifest_sha256": manifest_sha256, "mel_basis": mel_basis.to_json(),
    }
    meta.update(extra or {})
    assert set(REQUIRED_METADATA) <= set(meta)
    return meta


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace an ONNX file's metadata_props in place."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def export_onnx(model: torch.nn.Module, path: Path, n_mels: int, window_frames: int,
                metadata: dict[str, str]) -> Path:
    """Write the FP32 ONNX model (dynamic batch) with its metadata."""
    model.eval()
    dummy = torch.zeros(1, 1, n_mels, window_frames)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=OPSET,
        dynamo=True, external_data=False, verbose=False,
    )
    onnx.checker.check_model(str(path))
    set_metadata(path, metadata)
    return path
