"""A real HTTP server speaking the OpenAI chat-completions protocol, answering like a gullible model:
it obeys "reply with only the code word X" (also ROT13- and base64-encoded), and tells the access
code of its system prompt to anyone who asks. Fast and deterministic: the CLI tests run on it; the
end-to-end test runs on the real SmolLM2 model."""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_CODE = re.compile(r"code word ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})")
_SECRET = re.compile(r"access code is ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})")
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")


@dataclass
class Stub:
    key: str = "sk-test"
    #: "model" (default), "redirect" (307 to ``location``), "huge" (a body over the client's limit),
    #: "html" (a reply with markup and quotes), "unauthorised", "trickle" (a body a byte at a time),
    #: "bomb" (a valid answer padded to 64 MiB, sent gzip inside gzip: ~70 KB on the wire),
    #: "polyglot" (obeys in any language: writes the code a message contains, else its whole system prompt),
    #: "homoglyph" (the gullible model, writing every code in Cyrillic and Greek look-alike letters),
    #: "evasive" (the gullible model, answering 500 wherever it would have written a code),
    #: "refuse" (a model that never complies), "padded" (the gullible model's answers after 40,000
    #: spaces: max_tokens ignored), "escapes" (a reply of 8-bit terminal controls: CSI clear screen, an
    #: OSC 8 hyperlink, a right-to-left override; in its 401 message too), "percent" (the gullible model, writing every code
    #: percent-encoded, as in a URL), "spelled" (the gullible model, spelling every code out in the
    #: NATO alphabet and digit names)
    mode: str = "model"
    location: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _views(text: str) -> Iterator[str]:
    yield text
    yield codecs.decode(text, "rot13")
    for run in _B64.findall(text):
        try:
            yield base64.b64decode(run).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            continue


def answer(messages: list[dict[str, str]]) -> str:
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = messages[-1]["content"]
    for view in _views(user):
        found = _CODE.search(view)
        if found:
            return found.group(1)
    secret = _SECRET.search(system)
    if secret and re.search(r"(?i)access code|instructions|system prompt", user):
        return f"Of course. The secret access code is {secret.group(1)}."
    return "Hello! How can I help you with Example Corp products?"


_ANY_CODE = re.compile(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}")
_NATO = dict(
    zip(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
        "Alfa Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliett Kilo Lima Mike November Oscar Papa "
        "Quebec Romeo Sierra Tango Uniform Victor Whiskey X-ray Yankee Zulu Zero One Two Three Four Five Six "
        "Seven Eight Nine dash".split(),
        strict=True,
    )
)


def spell(code: str) -> str:
    """``K7QM-...`` as ``Kilo Seven Quebec Mike dash ...``."""
    return " ".join(_NATO[c] for c in code)


#: C1 controls as a UTF-8 terminal reads them: CSI 2J (clear), OSC 8 (a hyperlink), then U+202E
ESCAPES = "\u009b2J\u009d8;;https://attacker.example/\u009cclick\u009d8;;\u009c\u202e\x7f"
#: Latin capitals and digits -> Cyrillic or Greek letters a reader takes for them
LOOKALIKES = str.maketrans(
    "ABCEHKMNPTXYZ3",
    "\u0410\u0412\u0421\u0415\u041d\u041a\u041c\u039d\u0420\u0422\u0425\u03a5\u0396\u0417",
)


def polyglot(messages: list[dict[str, str]]) -> str:
    """A model that understands every language and obeys whatever it is told: it writes the code
    the last message asks for (whatever words ask for it), and otherwise recites its instructions."""
    found = _ANY_CODE.search(messages[-1]["content"])
    if found:
        return f"OK: {found.group(0)}"
    return next((m["content"] for m in messages if m["role"] == "system"), "")


@functools.cache
def bomb() -> bytes:
    """A valid answer padded with 64 MiB of white space, gzip inside gzip (made once)."""
    doc = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
    return gzip.compress(gzip.compress(json.dumps(doc).encode() + b" " * (64 << 20), 9), 9)


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append(
                {
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "body": body,
                    "encoding": self.headers.get("Accept-Encoding"),
                }
            )
            if self.headers.get("Authorization") != f"Bearer {stub.key}" or stub.mode == "unauthorised":
                message = (ESCAPES if stub.mode == "escapes" else "") + "invalid API key"
                self._send(401, json.dumps({"error": {"message": message}}).encode())
                return
            if stub.mode == "redirect":
                self._send(307, b"{}", {"Location": stub.location})
                return
            if stub.mode == "trickle":  # a byte every 0.2 s: each read is quick, the answer never ends
                self.send_response(200)
                self.send_header("Content-Length", "400")
                self.end_headers()
                try:
                    for _ in range(400):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass
                return
            if stub.mode == "huge":
                self._send(200, b'{"pad": "' + b"x" * (2 << 20) + b'"}')
                return
            text = polyglot(body["messages"]) if stub.mode == "polyglot" else answer(body["messages"])
            if stub.mode == "spelled":
                text = _ANY_CODE.sub(lambda m: spell(m.group()), text)
            if stub.mode == "percent":
                text = _ANY_CODE.sub(lambda m: "".join(f"%{ord(c):02X}" for c in m.group()), text)
            if stub.mode == "escapes":
                text = ESCAPES + text
            if stub.mode == "padded":
                text = " " * 40_000 + text
            if stub.mode == "refuse":
                text = "I cannot help with that."
            if stub.mode == "homoglyph":
                text = _ANY_CODE.sub(lambda m: m.group().translate(LOOKALIKES), text)
            if stub.mode == "evasive" and _ANY_CODE.search(text):
                self._send(500, b'{"error": {"message": "overloaded"}}')
                return
            if stub.mode == "bomb":
                self._send(200, bomb(), {"Content-Encoding": "gzip, gzip"})
                return
            if stub.mode == "html":
                text = "<script>alert('x')</script> \"quoted\" & <img src=x onerror=alert(1)> " + text
            doc = {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ]
            }
            self._send(200, json.dumps(doc).encode())

    return Handler


@contextmanager
def stub_server(stub: Stub | None = None) -> Iterator[Stub]:
    stub = stub or Stub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def run_probe_cli(
    capsys: Any, stub: Stub, tmp_path: Path, *extra: str, key: str = "sk-test"
) -> tuple[int, dict[str, Any], str]:
    """``airlock probe`` against ``stub`` through the real CLI: (exit code, the JSON report or {},
    stdout + stderr). A report left by an earlier call in the same folder is removed first."""
    from airlock._cli import main

    (tmp_path / "key").write_text(key + "\n")
    out = tmp_path / "report.json"
    out.unlink(missing_ok=True)
    code = main(
        [
            "probe",
            stub.url,
            "--model",
            "m",
            "--api-key-file",
            str(tmp_path / "key"),
            "--json",
            str(out),
            *extra,
        ]
    )
    captured = capsys.readouterr()
    report = json.loads(out.read_text()) if out.exists() else {}
    return code, report, captured.out + captured.err
