"""Outside attack on the chat-template scanner: resource exhaustion it called CLEAN.

The scanner's rule (src/airlock/_analysis/template.py) is that resource exhaustion is SUSPICIOUS,
so a gate that lets only CLEAN through keeps such a template out. Each template below renders for
hours or allocates gigabytes (proven with the real renderer in a throwaway process); the scanner
checked each range alone, not nested loops, and not the sizes given to repetition, padding,
indentation, formats, nor growth in loops or recursion. It now bounds the work of a whole
rendering (src/airlock/_analysis/template_cost.py) and every one of them is ``template.resource``. The rendering happens only inside the sandbox (bounded by its CPU, memory
and wall-clock limits), so the harm is a job that burns its whole budget on every request (a
gateway lane killed and cold-reloaded each time), not an escape.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock._analysis.template import _environment, analyse_template
from airlock._analysis.template_cost import bound_template
from airlock.limits import DEFAULT_LIMITS
from tests.text.conftest import with_template

_TAIL = "{% for m in messages %}{{ m.content }}{% endfor %}"
EXHAUSTING = {
    # 10**12 iterations, each range well under the per-range bound
    "nested-ranges": "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
    "{% for d in range(1000) %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
    # a 2 GB string / a 16 GB list
    "string-repeat": "{{ 'x' * 2000000000 }}",
    "list-repeat": "{{ [0] * 2000000000 }}",
    # padding and indentation widths
    "center-width": "{{ 'x'|center(2000000000) }}",
    "indent-width": "{{ 'x\\ny'|indent(2000000000) }}",
    "format-width": "{{ '%2000000000s'|format('x') }}",
    # doubling a string 100 times
    "doubling": "{% set ns = namespace(s='x') %}{% for a in range(100) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s }}",
    # held-out style: the same classes, spelled otherwise (sizes through set, arithmetic, filters,
    # methods, macros, recursion, other names for the same namespace)
    # the same exhaustion, spelled differently
    "range-bound-via-set": "{% set n = 100000 %}{% for a in range(n) %}{% for b in range(n) %}{% endfor %}{% endfor %}",
    "range-of-a-product": "{% set a = 300 %}{% set b = 300 %}{% for i in range(a * b) %}{% for j in range(a * b) %}"
    "{% endfor %}{% endfor %}",
    "range-bound-from-length": "{% set s = 'x' * 90000 %}{% for i in range(s|length) %}{% for j in range(s|length) %}"
    "{% endfor %}{% endfor %}",
    "list-repeat-count-via-set": "{% set n = 2000000000 %}{{ [n] * n }}",
    "string-repeat-count-first": "{{ 2000000000 * 'ab' }}",
    "printf-zero-pad": "{{ '%02000000000d'|format(1) }}",
    "printf-operator": "{{ '%0999999999d' % 1 }}",
    "printf-mapping-key": "{{ '%(a)2000000000s' % {'a': 'x'} }}",
    "printf-star-width": "{{ '%*s' % (2000000000, 'x') }}",
    "brace-format-width": "{{ '{:>2000000000}'.format('x') }}",
    "center-in-a-loop": "{% for i in range(100) %}{{ 'x'|center(100000000) }}{% endfor %}",
    "tojson-indent": "{{ messages|tojson(indent=2000000000) }}",
    "batch-fill": "{{ [1]|batch(2000000000, 0)|list }}",
    "slice-count": "{{ [1]|slice(2000000000)|list }}",
    "lipsum-count": "{{ lipsum(2000000) }}",
    "macro-recursion": "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "loop-recursion": "{% for x in [1, 2] recursive %}{% if loop.depth < 40 %}{{ loop([1, 2]) }}{% endif %}{% endfor %}",
    "doubling-through-a-macro": "{% set ns = namespace(s='x') %}{% macro grow() %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endmacro %}{% for i in range(64) %}{{ grow() }}{% endfor %}{{ ns.s|length }}",
    "doubling-a-list": "{% set ns = namespace(l=['x']) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}"
    "{% endfor %}{{ ns.l|length }}",
    "doubling-through-an-alias": "{% set a = namespace(s='x') %}{% set b = a %}{% for i in range(100) %}"
    "{% set b.s = a.s ~ a.s %}{% endfor %}{{ a.s|length }}",
    "doubling-by-repetition": "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s * 2 %}"
    "{% endfor %}{{ ns.s|length }}",
    "doubling-by-replace": "{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s|replace('x', 'xx') %}"
    "{% endfor %}{{ ns.s|length }}",
    "doubling-by-join": "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = [ns.s, ns.s]|join %}"
    "{% endfor %}{{ ns.s|length }}",
    "doubling-by-set-block": "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}"
    "{% set ns.s = t %}{% endfor %}{{ ns.s|length }}",
    "growing-counter-as-range": "{% set ns = namespace(n=1) %}{% for i in range(60) %}{% set ns.n = ns.n * 2 %}{% endfor %}"
    "{% for i in range(ns.n % 100000) %}{% for j in range(ns.n % 100000) %}{% endfor %}{% endfor %}",
    "messages-inside-big-loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% for m in messages %}"
    "{{ m.content }}{% endfor %}{% endfor %}{% endfor %}",
    "filter-block-width": "{% filter center(2000000000) %}x{% endfilter %}",
    "indent-string-width": "{{ ('x\\n' * 1000)|indent(width='          ' * 100000) }}",
}


#: renders a template as the job does (ImmutableSandboxedEnvironment), in a throwaway process
#: capped at 1 GiB of address space: exhaustion shows as MemoryError or as no answer in 5 s
_RENDER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from jinja2.sandbox import ImmutableSandboxedEnvironment
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
try:
    env.from_string(sys.argv[1]).render(messages=[{"role": "user", "content": "hi"}])
except MemoryError:
    print("MemoryError")
else:
    print("rendered")
"""


