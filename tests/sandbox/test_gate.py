"""One gate in front of the sandbox: the bytes scanned are the bytes loaded, the job never sees a
host path nor a writable file, special files never block, job text is escaped (issue 11)."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from airlock._cli import main
from airlock.errors import PolicyError, SandboxError, UsageError
from airlock.results import Verdict
from airlock.sandbox import Sandbox, SandboxPolicy, Worker, load_state_dict
from tests.sandbox._payloads import bytes_tensor, eval_checkpoint, exec_checkpoint, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

_IN_CLOSE_NOWRITE = 0x10


def _benign(path: Path) -> Path:
    torch.save({"w": torch.arange(3.0)}, path)
    return path


def _evil_bytes(tmp_path: Path) -> bytes:
    return eval_checkpoint(tmp_path / "evil-source.pt", bytes_tensor("b'EVIL'")).read_bytes()


def _suspicious(path: Path) -> Path:
    import ipaddress

    torch.save({"w": torch.ones(2), "x": ipaddress.ip_address("1.2.3.4")}, path)
    return path


class _Inotify:
    """Wait for the first time a reader closes ``path``: the point where a scan-then-reopen gate
    has finished reading, and where an attacker who can write the file swaps its bytes."""

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0
        assert libc.inotify_add_watch(self.fd, os.fsencode(path), _IN_CLOSE_NOWRITE) >= 0

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return bool(ready)

    def close(self) -> None:
        os.close(self.fd)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()


# --- TOCTOU ---------------------------------------------------------------------------------------


def test_run_loads_the_scanned_bytes_even_if_the_file_is_rewritten(tmp_path: Path) -> None:
    model = _benign(tmp_path / "model.pt")
    evil = _evil_bytes(tmp_path)
    watch = _Inotify(model)
    try:
        cli = subprocess.Popen(
            [sys.executable, "-m", "airlock", "run", "--load-only", str(model)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert watch.wait(60), "airlock run never read the model"
        _rewrite_in_place(model, evil)  # right after the gate's read: scanned CLEAN, now malicious
        out, err = cli.communicate(timeout=120)
    finally:
        watch.close()
    text = out.decode() + err.decode()
    assert cli.returncode == 0, text
    assert "w\tfloat32\t[3]" in text
    assert "evidence" not in text, "airlock run loaded bytes it never scanned"


def test_a_gated_model_is_immune_to_later_changes_of_the_path(warm: Sandbox, tmp_path: Path) -> None:
    model = _benign(tmp_path / "model.pt")
    evil = _evil_bytes(tmp_path)
    from airlock.sandbox._gate import gate

    with gate(model) as gated:
        assert gated.report is not None and gated.report.verdict is Verdict.CLEAN
        _rewrite_in_place(model, evil)
        with Worker(gated, sandbox=warm) as worker:
            state = worker.state_dict()
        os.replace(tmp_path / "evil-source.pt", model)  # and a rename over the path
        with Worker(gated, sandbox=warm) as worker:
            assert set(worker.state_dict()) == set(state) == {"w"}


def test_the_job_sees_no_host_path_and_cannot_write_the_model(warm: Sandbox, tmp_path: Path) -> None:
    # /proc/self/fd is masked in every job (test_jobs.py), and a second thread's /proc/TID is not
    # in the job's own /proc at all (test_paths.py): the probe tries both ways to the descriptor;
    # neither may name a host path, and nothing may reopen it for writing.
    probe = (
        "import os, builtins, threading\n"
        "out = {}\n"
        "def look(out=out, os=os, threading=threading):  # exec'd with separate locals: no closures\n"
        "  try:\n"
        "    base = '/proc/%d/fd' % threading.get_native_id()\n"
        "    links, writes = [], []\n"
        "    for n in sorted(os.listdir(base)):\n"
        "        try:\n"
        "            links.append(os.readlink(base + '/' + n))\n"
        "        except OSError as exc:\n"
        "            links.append('?' + exc.strerror)\n"
        "        if links[-1].startswith('/memfd:') or links[-1].startswith('/') and '.pt' in links[-1]:\n"
        "            try:\n"
        "                with open(base + '/' + n, 'r+b') as f:\n"
        "                    f.seek(0, 2)\n"
        "                    f.write(b'APPENDED')\n"
        "                writes.append('wrote ' + n)\n"
        "            except OSError as exc:\n"
        "                writes.append('refused ' + n + ' ' + str(exc.strerror))\n"
        "    out['r'] = '|'.join(links) + '#' + '|'.join(writes)\n"
        "  except BaseException as exc:\n"
        "    out['r'] = 'thread failed: %r#' % (exc,)\n"
        "t = threading.Thread(target=look)\n"
        "t.start()\n"
        "t.join()\n"
        "main = ','.join(sorted(os.listdir('/proc/self/fd')))\n"
        "builtins._probe = (out['r'] + '#' + main).encode()\n"
    )
    model = exec_then_eval_checkpoint(tmp_path / "probe.pt", probe, bytes_tensor("_probe"))
    before = model.read_bytes()
    with warm.open(model) as worker:
        report = bytes(worker.state_dict()["evidence"]).decode()
    links, writes, main_listing = report.split("#")
    assert links.startswith("thread failed: FileNotFoundError"), links  # no /proc/TID: no link to read
    assert str(tmp_path) not in report and "probe.pt" not in report, report
    assert writes == "", writes
    assert main_listing == "", main_listing  # the main thread's view is masked
    assert model.read_bytes() == before


# --- one verdict rule -----------------------------------------------------------------------------


def test_the_verdict_rule_is_shared_with_admission() -> None:
    from airlock.gateway import _admission
    from airlock.sandbox._gate import refusal

    assert getattr(_admission, "refusal") is refusal  # noqa: B009 - not re-exported on purpose
    assert refusal(Verdict.CLEAN) is None
    assert refusal(Verdict.SUSPICIOUS) is not None
    assert refusal(Verdict.SUSPICIOUS, unsafe_allow_suspicious=True) is None
    for verdict in (Verdict.MALICIOUS, Verdict.ERROR):
        assert refusal(verdict, unsafe_allow_suspicious=True) is not None


def test_load_state_dict_scans_and_refuses_malicious(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = exec_checkpoint(tmp_path / "evil.pt", f"open({str(marker)!r}, 'w').close()")
    with pytest.raises(PolicyError, match=r"scan gate: .* refused: scan MALICIOUS; first finding: pickle\."):
        load_state_dict(model, policy=SandboxPolicy(limits=FAST_LIMITS))
    assert not marker.exists()


def test_load_state_dict_refuses_suspicious_unless_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _suspicious(tmp_path / "ip.pt")
    policy = SandboxPolicy(limits=FAST_LIMITS)
    with pytest.raises(PolicyError, match="scan SUSPICIOUS"):
        load_state_dict(model, policy=policy)
    with caplog.at_level(logging.WARNING, logger="airlock.sandbox"):
        state = load_state_dict(model, policy=policy, unsafe_allow_suspicious=True)
    assert np.array_equal(state["w"], np.ones(2, np.float32))
    assert "unsafe_allow_suspicious" in caplog.text


def test_load_state_dict_skip_scan_is_explicit_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _suspicious(tmp_path / "ip.pt")
    with caplog.at_level(logging.WARNING, logger="airlock.sandbox"):
        state = load_state_dict(model, policy=SandboxPolicy(limits=FAST_LIMITS), unsafe_skip_scan=True)
    assert "w" in state
    assert "WITHOUT the static scan gate" in caplog.text


def test_run_refuses_suspicious_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _suspicious(tmp_path / "ip.pt")
    assert main(["run", str(model), "--load-only"]) == 2
    assert "scan SUSPICIOUS" in capsys.readouterr().err
    assert main(["run", str(model), "--load-only", "--allow", "ipaddress.IPv4Address"]) == 0
    assert "w\tfloat32\t[2]" in capsys.readouterr().out


def test_run_checks_an_expected_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _benign(tmp_path / "model.pt")
    assert main(["run", str(model), "--load-only", "--expect", "sha256:" + "0" * 64]) == 2
    assert "digest mismatch" in capsys.readouterr().err


# --- special files ----------------------------------------------------------------------------------


def _no_hang(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv} hung on a FIFO")


def test_run_and_scan_refuse_a_fifo_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    run = _no_hang([sys.executable, "-m", "airlock", "run", "--load-only", str(fifo)])
    assert run.returncode == 2 and b"not a regular file" in run.stderr, run.stderr
    scan = _no_hang([sys.executable, "-m", "airlock", "scan", str(fifo)])
    assert scan.returncode != 0 and b"special file" in scan.stdout + scan.stderr


def test_the_scanner_never_blocks_on_a_file_swapped_for_a_fifo(tmp_path: Path) -> None:
    """The walk saw a regular file; by the time the engine opens it, it is a FIFO."""
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    script = (
        "import sys; from pathlib import Path\n"
        "from airlock._scan.engine import scan_file\n"
        "from airlock.limits import DEFAULT_LIMITS\n"
        "from airlock.policy import Policy\n"
        "p = Path(sys.argv[1])\n"
        "r = scan_file(p, str(p), p.parent, DEFAULT_LIMITS, Policy())\n"
        "print(r.verdict.value, [f.rule for f in r.findings])\n"
    )
    done = _no_hang([sys.executable, "-c", script, str(fifo)])
    assert done.returncode == 0, done.stderr
    assert b"ERROR ['file.unreadable']" in done.stdout


def test_load_state_dict_and_definitions_refuse_fifos(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            load_state_dict(fifo, policy=SandboxPolicy(limits=FAST_LIMITS))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_state_dict blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], UsageError), outcome


def test_a_regular_file_whose_reads_wait_is_refused_without_hanging(tmp_path: Path) -> None:
    """/proc/kmsg is a regular file by type, but a read waits for the next kernel message: a
    symlink to it as the model made `airlock run`, `load_state_dict` and `--definition` hang for
    ever. The gate's descriptor stays non-blocking, so such a read fails at once and is refused."""
    from airlock.sandbox._gate import WOULD_BLOCK

    link = tmp_path / "model.pt"
    link.symlink_to("/proc/kmsg")
    readable = os.access("/proc/kmsg", os.R_OK)  # root only: the unprivileged run cannot open it at all
    expected = WOULD_BLOCK if readable else "cannot open model"
    run = _no_hang([sys.executable, "-m", "airlock", "run", "--load-only", str(link)])
    assert run.returncode == 2 and expected.encode() in run.stderr, run.stderr
    script = (
        "import sys\n"
        "from airlock.errors import UsageError\n"
        "from airlock.sandbox._gate import sealed_copy\n"
        "from airlock.sandbox._worker import _read_definition\n"
        "for call in (lambda: sealed_copy(sys.argv[1], 1 << 20), lambda: _read_definition(sys.argv[1])):\n"
        "    try:\n"
        "        call()\n"
        "    except UsageError as exc:\n"
        "        print(exc)\n"
    )
    done = _no_hang([sys.executable, "-c", script, str(link)])
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr
    if readable:
        assert all(WOULD_BLOCK in line for line in lines), lines


