"""Encoding for each sink, proved against the real interpreter of that sink where one is at hand."""

from __future__ import annotations

import html
import shlex
import sqlite3
import subprocess

import pytest

from airlock.errors import UsageError
from airlock.guard import Decision, EncodeConfig, Guard, GuardConfig, Sink, encode

NASTY = "a'b\"c<d>&e `f` $(g) ;h| \\i *j* [k](l) ![m](n) # o \n\t"


def test_html() -> None:
    out = encode(NASTY, Sink.HTML)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert html.unescape(out) == NASTY


def test_markdown_escapes_every_ascii_punctuation() -> None:
    out = encode("*em* [l](u) ![i](u) <b> &amp; `c` _u_ # h", Sink.MARKDOWN)
    for active in ("*em*", "[l]", "![i]", "<b>", "`c`", "_u_"):
        assert active not in out
    assert "&amp;amp\\;" in out  # the entity is shown, not decoded
    assert out.startswith("\\*em\\*")


def test_shell_round_trips_through_sh() -> None:
    out = encode(NASTY, Sink.SHELL)
    assert shlex.split(out) == [NASTY]
    printed = subprocess.run(
        ["sh", "-c", f"printf %s {out}"], capture_output=True, text=True, timeout=30, check=True
    )
    assert printed.stdout == NASTY


def test_sql_literal_round_trips_through_sqlite() -> None:
    text = "x'); DROP TABLE t; --"
    literal = encode(text, Sink.SQL)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute(f"INSERT INTO t VALUES ({literal})")  # noqa: S608  # the point of the test
    assert db.execute("SELECT v FROM t").fetchall() == [(text,)]


@pytest.mark.parametrize("sink", [Sink.SHELL, Sink.SQL])
def test_nul_is_refused(sink: Sink) -> None:
    with pytest.raises(UsageError, match="NUL"):
        encode("a\x00b", sink)
    config = GuardConfig(unicode=None, filter=None, pii=None, encode=EncodeConfig(sink))
    result = Guard(config).check("a\x00b")
    assert result.decision is Decision.BLOCKED and result.findings[0].rule == "encode.nul"


def test_encode_is_the_last_step_and_not_a_finding() -> None:
    config = GuardConfig(pii=None, encode=EncodeConfig(Sink.HTML))
    result = Guard(config).check("<b>hi</b>")
    assert result.decision is Decision.ALLOWED
    assert result.text == "&lt;b&gt;hi&lt;/b&gt;"
    assert result.steps[-1] == "encode"
