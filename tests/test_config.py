"""A config error is one line that names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightear.config import Settings, load_settings
from nightear.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nightear.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file_and_with_an_empty_one(tmp_path: Path) -> None:
    assert load_settings(None) == Settings()
    assert load_settings(write(tmp_path, "\n")) == Settings()


def test_values_are_read(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "decision:\n  threshold: 0.7\n  close_windows: 6\n"
                                      "model:\n  threads: 2\n"))
    assert (s.decision.threshold, s.decision.close_windows, s.model.threads) == (0.7, 6, 2)
    with pytest.raises(AttributeError):
        s.model.threads = 3  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    "text,message",
    [
        ("decison:\n  threshold: 0.5\n", r"unknown field `decison`"),
        ("decision:\n  open_window: 2\n", r"unknown field `open_window` - at `\$.decision`"),
        ("decision:\n  open_windows: two\n", r"Expected `int`, got `str` - at `\$.decision.open_windows`"),
        ("decision:\n  threshold: 1.5\n", r"Expected `float` < 1.0 - at `\$.decision.threshold`"),
        ("model:\n  threads: 0\n", r"Expected `int` >= 1 - at `\$.model.threads`"),
        ("frontend:\n  fmax: 12000\n", r"fmax.*\$.frontend"),
        ("decision: [1, 2\n", r"not valid YAML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(write(tmp_path, text))
    assert str(info.value).startswith(str(tmp_path / "nightear.yaml"))
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read config"):
        load_settings(tmp_path / "absent.yaml")


def test_example_config_is_valid_and_documents_the_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "config.example.yaml"
    assert load_settings(example) == Settings()


def test_numbers_with_an_exponent_and_no_dot_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads `9e-1` as a string; a technician who writes it means 0.9."""
    settings = load_settings(write(tmp_path, "decision:\n  threshold: 9e-1\nclips:\n  quota_bytes: 5e8\n"
                                             "model:\n  hop_seconds: 2.5E-1\n"))
    assert settings.decision.threshold == 0.9 and settings.model.hop_seconds == 0.25
    assert settings.clips.quota_bytes == 500_000_000 and isinstance(settings.clips.quota_bytes, int)
    with pytest.raises(ConfigError, match=r"Expected `float` < 1.0 - at `\$.decision.threshold`"):
        load_settings(write(tmp_path, "decision:\n  threshold: 1e20\n"))
    with pytest.raises(ConfigError, match=r"got `str` - at `\$.decision.threshold`"):
        load_settings(write(tmp_path, 'decision:\n  threshold: "9e-1"\n'))  # quoted: a string still
    with pytest.raises(ConfigError, match=r"not valid YAML \(.* at line 3, column 1\)"):
        load_settings(write(tmp_path, "decision:\n  threshold: [\n"))
