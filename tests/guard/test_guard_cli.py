"""``airlock guard`` end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "airlock", "guard", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_text_json_and_exit_codes(tmp_path: Path) -> None:
    allowed = run("--format", "json", "just words")
    assert allowed.returncode == 0
    assert json.loads(allowed.stdout)["decision"] == "allowed"
    redacted = run("--format", "json", "mail bob@example.com ![x](https://evil.example/?q=1)")
    assert redacted.returncode == 3
    doc = json.loads(redacted.stdout)
    assert doc["text"] == "mail <EMAIL_ADDRESS> «removed»"
    assert [(f["rule"], f["start"], f["end"]) for f in doc["findings"]] == [
        ("filter.exfil-image", 21, 52),
        ("pii.email_address", 5, 20),
    ]
    blocked = run("--pii", "block", "mail bob@example.com")
    assert blocked.returncode == 1
    assert blocked.stdout.decode().startswith("decision: blocked")


def test_file_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes("a\u202eb\n".encode())
    from_file = run("--format", "json", str(path))
    assert json.loads(from_file.stdout)["text"] == "ab\n"
    as_text = run("--format", "json", "--text", str(path))
    assert json.loads(as_text.stdout)["text"] == str(path)
    from_stdin = run("--format", "json", "-", stdin="x\u200by".encode())
    assert json.loads(from_stdin.stdout)["text"] == "xy"


def test_size_limit_on_stdin_reads_no_more_than_needed() -> None:
    out = run("--format", "json", "--max-bytes", "10", "-", stdin=b"x" * 100_000)
    assert out.returncode == 1
    assert json.loads(out.stdout)["findings"][0]["rule"] == "size.bytes"
    assert "11 bytes exceed max_bytes 10" in json.loads(out.stdout)["findings"][0]["reason"]


def test_terminal_output_never_carries_raw_controls() -> None:
    out = run("--hidden", "flag", "red \x1b[31m alarm \u202e evil")
    assert out.returncode == 3
    assert b"\x1b" not in out.stdout and "\u202e".encode() not in out.stdout
    assert b"\\x1b" in out.stdout and b"\\u202e" in out.stdout
    js = run("--hidden", "flag", "--format", "json", "red \x1b[31m \u202e")
    assert b"\x1b" not in js.stdout and "\u202e".encode() not in js.stdout


def test_sink_and_schema(tmp_path: Path) -> None:
    assert run("--sink", "shell", "--format", "json", "it's").stdout.count(b"'\\\"'\\\"'") == 1
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object", "required": ["q"]}')
    assert run("--json-schema", str(schema), '{"q": 1}').returncode == 0
    assert run("--json-schema", str(schema), '{"x": 1}').returncode == 1
    schema.write_text('{"type": 5}')
    bad = run("--json-schema", str(schema), "{}")
    assert bad.returncode == 2
    assert b"not a valid JSON Schema" in bad.stderr and b"Traceback" not in bad.stderr


def test_usage_errors_exit_2() -> None:
    out = run("--max-chars", "0", "x")
    assert out.returncode == 2 and b"max_chars must be a positive integer" in out.stderr
    out = run("--charset", "Nope", "x")
    assert out.returncode == 2 and b"unknown Unicode general categories" in out.stderr