# --- escaping -------------------------------------------------------------------------------------

_NASTY = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\u202etxt.exe"


def test_run_escapes_job_error_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = exec_checkpoint(tmp_path / "err.pt", f"raise RuntimeError({_NASTY!r})")
    assert main(["run", str(model), "--load-only", "--unsafe-skip-scan"]) == 2
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "RuntimeError" in printed and "\\x1b]0;owned" in printed
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed


def test_run_refuses_tensor_names_with_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "names.pt"
    torch.save({_NASTY: torch.ones(1), "ok": torch.ones(1)}, model)  # a plain checkpoint: scans CLEAN
    assert main(["run", str(model), "--load-only"]) == 2
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "holds control or invisible characters" in printed
    assert "\x1b" not in printed and "\u202e" not in printed


def _callable_named(path: Path, module: str, name: str) -> Path:
    """A pickle whose STACK_GLOBAL names any strings (GLOBAL cannot hold a line break; this can)."""

    def short(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE

    path.write_bytes(b"\x80\x04" + short(module) + short(name) + b"\x93" + short("x") + b"\x85R.")
    return path


_FAKE_LINE = "os\nairlock run: loaded 1 tensor (state_dict) OK" + _NASTY


def test_scan_gate_refusals_are_one_escaped_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The gate's refusal quotes the first finding, which quotes the model: a callable named with a
    line break printed a fake "loaded ... OK" line of its own under `airlock run`."""
    model = _callable_named(tmp_path / "fake.pkl", _FAKE_LINE, "system")
    assert main(["run", str(model), "--load-only"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("airlock run: error: scan gate:"), (
        captured.err
    )
    assert (
        "\\nairlock run: loaded" in captured.err
        and "\x1b" not in captured.err
        and "\u202e" not in captured.err
    )


def test_scan_text_report_escapes_names_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`airlock scan` printed callable names raw: terminal sequences and fake lines from the file."""
    model = _callable_named(tmp_path / "fake.pkl", _FAKE_LINE, "system")
    main(["scan", str(model)])
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed, printed
    assert not any(line.startswith("airlock run:") for line in printed.splitlines()), printed
    assert "\\x1b]0;owned" in printed  # shown, escaped


def test_worker_errors_escape_job_text(warm: Sandbox, tmp_path: Path) -> None:
    model = exec_checkpoint(tmp_path / "err.pt", f"raise ValueError({_NASTY!r})")
    with pytest.raises(SandboxError) as caught:
        warm.open(model)
    assert "\x1b" not in str(caught.value) and "ValueError" in str(caught.value)


def test_admission_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    from airlock.gateway._admission import stage_model

    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            stage_model(fifo, tmp_path / "staging")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("admission blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], UsageError), outcome
    assert "not a regular file" in str(outcome[0])
