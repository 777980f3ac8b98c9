"""Three ``airlock serve`` processes sharing one PostgreSQL and one Redis, as behind a load balancer.

Each replica has its own folder and config (its own admitted copies, head file and logs), the same
``[state]`` and ``[limits]`` servers and the same audit key file. Tenants and keys are made with the
CLI against PostgreSQL. The tests run in order on one set of replicas (each leaves them serving);
the last one stops them and verifies the one audit chain they all wrote.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from airlock.gateway import load_config, open_store
from airlock.gateway._pg_store import SCHEMA_VERSION
from tests.gateway import _models
from tests.gateway._servers import PASSWORD, Postgres, Redis, backend_config, pause
from tests.gateway.conftest import write_config

pytestmark = pytest.mark.xdist_group("scale")

REPLICAS = 3
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
STATE_DOWN = {"error": "state service unavailable; the request was not served"}
AUDIT_DOWN = {"error": "audit log unavailable; the request was not served"}


def airlock(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airlock", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Cluster:
    postgres: Postgres
    redis: Redis
    configs: list[Path]
    processes: list[subprocess.Popen[bytes]]
    urls: list[str]
    tokens: dict[str, str]
    #: the replicas' metrics (admin) ports
    admin: list[int]
    #: request ids answered by each replica (x-request-id), to find them in the audit chain
    seen: list[set[str]] = field(default_factory=lambda: [set() for _ in range(REPLICAS)])

    def post(self, replica: int, token: str, timeout: float = 30) -> httpx.Response:
        response = httpx.post(
            f"{self.urls[replica]}/v2/models/affine/infer", json=BODY, timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        if response.content != json.dumps(AUDIT_DOWN, separators=(",", ":")).encode():
            # every answer but "audit log unavailable" has its outcome row
            self.seen[replica].add(response.headers.get("x-request-id", ""))
        return response

    def up(self, replica: int) -> dict[str, float]:
        """airlock_backend_up by backend, from the replica's metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.admin[replica]}/metrics", timeout=10).text
        found = re.findall(r'^airlock_backend_up\{backend="(\w+)"\} (\S+)$', text, re.MULTILINE)
        return {name: float(value) for name, value in found}

    def ready(self, replica: int) -> int:
        return httpx.get(f"{self.urls[replica]}/v2/health/ready", timeout=10).status_code


def _listening(log: Path, process: subprocess.Popen[bytes], timeout: float = 180) -> tuple[int, int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("message") == "listening":
                return int(entry["port"]), int(entry["admin_port"])
        if process.poll() is not None:
            raise AssertionError(
                f"replica exited: {log.read_text(encoding='utf-8', errors='replace')[-3000:]}"
            )
        time.sleep(0.1)
    raise AssertionError("replica did not start")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    postgres, redis = Postgres(), Redis()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        key_file = root / "audit.key"  # the one key every replica chains with
        key_file.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
        key_file.chmod(0o600)
        configs = []
        for n in range(REPLICAS):
            folder = root / f"replica{n}"
            folder.mkdir()
            _models.affine(folder / "affine.onnx")
            models = '[models.affine]\npath = "affine.onnx"\nruntime = "onnx"\ntenants = ["acme", "beta", "gamma"]\n'
            extra = f'{models}\n[audit]\nkey_file = "{key_file}"\nhead_interval_seconds = 0.5\n\n'
            server = "request_timeout_seconds = 30\nmax_connections_per_address = 1024\n"
            configs.append(write_config(folder, extra + backend_config(postgres, redis), server=server))
        migrated = airlock("serve", "--config", str(configs[0]), "--migrate")
        assert (
            migrated.returncode == 0
            and f"migrated from schema version 0 to {SCHEMA_VERSION}" in migrated.stdout
        )
        again = airlock("serve", "--config", str(configs[1]), "--migrate")
        assert (
            again.returncode == 0
            and f"at schema version {SCHEMA_VERSION}; nothing to migrate" in again.stdout
        )
        for tenant, limits in [("acme", ["--requests-per-minute", "100", "--max-concurrent", "1000"]),
                               ("beta", []), ("gamma", [])]:  # fmt: skip
            added = airlock("tenant", "add", tenant, *limits, "--config", str(configs[0]))
            assert added.returncode == 0, added.stderr
        tokens = {}
        for n, tenant in enumerate(("acme", "beta", "gamma")):
            created = airlock("key", "create", "--tenant", tenant, "--config", str(configs[n]))
            assert created.returncode == 0, created.stderr
            tokens[tenant] = created.stdout.strip()
        for config in configs:
            log = (config.parent / "serve.log").open("wb")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "airlock", "serve", "--config", str(config)],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
            ))  # fmt: skip
        ports = [_listening(c.parent / "serve.log", p) for c, p in zip(configs, processes, strict=True)]
        urls = [f"http://127.0.0.1:{port}" for port, _ in ports]
        yield Cluster(postgres, redis, configs, processes, urls, tokens, [admin for _, admin in ports])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        postgres.close()
        redis.close()


