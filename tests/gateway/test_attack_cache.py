"""Attacks on the per-process key and tenant cache (gw-speed): a key revoked by another process,
while the gateway serves that key back to back from its cache, is refused from the first request
sent after ``airlock key revoke`` returned, over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airlock.gateway import create_key, open_store
from tests.gateway.test_hardening import BODY, _Gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[_Gateway]:
    running = _Gateway(tmp_path)
    yield running
    running.stop()


def test_a_key_revoked_by_another_process_under_load_is_refused_at_once(gateway: _Gateway) -> None:
    store = open_store(gateway.config)
    record, token = create_key(store, "acme")
    store.close()
    url = "/v2/models/affine/infer"
    # (sent at, status) for every request of the hammering clients, which keep the key cached
    seen: list[tuple[float, int]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(
            base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=20
        ) as c:
            while not stop.is_set():
                sent = time.monotonic()
                seen.append((sent, c.post(url, json=BODY).status_code))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while sum(status == 200 for _, status in seen) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        revoke = [
            sys.executable,
            "-m",
            "airlock",
            "key",
            "revoke",
            record.key_id,
            "--config",
            str(gateway.config.source),
        ]
        done = subprocess.run(revoke, check=False, capture_output=True, timeout=60, env=os.environ.copy())
        revoked_at = time.monotonic()
        assert done.returncode == 0, done.stderr
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    late = [(sent - revoked_at, status) for sent, status in seen if sent > revoked_at]
    # refused from the first request sent after the revocation (401, then 429 once the address has
    # spent its pre-auth failures); never a 200
    assert any(status == 401 for _, status in late[:3]), late[:5]
    assert all(status in (401, 429) for _, status in late), [x for x in late if x[1] not in (401, 429)][:5]
    # the tenant's other key is still good (from another address: 127.0.0.1 spent its failures)
    with gateway.client("acme", source="127.0.0.2") as client:
        assert client.post(url, json=BODY).status_code == 200
