"""The connection to an MQTT broker, shared by a unit's sink and `nightear fleet`: where the
brokers are, how to prove who we are (password, TLS), and a client that fails and comes back
alone. Nothing here assumes one broker process: `mqtt.brokers` is a list tried in turn (one
Mosquitto, a cluster's nodes, or a load balancer in front of them).
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
import paho.mqtt.client as mqtt

from nightear.errors import ConfigError
from nightear.schema import Slug

# Waits before trying the brokers again: 0.5 s doubling to a cap of 3 s, each drawn between
# half and all of it, so a restarted broker has its units and fleet back within seconds and a
# thousand units that lost it together do not come back in the same instant.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_CAP_SECONDS = 3.0
LOOP_SECONDS = 0.05  # how long the network loop waits for the socket: at most this added to an alert
MAX_IN_FLIGHT = 20  # messages published and not yet acknowledged


class MqttSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a unit sends its events and heartbeats, and how it proves who it is."""

    brokers: list[str] = []  # "host" or "host:port", tried in turn; empty: no MQTT
    site: Slug = "site"  # topics are nightear/<site>/<node>/...
    username: str | None = None
    password: str | None = None
    password_file: str | None = None  # a file holding the password (kept out of the config)
    ca_file: str | None = None  # TLS: the CA that signed the broker's certificate; sets TLS on
    cert_file: str | None = None  # TLS client certificate (optional) ...
    key_file: str | None = None  # ... and its key
    keepalive_seconds: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    heartbeat_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)] = 10.0
    max_events_per_second: Annotated[float, msgspec.Meta(gt=0.0, le=1000.0)] = 10.0

    def __post_init__(self) -> None:
        for broker in self.brokers:
            host, _, port = broker.rpartition(":") if ":" in broker else (broker, "", "")
            if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
                raise ValueError(f"mqtt.brokers: {broker!r} is not host or host:port")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either mqtt.password or mqtt.password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("mqtt.cert_file needs mqtt.ca_file (TLS)")

    @property
    def enabled(self) -> bool:
        return bool(self.brokers)

    def addresses(self) -> list[tuple[str, int]]:
        default = 8883 if self.ca_file else 1883
        out = []
        for broker in self.brokers:
            host, _, port = broker.rpartition(":") if ":" in broker else (broker, "", "")
            out.append((host, int(port) if port else default))
        return out


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class BrokerLink:
    """One MQTT client that fails and comes back alone: connect to the brokers in turn, report
    why a broker refused or could not be reached (once per reason), retry with backoff."""

    def __init__(self, settings: MqttSettings, client_id: str, clean_session: bool,
                 log: Callable[[str], None], base: Path | None = None,
                 patience: str = "events stay in the store until a broker takes them"):
        self.settings, self.log, self.client_id, self.patience = settings, log, client_id, patience
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(MAX_IN_FLIGHT)
        self.client.max_queued_messages_set(MAX_IN_FLIGHT)
        self._configure(base)
        self.connected = False
        self._answered = False
        self.on_connected: Callable[[], None] = lambda: None
        self.on_lost: Callable[[str], None] = lambda reason: None  # a connection we had is gone
        self._address = 0
        self._failures = 0
        self._retry_at = 0.0
        self._last_reason = ""
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _configure(self, base: Path | None) -> None:
        s = self.settings

        def path(name: str | None) -> str | None:
            return None if name is None else str(base / name if base and not Path(name).is_absolute()
                                                 else Path(name))

        password = s.password
        if s.password_file is not None:
            try:
                password = Path(path(s.password_file) or "").read_text().strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file {s.password_file}: cannot read it "
                                  f"({exc.strerror})") from None
        if s.username is not None:
            self.client.username_pw_set(s.username, password)
        if s.ca_file is not None:
            files = {"ca_file": s.ca_file, "cert_file": s.cert_file, "key_file": s.key_file}
            for key, name in files.items():
                if name is not None and not Path(path(name) or "").is_file():
                    raise ConfigError(f"mqtt.{key} {name}: no such file")
            _check_tls_files(path(s.ca_file) or "", path(s.cert_file), path(s.key_file), files)
            try:
                self.client.tls_set(ca_certs=path(s.ca_file), certfile=path(s.cert_file),
                                    keyfile=path(s.key_file))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"mqtt.ca_file/cert_file/key_file: not usable ({exc})") from None

    @property
    def where(self) -> str:
        host, port = self.settings.addresses()[self._address]
        return f"{host}:{port}"

    def service(self, stop: threading.Event) -> None:
        """Run the network loop for a moment: connect when due, read and write the socket."""
        if not self.connected and self.client.socket() is None:
            if time.monotonic() >= self._retry_at:
                self._connect()
            if self.client.socket() is None:
                stop.wait(LOOP_SECONDS)
                return
        rc = self.client.loop(timeout=LOOP_SECONDS)
        if rc != mqtt.MQTT_ERR_SUCCESS and self.client.socket() is None:
            if self.connected:
                self._lost(f"connection lost ({mqtt.error_string(rc)})")
            elif not self._answered:
                self._closed_before_connack()

    def _closed_before_connack(self) -> None:
        """The broker hung up before it answered: under TLS 1.3 that is how a broker that wants a
        client certificate refuses one that has none, or a wrong one."""
        s = self.settings
        if s.ca_file is not None:
            hint = (f"a broker that wants a client certificate does this: check mqtt.cert_file "
                    f"{s.cert_file} and key_file" if s.cert_file else
                    "a broker that wants a client certificate does this: set mqtt.cert_file and key_file")
            self._failed(f"closed the connection before accepting it ({hint})", severity="error")
        else:
            self._failed("closed the connection before accepting it (is the port its MQTT listener, "
                         "and does it want TLS: mqtt.ca_file?)")

    def close(self) -> None:
        """Disconnect on purpose: no "connection lost" to report."""
        self.connected = False
        if self.client.socket() is not None:
            self.client.disconnect()

    def _connect(self) -> None:
        host, port = self.settings.addresses()[self._address]
        self._answered = False  # until the broker's CONNACK, accepting or refusing
        try:
            self.client.connect(host, port, self.settings.keepalive_seconds)
        except ssl.SSLCertVerificationError as exc:
            self._failed(f"the broker's TLS certificate is not trusted ({exc.verify_message}; check "
                         f"mqtt.ca_file {self.settings.ca_file})", severity="error")
        except ssl.SSLError as exc:
            self._failed(f"TLS handshake failed ({exc.reason or exc}; check mqtt.ca_file, cert_file, "
                         "and that the port is the broker's TLS listener)")
        except ConnectionResetError:
            if self.settings.ca_file is None:
                self._failed("reset the connection (is the port its MQTT listener?)")
            else:  # a plain-text listener hangs up on a TLS ClientHello
                self._failed(f"reset the connection during the TLS handshake: the port looks like a "
                             f"plain-text listener, while mqtt.ca_file {self.settings.ca_file} turns TLS "
                             "on (use the broker's TLS port, or drop ca_file)", severity="error")
        except PermissionError:  # socket() refused: a sandbox without IP sockets
            self._failed("cannot be reached: IP sockets are not permitted here (under systemd the "
                         "unit needs its network drop-in: rerun install.sh with mqtt.brokers set)",
                         severity="error")
        except OSError as exc:
            self._failed(f"cannot reach it ({exc.strerror or exc})")

    def _failed(self, reason: str, severity: str = "warning") -> None:
        """Back off and try the next broker; say why, unless it is the same reason again."""
        message = f"mqtt broker {self.where} {reason}"
        if message != self._last_reason:
            self.log(f"nightear: {severity}: {message}; {self.patience}")
            self._last_reason = message
        ceiling = min(RECONNECT_CAP_SECONDS, RECONNECT_FIRST_SECONDS * 2.0 ** min(self._failures, 16))
        wait = random.uniform(ceiling / 2.0, ceiling)
        self._failures += 1
        self._address = (self._address + 1) % len(self.settings.addresses())
        self._retry_at = time.monotonic() + wait

    def _lost(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        if self.client.socket() is not None:
            self.client.disconnect()
        if was:
            self._failures = 0
        self._failed(reason)
        if was:
            self.on_lost(reason)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object,
                    reason: mqtt.ReasonCode, properties: object) -> None:
        self._answered = True
        if reason.is_failure:
            who = f"user {self.settings.username!r}" if self.settings.username else "no user name"
            self.connected = False
            client.disconnect()
            self._failed(f"refused {self.client_id} ({reason}; {who}: check mqtt.username and "
                         "mqtt.password or password_file)", severity="error")
            return
        self.connected, self._failures, self._last_reason = True, 0, ""
        self.log(f"nightear: mqtt connected to {self.where}")
        self.on_connected()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: mqtt.ReasonCode, properties: object) -> None:
        if self.connected:
            self.connected = False
            self._failures = 0
            self._failed(f"connection lost ({reason})")
            self.on_lost(f"connection lost ({reason})")


