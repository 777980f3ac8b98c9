"""Lock files, signatures, keys and trusted roots are read only from regular files (outside review 24).

A signature may lie inside the model folder it signs (docs/integrity.md), and that folder is the
untrusted input. A FIFO put at the signature's name made ``airlock verify`` (and ``scan
--signature``) block forever in ``open``: shown on the old code by the subprocess below timing out.
A device such as /dev/zero was read up to the document limit. Documents are now opened without
waiting (O_NONBLOCK) and read only when ``fstat`` says regular file; anything else is a usage error
(exit 2) naming what it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.integrity import TrustMode, sign, verify
from tests.integrity.integrity_helpers import build_model, write_key_pair


def _verify_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # a subprocess with a timeout: on the old code the FIFO made it wait forever
    return subprocess.run(
        [sys.executable, "-m", "airlock", "verify", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_fifo_at_the_signature_name_inside_the_folder_is_refused_at_once(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    _, public = write_key_pair(tmp_path, "signer")
    os.mkfifo(model / "model.sig")
    result = _verify_cli(model, "--signature", model / "model.sig", "--key", public)
    assert result.returncode == 2, result.stderr
    assert f"cannot read signature {model / 'model.sig'}: it is a FIFO, not a regular file" in result.stderr


def test_fifo_lock_is_refused_at_once(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    os.mkfifo(tmp_path / "model.lock")
    result = _verify_cli(model, "--lock", tmp_path / "model.lock")
    assert result.returncode == 2, result.stderr
    assert (
        f"cannot read lock file {tmp_path / 'model.lock'}: it is a FIFO, not a regular file" in result.stderr
    )


def test_folder_as_lock_is_refused(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    lock = tmp_path / "model.lock"
    lock.mkdir()
    with pytest.raises(UsageError) as info:
        verify(model, lock=lock)
    assert str(info.value) == f"cannot read lock file {lock}: it is a folder, not a regular file"


def test_device_is_not_read(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    with pytest.raises(UsageError) as info:
        verify(model, lock="/dev/zero")
    assert str(info.value) == "cannot read lock file /dev/zero: it is a device, not a regular file"


def test_regular_files_and_links_to_them_still_read(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    private, public = write_key_pair(tmp_path, "signer")
    sig = tmp_path / "model.sig"
    sign(model, key=private, output=sig)
    link = tmp_path / "link.sig"
    link.symlink_to(sig)
    assert verify(model, signature=link, key=public).mode is TrustMode.KEY
