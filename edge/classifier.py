"""The drone classifier: an ONNX model (INT8 by default) that carries its own contract.

The model file's metadata says which features it was trained on (front-end settings, the mel
basis itself, window length), its labels and its decision threshold. Loading checks that
contract against the running front-end and refuses a mismatch with a ModelError, because a
model fed features it never saw fails silently otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from nightear.decision import DecisionConfig
from nightear.errors import ModelError, not_regular
from nightear.frontend import FEATURE_VERSION, FrontendConfig, MelBasis

DEFAULT_MODEL_NAME = "nightear-drone.onnx"
POSITIVE_LABEL = "drone"
REQUIRED_METADATA = (
    "feature_version", "sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax",
    "window_frames", "labels", "threshold", "model_name", "model_version",
    "training_manifest_sha256", "mel_basis",
)


def default_model_path() -> Path:
    """The model shipped with nightear (models/ in the source tree, nightear/models installed)."""
    return Path(str(resources.files("nightear.models").joinpath(DEFAULT_MODEL_NAME)))


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself."""

    path: Path
    name: str
    version: str
    sha256: str
    frontend: FrontendConfig
    window_frames: int
    labels: tuple[str, ...]
    threshold: float
    training_manifest_sha256: str
    metadata: dict[str, str]

    @property
    def window_seconds(self) -> float:
        """How much audio one scored window spans."""
        return self.frontend.samples_for_frames(self.window_frames) / self.frontend.sample_rate


def read_model_info(path: Path, metadata: dict[str, str], sha256: str) -> ModelInfo:
    """Parse and sanity-check a model's metadata_props."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelError(f"{path}: not a nightear model: metadata lacks {', '.join(missing)}")
    if metadata["feature_version"] != FEATURE_VERSION:
        raise ModelError(
            f"{path}: model was trained on features '{metadata['feature_version']}', "
            f"this nightear computes '{FEATURE_VERSION}'"
        )
    try:
        frontend = FrontendConfig(
            sample_rate=int(metadata["sample_rate"]), n_fft=int(metadata["n_fft"]),
            hop_length=int(metadata["hop_length"]), n_mels=int(metadata["n_mels"]),
            fmin=float(metadata["fmin"]), fmax=float(metadata["fmax"]),
        )
        labels = json.loads(metadata["labels"])
        threshold = float(metadata["threshold"])
        window_frames = int(metadata["window_frames"])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable model metadata ({exc})") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ModelError(f"{path}: metadata labels must be a JSON list of names, "
                         f"got {metadata['labels'][:80]}")
    _check_decision_metadata(path, metadata.get("decision"))
    if POSITIVE_LABEL not in labels:
        raise ModelError(f"{path}: labels {labels} lack '{POSITIVE_LABEL}'")
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"{path}: threshold {threshold} is outside (0, 1)")
    return ModelInfo(
        path=path, name=metadata["model_name"], version=metadata["model_version"],
        sha256=sha256, frontend=frontend, window_frames=window_frames, labels=tuple(labels),
        threshold=threshold, training_manifest_sha256=metadata["training_manifest_sha256"],
        metadata=dict(metadata),
    )


def _check_decision_metadata(path: Path, text: str | None) -> None:
    """The decision logic the threshold was chosen for (`decision`, optional): a JSON object of
    DecisionConfig's whole-number settings and the hop in seconds their windows are of, so every
    command reads it alike or refuses the model."""
    if text is None:
        return
    try:
        chosen = json.loads(text)
    except ValueError:
        chosen = None

    def valid(k: str, v: object) -> bool:
        if isinstance(v, bool):
            return False
        if k == "hop_seconds":
            return isinstance(v, int | float) and 0.0 < v <= 5.0
        return k in DecisionConfig.__struct_fields__ and isinstance(v, int)

    if not isinstance(chosen, dict) or not all(valid(k, v) for k, v in chosen.items()):
        raise ModelError(f"{path}: metadata decision must be a JSON object of whole numbers and a hop "
                         f'such as {{"smooth_windows": 4, "open_windows": 1, "hop_seconds": 0.5}}, '
                         f"got {text[:80]}")


def check_frontend(info: ModelInfo, expected: FrontendConfig) -> None:
    """Refuse a model whose feature settings differ from the running front-end's."""
    diffs = [
        f"{field}={getattr(info.frontend, field)} (front-end has {getattr(expected, field)})"
        for field in FrontendConfig.__struct_fields__
        if getattr(info.frontend, field) != getattr(expected, field)
    ]
    if diffs:
        raise ModelError(
            f"{info.path}: model was trained with different features: {', '.join(diffs)}; "
            "use a model trained for this front-end or set the frontend section to match"
        )