def _check_tls_files(ca: str, cert: str | None, key: str | None, names: dict[str, str | None]) -> None:
    """Load the TLS files one by one, so that a bad one is named (OpenSSL says "PEM lib")."""
    try:
        context = ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"mqtt.ca_file {names['ca_file']}: not a PEM CA certificate "
                          f"({getattr(exc, 'reason', None) or exc})") from None
    if cert is None or key is None:
        return
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError, OSError) as exc:
        with open(cert, errors="replace") as handle:
            cert_text = handle.read(1 << 20)
        with open(key, errors="replace") as handle:
            key_text = handle.read(1 << 20)
        if "BEGIN CERTIFICATE" not in cert_text:
            raise ConfigError(f"mqtt.cert_file {names['cert_file']}: not a PEM certificate") from None
        if "PRIVATE KEY" not in key_text:
            raise ConfigError(f"mqtt.key_file {names['key_file']}: not a PEM private key") from None
        if "MISMATCH" in str(exc).upper():
            raise ConfigError(f"mqtt.key_file {names['key_file']}: not the key of mqtt.cert_file "
                              f"{names['cert_file']}") from None
        raise ConfigError(f"mqtt.key_file {names['key_file']} or cert_file {names['cert_file']}: "
                          f"not usable ({getattr(exc, 'reason', None) or exc}; an encrypted key is "
                          "not supported)") from None


