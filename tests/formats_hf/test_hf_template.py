"""Template analysis: public chat templates clean, SSTI payloads malicious and named, nothing rendered."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock import Severity
from airlock._analysis.template import analyse_template
from airlock._formats.base import Issue
from airlock.limits import DEFAULT_LIMITS
from tests.formats_hf.chat_templates import PUBLIC


def _analyse(text: str) -> list[Issue]:
    return analyse_template("t", text, DEFAULT_LIMITS)


def cve_2024_34359(marker: Path) -> str:
    """The published llama-cpp-python payload (GGUF chat template), with a harmless command."""
    return (
        '{% for x in ().__class__.__base__.__subclasses__() %}{% if "warning" in x.__name__ %}'
        "{{x()._module.__builtins__['__import__']('os').popen(\"touch " + str(marker) + '")}}'
        "{%endif%}{% endfor %}"
    )


@pytest.mark.parametrize("family", sorted(PUBLIC))
def test_public_chat_templates_are_clean(family: str) -> None:
    assert _analyse(PUBLIC[family]) == []


def test_cve_2024_34359_is_malicious_and_named(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    issues = _analyse(cve_2024_34359(marker))
    malicious = [i for i in issues if i.severity is Severity.MALICIOUS]
    assert {i.rule for i in malicious} == {"template.ssti"}
    named = {i.callable for i in malicious}
    assert "().__class__" in named
    assert any("__subclasses__" in (c or "") for c in named)
    assert any("__builtins__" in (c or "") for c in named)
    assert any("'__import__'" in (c or "") for c in named)
    assert any("touch" in (i.evidence or "") for i in malicious)
    assert not marker.exists()


def test_cve_fixture_really_runs_under_an_unsandboxed_jinja(tmp_path: Path) -> None:
    """The fixture is a real attack: plain jinja2 (what llama-cpp-python used) runs it, in a
    throwaway process; airlock's analysis of the same text runs nothing."""
    marker = tmp_path / "pwned"
    text = cve_2024_34359(marker)
    _analyse(text)
    assert not marker.exists()
    code = "import jinja2, sys\njinja2.Environment().from_string(sys.argv[1]).render()"
    subprocess.run([sys.executable, "-c", code, text], capture_output=True, timeout=60, check=False)
    assert marker.exists(), "the fixture does not actually run its payload"


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "cycler.__init__.__globals__"),
        ("{{ joiner.__init__.__globals__ }}", "joiner.__init__"),
        ("{{ lipsum.__globals__['os'] }}", "lipsum.__globals__"),
        ("{{ namespace.__init__.__globals__ }}", "namespace.__init__"),
        ("{{ range.__self__ }}", "range.__self__"),
        ("{{ ''|attr('__class__') }}", "|attr('__class__')"),
        ("{{ x|attr('a'~'b') }}", "|attr"),
        ("{{ x['__cla' ~ 'ss__'] }}", "x[<concat>]"),
        ("{{ x['__cla' + 'ss__'] }}", "x[<add>]"),
        ("{{ x['%s%s' % ('__cl', 'ass__')] }}", "x[<mod>]"),
        ("{{ x['__ssalc__'[::-1]] }}", "x["),
        ("{{ x[['__', 'class', '__']|join] }}", "x["),
        ("{{ x['__CLASS__'|lower] }}", "x["),
        ("{% set k = '__glob' ~ 'als__' %}{{ f[k] }}", "f[k]"),
        ("{{ x|map(attribute='__class__')|list }}", "map"),
        ("{{ x|selectattr('a.__class__')|list }}", "selectattr"),
        ("{{ x|map('attr', 'y')|list }}", "map"),
        ("{{ '{0.__class__}'.format(x) }}", "format"),
        ("{{ self._TemplateReference__context }}", "self"),
        ("{{ config.items() }}", "config"),
        ("{{ request.application }}", "request"),
        ("{{ os.popen('id') }}", "os"),
        ("{{ x.gi_frame.f_globals }}", "gi_frame"),
        ("{% set ns = namespace() %}{% set ns.__class__ = 1 %}", None),
        ("{{ dict(__class__=1) }}", "__class__"),
        ("{{ x.__getattribute__('y') }}", "__getattribute__"),
        ("{% with a = '__class__' %}{{ x[a] }}{% endwith %}", "'__class__'"),
        ("{% for a in ['__globals__'] %}{{ f[a] }}{% endfor %}", "'__globals__'"),
        ("{{ x['\\x5f\\x5fclass\\x5f\\x5f'] }}", "__class__"),
    ],
)
def test_ssti_constructs_are_malicious(template: str, named: str | None) -> None:
    issues = _analyse(template)
    malicious = [i for i in issues if i.rule == "template.ssti"]
    assert malicious, issues
    assert all(i.severity is Severity.MALICIOUS for i in malicious)
    if named is not None:
        assert any(named in (i.callable or "") or named in i.message for i in malicious), malicious


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ("{{ x.pop() }}", "template.method-call"),
        ("{{ messages.append(1) }}", "template.method-call"),
        ("{{ x[a ~ b] }}", "template.computed-key"),
        ("{{ x|shell }}", "template.unknown-filter"),
        ("{{ frobnicate(1) }}", "template.unknown-call"),
        ("{% include 'other.j2' %}", "template.include"),
        ("{% import 'm.j2' as m %}", "template.include"),
        ("{{ 9 ** 9 ** 9 }}", "template.resource"),
        ("{% for i in range(10000000000) %}{% endfor %}", "template.resource"),
        ("{{ x._private }}", "template.private-attribute"),
        ("{{ fmt.format(x) }}", "template.method-call"),
    ],
)
def test_suspicious_constructs(template: str, rule: str) -> None:
    issues = _analyse(template)
    assert rule in {i.rule for i in issues}, issues
    assert all(i.severity is Severity.SUSPICIOUS for i in issues if i.rule == rule)


