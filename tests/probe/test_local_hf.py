"""airlock probe with a local Hugging Face folder as TARGET: a tiny Llama with random weights
(built by tests/probe/hf_chat_model.py in a throwaway process), gated file by file, loaded and
chatted with in a sandboxed ``lm-score`` job that renders the chat template there.

The report is produced and is the same for a seed; the template is found where transformers
finds it; a folder without one, a template that tries to leave Jinja's sandbox or that never ends,
and remote code (``auto_map``) are each a clear error or never run; this process never compiles
the template (an audit hook watches every ``compile``)."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from airlock._cli import main
from airlock.sandbox._runtimes.lm_score import (
    BUNDLE_FILES,
    BUNDLE_MAGIC,
    CHAT_BUNDLE_MAGIC,
    _read_bundle,
    chat_template,
)
from tests.formats_hf.test_hf_template import cve_2024_34359
from tests.probe import hf_chat_model
from tests.text.test_attack_templates import EXHAUSTING

pytestmark = pytest.mark.xdist_group("probe-hf")

_HERE = Path(__file__).resolve().parent
_SRC = _HERE.parents[1] / "src"
_BUDGET = ("--max-prompts", "3", "--benign", "1", "--max-tokens", "5", "--load-timeout", "300")
#: a constant only the template holds: whoever compiles the template compiles this string
MARKER = "ZQXJ-TEMPLATE-MARKER"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "tiny-chat"
    done = subprocess.run(
        [sys.executable, str(_HERE / "hf_chat_model.py"), str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert 10_000 < int(done.stdout.split()[-1]) < 1_000_000  # tiny, not vacuous
    return out


@pytest.fixture
def model(built: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-chat"
    shutil.copytree(built, folder)
    return folder


def _tokenizer_config(folder: Path, **changes: object) -> None:
    path = folder / "tokenizer_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    path.write_text(json.dumps(settings), encoding="utf-8")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["probe", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _without_timings(path: Path) -> dict[str, object]:
    report = json.loads(path.read_text(encoding="utf-8"))
    report.pop("timings")
    return report  # type: ignore[no-any-return]


def test_a_folder_is_probed_in_the_sandbox_and_the_report_is_the_same_for_a_seed(
    capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path
) -> None:
    first, second, other = tmp_path / "1.json", tmp_path / "2.json", tmp_path / "3.json"
    for out, seed in ((first, "7"), (second, "7"), (other, "8")):
        code, text = _run(capsys, str(model), "--seed", seed, "--json", str(out), *_BUDGET)
        assert code == 0, text
    report = _without_timings(first)
    assert report == _without_timings(second)
    assert report != _without_timings(other)  # not vacuous: another seed, other prompts
    target = report["target"]
    assert isinstance(target, dict)
    assert target["url"] == model.absolute().as_uri() and target["model"] == "tiny-chat"
    assert str(target["digest"]).startswith("sha256:") and "seccomp-job" in str(target["sandbox"])
    attacks = report["attacks"]
    assert isinstance(attacks, list) and len(attacks) == 3
    for attack in attacks:  # every case was answered by the model (5 tokens: finish "length")
        assert attack["error"] is None and attack["finish_reason"] == "length", attack


def test_the_trusted_process_never_compiles_the_template(model: Path, tmp_path: Path) -> None:
    """An audit hook in the probe's own process records every ``compile`` whose source holds the
    template's marker. Jinja compiles a template to Python source before it renders it: none may
    happen here (the scan gate only parses it, the job renders it). Then, in the same process, the
    test renders the template with jinja2 itself: the hook sees that one (it is not blind)."""
    template = "{% set airlock_marker = '" + MARKER + "' %}" + hf_chat_model.TEMPLATE
    _tokenizer_config(model, chat_template=template)
    script = f"""
import json, sys
seen = []
def hook(event, args):
    if event == "compile" and isinstance(args[0], (str, bytes)) and {MARKER!r} in str(args[0]):
        seen.append(event)
