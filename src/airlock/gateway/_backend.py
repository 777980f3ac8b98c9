"""Shared state servers for several gateway replicas: PostgreSQL (``[state] url``) and Redis
(``[limits] url``). Their configuration, the failure they report and the watch that marks them down.

Both fail closed. A call that cannot reach its server raises :class:`BackendUnavailable` and the
request is refused with a 503 and a fixed text (never served unlimited or unaudited). The first
failure marks the server down; while it is down calls fail at once, without waiting for a timeout
on the event loop, and readiness answers 503. A watch thread probes the server (every
``_PROBE_SECONDS``, with the connect timeout) and marks it up again when it answers: no restart.

Passwords never come from the URL: a URL holding one is refused, and the password is read from
``password_file``. URLs are logged only through :func:`redact`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from airlock.errors import AirlockError, UsageError

__all__ = [
    "THREADS",
    "Backend",
    "BackendConfig",
    "BackendUnavailable",
    "parse_backend",
    "read_password",
    "redact",
    "warn_unauthenticated",
]

_log = logging.getLogger("airlock.gateway")

#: how often a watch thread probes its server (seconds)
_PROBE_SECONDS: Final = 0.5
#: threads per server for the gateway's calls (one blocked per request in flight at most)
THREADS: Final = 16
#: a password file holds one line; anything bigger is not one
_MAX_PASSWORD_FILE: Final = 4096
_NAMESPACE: Final = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,62}\Z")
_SSLMODES: Final = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
#: the sslmodes under which libpq ignores sslrootcert (and may fall back to plaintext)
_SSLMODES_UNVERIFIED: Final = frozenset({"disable", "allow", "prefer"})


class BackendUnavailable(AirlockError):
    """The state or limits server cannot be reached (or answered in time): refuse the request."""


@dataclass(frozen=True)
class BackendConfig:
    #: without a password (one in the URL is refused)
    url: str
    password_file: Path | None = None
    #: TLS: the CA that signs the server's certificate (PostgreSQL sslrootcert, Redis ssl_ca_certs)
    ca_file: Path | None = None
    #: PostgreSQL only: libpq sslmode (default: libpq's, "prefer")
    sslmode: str | None = None
    connect_timeout_seconds: float = 2.0
    #: one statement (PostgreSQL) or command (Redis) at most this long
    timeout_seconds: float = 5.0
    #: Redis only: the first part of every key (deployments sharing one Redis keep apart)
    namespace: str = "airlock"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (the only form in which URLs are logged)."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        # a query or fragment may hold a password (``?password=``): never shown
        parts = parts._replace(query="***" if parts.query else "", fragment="***" if parts.fragment else "")
    if parts.password is None:
        return parts.geturl()
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _loopback(host: str) -> bool:
    """This machine: localhost, a loopback address, or a Unix socket's folder (libpq: ``%2F…``)."""
    if host == "localhost" or host.lower().startswith("%2f"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_unauthenticated(what: str, config: BackendConfig, *, verified: bool, advice: str) -> str | None:
    """Log (and return) a warning when the server at ``config.url`` is off this machine and the
    connection does not check its certificate: anyone on the path can read the traffic and answer
    as the server (keys it never issued, budgets never spent). Reported, never silently accepted."""
    host = urlsplit(config.url).hostname or ""
    if verified or _loopback(host):
        return None
    message = (
        f"{what}: the connection to {host} is not authenticated by TLS: anyone on the path can answer "
        f"as the server ({'accept keys it never issued' if what == 'state' else 'lift every budget'}); "
        f"{advice}"
    )
    _log.warning(message, extra={"url": redact(config.url)})
    return message


def read_password(config: BackendConfig) -> str | None:
    if config.password_file is None:
        return None
    try:
        with config.password_file.open("rb") as handle:
            raw = handle.read(_MAX_PASSWORD_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the password file {config.password_file}: {exc.strerror}") from exc
    if len(raw) > _MAX_PASSWORD_FILE:
        raise UsageError(f"password file {config.password_file} is larger than {_MAX_PASSWORD_FILE} bytes")
    try:
        return raw.decode("utf-8", "strict").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UsageError(f"password file {config.password_file} is not UTF-8 text") from None


def parse_backend(
    where: str, base: Path, data: dict[str, object], schemes: frozenset[str]
) -> BackendConfig | None:
    """``[state]`` / ``[limits]``: None when the table has no ``url`` (the embedded default)."""
    known = {
        "url",
        "password_file",
        "ca_file",
        "sslmode",
        "connect_timeout_seconds",
        "timeout_seconds",
        "namespace",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"config: unknown key(s) in [{where}]: {', '.join(unknown)}")
    url = data.get("url")
    if url is None:
        if data:
            raise UsageError(f"config: [{where}] needs url")
        return None
    if not isinstance(url, str):
        raise UsageError(f"config: {where}.url must be a string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise UsageError(f"config: {where}.url is not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise UsageError(f"config: {where}.url must start with {' or '.join(sorted(schemes))}://")
    if parts.password is not None:
        raise UsageError(
            f"config: {where}.url holds a password ({redact(url)}): put it in {where}.password_file"
        )
    if not parts.hostname:
        raise UsageError(f"config: {where}.url needs a host")
    if parts.query or parts.fragment:
        # both clients read settings from the query (libpq: password, sslmode, options; redis-py:
        # password, ssl_cert_reqs, socket_timeout) and redis-py lets them override its keyword
        # arguments: a password there would be logged, a TLS check or timeout silently undone
        raise UsageError(
            f"config: {where}.url must not carry a query or fragment ({redact(url)}): settings go in "
            f"[{where}]'s own keys (password_file, ca_file, sslmode, *_timeout_seconds)"
        )

    def path(key: str) -> Path | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise UsageError(f"config: {where}.{key} must be a string")
        return Path(value) if Path(value).is_absolute() else base / value

    def seconds(key: str, default: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 600:
            raise UsageError(f"config: {where}.{key} must be a number of seconds in (0, 600]")
        return float(value)

    sslmode = data.get("sslmode")
    if sslmode is not None and (where != "state" or sslmode not in _SSLMODES):
        raise UsageError(
            f"config: {where}.sslmode must be one of {', '.join(sorted(_SSLMODES))} ([state] only)"
        )
    assert sslmode is None or isinstance(sslmode, str)
    if where == "state" and "ca_file" in data:
        # libpq reads sslrootcert only from verify-ca on ("require" with it acts as verify-ca); under
        # its default "prefer" a server with another CA's certificate is taken over plaintext
        if sslmode is None:
            sslmode = "verify-full"
        elif sslmode in _SSLMODES_UNVERIFIED:
            raise UsageError(
                f'config: state.ca_file is never used with sslmode = "{sslmode}" (no certificate check, '
                'plaintext allowed): use "verify-full" (the default with ca_file) or "verify-ca"'
            )
    namespace = data.get("namespace", "airlock")
    if where != "limits" and "namespace" in data:
        raise UsageError(f"config: {where}.namespace is for [limits] only")
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise UsageError(f"config: {where}.namespace must be 1-63 characters of a-z, 0-9, '_', '.', '-'")
    return BackendConfig(
        url, path("password_file"), path("ca_file"), sslmode,
        seconds("connect_timeout_seconds", 2.0), seconds("timeout_seconds", 5.0), namespace,
    )  # fmt: skip


class Backend:
    """Up/down state of one server, with the watch thread that probes it.

    ``probe`` raises when the server does not answer. :meth:`failed` marks it down (logged once);
    the watch marks it up again. While down, :meth:`check` raises at once.
    """

    def __init__(self, what: str, url: str, probe: Callable[[], None], call_timeout: float) -> None:
        self.what, self._url, self._probe = what, redact(url), probe
        self.available = True
        #: the gateway's calls run here, never on its event loop (:func:`._offload.offload`)
        self.executor = ThreadPoolExecutor(THREADS, thread_name_prefix=f"airlock-{what}")
        #: the longest a call may take (connect + one statement or command), then it is a failure
        self.call_timeout = call_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"airlock-{what}-watch", daemon=True)
        self._thread.start()

    def check(self) -> None:
        if not self.available:
            raise BackendUnavailable(f"{self.what} unavailable")

    def failed(self, exc: BaseException) -> BackendUnavailable:
        if self.available:
            self.available = False
            _log.error(f"{self.what} unavailable", extra={"url": self._url, "error": type(exc).__name__})
        return BackendUnavailable(f"{self.what} unavailable")

    def _watch(self) -> None:
        # the probe runs in a thread of its own, awaited at most call_timeout: a server that holds
        # the connection and answers nothing is marked down too (libpq has no read timeout)
        prober = ThreadPoolExecutor(1, thread_name_prefix=f"airlock-{self.what}-probe")
        pending: Future[None] | None = None
        while not self._stop.wait(_PROBE_SECONDS):
            if pending is None or pending.done():
                pending = prober.submit(self._probe)
            try:
                pending.result(timeout=self.call_timeout)
            except FutureTimeout:
                self.failed(TimeoutError("no answer in time"))
                continue
            except Exception as exc:
                self.failed(exc)
                continue
            if not self.available:
                self.available = True
                _log.warning(f"{self.what} available again", extra={"url": self._url})
        prober.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
