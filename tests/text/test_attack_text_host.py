"""Outside attack on the host side of text generation: a hostile job (a harmless ``torch.load``
payload that takes over its job, as in ``test_text_hostile``) against the trusted process.

Payload on messages that carry none: every frame may announce a payload of up to ``frame_bytes``
(bounded by the job's memory limit, GiBs), and the host used to receive all of it before it
looked at the header. A ``text`` token, ``done``, ``error`` or ``loaded`` message has no payload,
so a job could make the host hold GiBs for every token it streamed (for every concurrent lane of
the gateway), or stall it waiting for payload bytes that never come until the deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.errors import SandboxError
from airlock.sandbox import Sandbox, SandboxPolicy
from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame
from airlock.sandbox._policy import SandboxLimits
from tests.sandbox._payloads import exec_checkpoint

LIMITS = SandboxLimits(memory_bytes=4 << 30, cpu_seconds=10, wall_seconds=30, tasks=64)

#: Run inside the job by torch.load: each generation streams one ``text`` token whose frame also
#: carries PAYLOAD bytes (CLAIM announced: when larger, the rest never comes), then ``done``.
_TAKEOVER = """
import airlock.sandbox._job as job
def lie(sock, caps, loaded, request, payload={payload}, claim={claim}):
    import struct, time, json
    from airlock.sandbox._frames import send_frame
    from airlock.sandbox._runtimes.base import Generated
    header = json.dumps({{"type": "text", "text": "x"}}, separators=(",", ":")).encode()
    sock.sendall(struct.pack("<4sIQ", b"ALF1", len(header), claim) + header)
    chunk = bytes(1 << 20)
    left = payload
    while left:
        sock.sendall(chunk[: min(left, len(chunk))])
        left -= min(left, len(chunk))
    if claim > payload:
        time.sleep(3600)
    return Generated("stop", 1, 1)
job.Generates = object
job._generate = lie
"""


@pytest.fixture(scope="module")
def warm() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=LIMITS), runtimes=("torch",)) as sandbox:
        yield sandbox


def _stream(warm: Sandbox, tmp_path: Path, payload: int, claim: int) -> object:
    model = exec_checkpoint(tmp_path / "payload.pt", _TAKEOVER.format(payload=payload, claim=claim))
    with warm.open(model) as worker:
        return worker.generate(prompt="x", max_tokens=4).read()


def test_a_token_carrying_a_payload_is_refused(warm: Sandbox, tmp_path: Path) -> None:
    # 256 MiB of payload on one token: the old host received (and held) it all, then yielded "x"
    with pytest.raises(SandboxError, match="a 'text' message carries no payload"):
        _stream(warm, tmp_path, 256 << 20, 256 << 20)


def test_a_payload_claim_on_a_token_fails_at_once(warm: Sandbox, tmp_path: Path) -> None:
    # 1 GiB announced, nothing sent: the old host waited for it until the 30 s deadline
    started = time.monotonic()
    with pytest.raises(SandboxError, match="a 'text' message carries no payload"):
        _stream(warm, tmp_path, 0, 1 << 30)
    assert time.monotonic() - started < LIMITS.wall_seconds / 2


@pytest.mark.parametrize("kind", ["text", "done", "error", "loaded", "ready"])
def test_only_a_tensors_message_may_carry_a_payload(kind: str) -> None:
    """The channel rule alone, on a socket pair: refused after the header, before a payload byte."""
    caps = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=1 << 30, payload_types=frozenset({"tensors"}))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        send_frame(theirs, {"type": "tensors", "tensors": []}, [memoryview(b"abcd")])
        assert (
            bytes(recv_frame(ours, caps, accept_fds=False, deadline=time.monotonic() + 5).payload) == b"abcd"
        )
        send_frame(theirs, {"type": kind})  # without a payload: passed on to the schema check
        assert recv_frame(ours, caps, accept_fds=False, deadline=time.monotonic() + 5).header == {
            "type": kind
        }
        send_frame(theirs, {"type": kind}, [memoryview(b"x")])
        with pytest.raises(SandboxError, match=f"a '{kind}' message carries no payload; 1 bytes announced"):
            recv_frame(ours, caps, accept_fds=False, deadline=time.monotonic() + 5)
