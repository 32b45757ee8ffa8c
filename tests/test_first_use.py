"""A new user's first steps without the shared data: the README's test command skips what needs
the data (saying why) instead of failing."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_notebooks_skip_without_the_data(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["NIGHTEAR_DATA"] = str(tmp_path / "no-data")
    result = subprocess.run([sys.executable, "-m", "pytest", "training/notebooks", "-q", "-rs", "-p",
                             "no:cacheprovider"], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "2 skipped" in result.stdout
    assert f"01_train.ipynb: shared data not found at {tmp_path / 'no-data'}; set NIGHTEAR_DATA" \
        in result.stdout
