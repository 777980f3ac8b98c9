"""``airlock chat``: talk to an untrusted GGUF chat model at a terminal; it runs in the sandbox."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airlock._cli._sandboxed import (
    add_gate_arguments,
    add_text_arguments,
    context_message,
    open_worker,
    text_request,
)
from airlock.sandbox._text import terminal_text

__all__ = ["COMMAND"]

#: characters one line typed at the prompt may have
_MAX_LINE = 1 << 16


@contextmanager
def _interrupt_flag() -> Iterator[list[bool]]:
    """While an answer streams, a first Ctrl-C only raises a flag, checked between two tokens: a
    KeyboardInterrupt in the middle of reading a message would leave the channel half-read. A
    model that sends no token never reaches that check, so a second Ctrl-C during the same answer
    raises KeyboardInterrupt: the chat gives up on the job (dropped, killed) and ends (exit 130)."""
    flag = [False]

    def note(signum: int, frame: object) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class ChatCommand:
    name = "chat"
    help = "chat with an untrusted GGUF model at a terminal (it runs inside the OS sandbox)"
    description = (
        "Gate MODEL as `airlock run` does (only CLEAN passes unless --unsafe-*), load it in the sandbox "
        "once, then read one message per line from standard input and stream the answer. The chat "
        "template is rendered inside the sandbox; every character the model writes that could drive the "
        "terminal is escaped. Ctrl-C stops the current answer (press it again at the prompt to quit, or "
        "twice during an answer that does not stop: the job is killed and the chat ends); "
        "Ctrl-D or an empty input ends. Exit 0; 2 on any error; 130 after Ctrl-C at the prompt."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", type=Path, metavar="MODEL", help="a GGUF chat model file")
        add_gate_arguments(parser)
        add_text_arguments(parser, chat=True)

    def run(self, args: argparse.Namespace) -> int:
        history: list[dict[str, str]] = []
        text_request(args, [{"role": "user", "content": "-"}])  # bad options fail before the load
        with open_worker(args, "airlock chat", runtime="text-gguf") as worker:
            print(f"loaded {worker.info.summary} in the sandbox [{worker.info.job_layers}]", file=sys.stderr)
            interactive = sys.stdin.isatty()
            while True:
                if interactive:
                    print("> ", end="", file=sys.stderr, flush=True)
                line = sys.stdin.readline(_MAX_LINE)
                if not line.strip():
                    return 0
                history.append({"role": "user", "content": line.rstrip("\n")})
                stream = worker.generate(**text_request(args, list(history)))
                with _interrupt_flag() as interrupted:
                    for piece in stream:
                        print(terminal_text(piece), end="", flush=True)
                        if interrupted[0]:
                            stream.close()  # the job stops between two tokens; the model stays loaded
                            print(" [stopped]", end="", file=sys.stderr, flush=True)
                            break
                print(flush=True)
                if stream.result is not None and stream.result.finish == "context":
                    # the conversation no longer fits: say so, and forget the message that did not fit
                    history.pop()
                    print(f"airlock chat: {context_message(stream.result, args.max_tokens)}", file=sys.stderr)
                elif stream.result is not None:
                    history.append({"role": "assistant", "content": stream.result.text})


COMMAND = ChatCommand()
