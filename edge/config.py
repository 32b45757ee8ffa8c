"""Configuration: one YAML file -> frozen, validated settings.

msgspec checks keys, types and ranges in one place; an error becomes one line that names the
file and the key, e.g. `config.yaml: Expected `int`, got `str` - at `$.decision.open_windows``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from nightear.decision import DEFAULT_HOP_SECONDS, DecisionConfig
from nightear.errors import ConfigError, not_regular
from nightear.fleet.settings import FleetSettings
from nightear.frontend import FrontendConfig
from nightear.geometry import ArrayGeometry, ArraySettings
from nightear.schema import UnitPosition
from nightear.sinks.broker import MqttSettings
from nightear.sinks.clips import ClipSettings
from nightear.sources import AudioSettings

# letters, digits, '.', '_', '-'; starting with a letter or digit (a host name fits)
NODE_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$"


class ModelSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which model scores the windows, and how."""

    path: str | None = None  # None: the model shipped with nightear
    threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    hop_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=5.0)] = DEFAULT_HOP_SECONDS


class StoreSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The durable event store."""

    path: str | None = None  # SQLite file; None: events go to stdout only


class MetricsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Counters in Prometheus text format for node_exporter's textfile collector."""

    path: str | None = None  # e.g. /var/lib/node_exporter/textfile_collector/nightear.prom
    interval_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)] = 15.0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything nightear reads from its YAML file."""

    # this unit's name in events, metrics and topics: a short slug; empty: the host name
    node: Annotated[str, msgspec.Meta(pattern=NODE_PATTERN, max_length=63)] = ""

    model: ModelSettings = ModelSettings()
    frontend: FrontendConfig = FrontendConfig()
    decision: DecisionConfig = DecisionConfig()
    audio: AudioSettings = AudioSettings()
    array: ArraySettings = ArraySettings()
    store: StoreSettings = StoreSettings()
    metrics: MetricsSettings = MetricsSettings()
    clips: ClipSettings = ClipSettings()
    # the fleet: where this unit stands, the broker it reports to, and `nightear fleet`'s own
    position: UnitPosition | None = None
    mqtt: MqttSettings = MqttSettings()
    fleet: FleetSettings = FleetSettings()

    def __post_init__(self) -> None:
        geometry = self.geometry
        if geometry is not None and self.audio.channels is not None \
                and self.audio.channels != geometry.device_channels:
            raise ValueError(f"array {geometry.name} delivers {geometry.device_channels} channels "
                             f"but audio.channels is {self.audio.channels}")

    @property
    def geometry(self) -> ArrayGeometry | None:
        """The array's geometry, or None for a single microphone."""
        return self.array.geometry(self.audio.channels) if self.array.enabled else None

    @property
    def capture_channels(self) -> int:
        """Channels to open on the device: as configured, else what the array delivers, else 1."""
        if self.audio.channels is not None:
            return self.audio.channels
        return self.geometry.device_channels if self.geometry is not None else 1


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 does: `1e20` and `9e-1` are numbers, not
    the strings YAML 1.1 makes of an exponent without a dot (a config that says 9e-1 means 0.9)."""


EXPONENT_TAG = "tag:nightear,2026:exponent-number"


def _exponent_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | float:
    """A whole number such as 5e8 (bytes, a count) as an int, any other as a float."""
    value = float(str(loader.construct_scalar(node)).replace("_", ""))
    return int(value) if value.is_integer() else value


_YamlLoader.add_constructor(EXPONENT_TAG, _exponent_number)
_YamlLoader.add_implicit_resolver(
    EXPONENT_TAG,
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _decode(text: bytes) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise msgspec.DecodeError(f"{exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise msgspec.DecodeError(str(exc).splitlines()[0]) from None


def load_settings(path: str | Path | None) -> Settings:
    """Read and validate a YAML config; None gives the defaults."""
    if path is None:
        return Settings()
    path = Path(path)
    if fault := not_regular(path):
        raise ConfigError(f"{path}: {fault}: give a YAML config file")
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    if not text.strip():
        return Settings()
    try:
        return msgspec.convert(_decode(text), type=Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