@pytest.mark.parametrize("name", sorted(EXHAUSTING))
def test_each_template_really_exhausts_the_renderer(name: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RENDER, EXHAUSTING[name] + _TAIL],
            capture_output=True,
            check=False,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return  # still rendering after 5 s
    assert done.stdout.strip() == "MemoryError", (done.stdout, done.stderr[-500:])


def test_an_ordinary_template_is_clean() -> None:  # not vacuous: the tail alone is CLEAN
    assert analyse_template("tail", _TAIL, DEFAULT_LIMITS) == []


@pytest.mark.parametrize("name", sorted(EXHAUSTING))
def test_resource_exhaustion_is_not_clean(name: str) -> None:
    issues = analyse_template(name, EXHAUSTING[name] + _TAIL, DEFAULT_LIMITS)
    assert any(issue.rule == "template.resource" for issue in issues), issues


def test_the_real_smollm2_template_is_clean_and_bounded(smollm2: Path) -> None:
    """The chat template of the GGUF the text tests run (read by gguf-py in a throwaway process)."""
    code = (
        "import sys\nfrom gguf import GGUFReader\n"
        "f = GGUFReader(sys.argv[1]).fields['tokenizer.chat_template']\n"
        "sys.stdout.write(bytes(f.parts[f.data[0]]).decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(smollm2)], capture_output=True, check=True, text=True, timeout=120
    )
    template = done.stdout
    assert "messages" in template and "<|im_start|>" in template  # not vacuous: the real one
    assert analyse_template("smollm2", template, DEFAULT_LIMITS) == []
    cost = bound_template(_environment().parse(template), DEFAULT_LIMITS.max_template_bytes)
    assert len(cost.steps) == 2 and cost.findings == []  # one pass over the messages


def test_a_gguf_whose_template_exhausts_the_renderer_is_suspicious(smollm2: Path, tmp_path: Path) -> None:
    """End to end: the real GGUF with an exhausting chat template (written by gguf-py's editor)
    is SUSPICIOUS to ``airlock scan`` (exit 3), so a gate that passes only CLEAN keeps it out."""
    model = with_template(
        smollm2, tmp_path / "exhausting.gguf", EXHAUSTING["doubling-through-a-macro"] + _TAIL
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "airlock", "scan", str(model)],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 3, (done.stdout[-2000:], done.stderr[-2000:])
    assert "template.resource" in done.stdout
