"""A real Mosquitto on loopback for the fleet tests: a password file, a plain listener and a
TLS listener with certificates made here by openssl (a CA, a server certificate for
127.0.0.1, and a second CA nobody trusts). Killed and restarted on the same ports at will."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

USER, PASSWORD = "unit", "night-watch-7"


def need(program: str) -> str:
    """The program's path; skip without it, but fail on CI, where .ci/run installs it."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {program} is not installed (.ci/run installs mosquitto and openssl)")
        pytest.skip(f"{program} not installed (apt-get install -y mosquitto openssl)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificates(folder: Path) -> None:
    """ca.crt signs server.crt (for IP 127.0.0.1) and client.crt (a unit's own certificate);
    other-ca.crt signs nothing here."""
    openssl = need("openssl")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    for name in ("ca", "other-ca"):
        run("req", "-x509", *key, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=nightear test {name}")
    run("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    run("req", *key, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=post-1")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.crt", "-days", "2")


class Broker:
    """mosquitto on 127.0.0.1 with `plain_port` (password), `tls_port` (TLS + password) and
    `mtls_port` (TLS + password + a client certificate signed by the CA)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.mosquitto = need("mosquitto")
        folder.mkdir(parents=True, exist_ok=True)
        make_certificates(folder)
        passwd = folder / "passwd"
        subprocess.run([need("mosquitto_passwd"), "-b", "-c", str(passwd), USER, PASSWORD], check=True,
                       capture_output=True)
        passwd.chmod(0o600)
        self.plain_port, self.tls_port, self.mtls_port = free_port(), free_port(), free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join([
            "user root", "allow_anonymous false", f"password_file {passwd}",
            # persist every change: a broker killed mid-stream keeps what it acknowledged
            "persistence true", f"persistence_location {folder}/", "autosave_interval 1",
            "autosave_on_changes true", "log_type error", "log_type warning", "log_type notice",
            f"listener {self.plain_port} 127.0.0.1",
            f"listener {self.tls_port} 127.0.0.1", f"cafile {folder / 'ca.crt'}",
            f"certfile {folder / 'server.crt'}", f"keyfile {folder / 'server.key'}",
            f"listener {self.mtls_port} 127.0.0.1", f"cafile {folder / 'ca.crt'}",
            f"certfile {folder / 'server.crt'}", f"keyfile {folder / 'server.key'}",
            "require_certificate true", ""]))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "mosquitto.log"
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.mosquitto, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        for port in (self.plain_port, self.tls_port, self.mtls_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}") from None
                    time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye, as a crash or a power cut."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def unit_config(self, tls: bool = True, **overrides: object) -> dict[str, object]:
        """An `mqtt` config section that this broker accepts."""
        section: dict[str, object] = {
            "brokers": [f"127.0.0.1:{self.tls_port if tls else self.plain_port}"], "site": "border",
            "username": USER, "password": PASSWORD, "max_events_per_second": 200.0}
        if tls:
            section["ca_file"] = str(self.folder / "ca.crt")
        section.update(overrides)
        return section


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class FleetThread:
    """`nightear fleet`'s loop (nightear.fleet.service.run) on a thread, its lines and log
    collected, and the Fleet it runs (`fleet`), whose health the console shows."""

    def __init__(self, mqtt: dict[str, object], store: Path | None = None,
                 clock: Callable[[], float] = time.monotonic, console: Any = None, **fleet: object):
        import threading

        import msgspec

        from nightear.fleet.service import run
        from nightear.fleet.settings import FleetSettings
        from nightear.sinks.broker import MqttSettings

        self.lines: list[dict[str, object]] = []
        self.fleet: Any = None
        self.console = console  # a started nightear.fleet.console.server.Console, or None
        self.log: list[str] = []
        self.stop = threading.Event()
        settings = msgspec.convert({"store": str(store) if store else None, **fleet}, FleetSettings)
        link = msgspec.convert(mqtt, MqttSettings)
        self.thread = threading.Thread(
            target=run, args=(link, settings, self, self.log.append, self.stop, None, clock),
            kwargs={"on_ready": self._ready, "json_lines": True}, daemon=True)
        self.thread.start()
        wait_for(lambda: any("mqtt connected" in line for line in self.log), what="the fleet to connect")

    def _ready(self, fleet: object) -> Any:
        self.fleet = fleet
        return None if self.console is None else self.console.attach(fleet)

    def write(self, text: str) -> None:
        import json

        self.lines += [json.loads(line) for line in text.splitlines() if line.strip()]

    def flush(self) -> None:
        pass

    def of(self, kind: str) -> list[dict[str, object]]:
        return [line for line in list(self.lines) if line["kind"] == kind]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


class MovedClock:
    """time.monotonic() plus whatever the test has moved it by: ten minutes pass at once."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset_s


class CuttableLink:
    """A TCP relay on loopback between a unit and the broker, which the test can cut (all
    connections dropped, new ones refused) and restore: a network cut, not a broker crash."""

    def __init__(self, target_port: int):
        import threading

        self.target_port, self.port = target_port, free_port()
        self.open = threading.Event()
        self.open.set()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open.clear()
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sockets.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self._server.close()
