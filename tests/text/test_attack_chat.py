"""Outside attack on ``airlock chat``: a model that goes silent cannot take the terminal hostage.

Ctrl-C while an answer streams only raised a flag, checked when the next token arrived. A model
that sends no token (here: a chat template of four nested ``range(1000)`` loops, which renders,
inside the job, for hours; the scanner once called it CLEAN, it is SUSPICIOUS ``template.resource``
now, so the user has to let it through with ``--unsafe-allow-suspicious``) left the user with a chat
that ignored every Ctrl-C until ``--timeout`` (300 s by default) killed the worker. Now a second Ctrl-C during
the same answer gives up on it at once: the job is dropped (killed) and the chat ends (exit 130).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from airlock._analysis.template import analyse_template
from airlock.limits import DEFAULT_LIMITS
from tests.text.conftest import with_template

SRC = Path(__file__).resolve().parents[2] / "src"
#: 10**12 loop iterations: endless to the renderer (every range is small, their product is not)
SILENT = (
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
    "{% for d in range(1000) %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
    "{% for m in messages %}{{ m.content }}{% endfor %}"
)
TIMEOUT = 500  # --timeout: each step's deadline, far longer than the test waits after Ctrl-C


def test_ctrl_c_twice_ends_a_chat_whose_model_went_silent(smollm2: Path, tmp_path: Path) -> None:
    # the gate stops it; the user lets it through
    assert [i.rule for i in analyse_template("silent", SILENT, DEFAULT_LIMITS)] == ["template.resource"]
    model = with_template(smollm2, tmp_path / "silent.gguf", SILENT)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airlock",
            "chat",
            str(model),
            "--timeout",
            str(TIMEOUT),
            "--unsafe-allow-suspicious",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        seen = b""  # the warnings, then "loaded ... in the sandbox [...]" once the load is done
        for _ in range(50):
            line = proc.stderr.readline()
            seen += line
            if b"loaded" in line or not line:
                break
        assert b"loaded" in seen, seen + proc.stderr.read()
        proc.stdin.write(b"hello\n")
        proc.stdin.flush()
        time.sleep(3)  # the job renders the template: no token comes
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("airlock chat ignored two Ctrl-C while the model was silent") from None
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    assert took < 60 and proc.returncode == 130, (proc.returncode, err[-2000:])
    assert b"Traceback" not in err, err[-2000:]
