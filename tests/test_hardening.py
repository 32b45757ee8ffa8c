"""What the hardened service promises, tried on the real daemon: the files it creates are
private, the metrics cannot be injected into, and `listen` still works under the unit's
system-call filter, address families and (for onnxruntime) MemoryDenyWriteExecute."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nightear.config import load_settings
from nightear.errors import ConfigError
from nightear.sinks.metrics import Counters, prometheus_text
from tests.conftest import CLEARS_BEBOP, REPO

UNIT = REPO / "deploy" / "nightear.service"
SANDBOX = Path(__file__).with_name("unit_sandbox.py")
SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, with python3-seccomp


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listen(home: Path, config: Path, *prefix: str, seconds: str = "4.5") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "nightear", "listen", "--config", str(config),
                           "--duration", seconds], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "HOME": str(home)})


def test_store_clips_and_metrics_are_created_private(mic_home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "private.yaml"
    config.write_text(f"store:\n  path: {data}/events.db\nclips:\n  folder: {data}/clips\n"
                      f"metrics:\n  path: {data}/metrics/nightear.prom\n  interval_seconds: 1\n"
                      f"audio:\n  buffer_seconds: 60\n{CLEARS_BEBOP}")
    old = os.umask(0o022)  # a shell's usual umask: world-readable unless nightear says otherwise
    try:
        result = listen(mic_home, config)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    clips = sorted((data / "clips").iterdir())
    assert [p.suffix for p in clips] == [".png", ".wav"]
    files = [data / "events.db", *clips, data / "metrics" / "nightear.prom"]
    assert {p.name: oct(mode(p)) for p in files} == {p.name: "0o640" for p in files}
    assert {oct(mode(data / name)) for name in ("clips", "metrics")} == {"0o750"}


def test_node_must_be_a_short_slug(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    for good in ("post-7", "border.north_3", ""):
        config.write_text(f"node: {json.dumps(good)}\n")
        assert load_settings(config).node == good
    for bad in ('x"} 1\nnightear_events_total{node="y', "post 7", "-post", "p" * 64):
        config.write_text(f"node: {json.dumps(bad)}\n")
        with pytest.raises(ConfigError, match=r"node.yaml: Expected `str` .* - at `\$.node`"):
            load_settings(config)


def test_metric_label_values_are_escaped() -> None:
    # a host name is the node when the config names none: escape it whatever it holds
    text = prometheus_text(Counters(events=3), 'a"b\\c\nnightear_events_total{node="x"} 99')
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    # one sample per declared metric, each on its own line: nothing injected
    assert [line.split("{")[0] for line in samples] == declared and len(declared) >= 9
    (events,) = [line for line in samples if line.startswith("nightear_events_total")]
    assert events == 'nightear_events_total{node="a\\"b\\\\c\\nnightear_events_total{node=\\"x\\"} 99"} 3'


def sandboxed(unit: Path) -> list[str]:
    """A command prefix that runs the rest under `unit`'s seccomp rules (see unit_sandbox.py)."""
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import seccomp"], capture_output=True) \
        if SYSTEM_PYTHON.is_file() else None
    if probe is None or probe.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but python3-seccomp is missing (apt-get install -y python3-seccomp)")
        pytest.skip("the system python lacks libseccomp's bindings (apt-get install -y python3-seccomp)")
    return [str(SYSTEM_PYTHON), str(SANDBOX), str(unit)]


def with_directive(tmp_path: Path, line: str) -> Path:
    key = line.split("=", 1)[0]
    unit = tmp_path / "nightear.service"
    unit.write_text("\n".join(x for x in UNIT.read_text().splitlines() if not x.startswith(f"{key}="))
                    + f"\n[Service]\n{line}\n")
    return unit


def test_listen_works_under_the_units_system_call_rules(mic_home: Path, tmp_path: Path) -> None:
    prefix = sandboxed(UNIT)
    config = tmp_path / "store.yaml"
    config.write_text(f"store:\n  path: {tmp_path}/events.db\nmetrics:\n  path: {tmp_path}/m.prom\n"
                      + CLEARS_BEBOP)
    result = listen(mic_home, config, *prefix)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["open", "close"]
    # the rules are in force: an IP socket is refused (the unit allows only AF_UNIX)
    inet = subprocess.run([*prefix, sys.executable, "-c", "import socket; socket.socket(socket.AF_INET)"],
                          capture_output=True, text=True)
    assert inet.returncode == 1 and "PermissionError" in inet.stderr


def test_onnxruntime_scores_under_memory_deny_write_execute(tmp_path: Path) -> None:
    prefix = sandboxed(with_directive(tmp_path, "MemoryDenyWriteExecute=yes"))
    result = subprocess.run([*prefix, sys.executable, "-m", "nightear", "detect",
                             str(REPO / "examples" / "drone-pass.flac")],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["peak_confidence"] > 0.99
    wx = subprocess.run([*prefix, sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, "
                         "prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"], capture_output=True)
    assert wx.returncode == 1  # the rule is in force: no memory both writable and executable


def test_memory_deny_write_execute_would_stop_the_capture_callback(mic_home: Path, tmp_path: Path) -> None:
    """Why the unit says MemoryDenyWriteExecute=no: sounddevice's PortAudio callback is a cffi
    closure in writable+executable memory. When this fails, cffi has stopped needing it:
    turn the directive on."""
    prefix = sandboxed(with_directive(tmp_path, "MemoryDenyWriteExecute=yes"))
    (tmp_path / "empty.yaml").write_text("")
    result = listen(mic_home, tmp_path / "empty.yaml", *prefix, seconds="1")
    assert result.returncode != 0
    assert "Cannot allocate write+execute memory for ffi.callback()" in result.stderr


def test_nightear_leaves_no_onnxruntime_telemetry_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    example = str(REPO / "examples" / "drone-pass.flac")
    result = subprocess.run([sys.executable, "-m", "nightear", "detect", example], capture_output=True,
                            text=True, cwd=REPO, timeout=120, env={**env, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.rglob("*")) == []  # no ~/.cache/Microsoft/DeveloperTools/.onnxruntime
