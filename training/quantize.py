"""Static INT8 quantization (QDQ, per-channel weights) calibrated on real training log-mels,
and the check that the INT8 model still agrees with the FP32 one."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.metrics import roc_auc_score

from nightear_training.export import INPUT_NAME, set_metadata

MAX_AUC_DROP = 0.002
MIN_DECISION_AGREEMENT = 0.99


class WindowReader(CalibrationDataReader):
    """Feeds calibration windows (n, n_mels, frames) to the quantizer in small batches."""

    def __init__(self, windows: np.ndarray, batch_size: int = 32):
        self._batches = iter(
            [windows[i : i + batch_size, None].astype(np.float32)
             for i in range(0, len(windows), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration_windows: np.ndarray) -> Path:
    """Write a QDQ INT8 model (uint8 activations, int8 per-channel weights) with fp32's metadata."""
    metadata = {p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        # The final sigmoid stays in float: quantized to 8 bits its output moves in steps of
        # 1/255, and a threshold chosen for one false alarm an hour sits between two steps.
        sigmoids = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Sigmoid"]
        quantize_static(
            str(prepared), str(int8_path), WindowReader(calibration_windows),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=sigmoids,
            # 7-bit weights: x86 CPUs without VNNI multiply uint8 by int8 in saturating 16-bit
            # pairs (VPMADDUBSW), and full 8-bit weights moved the example's score there.
            reduce_range=True,
        )
    set_metadata(int8_path, metadata)
    return int8_path


@dataclass(frozen=True)
class Agreement:
    """How far the INT8 model strays from the FP32 one on the same windows."""

    auc_fp32: float
    auc_int8: float
    max_abs_diff: float
    mean_abs_diff: float
    decision_agreement: float

    @property
    def auc_drop(self) -> float:
        return self.auc_fp32 - self.auc_int8

    @property
    def ok(self) -> bool:
        return self.auc_drop <= MAX_AUC_DROP and self.decision_agreement >= MIN_DECISION_AGREEMENT


def agreement(p_fp32: np.ndarray, p_int8: np.ndarray, labels: np.ndarray, threshold: float) -> Agreement:
    """Compare the two models' probabilities on the same items."""
    diff = np.abs(p_fp32 - p_int8)
    return Agreement(
        auc_fp32=float(roc_auc_score(labels, p_fp32)), auc_int8=float(roc_auc_score(labels, p_int8)),
        max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
        decision_agreement=float(((p_fp32 >= threshold) == (p_int8 >= threshold)).mean()),
    )
