"""The console's web server: a bottle app on a threaded WSGI server (the standard library's),
beside the fleet's MQTT loop. Each request runs on a thread of its own; the live alerts are a
server-sent event stream per page, fed by the fleet's lines.

Nothing but the login page and its stylesheet without a session; every state change (ack,
verdict, export, logout) needs the session's CSRF token; the cookie is HttpOnly and
SameSite=Strict (and Secure under TLS). Bound to loopback unless the config says otherwise,
and then only with TLS.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from string import Template
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle

from nightear.errors import ConfigError
from nightear.fleet.console import views
from nightear.fleet.console.auth import COOKIE, Access, Session, same_token
from nightear.fleet.export import export_judged
from nightear.fleet.post import Fleet, Line
from nightear.fleet.settings import ConsoleSettings, is_loopback, parse_address
from nightear.fleet.store import utc_iso

HERE = Path(__file__).parent
KEEPALIVE_SECONDS = 15.0  # an SSE comment this often: proxies and browsers keep the stream
STREAM_QUEUE = 1000  # lines held for a page that reads slowly; past this it is dropped
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                      "form-action 'self'; base-uri 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}
bottle.BaseRequest.MEMFILE_MAX = 64 * 1024


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up, or spoke plain HTTP to TLS, is no error of the post."""
        if not isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class Hub:
    """Fans the fleet's lines out to every open page."""

    def __init__(self) -> None:
        self._queues: set[queue.Queue[Line | None]] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> queue.Queue[Line | None]:
        q: queue.Queue[Line | None] = queue.Queue(STREAM_QUEUE)
        with self._lock:
            self._queues.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[Line | None]) -> None:
        with self._lock:
            self._queues.discard(q)

    def publish(self, line: Line | None) -> None:
        with self._lock:
            for q in list(self._queues):
                try:
                    q.put_nowait(line)
                except queue.Full:  # a page that stopped reading: it reloads its state
                    self._queues.discard(q)