sys.addaudithook(hook)
from airlock._cli import main
from airlock.sandbox._runtimes.lm_score import (
    BUNDLE_FILES,
    BUNDLE_MAGIC,
    CHAT_BUNDLE_MAGIC,
    _read_bundle,
    chat_template,
)
code = main(["probe", {str(model)!r}, "--json", {str(tmp_path / "r.json")!r}, *{_BUDGET!r}])
during = len(seen)
sandboxed = "jinja2.sandbox" in sys.modules
from jinja2.sandbox import ImmutableSandboxedEnvironment
ImmutableSandboxedEnvironment().from_string({template!r}).render(messages=[])
print(json.dumps({{"code": code, "during": during, "sandboxed": sandboxed, "control": len(seen)}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(_SRC)}, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen == {"code": 0, "during": 0, "sandboxed": False, "control": 1}, done.stderr[-2000:]


def test_the_template_is_rendered_in_the_job_and_the_jinja_file_comes_first(
    capsys: pytest.CaptureFixture[str], model: Path
) -> None:
    """chat_template.jinja holds a template that raises its own message: the load (which renders
    the template once, in the job) fails with exactly that message, so that template was the one
    rendered, not tokenizer_config.json's, as in transformers."""
    (model / "chat_template.jinja").write_text(
        "{{ raise_exception('from the jinja file') }}", encoding="utf-8"
    )
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "chat template: from the jinja file" in out, out
    assert "Traceback" not in out


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def test_where_the_job_looks_for_the_template() -> None:
    """The job's search order (lm_score.chat_template, pure: bytes in, text out), as transformers':
    chat_template.jinja, then tokenizer_config.json (a string, or the ``default`` of a named list),
    then chat_template.json; anything else is an error that names the files."""
    jinja, named, legacy = (
        b"J",
        [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
        "L",
    )
    assert (
        chat_template({"chat_template.jinja": jinja, "tokenizer_config.json": _json({"chat_template": "C"})})
        == "J"
    )
    assert chat_template({"tokenizer_config.json": _json({"chat_template": "C"})}) == "C"
    assert chat_template({"tokenizer_config.json": _json({"chat_template": named})}) == "D"
    assert (
        chat_template(
            {"tokenizer_config.json": b"{}", "chat_template.json": _json({"chat_template": legacy})}
        )
        == "L"
    )
    with pytest.raises(ValueError, match="none is 'default'"):
        chat_template({"tokenizer_config.json": _json({"chat_template": named[:1]})})
    with pytest.raises(ValueError, match="has no chat template"):
        chat_template({"tokenizer_config.json": b"{}"})
    with pytest.raises(ValueError, match="not a string"):
        chat_template({"tokenizer_config.json": _json({"chat_template": 3})})
    with pytest.raises(ValueError, match="must be a JSON object"):
        chat_template({"tokenizer_config.json": b"[]"})


def test_a_folder_without_a_chat_template_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], model: Path
) -> None:
    _tokenizer_config(model, chat_template=None)
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "the model has no chat template" in out, out
    assert "Traceback" not in out


def test_a_template_that_tries_to_leave_jinjas_sandbox_never_runs(
    capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path
) -> None:
    """The published payload (CVE-2024-34359): the scan gate refuses it; forced through with
    --unsafe-skip-scan, the job's sandboxed Jinja refuses the attribute: a clear error, exit 2."""
    pwned = tmp_path / "pwned"
    _tokenizer_config(model, chat_template=cve_2024_34359(pwned) + hf_chat_model.TEMPLATE)
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "refused: scan MALICIOUS" in out, out
    code, out = _run(capsys, str(model), "--unsafe-skip-scan", *_BUDGET)
    assert code == 2 and "WARNING: --unsafe-skip-scan" in out, out
    assert "chat template: SecurityError: access to attribute '__class__' of 'tuple' object is unsafe" in out
    assert "Traceback" not in out and not pwned.exists()


def test_a_template_that_never_ends_is_stopped_inside_the_job(
    capsys: pytest.CaptureFixture[str], model: Path
) -> None:
    """10**12 loop iterations that write nothing (SUSPICIOUS to the scan, let through): the job's
    render deadline stops it long before --load-timeout."""
    _tokenizer_config(model, chat_template=EXHAUSTING["nested-ranges"] + hf_chat_model.TEMPLATE)
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "refused: scan SUSPICIOUS" in out, out
    code, out = _run(capsys, str(model), "--unsafe-allow-suspicious", *_BUDGET)
    assert code == 2 and "chat template: rendering took more than 10 s" in out, out
    assert "Traceback" not in out


def test_remote_code_is_never_run(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    """``auto_map`` to a module of the folder that writes a file when imported: transformers runs
    it with trust_remote_code (proved in a throwaway process); the scan refuses the folder, and
    forced through, the job builds the Llama itself (the module is not even in the bundle)."""
    ran = tmp_path / "remote-code-ran"
    (model / "modeling_evil.py").write_text(
        f"open({str(ran)!r}, 'w').close()\nfrom transformers import LlamaForCausalLM as Evil\n",
        encoding="utf-8",
    )
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    proof = "import sys, transformers\ntransformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)"
    subprocess.run([sys.executable, "-c", proof, str(model)], capture_output=True, timeout=300, check=False)
    assert ran.exists()  # the fixture works: the real loader runs it
    ran.unlink()
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "scan gate" in out and "refused" in out, out
    code, out = _run(capsys, str(model), "--unsafe-skip-scan", "--json", str(tmp_path / "r.json"), *_BUDGET)
    assert code == 0, out
    assert not ran.exists()
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert all(attack["error"] is None for attack in report["attacks"])


def test_links_and_missing_files_are_refused_before_any_job(
    capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path
) -> None:
    """A chat template that is a link to a host file would hand that file to the model (and its
    text to the report): refused, never skipped. A folder missing a needed file: named."""
    secret = tmp_path / "host-secret"
    secret.write_text("{{ 'host secret' }}", encoding="utf-8")
    (model / "chat_template.jinja").symlink_to(secret)
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "chat_template.jinja: a symbolic link" in out, out
    (model / "chat_template.jinja").unlink()
    (model / "tokenizer.json").unlink()
    code, out = _run(capsys, str(model), *_BUDGET)
    assert code == 2 and "is a folder without tokenizer.json" in out, out
    code, out = _run(capsys, str(model), "--expect", "sha256:" + "0" * 64, *_BUDGET)
    assert code == 2 and "--expect checks one file" in out, out


def _bundle(magic: bytes, files: list[tuple[str, bytes]]) -> io.BytesIO:
    table = b"".join(struct.pack("<H", len(n)) + n.encode() + struct.pack("<Q", len(b)) for n, b in files)
    return io.BytesIO(magic + struct.pack("<I", len(files)) + table + b"".join(b for _, b in files))


def test_the_job_reads_only_the_bundles_the_host_makes() -> None:
    """lm_score._read_bundle: a scoring bundle holds exactly the three files; a chat bundle adds
    chat files only in their order, once each; anything else is refused (not silently read)."""
    base = [(name, name.encode()) for name in BUNDLE_FILES]
    chat, files = _read_bundle(_bundle(CHAT_BUNDLE_MAGIC, [*base, ("chat_template.jinja", b"T")]))
    assert chat and files["chat_template.jinja"] == b"T" and files["config.json"] == b"config.json"
    assert _read_bundle(_bundle(BUNDLE_MAGIC, base)) == (False, dict(base))
    bad = [
        _bundle(BUNDLE_MAGIC, [*base, ("tokenizer_config.json", b"{}")]),  # chat files: not for scoring
        _bundle(CHAT_BUNDLE_MAGIC, [*base, ("chat_template.jinja", b"T"), ("tokenizer_config.json", b"{}")]),
        _bundle(CHAT_BUNDLE_MAGIC, [*base, ("chat_template.jinja", b"T"), ("chat_template.jinja", b"U")]),
        _bundle(CHAT_BUNDLE_MAGIC, [*base, ("modeling_evil.py", b"import os")]),
        _bundle(CHAT_BUNDLE_MAGIC, base[:2]),
    ]
    for handle in bad:
        with pytest.raises(ValueError, match="the bundle must hold exactly"):
            _read_bundle(handle)
    truncated = _bundle(CHAT_BUNDLE_MAGIC, base).getvalue()[:-3]
    with pytest.raises(ValueError, match="truncated"):
        _read_bundle(io.BytesIO(truncated))
