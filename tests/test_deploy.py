"""The service as a technician installs it: install.sh into a scratch root (twice), the unit
checked by systemd-analyze, the installed config valid and kept on upgrade."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nightear.config import load_settings
from tests.conftest import REPO

UNIT = REPO / "deploy" / "nightear.service"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    result = subprocess.run([str(REPO / "deploy" / "install.sh"), "--root", str(root)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


def test_install_lays_out_venv_config_unit_and_data(scratch: Path) -> None:
    python = scratch / "opt/nightear/venv/bin/python"
    info = subprocess.run([str(python), "-m", "nightear", "info"], capture_output=True, text=True)
    assert info.returncode == 0 and '"model_name": "nightear-drone"' in info.stdout
    settings = load_settings(scratch / "etc/nightear/config.yaml")
    assert settings.store.path == "/var/lib/nightear/events.db"
    assert settings.metrics.path == "/var/lib/nightear/metrics/nightear.prom"
    assert (scratch / "etc/systemd/system/nightear.service").read_text() == UNIT.read_text()
    assert (scratch / "var/lib/nightear").is_dir()


def test_second_install_keeps_the_config(scratch: Path) -> None:
    config = scratch / "etc/nightear/config.yaml"
    config.write_text(config.read_text().replace('node: ""', 'node: "post-7"'))
    result = subprocess.run([str(REPO / "deploy" / "install.sh"), "--root", str(scratch)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "kept" in result.stdout
    assert load_settings(config).node == "post-7"


def test_systemd_accepts_the_unit(scratch: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing on CI (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "nightear.service"  # the installed paths, inside the scratch root
    unit.write_text(UNIT.read_text().replace("/opt/nightear", f"{scratch}/opt/nightear")
                    .replace("/etc/nightear", f"{scratch}/etc/nightear"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unit_is_hardened_and_restarts() -> None:
    lines = set(UNIT.read_text().splitlines())
    for directive in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "StartLimitBurst=5",
                      "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/nightear",
                      "User=nightear",
                      "ExecStart=/opt/nightear/venv/bin/python -m nightear listen --config "
                      "/etc/nightear/config.yaml"):
        assert directive in lines, directive
