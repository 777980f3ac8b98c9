"""Template analysis without rendering: every rule with its exact message, callable and evidence.

Table-driven: each row is a template and the complete list of issues it must produce, in order
(rule, severity, message, callable, evidence). Near misses sit next to each rule (``mrox`` next to
``mro``, ``_class_`` next to ``__class__``, ``range(100000)`` next to ``range(100001)``, a known
filter next to an unknown one), so a rule that widens or narrows, a message or callable that
drifts, or a finding that is dropped fails here. Nothing is rendered: the analyser only parses.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from airlock._analysis.template import analyse_template
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.results import Severity

MAL, SUS, ERR = Severity.MALICIOUS, Severity.SUSPICIOUS, Severity.ERROR
Row = tuple[str, Severity, str, str | None, str | None]


def issues(
    text: str, limits: Limits = DEFAULT_LIMITS, offset: int | None = None, name: str = "t"
) -> list[Row]:
    found = analyse_template(name, text, limits, offset)
    assert all(i.offset == offset for i in found)
    return [(i.rule, i.severity, i.message, i.callable, i.evidence) for i in found]


def _ssti(what: str) -> str:
    return (
        f"template t: {what}; Python internals reachable from a template run code when it is rendered "
        "(server-side template injection, expected none) (line 1)"
    )


CASES: dict[str, tuple[str, list[Row]]] = {
    'clean': (
        "{% for m in messages %}{{ m['role'] ~ ': ' ~ m.content|trim }}{% endfor %}",
        [],
    ),
    'construct': (
        '{% autoescape true %}x{% endautoescape %}',
        [
            ('template.construct', SUS, 'template t: ScopedEvalContextModifier is outside the constructs chat templates use (line 1)', None, '{% autoescape true %}x{% endautoescape %}'),
        ],
    ),
    'dunder-attr': (
        '{{ x.__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x.__class__', '{{ x.__class__ }}'),
        ],
    ),
    'internal-attr': (
        '{{ x.mro }}',
        [
            ('template.ssti', MAL, _ssti("attribute 'mro' accessed"), 'x.mro', '{{ x.mro }}'),
        ],
    ),
    'near-miss-internal-attr': (
        '{{ x.mrox }}{{ x.mr }}',
        [],
    ),
    'private-attr': (
        '{{ x._p }}',
        [
            ('template.private-attribute', SUS, "template t: private attribute '_p' reached via attribute access (expected public names only) (line 1)", 'x._p', '{{ x._p }}'),
        ],
    ),
    'dunder-item': (
        "{{ x['__class__'] }}",
        [
            ('template.ssti', MAL, _ssti("item '__class__' accessed via subscript"), "x['__class__']", "{{ x['__class__'] }}"),
            ('template.ssti', MAL, _ssti("string constant '__class__' names a Python internal"), '__class__', "{{ x['__class__'] }}"),
        ],
    ),
    'internal-item': (
        "{{ x['gi_frame'] }}",
        [
            ('template.ssti', MAL, _ssti("item 'gi_frame' accessed via subscript"), "x['gi_frame']", "{{ x['gi_frame'] }}"),
        ],
    ),
    'private-item': (
        "{{ x['_p'] }}",
        [
            ('template.private-attribute', SUS, "template t: private attribute '_p' reached via subscript (expected public names only) (line 1)", "x['_p']", "{{ x['_p'] }}"),
        ],
    ),
    'item-built': (
        "{{ x['__cla' ~ 'ss__'] }}",
        [
            ('template.ssti', MAL, _ssti("item '__class__' accessed via a subscript built from constants"), 'x[<concat>]', "{{ x['__cla' ~ 'ss__'] }}"),
            ('template.ssti', MAL, _ssti("string '__class__' assembled from pieces"), '__class__', "{{ x['__cla' ~ 'ss__'] }}"),
        ],
    ),
    'private-item-built': (
        "{{ x['_' ~ 'p'] }}",
        [
            ('template.private-attribute', SUS, "template t: private attribute '_p' reached via a subscript built from constants (expected public names only) (line 1)", 'x[<concat>]', "{{ x['_' ~ 'p'] }}"),
        ],
    ),
    'computed-key': (
        "{{ x[k ~ 'a'] }}",
        [
            ('template.computed-key', SUS, 'template t: subscript key computed at render time (<concat>) cannot be checked statically (line 1)', 'x[<concat>]', "{{ x[k ~ 'a'] }}"),
        ],
    ),
    'computed-key-filter': (
        '{{ x[k|join] }}',
        [
            ('template.computed-key', SUS, 'template t: subscript key computed at render time (k|join) cannot be checked statically (line 1)', 'x[k|join]', '{{ x[k|join] }}'),
        ],
    ),
    'plain-variable-key': (
        '{{ x[k] }}{{ x[0] }}{{ x[1:2] }}',
        [],
    ),
    'slice-of-dunder': (
        "{{ x['__class__':] }}",
        [
            ('template.ssti', MAL, _ssti("string constant '__class__' names a Python internal"), '__class__', "{{ x['__class__':] }}"),
        ],
    ),
    'nsref-private': (
        '{% set ns = namespace() %}{% set ns._x = 1 %}',
        [
            ('template.private-attribute', SUS, "template t: private attribute '_x' reached via namespace assignment ns._x (expected public names only) (line 1)", '<nsref>', '{% set ns = namespace() %}{% set ns._x = 1 %}'),
        ],
    ),
    'nsref-dunder': (
        '{% set ns = namespace() %}{% set ns.__dict__ = 1 %}',
        [
            ('template.ssti', MAL, _ssti("attribute '__dict__' reached via namespace assignment ns.__dict__"), '<nsref>', '{% set ns = namespace() %}{% set ns.__dict__ = 1 %}'),
        ],
    ),
    'ssti-name': (
        '{{ config }}',
        [
            ('template.ssti', MAL, _ssti("name 'config' referenced"), 'config', '{{ config }}'),
        ],
    ),
    'ssti-name-shadowed': (
        '{% for config in x %}{{ config }}{% endfor %}',
        [],
    ),
    'object-global': (
        '{{ range }}',
        [
            ('template.ssti', MAL, _ssti("Jinja global 'range' used as an object (only calling it is allowed)"), 'range', '{{ range }}'),
        ],
    ),
    'object-global-shadowed': (
        '{% set range = 1 %}{{ range }}',
        [],
    ),
    'object-global-called': (
        '{{ range(3) }}{{ namespace() }}{{ dict(a=1) }}',
        [],
    ),
    'object-global-passed': (
        '{{ x|map(range) }}',
        [
            ('template.ssti', MAL, _ssti("filter applied by filter 'map' is chosen by data (range)"), 'x|map(range)', '{{ x|map(range) }}'),
            ('template.ssti', MAL, _ssti("Jinja global 'range' used as an object (only calling it is allowed)"), 'range', '{{ x|map(range) }}'),
        ],
    ),
    'unknown-filter': (
        '{{ x|foo }}',
        [
            ('template.unknown-filter', SUS, "template t: filter 'foo' is outside the filters chat templates use (line 1)", None, '{{ x|foo }}'),
        ],
    ),
    'unknown-test': (
        '{% if x is foo %}{% endif %}',
        [
            ('template.unknown-test', SUS, "template t: test 'foo' is outside the tests chat templates use (line 1)", None, '{% if x is foo %}{% endif %}'),
        ],
    ),
    'known-filter-and-test': (
        '{{ x|tojson }}{% if x is defined %}{% endif %}',
        [],
    ),
    'attr-filter-const': (
        "{{ x|attr('a') }}",
        [
            ('template.ssti', MAL, _ssti("'|attr('a')' filter (bypasses attribute checks)"), "x|attr('a')", "{{ x|attr('a') }}"),
        ],
    ),
    'attr-filter-computed': (
        '{{ x|attr(y) }}',
        [
            ('template.ssti', MAL, _ssti("'|attr(a computed name)' filter (bypasses attribute checks)"), 'x|attr(y)', '{{ x|attr(y) }}'),
        ],
    ),
    'attr-filter-no-args': (
        '{{ x|attr }}',
        [
            ('template.ssti', MAL, _ssti("'|attr(a computed name)' filter (bypasses attribute checks)"), 'x|attr', '{{ x|attr }}'),
        ],
    ),
    'map-attribute-dunder': (
        "{{ x|map(attribute='__class__') }}",
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' reached via the attribute argument of filter 'map'"), 'x|map', "{{ x|map(attribute='__class__') }}"),
            ('template.ssti', MAL, _ssti("string constant '__class__' names a Python internal"), '__class__', "{{ x|map(attribute='__class__') }}"),
        ],
    ),
    'map-attribute-data': (
        '{{ x|map(attribute=k) }}',
        [
            ('template.ssti', MAL, _ssti("attribute name of filter 'map' comes from data (k), so the template can reach any attribute"), 'x|map', '{{ x|map(attribute=k) }}'),
        ],
    ),
    'selectattr-private': (
        "{{ x|selectattr('_p') }}",
        [
            ('template.private-attribute', SUS, "template t: private attribute '_p' reached via the attribute argument of filter 'selectattr' (expected public names only) (line 1)", "x|selectattr('_p')", "{{ x|selectattr('_p') }}"),
        ],
    ),
    'selectattr-dotted': (
        "{{ x|selectattr('a.__class__') }}",
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' reached via the attribute argument of filter 'selectattr'"), "x|selectattr('a.__class__')", "{{ x|selectattr('a.__class__') }}"),
            ('template.ssti', MAL, _ssti("string constant 'a.__class__' names a Python internal"), 'a.__class__', "{{ x|selectattr('a.__class__') }}"),
        ],
    ),
    'groupby-index': (
        '{{ x|groupby(0) }}',
        [],
    ),
    'groupby-bool': (
        '{{ x|groupby(true) }}',
        [
            ('template.ssti', MAL, _ssti("attribute name of filter 'groupby' comes from data (True), so the template can reach any attribute"), 'x|groupby(True)', '{{ x|groupby(true) }}'),
        ],
    ),
    'sort-built': (
        "{{ x|sort(attribute='a' ~ '_b') }}",
        [],
    ),
    'sort-private-built': (
        "{{ x|sort(attribute='_' ~ 'b') }}",
        [
            ('template.private-attribute', SUS, "template t: private attribute '_b' reached via the attribute argument of filter 'sort' (built from constants) (expected public names only) (line 1)", 'x|sort', "{{ x|sort(attribute='_' ~ 'b') }}"),
        ],
    ),
    'sum-positional-not-attribute': (
        '{{ x|sum(k) }}',
        [],
    ),
    'map-filter-ok': (
        "{{ x|map('lower') }}",
        [],
    ),
    'map-attr-through': (
        "{{ x|map('attr', '__class__') }}",
        [
            ('template.ssti', MAL, _ssti("'attr' filter applied through filter 'map'"), "x|map('attr', '__class__')", "{{ x|map('attr', '__class__') }}"),
            ('template.ssti', MAL, _ssti("string constant '__class__' names a Python internal"), '__class__', "{{ x|map('attr', '__class__') }}"),
        ],
    ),
    'map-unknown-filter': (
        "{{ x|map('foo') }}",
        [
            ('template.unknown-filter', SUS, "template t: filter 'foo' applied by filter 'map' is outside the filters chat templates use (line 1)", None, "{{ x|map('foo') }}"),
        ],
    ),
    'map-filter-data': (
        '{{ x|map(f) }}',
        [
            ('template.ssti', MAL, _ssti("filter applied by filter 'map' is chosen by data (f)"), 'x|map(f)', '{{ x|map(f) }}'),
        ],
    ),
    # map applies its positional filter even when attribute= is given (jinja's prepare_map)
    'map-attribute-with-positional': (
        "{{ x|map('foo', attribute='a') }}",
        [
            ('template.unknown-filter', SUS, "template t: filter 'foo' applied by filter 'map' is outside the filters chat templates use (line 1)", None, "{{ x|map('foo', attribute='a') }}"),
        ],
    ),
    'map-data-filter-with-attribute': (
        "{{ x|map(f, attribute='a') }}",
        [
            ('template.ssti', MAL, _ssti("filter applied by filter 'map' is chosen by data (f)"), 'x|map(f)', "{{ x|map(f, attribute='a') }}"),
        ],
    ),
    # keys computed at render time from a constant that holds an internal's name (were CLEAN)
    'slice-bound-from-data': (
        "{{ ''['zz__class__'[(range(2)|length):]] }}",
        [
            ('template.computed-key', SUS, "template t: subscript key computed at render time ('zz__class__'[...]) cannot be checked statically (line 1)", "''['zz__class__'[...]]", "{{ ''['zz__class__'[(range(2)|length):]] }}"),
        ],
    ),
    'split-of-an-internal-name': (
        "{{ ''['zz__class__'.split('zz')[1]] }}",
        [
            ('template.computed-key', SUS, "template t: subscript key computed at render time ('zz__class__'.split()[1]) cannot be checked statically (line 1)", "''['zz__class__'.split()[1]]", "{{ ''['zz__class__'.split('zz')[1]] }}"),
        ],
    ),
    'set-constant-sliced-by-data': (
        "{% set s = 'zz__class__' %}{{ x[s[n:]] }}",
        [
            ('template.computed-key', SUS, 'template t: subscript key computed at render time (s[...]) cannot be checked statically (line 1)', 'x[s[...]]', "{% set s = 'zz__class__' %}{{ x[s[n:]] }}"),
        ],
    ),
    'internal-word-sliced-by-data': (
        "{{ x['zzgi_frame'[n:]] }}",
        [
            ('template.computed-key', SUS, "template t: subscript key computed at render time ('zzgi_frame'[...]) cannot be checked statically (line 1)", "x['zzgi_frame'[...]]", "{{ x['zzgi_frame'[n:]] }}"),
        ],
    ),
    'nested-item-lookup': ("{{ roles[message['role']] }}{{ x[y[1:n]] }}{{ x['role'[n:]] }}", []),
    'negative-step-folded': (
        "{{ x['__ssalc__'[::-1]] }}",
        [
            ('template.ssti', MAL, _ssti("item '__class__' accessed via a subscript built from constants"), "x['__ssalc__'[...]]", "{{ x['__ssalc__'[::-1]] }}"),
            ('template.ssti', MAL, _ssti("string constant '__ssalc__' names a Python internal"), '__ssalc__', "{{ x['__ssalc__'[::-1]] }}"),
        ],
    ),
    'negative-start-folded': (
        "{{ x['zz__class__'[-9:]] }}{{ x['abc'[-2:]] }}",
        [
            ('template.ssti', MAL, _ssti("item '__class__' accessed via a subscript built from constants"), "x['zz__class__'[...]]", "{{ x['zz__class__'[-9:]] }}{{ x['abc'[-2:]] }}"),
        ],
    ),
    'select-unknown-test': (
        "{{ x|select('foo') }}",
        [
            ('template.unknown-test', SUS, "template t: test 'foo' applied by filter 'select' is outside the tests chat templates use (line 1)", None, "{{ x|select('foo') }}"),
        ],
    ),
    'select-ok': (
        "{{ x|select('defined') }}{{ x|select }}",
        [],
    ),
    'reject-data': (
        '{{ x|reject(t) }}',
        [
            ('template.ssti', MAL, _ssti("test applied by filter 'reject' is chosen by data (t)"), 'x|reject(t)', '{{ x|reject(t) }}'),
        ],
    ),
    'selectattr-unknown-test': (
        "{{ x|selectattr('a', 'foo') }}",
        [
            ('template.unknown-test', SUS, "template t: test 'foo' applied by filter 'selectattr' is outside the tests chat templates use (line 1)", None, "{{ x|selectattr('a', 'foo') }}"),
        ],
    ),
    'rejectattr-data-test': (
        "{{ x|rejectattr('a', t) }}",
        [
            ('template.ssti', MAL, _ssti("test applied by filter 'rejectattr' is chosen by data (t)"), "x|rejectattr('a', t)", "{{ x|rejectattr('a', t) }}"),
        ],
    ),
    'selectattr-one-arg': (
        "{{ x|selectattr('a') }}",
        [],
    ),
    'keyword-internal': (
        '{{ x.get(mro=1) }}{{ range(__x__=1) }}',
        [
            ('template.ssti', MAL, _ssti("keyword argument 'mro'"), 'mro', '{{ x.get(mro=1) }}{{ range(__x__=1) }}'),
            ('template.ssti', MAL, _ssti("keyword argument '__x__'"), '__x__', '{{ x.get(mro=1) }}{{ range(__x__=1) }}'),
        ],
    ),
    'pow': (
        '{{ 2 ** 3 }}',
        [
            ('template.resource', SUS, "template t: exponentiation '**' (resource exhaustion) (line 1)", None, '{{ 2 ** 3 }}'),
        ],
    ),
    'include': (
        "{% include 'a' %}",
        [
            ('template.include', SUS, 'template t: include of another template (chat templates are self-contained) (line 1)', None, "{% include 'a' %}"),
        ],
    ),
    'import': (
        "{% import 'a' as b %}",
        [
            ('template.include', SUS, 'template t: import of another template (chat templates are self-contained) (line 1)', None, "{% import 'a' as b %}"),
        ],
    ),
    'from-import': (
        "{% from 'a' import b %}",
        [
            ('template.include', SUS, 'template t: fromimport of another template (chat templates are self-contained) (line 1)', None, "{% from 'a' import b %}"),
        ],
    ),
    'extends': (
        "{% extends 'a' %}",
        [
            ('template.include', SUS, 'template t: extends of another template (chat templates are self-contained) (line 1)', None, "{% extends 'a' %}"),
        ],
    ),
    'const-dunder': (
        "{{ '__class__' }}",
        [
            ('template.ssti', MAL, _ssti("string constant '__class__' names a Python internal"), '__class__', "{{ '__class__' }}"),
        ],
    ),
    'const-dotted-dunder': (
        "{{ 'a.__init__.b' }}",
        [
            ('template.ssti', MAL, _ssti("string constant 'a.__init__.b' names a Python internal"), 'a.__init__.b', "{{ 'a.__init__.b' }}"),
        ],
    ),
    'const-not-dunder': (
        "{{ '_class_' }}{{ '__' }}{{ 'a__b__c' }}",
        [],
    ),
    'assembled-concat': (
        "{{ 'x' ~ '__cla' ~ 'ss__y' }}",
        [
            ('template.ssti', MAL, _ssti("string 'x__class__y' assembled from pieces"), 'x__class__y', "{{ 'x' ~ '__cla' ~ 'ss__y' }}"),
        ],
    ),
    'assembled-add': (
        "{{ '__cla' + 'ss__' }}",
        [
            ('template.ssti', MAL, _ssti("string '__class__' assembled from pieces"), '__class__', "{{ '__cla' + 'ss__' }}"),
        ],
    ),
    'assembled-mod': (
        "{{ '__%s__' % 'class' }}",
        [
            ('template.ssti', MAL, _ssti("string '__class__' assembled from pieces"), '__class__', "{{ '__%s__' % 'class' }}"),
        ],
    ),
    'assembled-mul': (
        "{{ '_' * 2 ~ 'init' ~ '_' * 2 }}",
        [
            ('template.ssti', MAL, _ssti("string '__init__' assembled from pieces"), '__init__', "{{ '_' * 2 ~ 'init' ~ '_' * 2 }}"),
        ],
    ),
    'assembled-mul-alone': (
        "{{ '__a__' * 1 }}",
        [
            ('template.ssti', MAL, _ssti("string '__a__' assembled from pieces"), '__a__', "{{ '__a__' * 1 }}"),
            ('template.ssti', MAL, _ssti("string constant '__a__' names a Python internal"), '__a__', "{{ '__a__' * 1 }}"),
        ],
    ),
    'dyn-args': (
        '{{ foo(*a) }}{{ range(**k) }}',
        [
            ('template.construct', SUS, 'template t: call with *args or **kwargs (arguments cannot be checked statically) (line 1)', 'foo', '{{ foo(*a) }}{{ range(**k) }}'),
            ('template.unknown-call', SUS, "template t: call of 'foo', which is neither a Jinja global nor a macro of the template (line 1)", 'foo', '{{ foo(*a) }}{{ range(**k) }}'),
        ],
    ),
    'format-dunder': (
        "{{ '{0.__class__}'.format(x) }}",
        [
            ('template.ssti', MAL, _ssti("format field {0.__class__} reaches '__class__'"), "'{0.__class__}'.format()", "{{ '{0.__class__}'.format(x) }}"),
        ],
    ),
    'format-private': (
        "{{ '{0._p!r:>3}'.format(x) }}",
        [
            ('template.ssti', MAL, _ssti("format field {0._p!r:>3} reaches '_p'"), "'{0._p!r:>3}'.format()", "{{ '{0._p!r:>3}'.format(x) }}"),
        ],
    ),
    'format-item': (
        "{{ '{0[__globals__]}'.format(x) }}",
        [
            ('template.ssti', MAL, _ssti("format field {0[__globals__]} reaches '__globals__'"), "'{0[__globals__]}'.format()", "{{ '{0[__globals__]}'.format(x) }}"),
        ],
    ),
    'format-ok': (
        "{{ '{}-{a}'.format(1, a=2) }}",
        [],
    ),
    'format-not-constant': (
        '{{ x.format(y) }}',
        [
            ('template.method-call', SUS, 'template t: str.format on a format string that is not a constant (fields can reach attributes) (line 1)', 'x.format', '{{ x.format(y) }}'),
            # nor its widths bounded (a width may come from an argument)
            ('template.resource', SUS, 'template t: a format width makes the characters of one rendering unbounded (resource exhaustion) (line 1)', None, '{{ x.format(y) }}'),
        ],
    ),
    'format-two-bad-fields': (
        "{{ '{0.__class__}{0._x}'.format(x) }}",
        [
            ('template.ssti', MAL, _ssti("format field {0.__class__} reaches '__class__'"), "'{0.__class__}{0._x}'.format()", "{{ '{0.__class__}{0._x}'.format(x) }}"),
        ],
    ),
    'method-unknown': (
        '{{ x.pop() }}',
        [
            ('template.method-call', SUS, "template t: call of method 'pop' (not among the string/list/dict methods chat templates use) (line 1)", 'x.pop', '{{ x.pop() }}'),
        ],
    ),
    'method-internal': (
        '{{ x.__init__() }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__init__' accessed"), 'x.__init__', '{{ x.__init__() }}'),
        ],
    ),
    'method-safe': (
        '{{ x.strip() }}{{ x.items() }}',
        [],
    ),
    'range-limit': (
        '{{ range(10000000) }}{% for i in range(100000) %}{% endfor %}',
        [],
    ),
    'range-over-limit': (
        '{% for i in range(0, 100001) %}{% endfor %}',
        [
            ('template.resource', SUS, "template t: a loop brings one rendering to 100,001 loop iterations, macro calls and list items, D being the size of the caller's data (limit 100,000 per unit of D) (resource exhaustion) (line 1)", None, '{% for i in range(0, 100001) %}{% endfor %}'),
        ],
    ),
    'range-bool': (
        '{{ range(true) }}',
        [],
    ),
    'macro-call': (
        '{% macro m() %}{% endmacro %}{{ m() }}',
        [],
    ),
    'ssti-call': (
        '{{ config() }}',
        [
            ('template.ssti', MAL, _ssti("name 'config' referenced"), 'config', '{{ config() }}'),
        ],
    ),
    'local-call': (
        '{% for f in x %}{{ f() }}{% endfor %}',
        [
            ('template.ssti', MAL, _ssti("call of 'f', a value the template got from data (only Jinja's globals and the template's macros may be called)"), 'f', '{% for f in x %}{{ f() }}{% endfor %}'),
        ],
    ),
    'unknown-call': (
        '{{ foo() }}',
        [
            ('template.unknown-call', SUS, "template t: call of 'foo', which is neither a Jinja global nor a macro of the template (line 1)", 'foo', '{{ foo() }}'),
        ],
    ),
    'known-call': (
        "{{ raise_exception('x') }}{{ strftime_now('%Y') }}",
        [],
    ),
    'computed-call': (
        '{{ x.y()() }}',
        [
            ('template.ssti', MAL, _ssti("call of a value the template computed (x.y()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x.y()', '{{ x.y()() }}'),
            ('template.method-call', SUS, "template t: call of method 'y' (not among the string/list/dict methods chat templates use) (line 1)", 'x.y', '{{ x.y()() }}'),
        ],
    ),
    'computed-call-filter': (
        '{{ (x|first)() }}',
        [
            ('template.ssti', MAL, _ssti("call of a value the template computed (x|first); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x|first', '{{ (x|first)() }}'),
        ],
    ),
    'dunder-string-arg': (
        "{{ x.get('__class__') }}",
        [
            ('template.ssti', MAL, _ssti("string '__class__' passed to a call"), 'x.get()', "{{ x.get('__class__') }}"),
            ('template.ssti', MAL, _ssti("string constant '__class__' names a Python internal"), '__class__', "{{ x.get('__class__') }}"),
        ],
    ),
    'internal-string-arg': (
        "{{ x.get('f_' ~ 'globals') }}",
        [
            ('template.ssti', MAL, _ssti("string 'f_globals' passed to a call"), 'x.get()', "{{ x.get('f_' ~ 'globals') }}"),
        ],
    ),
    'expr-tuple': (
        '{{ (a, b, c, d).__class__ }}{{ ().__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '(a, b, c).__class__', '{{ (a, b, c, d).__class__ }}{{ ().__class__ }}'),
        ],
    ),
    'expr-list': (
        '{{ [a].__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '(a).__class__', '{{ [a].__class__ }}'),
        ],
    ),
    'expr-slice': (
        '{{ x[1:2].__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x[...].__class__', '{{ x[1:2].__class__ }}'),
        ],
    ),
    'expr-item': (
        "{{ x['k'].__class__ }}",
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), "x['k'].__class__", "{{ x['k'].__class__ }}"),
        ],
    ),
    'expr-call': (
        '{{ x().__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x().__class__', '{{ x().__class__ }}'),
            ('template.unknown-call', SUS, "template t: call of 'x', which is neither a Jinja global nor a macro of the template (line 1)", 'x', '{{ x().__class__ }}'),
        ],
    ),
    'expr-filter': (
        '{{ (x|f(1, 2)).__class__ }}{{ (x|g).__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x|f(1, 2).__class__', '{{ (x|f(1, 2)).__class__ }}{{ (x|g).__class__ }}'),
            ('template.unknown-filter', SUS, "template t: filter 'f' is outside the filters chat templates use (line 1)", None, '{{ (x|f(1, 2)).__class__ }}{{ (x|g).__class__ }}'),
            ('template.unknown-filter', SUS, "template t: filter 'g' is outside the filters chat templates use (line 1)", None, '{{ (x|f(1, 2)).__class__ }}{{ (x|g).__class__ }}'),
        ],
    ),
    'expr-other': (
        '{{ (1 + 2).__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '<add>.__class__', '{{ (1 + 2).__class__ }}'),
        ],
    ),
    'expr-const': (
        "{{ 'abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz'.__class__ }}",
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), "'abcdefghijklmnopqrstuvwxyzabcdefghijklm.__class__", "{{ 'abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz'.__class__ }}"),
        ],
    ),
    'expr-deep': (
        '{{ a.b.c.d.e.f.g.h.i.j.k.l.m.n.__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '....c.d.e.f.g.h.i.j.k.l.m.n.__class__', '{{ a.b.c.d.e.f.g.h.i.j.k.l.m.n.__class__ }}'),
        ],
    ),
    'expr-deep-12': (
        '{{ a.b.c.d.e.f.g.h.i.j.k.l.__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'a.b.c.d.e.f.g.h.i.j.k.l.__class__', '{{ a.b.c.d.e.f.g.h.i.j.k.l.__class__ }}'),
        ],
    ),
    'expr-deep-13': (
        '{{ a.b.c.d.e.f.g.h.i.j.k.l.m.__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '....b.c.d.e.f.g.h.i.j.k.l.m.__class__', '{{ a.b.c.d.e.f.g.h.i.j.k.l.m.__class__ }}'),
        ],
    ),
    'dedupe': (
        '{{ x.__class__ }}{{ x.__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x.__class__', '{{ x.__class__ }}{{ x.__class__ }}'),
        ],
    ),
    'two-lines': (
        'line one\n  {{ x.__class__ }}  \n',
        [
            ('template.ssti', MAL, "template t: attribute '__class__' accessed; Python internals reachable from a template run code when it is rendered (server-side template injection, expected none) (line 2)", 'x.__class__', '{{ x.__class__ }}'),
        ],
    ),
    'generation-tag': (
        '{% generation %}{{ x }}{% endgeneration %}',
        [],
    ),
    'loop-controls': (
        '{% for x in y %}{% break %}{% continue %}{% endfor %}',
        [],
    ),
    'set-const-folded': (
        "{% set k = '__cla' ~ 'ss__' %}{{ x[k] }}",
        [
            ('template.ssti', MAL, _ssti("string '__class__' assembled from pieces"), '__class__', "{% set k = '__cla' ~ 'ss__' %}{{ x[k] }}"),
            ('template.ssti', MAL, _ssti("item '__class__' accessed via a subscript built from constants"), 'x[k]', "{% set k = '__cla' ~ 'ss__' %}{{ x[k] }}"),
        ],
    ),
    'set-nonconst': (
        '{% set k = y %}{{ x[k] }}',
        [],
    ),
    'set-tuple-target': (
        "{% set a, b = '__class__', 1 %}{{ x[a] }}",
        [
            ('template.ssti', MAL, _ssti("string constant '__class__' names a Python internal"), '__class__', "{% set a, b = '__class__', 1 %}{{ x[a] }}"),
            # outside review 22: the key is followed through the name's binding to that constant
            ('template.computed-key', SUS, 'template t: subscript key computed at render time (a) cannot be checked statically (line 1)', 'x[a]', "{% set a, b = '__class__', 1 %}{{ x[a] }}"),
        ],
    ),
    'macro-param-shadow': (
        '{% macro m(config) %}{{ config }}{% endmacro %}',
        [],
    ),
    'with': (
        '{% with a = 1 %}{{ a }}{% endwith %}',
        [],
    ),
    'call-block': (
        '{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}x{% endcall %}',
        [],
    ),
    'filter-block': (
        '{% filter upper %}x{% endfilter %}',
        [],
    ),
    'filter-block-unknown': (
        '{% filter foo %}x{% endfilter %}',
        [
            ('template.unknown-filter', SUS, "template t: filter 'foo' is outside the filters chat templates use (line 1)", None, '{% filter foo %}x{% endfilter %}'),
        ],
    ),
    'loop-cycle': (
        "{% for x in y %}{{ loop.cycle('a', 'b') }}{% endfor %}",
        [],
    ),
    'empty-tuple': (
        '{{ ().__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '().__class__', '{{ ().__class__ }}'),
        ],
    ),
    'expr-deep-items': (
        '{{ x[a][a][a][a][a][a][a][a][a][a][a][a][a][a].__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '...[...][a][a][a][a][a][a][a][a][a][a][a].__class__', '{{ x[a][a][a][a][a][a][a][a][a][a][a][a][a][a].__class__ }}'),
        ],
    ),
    'expr-deep-item-key': (
        '{{ x[a.b.c.d.e.f.g.h.i.j.k.l.m.n].__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x[....d.e.f.g.h.i.j.k.l.m.n].__class__', '{{ x[a.b.c.d.e.f.g.h.i.j.k.l.m.n].__class__ }}'),
        ],
    ),
    'expr-deep-calls': (
        '{{ x()()()()()()()()()()()()()().__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '...()()()()()()()()()()()().__class__', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (...()()()()()()()()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), '...()()()()()()()()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()()()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()()()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.ssti', MAL, _ssti("call of a value the template computed (x()); only Jinja's globals, the template's macros and string/list/dict methods may be called"), 'x()', '{{ x()()()()()()()()()()()()()().__class__ }}'),
            ('template.unknown-call', SUS, "template t: call of 'x', which is neither a Jinja global nor a macro of the template (line 1)", 'x', '{{ x()()()()()()()()()()()()()().__class__ }}'),
        ],
    ),
    'expr-deep-filters': (
        '{{ (x|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim).__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '...|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim.__class__', '{{ (x|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim|trim).__class__ }}'),
        ],
    ),
    'expr-deep-filters-with-args': (
        '{{ (x|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)).__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '...|default(...)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1).__class__', '{{ (x|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)|default(1)).__class__ }}'),
        ],
    ),
    'expr-deep-filter-arg': (
        '{{ (x|default(a.b.c.d.e.f.g.h.i.j.k.l.m.n)).__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x|default(....d.e.f.g.h.i.j.k.l.m.n).__class__', '{{ (x|default(a.b.c.d.e.f.g.h.i.j.k.l.m.n)).__class__ }}'),
        ],
    ),
    'expr-deep-tuples': (
        '{{ ((((((((((((((a,),),),),),),),),),),),),),).__class__ }}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), '((((((((((((...)))))))))))).__class__', '{{ ((((((((((((((a,),),),),),),),),),),),),),).__class__ }}'),
        ],
    ),
    'generation-tag-body-is-analysed': (
        '{% generation %}{{ x.__class__ }}{% endgeneration %}',
        [
            ('template.ssti', MAL, _ssti("attribute '__class__' accessed"), 'x.__class__', '{% generation %}{{ x.__class__ }}{% endgeneration %}'),
        ],
    ),
    'long-dunder-constant': (
        "{{ '__aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa__' }}",
        [
            ('template.ssti', MAL, _ssti("string constant '__aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' names a Python internal"), '__aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', "{{ '__aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa__' }}"),
        ],
    ),
    'unlisted-filter-attribute-keyword': (
        "{{ x|default(attribute='_p') }}{{ x|default('a', '_p') }}",
        [],
    ),
    'selectattr-without-arguments': (
        '{{ x|selectattr }}{{ x|rejectattr }}',
        [],
    ),
    'map-filter-that-is-not-a-test': (
        "{{ x|map('trim') }}{{ x|select('none') }}",
        [],
    ),
    'format-spec-is-not-a-path': (
        "{{ '{0:.2f}'.format(x) }}{{ '{0:.__x}'.format(x) }}",
        [],
    ),
    "long-assembled-string": (
        "{{ '__' ~ 'a' * 70 ~ '__' }}",
        [
            ("template.ssti", MAL, _ssti("string '__" + "a" * 58 + "' assembled from pieces"), "__" + "a" * 58, "{{ '__' ~ 'a' * 70 ~ '__' }}"),
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_template(name: str) -> None:
    text, expected = CASES[name]
    assert issues(text) == expected


@pytest.mark.parametrize(("limit", "fails"), [(11, True), (12, False), (13, False)])
def test_size_limit_counts_utf8_bytes(limit: int, fails: bool) -> None:
    text = "{{ 'éé' }}"  # 10 characters, 12 bytes
    limits = dataclasses.replace(DEFAULT_LIMITS, max_template_bytes=limit)
    expected = [
        ("template.parse", ERR, f"template n: 12 bytes exceeds limit max_template_bytes {limit}", None, None)
    ]
    assert issues(text, limits, offset=7, name="n") == (expected if fails else [])


def test_a_lone_surrogate_is_counted_not_a_crash() -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, max_template_bytes=11)
    # 3 bytes each (surrogatepass), not an encoding error
    assert issues("{{ '\udce9\udce9' }}", limits, name="n") == [
        ("template.parse", ERR, "template n: 14 bytes exceeds limit max_template_bytes 11", None, None)
    ]


def test_parse_errors() -> None:
    assert issues("x\n{{ x.", offset=3, name="n") == [
        (
            "template.parse",
            ERR,
            "template n: does not parse as Jinja: expected name or number (line 2)",
            None,
            None,
        )
    ]
    assert issues("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", offset=5) == [
        ("template.parse", ERR, "template t: nested too deeply to parse", None, None)
    ]


def test_an_expression_too_deep_to_walk_is_an_error() -> None:
    assert issues("{{ x" + ".a" * 1000 + " }}", offset=5) == [
        ("template.parse", ERR, "template t: expression nested too deeply to analyse", None, None)
    ]


def test_escapes_that_python_warns_about_still_parse() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert issues("{{ '\\_' }}") == []


def test_evidence_is_the_stripped_line_cut_at_200_characters() -> None:
    text = "   " + "{{ x.__class__ }}" + "y" * 300
    (found,) = issues(text)
    assert found[4] == ("{{ x.__class__ }}" + "y" * 300)[:200]
    (found,) = issues("a\nb\n{{ x.__class__ }}")
    assert found[2].endswith("(line 3)")
    assert found[4] == "{{ x.__class__ }}"


# Each bypass above, rendered by real jinja2 in a throwaway subprocess: the key reaches a Python
# internal (``str.__class__``), and ``map`` passes ``attribute=`` to its positional filter.
_RENDER = """
import sys, jinja2
print(jinja2.Environment().from_string(sys.argv[1]).render(x={}, n=2))
"""


@pytest.mark.parametrize(
    ("text", "output"),
    [
        ("{{ ''['zz__class__'[(range(2)|length):]] }}", "<class 'str'>"),
        ("{{ ''['zz__class__'.split('zz')[1]] }}", "<class 'str'>"),
        ("{% set s = 'zz__class__' %}{{ ''[s[n:]] }}", "<class 'str'>"),
        ("{{ [[{'a': 1}]]|map('sum', attribute='a')|list }}", "[1]"),
    ],
)
def test_the_bypasses_are_real(text: str, output: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _RENDER, text],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == output
    assert issues(text) != [] or "sum" in text


# Outside review 22: the constant folder dropped arguments it did not model and returned a wrong
# value, which the walker trusted as the key: ``'x__init__x'|trim('x')`` folded to 'x__init__x'
# (trim without its ``chars``), so CVE-2024-34359's chain with its keys spelled that way was only
# SUSPICIOUS (the two method calls), never template.ssti. The same with ``.strip('x')``, a join
# separator given by keyword, a format argument the folder could not fold ('None').
_RCE = "{{ cycler(1)[%s][%s]['os'].popen('touch marker').read() }}"
_PLAIN = """
import sys, jinja2
jinja2.Environment().from_string(sys.argv[1]).render()
"""


@pytest.mark.parametrize(
    ("init", "globals_"),
    [
        ("'x__init__x'|trim('x')", "'x__globals__x'|trim('x')"),
        ("'x__init__x'|trim(chars='x')", "'x__globals__x'|trim(chars='x')"),
        ("'x__init__x'.strip('x')", "'y__globals__'.lstrip('y')"),
        ("['_', 'init', '_']|join(d='_')", "['_', 'globals', '_']|join(d='_')"),
    ],
)
def test_keys_folded_with_every_argument_reach_the_ssti_rule(
    init: str, globals_: str, tmp_path: Path
) -> None:
    text = _RCE % (init, globals_)
    # real: plain jinja2 (as llama-cpp-python rendered chat templates) runs the command
    subprocess.run(
        [sys.executable, "-c", _PLAIN, text], cwd=tmp_path, timeout=60, check=True, capture_output=True
    )
    assert (tmp_path / "marker").exists()
    found = [row for row in issues(text) if row[0] == "template.ssti"]
    assert found, issues(text)
    assert {row[1] for row in found} == {MAL}
    assert found[-1][2] == _ssti("item '__init__' accessed via a subscript built from constants")
    assert found[-1][3] == f"cycler()[{_expr_of(init)}]"


def _expr_of(key: str) -> str:
    """How the walker's ``_expr`` shows a key expression (its first 40 characters for constants)."""
    from airlock._analysis.template import _environment, _expr

    output = _environment().parse("{{ " + key + " }}").body[0]
    return _expr(output.nodes[0])  # type: ignore[attr-defined]