class Console:
    """The app, its server thread, and the fleet it shows (attached once the fleet runs)."""

    def __init__(self, settings: ConsoleSettings, base: Path | None, log: Callable[[str], None]):
        self.settings, self.base, self.log = settings, base, log
        host, port = parse_address(settings.http or "127.0.0.1:8080")
        if not settings.users:
            raise ConfigError("fleet.console.users: no operator can log in; add one with the hash "
                              "from `nightear fleet --hash-password`")
        self.tls = self._tls_context(host)
        self.access = Access(settings.users, settings.session_hours, settings.logins_per_minute)
        self.hub = Hub()
        self.fleet: Fleet | None = None
        self.app = self._routes()
        server_class: Any = _ThreadingServer6 if ":" in host else _ThreadingServer
        try:
            self.server: Any = make_server(host, port, self.app, server_class=server_class,
                                           handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"fleet.console.http {settings.http}: cannot listen there "
                              f"({exc.strerror})") from None
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
        self.port: int = self.server.server_address[1]
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if self.tls else 'http'}://{shown_host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="console", daemon=True)
        self._thread.start()
        log(f"nightear: console at {self.url}")

    def _tls_context(self, host: str) -> ssl.SSLContext | None:
        s = self.settings
        if s.cert_file is None or s.key_file is None:
            if not is_loopback(host):
                raise ConfigError(f"fleet.console.http {s.http}: not loopback, so it needs TLS: set "
                                  "fleet.console.cert_file and key_file")
            return None
        def path(name: str) -> str:
            return name if self.base is None or Path(name).is_absolute() else str(self.base / name)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(path(s.cert_file), path(s.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"fleet.console.cert_file {s.cert_file} / key_file {s.key_file}: "
                              f"not usable ({getattr(exc, 'strerror', None) or exc})") from None
        return context

    def attach(self, fleet: Fleet) -> Console:
        """The fleet to show; the console is then the sink of its lines."""
        self.fleet = fleet
        return self

    def publish(self, line: Line) -> None:
        self.hub.publish(line)

    def close(self) -> None:
        self.hub.publish(None)
        self.server.shutdown()
        self.server.server_close()

    # -- requests ---------------------------------------------------------------------------

    def _session(self) -> Session | None:
        return self.access.session(bottle.request.get_cookie(COOKIE))

    def _need_session(self) -> Session:
        found = self._session()
        if found is None:
            if bottle.request.path.startswith("/api/"):
                raise bottle.HTTPError(401, "log in first")
            raise bottle.redirect("/login", 303)
        return found

    def _need_csrf(self) -> Session:
        found = self._need_session()
        given = bottle.request.get_header("X-CSRF-Token") or bottle.request.forms.get("csrf")
        if not same_token(given, found.csrf):
            raise bottle.HTTPError(403, "missing or wrong CSRF token")
        return found

    def _need_fleet(self) -> Fleet:
        if self.fleet is None:
            raise bottle.HTTPError(503, "the fleet is starting")
        return self.fleet

    def _page(self, name: str, **values: str) -> str:
        return Template((HERE / "templates" / name).read_text()).substitute(values)

    def _routes(self) -> bottle.Bottle:
        app = bottle.Bottle()
        app.default_error_handler = _plain_error
        app.add_hook("after_request", _secure_headers)
        app.route("/login", "GET", lambda: self._page("login.html", message=""))
        app.route("/login", "POST", self._login)
        app.route("/logout", "POST", self._logout)
        app.route("/", "GET", self._index)
        app.route("/static/<name>", "GET", self._static)
        app.route("/api/state", "GET", self._state)
        app.route("/api/stream", "GET", self._stream)
        app.route("/api/clips/<event_id>.flac", "GET", self._clip)
        app.route("/api/clips/<event_id>.jpg", "GET", self._spectrogram)
        app.route("/api/events/<event_id>/ack", "POST", self._ack)
        app.route("/api/events/<event_id>/verdict", "POST", self._verdict)
        app.route("/api/export", "POST", self._export)
        return app

    def _login(self) -> Any:
        origin = bottle.request.get_header("Origin")
        if origin not in (None, "null") and origin.split("://", 1)[-1] != bottle.request.get_header("Host"):
            raise bottle.HTTPError(403, "a login from another site")
        client = bottle.request.remote_addr or "?"
        if not self.access.allowed(client):
            bottle.response.status = 429
            return self._page("login.html", message="Too many attempts: wait a minute.")
        user = bottle.request.forms.getunicode("user") or ""
        token = self.access.login(user, bottle.request.forms.getunicode("password") or "")
        if token is None:
            self.log(f"nightear: console: refused a login as {user[:40]!r} from {client}")
            bottle.response.status = 401
            return self._page("login.html", message="Wrong name or password.")
        bottle.response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="strict",
                                   secure=self.tls is not None)
        self.log(f"nightear: console: {user} logged in from {client}")
        raise bottle.redirect("/", 303)

    def _logout(self) -> Any:
        self._need_csrf()
        self.access.logout(bottle.request.get_cookie(COOKIE) or "")
        bottle.response.delete_cookie(COOKIE, path="/")
        raise bottle.redirect("/login", 303)

    def _index(self) -> str:
        found = self._need_session()
        return self._page("index.html", csrf=found.csrf, user=bottle.html_escape(found.user))

    def _static(self, name: str) -> Any:
        if name != "console.css":  # the login page's stylesheet is all that is public
            self._need_session()
        return bottle.static_file(name, root=str(HERE / "static"))

    def _state(self) -> dict[str, Any]:
        found, fleet = self._need_session(), self._need_fleet()
        bottle.response.set_header("Cache-Control", "no-store")
        return {"me": found.user, "link": fleet.link_up, "alerts": views.alerts(fleet),
                "units": fleet.health(), "plan": views.plan(fleet)}

    def _stream(self) -> Iterator[str]:
        self._need_session()
        bottle.response.content_type = "text/event-stream"
        bottle.response.set_header("Cache-Control", "no-store")
        q = self.hub.subscribe()

        def lines() -> Iterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        line = q.get(timeout=KEEPALIVE_SECONDS)
                    except queue.Empty:
                        yield ": keepalive\n\n"
                        continue
                    if line is None:
                        return
                    yield f"event: {line['kind']}\ndata: {json.dumps(line)}\n\n"
            finally:
                self.hub.unsubscribe(q)
        return lines()

    def _clip_bytes(self, event_id: str) -> bytes:
        self._need_session()
        flac = self._need_fleet().store.clip(event_id)
        if flac is None:
            raise bottle.HTTPError(404, "no clip for this event (yet)")
        return flac

    def _clip(self, event_id: str) -> Any:
        flac = self._clip_bytes(event_id)
        bottle.response.content_type = "audio/flac"
        bottle.response.set_header("Accept-Ranges", "bytes")
        first, last = _range(bottle.request.get_header("Range"), len(flac))
        if (first, last) != (0, len(flac) - 1):
            bottle.response.status = 206
            bottle.response.set_header("Content-Range", f"bytes {first}-{last}/{len(flac)}")
        return flac[first : last + 1]

    def _spectrogram(self, event_id: str) -> bytes:
        picture = views.spectrogram_jpeg(self._clip_bytes(event_id))
        bottle.response.content_type = "image/jpeg"
        return picture

    def _ack(self, event_id: str) -> dict[str, str]:
        found, fleet = self._need_csrf(), self._need_fleet()
        if fleet.store.event(event_id) is None:
            raise bottle.HTTPError(404, "no such event")
        fleet.store.ack(event_id, found.user, utc_iso(time.time()))
        by, at = fleet.store.acks()[event_id]
        self.hub.publish({"kind": "ack", "id": event_id, "by": by, "at": at})
        return {"by": by, "at": at}

    def _verdict(self, event_id: str) -> dict[str, str]:
        found, fleet = self._need_csrf(), self._need_fleet()
        verdict = (bottle.request.json or {}).get("verdict")
        if fleet.store.event(event_id) is None:
            raise bottle.HTTPError(404, "no such event")
        if verdict not in ("drone", "not-drone"):
            raise bottle.HTTPError(400, "verdict must be drone or not-drone")
        at = utc_iso(time.time())
        fleet.store.set_verdict(event_id, verdict, found.user, at)
        self.hub.publish({"kind": "verdict", "id": event_id, "verdict": verdict, "by": found.user, "at": at})
        return {"verdict": verdict, "by": found.user, "at": at}

    def _export(self) -> dict[str, Any]:
        found, fleet = self._need_csrf(), self._need_fleet()
        folder = Path(self.settings.export_folder)
        if self.base is not None and not folder.is_absolute():
            folder = self.base / folder
        try:
            done = export_judged(fleet.store, folder)
        except ConfigError as exc:
            raise bottle.HTTPError(500, str(exc)) from None
        self.log(f"nightear: console: {found.user} exported {sum(done.written.values())} judged clips "
                 f"to {folder}")
        return {"folder": str(folder.resolve()), "written": done.written, "skipped": done.skipped}


def _range(header: str | None, size: int) -> tuple[int, int]:
    """The byte range a media element asks for (one range; all of it without one)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return 0, size - 1
    first_text, _, last_text = header[6:].partition("-")
    try:
        if not first_text:
            return max(0, size - int(last_text)), size - 1
        first = int(first_text)
        last = min(size - 1, int(last_text)) if last_text else size - 1
    except ValueError:
        return 0, size - 1
    return (first, last) if first <= last else (0, size - 1)


def _plain_error(error: bottle.HTTPError) -> str:
    """Errors as one line of text (no framework page): what was refused and why."""
    bottle.response.content_type = "text/plain; charset=utf-8"
    _secure_headers()
    return f"{error.status}: {error.body}\n"


def _secure_headers() -> None:
    for key, value in HEADERS.items():
        bottle.response.set_header(key, value)


def start_console(settings: ConsoleSettings, base: Path | None, log: Callable[[str], None]) -> Console:
    """Bind and serve at once (a wrong address fails before the fleet connects)."""
    return Console(settings, base, log)
