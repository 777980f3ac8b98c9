"""The trusted side of text generation: one request streamed back from a job, checked as it comes.

The job is hostile here as everywhere: each ``text`` message is one token's text (at most
:data:`MAX_PIECE` characters), there are never more of them than ``max_tokens``, the ``done``
that ends the stream must agree with what the host counted, and the whole exchange has one
deadline. Anything else kills the job (its socket is dropped) and raises ``SandboxError``.
Stopping early (``close()``, or leaving a ``with`` block) asks the job to cancel between two
tokens and waits at most :data:`CANCEL_GRACE` seconds for its ``done``; past that the job is
dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airlock.errors import ModelError, SandboxError
from airlock.sandbox._runtimes.text_gguf import check_request

if TYPE_CHECKING:
    from airlock.sandbox._worker import Worker

__all__ = [
    "BYTES_PER_CHAR",
    "CANCEL_GRACE",
    "MAX_PIECE",
    "Generation",
    "TextStream",
    "build_request",
    "terminal_text",
]

#: characters one token's text may have (the longest tokens of real vocabularies are far shorter)
MAX_PIECE = 1024
#: seconds a cancelled job has to answer ``done`` before it is dropped
CANCEL_GRACE = 2.0
_FINISHES = frozenset({"stop", "length", "cancelled", "context"})
#: bytes the host may hold for one character of a generation's text (a ``str`` holding any
#: character beyond U+FFFF takes four bytes for every character)
BYTES_PER_CHAR = 4
_MAX_COUNT = 2**31


@dataclass(frozen=True)
class Generation:
    """A finished generation: the text, why it ended, and the token counts (the job's counts of
    the prompt; the completion count is checked against the messages the host received).

    ``finish`` is ``stop``, ``length``, ``cancelled`` (only after the host asked) or ``context``
    (the prompt and max_tokens do not fit the model's context; nothing was generated)."""

    text: str
    finish: str
    prompt_tokens: int
    completion_tokens: int


def build_request(
    *,
    messages: Sequence[dict[str, str]] | None = None,
    prompt: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    context: int = 0,
) -> dict[str, Any]:
    """One generation request, checked here before it reaches a job (``ValueError`` if bad).
    ``context``: a context window smaller than the model's own (0: the model's)."""
    request = {
        "messages": [dict(m) for m in messages] if messages is not None else None,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": list(stop),
        "context": context,
    }
    return check_request(request)


def terminal_text(text: str) -> str:
    """Model text made safe for a terminal: newlines and tabs kept, every other control, format
    (bidi) or unassigned character escaped (``\\x1b``), so no escape sequence reaches the tty."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


class TextStream:
    """Iterate to get each token's text as the job produces it; :attr:`result` once it ended."""

    def __init__(self, worker: Worker, request: dict[str, Any], deadline: float | None = None) -> None:
        self._worker = worker
        self._max_tokens = int(request["max_tokens"])
        self._count = 0
        self._pieces: list[str] = []
        #: the text of one generation is a reply: at most the worker's reply cap (``frame_bytes``,
        #: never more than the job's memory) at BYTES_PER_CHAR a character, whatever max_tokens is
        self._max_chars = worker._caps.max_frame_bytes // BYTES_PER_CHAR
        self._chars = 0
        self._cancelled = False
        #: the job answered this request with an error of the model's (it caught it and waits for
        #: the next request): nothing more comes, nothing to cancel
        self.refused = False
        self.result: Generation | None = None
        #: the whole exchange's deadline (``time.monotonic()``): the worker's ``wall_seconds`` from now by default
        self._deadline = worker._deadline() if deadline is None else deadline
        worker._send("generate", {"type": "generate", "request": json.dumps(request)}, (), [], self._deadline)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.result is not None or self.refused:
            raise StopIteration
        piece = self._receive(self._deadline)
        if piece is None:
            raise StopIteration
        return piece

    def _receive(self, deadline: float) -> str | None:
        """The next token's text, or None once ``done`` arrived (then :attr:`result` is set)."""
        try:
            frame = self._worker._expect("generate", ("text", "done"), deadline)
        except ModelError:
            self.refused = True
            raise
        header = frame.header
        if header["type"] == "text":
            text = str(header["text"])
            self._count += 1
            if self._count > self._max_tokens:
                self._fail(f"more than max_tokens={self._max_tokens} tokens")
            if len(text) > MAX_PIECE:
                self._fail(f"a token of {len(text)} characters (the cap is {MAX_PIECE})")
            self._chars += len(text)
            if self._chars > self._max_chars:
                self._fail(
                    f"more than {self._max_chars} characters of text (the reply cap of "
                    f"{self._worker._caps.max_frame_bytes} bytes, {BYTES_PER_CHAR} a character)"
                )
            self._pieces.append(text)
            return text
        finish = str(header["finish"])
        prompt_tokens, completion = int(str(header["prompt_tokens"])), int(str(header["completion_tokens"]))
        if finish not in _FINISHES or (finish == "cancelled" and not self._cancelled):
            self._fail(f"finish reason {finish[:40]!r}")
        if completion != self._count:
            self._fail(f"{completion} completion tokens claimed, {self._count} received")
        if finish == "length" and completion != self._max_tokens:
            self._fail(f"finish 'length' after {completion} of max_tokens={self._max_tokens} tokens")
        if finish == "context" and completion:
            self._fail(f"finish 'context' after {completion} tokens")
        if not 0 <= prompt_tokens < _MAX_COUNT:
            self._fail(f"prompt_tokens {prompt_tokens}")
        self.result = Generation("".join(self._pieces), finish, prompt_tokens, completion)
        return None

    def _fail(self, what: str) -> None:
        self._worker._drop()
        raise SandboxError(f"sandboxed generate failed: the job sent {what}; it was dropped")

    def read(self) -> Generation:
        """Consume the rest of the stream; the finished :class:`Generation`."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def close(self) -> None:
        """Stop early: the job is asked to cancel; one that does not answer in time is dropped."""
        if self.result is not None or self.refused or self._worker._sock is None:
            return
        self._cancelled = True
        deadline = min(self._deadline, time.monotonic() + CANCEL_GRACE)
        try:
            self._worker._send("cancel", {"type": "cancel"}, (), [], deadline)
            while self._receive(deadline) is not None:
                pass
        except ModelError:
            raise  # the job ended the request with the model's error: it waits for the next one
        except SandboxError:
            self._worker._drop()
            raise

    def __enter__(self) -> TextStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
