"""A local one-node Ray cluster with token authentication, for tests/scan/test_ray.py and
bench/scale_bench.py: ``ray start --head --block`` on loopback ports picked here (2 CPUs, a 200 MB
object store, no dashboard UI, no log monitor, usage statistics off), in its own process group and
its own HOME, stopped by process ids."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


class Cluster:
    def __init__(self, address: str, token: str, proc: subprocess.Popen[bytes], home: Path) -> None:
        self.address = address
        self.token = token
        self.proc = proc
        self.home = home

    def env(self, token: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return {
            **env,
            "PYTHONPATH": str(ROOT / "src"),
            "HOME": str(self.home),  # no ~/.ray/auth_token of the user's
            "RAY_AUTH_TOKEN": self.token if token is None else token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def worker_pids(self, title: str) -> list[int]:
        """Processes of this cluster whose title starts with ``title`` (Ray's ``ray::FUNCTION``
        while a task runs)."""
        return [pid for pid, cmdline in members(self.home) if cmdline.startswith(title)]


def members(home: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process of the cluster whose HOME is ``home``: all inherit
    it, whatever process group or session Ray gave them."""
    marker = f"HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), cmdline))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: ``ray start`` attempts: its raylet gives the dashboard agent (a Python process it starts) 15 s to
#: report its ports and aborts when a loaded machine makes the agent's imports slower than that
ATTEMPTS = 3


def _start_once(temp: Path, token: str, cpus: int, auth: bool) -> tuple[subprocess.Popen[bytes], int] | None:
    """One ``ray start --head --block`` in its own process group; None if its raylet aborted."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token" if auth else "disabled",
        RAY_AUTH_TOKEN=token if auth else "",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=str(ROOT / "src"),  # the workers run this checkout's airlock
        HOME=str(temp),
    )
    # nice -n -10: ahead of the rest of a loaded machine where allowed (root, as in CI), so that the
    # agents start within the raylet's 15 s; unprivileged, nice says so and runs it as it is
    argv = [
        "nice", "-n", "-10", str(RAY), "start", "--head", "--block", f"--num-cpus={cpus}", "--object-store-memory=200000000",
        "--include-dashboard=false", "--include-log-monitor=false", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
        f"--port={port}", f"--temp-dir={temp}", f"--dashboard-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
        f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
    ]  # fmt: skip
    out = (temp / "start.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    raylet = temp / "session_latest" / "logs" / "raylet.out"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None:
        if b"Ray runtime started" in (temp / "start.log").read_bytes():
            return proc, port
        if raylet.exists() and b"Check failed" in raylet.read_bytes():
            break  # the raylet aborted (see ATTEMPTS): no need to wait for ray start to notice
        time.sleep(0.5)
    _stop(proc, temp)
    return None


def _stop(proc: subprocess.Popen[bytes], home: Path) -> None:
    """Stop the cluster: SIGTERM to ``ray start`` (its own process group), then SIGKILL to each
    process still running with the cluster's HOME, by its id."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + 5
    while time.monotonic() < end and members(home):
        time.sleep(0.2)
    for pid, _ in members(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


@contextlib.contextmanager
def running_cluster(cpus: int = 2, *, auth: bool = True) -> Iterator[Cluster]:
    """A started cluster (up to :data:`ATTEMPTS` tries), stopped and removed on exit; ``auth=False``:
    one without token authentication (what --ray must refuse)."""
    token = secrets.token_hex(32)
    logs = []
    for _ in range(ATTEMPTS):
        temp = Path(tempfile.mkdtemp(prefix="alray"))  # short: Ray's unix socket paths must fit
        started = _start_once(temp, token, cpus, auth)
        if started is not None:
            break
        logs.append((temp / "start.log").read_text(errors="replace")[-2000:])
        shutil.rmtree(temp, ignore_errors=True)
    else:
        joined = "\n".join(logs)
        raise RuntimeError(f"ray start failed {ATTEMPTS} times:\n{joined}")
    proc, port = started
    try:
        yield Cluster(f"127.0.0.1:{port}", token, proc, temp)
    finally:
        _stop(proc, temp)
        shutil.rmtree(temp, ignore_errors=True)
