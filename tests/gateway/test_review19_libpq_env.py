"""Outside review 19: the gateway's PostgreSQL connection is configured by its file only.

libpq fills each connection option the URL leaves unset from a ``PG*`` environment variable:
``PGHOSTADDR`` sent the state connection to another address than the URL's host (and the
loopback/TLS warning judged the URL's), ``PGSSLMODE=disable`` dropped the TLS attempt of the
default ``prefer``. The proof needs no PostgreSQL: a listener on loopback records the connections
it receives and the first message of each (an SSLRequest, or a plaintext StartupMessage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parents[2]

_CODE = textwrap.dedent(
    """
    import json, socket, struct, sys, threading
    from airlock.gateway._backend import BackendConfig
    from airlock.gateway import _pg_store
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    first = []
    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                head = conn.recv(8)
                code = struct.unpack("!II", head)[1] if len(head) == 8 else None
                first.append("ssl-request" if code == 80877103 else "plaintext")
            except OSError:
                first.append("nothing")
            conn.close()
    thread = threading.Thread(target=serve)
    thread.start()
    cfg = BackendConfig(url=sys.argv[1].format(port=port), connect_timeout_seconds=1)
    try:
        _pg_store.migrate(cfg)
        outcome = "migrated"
    except Exception as exc:
        outcome = type(exc).__name__
    thread.join()
    print(json.dumps({"outcome": outcome, "first": first}))
    """
)


def _run(url: str, **extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    done = subprocess.run(
        [sys.executable, "-c", _CODE, url], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_pghostaddr_does_not_redirect_the_state_connection() -> None:
    # the URL's host cannot resolve: a refused start, and no connection reached the listener
    got = _run("postgresql://airlock@db.airlock-review.invalid:{port}/airlock", PGHOSTADDR="127.0.0.1")
    assert got == {"outcome": "UsageError", "first": []}


def test_pgsslmode_does_not_turn_tls_off() -> None:
    url = "postgresql://airlock@127.0.0.1:{port}/airlock"
    assert _run(url)["first"][:1] == ["ssl-request"]  # libpq's "prefer": TLS is asked for first
    got = _run(url, PGSSLMODE="disable")
    assert got["outcome"] == "UsageError"
    assert got["first"][:1] == ["ssl-request"], got


@pytest.mark.xdist_group("scale")
def test_a_root_certificate_in_the_home_folder_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq read ``~/.postgresql/root.crt`` when ``ca_file`` was not set: ``sslmode = "require"``
    became a CA check against a file of the home folder (here another CA: the start failed)."""
    import psycopg

    from airlock.gateway._backend import BackendConfig
    from airlock.gateway._pg_store import PostgresStore, migrate
    from airlock.gateway._tls import dev_certificates
    from tests.gateway._servers import PASSWORD, Postgres

    real = dev_certificates(tmp_path / "real", ["127.0.0.1"])
    other = dev_certificates(tmp_path / "other", ["127.0.0.1"])
    home = tmp_path / "home"
    (home / ".postgresql").mkdir(parents=True)
    (home / ".postgresql" / "root.crt").write_bytes(other.ca_cert.read_bytes())
    server = Postgres(tls=(real.server_cert, real.server_key))
    try:
        with psycopg.connect(server.url, password=PASSWORD, autocommit=True, sslmode="require") as conn:
            conn.execute(b"CREATE DATABASE review19")
        config = BackendConfig(
            server.url.rsplit("/", 1)[0] + "/review19", server.password_file, None, "require"
        )
        monkeypatch.setenv("HOME", str(home))
        migrate(config)
        store = PostgresStore(config)
        try:
            assert store._run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [(True,)]
        finally:
            store.close()
    finally:
        server.close()
