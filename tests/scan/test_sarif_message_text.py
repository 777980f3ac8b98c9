"""SARIF messages are what a code-scanning dashboard shows a person: text the scanned file chose
(an archive member's name, a pickle's argument in the evidence) must not carry control or bidi
characters there. Before, a member named with a right-to-left override was quoted raw in
``message.text`` (``(in archive/<U+202E>lkp.data)``); the evidence was already quoted with Python
escapes, and stays so."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import airlock
from airlock._render import render

HOSTILE = "echo \u202eexe.txt \x1b[2J\x1b[32mverdict: CLEAN\nok"


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (HOSTILE,))


def _messages(root: Path) -> list[dict[str, object]]:
    document = json.loads(render(airlock.scan(root), "sarif"))
    results: list[dict[str, object]] = document["runs"][0]["results"]
    return results


def test_evidence_stays_escaped_in_a_sarif_message(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "model.pkl").write_bytes(pickle.dumps(_Payload(), protocol=4))
    results = [r for r in _messages(root) if r["ruleId"] == "pickle.dangerous-global"]
    assert results
    for result in results:
        text = result["message"]["text"]  # type: ignore[index]
        assert "\u202e" not in text and "\x1b" not in text and "\n" not in text
        assert "\\u202e" in text and "\\x1b\\[2J" in text and "\\n" in text  # SARIF: \[ is a bracket


def test_a_member_name_in_a_sarif_message_is_escaped(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    member = "archive/\u202elkp.data"
    with zipfile.ZipFile(root / "model.pt", "w") as archive:  # a fixture written by the test
        archive.writestr("archive/data.pkl", pickle.dumps(_Payload(), protocol=2))
        archive.writestr(member, b"x")
        archive.writestr("archive/version", b"3\n")
    texts = [str(r["message"]["text"]) for r in _messages(root)]  # type: ignore[index]
    assert any("(in archive/\\u202elkp.data)" in t for t in texts)
    assert all("\u202e" not in t and "\x1b" not in t for t in texts)


def test_a_member_name_makes_no_link_and_its_logical_location_is_escaped(tmp_path: Path) -> None:
    """SARIF 3.11.6: ``[text](target)`` in a plain-text message is a link a viewer follows; the
    logical location is shown by viewers too (outside pass after review 28)."""
    root = tmp_path / "t"
    root.mkdir()
    member = "archive/x [details](https://evil.example/x)\u202e.data"
    with zipfile.ZipFile(root / "model.pt", "w") as archive:  # a fixture written by the test
        archive.writestr("archive/data.pkl", pickle.dumps(_Payload(), protocol=2))
        archive.writestr(member, b"x")
        archive.writestr("archive/version", b"3\n")
    results = _messages(root)
    texts = [str(r["message"]["text"]) for r in results]  # type: ignore[index]
    assert any("\\[details\\](https://evil.example/x)" in t for t in texts)
    assert not any("[details]" in t.replace("\\[details\\]", "") for t in texts)
    names = [
        str(place["fullyQualifiedName"])
        for r in results
        for loc in r["locations"]  # type: ignore[attr-defined]
        for place in loc.get("logicalLocations", [])
    ]
    assert names and all("\u202e" not in n for n in names)
    assert any("\\u202e" in n for n in names)
