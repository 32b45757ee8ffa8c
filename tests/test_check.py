"""`nightear check` does what `listen` will do (open the store, write in the clips and metrics
folders, score silence, find the microphone) and names each part that would fail, through the
real CLI, the real PortAudio/ALSA stack and real files; no mock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import REPO

# root's capabilities make every folder writable: drop them (the service has none either),
# keeping uid 0 so the checkout and the venv stay readable wherever they are
UNPRIVILEGED = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []


@pytest.fixture()
def home(mic_home: Path) -> Path:
    return mic_home


def check(home: Path, *args: str, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    prefix = UNPRIVILEGED if unprivileged else []
    return subprocess.run([*prefix, sys.executable, "-m", "nightear", "check", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "HOME": str(home)})


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("nightear: error: ")]


def test_check_tries_store_clips_and_metrics_and_leaves_nothing_behind(home: Path) -> None:
    data = home / "data"
    config = home / "ok.yaml"
    config.write_text(f"store:\n  path: {data}/events.db\nclips:\n  folder: {data}/clips\n"
                      f"metrics:\n  path: {data}/metrics/nightear.prom\n")
    result = check(home, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == \
        ["config", "model", "decision", "store", "clips", "metrics", "audio device"]
    assert "silence scores 0." in result.stdout and "decision: ok" in result.stdout
    assert sorted(p.name for p in data.iterdir()) == ["clips", "events.db", "metrics"]
    assert list((data / "clips").iterdir()) == [] and list((data / "metrics").iterdir()) == []


def test_check_warns_when_the_config_smooths_otherwise_than_the_threshold_was_chosen_for(
        home: Path) -> None:
    config = home / "old.yaml"
    config.write_text("decision:\n  smooth_windows: 1\n  open_windows: 2\n")  # a 3.1.0-era config
    result = check(home, "--config", str(config))
    assert result.returncode == 0, result.stderr  # the operator's choice: a warning, not a refusal
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("decision:")]
    assert line.startswith("decision: warning: decision.open_windows is 2, the model's threshold was "
                           "chosen for 1; decision.smooth_windows is 1, the model's threshold was "
                           "chosen for 4 (in windows of 0.5 s")


def test_check_names_each_folder_the_service_cannot_write(home: Path) -> None:
    locked = home / "locked"
    (locked / "clips").mkdir(parents=True)
    (locked / "metrics").mkdir()
    for folder in (locked / "clips", locked / "metrics", locked):
        folder.chmod(0o555)
    config = home / "locked.yaml"
    config.write_text(f"store:\n  path: {locked}/events.db\nclips:\n  folder: {locked}/clips\n"
                      f"metrics:\n  path: {locked}/metrics/nightear.prom\n")
    result = check(home, "--config", str(config), unprivileged=True)
    assert result.returncode == 2
    store, clips, metrics = errors(result)
    assert f"store.path {locked}/events.db: cannot open the event store" in store
    assert f"clips.folder {locked}/clips: not writable (Permission denied)" in clips
    assert f"metrics.path {locked}/metrics/nightear.prom: its folder {locked}/metrics: not writable" \
        in metrics
    assert "audio device: ok" in result.stdout  # the rest was still tried
    assert sorted(p.name for p in locked.iterdir()) == ["clips", "metrics"]


@pytest.mark.parametrize(("where", "expected"), [
    ("/proc/nightear-events.db", "store.path /proc/nightear-events.db: cannot open the event store"),
    ("{home}", "store.path {home}: is a folder, not a database file"),
])
def test_check_refuses_a_store_it_cannot_open(home: Path, where: str, expected: str) -> None:
    config = home / "store.yaml"
    config.write_text(f"store:\n  path: {where.format(home=home)}\n")
    result = check(home, "--config", str(config))
    assert result.returncode == 2
    (line,) = errors(result)
    assert expected.format(home=home) in line


def test_check_runs_the_model_and_refuses_a_wrong_output_shape(home: Path, model_path: Path) -> None:
    shipped = onnx.load(str(model_path))
    meta = {p.key: p.value for p in shipped.metadata_props}
    frames, n_mels = int(meta["window_frames"]), int(meta["n_mels"])
    graph = helper.make_graph(  # one value per frame instead of one per window
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
         helper.make_node("Sigmoid", ["m"], ["p"])], "per-frame",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, n_mels, frames])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", frames])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    bad = home / "per-frame.onnx"
    onnx.save(model, str(bad))
    result = check(home, "--model", str(bad))
    assert result.returncode == 2
    (line,) = errors(result)
    assert str(bad) in line and "shape" in line


def test_check_and_devices_say_when_there_is_no_microphone(tmp_path: Path) -> None:
    cards = Path("/proc/asound/cards")
    if cards.is_file() and "no soundcards" not in cards.read_text():
        pytest.skip("this machine has a sound card: PortAudio would find a capture device")
    for command in ("check", "devices"):  # a HOME without .asoundrc: ALSA's defaults, no card
        result = subprocess.run([sys.executable, "-m", "nightear", command], capture_output=True,
                                text=True, cwd=REPO, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
        assert result.returncode == 2, command
        (line,) = errors(result)
        assert line.startswith("nightear: error: no capture device found: check that the microphone")
        assert "arecord -l" in line
