"""The sandbox channel's cost for large frames, and how long it keeps other threads waiting (not run by CI).

    PYTHONPATH=<src> .venv/bin/python bench/frames_bench.py [--mib 8] [--frames 20] [--rounds 3]

A child process (plain ``socket.sendall`` / ``recv_into``, the same whichever ``airlock`` is on
the path) sends frames of ``--mib`` MiB over a Unix socketpair to a thread of this process that
receives them with :func:`airlock.sandbox._frames.recv_frame` (the host side: ``accept_fds=False``
and a deadline), then the thread sends the same size back with ``send_frame``. Per frame it reports
the receiving (sending) thread's CPU time, split into user time (in the process, with the GIL
held: Python, zeroing and copying buffers) and system time (the kernel's copy, GIL released), and
the wall time. Meanwhile a second thread asks for the
GIL every millisecond (``time.sleep(0.001)``): its longest wait past the millisecond is how long
the channel kept a Python thread waiting (the gateway's event loop, in ``airlock serve``); the same
ticker runs first with nothing else going on, to show what the machine alone costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import struct
import threading
import time

from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame

PREFIX = struct.Struct("<4sIQ")


def child(sock: socket.socket, size: int, frames: int) -> None:
    header = b'{"type":"tensors","tensors":[]}'
    frame = PREFIX.pack(b"ALF1", len(header), size) + header + bytes(size)
    sink = bytearray(1 << 20)
    for _ in range(frames):
        sock.sendall(frame)
        # then read the frame sent back and throw it away
        left = PREFIX.size
        got = bytearray()
        while len(got) < left:
            got += sock.recv(left - len(got))
        _, header_len, payload_len = PREFIX.unpack(got)
        left = header_len + payload_len
        with memoryview(sink) as view:
            while left:
                n = sock.recv_into(view[: min(left, len(sink))])
                if n == 0:
                    raise SystemExit("parent closed")
                left -= n
    sock.close()


class Ticker(threading.Thread):
    """Sleeps 1 ms at a time; notes how much longer each sleep took than asked (GIL + CPU waits)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.excess: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            start = time.perf_counter()
            time.sleep(0.001)
            self.excess.append(time.perf_counter() - start - 0.001)


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"p50 {statistics.median(ordered) * 1e3:6.2f}  p99 {p99 * 1e3:6.2f}  max {ordered[-1] * 1e3:6.2f} ms"
    )


def one_round(size: int, frames: int) -> None:
    idle = Ticker()
    idle.start()
    time.sleep(1.0)
    idle.running = False
    idle.join()

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            child(theirs, size, frames)
        finally:
            os._exit(0)
    theirs.close()
    caps = FrameCaps(1 << 16, size + (1 << 16), frozenset({"tensors"}))
    recv_cpu: list[float] = []
    recv_user: list[float] = []
    recv_wall: list[float] = []
    send_cpu: list[float] = []
    send_wall: list[float] = []

    def receiver() -> None:
        for _ in range(frames):
            c0, w0 = time.thread_time(), time.perf_counter()
            u0 = resource.getrusage(resource.RUSAGE_THREAD).ru_utime
            frame = recv_frame(ours, caps, accept_fds=False, deadline=time.monotonic() + 30)
            recv_user.append(resource.getrusage(resource.RUSAGE_THREAD).ru_utime - u0)
            recv_cpu.append(time.thread_time() - c0)
            recv_wall.append(time.perf_counter() - w0)
            assert frame.payload.nbytes == size
            c0, w0 = time.thread_time(), time.perf_counter()
            send_frame(
                ours, {"type": "tensors", "tensors": []}, [frame.payload], deadline=time.monotonic() + 30
            )
            send_cpu.append(time.thread_time() - c0)
            send_wall.append(time.perf_counter() - w0)
            del frame

    busy = Ticker()
    busy.start()
    thread = threading.Thread(target=receiver)
    thread.start()
    thread.join()
    busy.running = False
    busy.join()
    os.waitpid(pid, 0)
    ours.close()
    print(f"  receive {size >> 20} MiB: cpu {_ms(recv_cpu)}; wall {_ms(recv_wall)}")
    # user and system time are accounted at the kernel's tick: only their mean over frames means much
    user = sum(recv_user) / len(recv_user)
    print(
        f"    of which user time (GIL held), mean: {user * 1e3:.2f} ms; system time {statistics.mean(recv_cpu) * 1e3 - user * 1e3:.2f} ms"
    )
    print(f"  send    {size >> 20} MiB: cpu {_ms(send_cpu)}; wall {_ms(send_wall)}")
    print(f"  ticker idle      : {_ms(idle.excess)} over the 1 ms asked (n={len(idle.excess)})")
    print(f"  ticker during I/O: {_ms(busy.excess)} over the 1 ms asked (n={len(busy.excess)})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import airlock

    print(f"airlock from {os.path.dirname(airlock.__file__)}; load {os.getloadavg()[0]:.2f}")
    for index in range(args.rounds):
        print(f"round {index + 1} (load {os.getloadavg()[0]:.2f})")
        one_round(args.mib << 20, args.frames)


if __name__ == "__main__":
    main()
