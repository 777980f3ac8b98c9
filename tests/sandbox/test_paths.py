"""A job learns no host path: not of the runtime, not of the checkout, not of the model.

Before, the runtime was bound at its host paths, and ``/proc/PID/mountinfo`` printed each bind's
root within its filesystem wherever it was mounted (``/root/.pyenv/versions/3.11.7``,
``/work/main/.venv``, the checkout) -- for the job itself, its threads, pid 1 and every sibling;
``sys.executable``, ``sys.path``, module ``__file__``, ``/proc/PID/maps`` and fd links named them
too. Now the runtime lives under ``/airlock`` on overlays (root ``/``, options naming only the
neutral path). The probe reads every ``/proc`` file that could carry a path, for every pid it can
name (itself, ``self``/``thread-self``, each of its threads, pid 1 and a live sibling job), from
the main thread and from a second thread, and looks for the exact host strings. Each job also has
a /proc of its own in which no pid but its own exists (pid 1, siblings, its own threads' TIDs:
ENOENT).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from airlock.sandbox import Sandbox, SandboxPolicy, _launcher
from airlock.sandbox._launcher import RuntimeView, runtime_paths
from tests.sandbox._payloads import bytes_tensor, exec_checkpoint, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paths_sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as sandbox:
        yield sandbox


def _host_strings(model_dir: Path) -> list[str]:
    """Every host path a job must not learn (``/usr`` is the distribution's, the same everywhere)."""
    found = {str(REPO), str(model_dir), sys.prefix, sys.exec_prefix, sys.executable}
    found.update({sys.base_prefix, os.path.realpath(sys.base_prefix), os.path.realpath(sys.executable)})
    found.update(p for p in runtime_paths() if p != "/usr" and not p.startswith("/usr/"))
    found.add(os.path.dirname(_launcher._AIRLOCK_ROOT))
    return sorted(s for s in found if s and s not in ("/", "/usr") and not s.startswith("/usr/"))


_PROBE = """
import os, sys, threading, json

FORBIDDEN = {forbidden!r}
SIBLING = {sibling!r}
FILES = ('mountinfo', 'mounts', 'mountstats', 'cmdline', 'environ', 'maps', 'smaps', 'numa_maps',
         'stat', 'status', 'cgroup', 'comm', 'sched', 'wchan', 'stack', 'syscall', 'personality')
LINKS = ('exe', 'cwd', 'root')

def scan(where, text, out):
    for needle in FORBIDDEN:
        if needle in text:
            out['hits'].append([where, needle])

def read_pid(base, out):
    for name in FILES:
        path = base + '/' + name
        try:
            with open(path, 'rb') as f:
                text = f.read(16 << 20).decode(errors='replace')
        except OSError:
            continue
        out['read'].append(path)
        scan(path, text, out)
    for name in LINKS:
        try:
            scan(base + '/' + name, os.readlink(base + '/' + name), out)
            out['read'].append(base + '/' + name)
        except OSError:
            pass
    for sub in ('fd', 'map_files'):
        try:
            entries = os.listdir(base + '/' + sub)
        except OSError:
            continue
        for n in entries:
            try:
                scan(base + '/' + sub + '/' + n, os.readlink(base + '/' + sub + '/' + n), out)
                out['read'].append(base + '/' + sub + '/' + n)
            except OSError:
                pass
    try:
        tasks = os.listdir(base + '/task')
    except OSError:
        tasks = []
    for tid in tasks:
        if base.count('/') < 3:
            read_pid(base + '/task/' + tid, out)

def look(out, tids):
    names = {{'self', 'thread-self', '1', str(SIBLING), str(os.getpid())}} | {{str(t) for t in tids}}
    names |= {{n for n in os.listdir('/proc') if n.isdigit()}}
    out['pids'] = sorted(names)
    for name in sorted(names):
        read_pid('/proc/' + name, out)

def probe():
    main = {{'hits': [], 'read': []}}
    thread = {{'hits': [], 'read': []}}
    held = open(os.__file__, 'rb')  # a runtime file held open: its fd link names where it lives
    ready, done = threading.Event(), threading.Event()
    tids = [threading.get_native_id()]
    def second():
        tids.append(threading.get_native_id())
        ready.set()
        try:
            look(thread, tids)
        except BaseException as exc:
            thread['error'] = repr(exc)
        done.wait(60)
    t = threading.Thread(target=second)
    t.start()
    ready.wait(60)
    look(main, tids)  # the second thread is alive: its /proc/TID is there to read
    done.set()
    t.join()
    python = {{'executable': sys.executable, 'path': sys.path, 'prefix': sys.prefix,
               'base_prefix': sys.base_prefix, 'exec_prefix': sys.exec_prefix,
               'orig_argv': getattr(sys, 'orig_argv', []), 'environ': dict(os.environ),
               'files': sorted(str(getattr(m, '__file__', None)) for m in list(sys.modules.values())),
               'held': held.name}}
    scan('python', json.dumps(python), main)
    try:
        os.fork()
        main['fork'] = 'forked'
    except OSError as exc:
        main['fork'] = exc.strerror
    return {{'main': main, 'thread': thread, 'tids': tids, 'pid': os.getpid(), 'executable': sys.executable,
             'listed': sorted(int(n) for n in os.listdir('/proc') if n.isdigit()),
             'self_mountinfo': open('/proc/self/mountinfo').read()}}
"""


def _probe(sandbox: Sandbox, path: Path, source: str) -> Any:
    setup = (
        f"namespace = {{}}\nexec({source!r}, namespace)\nimport builtins\n"
        "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
    )
    model = exec_then_eval_checkpoint(path, setup, bytes_tensor("airlock_probe()"))
    with sandbox.open(model) as worker:
        evidence = worker.state_dict()["evidence"]
    return json.loads(evidence.tobytes())


def test_no_proc_file_of_any_pid_names_a_host_path(paths_sandbox: Sandbox, tmp_path: Path) -> None:
    forbidden = _host_strings(tmp_path)
    assert str(REPO) in forbidden and str(tmp_path) in forbidden
    sibling = exec_checkpoint(tmp_path / "sibling.pt", "import time\ntime.sleep(0)")
    with paths_sandbox.open(sibling) as alive:  # a live sibling job whose /proc/PID the probe names
        source = _PROBE.format(forbidden=forbidden, sibling=alive._pid)
        seen = _probe(paths_sandbox, tmp_path / "paths.pt", source)
    for view in ("main", "thread"):
        assert "error" not in seen[view], seen[view]
        assert seen[view]["hits"] == [], (view, seen[view]["hits"][:20])
    # not vacuous: the probe read its own mount tables, maps, stat and command line (mountstats is
    # mode 0400 of a non-dumpable process: EACCES) ...
    read = set(seen["main"]["read"]) | set(seen["thread"]["read"])
    own = seen["pid"]
    for name in ("mountinfo", "mounts", "maps", "smaps", "stat", "status", "cmdline", "cgroup"):
        assert f"/proc/self/{name}" in read and f"/proc/{own}/{name}" in read, (name, sorted(read)[:60])
    # ... and what they name is the neutral view: every runtime mount an overlay rooted at "/"
    assert seen["executable"].startswith("/airlock/python/"), seen["executable"]
    runtime = [line for line in seen["self_mountinfo"].splitlines() if " /airlock/" in line]
    assert runtime, seen["self_mountinfo"]
    assert all(line.split()[3] == "/" and " - overlay " in line for line in runtime), runtime
    # no other pid exists in the job's /proc: not pid 1, not the sibling, not its own second thread
    # (whose /proc/TID/fd no mask could cover), so nothing of theirs is read
    second_tid = seen["tids"][1]
    assert seen["listed"] == [own], seen["listed"]
    for other in (1, alive._pid, second_tid):
        assert other != own
        assert not any(path.startswith(f"/proc/{other}/") for path in read), (other, sorted(read)[:60])
    assert not any(path.startswith(("/proc/self/fd/", "/proc/thread-self/")) for path in read), sorted(read)
    assert seen["main"]["fork"] == "Operation not permitted"  # a job has no children to read


def test_the_job_reports_the_neutral_view(paths_sandbox: Sandbox, tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1)}, tmp_path / "benign.pt")
    with paths_sandbox.open(tmp_path / "benign.pt") as worker:
        assert "neutral-paths" in worker.info.job_layers.split(",")


def test_every_runtime_directory_has_a_neutral_name_inside() -> None:
    view = RuntimeView.plan(neutral=True)
    for outside, box in view.binds:
        assert (
            box == outside
            if outside == "/usr" or outside.startswith("/usr/")
            else box.startswith("/airlock/")
        )
    boxes = [box for _outside, box in view.binds]
    assert len(set(boxes)) == len(boxes)
    assert view.interpreter.startswith(("/airlock/", "/usr/"))
    assert all(path.startswith(("/airlock/", "/usr/")) for path in view.site)
    assert view.inside(_launcher._AIRLOCK_ROOT).startswith(("/airlock/", "/usr/"))
