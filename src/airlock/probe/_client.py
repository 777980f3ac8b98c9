"""The one network peer of ``airlock probe``: an OpenAI-compatible ``/chat/completions`` endpoint.

httpx with ``trust_env=False``: no proxy, CA bundle or .netrc from the environment, so prompts
(and the API key) go to the target and nowhere else; no redirects are followed (a redirect could
send them elsewhere). Plain HTTP is allowed to loopback addresses only, unless the caller passes
``unsafe_plain_http``. Every request has a deadline that bounds all of it: each socket operation
(connect, TLS handshake, writing the request, reading the status line, headers and body) waits at
most what is left of it, so a server trickling its headers a byte at a time cannot hold a run (httpx's
own timeouts bound each read, and h11 takes up to 16 KiB of headers one read at a time, before the
body loop could look at a clock). A response body is read to at most
:data:`MAX_RESPONSE_BYTES` as it came over the wire and parsed with airlock's strict JSON parser. No
content encoding is asked for (``Accept-Encoding: identity``) and one the server uses anyway is
refused before decoding: a few KB of gzip inside gzip inflate to gigabytes in one decoding step,
before any limit on the decoded bytes could be checked.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpcore
import httpx

from airlock._net import is_loopback
from airlock._strictjson import parse_json_strict
from airlock.errors import AirlockError, FormatError, UsageError
from airlock.probe._cases import Message

__all__ = ["MAX_RESPONSE_BYTES", "CaseFailed", "ChatClient", "Reply", "Target", "read_api_key"]

MAX_RESPONSE_BYTES: Final = 1 << 20
_MAX_KEY_BYTES: Final = 4096
#: statuses that mean every later request would fail too: stop the run
_FATAL: Final = {
    401: "the API key was refused",
    403: "the API key may not use this model",
    404: "no such endpoint or model",
}


class CaseFailed(Exception):
    """One request failed (a 4xx/5xx, a timeout, a malformed body); the run goes on without it."""


@dataclass(frozen=True)
class Reply:
    text: str
    finish: str | None


@dataclass(frozen=True)
class Target:
    url: str
    model: str
    api_key: str | None = None
    ca: Path | None = None
    timeout: float = 120.0
    unsafe_plain_http: bool = False

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


def read_api_key(path: Path) -> str:
    try:
        raw = path.read_bytes()[: _MAX_KEY_BYTES + 1]
    except OSError as exc:
        raise UsageError(f"cannot read --api-key-file {path}: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_KEY_BYTES:
        raise UsageError(f"--api-key-file {path} is longer than {_MAX_KEY_BYTES} bytes")
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise UsageError(f"--api-key-file {path} is not ASCII text") from exc
    if not key or any(c.isspace() for c in key):
        raise UsageError(f"--api-key-file {path} must hold one key, without spaces")
    return key


def _check_url(target: Target) -> None:
    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the target URL must be http:// or https:// with a host, got {target.url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UsageError("the target URL must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not target.unsafe_plain_http:
        raise UsageError(
            f"plain http:// to {parts.hostname} would send the prompts and the API key unencrypted; "
            "use https://, or --unsafe-plain-http"
        )


class _Deadline:
    """The deadline of the request in flight (one at a time: the probe is sequential)."""

    def __init__(self) -> None:
        self.at = float("inf")

    def cap(self, timeout: float | None) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the request's deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation waits at most what is left of the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.cap(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.cap(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._deadline.cap(timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, self._deadline.cap(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("airlock probe connects over TCP only")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose sockets keep :class:`_Deadline`."""

    def __init__(self, verify: ssl.SSLContext | bool, deadline: _Deadline) -> None:
        super().__init__(verify=verify, trust_env=False)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=_DeadlineBackend(deadline),
        )


class ChatClient:
    """Chat completions with temperature 0 and a fixed seed (deterministic where the server is)."""

    def __init__(self, target: Target, *, max_tokens: int, seed: int) -> None:
        _check_url(target)
        self.target = target
        self.max_tokens = max_tokens
        self.seed = seed
        verify: ssl.SSLContext | bool = True
        if target.ca is not None:
            try:
                verify = ssl.create_default_context(cafile=str(target.ca))
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot use --ca {target.ca}: {exc}") from exc
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if target.api_key is not None:
            headers["Authorization"] = f"Bearer {target.api_key}"
        self._deadline = _Deadline()
        self._http = httpx.Client(
            transport=_DeadlineTransport(verify, self._deadline),
            headers=headers,
            trust_env=False,
            follow_redirects=False,
            timeout=target.timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(self, messages: tuple[Message, ...], timeout: float) -> Reply:
        body = {
            "model": self.target.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "seed": self.seed,
            "stream": False,
        }
        # httpx's timeout bounds each read; the deadline bounds the whole answer (a server that
        # trickles a byte per read would otherwise hold the run forever)
        deadline = time.monotonic() + timeout
        self._deadline.at = deadline
        try:
            with self._http.stream("POST", self.target.endpoint, json=body, timeout=timeout) as response:
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding != "identity":
                    raise CaseFailed(f"the answer has content-encoding {encoding[:40]!r}; none was asked for")
                raw = bytearray()
                for chunk in response.iter_raw():
                    raw += chunk
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise CaseFailed(f"response larger than {MAX_RESPONSE_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise CaseFailed(f"no complete answer within {timeout:.0f} s")
                status = response.status_code
        except httpx.ConnectError as exc:
            raise AirlockError(f"cannot connect to {self.target.endpoint}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise CaseFailed(f"no complete answer within {timeout:.0f} s") from exc
        except httpx.HTTPError as exc:
            raise CaseFailed(f"HTTP error: {type(exc).__name__}: {exc}") from exc
        finally:
            self._deadline.at = float("inf")
        if status in _FATAL:
            raise AirlockError(f"{self.target.endpoint} answered {status}: {_FATAL[status]} ({_error(raw)})")
        if status != 200:
            raise CaseFailed(f"HTTP {status}: {_error(raw)}")
        return _reply(raw)


def _error(raw: bytes | bytearray) -> str:
    try:
        doc = parse_json_strict(bytes(raw), "error body")
    except FormatError:
        return f"{len(raw)} bytes, not JSON"
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        message = doc["error"].get("message")
        if isinstance(message, str):
            return message[:300]
    return "no error message"


def _reply(raw: bytes | bytearray) -> Reply:
    try:
        doc: Any = parse_json_strict(bytes(raw), "chat completion")
    except FormatError as exc:
        raise CaseFailed(str(exc)) from exc
    try:
        choice = doc["choices"][0]
        content = choice["message"]["content"]
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError) as exc:
        raise CaseFailed("the answer has no choices[0].message.content") from exc
    if content is None:
        content = ""
    if not isinstance(content, str) or not (finish is None or isinstance(finish, str)):
        raise CaseFailed("choices[0].message.content is not a string")
    return Reply(content, finish)
