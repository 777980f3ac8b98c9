"""``Verified.open`` finds a file by name in constant time (outside review 24).

A verified scan (``airlock scan --lock`` / ``--signature``) opens every file of the manifest once
through ``Verified.open``, which searched ``_files`` and then the manifest's entries from the start
each time: n files cost n*n/2 steps twice over. Measured on the old code: a folder of 20,000 small
files verified in 5 s, and 2,000 opens of its last files took 35 s (97% of it in those two
searches), so its verified scan would spend minutes to hours looking names up. Both are indexed by
name once, when the ``Verified`` is made.

The test counts the items read from the two sequences (a tuple that counts its iteration), which
is exact and independent of the machine's speed: at most one pass over each, however many opens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from airlock.integrity import hash as hash_model
from airlock.integrity import verify
from airlock.integrity._lock import render_lock


class CountingTuple(tuple):  # type: ignore[type-arg]
    """A real tuple that counts the items its iterators hand out."""

    read = 0

    def __iter__(self) -> Iterator[object]:
        for item in super().__iter__():
            CountingTuple.read += 1
            yield item


N = 300


def test_opening_every_file_reads_each_list_once(tmp_path: Path) -> None:
    model = tmp_path / "model"
    for i in range(N):
        target = model / f"d{i % 10}" / f"f{i}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"%d" % i)
    lock = tmp_path / "model.lock"
    lock.write_text(render_lock(hash_model(model)))
    verified = verify(model, lock=lock)
    names = [entry.path for entry in verified.manifest.files]
    assert len(names) == N
    counted = dataclasses.replace(
        verified,
        manifest=dataclasses.replace(verified.manifest, files=CountingTuple(verified.manifest.files)),
        _files=CountingTuple(verified._files),
    )
    CountingTuple.read = 0
    for name in reversed(names):
        with counted.open(name) as handle:
            assert handle.read() == (model / name).read_bytes()
    # one pass over each list (the index) at most; the old searches read about N*N/2 + N*N/2
    assert CountingTuple.read <= 2 * N
