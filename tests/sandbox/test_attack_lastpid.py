

_LOCKER = """
import fcntl, os, time
fd = os.open("held", os.O_CREAT | os.O_RDWR, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
time.sleep(6)
"""

_LOCKS = """
import os, time
def probe():
    out = []
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            with open("/proc/locks") as f:
                out.append(f.read())
        except OSError as exc:
            return {"me": os.getpid(), "pids": [], "error": exc.errno}
        time.sleep(0.05)
    pids = sorted({int(line.split()[4]) for text in out for line in text.splitlines() if len(line.split()) > 4})
    return {"me": os.getpid(), "pids": pids}
"""


def test_a_job_does_not_see_a_siblings_locks(sandbox: Sandbox, tmp_path: Path) -> None:
    """``/proc/locks`` lists every lock of the system with its holder's pid (as the reader's pid
    namespace names it): a sibling job's lock showed its pid."""
    from tests.sandbox._payloads import exec_checkpoint

    locker = exec_checkpoint(tmp_path / "locker.pt", _LOCKER)
    setup = (
        f"namespace = {{}}\nexec({_LOCKS!r}, namespace)\nimport builtins\n"
        "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
    )
    model = exec_then_eval_checkpoint(tmp_path / "locks.pt", setup, bytes_tensor("airlock_probe()"))
    pids: list[int] = []

    def hold() -> None:
        with sandbox.open(locker) as other:
            pids.append(other._pid)

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(2)  # the locker holds its lock by now (it sleeps 6 s while it loads)
    try:
        with sandbox.open(model) as worker:
            seen = json.loads(worker.state_dict()["evidence"].tobytes())
    finally:
        thread.join(60)
    assert seen["pids"] == [], seen
