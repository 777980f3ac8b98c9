"""Keys and certificates given through a pipe still read (outside review 28).

Outside review 24 made every trust document a regular file only, to stop a FIFO at a signature's
name *inside the model folder* from hanging verification. That also refused the caller's own
keys and certificates given through a pipe, the usual way to pass a key without writing it to
disk (``airlock sign --key <(vault read ...)``, ``verify --key <(echo "$PUB")``): both worked
before and exited 2 with "it is a FIFO, not a regular file". A key, certificate or trusted root is
named by the caller, never taken from the model, so a pipe there is read (bounded as before); a
signature or lock file, which may sit in the model folder, is still a regular file only, and a
device, socket or folder is refused for all of them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.integrity import sign, verify
from tests.integrity.integrity_helpers import build_model, issue, make_ca, write_issued, write_key_pair


def _bash(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash (process substitution is bash's), airlock as ``$AIRLOCK``."""
    env = {**os.environ, "AIRLOCK": f"{shlex.quote(sys.executable)} -m airlock"}
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_sign_and_verify_with_keys_through_process_substitution(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    private, public = write_key_pair(tmp_path, "signer")
    sig = tmp_path / "model.sig"
    q = shlex.quote
    signed = _bash(f"$AIRLOCK sign {q(str(model))} --key <(cat {q(str(private))}) -o {q(str(sig))}")
    assert signed.returncode == 0, signed.stderr
    checked = _bash(
        f"$AIRLOCK verify {q(str(model))} --signature {q(str(sig))} --key <(cat {q(str(public))})"
    )
    assert checked.returncode == 0, checked.stderr


def test_certificate_method_with_certificates_through_process_substitution(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    ca = make_ca()
    leaf_cert, leaf_key = write_issued(tmp_path, "leaf", issue(ca, "model publisher"))
    ca_cert, _ = write_issued(tmp_path, "ca", ca)
    sig = tmp_path / "model.sig"
    q = shlex.quote
    signed = _bash(
        f"$AIRLOCK sign {q(str(model))} --key {q(str(leaf_key))} --cert <(cat {q(str(leaf_cert))}) "
        f"-o {q(str(sig))}"
    )
    assert signed.returncode == 0, signed.stderr
    checked = _bash(
        f"$AIRLOCK verify {q(str(model))} --signature {q(str(sig))} --cert <(cat {q(str(ca_cert))})"
    )
    assert checked.returncode == 0, checked.stderr


def test_a_named_fifo_without_a_writer_at_the_key_does_not_wait(tmp_path: Path) -> None:
    # opened without waiting for a writer (O_NONBLOCK), a FIFO nobody writes reads as empty at once
    model = build_model(tmp_path / "model")
    private, _ = write_key_pair(tmp_path, "signer")
    sig = tmp_path / "model.sig"
    sign(model, key=private, output=sig)
    fifo = tmp_path / "pub.pem"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as info:
        verify(model, signature=sig, key=fifo)
    assert str(info.value).startswith(f"public key {fifo} is not a readable PEM public key")


def test_a_device_as_the_key_is_still_refused(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    private, _ = write_key_pair(tmp_path, "signer")
    sig = tmp_path / "model.sig"
    sign(model, key=private, output=sig)
    with pytest.raises(UsageError) as info:
        verify(model, signature=sig, key="/dev/zero")
    assert str(info.value) == "cannot read public key /dev/zero: it is a device, not a regular file or pipe"
