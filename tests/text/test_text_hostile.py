"""The host side of text generation treats the job as hostile (the same rules as issue 11's frames).

A malicious checkpoint (a real ``torch.load`` payload, harmless) takes over its job while it
loads and answers ``generate`` requests as it likes. Each lie about the stream is caught by the
host, which drops the job and raises ``SandboxError``; the honest edge cases are accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.errors import SandboxError
from airlock.sandbox import Sandbox, SandboxPolicy
from airlock.sandbox._policy import SandboxLimits
from airlock.sandbox._text import MAX_PIECE
from tests.sandbox._payloads import exec_checkpoint

LIMITS = SandboxLimits(memory_bytes=4 << 30, cpu_seconds=10, wall_seconds=8, tasks=64)

#: Run inside the job by torch.load: replace the job's generation with ``FRAMES`` then ``DONE``.
_TAKEOVER = """
import airlock.sandbox._job as job
def lie(sock, caps, loaded, request, frames={frames!r}, done={done!r}):
    from airlock.sandbox._frames import send_frame
    from airlock.sandbox._runtimes.base import Generated
    for header in frames:
        send_frame(sock, header)
    if done is None:
        import time
        time.sleep(3600)
    return Generated(*done)
job.Generates = object  # every loaded object "generates"
job._generate = lie
"""


def _text(n: int, piece: str = "x") -> list[dict[str, str]]:
    return [{"type": "text", "text": piece}] * n


@pytest.fixture(scope="module")
def warm() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=LIMITS), runtimes=("torch",)) as sandbox:
        yield sandbox


def _generate(
    warm: Sandbox, tmp_path: Path, frames: list[dict[str, str]], done: tuple[object, ...] | None, **kw: object
) -> object:
    model = exec_checkpoint(tmp_path / "liar.pt", _TAKEOVER.format(frames=frames, done=done))
    with warm.open(model) as worker:
        return worker.generate(prompt="x", **kw).read()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frames", "done", "max_tokens", "error"),
    [
        (_text(6), ("length", 0, 6), 5, "more than max_tokens=5 tokens"),
        (_text(1, "y" * (MAX_PIECE + 1)), ("stop", 0, 1), 5, f"a token of {MAX_PIECE + 1} characters"),
        (_text(2), ("stop", 0, 99), 5, "99 completion tokens claimed, 2 received"),
        (_text(2), ("stop", 0, 1), 5, "1 completion tokens claimed, 2 received"),
        (_text(2), ("cancelled", 0, 2), 5, "finish reason 'cancelled'"),
        (_text(2), ("length", 0, 2), 5, "finish 'length' after 2 of max_tokens=5"),
        (_text(2), ("\x1b[31mred", 0, 2), 5, "finish reason '\\\\x1b\\[31mred'"),
        (_text(2), ("stop", -1, 2), 5, "prompt_tokens -1"),
        (_text(2), ("stop", 2**31, 2), 5, "prompt_tokens 2147483648"),
        ([{"type": "text", "text": "x", "extra": "y"}], ("stop", 0, 1), 5, "text message has fields"),
        ([{"type": "tensors", "tensors": []}], ("stop", 0, 1), 5, "message type 'tensors' is not one of"),
        ([{"type": "text", "text": 7}], ("stop", 0, 1), 5, "text.text must be str"),
    ],
)
def test_each_lie_drops_the_job(
    warm: Sandbox,
    tmp_path: Path,
    frames: list[dict[str, str]],
    done: tuple[object, ...],
    max_tokens: int,
    error: str,
) -> None:
    with pytest.raises(SandboxError, match=error):
        _generate(warm, tmp_path, frames, done, max_tokens=max_tokens)


def test_honest_edges_are_accepted(warm: Sandbox, tmp_path: Path) -> None:
    done = _generate(warm, tmp_path, _text(5, "y" * MAX_PIECE), ("length", 2**31 - 1, 5), max_tokens=5)
    assert done == type(done)("y" * MAX_PIECE * 5, "length", 2**31 - 1, 5)  # type: ignore[call-arg]


def test_a_job_that_stops_answering_meets_the_deadline(warm: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="exceeded the wall-clock limit of 8"):
        _generate(warm, tmp_path, _text(1), None, max_tokens=5)


#: a reply cap of 16 KiB: the text of one generation may hold 16384 // 4 = 4096 characters
_CAP = 16 << 10


@pytest.fixture(scope="module")
def capped() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=LIMITS.replace(max_frame_bytes=_CAP)), runtimes=("torch",)) as sandbox:
        yield sandbox


@pytest.mark.parametrize(("extra", "ok"), [(-1, True), (0, True), (1, False)])
def test_the_text_of_one_generation_is_capped_like_a_reply(
    capped: Sandbox, tmp_path: Path, extra: int, ok: bool
) -> None:
    """Outside review 11: the host kept every token's text, bounded only by max_tokens * 1024
    characters (4 bytes each once one is beyond U+FFFF): a caller's large --max-tokens let a job
    make the host hold gigabytes. The text is a reply: at most frame_bytes at 4 bytes a character,
    whatever max_tokens says. N-1, N, N+1 characters at N = 4096."""
    from airlock.sandbox._text import BYTES_PER_CHAR

    limit = _CAP // BYTES_PER_CHAR
    frames = _text(limit // MAX_PIECE - 1, "y" * MAX_PIECE)  # every token within MAX_PIECE
    frames += _text(1, "y" * (MAX_PIECE + min(extra, 0))) + _text(max(extra, 0), "z")
    count = len(frames)
    if ok:
        done = _generate(capped, tmp_path, frames, ("stop", 0, count), max_tokens=10**6)
        assert len(done.text) == limit + extra  # type: ignore[attr-defined]
    else:
        with pytest.raises(
            SandboxError, match=f"more than {limit} characters of text .* reply cap of {_CAP} bytes"
        ):
            _generate(capped, tmp_path, frames, ("stop", 0, count), max_tokens=10**6)
