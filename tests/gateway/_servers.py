"""Real PostgreSQL and Redis servers for the scale-out tests, on random loopback ports.

The binaries come from the system (Debian's ``postgresql`` and ``redis-server`` packages, which
``make test`` installs when it runs as root on a fresh machine). PostgreSQL refuses to run as root:
as root, its data folder belongs to ``nobody`` and it runs as that user. Both are started as plain
child processes, so a test can kill one (SIGKILL, a crash) and start it again on the same port and
data. Passwords are set (SCRAM for PostgreSQL, ``requirepass`` for Redis) so the password files the
gateway reads are exercised for real.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

#: generated per run (the servers are private to the tests)
PASSWORD = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        found = candidates[-1] if candidates else None
    if found is None:
        pytest.fail(
            f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql; make test does)"
        )
    return found


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (PostgreSQL serves each connection from a child process)."""
    parents: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(stat).read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def pause(process: subprocess.Popen[bytes] | None, stop: bool) -> None:
    """SIGSTOP (or SIGCONT) a server and its children: it holds its sockets and answers nothing."""
    assert process is not None
    for pid in _tree(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP if stop else signal.SIGCONT)


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class Postgres:
    """One PostgreSQL cluster (initdb'd once), startable and killable; with ``tls`` (certificate,
    key) it also accepts TLS (``ssl = on``)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        # not under pytest's tmp folder (mode 0700, root's): the server's user must reach its data
        self.root = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
        self.data = self.root / "data"
        self.password_file = self.root / "password"
        self.password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            os.chown(self.password_file, nobody.pw_uid, nobody.pw_gid)
            self._user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(self.data), "-U", "airlock", "--auth=scram-sha-256",
             f"--pwfile={self.password_file}", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, cwd=self.root, **self._user,
        )  # fmt: skip
        self._tls: list[str] = []
        if tls is not None:
            for source, name in zip(tls, ("server.pem", "server.key"), strict=True):
                shutil.copyfile(source, self.root / name)
                (self.root / name).chmod(0o600)
                if self._user:
                    os.chown(self.root / name, self._user["user"], self._user["group"])
            self._tls = ["-c", "ssl=on", "-c", f"ssl_cert_file={self.root / 'server.pem'}",
                         "-c", f"ssl_key_file={self.root / 'server.key'}"]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://airlock@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while True:
            self.process = subprocess.Popen(
                [_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", "", "-c", "fsync=off", "-c", "max_connections=200", "-c", "log_min_messages=fatal",
                 *self._tls],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root, **self._user,
            )  # fmt: skip
            try:
                _wait_port(self.port, self.process, "postgres", max(1.0, end - time.monotonic()))
                self._wait_ready(end)
                return
            except RuntimeError:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
                # after a kill, orphaned backends may hold the shared memory for a moment: retry
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)

    def _wait_ready(self, end: float) -> None:
        """Listening is not accepting: recovery after a kill answers "starting up" for a while."""
        while True:
            try:
                with psycopg.connect(self.url, password=PASSWORD, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > end or (self.process is not None and self.process.poll() is not None):
                    raise RuntimeError("postgres did not accept connections") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """The server dies as a crashed machine's would: the postmaster and every backend at once.
        SIGKILL to the postmaster alone leaves each backend (its own session: no process group to
        signal) alive until it notices, so a pooled connection could still be answered for a
        moment after this returned, and a test of the outage saw its query served."""
        assert self.process is not None
        # Stopped, the postmaster forks no new backend and reaps none: every backend in the list
        # stays its child (a zombie at worst), so no number in it can be another process's yet.
        self.process.send_signal(signal.SIGSTOP)
        backends = _children(self.process.pid)
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None
        end = time.monotonic() + 10
        while any(_alive(pid) for pid in backends):
            assert time.monotonic() < end, "a postgres backend outlived SIGKILL for 10 s"
            time.sleep(0.01)

    def close(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGQUIT)  # immediate shutdown: children exit too
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaps yet has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Redis:
    """One Redis server; with ``tls`` (certificate, key) it speaks TLS only (``rediss://``)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed (Debian: apt-get install redis-server; make test does)"
            )
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="airlock-redis-"))
        self.password_file = self.root / "password"
        self.password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        self._listen = ["--port", str(self.port)]
        if tls is not None:
            self._listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls[0]),
                            "--tls-key-file", str(tls[1]), "--tls-auth-clients", "no"]  # fmt: skip
        self.scheme = "redis" if tls is None else "rediss"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, *self._listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--requirepass", PASSWORD, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.process, "redis-server")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def close(self) -> None:
        if self.process is not None:
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def backend_config(postgres: Postgres | None, redis: Redis | None) -> str:
    """The ``[state]`` and ``[limits]`` tables of a gateway config for these servers."""
    text = ""
    if postgres is not None:
        text += f'[state]\nurl = "{postgres.url}"\npassword_file = "{postgres.password_file}"\n'
        text += "connect_timeout_seconds = 2\ntimeout_seconds = 5\n\n"
    if redis is not None:
        text += f'[limits]\nurl = "{redis.url}"\npassword_file = "{redis.password_file}"\n'
        text += "connect_timeout_seconds = 1\ntimeout_seconds = 2\n\n"
    return text
