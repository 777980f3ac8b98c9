"""A verified scan judges exactly what verification covered (outside review of verify/sign).

1. Every name the scan meets must be what verification hashed or accepted on purpose. The
   signature inside the folder is left out of the comparison as *that one regular file*: a folder,
   link, FIFO or other file put at its name after the check, or anything under that name, was
   never checked and is ``integrity.changed`` (the walk used to skip everything under the excluded
   name as if ignored, then scan it from disk as verified content). A verified name met as a
   FIFO or a link, or gone, is the same error. ``--unsafe-ignore`` is the user's explicit choice
   and keeps covering everything at and under its path (still scanned, from disk).
2. Folder checks (the Hugging Face check reads config.json, *.py, templates, shard indexes) read
   the verified bytes, not the disk's bytes of the moment: a file rewritten between the check and
   the scan (a write through a shared mapping leaves its times alone) used to be judged as the
   harmless bytes the check saw, while the verified bytes the loader gets were never analysed.

The swaps run where a concurrent writer would act: after verification, before the scan's walk or
between its folder checks and the reading of the files (hooks on the scan's own steps, real
files, the real CLI).
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import airlock._scan.api as scan_api
from airlock._cli import main
from airlock._scan.api import scan
from airlock._scan.pool import run as pool_run
from airlock._scan.walk import walk as scan_walk
from airlock.integrity import hash, sign, verify
from airlock.integrity._lock import render_lock
from tests.integrity.integrity_helpers import build_model, write_key_pair

RULE = "integrity.changed"
#: a harmless pickle: the integer 1 (pickle.load gives 1; the scan reads it as a clean pickle)
PICKLE = pickle.dumps(1, protocol=4)
CONFIG = b'{"model_type": "gpt2", "auto_map": {"AutoModel": "modeling_x.Model"}}'
#: remote code that runs a process at import: the folder check's analysis calls it MALICIOUS
EVIL = b'import os\nos.system("true")\nclass Model: pass\n'
#: the same length, harmless: what the check is shown while the loader gets EVIL
TAME = b"import os\nos.getcwd(  )    \nclass Model: pass\n"
assert len(EVIL) == len(TAME)


def _rules(report: Any) -> dict[str, list[str]]:
    return {os.path.relpath(f.path, report.root): sorted(i.rule for i in f.findings) for f in report.files}


def _messages(report: Any, name: str) -> list[str]:
    return [
        i.message for f in report.files if os.path.relpath(f.path, report.root) == name for i in f.findings
    ]


def _signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = build_model(tmp_path / "model", {"config.json": b'{"model_type": "gpt2"}', "w.pkl": PICKLE})
    private, public = write_key_pair(tmp_path, "signer")
    sig = model / "model.sig"
    sign(model, key=private, output=sig)
    return model, sig, public


def _after_walk(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None], before: bool = True) -> None:
    """Run ``change`` just before the verified scan walks the folder (``before``), or just after
    the walk listed it (a swap racing the scan's own reads)."""
    real = scan_walk

    def walk(*args: Any, **kwargs: Any) -> Iterator[Any]:
        if before:
            change()
        entries = list(real(*args, **kwargs))
        if not before:
            change()
        return iter(entries)

    monkeypatch.setattr(scan_api, "walk", walk)


def test_the_pickle_fixture_loads_with_the_real_loader(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "x.pkl").write_bytes(PICKLE)
    code = "import pickle,sys; print(pickle.load(open(sys.argv[1], 'rb')))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.pkl")], check=True, capture_output=True, timeout=60
    )
    assert out.stdout.strip() == b"1"


# --- 1. the signature's name is exempt as that one file only ---------------------------------


def test_untouched_signature_in_the_folder_is_covered(tmp_path: Path) -> None:
    model, sig, public = _signed(tmp_path)
    report = scan(model, verified=verify(model, signature=sig, key=public))
    assert report.verdict.value == "CLEAN"
    assert all(RULE not in found for found in _rules(report).values())


