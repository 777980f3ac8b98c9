"""A signature kept inside the model folder is left out of the comparison by its name; that name
must still be the one file that was read when the walk is done.

The walk skips the excluded name and, were it a folder, everything under it. Swapping the
signature for a folder between reading it and walking the model (a concurrent writer; simulated
here by running the swap just before the real walk) hid that folder's files from the check, and
``verify`` succeeded for a model with unsigned content.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from airlock.errors import IntegrityError
from airlock.integrity import _verify, sign, verify
from tests.integrity.integrity_helpers import build_model, write_key_pair


def _signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = build_model(tmp_path / "model")
    private, public = write_key_pair(tmp_path, "signer")
    sig = model / "model.sig"
    sign(model, key=private, output=sig)
    return model, sig, public


def _swap_before_walk(monkeypatch: pytest.MonkeyPatch, swap: Any) -> None:
    real_walk = _verify.walk  # type: ignore[attr-defined]

    def walk_after_swap(*args: Any, **kwargs: Any) -> Any:
        swap()
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(_verify, "walk", walk_after_swap)


def test_signature_inside_the_folder_verifies(tmp_path: Path) -> None:
    model, sig, public = _signed(tmp_path)
    assert verify(model, signature=sig, key=public).mode is _verify.TrustMode.KEY


def test_signature_swapped_for_a_folder_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, sig, public = _signed(tmp_path)

    def swap() -> None:
        sig.unlink()
        (sig / "hidden").mkdir(parents=True)
        (sig / "hidden" / "evil.py").write_text("print('unsigned')\n")

    _swap_before_walk(monkeypatch, swap)
    with pytest.raises(IntegrityError) as caught:
        verify(model, signature=sig, key=public)
    assert caught.value.problems == (  # type: ignore[attr-defined]
        "signature changed: model.sig is not the file that was read (checked nothing in its place)",
    )


def test_signature_replaced_by_another_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, sig, public = _signed(tmp_path)
    copy = tmp_path / "copy.sig"
    shutil.copyfile(sig, copy)
    _swap_before_walk(monkeypatch, lambda: copy.replace(sig))
    with pytest.raises(IntegrityError, match=r"signature changed: model\.sig is not the file that was read"):
        verify(model, signature=sig, key=public)
