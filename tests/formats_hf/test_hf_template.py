"""Template analysis: public chat templates clean, SSTI payloads malicious and named, nothing rendered."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import TemplateSyntaxError

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


# --- the allowlist of constructs --------------------------------------------------------------

DATA_ATTRIBUTE = "{% for g in [lipsum]|map(attribute=a) %}{{ g[b].popen(c).read() }}{% endfor %}"
DATA_ATTRIBUTE_NO_GLOBAL = (
    "{% for t in [messages]|map(attribute=a) %}{% for b in [t]|map(attribute=b) %}"
    "{% for s in [b]|map(attribute=c) %}{{ s }}{% endfor %}{% endfor %}{% endfor %}"
)


def test_attribute_names_from_data_run_code_in_jinja_and_are_malicious(tmp_path: Path) -> None:
    """No dunder in the template: the attribute names come from metadata the runtime passes in
    (a GGUF's token strings...). A plain jinja2 Environment, as llama-cpp-python used, runs it."""
    marker = tmp_path / "pwned"
    code = (
        "import jinja2, sys\njinja2.Environment().from_string(sys.argv[1])"
        ".render(a='__globals__', b='os', c='touch ' + sys.argv[2], messages=[])"
    )
    subprocess.run([sys.executable, "-c", code, DATA_ATTRIBUTE, str(marker)], timeout=60, check=False)
    assert marker.exists(), "the fixture does not run its payload"
    for template in (DATA_ATTRIBUTE, DATA_ATTRIBUTE_NO_GLOBAL):
        issues = _analyse(template)
        malicious = [i for i in issues if i.severity is Severity.MALICIOUS]
        assert any("comes from data" in i.message and "map" in (i.callable or "") for i in malicious), issues


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ x|map(attribute=k)|list }}", "comes from data"),
        ("{{ x|selectattr(k)|list }}", "comes from data"),
        ("{{ x|sort(attribute=k) }}", "comes from data"),
        ("{{ x|groupby(k) }}", "comes from data"),
        ("{{ x|sum(attribute=messages[0]) }}", "comes from data"),
        ("{{ x|map(f)|list }}", "chosen by data"),
        ("{{ x|select(t)|list }}", "chosen by data"),
        ("{{ x|selectattr('a', t)|list }}", "chosen by data"),
        ("{% set r = range %}{{ r(3) }}", "'range' used as an object"),
        ("{{ [lipsum]|first }}", "'lipsum' used as an object"),
        ("{{ x|map(attribute='y')|list if joiner else '' }}", "'joiner' used as an object"),
        ("{{ namespace }}", "'namespace' used as an object"),
        ("{% for f in fs %}{{ f() }}{% endfor %}", "got from data"),
        ("{{ x['a']() }}", "computed"),
        ("{{ (x|first)() }}", "computed"),
        ("{{ x.y()() }}", "computed"),
    ],
)
def test_outside_the_allowed_flow_is_malicious(template: str, words: str) -> None:
    malicious = [i for i in _analyse(template) if i.severity is Severity.MALICIOUS]
    assert any(i.rule == "template.ssti" and words in i.message for i in malicious), _analyse(template)


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ("{{ x|pprint }}", "template.unknown-filter"),
        ("{{ x|xmlattr }}", "template.unknown-filter"),
        ("{{ x|map('urlize')|list }}", "template.unknown-filter"),
        ("{% if x is callable %}{% endif %}", "template.unknown-test"),
        ("{{ x|select('callable')|list }}", "template.unknown-test"),
        ("{{ range(*args) }}", "template.construct"),
        ("{% block b %}x{% endblock %}", "template.construct"),
    ],
)
def test_outside_the_allowed_subset_is_suspicious(template: str, rule: str) -> None:
    issues = _analyse(template)
    assert {i.rule for i in issues} == {rule}, issues
    assert all(i.severity is Severity.SUSPICIOUS for i in issues)


@pytest.mark.parametrize(
    "template",
    [
        "{{ x|map(attribute='name')|join(', ') }}",
        "{{ x|selectattr('role', 'equalto', 'user')|list|length }}",
        "{{ x|rejectattr('content', 'none')|list }}",
        "{{ x|map('trim')|map('lower')|list }}",
        "{{ x|select('string')|list }}",
        "{{ range(3)|list }}{{ dict(a=1) }}{{ cycler('a', 'b').next }}",
        "{% set ns = namespace(a=1) %}{% set ns.a = 2 %}{{ ns.a }}",
        "{{ x|groupby('role') }}{{ x|groupby(0) }}{{ x|sort(attribute='a.b') }}",
        "{% for k, v in tool.items() %}{{ tool[k] }}{{ v|tojson(indent=2) }}{% endfor %}",
        "{% macro m(a) %}{{ a }}{{ caller() if caller }}{% endmacro %}{{ m(1) }}"
        "{% call m(2) %}x{% endcall %}",
        "{% filter upper %}x{% endfilter %}{% with a = 1 %}{{ a }}{% endwith %}",
        "{{ messages[loop_index - 1]['content'][:10] }}{{ -1 }}{{ 1 // 2 }}{{ a / b }}",
    ],
)
def test_the_allowed_subset_is_clean(template: str) -> None:
    assert _analyse(template) == []


def _transformers_templates() -> dict[str, str]:
    """Every chat template in the installed transformers: its *.jinja files and the string
    constants in its source that are templates (parse, and loop over messages)."""
    import ast

    import transformers

    from airlock._analysis.template import _environment

    root = Path(transformers.__file__).parent
    found = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*.jinja")}
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "{%" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "{%" in node.value:
                value = node.value
                if "message" not in value:
                    continue
                try:
                    _environment().parse(value)
                except TemplateSyntaxError:
                    continue  # a docstring fragment
                found[f"{path.relative_to(root)}:{node.lineno}"] = value
    return found


def test_every_chat_template_shipped_with_transformers_is_clean() -> None:
    templates = _transformers_templates()
    assert len(templates) >= 3, sorted(templates)  # llama4, qwen2_audio, smolvlm at least
    for name, text in templates.items():
        assert _analyse(text) == [], name


def test_join_attribute_from_data_and_recursive_loops() -> None:
    assert any(i.severity is Severity.MALICIOUS for i in _analyse("{{ x|join(',', attribute=k) }}"))
    assert _analyse("{{ x|join(',', attribute='name') }}") == []
    assert _analyse("{% for m in ms recursive %}{{ loop(m.children) }}{% endfor %}") == []
