"""The post's settings: its store, when it calls a unit down, and its console."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import msgspec

ARGON2_PREFIX = "$argon2"  # what `nightear fleet --hash-password` prints


class ConsoleSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The operators' web console (`nightear fleet --http ADDR:PORT` or `http` here)."""

    http: str | None = None  # "ADDR:PORT"; None: no console
    users: dict[str, str] = {}  # operator name -> argon2 hash (`nightear fleet --hash-password`)
    cert_file: str | None = None  # TLS certificate and key: needed unless bound to loopback
    key_file: str | None = None
    export_folder: str = "judged"  # where "export" writes the judged clips and labels.csv
    session_hours: Annotated[float, msgspec.Meta(gt=0.0, le=168.0)] = 12.0
    logins_per_minute: Annotated[int, msgspec.Meta(ge=1, le=600)] = 5  # per client address

    def __post_init__(self) -> None:
        if self.http is not None:
            parse_address(self.http)
        for name, hashed in self.users.items():
            if not hashed.startswith(ARGON2_PREFIX):
                raise ValueError(f"fleet.console.users.{name}: not an argon2 hash (make one with "
                                 "`nightear fleet --hash-password`)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("fleet.console.cert_file and key_file go together")


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) of "ADDR:PORT" (an IPv6 address in brackets); ValueError naming the text."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise ValueError(f"console address {text!r} is not ADDR:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` only listens to this machine (no TLS needed there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FleetSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The fleet's own store and when it calls a unit down or its clock wrong."""

    store: str | None = None  # the fleet's SQLite file; None: kept in memory only
    client_id: str | None = None  # MQTT client id; None: nightear-fleet-<site>
    down_after_heartbeats: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    clock_tolerance_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 1.0
    track_bin_seconds: Annotated[float, msgspec.Meta(ge=0.25, le=600.0)] = 2.0
    late_after_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 10.0  # an alert this old is late
    clips_quota_bytes: Annotated[int, msgspec.Meta(ge=10_000_000)] = 5_000_000_000  # oldest unjudged go first
    console: ConsoleSettings = ConsoleSettings()
