"""Filter step (``filter``): script and active markup, and data exfiltration through links and
images a renderer would follow.

Rules:

* ``filter.html-tag``: an active HTML element (script, iframe, object, embed, style, base, meta,
  link, form, svg, math, template, frame(set), applet), from its opening tag to its closing tag.
* ``filter.html-event-handler``: a tag with an ``on...=`` attribute (``<img onerror=...>``).
* ``filter.script-url``: a ``javascript:`` / ``vbscript:`` / non-image ``data:`` URL in an HTML
  attribute, a markdown link or image, or an autolink, after decoding.
* ``filter.exfil-image``: a resource fetched without a click (markdown image, a reference that an
  image uses, ``<img src>`` and every other ``src``-like attribute, CSS ``url()``) from a host not in
  ``allowed_hosts``: rendering it sends whatever its URL holds to that host.
* ``filter.exfil-link``: a link (markdown, reference definition, autolink, bare URL, ``href``) to a
  host not allowed that carries data: a query, fragment or user info, base64 in its path, or
  encoded characters; and any link whose URL nests such a URL (a redirector).
* ``filter.exfil-url``: a URL too long to judge (``max_url_chars``) or that does not parse.

URLs are judged after undoing HTML entities and percent-encoding, repeatedly, at most
``max_decode_rounds`` times, and dropping the characters browsers ignore in URLs. A redacted
element becomes ``«removed»`` (:data:`REMOVED`): never nothing, so that the pieces around it cannot
join into new markup, and no ASCII punctuation, so that the marker itself cannot open, close or
complete any: every Markdown and HTML construct is delimited by ASCII punctuation, and
``[removed]`` (the marker before outside review 14) became the text of a link or image with the
``!`` before and the ``(url)`` after it: ``!<script></script>(https://x/?q)`` came out as an image
the renderer fetched.

This step is defence in depth for text that will be rendered; the principled defence is encoding
for the sink (``encode`` step), which makes every character inert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from airlock.errors import UsageError
from airlock.guard._step import EMPTY, StepReport
from airlock.guard._types import Action, Hit
from airlock.guard._urls import UrlPolicy, decode_bounded, judge_url

__all__ = ["REMOVED", "FilterConfig", "FilterStep"]

#: letters between two non-ASCII guillemets: no ASCII punctuation, so it is inert in Markdown and
#: HTML whatever stands around it (a test renders every rule's output next to ``!``/``(url)``)
REMOVED: Final = "\u00abremoved\u00bb"

_ACTIVE: Final = (
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "style", "base", "meta",
    "link", "form", "svg", "math", "template", "noscript", "xmp", "plaintext",
)  # fmt: skip
#: a tag, with quoted attribute values (a ">" inside quotes does not end it); linear: the
#: alternatives start with different characters
_TAG: Final = re.compile(r"<([a-zA-Z][^\s/<>]*)((?:[^<>\"']|\"[^\"]*\"|'[^']*')*)(>?)")
_ATTR: Final = re.compile(r"([^\s\"'>/=]+)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?")
_URL_ATTRS_LOADING: Final = frozenset(
    {"src", "srcset", "poster", "background", "data", "lowsrc", "dynsrc", "codebase", "archive"}
)
_URL_ATTRS_LINK: Final = frozenset(
    {"href", "action", "formaction", "xlink:href", "cite", "ping", "longdesc", "manifest"}
)
_CSS_URL: Final = re.compile(r"url\s*\(|@import|expression\s*\(", re.IGNORECASE)
_MD_OPEN: Final = re.compile(r"(!?)\[")
#: a reference definition at the start of a line, also inside block quotes and list items (CommonMark
#: reads definitions in any container: "> [a]: https://..." defines [a]). The label as CommonMark
#: reads it: up to 999 characters, backslash escapes (``[a\\]b]``) and line breaks allowed, no
#: unescaped bracket; the destination may start on the next line, after that line's block-quote
#: markers. Linear: the alternatives of the label start with different characters.
_REF_DEF: Final = re.compile(
    r"^ {0,3}(?:(?:>|[-*+]|\d{1,9}[.)])[ \t]*){0,16}\[((?:\\[\s\S]|[^\[\]\\]){1,999})\]:"
    r"[ \t]*(?:\n[ \t]*(?:>[ \t]*){0,16})?(<(?:\\.|[^<>\\\n])*>|\S+)",
    re.MULTILINE,
)
#: what can open an image: where it stands, every reference definition in the text is judged as an
#: image's (fetched without a click): which labels match is the renderer's business (escapes, line
#: breaks, Unicode case folding, container markers), and a guess that misses one lets an image out
_IMAGE_OPEN: Final = "!["
#: a CSS escape: up to six hex digits (and one white-space character after them), or any other character
_CSS_ESCAPE: Final = re.compile(r"\\([0-9a-fA-F]{1,6})[ \t\n\r\f]?|\\(.)", re.DOTALL)


def _css_unescape(value: str) -> str:
    """CSS as a browser reads it: ``u\\rl(`` and ``\\75rl(`` are ``url(``."""

    def one(match: re.Match[str]) -> str:
        if match.group(2) is not None:
            return match.group(2)
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"

    return _CSS_ESCAPE.sub(one, value)


#: a CommonMark backslash escape: a backslash before an ASCII punctuation character
_MD_ESCAPE: Final = re.compile(r"\\([!-/:-@\[-`{-~])")
_AUTOLINK: Final = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>")
_BARE_URL: Final = re.compile(r"(?:\b(?:https?|ftp)://|(?<![\w/])www\.)[^\s<>\"'`]+", re.IGNORECASE)


@dataclass(frozen=True)
class FilterConfig:
    """What the filter removes (REDACT), refuses (BLOCK) or reports (FLAG); ``None`` turns a rule
    group off.

    ``markup``: active HTML, event handlers, script URLs (default REDACT). ``images``: resources
    fetched without a click from hosts not allowed (default REDACT). ``links``: links that carry
    data to hosts not allowed (default FLAG: people paste such links; a renderer does not follow
    them by itself). ``allowed_hosts``: exact host names, or ``.example.com`` for it and its
    subdomains. ``max_decode_rounds`` (default 4) and ``max_url_chars`` (default 8192) bound the work
    per URL.
    """

    markup: Action | None = Action.REDACT
    images: Action | None = Action.REDACT
    links: Action | None = Action.FLAG
    allowed_hosts: frozenset[str] = frozenset()
    max_decode_rounds: int = 4
    max_url_chars: int = 8192

    def __post_init__(self) -> None:
        for name in ("markup", "images", "links"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Action):
                raise UsageError(f"FilterConfig.{name} must be an Action or None, got {value!r}")
        if not 1 <= self.max_decode_rounds <= 16:
            raise UsageError(f"FilterConfig.max_decode_rounds must be 1..16, got {self.max_decode_rounds}")
        if self.max_url_chars < 16:
            raise UsageError(f"FilterConfig.max_url_chars must be at least 16, got {self.max_url_chars}")
        object.__setattr__(self, "allowed_hosts", frozenset(h.lower() for h in self.allowed_hosts))


def _unquote_attr(value: str | None) -> str:
    if value is None:
        return ""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _bracket_pairs(text: str) -> dict[int, int]:
    """Each ``[`` -> the ``]`` that closes it (nesting and backslash escapes count, as in
    CommonMark link texts), in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            stack.append(i)
        elif c == "]" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _link_destination(text: str, at: int, limit: int) -> tuple[str, int] | None:
    """The destination of a markdown link whose ``(`` is at ``at - 1``: ``(url, end)`` where
    ``end`` is just past the closing ``)`` (or past the destination when it is not closed)."""
    i = at
    n = len(text)
    while i < n and text[i] in " \t\n":
        i += 1
    if i < n and text[i] == "<":
        # CommonMark's pointy destination: no line break, no unescaped "<" or ">" ("\\>" is data)
        close, stop = i + 1, min(n, i + limit + 2)
        while close < stop and text[close] not in "<>\n":
            close += 2 if text[close] == "\\" else 1
        if close >= stop or text[close] != ">":
            return None
        url, i = text[i + 1 : close], close + 1
    else:
        start, depth = i, 0
        while i < n and i - start <= limit:
            c = text[i]
            if c == "\\" and i + 1 < n:
                i += 2
                continue
            if c.isspace() or ord(c) < 0x20:
                break
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            i += 1
        url = text[start:i]
    close = text.find(")", i, i + limit)
    return url, (close + 1 if close >= 0 else i)


class FilterStep:
    name = "filter"

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        self._policy = UrlPolicy(config.allowed_hosts, config.max_decode_rounds, config.max_url_chars)

    def check(self, text: str) -> StepReport:
        if "<" not in text and "[" not in text and "://" not in text and "www." not in text.lower():
            return EMPTY
        hits: list[Hit] = []
        if "<" in text:
            self._html(text, hits)
        if "[" in text:
            self._markdown(text, hits)
        if "<" in text:
            self._autolinks(text, hits)
        self._bare(text, hits)
        hits.sort(key=lambda h: (h.start, -h.end))
        return StepReport(tuple(hits))

    def _add(self, hits: list[Hit], rule: str, reason: str, start: int, end: int) -> None:
        group = {
            "filter.html-tag": self.config.markup,
            "filter.html-event-handler": self.config.markup,
            "filter.script-url": self.config.markup,
            "filter.exfil-image": self.config.images,
            "filter.exfil-link": self.config.links,
            "filter.exfil-url": self.config.links,
        }[rule]
        if group is not None:
            hits.append(Hit(rule, reason, start, end, group, REMOVED))

    def _url(self, hits: list[Hit], raw: str, start: int, end: int, *, auto_loads: bool) -> bool:
        found = judge_url(raw, self._policy, auto_loads=auto_loads)
        if found is not None:
            self._add(hits, found[0], found[1], start, end)
        return found is not None

    def _markdown_url(
        self, hits: list[Hit], raw: str, start: int, end: int, *, auto_loads: bool, escapes: bool = True
    ) -> None:
        """A markdown destination, judged as written and as a Markdown renderer reads it: backslash
        escapes undone and a remaining backslash percent-encoded (``%5C``), as markdown-it and cmark
        write it into ``href``/``src``. The reading a browser gives a raw ``\\`` (a slash) let
        ``https://allowed.example\\@evil.example/i.png`` pass an allowlist; the renderer made it
        ``https://allowed.example@evil.example/i.png`` (outside review 14). ``escapes``: False for
        autolinks and bare URLs, where a backslash is data (written as ``%5C``)."""
        if self._url(hits, raw, start, end, auto_loads=auto_loads) or "\\" not in raw:
            return
        rendered = (_MD_ESCAPE.sub(r"\1", raw) if escapes else raw).replace("\\", "%5C")
        self._url(hits, rendered, start, end, auto_loads=auto_loads)

    def _html(self, text: str, hits: list[Hit]) -> None:
        closings: dict[str, tuple[int, int]] = {}
        for tag in _TAG.finditer(text):
            name = tag.group(1).lower()
            end = tag.end()
            if name in _ACTIVE:
                # one search per element name (a failed search fails for every later tag too)
                known = closings.get(name)
                if known is None or (known[0] >= 0 and known[0] < end):
                    closing = re.compile(rf"</\s*{re.escape(name)}\s*>", re.IGNORECASE).search(text, end)
                    known = closings[name] = (closing.start(), closing.end()) if closing else (-1, -1)
                stop = known[1] if known[0] >= 0 else end
                self._add(hits, "filter.html-tag", f"active HTML element <{name}>", tag.start(), stop)
                continue
            for attr in _ATTR.finditer(tag.group(2)):
                key = attr.group(1).lower()
                value = decode_bounded(_unquote_attr(attr.group(2)), 1)  # the browser decodes entities once
                if key.startswith("on") and attr.group(2) is not None:
                    self._add(
                        hits,
                        "filter.html-event-handler",
                        "event handler attribute on an HTML tag",
                        tag.start(),
                        end,
                    )
                    break
                if key == "style" and _CSS_URL.search(
                    _css_unescape(decode_bounded(value, self.config.max_decode_rounds))
                ):
                    self._add(
                        hits, "filter.exfil-image", "inline CSS that fetches a resource", tag.start(), end
                    )
                    break
                if key in _URL_ATTRS_LOADING or key in _URL_ATTRS_LINK:
                    loads = key in _URL_ATTRS_LOADING
                    urls = [u.strip().split(" ")[0] for u in value.split(",")] if key == "srcset" else [value]
                    if any(self._url(hits, u, tag.start(), end, auto_loads=loads) for u in urls if u):
                        break

    def _markdown(self, text: str, hits: list[Hit]) -> None:
        pairs = _bracket_pairs(text)
        # a bracket inside a destination already judged starts no link (each destination is read
        # once: linear time); one inside a link's text does ([![img](a)](b) is an image in a link)
        inside = (0, 0)
        for opening in _MD_OPEN.finditer(text):
            bracket = opening.end() - 1
            close = pairs.get(bracket, -1)
            if inside[0] <= opening.start() < inside[1]:
                continue
            if close < 0 or close + 1 >= len(text) or text[close + 1] != "(":
                continue
            found = _link_destination(text, close + 2, self.config.max_url_chars)
            if found is None:
                continue
            url, end = found
            inside = (close + 2, end)
            image = opening.group(1) == "!"
            self._markdown_url(hits, url, opening.start(), end, auto_loads=image)
        images = _IMAGE_OPEN in text
        for ref in _REF_DEF.finditer(text):
            url = ref.group(2)
            if url.startswith("<") and url.endswith(">"):
                url = url[1:-1]
            self._markdown_url(hits, url, ref.start(), ref.end(), auto_loads=images)

    def _autolinks(self, text: str, hits: list[Hit]) -> None:
        for link in _AUTOLINK.finditer(text):
            self._markdown_url(hits, link.group(1), link.start(), link.end(), auto_loads=False, escapes=False)

    def _bare(self, text: str, hits: list[Hit]) -> None:
        covered = [(h.start, h.end) for h in hits]
        for bare in _BARE_URL.finditer(text):
            if any(s <= bare.start() < e for s, e in covered):
                continue
            url = bare.group(0).rstrip(".,;:!?)]}")
            if url.lower().startswith("www."):
                url = "http://" + url
            self._markdown_url(
                hits,
                url,
                bare.start(),
                bare.start() + len(bare.group(0).rstrip(".,;:!?)]}")),
                auto_loads=False,
                escapes=False,
            )
