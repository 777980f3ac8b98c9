"""Outside attack on the chat-template scanner: resource exhaustion it calls CLEAN.

The scanner's rule (src/airlock/_analysis/template.py) is that resource exhaustion (``**``, a huge
``range``) is SUSPICIOUS, so a gate that lets only CLEAN through keeps such a template out. Each
template below is CLEAN to it, yet renders for hours or allocates gigabytes: the range bound is
checked per loop, not over nested loops, and sizes given to repetition, padding or indentation
are not checked at all. The rendering happens only inside the sandbox (bounded by its CPU, memory
and wall-clock limits), so the harm is a job that burns its whole budget on every request (a
gateway lane killed and cold-reloaded each time), not an escape.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from airlock._analysis.template import analyse_template
from airlock.limits import DEFAULT_LIMITS

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
}


#: renders a template as the job does (ImmutableSandboxedEnvironment), in a throwaway process
#: capped at 1 GiB of address space: exhaustion shows as MemoryError or as no answer in 10 s
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
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return  # still rendering after 10 s
    assert done.stdout.strip() == "MemoryError", (done.stdout, done.stderr[-500:])


def test_an_ordinary_template_is_clean() -> None:  # not vacuous: the tail alone is CLEAN
    assert analyse_template("tail", _TAIL, DEFAULT_LIMITS) == []


@pytest.mark.parametrize("name", sorted(EXHAUSTING))
def test_resource_exhaustion_is_not_clean(name: str) -> None:
    issues = analyse_template(name, EXHAUSTING[name] + _TAIL, DEFAULT_LIMITS)
    assert any(issue.rule == "template.resource" for issue in issues), issues
