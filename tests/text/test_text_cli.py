"""``airlock run --messages`` and ``airlock chat`` on the real SmolLM2 GGUF, as a user runs them;
a GGUF whose chat template attempts SSTI is refused at the gate, and forced through it renders
inside the sandbox only, where it reaches nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.text.conftest import with_template

#: the SSTI of CVE-2024-34359 (llama-cpp-python rendered GGUF templates with a plain Environment):
#: from a Jinja global to the os module, then a harmless side effect, a new directory
SSTI = "{{{{ cycler.__init__.__globals__.os.mkdir({target!r}) }}}}{{% for m in messages %}}{{{{ m.content }}}}{{% endfor %}}"
SRC = Path(__file__).resolve().parents[2] / "src"


def _airlock(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airlock", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


def test_run_messages_prints_the_answer_as_json(smollm2: Path, tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(
        json.dumps([{"role": "user", "content": "What is the capital of France?"}])
    )
    done = _airlock(
        ["run", str(smollm2), "--messages", "m.json", "--max-tokens", "24", "--timeout", "600"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "Paris" in out["text"] and out["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 20
    assert "runtime text-gguf" in done.stderr  # the load line goes to stderr: stdout is the JSON alone


def test_chat_answers_each_line_and_keeps_the_conversation(smollm2: Path, tmp_path: Path) -> None:
    done = _airlock(
        [
            "chat",
            str(smollm2),
            "--max-tokens",
            "24",
            "--timeout",
            "600",
            "--system",
            "Answer in one sentence.",
        ],
        tmp_path,
        stdin="What is the capital of France?\nAnd of Germany?\n",
    )
    assert done.returncode == 0, done.stderr
    answers = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(answers) == 2, done.stdout
    assert "Paris" in answers[0] and "Berlin" in answers[1], answers


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--prompt", "x", "--load-only"], "do not go with --load-only"),
        (["--prompt", "x", "--messages", "m.json"], "not both"),
        (["--prompt", "x", "--system", "s"], "--system goes with --messages"),
        (["--prompt", "x", "--temperature", "3"], "temperature"),
        (
            ["--prompt", "x", "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e"],
            "stop",
        ),
        (["--messages", "fifo"], "not a regular file"),
        (["--messages", "bad.json"], "not JSON"),
    ],
)
def test_bad_text_options_fail_before_any_load(
    args: list[str], error: str, tmp_path: Path, smollm2: Path
) -> None:
    (tmp_path / "m.json").write_text("[]")
    (tmp_path / "bad.json").write_text("[{")
    os.mkfifo(tmp_path / "fifo")
    done = _airlock(["run", str(smollm2), *args], tmp_path)
    assert done.returncode == 2 and error in done.stderr, done.stderr
    assert "loaded" not in done.stderr and "Traceback" not in done.stderr


def test_ssti_template_is_refused_and_forced_through_it_reaches_nothing(
    smollm2: Path, tmp_path: Path
) -> None:
    target = tmp_path / "pwned"
    template = SSTI.format(target=str(target))
    # the payload is real: a plain Jinja environment (what the vulnerable loader used) runs it
    proof = tmp_path / "proof"
    subprocess.run(
        [sys.executable, "-c", "import jinja2, sys; jinja2.Environment().from_string(sys.argv[1]).render(messages=[])",
         SSTI.format(target=str(proof))],
        check=True,
        timeout=60,
    )  # fmt: skip
    assert proof.is_dir()
    model = with_template(smollm2, tmp_path / "ssti.gguf", template)
    (tmp_path / "m.json").write_text(json.dumps([{"role": "user", "content": "hi"}]))

    scan = _airlock(["scan", str(model)], tmp_path)
    assert scan.returncode == 1 and "MALICIOUS" in scan.stdout, scan.stdout
    refused = _airlock(["run", str(model), "--messages", "m.json"], tmp_path)
    assert refused.returncode == 2 and "MALICIOUS" in refused.stderr, refused.stderr
    assert "loaded" not in refused.stderr

    forced = _airlock(
        ["run", str(model), "--messages", "m.json", "--unsafe-skip-scan", "--timeout", "600"], tmp_path
    )
    assert "--unsafe-skip-scan" in forced.stderr  # loudly
    assert forced.returncode == 2, forced.stdout
    # the job's renderer names the template as the cause (airlock.sandbox._runtimes._template)
    assert "generate failed: TemplateError: chat template: SecurityError" in forced.stderr or (
        "chat template: UndefinedError" in forced.stderr
    ), forced.stderr
    assert not target.exists()


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(smollm2: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airlock", "chat", str(smollm2), "--max-tokens", "300", "--timeout", "600"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"Tell me a very long story about a dragon.\n")
        proc.stdin.flush()
        first = proc.stdout.read(1)  # the answer has started to stream (after the load)
        assert first, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(b"What is the capital of France?\n", timeout=900)
    finally:
        proc.kill()
    text = (first + out).decode()
    assert proc.returncode == 0, err.decode()
    assert b"[stopped]" in err and b"Traceback" not in err
    answers = [line for line in text.splitlines() if line.strip()]
    assert len(answers) == 2 and "Paris" in answers[1], answers
    assert len(answers[0]) < 300 * 4  # the story was cut short, not told to its 300 tokens