def test_local_names_shadow_the_ssti_vocabulary() -> None:
    assert _analyse("{% for config in configs %}{{ config.name }}{% endfor %}") == []
    assert _analyse("{% macro render(self) %}{{ self }}{% endmacro %}{{ render(1) }}") == []


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{% for x in y %}", r"does not parse as Jinja: .*endfor"),
        ("{{ x ", r"does not parse as Jinja"),
        ("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", r"nested too deeply|does not parse"),
    ],
)
def test_unparseable_template_is_an_error(template: str, match: str) -> None:
    (issue,) = _analyse(template)
    assert issue.rule == "template.parse"
    assert issue.severity is Severity.ERROR
    assert re.search(match, issue.message), issue.message


def test_oversized_template_is_an_error() -> None:
    limits = DEFAULT_LIMITS.replace(max_template_bytes=100)
    (issue,) = analyse_template("t", "x" * 101, limits)
    assert issue.rule == "template.parse"
    assert "101 bytes exceeds limit max_template_bytes 100" in issue.message


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}%#()[]'\"._|~+ xyz_aeimoscl0123\n-")), max_size=120))
def test_fuzz_analysis_never_raises(text: str) -> None:
    issues = analyse_template("t", text, DEFAULT_LIMITS)
    assert all(isinstance(i, Issue) for i in issues)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(PUBLIC)), st.data())
def test_fuzz_mutated_public_templates_never_raise(family: str, data: st.DataObject) -> None:
    text = PUBLIC[family]
    pos = data.draw(st.integers(0, len(text)))
    insert = data.draw(
        st.sampled_from(["{{", "}}", "{%", "__class__", ".__globals__", "|attr('x')", "'", ""])
    )
    issues = analyse_template("t", text[:pos] + insert + text[pos:], DEFAULT_LIMITS)
    assert all(isinstance(i, Issue) for i in issues)