def _probe_windows(window_shape: list[int]) -> np.ndarray:
    """(4, 1, n_mels, frames) dB windows a model must score as probabilities: silence, full scale,
    and two of noise (a fixed seed: loading is deterministic)."""
    noise = np.random.default_rng(0).uniform(-100.0, 0.0, (2, 1, *window_shape))
    levels = np.stack([np.full((1, *window_shape), -100.0), np.zeros((1, *window_shape))])
    return np.concatenate([levels, noise]).astype(np.float32)


class OnnxClassifier:
    """Scores log-mel windows: (n, n_mels, window_frames) -> (n,) drone probability."""

    def __init__(self, path: str | Path, frontend: FrontendConfig | None = None, threads: int = 1):
        self.path = Path(path)
        if fault := not_regular(self.path):
            raise ModelError(f"{self.path}: {fault}: give an ONNX model file")
        try:
            model_bytes = self.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{self.path}: cannot read model ({exc.strerror})") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first_line[:160]})") from None
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.info = read_model_info(self.path, metadata, hashlib.sha256(model_bytes).hexdigest())
        check_frontend(self.info, frontend or FrontendConfig())
        self.mel_basis = self._mel_basis(metadata["mel_basis"])
        self._check_io()

    def _mel_basis(self, text: str) -> MelBasis:
        """The model's mel basis, or a ModelError naming this model file."""
        try:
            basis = MelBasis.from_json(text)
        except (ModelError, ValueError, TypeError, IndexError) as exc:
            reason = str(exc).removeprefix("mel basis in model metadata is unreadable: ")
            raise ModelError(f"{self.path}: mel basis in model metadata is unreadable ({reason})") from None
        if (basis.n_mels, basis.n_bins) != (self.info.frontend.n_mels, self.info.frontend.n_bins):
            raise ModelError(f"{self.path}: mel basis shape does not match n_mels/n_fft")
        return basis

    def _check_io(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input, model has {len(inputs)}")
        shape = inputs[0].shape
        want = [self.info.frontend.n_mels, self.info.window_frames]
        if len(shape) != 4 or list(shape[2:]) != want:
            raise ModelError(
                f"{self.path}: input shape {shape} does not match (batch, 1, {want[0]}, {want[1]})"
            )
        self._input_name = inputs[0].name
        self._check_output(want)

    def _check_output(self, window_shape: list[int]) -> None:
        """One probability per window, checked on the graph and on a real run: a model whose
        output has another shape would otherwise fail on the first window it hears."""
        outputs = self._session.get_outputs()
        declared = outputs[0].shape
        fixed = [d for d in declared[1:] if isinstance(d, int)]
        if len(outputs) != 1 or len(declared) not in (1, 2) or any(d != 1 for d in fixed):
            raise ModelError(
                f"{self.path}: output shape {[o.shape for o in outputs]} is not one drone "
                f"probability per window: (batch,) or (batch, 1)"
            )
        probe = _probe_windows(window_shape)
        try:
            (out,) = self._session.run(None, {self._input_name: probe})
        except Exception as exc:  # onnxruntime's own exception types again
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: fails on {len(probe)} windows of silence and noise ({reason})"
                             ) from None
        if np.size(out) != len(probe):
            raise ModelError(
                f"{self.path}: output shape {list(np.shape(out))} for {len(probe)} windows of input "
                f"shape {list(probe.shape)}: not one drone probability per window"
            )
        scores = np.asarray(out, dtype=np.float64).reshape(-1)
        if not (np.isfinite(scores).all() and (scores >= 0.0).all() and (scores <= 1.0).all()):
            raise ModelError(f"{self.path}: its output is no probability: scored silence and noise as "
                             f"{', '.join(f'{s:.4g}' for s in scores)}, not values in [0, 1]")

    @property
    def window_frames(self) -> int:
        return self.info.window_frames

    def score(self, windows: np.ndarray) -> np.ndarray:
        """windows: (n, n_mels, window_frames) float32 dB. Returns (n,) float32 in [0, 1]."""
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        batch = np.ascontiguousarray(windows[:, None, :, :], dtype=np.float32)
        (out,) = self._session.run(None, {self._input_name: batch})
        return np.asarray(out, dtype=np.float32).reshape(len(windows))
