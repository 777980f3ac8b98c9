"""Chat templates, rendered inside a job only (runtimes ``text-gguf`` and ``lm-score``).

A chat template is code the model ships. It is rendered here, after the job's lockdown, the way
transformers renders one (Jinja's ``ImmutableSandboxedEnvironment``, ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, a ``{% generation %}`` block, a ``tojson``
that does not escape HTML, ``raise_exception``), with three bounds of its own so that a template
cannot spend the job's whole budget on one prompt:

* **output**: at most :func:`prompt_limit` characters (1 Mi plus four times the messages' own
  text: a template adds markup around the messages, it does not multiply them), counted as the
  template streams its output, so an endless loop that writes is stopped when it passes the bound;
* **time**: :data:`RENDER_SECONDS` of wall-clock time (an interval timer whose signal interrupts
  the renderer between two Python instructions: a loop that writes nothing is stopped too). One
  C-level operation runs to its end before a Python signal handler can run, and some take time
  exponential in a template's few lines: hashing a tuple whose items are one tuple repeated,
  nested ``k`` deep (``(a,) * n`` eight times walks ``n**8`` items, in kilobytes of memory). So
  the kernel also bounds it: a CPU-time timer (``ITIMER_PROF``) armed for
  :data:`HARD_CPU_FACTOR` times the bound, whose ``SIGPROF`` keeps its default action while the
  template renders and ends the job ("killed by SIGPROF"; the request fails, the host replaces the
  job). Only an operation the first timer cannot interrupt lives that long;
* **memory**: :data:`RENDER_MEMORY` bytes of address space beyond what the job holds when the
  rendering starts (its ``RLIMIT_AS`` is lowered for the rendering and restored after), so one
  operation that asks for gigabytes (``'x' * 2000000000``, a padding width) fails at once. A job
  without an address-space limit (a GPU job, bounded by its cgroup) keeps the two other bounds.

Each ends the rendering with :class:`TemplateError` (a ``ValueError``: the job reports it as the
request's error and waits for the next request), but for the kernel's CPU-time backstop, which
ends the job. ``strftime_now`` is not given: a prompt that depends on the date would make a
seeded run depend on the day (templates test ``is defined``).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "HARD_CPU_FACTOR",
    "RENDER_MEMORY",
    "RENDER_SECONDS",
    "TemplateError",
    "prompt_limit",
    "render_chat",
]

#: seconds one rendering may take (real templates take milliseconds)
RENDER_SECONDS: Final = 10.0
#: the job ends once one rendering has spent this many times its time bound in CPU time (only an
#: operation the interval timer cannot interrupt gets there; a rendering takes milliseconds)
HARD_CPU_FACTOR: Final = 2.0
#: bytes of address space one rendering may add to the job's
RENDER_MEMORY: Final = 256 << 20
#: characters any prompt may have, whatever the messages
_BASE_CHARS: Final = 1 << 20


class TemplateError(ValueError):
    """The chat template failed, or passed one of the bounds."""


class _Expired(BaseException):
    """Raised by the interval timer's handler (a BaseException: no library's ``except Exception``
    swallows it)."""


def prompt_limit(messages: Sequence[Mapping[str, str]]) -> int:
    """The most characters a rendered prompt may have for ``messages``."""
    return _BASE_CHARS + 4 * sum(len(m["content"]) for m in messages)


def _address_space() -> int | None:
    """Bytes of address space the job holds now (``/proc/self/statm``), or None if unknown."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read(64).split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def _bounded(seconds: float, memory: int) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        raise TemplateError("chat template: rendered only on a job's main thread (its timer needs it)")
    armed = [True]

    def expired(signum: int, frame: object) -> None:
        if armed[0]:
            raise _Expired

    previous = signal.signal(signal.SIGALRM, expired)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # only under an address-space limit: a GPU job has none (CUDA reserves far more than it uses;
    # its driver's threads must not meet a lowered limit), its cgroup bounds its memory
    held = _address_space() if soft != resource.RLIM_INFINITY else None
    if held is not None and held + memory < soft:
        resource.setrlimit(resource.RLIMIT_AS, (held + memory, hard))
    # the kernel's bound: SIGPROF's default action ends the process whatever it is running
    previous_prof = signal.signal(signal.SIGPROF, signal.SIG_DFL)
    previous_timer = signal.setitimer(signal.ITIMER_PROF, seconds * HARD_CPU_FACTOR)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, *previous_timer)
        if previous_prof is not None:
            signal.signal(signal.SIGPROF, previous_prof)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _environment() -> Any:
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): the body."""

        tags = {"generation"}  # noqa: RUF012 - jinja's own class attribute

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> Any:
            return caller()

    def raise_exception(message: object) -> None:
        raise TemplateError(f"chat template: {str(message)[:500]}")

    def tojson(
        value: object,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _Generation]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    variables: Mapping[str, str],
    *,
    seconds: float = RENDER_SECONDS,
    memory: int = RENDER_MEMORY,
) -> str:
    """The prompt ``template`` makes of ``messages`` (``add_generation_prompt`` true, plus
    ``variables``: the special tokens), or :class:`TemplateError`."""
    limit = prompt_limit(messages)
    pieces: list[str] = []
    size = 0
    try:
        with _bounded(seconds, memory):
            compiled = _environment().from_string(template)
            for piece in compiled.generate(
                messages=[dict(m) for m in messages], add_generation_prompt=True, **variables
            ):
                size += len(piece)
                if size > limit:
                    raise TemplateError(f"chat template: the prompt passed {limit} characters")
                pieces.append(piece)
    except TemplateError:
        raise
    except _Expired:
        raise TemplateError(f"chat template: rendering took more than {seconds:g} s") from None
    except MemoryError:
        raise TemplateError(
            f"chat template: rendering needed more than {memory >> 20} MiB of memory"
        ) from None
    except RecursionError:
        raise TemplateError("chat template: recursion too deep") from None
    except Exception as exc:  # a template may raise anything: jinja's errors, SecurityError, ...
        raise TemplateError(f"chat template: {type(exc).__name__}: {str(exc)[:500]}") from None
    return "".join(pieces)
