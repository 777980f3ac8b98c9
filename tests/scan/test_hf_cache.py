"""The Hugging Face hub cache: scanned as the loader sees it (snapshot names, blob bytes).

The cache is built with huggingface_hub's own conventions (``repo_folder_name``, ``_create_symlink``:
relative links ``snapshots/<commit>/<name> -> ../../blobs/<sha256>``, ``refs/main``), and every
fixture is first shown to be what the real loader reads, offline, in a throwaway process.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock import Severity, Verdict
from airlock._cli import main
from airlock._render.text import render as render_text
from tests.formats_hf.test_hf_folder import _save_pretrained
from tests.formats_hf.test_hf_template import cve_2024_34359

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_ID = "acme/tiny"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def malicious_folder(folder: Path, marker_dir: Path) -> Path:
    """A real transformers folder plus three attacks: remote code that runs a command on import,
    an SSTI chat template and a pickle that runs a command (all with harmless ``touch`` markers)."""
    _save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_tiny.TinyModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_tiny.py").write_text(
        f"import os\nos.system('touch {marker_dir / 'code'}')\n\nclass TinyModel:\n    pass\n"
    )
    (folder / "chat_template.jinja").write_text(cve_2024_34359(marker_dir / "ssti"))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker_dir / "pickle"), protocol=2))
    return folder


def build_cache(hub: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """Put ``source`` (a folder) into ``hub`` the way ``hf_hub_download`` stores a download."""
    from huggingface_hub.file_download import _create_symlink, repo_folder_name

    repo = hub / repo_folder_name(repo_id=repo_id, repo_type="model")
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        pointer = repo / "snapshots" / commit / path.relative_to(source)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        _create_symlink(str(blob), str(pointer), new_blob=False)
    (repo / ".no_exist" / commit).mkdir(parents=True)
    (repo / ".no_exist" / commit / "adapter_config.json").write_bytes(b"")
    locks = hub / ".locks" / repo.name
    locks.mkdir(parents=True)
    (locks / "x.lock").write_bytes(b"")
    return repo


def _run(code: str, hub: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub),
           "HF_HOME": str(hub.parent / "home"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def _facts(report: airlock.Report) -> set[tuple[str, str, Severity]]:
    """(file name as the loader sees it, rule, severity) of every finding that weighs on the verdict."""
    return {
        (Path(f.location.path).name, f.rule, f.severity)
        for f in report.findings()
        if f.severity is not Severity.INFO
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("hfcache")
    markers = base / "markers"
    markers.mkdir()
    plain = malicious_folder(base / "plain", markers)
    hub = base / "hub"
    repo = build_cache(hub, REPO_ID, plain)
    return plain, hub, repo


def test_the_cache_fixture_is_what_the_real_loaders_read(cache: tuple[Path, Path, Path]) -> None:
    plain, hub, repo = cache
    markers = plain.parent / "markers"
    # huggingface_hub resolves the repo offline to our snapshot; transformers imports the remote
    # code from it, torch.load runs the pickle from the blob (each in a throwaway process)
    code = (
        "import sys, torch\nfrom huggingface_hub import snapshot_download, hf_hub_download\n"
        "from transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
        "print(snapshot_download(sys.argv[1], local_files_only=True))\n"
        "get_class_from_dynamic_module('modeling_tiny.TinyModel', sys.argv[1])\n"
        "torch.load(hf_hub_download(sys.argv[1], 'pytorch_model.bin', local_files_only=True), weights_only=False)\n"
    )
    for name in ("code", "pickle"):
        (markers / name).unlink(missing_ok=True)
    done = _run(code, hub, REPO_ID)
    assert done.stdout.strip().endswith(f"snapshots/{COMMIT}"), done.stderr[-2000:]
    assert (markers / "code").exists(), done.stderr[-2000:]
    assert (markers / "pickle").exists(), done.stderr[-2000:]
    assert os.path.islink(repo / "snapshots" / COMMIT / "config.json")


@pytest.mark.parametrize("layout", ["repo", "snapshot", "hub"])
def test_cache_layouts_give_the_plain_folder_verdict(cache: tuple[Path, Path, Path], layout: str) -> None:
    plain, hub, repo = cache
    expected = airlock.scan(plain)
    assert expected.verdict is Verdict.MALICIOUS
    want = _facts(expected)
    names = {name for name, _, severity in want if severity is Severity.MALICIOUS}
    assert {"modeling_tiny.py", "chat_template.jinja", "pytorch_model.bin"} <= names
    target = {"repo": repo, "snapshot": repo / "snapshots" / COMMIT, "hub": hub}[layout]
    report = airlock.scan(target)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    assert _facts(report) == want, render_text(report)
    # reported under the snapshot name, with the blob that holds the bytes
    by_name = {Path(f.path).name: f for f in report.files}
    pickled = by_name["pytorch_model.bin"]
    assert f"/snapshots/{COMMIT}/pytorch_model.bin" in pickled.path
    assert pickled.blob is not None and "/blobs/" in pickled.blob
    assert hashlib.sha256(Path(pickled.blob).read_bytes()).hexdigest() == Path(pickled.blob).name
    # no blob scanned a second time under its hash, bookkeeping files never an error
    assert not [f for f in report.files if "/blobs/" in f.path]
    assert all(f.verdict is not Verdict.ERROR for f in report.files), render_text(report)


def test_single_linked_file_is_scanned(cache: tuple[Path, Path, Path]) -> None:
    _, _, repo = cache
    link = repo / "snapshots" / COMMIT / "pytorch_model.bin"
    report = airlock.scan(link)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    (file,) = report.files
    assert file.path == str(link) and file.blob is not None
    assert any(f.callable in ("os.system", "posix.system") for f in file.findings)


def test_clean_cache_repo_is_clean(tmp_path: Path) -> None:
    plain = _save_pretrained(tmp_path / "plain")
    repo = build_cache(tmp_path / "hub", "acme/clean", plain)
    assert airlock.scan(plain).verdict is Verdict.CLEAN
    for target in (repo, repo / "snapshots" / COMMIT, tmp_path / "hub"):
        report = airlock.scan(target)
        assert report.verdict is Verdict.CLEAN, render_text(report)


def test_links_leaving_the_cache_repo_are_not_followed(tmp_path: Path) -> None:
    plain = _save_pretrained(tmp_path / "plain")
    repo = build_cache(tmp_path / "hub", "acme/clean", plain)
    outside = tmp_path / "secret.bin"
    outside.write_bytes(pickle.dumps(_Payload(tmp_path / "never"), protocol=2))
    other = build_cache(tmp_path / "hub", "acme/other", plain)
    snap = repo / "snapshots" / COMMIT
    os.symlink(outside, snap / "escape.bin")
    # a link into another repository of the same cache leaves this repository too
    os.symlink(next((other / "blobs").iterdir()), snap / "neighbour.bin")
    report = airlock.scan(snap)
    assert report.verdict is Verdict.SUSPICIOUS, render_text(report)
    by_name = {Path(f.path).name: f for f in report.files}
    for name in ("escape.bin", "neighbour.bin"):
        assert [f.rule for f in by_name[name].findings] == ["fs.symlink-outside"]
        assert by_name[name].blob is None
    assert not any(f.callable in ("os.system", "posix.system") for f in report.findings())


def test_a_folder_outside_the_cache_still_does_not_follow_links(tmp_path: Path) -> None:
    folder = tmp_path / "snapshots" / "x"  # right names, but not under models--org--name
    folder.mkdir(parents=True)
    (tmp_path / "blob").write_bytes(pickle.dumps(_Payload(tmp_path / "never"), protocol=2))
    os.symlink("../../blob", folder / "model.bin")
    report = airlock.scan(folder)
    assert [f.rule for f in report.findings()] == ["fs.symlink-outside"]


def test_hf_uri_scans_the_cached_snapshot(
    cache: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = cache[1]
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    home = hub.parent / "hfhome"
    if not (home / "hub").exists():
        home.mkdir()
        (home / "hub").symlink_to(hub)
    monkeypatch.setenv("HF_HOME", str(home))
    assert main(["scan", f"hf://{REPO_ID}", "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["root"].endswith(f"snapshots/{COMMIT}")
    assert {Path(f["path"]).name for f in document["files"] if f["verdict"] == "MALICIOUS"} >= {
        "modeling_tiny.py", "chat_template.jinja", "pytorch_model.bin"
    }  # fmt: skip
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert main(["scan", f"hf://{REPO_ID}@main"]) == 1
    assert main(["scan", f"hf://{REPO_ID}@{COMMIT}"]) == 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("hf://acme/missing", "not in the local Hugging Face cache"),
        (f"hf://{REPO_ID}@v9", "revision 'v9'"),
        ("hf://acme", "is not hf://ORG/NAME"),
        ("hf://acme/tiny@../../x", "not a branch"),
    ],
)
def test_hf_uri_errors_are_clear(
    cache: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    uri: str,
    message: str,
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(cache[1]))
    assert main(["scan", uri]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_copy_of_the_snapshot_is_a_plain_folder(cache: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """snapshot_download(local_dir=...) copies; the copy is scanned like any folder."""
    _, _, repo = cache
    copy = tmp_path / "copy"
    shutil.copytree(repo / "snapshots" / COMMIT, copy, symlinks=False)
    assert _facts(airlock.scan(copy)) == _facts(airlock.scan(repo / "snapshots" / COMMIT))


def test_folder_findings_join_the_open_file_report_with_any_number_of_jobs(
    cache: tuple[Path, Path, Path],
) -> None:
    plain, _, repo = cache
    for target in (plain, repo / "snapshots" / COMMIT):
        one, two = airlock.scan(target), airlock.scan(target, jobs=2)
        assert _facts(one) == _facts(two) and one.verdict is Verdict.MALICIOUS
        paths = [f.path for f in two.files]
        assert len(paths) == len(set(paths))  # one report per file, folder findings inside it
        by_name = {Path(f.path).name: f for f in two.files}
        code = by_name["modeling_tiny.py"]
        assert code.format == "hf-folder" and code.verdict is Verdict.MALICIOUS
        assert by_name["config.json"].blob is None or "/blobs/" in by_name["config.json"].blob


@pytest.mark.parametrize(
    ("name", "rule"), [("chat_template.jinja", "template.ssti"), ("modeling_tiny.py", "hf.remote-code")]
)
def test_a_single_template_or_code_file_is_judged_by_its_name(
    cache: tuple[Path, Path, Path], name: str, rule: str
) -> None:
    plain, _, repo = cache
    for target in (plain / name, repo / "snapshots" / COMMIT / name):
        report = airlock.scan(target)
        assert report.verdict is Verdict.MALICIOUS, render_text(report)
        (file,) = report.files
        assert file.path == str(target)
        assert any(f.rule == rule and f.severity is Severity.MALICIOUS for f in file.findings)


def test_relative_paths_into_the_cache(
    cache: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, hub, repo = cache
    monkeypatch.chdir(hub)
    for target in (Path(repo.name), Path("."), Path(repo.name) / "snapshots" / COMMIT / "pytorch_model.bin"):
        report = airlock.scan(target)
        assert report.verdict is Verdict.MALICIOUS, render_text(report)
        assert all(f.verdict is not Verdict.ERROR for f in report.files), render_text(report)


@pytest.mark.parametrize("where", [".locks", "models--x--y/.no_exist"])
def test_bookkeeping_folders_hide_nothing(tmp_path: Path, where: str) -> None:
    """A folder named like the cache's bookkeeping (``.locks`` beside a ``models--*`` folder,
    ``<repo>/.no_exist``) was skipped whole; a link elsewhere in the model was skipped as "target
    scanned in place". ``torch.load`` of the link ran the pickle while the scan said CLEAN, exit 0.
    Only empty markers and locks are bookkeeping; every other file in such a folder is scanned."""
    model = tmp_path / "model"
    (model / "models--x--y" / "snapshots").mkdir(parents=True)
    (model / where).mkdir(parents=True, exist_ok=True)
    (model / where / "marker").write_bytes(b"")  # a real marker stays bookkeeping
    marker = tmp_path / "pwned"
    (model / where / "blob").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    (model / "pytorch_model.bin").symlink_to(f"{where}/blob")
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    code = "import sys, torch\ntorch.load(sys.argv[1], weights_only=False)\n"
    subprocess.run([sys.executable, "-c", code, str(model / "pytorch_model.bin")], capture_output=True,
                   timeout=120, check=False)  # fmt: skip
    assert marker.exists()  # the real loader follows the link and runs the pickle
    marker.unlink()
    report = airlock.scan(model)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    (bad,) = [f for f in report.files if f.verdict is Verdict.MALICIOUS]
    assert bad.path.endswith(f"{where}/blob")
    assert {f.callable for f in bad.findings} & {"os.system", "posix.system"}
    assert not any(f.path.endswith("/marker") for f in report.files)
    assert any(s.path.endswith(where) for s in report.skipped)
    assert not marker.exists()


def test_a_snapshot_link_to_a_folder_is_not_scanned_in_place(tmp_path: Path) -> None:
    """``snapshots/<c>/custom_generate -> ../../blobs/gen`` (a folder): the loader imports
    ``custom_generate/generate.py``; scanning the repository folder listed the link as "target
    scanned in place", and ``blobs/gen/generate.py`` was skipped (no Hugging Face file near it):
    CLEAN, exit 0. The hub client links only files to blobs; any other link under a snapshot is
    reported as not followed, as the snapshot scan already did."""
    hub = tmp_path / "hub"
    repo = build_cache(hub, REPO_ID, _save_pretrained(tmp_path / "src"))
    marker = tmp_path / "pwned"
    (repo / "blobs" / "gen").mkdir()
    (repo / "blobs" / "gen" / "generate.py").write_text(
        f"import os\nos.system('touch {marker}')\n\ndef generate(model, *args, **kwargs):\n    return None\n"
    )
    (repo / "snapshots" / COMMIT / "custom_generate").symlink_to("../../blobs/gen")
    code = (
        "import sys, torch\nfrom transformers import AutoModelForCausalLM\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "m.generate(torch.tensor([[1, 2]]), custom_generate=sys.argv[1], trust_remote_code=True, max_new_tokens=2)\n"
    )
    done = _run(code, hub, REPO_ID)
    assert marker.exists(), done.stderr[-3000:]
    marker.unlink()
    for target in (repo, hub, repo / "snapshots" / COMMIT):
        report = airlock.scan(target)
        assert report.verdict is not Verdict.CLEAN, render_text(report)
        (link,) = [f for f in report.files if f.path.endswith("/custom_generate")]
        assert [f.rule for f in link.findings] == ["fs.symlink-outside"], link
