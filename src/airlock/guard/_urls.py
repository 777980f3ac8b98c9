"""URL judging for the filter step: decode nested encodings with a bound, then ask whether the URL
runs script, loads a remote resource, or carries data to a host outside the allowlist."""

from __future__ import annotations

import base64
import binascii
import html
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

__all__ = ["UrlPolicy", "decode_bounded", "judge_url"]

#: schemes that run code when a renderer follows them
_SCRIPT_SCHEMES: Final = ("javascript:", "vbscript:", "livescript:", "mocha:")
#: inline images a renderer shows without fetching anything
_SAFE_DATA: Final = re.compile(r"data:image/(?:png|gif|jpeg|jpg|webp|bmp);", re.IGNORECASE)
_REMOTE_SCHEMES: Final = frozenset({"http", "https", "ftp", "ftps", "ws", "wss", "ldap", "file", "smb"})
#: browsers drop these anywhere in a URL (WHATWG URL parser) and spaces before it
_DROPPED: Final = re.compile(r"[\x00-\x20\x7f\u200b-\u200f\u2028\u2029\ufeff]+")
_BASE64ISH: Final = re.compile(r"[A-Za-z0-9+_-]{24,}={0,2}")  # one path segment
_NESTED_URL: Final = re.compile(r"(?:https?:)?//[^\s&#]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allowed_hosts: frozenset[str]
    max_decode_rounds: int
    max_url_chars: int


def decode_bounded(raw: str, rounds: int) -> str:
    """``raw`` with HTML entities and percent-encoding undone, repeatedly (``&amp;#106;`` then
    ``%256a`` ...), at most ``rounds`` times or until nothing changes."""
    text = raw
    for _ in range(rounds):
        decoded = unquote(html.unescape(text), errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    host = host.lower().rstrip(".")
    if host in allowed:
        return True
    return any(entry.startswith(".") and (host.endswith(entry) or host == entry[1:]) for entry in allowed)


def _carries_base64(path: str) -> bool:
    for match in _BASE64ISH.finditer(path):
        chunk = match.group(0)[:4096]
        padded = chunk.replace("-", "+").replace("_", "/")
        padded += "=" * (-len(padded) % 4)
        try:
            if len(base64.b64decode(padded, validate=True)) >= 16:
                return True
        except (binascii.Error, ValueError):
            continue
    return False


def judge_url(raw: str, policy: UrlPolicy, *, auto_loads: bool, depth: int = 0) -> tuple[str, str] | None:
    """``(rule, reason)`` for a URL that must not pass, else None.

    ``auto_loads``: the renderer fetches it without a click (an image, a ``src``, CSS ``url()``).
    Two readings are judged and both must pass: the one a browser gets (HTML entities decoded once)
    and the fully decoded one (entities and percent-encoding undone repeatedly): ``%2F`` in a host
    is not a slash to a browser, but ``%6A`` in a scheme is a ``j`` to a lenient renderer. In both,
    a backslash counts as a slash, as WHATWG URL parsing does for web schemes. Reasons never quote
    the URL.
    """
    if len(raw) > policy.max_url_chars:
        return (
            "filter.exfil-url",
            f"URL of {len(raw)} characters exceeds max_url_chars {policy.max_url_chars}",
        )
    browser = _DROPPED.sub("", html.unescape(raw)).replace("\\", "/")
    decoded = _DROPPED.sub("", decode_bounded(raw, policy.max_decode_rounds)).replace("\\", "/")
    for url in dict.fromkeys((browser, decoded)):
        found = _judge(url, raw, policy, auto_loads=auto_loads, depth=depth)
        if found is not None:
            return found
    return None


def _judge(url: str, raw: str, policy: UrlPolicy, *, auto_loads: bool, depth: int) -> tuple[str, str] | None:
    lowered = url.lower()
    if lowered.startswith(_SCRIPT_SCHEMES):
        return "filter.script-url", f"URL with the {lowered.split(':', 1)[0]}: scheme runs script"
    if lowered.startswith("data:"):
        if _SAFE_DATA.match(url):
            return None
        return "filter.script-url", "data: URL that is not an inline raster image"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "filter.exfil-url", "URL that does not parse"
    scheme = parts.scheme.lower()
    remote = bool(parts.netloc) or scheme in _REMOTE_SCHEMES
    if not remote:
        return None
    host = parts.hostname or ""
    if not _host_allowed(host, policy.allowed_hosts):
        if auto_loads:
            extra = ", carrying query data" if parts.query else ""
            return "filter.exfil-image", f"remote resource fetched without a click, host not allowed{extra}"
        if parts.query or parts.fragment.strip("#") or parts.username or parts.password:
            return (
                "filter.exfil-link",
                "link to a host not allowed, carrying data in its query, fragment or user info",
            )
        if _carries_base64(parts.path):
            return "filter.exfil-link", "link to a host not allowed, carrying base64 data in its path"
        if "%" in raw or "&#" in raw:
            return "filter.exfil-link", "link to a host not allowed, with encoded characters"
    if depth < 2:  # an allowed host that redirects: judge the URL nested in its query
        for nested in _NESTED_URL.finditer(parts.query + "#" + parts.fragment):
            found = judge_url(nested.group(0), policy, auto_loads=auto_loads, depth=depth + 1)
            if found is not None:
                return found
    return None
