"""Who may use the local HTTP API: the API key, one-time login links, and the request checks.

==================  ============================================================================
rule                why
==================  ============================================================================
API key             32 random bytes (base64url) in ``http-api-key`` in the node home, mode
                    0600, created on the daemon's first start. Whoever can read the home is the
                    node's owner anyway; other local users and web pages cannot.
``Authorization:    how scripts authenticate (compared in constant time, `hmac.compare_digest`)
Bearer KEY``
cookie              how the web page authenticates: ``mindoo_api_key`` (HttpOnly,
                    SameSite=Strict, Path=/), set by a one-time login link
login link          ``/login?token=T``: ``mindoo http url`` asks the daemon (control socket)
                    for a fresh token; it works once, within `LOGIN_TOKEN_SECONDS`, and is
                    never written to disk. The key itself never appears in a URL (URLs end up
                    in shell history, browser history and logs).
Host header         must name the loopback address (127.0.0.1, localhost, [::1]): a DNS
                    rebinding page (evil.example resolving to 127.0.0.1) is refused before any
                    key check
Origin header       when present on a request that changes something, it must be this server's
                    own origin (a cross-site form post never succeeds, even with the cookie)
==================  ============================================================================

Pure: no I/O beyond the key file; the clock is injected.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MindooError
from ..home_files import FILE_MODE, write_private

API_KEY_FILE = "http-api-key"
COOKIE = "mindoo_api_key"
LOGIN_TOKEN_SECONDS = 300.0
MAX_LOGIN_TOKENS = 16
"""Unused login tokens kept at most (the oldest is dropped first)."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiKeyError(MindooError):
    """The API key file is unreadable or damaged."""


def load_or_create_api_key(home: Path) -> str:
    """The node's HTTP API key, creating ``home/http-api-key`` (0600) on first use.

    A key file other users can read is tightened to 0600 (it says so in no log: the key
    itself is not secret from the owner). A damaged file (empty, not the expected form) is an
    `ApiKeyError` naming the recovery step, never silently replaced: scripts hold the key.
    """
    path = home / API_KEY_FILE
    if not path.exists():
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        write_private(path, key.encode() + b"\n")
        return key
    if path.stat().st_mode & 0o077:
        os.chmod(path, FILE_MODE)
    raw = path.read_bytes()[:1024]
    key = raw.decode("ascii", errors="replace").strip()
    if len(key) < 32 or not all(c.isalnum() or c in "-_" for c in key):
        raise ApiKeyError(
            f"the HTTP API key file {path} is damaged: delete it and restart the daemon to"
            " create a new key (scripts using the old key must then read the new one)"
        )
    return key


def key_matches(given: str | None, key: str) -> bool:
    """Whether ``given`` is ``key``, in constant time."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), key.encode())


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, if any."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def host_is_loopback(host_header: str | None) -> bool:
    """Whether a Host header names the loopback address (any port)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        name = host.split("]", 1)[0] + "]"
    else:
        name = host.rsplit(":", 1)[0] if ":" in host else host
    return name in LOOPBACK_HOSTS


def origin_allowed(method: str, origin: str | None, host_header: str | None) -> bool:
    """Whether a request's Origin header (browsers send it on cross-site requests) allows it:
    safe methods always; others when there is no Origin (scripts) or it is this server's."""
    if method.upper() in SAFE_METHODS or origin is None:
        return True
    if not host_header:
        return False
    return origin.lower() in (f"http://{host_header.lower()}",)


@dataclass
class LoginTokens:
    """One-time login tokens for the web page (in memory only)."""

    clock: Callable[[], float] = time.monotonic
    lifetime: float = LOGIN_TOKEN_SECONDS
    _tokens: dict[str, float] = field(default_factory=dict)

    def issue(self) -> str:
        """A fresh token, valid once for `lifetime` seconds."""
        now = self.clock()
        self._expire(now)
        while len(self._tokens) >= MAX_LOGIN_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + self.lifetime
        return token

    def redeem(self, token: str | None) -> bool:
        """True (once) for a token issued here that has not expired."""
        now = self.clock()
        self._expire(now)
        if not token:
            return False
        for known in list(self._tokens):
            if hmac.compare_digest(known.encode(), token.encode()):
                del self._tokens[known]
                return True
        return False

    def _expire(self, now: float) -> None:
        for token, until in list(self._tokens.items()):
            if until <= now:
                del self._tokens[token]
