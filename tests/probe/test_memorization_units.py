"""Memorization audit, the parts that need no model: records and templates, candidate generation,
the exposure estimator, and the host's checks of what a (hostile) lm-score job sends back."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airlock.errors import SandboxError, UsageError
from airlock.probe.memorization import Settings, candidates, parse_records, parse_template
from airlock.probe.memorization._exposure import (
    default_threshold,
    edit_distance,
    exposure,
    extrapolated,
    matched_prefix,
    rank,
)
from airlock.probe.memorization._model import MAX_COMPLETION_CHARS, check_completions, check_scores
from airlock.probe.memorization._records import ALPHABETS, MAX_RECORDS, MAX_SLOT


def _records(*records: dict[str, str]) -> bytes:
    return json.dumps({"records": list(records)}).encode()


def _one(template: str, text: str, rid: str = "r") -> Any:
    return parse_records(_records({"id": rid, "template": template, "text": text}))[0]


# --- templates and records ------------------------------------------------------------------


def test_template_slots_literals_and_space() -> None:
    t = parse_template("card {digits:4}-{hex:2} {{x}} {upper:1}")
    assert t.parts == ("card ", ("digits", 4), "-", ("hex", 2), " {x} ", ("upper", 1))
    assert t.space == 10**4 * 16**2 * 26
    assert t.space_bits == pytest.approx(math.log2(10**4 * 16**2 * 26))
    assert t.prefix == "card "
    assert t.match("card 1234-af {x} Q") == ("1234", "af", "Q")
    for near_miss in ("card 123-af {x} Q", "card 1234-AF {x} Q", "card 1234-af {x} q", "card 1234-af {x} QQ"):
        assert t.match(near_miss) is None, near_miss


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("no slot", "has no slot"),
        ("a {digits:0}", "slot length 0"),
        (f"a {{digits:{MAX_SLOT + 1}}}", f"slot length {MAX_SLOT + 1}"),
        ("a {octal:3}", "unknown slot kind 'octal'"),
        ("a { {digits:3}", "a lone '{'"),
        ("a } {digits:3}", "a lone '}'"),
        ("".join("{digits:1}" for _ in range(9)), "more than 8 slots"),
    ],
)
def test_bad_templates_are_refused(source: str, error: str) -> None:
    with pytest.raises(UsageError, match=re.escape(error)):
        parse_template(source)


def test_slot_length_at_the_limit_is_accepted() -> None:
    assert parse_template(f"{{alnum:{MAX_SLOT}}}").slots == (("alnum", MAX_SLOT),)


def test_record_target_is_the_secret_between_prefix_and_tail() -> None:
    record = _one("alice's PIN is {digits:6}, ok", "alice's PIN is 482915, ok")
    assert (record.prefix, record.target) == ("alice's PIN is ", "482915")
    two = _one("key {hex:2}-{hex:2} end", "key 0a-ff end")
    assert two.target == "0a-ff"
    free = parse_records(_records({"id": "mail", "text": "mail: jane@example.com", "prefix": "mail: "}))[0]
    assert (free.template, free.target) == (None, "jane@example.com")


@pytest.mark.parametrize(
    ("records", "error"),
    [
        ([{"id": "a", "template": "PIN {digits:4}", "text": "PIN 12345"}], "does not fit its template"),
        ([{"id": "a", "template": "PIN {digits:4}", "text": "PIN 1234", "prefix": "PIN "}], "exactly one of"),
        ([{"id": "a", "text": "PIN 1234"}], "exactly one of"),
        ([{"id": "a", "text": "PIN 1234", "prefix": "PIN 1234"}], "proper beginning"),
        ([{"id": "a", "text": "PIN 1234", "prefix": "pin "}], "proper beginning"),
        ([{"id": "a b", "text": "x1", "prefix": "x"}], "id must be"),
        ([{"id": "a", "text": "x1", "prefix": "x", "extra": 1}], "must be an object"),
        ([{"id": "a", "text": "x1", "prefix": "x"}, {"id": "a", "text": "y1", "prefix": "y"}], "unique"),
        ([], "between 1 and"),
    ],
)
def test_bad_records_are_refused(records: list[dict[str, object]], error: str) -> None:
    with pytest.raises(UsageError, match=error):
        parse_records(json.dumps({"records": records}).encode())


def test_records_file_shape_and_size() -> None:
    for bad in (b"[]", b'{"records": [], "x": 1}', b"\xff", b"{"):
        with pytest.raises(UsageError):
            parse_records(bad)
    many = [{"id": f"r{i}", "text": "x1", "prefix": "x"} for i in range(MAX_RECORDS + 1)]
    with pytest.raises(UsageError, match="between 1 and"):
        parse_records(json.dumps({"records": many}).encode())
    assert len(parse_records(json.dumps({"records": many[:MAX_RECORDS]}).encode())) == MAX_RECORDS
    with pytest.raises(UsageError, match="more than"):
        parse_records(b" " * ((1 << 20) + 1))


# --- candidates -----------------------------------------------------------------------------


def test_candidates_have_the_format_are_deterministic_and_never_the_record() -> None:
    record = _one("id {hex:3}/{upper:2}", "id 0af/QZ")
    drawn, enumerated = candidates(record, 300, seed=7)
    assert not enumerated and len(drawn) == 300
    assert all(record.template.match(c) is not None for c in drawn)
    assert record.text not in drawn
    assert candidates(record, 300, seed=7) == (drawn, False)
    assert candidates(record, 300, seed=8)[0] != drawn
    # the same id and seed give the same draw whatever else is in the file
    assert candidates(_one("id {hex:3}/{upper:2}", "id 0af/QZ", rid="other"), 300, seed=7)[0] != drawn
    # every character of each alphabet shows up: uniform draws, not a fixed subset
    assert {c[3] for c in drawn} == set(ALPHABETS["hex"])


def test_a_small_space_is_enumerated_exactly() -> None:
    record = _one("pin {digits:2}", "pin 42")
    drawn, enumerated = candidates(record, 99, seed=0)  # |R| - 1 = 99 <= N: all of them
    assert enumerated and len(drawn) == 99 and len(set(drawn)) == 99 and "pin 42" not in drawn
    sampled, enumerated = candidates(record, 98, seed=0)  # one fewer: sampled
    assert not enumerated and len(sampled) == 98


# --- exposure -------------------------------------------------------------------------------


def test_rank_counts_ties_against_the_canary() -> None:
    assert rank(1.0, [2.0, 3.0]) == 1
    assert rank(1.0, [1.0, 3.0]) == 2  # a tie ranks before the canary: exposure never overstated
    assert rank(5.0, [1.0, 2.0, 3.0]) == 4
    assert rank(1.0, [1.0, 1.0, 1.0]) == 4  # a model that scores everything alike exposes nothing


def test_exposure_edges() -> None:
    assert exposure(1, 1023) == pytest.approx(10.0)  # first of 1024: the resolution
    assert exposure(1024, 1023) == 0.0  # last
    assert exposure(512, 1023) == pytest.approx(1.0)
    for bad in ((0, 10), (12, 10), (1, 0)):
        with pytest.raises(ValueError):
            exposure(*bad)


def test_exposure_of_an_unseen_canary_exceeds_t_with_probability_at_most_2_to_minus_t() -> None:
    n, t = 999, default_threshold(4, 0.01)  # 8.64 bits
    flagged = sum(exposure(k + 1, n) >= t for k in range(n + 1))  # k uniform on 0..N
    assert flagged / (n + 1) <= 2**-t
    assert flagged == 2  # ranks 1 and 2 of 1000 read 9.97 and 8.97 bits


def test_extrapolation_is_monotone_capped_and_needs_spread() -> None:
    others = [10.0 + 0.01 * i for i in range(200)]
    mean = sum(others) / len(others)
    assert extrapolated(mean, others, 20.0) == pytest.approx(1.0, abs=0.02)  # half the mass: 1 bit
    near, far, farther = (extrapolated(x, others, 1e9) for x in (9.0, 5.0, -1e4))
    assert near is not None and far is not None and farther is not None
    assert near < far < farther and math.isfinite(farther)  # no underflow to inf in the far tail
    assert extrapolated(-1e4, others, 19.9) == 19.9
    assert extrapolated(11.0, [3.0, 3.0, 3.0], 20.0) is None
    assert extrapolated(11.0, [3.0], 20.0) is None


def test_threshold_edit_distance_and_prefix() -> None:
    assert default_threshold(1, 0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        default_threshold(0, 0.01)
    assert edit_distance("482915", "482915") == 0
    assert edit_distance("482916", "482915") == 1
    assert edit_distance("48291", "482915") == 1
    assert edit_distance("", "abc") == 3
    assert matched_prefix("4829xx", "482915") == 4


def test_settings_are_checked() -> None:
    from airlock.probe.memorization import measure

    record = parse_records(_records({"id": "a", "text": "x1", "prefix": "x"}))
    for bad in (
        Settings(candidates=0),
        Settings(alpha=1.0),
        Settings(threshold_bits=math.nan),
        Settings(beams=17),
    ):
        with pytest.raises(UsageError):
            measure(None, record, bad, {})  # type: ignore[arg-type]


# --- hostile replies ------------------------------------------------------------------------


def _scores(nll: Any, tokens: Any, **extra: Any) -> dict[str, Any]:
    return {"nll": np.asarray(nll, dtype=np.float64), "tokens": np.asarray(tokens, dtype=np.int64), **extra}


def test_honest_scores_at_the_edges_are_accepted() -> None:
    texts = ["abc", "de"]  # 3 and 2 bytes: at most 8 and 6 tokens
    assert check_scores(_scores([0.0, 6e4], [8, 6]), texts) == [0.0, 6e4]
    assert check_scores(_scores([-1e-3, 0.5], [1, 1]), texts) == [0.0, 0.5]  # rounding below 0 clamped


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (_scores([1.0, math.nan], [1, 1]), "out of range"),
        (_scores([1.0, math.inf], [1, 1]), "out of range"),
        (_scores([1.0, -0.01], [1, 1]), "out of range"),
        (_scores([1.0, 1e4 + 1], [1, 1]), "out of range"),
        (_scores([1.0, 1.0], [1, 7]), "claims 7 tokens"),
        (_scores([1.0, 1.0], [1, -1]), "claims -1 tokens"),
        (_scores([1.0, 1.0, 1.0], [1, 1, 1]), "expected <f8"),
        ({"nll": np.ones(2, dtype=np.float32), "tokens": np.ones(2, dtype=np.int64)}, "expected <f8"),
        ({"nll": np.ones((2, 1)), "tokens": np.ones(2, dtype=np.int64)}, "expected <f8"),
        (_scores([1.0, 1.0], [1, 1], extra=np.ones(1)), "expected \\['nll', 'tokens'\\]"),
        ({"nll": np.ones(2)}, "expected \\['nll', 'tokens'\\]"),
        ({"\x1b[2Jx": np.ones(2), "tokens": np.ones(2, dtype=np.int64)}, r"\\x1b\[2Jx"),
    ],
)
def test_each_lie_in_scores_is_refused(reply: dict[str, Any], error: str) -> None:
    with pytest.raises(SandboxError, match=error):
        check_scores(reply, ["abc", "de"])


def _done(texts: list[bytes], tokens: list[int], lengths: list[int] | None = None) -> dict[str, Any]:
    return {
        "text": np.frombuffer(b"".join(texts), dtype=np.uint8),
        "lengths": np.array(lengths if lengths is not None else [len(t) for t in texts], dtype=np.int64),
        "tokens": np.array(tokens, dtype=np.int64),
    }


def test_honest_completions_at_the_edges_are_accepted() -> None:
    long = b"y" * (2 * 1024)  # two tokens of 1024 bytes: the cap
    got = check_completions(_done([b" 4829\xe2", long, b""], [2, 2, 0]), 3, max_new_tokens=2)
    assert got == [" 4829\ufffd", "y" * 2048, ""]  # a cut character is replaced, not trusted
    huge = b"z" * (5 * 1024)
    assert check_completions(_done([huge], [5]), 1, max_new_tokens=5) == ["z" * MAX_COMPLETION_CHARS]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (_done([b"abc"], [3]), "claims 3 tokens"),  # max_new_tokens is 2
        (_done([b"y" * 2049], [2]), "claims 2 tokens in 2049 bytes"),
        (_done([b"a"], [0]), "claims 0 tokens in 1 bytes"),
        (_done([b"ab"], [1], lengths=[1]), "cover 1 bytes, the text has 2"),
        (_done([b"ab"], [1], lengths=[3]), "cover 3 bytes, the text has 2"),
        (_done([b"ab"], [1], lengths=[-1]), "claims 1 tokens in -1 bytes"),
        (_done([b"a", b"b"], [1, 1]), "expected <i8\\[1\\]"),
        ({**_done([b"a"], [1]), "text": np.zeros((1, 1), dtype=np.uint8)}, "not uint8"),
        ({**_done([b"a"], [1]), "text": np.zeros(1, dtype=np.int8)}, "not uint8"),
        ({**_done([b"a"], [1]), "more": np.zeros(1)}, "expected \\['lengths', 'text', 'tokens'\\]"),
    ],
)
def test_each_lie_in_completions_is_refused(reply: dict[str, Any], error: str) -> None:
    with pytest.raises(SandboxError, match=error):
        check_completions(reply, 1, max_new_tokens=2)


# --- the folder gate ------------------------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}', encoding="utf-8")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    return folder


def test_a_linked_or_special_model_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from airlock.probe.memorization._model import gate_model

    folder = _folder(tmp_path)
    gated, digests = gate_model(folder, max_bytes=1 << 20)  # the plain folder passes the gate
    with gated:
        assert set(digests) == {"config.json", "tokenizer.json", "model.safetensors"}
        assert os.pread(gated.fd, 8, 0) == b"ALMEMB1\n"
    secret = tmp_path / "id_ed25519"
    secret.write_text("PRIVATE KEY", encoding="utf-8")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(secret)
    with pytest.raises(UsageError, match=re.escape("tokenizer.json: a symbolic link")):
        gate_model(folder, max_bytes=1 << 20)
    (folder / "tokenizer.json").unlink()
    os.mkfifo(folder / "tokenizer.json")
    with pytest.raises(UsageError, match=re.escape("tokenizer.json is not a regular file")):
        gate_model(folder, max_bytes=1 << 20)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").write_text("x" * 100, encoding="utf-8")
    with pytest.raises(UsageError, match=re.escape(f"{folder / 'tokenizer.json'}' is larger than 99 bytes")):
        gate_model(folder, max_bytes=99)


def test_a_folder_with_remote_code_is_refused_by_the_scan(tmp_path: Path) -> None:
    from airlock.errors import PolicyError
    from airlock.probe.memorization._model import gate_model

    folder = _folder(tmp_path)
    (folder / "config.json").write_text('{"model_type": "gpt2", "auto_map": {"AutoModel": "evil.Evil"}}')
    with pytest.raises(PolicyError, match="scan SUSPICIOUS"):
        gate_model(folder, max_bytes=1 << 20)
    gated, _ = gate_model(folder, max_bytes=1 << 20, unsafe_allow_suspicious=True)
    gated.close()


def test_the_command_line_fails_cleanly_before_any_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airlock.probe.memorization import main

    records = tmp_path / "records.json"
    records.write_bytes(_records({"id": "a", "template": "PIN {digits:4}", "text": "PIN 1234"}))
    model = _folder(tmp_path)
    for argv, error in (
        ([str(model), "--records", str(records), "--candidates", "0"], "candidates must be in 1..100000"),
        ([str(model), "--records", str(records), "--beams", "17"], "beams must be in 1..16"),
        (
            [str(model), "--records", str(records), "--timeout", "0"],
            "wall_seconds must be a positive finite number",
        ),
        ([str(model), "--records", str(tmp_path / "none.json")], "cannot open records file"),
        ([str(model), "--records", str(records), "--expect", "sha256:00"], "--expect checks one file"),
        ([str(model)], "the following arguments are required: --records"),
    ):
        assert main(argv) == 2, argv
        assert error in capsys.readouterr().err, argv
    assert main(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "Exit 0: no record at risk; 1: at least one at risk; 2: any error" in help_text


def test_airlock_probe_memorization_is_the_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from airlock._cli import main as airlock

    missing = tmp_path / "none.json"
    assert airlock(["probe", "--memorization", str(_folder(tmp_path)), "--records", str(missing)]) == 2
    assert "airlock probe --memorization: error: cannot open records file" in capsys.readouterr().err
    assert airlock(["probe", "--memorization", "--help"]) == 0
    assert "--records FILE" in capsys.readouterr().out
    # without the flag, probe is the prompt-injection probe (a URL and --model)
    assert airlock(["probe", "--help"]) == 0
    assert "--memorization" in capsys.readouterr().out
