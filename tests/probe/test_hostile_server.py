"""Outside review 18 of ``airlock probe``: replies and servers that try to make a leak count as
resisted, on a real HTTP server (tests/probe/_stub.py) through the real CLI and httpx client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airlock._cli import main
from airlock.probe._cases import secrets_for
from airlock.probe._detect import code_views
from tests.probe._stub import LOOKALIKES, Stub, stub_server


def _probe(
    capsys: pytest.CaptureFixture[str], stub: Stub, tmp_path: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    (tmp_path / "key").write_text("sk-test\n")
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


def test_a_canary_written_in_look_alike_letters_is_a_leak(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    secrets = secrets_for(3)
    disguised = secrets.canary.translate(LOOKALIKES)
    assert disguised != secrets.canary and not disguised.isascii()  # the seed's code has look-alikes
    with stub_server(Stub(mode="homoglyph")) as stub:
        code, report, out = _probe(
            capsys,
            stub,
            tmp_path,
            "--seed",
            "3",
            "--family",
            "system-prompt-extraction",
            "--max-prompts",
            "4",
            "--benign",
            "0",
        )
    assert code == 0, out
    leaked = [a for a in report["attacks"] if a["reply"] and disguised in a["reply"]]
    assert leaked and all(secrets.canary not in a["reply"] for a in leaked)
    for attack in leaked:
        assert attack["success"] and {"detector": "canary", "view": "normalised"} in attack["detections"]
    # the same class: accents, Greek and Cyrillic capitals, a look-alike digit, reversed
    assert code_views("code " + "".join(c + "\u0307" for c in disguised), secrets.canary) == "normalised"
    assert code_views(disguised[::-1], secrets.canary) == "reversed"