def test_signature_turned_folder_after_verification_is_unverified(tmp_path: Path) -> None:
    model, sig, public = _signed(tmp_path)
    verified = verify(model, signature=sig, key=public)
    sig.unlink()
    (sig / "sub").mkdir(parents=True)
    (sig / "sub" / "evil.pkl").write_bytes(PICKLE)
    report = scan(model, verified=verified)
    assert report.verdict.value == "ERROR"
    rules = _rules(report)
    assert rules["model.sig/sub/evil.pkl"] == [RULE]
    assert _messages(report, "model.sig/sub/evil.pkl")[0].startswith("not in the verified manifest")
    assert rules["w.pkl"] == [] and RULE not in rules["config.json"]


def _to_link(sig: Path) -> None:
    sig.unlink()
    sig.symlink_to("w.pkl")  # a link to verified bytes: a name the loader may open, never checked


def _to_other_file(sig: Path) -> None:
    sig.unlink()
    sig.write_bytes(PICKLE)


def _to_fifo(sig: Path) -> None:
    sig.unlink()
    os.mkfifo(sig)


@pytest.mark.parametrize("change", [_to_link, _to_other_file, _to_fifo])
def test_signature_replaced_after_verification_is_unverified(tmp_path: Path, change: Any) -> None:
    model, sig, public = _signed(tmp_path)
    verified = verify(model, signature=sig, key=public)
    change(sig)
    report = scan(model, verified=verified)
    assert report.verdict.value == "ERROR"
    assert _rules(report)["model.sig"] == [RULE]


