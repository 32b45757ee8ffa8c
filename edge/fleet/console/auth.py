"""Who may use the console: argon2 password hashes from the config, sessions held in memory
(a restart of the post logs everyone out), a CSRF token per session, and a limit on login
attempts per client address."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

COOKIE = "nightear_session"
RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str  # sent back with every state change, in the X-CSRF-Token header or a form field
    expires_at: float


class Access:
    """Checks passwords, hands out and checks sessions, counts login attempts."""

    def __init__(self, users: dict[str, str], session_hours: float, logins_per_minute: int):
        self.users, self.session_seconds = dict(users), session_hours * 3600.0
        self.logins_per_minute = logins_per_minute
        self._hasher = PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_hex(16))  # for unknown names: same work
        self._sessions: dict[str, Session] = {}
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allowed(self, client: str) -> bool:
        """Whether `client` may try a password now (and count this try)."""
        now = time.monotonic()
        with self._lock:
            tries = self._attempts.setdefault(client, deque())
            while tries and now - tries[0] > RATE_WINDOW_SECONDS:
                tries.popleft()
            if len(tries) >= self.logins_per_minute:
                return False
            tries.append(now)
            return True

    def login(self, user: str, password: str) -> str | None:
        """A new session token for a right name and password, else None."""
        hashed = self.users.get(user)
        try:
            self._hasher.verify(hashed or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if hashed is None:
            return None
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = Session(user, secrets.token_urlsafe(32),
                                            time.monotonic() + self.session_seconds)
        return token

    def session(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            found = self._sessions.get(token)
            if found is not None and found.expires_at < time.monotonic():
                del self._sessions[token]
                return None
        return found

    def logout(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