def test_a_format_argument_the_folder_cannot_fold_leaves_the_key_unknown() -> None:
    """``'_%s_'|format(<not folded>)`` folded to '_None_' (a private attribute, a wrong value);
    the key is computed at render time now, and reported as such."""
    init, globals_ = "'_%s_'|format('_init_'|center(6))", "'_%s_'|format('_globals_'|center(9))"
    found = issues(_RCE % (init, globals_))
    assert [(row[0], row[1], row[3]) for row in found if row[0] != "template.method-call"] == [
        ("template.computed-key", SUS, f"cycler()[{_expr_of(init)}][{_expr_of(globals_)}]"),
        ("template.computed-key", SUS, f"cycler()[{_expr_of(init)}]"),
    ]


# Outside review 22: a key the folder could not resolve was judged by its own expression only,
# so a name bound to a string the template builds elsewhere passed as data: with plain jinja2
# (llama-cpp-python's renderer, CVE-2024-34359) each template below reaches jinja2.utils' ``os``
# through ``cycler.__init__.__globals__`` and renames a file with ``os.replace`` — a method name
# chat templates use (``str.replace``) — and scanned CLEAN. Keys are now followed through the
# template's own bindings (set, set blocks, namespace attributes, with, loop targets, macro
# parameters, defaults and arguments, caller() arguments, a macro's output).
_TAIL_OS = "{{ cycler(1)[%s][%s]['os'].replace('victim', 'moved') }}"
_BOUND_KEYS = {
    "set-block": "{% set k %}__init__{% endset %}{% set g %}__globals__{% endset %}" + _TAIL_OS % ("k", "g"),
    "set-block-filtered": "{% set k | lower %}__INIT__{% endset %}{% set g | lower %}__GLOBALS__{% endset %}"
    + _TAIL_OS % ("k", "g"),
    "set-block-pieces": "{% set k %}{{ '_' }}_init__{% endset %}{% set g %}{{ '_' }}_globals__{% endset %}"
    + _TAIL_OS % ("k", "g"),
    "namespace-set-block": "{% set ns = namespace() %}{% set ns.k %}__init__{% endset %}"
    "{% set ns.g %}__globals__{% endset %}" + _TAIL_OS % ("ns.k", "ns.g"),
    "macro-output": "{% macro k() %}__init__{% endmacro %}{% macro g() %}__globals__{% endmacro %}"
    + _TAIL_OS % ("k()", "g()"),
    "with": "{% with k = 'xinitx'|replace('x', '__'), g = 'xglobalsx'|replace('x', '__') %}"
    + _TAIL_OS % ("k", "g")
    + "{% endwith %}",
    "loop-over-map": "{% for k in ['xinitx']|map('replace', 'x', '__') %}"
    "{% for g in ['xglobalsx']|map('replace', 'x', '__') %}"
    + _TAIL_OS % ("k", "g")
    + "{% endfor %}{% endfor %}",
    "dict-value": "{% set d = {'k': 'xinitx'|replace('x', '__'), 'g': 'xglobalsx'|replace('x', '__')} %}"
    + _TAIL_OS % ("d.k", "d.g"),
    "macro-default": "{% macro f(k='xinitx'|replace('x', '__'), g='xglobalsx'|replace('x', '__')) %}"
    + _TAIL_OS % ("k", "g")
    + "{% endmacro %}{{ f() }}",
    "macro-keyword": "{% macro f(k, g) %}" + _TAIL_OS % ("k", "g") + "{% endmacro %}"
    "{{ f(g='xglobalsx'|replace('x', '__'), k='xinitx'|replace('x', '__')) }}",
}