def test_cli_scan_signature_turned_folder_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(tmp_path / "model", {"config.json": b'{"model_type": "gpt2"}', "w.pkl": PICKLE})
    private, public = write_key_pair(tmp_path, "signer")
    sig = model / "model.sig"
    assert main(["sign", str(model), "--key", str(private), "-o", str(sig)]) == 0

    def swap() -> None:  # after `airlock scan` verified the folder, before it walks it
        sig.unlink()
        sig.mkdir()
        (sig / "evil.pkl").write_bytes(PICKLE)

    _after_walk(monkeypatch, swap)
    capsys.readouterr()
    code = main(["scan", str(model), "--signature", str(sig), "--key", str(public), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2 and doc["verdict"] == "ERROR"
    found = {os.path.relpath(f["path"], str(model)): [i["rule"] for i in f["findings"]] for f in doc["files"]}
    assert found["model.sig/evil.pkl"] == [RULE]


def test_unsafe_ignore_still_covers_everything_under_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The user's explicit choice: a lock file kept in the folder, ignored by name, covers what
    # later lies under that name too; it is scanned (from disk) like any other file.
    model = build_model(tmp_path / "model", {"config.json": b'{"model_type": "gpt2"}', "w.pkl": PICKLE})
    lock = model / "model.lock"
    lock.write_text(render_lock(hash(model)))
    assert main(["verify", str(model), "--lock", str(lock)]) == 1
    assert "extra: model.lock" in capsys.readouterr().err  # never exempt by itself

    def swap() -> None:
        lock.unlink()
        lock.mkdir()
        (lock / "x.pkl").write_bytes(PICKLE)

    _after_walk(monkeypatch, swap)
    argv = ["scan", str(model), "--lock", str(lock), "--unsafe-ignore", "model.lock", "--format", "json"]
    code = main(argv)
    doc = json.loads(capsys.readouterr().out)
    found = {os.path.relpath(f["path"], str(model)): [i["rule"] for i in f["findings"]] for f in doc["files"]}
    assert code == 0 and doc["verdict"] == "CLEAN"
    assert "model.lock/x.pkl" in found and RULE not in found["model.lock/x.pkl"]
    assert any("unsafe-ignore" in option for option in doc["unsafe_options"])


# --- a verified name met as something else, or gone ------------------------------------------


def _verified(tmp_path: Path, files: dict[str, bytes] | None = None) -> tuple[Path, Any]:
    model = build_model(tmp_path / "model", files or {"config.json": CONFIG, "modeling_x.py": EVIL})
    lock = tmp_path / "model.lock"
    lock.write_text(render_lock(hash(model)))
    return model, verify(model, lock=lock)


def _config_to_fifo(model: Path) -> None:
    (model / "config.json").unlink()
    os.mkfifo(model / "config.json")


def _config_to_link(model: Path) -> None:
    (model / "config.json").unlink()
    (model / "config.json").symlink_to("modeling_x.py")  # to verified bytes, under another name


@pytest.mark.parametrize("change", [_config_to_fifo, _config_to_link])
def test_verified_name_met_as_fifo_or_link_is_unverified(tmp_path: Path, change: Any) -> None:
    model, verified = _verified(tmp_path)
    change(model)
    report = scan(model, verified=verified)
    assert report.verdict.value in ("ERROR", "MALICIOUS")
    assert _rules(report)["config.json"] == [RULE]


def test_verified_file_gone_is_reported(tmp_path: Path) -> None:
    model, verified = _verified(tmp_path, {"config.json": b'{"model_type": "gpt2"}', "w.pkl": PICKLE})
    (model / "w.pkl").unlink()
    report = scan(model, verified=verified)
    assert report.verdict.value == "ERROR"
    assert _rules(report)["w.pkl"] == [RULE]
    assert _messages(report, "w.pkl")[0].startswith("missing after verification")


# --- 2. folder checks read the verified bytes ------------------------------------------------


def _rewrite_between_check_and_read(
    monkeypatch: pytest.MonkeyPatch, path: Path, shown: bytes
) -> Callable[[], None]:
    """Dirty the first page of ``path`` through a shared mapping (before verification), then,
    after verification, show the folder check ``shown`` and put the verified bytes back just
    before the scan reads the files: writes to an already-dirty page leave the file's times
    alone, so the file still looks like the one that was hashed. Returns the cleanup."""
    data = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    mapping = mmap.mmap(fd, len(data), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    mapping[0] = data[0]  # dirty now (its times updated now, before verification)
    real_walk, real_run = scan_walk, pool_run

    def walk(*args: Any, **kwargs: Any) -> Any:
        mapping[: len(shown)] = shown
        return real_walk(*args, **kwargs)

    def run(*args: Any, **kwargs: Any) -> Any:
        mapping[: len(data)] = data
        return real_run(*args, **kwargs)

    monkeypatch.setattr(scan_api, "walk", walk)
    monkeypatch.setattr(scan_api, "run", run)

    def close() -> None:
        mapping.close()
        os.close(fd)

    return close


def test_folder_check_reads_the_verified_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(tmp_path / "model", {"config.json": CONFIG, "modeling_x.py": EVIL})
    lock = tmp_path / "model.lock"
    close = _rewrite_between_check_and_read(monkeypatch, model / "modeling_x.py", TAME)
    try:
        assert main(["hash", str(model), "--format", "lock", "-o", str(lock)]) == 0
        capsys.readouterr()
        code = main(["scan", str(model), "--lock", str(lock), "--format", "json"])
        doc = json.loads(capsys.readouterr().out)
    finally:
        close()
    assert (model / "modeling_x.py").read_bytes() == EVIL  # what a loader now imports
    found = {os.path.relpath(f["path"], str(model)): f["findings"] for f in doc["files"]}
    rules = [i["rule"] for i in found["modeling_x.py"]]
    # the check met bytes that are not the verified ones: an error, not the harmless verdict
    assert RULE in rules, rules
    assert code != 0 and doc["verdict"] in ("ERROR", "MALICIOUS")


def test_folder_check_of_the_unchanged_verified_file_judges_it(tmp_path: Path) -> None:
    model, verified = _verified(tmp_path)
    report = scan(model, verified=verified)
    assert report.verdict.value == "MALICIOUS"
    assert "hf.remote-code" in _rules(report)["modeling_x.py"]
    assert all(RULE not in found for found in _rules(report).values())


def _config_swapped_for_fifo(model: Path) -> None:
    (model / "config.json").unlink()
    os.mkfifo(model / "config.json")


def _config_swapped_for_link(model: Path) -> None:
    (model / "other.json").write_bytes(b'{"model_type": "gpt2"}')
    (model / "config.json").unlink()
    (model / "config.json").symlink_to("other.json")


def _config_rewritten(model: Path) -> None:
    (model / "config.json").write_bytes(b'{"model_type": "gpt2"}')


@pytest.mark.parametrize("change", [_config_swapped_for_fifo, _config_swapped_for_link, _config_rewritten])
def test_swap_between_the_walk_and_the_check_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Any
) -> None:
    # the walk met a verified regular file; the check then finds something else at its name
    model, verified = _verified(tmp_path)
    _after_walk(monkeypatch, lambda: change(model), before=False)
    report = scan(model, verified=verified)
    assert report.verdict.value in ("ERROR", "MALICIOUS")
    rules = _rules(report)["config.json"]
    assert RULE in rules and "hf.remote-code" not in rules
    if change is not _config_swapped_for_fifo:  # (a FIFO the check does not open at all)
        messages = _messages(report, "config.json")
        assert any("config.json: changed after verification" in m for m in messages)


def test_oversized_verified_config_is_refused(tmp_path: Path) -> None:
    from airlock.limits import DEFAULT_LIMITS

    big = b'{"model_type": "gpt2", "pad": "' + b"x" * 5000 + b'"}'
    model, verified = _verified(tmp_path, {"config.json": big})
    limits = DEFAULT_LIMITS.replace(max_header_bytes=4096)
    report = scan(model, verified=verified, limits=limits)
    assert any(
        "config.json: 5033 bytes exceeds limit max_header_bytes 4096" in m
        for m in _messages(report, "config.json")
    )


def test_folder_checks_read_file_content_only_through_read_folder_file() -> None:
    # The class, not the one reader: a check that opens a path by name itself would judge the
    # disk's bytes in a verified scan. Readers get bytes, never paths; the only content reads by
    # name in the format package are base.read_folder_file and resolving an hf:// name (before
    # any scan, outside the scanned folder).
    import ast

    import airlock._formats as formats

    allowed = {("base.py", "read_folder_file"), ("hf_cache.py", "resolve_hf_uri")}
    found = []
    for source in sorted(Path(formats.__file__).parent.glob("*.py")):
        tree = ast.parse(source.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                opens = (isinstance(func, ast.Name) and func.id == "open") or (
                    isinstance(func, ast.Attribute)
                    and (
                        func.attr in ("read_bytes", "read_text", "fdopen")
                        or (
                            func.attr == "open"
                            and not (isinstance(func.value, ast.Name) and func.value.id == "tarfile")
                        )
                    )
                )
                if opens and (source.name, function.name) not in allowed:
                    found.append(f"{source.name}:{node.lineno} in {function.name}")
    assert found == []


def test_verified_hugging_face_cache_repository_bookkeeping(tmp_path: Path) -> None:
    # The cache's bookkeeping folder (.no_exist: empty markers, never loaded) is not a name to
    # blame; a file with bytes put in it after the check is, like any other added name.
    from tests.scan.test_hf_cache import build_cache

    source = build_model(tmp_path / "src", {"config.json": b'{"model_type": "gpt2"}', "w.pkl": PICKLE})
    repo = build_cache(tmp_path / "hub", "org/name", source)
    lock = tmp_path / "model.lock"
    lock.write_text(render_lock(hash(repo, allow_symlinks=True)))
    verified = verify(repo, lock=lock, unsafe_allow_symlinks=True)
    report = scan(repo, verified=verified)
    assert report.verdict.value == "CLEAN", _rules(report)
    marker_dir = next((repo / ".no_exist").iterdir())
    (marker_dir / "added.pkl").write_bytes(PICKLE)
    rules = _rules(scan(repo, verified=verified))
    assert rules[f".no_exist/{marker_dir.name}/added.pkl"] == [RULE]
    assert all(RULE not in found for name, found in rules.items() if not name.endswith("added.pkl"))


def test_one_verified_file_is_judged_as_its_verified_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One file given (`airlock scan config.json --expect sha256:...`): the check of its folder
    # reads it as "." of the verification. The disk shows a config without auto_map while the
    # check runs; the loader gets the verified config that names remote code.
    import hashlib

    tame = b'{"model_type": "gpt2", "note": {"AutoModel": "modeling_x.Model"}}'
    tame = tame + b" " * (len(CONFIG) - len(tame))
    assert len(tame) == len(CONFIG)
    model = build_model(tmp_path / "model", {"config.json": CONFIG})
    config = model / "config.json"
    close = _rewrite_between_check_and_read(monkeypatch, config, tame)
    try:
        digest = hashlib.sha256(config.read_bytes()).hexdigest()
        code = main(["scan", str(config), "--expect", f"sha256:{digest}", "--format", "json"])
        doc = json.loads(capsys.readouterr().out)
    finally:
        close()
    assert config.read_bytes() == CONFIG
    rules = [i["rule"] for f in doc["files"] for i in f["findings"]]
    assert RULE in rules, rules
    assert code != 0 and doc["verdict"] == "ERROR"
