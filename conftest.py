"""pytest at the repository root: notebooks under training/notebooks run on a tiny configuration."""

import os


def pytest_configure(config):  # noqa: ARG001 - pytest's hook signature
    os.environ.setdefault("NIGHTEAR_NOTEBOOK_TINY", "1")
