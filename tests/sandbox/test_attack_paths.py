"""Outside attack: a job still learns host paths from the *contents* of the runtime it can read.

The neutral view (``/airlock/python``, ``/airlock/site-N``, ``/airlock/src``) renames the mounts,
but the files below them were written at their host paths and say so: the interpreter's
``_sysconfigdata`` (what ``sysconfig.get_config_vars()`` returns), its ELF RUNPATH, the
``.pth``/``direct_url.json`` of an editable install (the checkout), and every ``.pyc`` that pip
compiled at install time (``co_filename``). A job reads all of them without any privilege, in every
configuration (root, uid 65534, no Landlock): they are runtime files it must be able to read.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.sandbox import Sandbox, SandboxPolicy, _launcher
from airlock.sandbox._launcher import runtime_paths
from tests.sandbox._payloads import bytes_tensor, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

REPO = Path(__file__).resolve().parents[2]


def _forbidden() -> list[str]:
    found = {
        str(REPO),
        sys.prefix,
        os.path.realpath(sys.base_prefix),
        os.path.dirname(_launcher._AIRLOCK_ROOT),
    }
    found.update(p for p in runtime_paths() if p != "/usr" and not p.startswith("/usr/"))
    if sys.prefix != sys.base_prefix:  # a virtual environment: the folder holding it (the checkout)
        found.add(os.path.dirname(os.path.realpath(sys.prefix)))
    return sorted(s for s in found if s not in ("/", "/usr") and not s.startswith("/usr/"))


_PROBE = """
import os, sys, json, glob, sysconfig
FORBIDDEN = {forbidden!r}
def hits(data):
    if isinstance(data, bytes):
        data = data.decode('latin-1')
    return sorted(n for n in FORBIDDEN if n in data)
def probe():
    out = {{}}
    out['sysconfig'] = hits(json.dumps({{k: str(v) for k, v in sysconfig.get_config_vars().items()}}))
    with open(sys.executable, 'rb') as f:
        out['interpreter'] = hits(f.read(64 << 20))
    meta = b''
    for d in sys.path:
        for name in glob.glob(d + '/*.pth') + glob.glob(d + '/*.dist-info/direct_url.json'):
            with open(name, 'rb') as f:
                meta += f.read(1 << 20)
    out['install_metadata'] = hits(meta)
    import torch
    cache = os.path.join(os.path.dirname(torch.__file__), '__pycache__')
    pyc = b''
    for name in sorted(os.listdir(cache))[:20]:
        with open(os.path.join(cache, name), 'rb') as f:
            pyc += f.read(1 << 20)
    out['pyc'] = hits(pyc)
    out['where'] = [sys.executable, torch.__file__]
    return out
"""


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = tmp_path_factory.mktemp("attack-paths") / "probe.pt"
    source = _PROBE.format(forbidden=_forbidden())
    setup = (
        f"namespace = {{}}\nexec({source!r}, namespace)\nimport builtins\n"
        "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
    )
    model = exec_then_eval_checkpoint(path, setup, bytes_tensor("airlock_probe()"))
    with (
        Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as sandbox,
        sandbox.open(model) as worker,
    ):
        yield json.loads(worker.state_dict()["evidence"].tobytes())


def test_probe_ran_in_the_neutral_view(seen: dict[str, Any]) -> None:
    # not vacuous: the job sees only neutral names for the files it read
    assert all(where.startswith("/airlock/") for where in seen["where"]), seen["where"]


_HOLE = "runtime files embed their host install paths; renaming the mounts cannot hide file contents"


@pytest.mark.xfail(strict=True, reason=_HOLE)
def test_sysconfig_names_no_host_path(seen: dict[str, Any]) -> None:
    assert seen["sysconfig"] == []


@pytest.mark.xfail(strict=True, reason=_HOLE)
def test_interpreter_binary_names_no_host_path(seen: dict[str, Any]) -> None:
    assert seen["interpreter"] == []


@pytest.mark.xfail(strict=True, reason=_HOLE)
def test_install_metadata_names_no_checkout(seen: dict[str, Any]) -> None:
    assert seen["install_metadata"] == []


@pytest.mark.xfail(strict=True, reason=_HOLE)
def test_compiled_modules_name_no_host_path(seen: dict[str, Any]) -> None:
    assert seen["pyc"] == []
