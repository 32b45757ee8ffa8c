"""pytest at the repository root: notebooks under training/notebooks run on a tiny configuration,
and skip like the other data tests where the shared data is absent (never when CI=true)."""

import os

import pytest


def pytest_configure(config):  # noqa: ARG001 - pytest's hook signature
    os.environ.setdefault("NIGHTEAR_NOTEBOOK_TINY", "1")


def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest's hook signature
    from nightear_training.data import data_root

    root = data_root()
    if os.environ.get("CI") == "true" or (root / "drone-audio-dataset" / "manifest.csv").is_file():
        return
    skip = pytest.mark.skip(reason=f"shared data not found at {root}; set NIGHTEAR_DATA to run this notebook")
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(skip)