async def _burst(cluster: Cluster, count: int) -> list[tuple[int, int, str, str]]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        headers = {"Authorization": f"Bearer {cluster.tokens['acme']}"}

        async def one(i: int) -> tuple[int, int, str, str]:
            replica = i % REPLICAS
            url = f"{cluster.urls[replica]}/v2/models/affine/infer"
            response = await client.post(url, json=BODY, headers=headers)
            return replica, response.status_code, response.text, response.headers.get("x-request-id", "")

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_a_burst_over_three_replicas_gets_one_budget(cluster: Cluster) -> None:
    """Budget 100 a minute, 400 requests at once over 3 replicas: 100 (plus what refilled) get through."""
    started = time.monotonic()
    results = asyncio.run(_burst(cluster, 400))
    elapsed = time.monotonic() - started
    allowed = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] != 200]
    assert 100 <= len(allowed) <= 100 + int(elapsed * 100 / 60) + 1, (len(allowed), elapsed)
    assert {(status, body) for _, status, body, _ in refused} == {
        (429, '{"error":"rate limit exceeded: requests"}')
    }
    assert {replica for replica, *_ in allowed} == set(range(REPLICAS))  # each served part of the budget
    for replica, _, _, request_id in results:
        cluster.seen[replica].add(request_id)


def test_a_key_revoked_through_one_replica_is_refused_by_all(cluster: Cluster) -> None:
    token = cluster.tokens["beta"]
    assert [cluster.post(n, token).status_code for n in range(REPLICAS)] == [200] * REPLICAS
    key_id = token.split("_")[1]
    revoked = airlock("key", "revoke", key_id, "--config", str(cluster.configs[1]))
    assert revoked.returncode == 0, revoked.stderr
    assert [cluster.post(n, token).status_code for n in range(REPLICAS)] == [401] * REPLICAS