@pytest.mark.parametrize("name", sorted(_BOUND_KEYS))
def test_keys_are_followed_through_the_templates_own_names(name: str, tmp_path: Path) -> None:
    text = _BOUND_KEYS[name]
    (tmp_path / "victim").write_text("x", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-c", _PLAIN, text], cwd=tmp_path, timeout=60, check=True, capture_output=True
    )
    assert (tmp_path / "moved").exists() and not (tmp_path / "victim").exists()  # real
    found = issues(text)
    assert found, "CLEAN"
    keys = [row for row in found if row[0] in ("template.computed-key", "template.ssti")]
    assert len(keys) == 2, found  # the '__init__' key and the '__globals__' key
    # (a macro's or caller()'s positional string arguments were already checked where passed)
    assert {row[0] for row in found} <= {"template.computed-key", "template.ssti"}
    assert all(row[3] is not None and row[3].startswith("cycler()[") for row in keys), keys


def test_a_key_from_the_runtimes_data_is_not_a_computed_key() -> None:
    """Not vacuous: the loop variable over the caller's data (a tool's parameter names, as Qwen's
    and Hermes' templates read them) is data, not a string the template built."""
    text = (
        "{% for tool in tools %}{% for key in tool.parameters.properties %}{% set p = key %}"
        "{{ tool.parameters.properties[p]['type'] }}{% endfor %}{% endfor %}"
    )
    assert issues(text) == []
