"""airlock probe against the real SmolLM2-135M-Instruct GGUF served by airlock serve over TLS (the
gateway of tests/gateway, its sandboxed text lane), and the same file as a local TARGET (loaded in
a sandboxed text-gguf job by the probe itself). A tiny budget (one attack, one benign
conversation, 12 tokens each) keeps the runs within CPU reach: the report is produced, it is the
same for the same seed apart from timings, and regression mode fails when the guard is removed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock._cli import main
from tests.probe._served import Served, served_smollm2
from tests.text.conftest import smollm2_path

#: the model loads once in one xdist process, with the other SmolLM2 tests
pytestmark = pytest.mark.xdist_group("smollm2")

#: delimiter confusion: the first prompt of seed 0 (a fake end of conversation) is one this model
#: obeys; the guard's injection detector blocks it. (The second, ChatML control tokens written in the
#: message, was obeyed too until the text runtime read such strings as text: outside review 12;
#: tests/gateway/test_openai.py. With one success in two trials no regression can be shown.)
BUDGET = (
    "--family",
    "delimiter-confusion",
    "--max-prompts",
    "1",
    "--benign",
    "1",
    "--max-tokens",
    "12",
    "--seed",
    "0",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_smollm2(tmp_path_factory.mktemp("probe-e2e")) as running:
        yield running


def _run(served: Served, out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code = main(
        [
            "probe", served.url, "--model", "smol", "--api-key-file", str(served.key_file),
            "--ca", str(served.ca), *BUDGET, "--json", str(out), "--html", str(out.with_suffix(".html")), *extra,
        ]
    )  # fmt: skip
    return code, json.loads(out.read_text(encoding="utf-8"))


def test_report_deterministic_and_regression_when_the_guard_is_removed(
    served: Served, tmp_path: Path
) -> None:
    code, first = _run(served, tmp_path / "first.json")
    assert code == 0
    assert first["schema"] == "airlock.probe/1" and first["target"]["model"] == "smol"
    (family,) = first["families"]
    assert family["family"] == "delimiter-confusion" and family["unguarded"]["trials"] == 1
    assert family["errors"] == 0 and len(first["benign"]) == 1 and first["benign"][0]["reply"]
    assert (tmp_path / "first.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    guard = tmp_path / "guard.toml"
    guard.write_text('injection = "block"\npii = "off"\n', encoding="utf-8")
    code, guarded = _run(served, tmp_path / "guarded.json", "--with-guard", str(guard))
    assert code == 0
    (entry,) = guarded["families"]
    assert entry["blocked_by_guard"] == 1 and entry["guarded"]["rate"] == 0.0
    assert entry["unguarded"] == family["unguarded"]  # the same replies, guard or not

    # the same seed without the guard, against the guarded baseline: exit 1, and the same report
    code, again = _run(served, tmp_path / "again.json", "--baseline", str(tmp_path / "guarded.json"))
    assert code == 1, again["families"]
    assert [r["family"] for r in again["regression"]["regressions"]] == ["delimiter-confusion"]
    assert family["unguarded"]["rate"] == 1.0  # SmolLM2 obeys the injected instruction
    strip = ("timings", "regression")
    assert {k: v for k, v in again.items() if k not in strip} == {
        k: v for k, v in first.items() if k not in strip
    }


def test_a_local_gguf_is_probed_inside_the_sandbox_deterministically(tmp_path: Path) -> None:
    """TARGET a GGUF file: gated (scanned: CLEAN), loaded in a sandboxed text-gguf job whose chat
    template is rendered there, probed through the same run; the same seed gives the same report."""
    model = smollm2_path()
    reports = []
    for name in ("first", "second"):
        out = tmp_path / f"{name}.json"
        args = ["probe", str(model), *BUDGET, "--threads", "2", "--timeout", "300", "--json", str(out)]
        assert main(args) == 0
        reports.append(json.loads(out.read_text(encoding="utf-8")))
    first, second = reports
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert first["target"]["url"] == Path(os.path.abspath(model)).as_uri()
    assert first["target"]["model"] == model.name and first["target"]["digest"] == f"sha256:{digest}"
    assert "seccomp" in first["target"]["sandbox"], first["target"]
    (family,) = first["families"]
    assert family["family"] == "delimiter-confusion" and family["unguarded"]["trials"] == 1
    assert family["errors"] == 0 and first["benign"][0]["reply"]
    assert all(a["reply"] and a["finish_reason"] in ("stop", "length") for a in first["attacks"])
    assert {k: v for k, v in first.items() if k != "timings"} == {
        k: v for k, v in second.items() if k != "timings"
    }