def _until_served(cluster: Cluster, replica: int, timeout: float) -> float:
    """Seconds until ``replica`` serves (200) and is ready again; fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if (
            cluster.post(replica, cluster.tokens["gamma"]).status_code == 200
            and cluster.ready(replica) == 200
        ):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"replica {replica} did not recover within {timeout} s")


def test_redis_down_is_503_and_not_ready_then_service_resumes(cluster: Cluster) -> None:
    token = cluster.tokens["gamma"]
    for n in range(REPLICAS):
        _until_served(cluster, n, 60)
    cluster.redis.kill()
    for n in range(REPLICAS):
        response = cluster.post(n, token)
        assert response.status_code == 503 and response.json() == STATE_DOWN  # never served unlimited
        assert cluster.ready(n) == 503 and cluster.up(n) == {"state": 1.0, "limits": 0.0}
    cluster.redis.start()  # same port, empty: no gateway is restarted
    for n in range(REPLICAS):
        _until_served(cluster, n, 30)
        assert cluster.up(n) == {"state": 1.0, "limits": 1.0}
    assert all(process.poll() is None for process in cluster.processes)


def test_postgres_down_is_503_and_not_ready_then_service_resumes(cluster: Cluster) -> None:
    token = cluster.tokens["gamma"]
    for n in range(REPLICAS):
        _until_served(cluster, n, 60)
    cluster.postgres.kill()
    for n in range(REPLICAS):
        response = cluster.post(n, token)
        # the key cannot be looked up, and then the refusal cannot be audited either
        assert response.status_code == 503 and response.json() in (STATE_DOWN, AUDIT_DOWN)
        assert cluster.ready(n) == 503
    cluster.postgres.start()
    for n in range(REPLICAS):
        _until_served(cluster, n, 60)
    assert all(process.poll() is None for process in cluster.processes)


@pytest.mark.parametrize("server", ["redis", "postgres"])
def test_a_hung_server_never_stalls_the_event_loop(cluster: Cluster, server: str) -> None:
    """A server that holds its connections and answers nothing (SIGSTOP; a dead host looks the same):
    the requests that need it get a 503 once their call's time is up, while the event loop goes on
    answering everything else at once."""
    process = cluster.redis.process if server == "redis" else cluster.postgres.process
    token = cluster.tokens["gamma"]
    _until_served(cluster, 0, 60)  # after an earlier outage, every replica's watch has seen it end
    pause(process, True)
    try:
        with ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            pending = [pool.submit(cluster.post, 0, token) for _ in range(3)]
            time.sleep(0.5)
            for _ in range(5):  # the loop is free: these need neither server
                before = time.monotonic()
                assert httpx.get(f"{cluster.urls[0]}/v2/health/live", timeout=10).status_code == 200
                assert time.monotonic() - before < 1.0
            statuses = [future.result().status_code for future in pending]
            # the call's time: connect + one command/statement (+1 s), from the config in _servers
            assert statuses == [503] * 3 and time.monotonic() - started < 20
        assert cluster.ready(0) == 503
    finally:
        pause(process, False)
    _until_served(cluster, 0, 60)


@pytest.mark.parametrize("server", ["redis", "postgres"])
def test_an_idle_replica_notices_a_hung_server(cluster: Cluster, server: str) -> None:
    """No request needs it, yet readiness turns 503 (the watch's probe gets no answer in time), so a
    load balancer drains the replica before a caller meets the hang; back once the server answers."""
    process = cluster.redis.process if server == "redis" else cluster.postgres.process
    _until_served(cluster, 1, 60)  # after an earlier outage, every replica's watch has seen it end
    pause(process, True)
    try:
        end = time.monotonic() + 20
        while cluster.ready(1) == 200 and time.monotonic() < end:
            time.sleep(0.2)
        assert cluster.ready(1) == 503
    finally:
        pause(process, False)
    _until_served(cluster, 1, 60)


def test_one_audit_chain_with_rows_from_every_replica(cluster: Cluster) -> None:
    for process in cluster.processes:
        process.send_signal(signal.SIGTERM)
    for process in cluster.processes:
        assert process.wait(60) == 0
    for config in cluster.configs:
        verified = airlock("audit", "verify", "--config", str(config))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "audit log intact" in verified.stdout
    store = open_store(load_config(cluster.configs[0]))
    try:
        rows = list(store.audit_rows())
    finally:
        store.close()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    logged = {r.request_id for r in rows}
    for replica in range(REPLICAS):
        answered = cluster.seen[replica] - {""}
        assert len(answered) > 100 and answered <= logged  # every answer of every replica is in it
    assert sum(r.decision == "limited:requests" for r in rows) >= 250


def test_logs_are_json_lines_without_the_passwords(cluster: Cluster) -> None:
    """Through both outages (the pool's reconnection warnings included): JSON lines, no password."""
    for config in cluster.configs:
        text = (config.parent / "serve.log").read_text(encoding="utf-8")
        assert PASSWORD not in text
        entries = [json.loads(line) for line in text.splitlines()]
        messages = {entry["message"] for entry in entries}
        assert {"state unavailable", "state available again", "limits unavailable",
                "limits available again"} <= messages  # fmt: skip
        down = next(entry for entry in entries if entry["message"] == "state unavailable")
        assert down["url"] == cluster.postgres.url  # logged without any password
