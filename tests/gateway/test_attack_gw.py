"""Variations of issue 12's attacks, found by attacking the F1-F11 fixes as an outsider.

Each test drives a real gateway over real sockets on loopback (127.0.0.x are all loopback
addresses, so several source addresses are available) and failed before its fix.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.gateway.test_hardening import make_gateway

__all__ = ["make_gateway"]  # the fixture, re-exported for pytest

HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_forgetting_an_address_never_forgives_its_failures(make_gateway: Any) -> None:
    """F1 variant: the table of per-address buckets is bounded (least recently seen forgotten first).
    Cycling through more addresses than it holds made every address new again, with a full burst of
    failed authentications each time: 401s (each an audit row) without any bound. An address still
    in debt is now never forgotten; newcomers while the table is full of debtors share one bucket."""
    gateway = make_gateway(
        server="preauth_failure_burst = 2\npreauth_failures_per_second = 0.2\npreauth_tracked_addresses = 4\n"
    )
    statuses = []
    started = time.monotonic()
    for _ in range(5):
        for last in range(2, 10):  # 8 addresses, twice what the table holds
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{last}")
            with httpx.Client(base_url=gateway.url, transport=transport, timeout=10) as client:
                reply = client.post(
                    "/v2/models/affine/infer", json={}, headers={"Authorization": "Bearer no"}
                )
                statuses.append(reply.status_code)
    elapsed = time.monotonic() - started
    assert set(statuses) <= {401, 429}
    # at most: 4 tracked addresses' bursts, the shared newcomers' burst, and what refills meanwhile
    allowed = 4 * 2 + 2 + 5 * 0.2 * elapsed + 1
    assert statuses.count(401) <= allowed, (statuses.count(401), allowed)
    assert len(gateway.running.gateway.state.preauth.buckets) == 4
