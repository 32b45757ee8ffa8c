"""The classifier loads a model only when its metadata matches the front-end."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import onnx
import pytest

from nightear.classifier import REQUIRED_METADATA, OnnxClassifier
from nightear.errors import ModelError
from nightear.frontend import FrontendConfig


def edited_copy(src: Path, dst: Path, **changes: str | None) -> Path:
    """A copy of a model with metadata keys changed (None removes the key)."""
    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))
    return dst


def test_shipped_model_loads_and_scores_windows(model_path: Path) -> None:
    classifier = OnnxClassifier(model_path)
    assert set(REQUIRED_METADATA) <= set(classifier.info.metadata)
    assert classifier.info.labels == ("background", "drone")
    windows = np.full((3, 64, classifier.window_frames), -80.0, dtype=np.float32)
    p = classifier.score(windows)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    assert classifier.score(windows[:0]).shape == (0,)


def test_shipped_model_carries_librosas_mel_basis(model_path: Path) -> None:
    classifier = OnnxClassifier(model_path)
    fe = classifier.info.frontend
    dense = librosa.filters.mel(sr=fe.sample_rate, n_fft=fe.n_fft, n_mels=fe.n_mels,
                                fmin=fe.fmin, fmax=fe.fmax)
    assert np.array_equal(classifier.mel_basis.to_dense().astype(np.float32), dense)


def test_mismatched_frontend_is_refused_naming_the_setting(model_path: Path) -> None:
    with pytest.raises(ModelError, match=r"n_mels=64 \(front-end has 40\)"):
        OnnxClassifier(model_path, FrontendConfig(n_mels=40))
    with pytest.raises(ModelError, match=r"sample_rate=16000 \(front-end has 22050\)"):
        OnnxClassifier(model_path, FrontendConfig(sample_rate=22050, fmax=8000.0))


def test_model_trained_on_other_settings_is_refused(model_path: Path, tmp_path: Path) -> None:
    other = edited_copy(model_path, tmp_path / "other.onnx", hop_length="128")
    with pytest.raises(ModelError, match=r"other\.onnx: .*hop_length=128 \(front-end has 160\)"):
        OnnxClassifier(other)


def test_model_without_metadata_is_not_a_nightear_model(model_path: Path, tmp_path: Path) -> None:
    bare = edited_copy(model_path, tmp_path / "bare.onnx", mel_basis=None, threshold=None)
    with pytest.raises(ModelError, match=r"not a nightear model: metadata lacks threshold, mel_basis"):
        OnnxClassifier(bare)


def test_other_feature_version_is_refused(model_path: Path, tmp_path: Path) -> None:
    old = edited_copy(model_path, tmp_path / "old.onnx", feature_version="logmel-0")
    with pytest.raises(ModelError, match="trained on features 'logmel-0'"):
        OnnxClassifier(old)


def test_window_length_must_match_the_graph(model_path: Path, tmp_path: Path) -> None:
    odd = edited_copy(model_path, tmp_path / "odd.onnx", window_frames="60")
    with pytest.raises(ModelError, match=r"input shape .* does not match \(batch, 1, 64, 60\)"):
        OnnxClassifier(odd)


def test_bad_threshold_is_refused(model_path: Path, tmp_path: Path) -> None:
    bad = edited_copy(model_path, tmp_path / "bad.onnx", threshold="1.5")
    with pytest.raises(ModelError, match="threshold 1.5 is outside"):
        OnnxClassifier(bad)


def test_missing_and_non_onnx_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"gone\.onnx: cannot read model"):
        OnnxClassifier(tmp_path / "gone.onnx")
    text = tmp_path / "text.onnx"
    text.write_text("not a model\n")
    with pytest.raises(ModelError, match=r"text\.onnx: not a loadable ONNX model"):
        OnnxClassifier(text)


def flattening_copy(src: Path, dst: Path, declared: bool = True) -> Path:
    """A real ONNX model with the shipped model's metadata whose output is its input, flattened:
    (batch, 6208: 64 bands x 97 frames) instead of one probability per window. With `declared` False the graph
    reshapes to a shape it computes, so only a run shows the output's size."""
    from onnx import TensorProto, helper

    shipped = onnx.load(str(src))
    consts = [helper.make_tensor(name, TensorProto.INT64, [1], [value])
              for name, value in (("zero", 0), ("one", 1), ("rest", -1))]
    nodes = [helper.make_node("Flatten", ["logmel"], ["flat"], axis=1)] if declared else [
        helper.make_node("Shape", ["logmel"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "rest"], ["to"], axis=0),
        helper.make_node("Reshape", ["logmel", "to"], ["flat"])]
    graph = helper.make_graph(
        nodes, "flatten",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", 1, 64, 97])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["batch", 6208 if declared else "n"])],
        [] if declared else consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = shipped.ir_version
    for prop in shipped.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(dst))
    return dst


def test_a_model_with_another_output_shape_is_refused_at_load(model_path: Path, tmp_path: Path) -> None:
    wide = flattening_copy(model_path, tmp_path / "wide.onnx")
    with pytest.raises(ModelError, match=r"wide\.onnx: output shape \[\['batch', 6208\]\] is not one "
                                         r"drone probability per window"):
        OnnxClassifier(wide)
    hidden = flattening_copy(model_path, tmp_path / "hidden.onnx", declared=False)
    with pytest.raises(ModelError, match=r"hidden\.onnx: output shape \[4, 6208\] for 4 windows of "
                                         r"input shape \[4, 1, 64, 97\]"):
        OnnxClassifier(hidden)
