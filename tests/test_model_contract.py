"""A model file's contract is checked once, at load, so every command refuses the same bad model
with the same line: metadata of the wrong type, an output that is no probability, a mel basis
that cannot be read. None of them may reach a window's score or a traceback."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from nightear.classifier import OnnxClassifier
from nightear.errors import ModelError
from tests.conftest import run_cli
from tests.test_classifier import edited_copy
from tests.test_cli import DRONE, assert_user_error


def graph_copy(src: Path, dst: Path, ops: list[str]) -> Path:
    """A real ONNX model with the shipped model's metadata scoring each window as the mean of
    its log-mel (dB, -100 for silence) through the unary `ops`: no probability unless they make it one."""
    shipped = onnx.load(str(src))
    nodes = [helper.make_node("ReduceMean", ["logmel"], ["v0"], axes=[1, 2, 3], keepdims=0)]
    nodes += [helper.make_node(op, [f"v{i}"], [f"v{i + 1}"]) for i, op in enumerate(ops)]
    nodes.append(helper.make_node("Identity", [f"v{len(ops)}"], ["p"]))
    graph = helper.make_graph(
        nodes, "mean", [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", 1, 64, 97])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = shipped.ir_version
    for prop in shipped.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("ops,what", [(["Neg"], "above 1"), (["Sqrt"], "NaN"), ([], "negative")])
def test_a_model_whose_output_is_no_probability_is_refused_at_load(
        model_path: Path, tmp_path: Path, ops: list[str], what: str) -> None:
    bad = graph_copy(model_path, tmp_path / "bad.onnx", ops)
    with pytest.raises(ModelError, match=r"bad\.onnx: its output is no probability: .* not values in "
                                         r"\[0, 1\]"):
        OnnxClassifier(bad)
    assert OnnxClassifier(graph_copy(model_path, tmp_path / "ok.onnx", ["Sigmoid"])).score is not None


def test_every_command_refuses_a_model_whose_output_is_no_probability(model_path: Path,
                                                                       tmp_path: Path) -> None:
    bad = graph_copy(model_path, tmp_path / "loud.onnx", ["Neg"])  # silence scores 100
    for args in (["detect", DRONE], ["listen", "--duration", "1"], ["info"], ["bench", "--seconds", "10"]):
        result = run_cli(*args, "--model", str(bad))
        assert_user_error(result, f"{bad}: its output is no probability")
        assert result.stdout == "", args
    check = run_cli("check", "--model", str(bad))
    assert check.returncode == 2 and f"{bad}: its output is no probability" in check.stderr
    assert "Traceback" not in check.stderr


@pytest.mark.parametrize("value", ['[8, 1, 4]', '"8"', '{"smooth_windows": "8"}', '{"window": 8}', "eight",
                                   '{"smooth_windows": 4, "hop_seconds": 0}',
                                   '{"smooth_windows": 4, "hop_seconds": "0.5"}'])
def test_decision_metadata_of_another_type_is_refused_by_every_command(
        model_path: Path, tmp_path: Path, value: str) -> None:
    odd = edited_copy(model_path, tmp_path / "odd.onnx", decision=value)
    with pytest.raises(ModelError, match=r"odd\.onnx: metadata decision must be a JSON object"):
        OnnxClassifier(odd)
    if value.startswith("["):  # the audit's case, through each command
        for args in (["detect", DRONE], ["listen", "--duration", "1"], ["info"], ["check"]):
            result = run_cli(*args, "--model", str(odd))
            assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
            assert f"nightear: error: model: {odd}: metadata decision" in result.stderr or \
                f"nightear: error: {odd}: metadata decision" in result.stderr, (args, result.stderr)


def test_a_model_chosen_at_another_hop_is_taken_and_its_windows_rescaled(model_path: Path,
                                                                         tmp_path: Path) -> None:
    # a model whose threshold was chosen at four windows a second, run at the default two
    chosen = '{"smooth_windows": 8, "open_windows": 1, "close_windows": 4, "hop_seconds": 0.25}'
    four = edited_copy(model_path, tmp_path / "four.onnx", decision=chosen)
    assert OnnxClassifier(four).info.metadata["decision"].endswith('"hop_seconds": 0.25}')
    result = run_cli("check", "--model", str(four))
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("decision:")]
    assert line.startswith("decision: ok"), result.stdout
    (tmp_path / "fast.yaml").write_text("model:\n  hop_seconds: 0.25\n")  # the config's hop, not rescaled
    result = run_cli("check", "--model", str(four), "--config", str(tmp_path / "fast.yaml"))
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("decision:")]
    assert "decision.smooth_windows is 4, the model's threshold was chosen for 8" in line, line


@pytest.mark.parametrize("labels", ['"drone"', '{"drone": 1}', '[1, 2]'])
def test_labels_that_are_no_list_of_names_are_refused(model_path: Path, tmp_path: Path, labels: str) -> None:
    odd = edited_copy(model_path, tmp_path / "odd.onnx", labels=labels)
    with pytest.raises(ModelError, match=r"odd\.onnx: metadata labels must be a JSON list of names"):
        OnnxClassifier(odd)


@pytest.mark.parametrize("basis", ["not json", '{"bins": [1]}', '{"bins": "x", "weights": 1, '
                                   '"offsets": null, "n_bins": "257"}'])
def test_a_bad_mel_basis_names_the_model_file(model_path: Path, tmp_path: Path, basis: str) -> None:
    odd = edited_copy(model_path, tmp_path / "odd.onnx", mel_basis=basis)
    with pytest.raises(ModelError, match=r"odd\.onnx: mel basis in model metadata is unreadable"):
        OnnxClassifier(odd)