def probe_brokers(settings: MqttSettings, node: str, store_path: str | None, base: Path | None = None,
                  timeout_s: float = 10.0) -> str:
    """`nightear check`: connect to the brokers as the unit will (each tried once) and say which
    one took it; ConfigError with the broker's reason when none does. A client id of its own,
    so that a check never pushes the running unit off the broker."""
    if store_path is None:
        raise ConfigError("mqtt.brokers needs store.path: events are sent from the store")
    said: list[str] = []
    link = BrokerLink(settings, f"nightear-check-{settings.site}-{node}", True, said.append, base,
                      patience="")
    stop = threading.Event()
    deadline = time.monotonic() + timeout_s
    brokers = len(settings.addresses())
    while not link.connected and link._failures < brokers and time.monotonic() < deadline:
        link._retry_at = min(link._retry_at, time.monotonic())  # the next broker at once
        link.service(stop)
    if not link.connected:
        reason = said[-1] if said else f"mqtt broker {link.where}: no answer within {timeout_s:.0f} s"
        raise ConfigError(reason.split(": ", 2)[-1].removesuffix("; "))
    where = link.where
    link.close()
    tls = ", TLS" if settings.ca_file else ""
    user = f", user {settings.username!r}" if settings.username else ""
    return f"{where}{tls}{user}, site {settings.site}"
