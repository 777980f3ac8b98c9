"""airlock probe against the real SmolLM2-135M-Instruct GGUF served by airlock serve over TLS (the
gateway of tests/gateway, its sandboxed text lane). A tiny budget (two attacks, one benign
conversation, 12 tokens each) keeps three runs within CPU reach: the report is produced, it is the
same for the same seed apart from timings, and regression mode fails when the guard is removed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock._cli import main
from tests.probe._served import Served, served_smollm2

#: the model loads once in one xdist process, with the other SmolLM2 tests
pytestmark = pytest.mark.xdist_group("smollm2")

#: delimiter confusion: the two first prompts of seed 0 (a fake end of conversation, ChatML tokens)
#: are ones this model obeys; the guard's injection detector blocks both
BUDGET = (
    "--family",
    "delimiter-confusion",
    "--max-prompts",
    "2",
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
    assert family["family"] == "delimiter-confusion" and family["unguarded"]["trials"] == 2
    assert family["errors"] == 0 and len(first["benign"]) == 1 and first["benign"][0]["reply"]
    assert (tmp_path / "first.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    guard = tmp_path / "guard.toml"
    guard.write_text('injection = "block"\npii = "off"\n', encoding="utf-8")
    code, guarded = _run(served, tmp_path / "guarded.json", "--with-guard", str(guard))
    assert code == 0
    (entry,) = guarded["families"]
    assert entry["blocked_by_guard"] == 2 and entry["guarded"]["rate"] == 0.0
    assert entry["unguarded"] == family["unguarded"]  # the same replies, guard or not

    # the same seed without the guard, against the guarded baseline: exit 1, and the same report
    code, again = _run(served, tmp_path / "again.json", "--baseline", str(tmp_path / "guarded.json"))
    assert code == 1, again["families"]
    assert [r["family"] for r in again["regression"]["regressions"]] == ["delimiter-confusion"]
    assert family["unguarded"]["rate"] == 1.0  # SmolLM2 obeys both injected instructions
    strip = ("timings", "regression")
    assert {k: v for k, v in again.items() if k not in strip} == {
        k: v for k, v in first.items() if k not in strip
    }
