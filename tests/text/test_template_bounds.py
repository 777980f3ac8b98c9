"""The bounds of the in-job chat-template renderer (airlock.sandbox._runtimes._template), which
both text runtimes use: every template of tests/text/test_attack_templates.py (each renders for
hours or allocates gigabytes with plain Jinja) ends in a ``TemplateError`` that names the bound it
passed, within its time bound; an ordinary template renders exactly as before, and the job's
address-space limit and signal handler are as they were afterwards.

Run in a throwaway process with an address-space limit, as a job has one (the renderer lowers
that limit while it renders, and arms an interval timer: neither belongs in the test process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airlock.sandbox._runtimes._template import HARD_CPU_FACTOR
from tests.text.test_attack_templates import _TAIL, EXHAUSTING

_SRC = Path(__file__).resolve().parents[2] / "src"
SECONDS = 0.5
_BOUNDS = ("rendering took more than", "rendering needed more than", "the prompt passed")

_SCRIPT = """
import json, resource, signal, sys, time
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from airlock.sandbox._runtimes._template import TemplateError, prompt_limit, render_chat
templates, tail, seconds = json.loads(sys.stdin.read())
messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
out = {}
for name, template in templates.items():
    start = time.monotonic()
    try:
        text = render_chat(template + tail, messages, {"bos_token": "<s>"}, seconds=seconds)
        out[name] = ["rendered", len(text), time.monotonic() - start]
    except TemplateError as exc:
        out[name] = [str(exc), 0, time.monotonic() - start]
ordinary = render_chat(
    "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content|tojson }}{% generation %}{% endgeneration %}"
    "{% if loop.last %}{% break %}{% endif %}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
    messages, {"bos_token": "<s>"}, seconds=seconds,
)
print(json.dumps({
    "out": out,
    "ordinary": ordinary,
    "limit": prompt_limit(messages),
    "rlimit": list(resource.getrlimit(resource.RLIMIT_AS)),
    "handler": signal.getsignal(signal.SIGALRM) == signal.SIG_DFL,
    "timer": signal.getitimer(signal.ITIMER_REAL)[0],
}))
"""


def test_every_exhausting_template_ends_in_a_named_bound() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        input=json.dumps([EXHAUSTING, _TAIL, SECONDS]),
        capture_output=True, text=True, timeout=300, check=False,
        env={"PYTHONPATH": str(_SRC), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert set(result["out"]) == set(EXHAUSTING)
    for name, (message, _size, took) in result["out"].items():
        assert message.startswith("chat template: ") and any(b in message for b in _BOUNDS), (name, message)
        # the time bound, with room for one C-level operation started just before it (a loaded CI)
        assert took < SECONDS + 10, (name, took)
    assert result["ordinary"] == '<s>[system]"S"[user]"hi"[assistant]'
    assert result["limit"] == (1 << 20) + 4 * 3
    assert result["rlimit"] == [4 << 30, 4 << 30] and result["handler"] and result["timer"] == 0


_ESCAPES = """
import json, sys
from airlock.sandbox._runtimes._template import TemplateError, render_chat
out = []
for template in json.loads(sys.stdin.read()):
    try:
        out.append(render_chat(template, [{"role": "user", "content": "hi"}], {}))
    except TemplateError as exc:
        out.append(str(exc))
print(json.dumps(out))
"""


def test_templates_that_reach_for_python_internals_are_refused() -> None:
    """Jinja's immutable sandbox, as the job uses it: attribute access to internals, mutation of
    the messages, and the format-string route are refused with the sandbox's own error (or read
    as undefined, which renders as nothing); ``strftime_now`` is not given (a seeded run must not
    depend on the date); ``raise_exception`` is the template's own message."""
    templates = [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% set x = messages.append(1) %}",
        "{{ '{0.__class__}'.format(messages) }}",
        "{{ strftime_now('%Y') }}",
        "{{ raise_exception('said no') }}",
    ]
    done = subprocess.run(
        [sys.executable, "-c", _ESCAPES],
        input=json.dumps(templates),
        capture_output=True, text=True, timeout=120, check=False,
        env={"PYTHONPATH": str(_SRC), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert (
        out[0] == "chat template: SecurityError: access to attribute '__class__' of 'str' object is unsafe."
    )
    assert out[1] == ""  # an internal read directly is an undefined: it renders as nothing
    assert (
        out[2] == "chat template: SecurityError: access to attribute '__init__' of 'type' object is unsafe."
    )
    assert out[3] == "chat template: SecurityError: access to attribute 'append' of 'list' object is unsafe."
    assert out[4] == ""  # the sandbox's formatter reads fields as the template would: undefined
    assert out[5] == "chat template: UndefinedError: 'strftime_now' is undefined"
    assert out[6] == "chat template: said no"


#: A tuple whose items are one tuple repeated, nested eight deep: hashing it (a dict key) walks
#: ``n**8`` items in ONE C call, which no Python signal handler interrupts, in kilobytes of
#: memory. Its size follows the number of messages ``n``, so the scanner's bound (a polynomial of
#: degree at most 8 in the caller's data, template_cost.MAX_DEGREE) lets it through as CLEAN; the
#: renderer's bounds are what stop it. With 18 messages plain Jinja hashes for minutes.
NESTED_HASH = (
    "{% set n = messages|length %}{% set a = (0,) * n %}"
    + "{% set a = (a,) * n %}" * 7
    + "{{ {a: 1}|length }}{% for m in messages %}{{ m.content }}{% endfor %}"
)

_HARD = """
import json, resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from airlock.sandbox._runtimes._template import render_chat
template, count, seconds = json.loads(sys.stdin.read())
mine = lambda signum, frame: None
signal.signal(signal.SIGPROF, mine)
text = render_chat(template, [{"role": "user", "content": "hi"}] * count, {}, seconds=seconds)
print(json.dumps([text, signal.getsignal(signal.SIGPROF) is mine, signal.getitimer(signal.ITIMER_PROF)[0]]))
"""


def _hard(count: int) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _HARD],
            input=json.dumps([NESTED_HASH, count, SECONDS]),
            capture_output=True, text=True, timeout=60, check=False,
            env={"PYTHONPATH": str(_SRC), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"a rendering bounded to {SECONDS} s was still running after 60 s")
    return done, time.monotonic() - start


def test_an_operation_the_timer_cannot_interrupt_ends_the_job_at_the_cpu_bound() -> None:
    """Outside review 22: the interval timer's handler runs only between two Python instructions,
    so one long C call (the hash above, 18**8 items) ran on for minutes past the 0.5 s bound. The
    kernel's CPU-time timer ends the job (SIGPROF's default action) at HARD_CPU_FACTOR times the
    bound; a rendering that stays within its bounds leaves the job's own SIGPROF handler and
    timer as they were."""
    done, took = _hard(18)
    assert done.returncode == -signal.SIGPROF, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    # CPU time HARD_CPU_FACTOR * SECONDS, then the start of a Python process (a loaded CI)
    assert took < HARD_CPU_FACTOR * SECONDS + 15, took
    done, _ = _hard(4)  # 4**8 items: milliseconds
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == ["1" + "hi" * 4, True, 0.0]
