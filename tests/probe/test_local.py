"""airlock probe with a local model as TARGET: what is refused before any job starts (no such
file, a folder that is not a Hugging Face model, not GGUF, a scan verdict that is not CLEAN, flags of the other kind of target),
and how the client of the sandboxed job handles a lost job. The real model end to end is in
tests/probe/test_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airlock._cli import main
from airlock.errors import AirlockError, SandboxError
from airlock.probe._cases import Message
from airlock.probe._client import CaseFailed
from airlock.probe._local import MAX_RESTARTS, LocalChat
from airlock.sandbox._text import Generation
from tests.formats_hf.test_hf_gguf import _write_reference
from tests.formats_hf.test_hf_template import cve_2024_34359
from tests.text.test_attack_templates import EXHAUSTING

_BUDGET = ("--max-prompts", "1", "--benign", "0", "--max-tokens", "4")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["probe", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_missing_file_folder_and_not_gguf_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = _run(capsys, str(tmp_path / "absent.gguf"), *_BUDGET)
    assert code == 2 and "no such file" in out and "http://" not in out
    # a URL without its scheme is read as a path: the error says what a URL must look like
    code, out = _run(capsys, "127.0.0.1:8443/v1", "--model", "m", *_BUDGET)
    assert code == 2 and "no such file (a URL target must start with http:// or https://)" in out
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    code, out = _run(capsys, str(folder), *_BUDGET)
    # a folder is a Hugging Face model (tests/probe/test_local_hf.py): one without its files is named
    assert code == 2 and "is a folder without tokenizer.json" in out and "chat template" in out, out
    for name, blob in (("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "), ("GGU", b"GGU")):
        path = tmp_path / name
        path.write_bytes(blob)
        code, out = _run(capsys, str(path), *_BUDGET)
        assert code == 2 and "is not a GGUF file" in out, out
    assert "Traceback" not in out


def test_flags_of_the_other_kind_of_target_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = _write_reference(tmp_path / "m.gguf", {})
    (tmp_path / "key").write_text("sk-x\n")
    code, out = _run(capsys, str(model), "--api-key-file", str(tmp_path / "key"), *_BUDGET)
    assert code == 2 and "--api-key-file: only for a URL target" in out
    code, out = _run(capsys, str(model), "--unsafe-plain-http", *_BUDGET)
    assert code == 2 and "--unsafe-plain-http: only for a URL target" in out
    url = "http://127.0.0.1:9/v1"
    code, out = _run(capsys, url, "--model", "m", "--unsafe-skip-scan", "--threads", "2", *_BUDGET)
    assert code == 2 and "--threads, --unsafe-skip-scan: only for a local model" in out
    code, out = _run(capsys, url, *_BUDGET)
    assert code == 2 and "--model is required with a URL target" in out
    code, out = _run(capsys, str(model), "--threads", "0", *_BUDGET)
    assert code == 2 and "--threads must be in 1..256" in out


def test_a_malicious_gguf_is_refused_whatever_the_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The published llama-cpp-python chat-template payload (CVE-2024-34359): the scan gate refuses
    it before any job starts, --unsafe-allow-suspicious or not, and the template never runs."""
    marker = tmp_path / "pwned"
    model = _write_reference(tmp_path / "evil.gguf", {"tokenizer.chat_template": cve_2024_34359(marker)})
    for extra in ((), ("--unsafe-allow-suspicious",)):
        code, out = _run(capsys, str(model), *extra, *_BUDGET)
        assert code == 2 and "refused: scan MALICIOUS" in out, out
    assert not marker.exists()


def test_a_suspicious_gguf_is_refused_unless_the_unsafe_flag_says_otherwise(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A chat template that would exhaust the renderer is SUSPICIOUS: refused by default; with
    --unsafe-allow-suspicious it passes the gate (loudly) and goes to the sandboxed job, where this
    tiny stand-in model fails to load: the error is then the job's, not the gate's."""
    template = EXHAUSTING["doubling-through-a-macro"] + "{% for m in messages %}{{ m.content }}{% endfor %}"
    model = _write_reference(tmp_path / "heavy.gguf", {"tokenizer.chat_template": template})
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "refused: scan SUSPICIOUS" in out, out
    code, out = _run(capsys, str(model), "--unsafe-allow-suspicious", "--load-timeout", "300", *_BUDGET)
    assert code == 2 and "WARNING: --unsafe-allow-suspicious" in out and "refused" not in out, out
    assert "sandbox" in out and "Traceback" not in out


class _Stream:
    def __init__(self, outcome: Generation | Exception) -> None:
        self.outcome = outcome

    def read(self) -> Generation:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class _Job:
    """Stands in for the sandboxed job (tests/text and tests/sandbox cover the real one): answers
    from a script, records what it was asked."""

    def __init__(self, script: list[Generation | Exception], opened: list[_Job]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []
        self.closed = False
        self.info = type("Info", (), {"job_layers": "test"})()
        opened.append(self)

    def generate(self, **request: Any) -> _Stream:
        self.calls.append(request)
        return _Stream(self.script.pop(0))

    def close(self) -> None:
        self.closed = True


class _ScriptedChat(LocalChat):
    def __init__(self, script: list[Generation | Exception]) -> None:
        self.script = script
        self.opened: list[_Job] = []
        self.loads: list[float | None] = []
        super().__init__(None, None, max_tokens=8, seed=3)  # type: ignore[arg-type]

    def _open(self, within: float | None = None) -> Any:
        self.loads.append(within)
        return _Job(self.script, self.opened)


_HI = (Message("system", "s"), Message("user", "hi", attacker=True))


def test_a_lost_job_is_an_error_of_its_case_and_the_next_gets_a_new_job() -> None:
    killed = SandboxError("sandboxed generate exceeded the wall-clock limit; the worker tree was killed")
    script: list[Generation | Exception] = [
        Generation("hello", "stop", 5, 1),
        killed,
        Generation("again", "length", 5, 8),
        Generation("", "context", 9000, 0),
    ]
    chat = _ScriptedChat(script)
    assert chat.chat(_HI, timeout=7.5).text == "hello"
    first = chat.opened[0]
    assert first.calls[0] == {
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "temperature": 0.0,
        "seed": 3,
        "timeout": 7.5,
    }
    with pytest.raises(CaseFailed, match="worker tree was killed; the next request gets a new job"):
        chat.chat(_HI, timeout=7.5)
    assert first.closed and len(chat.opened) == 1
    reply = chat.chat(_HI, timeout=7.5)
    assert (reply.text, reply.finish) == ("again", "length") and len(chat.opened) == 2
    # the first load has --load-timeout; a restart's load is bounded by the request that needs it
    assert chat.loads == [None, 7.5]
    with pytest.raises(CaseFailed, match=r"prompt \(9000 tokens\) and max_tokens \(8\) do not fit"):
        chat.chat(_HI, timeout=7.5)
    assert len(chat.opened) == 2  # a prompt too long is the case's error; the job goes on


def test_a_model_that_keeps_losing_its_jobs_stops_the_run() -> None:
    lost = SandboxError("the job died")
    chat = _ScriptedChat([lost] * (MAX_RESTARTS + 1))
    for _ in range(MAX_RESTARTS + 1):
        with pytest.raises(CaseFailed):
            chat.chat(_HI, timeout=5)
    with pytest.raises(AirlockError, match=f"lost {MAX_RESTARTS} jobs"):
        chat.chat(_HI, timeout=5)
    assert len(chat.opened) == MAX_RESTARTS + 1
