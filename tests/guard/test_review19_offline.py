"""Outside review 19: the guard's JSON Schema check never reaches the network.

jsonschema's default registry fetched any ``$ref`` it could not resolve inside the schema with
urllib at validation time: a DNS lookup (and an HTTP GET) from the trusted process on every check.
The proof runs in a fresh interpreter with an audit hook on every socket event, so a lookup is
seen whether or not the machine has a network."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping

import pytest

from airlock.errors import UsageError
from airlock.guard import Decision, Guard, GuardConfig, ValidationConfig


def _run(schema: Mapping[str, object]) -> dict[str, object]:
    code = textwrap.dedent(
        """
        import json, sys
        events = []
        def hook(event, args):
            if event.startswith("socket."):
                events.append(event)
        sys.addaudithook(hook)
        from airlock.guard import Guard, GuardConfig, ValidationConfig
        schema = json.loads(sys.argv[1])
        try:
            config = ValidationConfig(json_schema=schema)
        except Exception as exc:
            print(json.dumps({"events": events, "outcome": type(exc).__name__}))
            raise SystemExit(0)
        guard = Guard(GuardConfig(unicode=None, filter=None, pii=None, validation=config))
        try:
            result = guard.check('{"a": 1}')
            outcome = [result.decision.name, [f.rule for f in result.findings]]
        except Exception as exc:
            outcome = type(exc).__name__
        print(json.dumps({"events": events, "outcome": outcome}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(schema)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "http://schemas.airlock-review.invalid/s.json"},
        {"properties": {"a": {"$ref": "https://schemas.airlock-review.invalid/a.json#/x"}}},
        {"$id": "https://schemas.airlock-review.invalid/root.json", "$ref": "other.json"},
        {"$dynamicRef": "http://schemas.airlock-review.invalid/d.json"},
    ],
)
def test_a_schema_that_refers_outside_itself_is_refused_without_a_lookup(schema: dict[str, object]) -> None:
    got = _run(schema)
    assert got == {"events": [], "outcome": "UsageError"}


def test_a_reference_the_static_walk_misses_is_refused_offline_at_check_time() -> None:
    # the $id lives in a "const" value (data, not a schema), so the walk counts it as declared;
    # the validator still cannot resolve it: the document is refused and nothing is looked up
    schema = {
        "$ref": "http://schemas.airlock-review.invalid/other.json",
        "const": {"$id": "http://schemas.airlock-review.invalid/other.json"},
    }
    got = _run(schema)
    assert got == {"events": [], "outcome": ["BLOCKED", ["validate.json-schema"]]}


def test_local_references_and_bundled_meta_schemas_still_work() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    g = Guard(
        GuardConfig(unicode=None, filter=None, pii=None, validation=ValidationConfig(json_schema=schema))
    )
    assert g.check('{"a": 1}').decision is Decision.ALLOWED
    assert g.check('{"a": "x"}').decision is Decision.BLOCKED
    with pytest.raises(UsageError, match="never fetches a schema"):
        ValidationConfig(json_schema={"$ref": "https://schemas.airlock-review.invalid/x.json"})
