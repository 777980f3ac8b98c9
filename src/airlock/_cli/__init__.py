"""The ``airlock`` command line: ``main(argv) -> int``; one module per subcommand, registered below.

Command modules are imported only when their command runs: ``airlock scan`` must not pay for
importing the gateway, the sandbox or the hashing engine. ``airlock --help`` lists the commands
from the table below without importing any of them (a test keeps the table's help lines equal to
the modules' own).
"""

from __future__ import annotations

import gc
import os
import sys

from airlock import __version__
from airlock.errors import AirlockError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from airlock._cli.base import Command

__all__ = ["COMMANDS", "CommandEntry", "docs_location", "entry_point", "main"]

#: Exit code for Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class _Exit:
    #: set when the command that ran asks to leave without tearing the interpreter down
    quick = False


_exit = _Exit()


class CommandEntry:
    """One subcommand of the table below (a plain class: ``typing.NamedTuple`` would make every
    start-up, ``airlock --version`` included, import ``typing`` and ``collections``)."""

    __slots__ = ("extras", "help", "module", "name")

    def __init__(self, name: str, module: str, help: str, extras: tuple[str, ...] = ()) -> None:
        self.name = name
        #: the module that defines ``COMMAND`` for this name
        self.module = module
        #: the one-line help ``airlock --help`` shows (equal to the command's own ``help``)
        self.help = help
        #: extras of model-airlock the command always needs (checked before it is imported)
        self.extras = extras

    def __repr__(self) -> str:
        return f"CommandEntry({self.name!r}, {self.module!r})"

    def load(self) -> Command:
        import importlib

        command: Command = importlib.import_module(self.module).COMMAND
        return command


#: Every subcommand, in the order ``airlock --help`` lists them.
COMMANDS: tuple[CommandEntry, ...] = (
    CommandEntry("scan", "airlock._cli.scan_cmd", "scan model files or folders for code that would run on load (never executes them)"),
    CommandEntry("hash", "airlock._cli.hash_cmd", "print a manifest (path, size, digest) of every file of a model"),
    CommandEntry("sign", "airlock._cli.sign_cmd", "sign a model with an EC key (OpenSSF model signing bundle)"),
    CommandEntry("verify", "airlock._cli.verify_cmd", "check a model against a digest, lock file or signature (strict)"),
    CommandEntry("load", "airlock._cli.load_cmd", "list the tensors of a model file, loaded without running anything", ("numpy",)),
    CommandEntry("convert", "airlock._cli.convert_cmd", "convert a pickle checkpoint or a Hugging Face folder to safetensors, running nothing", ("numpy",)),
    CommandEntry("run", "airlock._cli.run_cmd", "load or run an untrusted model inside the OS sandbox", ("sandbox", "numpy")),
    CommandEntry("chat", "airlock._cli.chat_cmd", "chat with an untrusted GGUF model at a terminal (it runs inside the OS sandbox)", ("sandbox", "text")),
    CommandEntry("doctor", "airlock._cli.doctor_cmd", "show which sandbox layers work on this host (for airlock run)", ("sandbox",)),
    CommandEntry("serve", "airlock._cli.serve_cmd", "serve admitted models to authenticated tenants (KServe v2, and the OpenAI API for text models, over HTTPS)", ("serve",)),
    CommandEntry("tenant", "airlock._cli.tenant_cmd", "add or list the tenants of an airlock serve gateway", ("serve",)),
    CommandEntry("key", "airlock._cli.key_cmd", "create, revoke or list API keys of airlock serve tenants", ("serve",)),
    CommandEntry("audit", "airlock._cli.audit_cmd", "verify the hash chain of the airlock serve audit log", ("serve",)),
    CommandEntry("guard", "airlock._cli.guard_cmd", "check untrusted text: hidden characters, markup, exfiltration links, PII; redact or block", ("guard",)),
    CommandEntry("probe", "airlock._cli.probe_cmd", "attack a served or local model with seeded prompt injections; success rates per family, CI regression mode", ("probe",)),
    CommandEntry("certs", "airlock._cli.certs_cmd", "make a development CA, server certificate and mTLS client certificates"),
)  # fmt: skip


#: what ``airlock probe --memorization`` needs (the model runs in the sandbox, through the text runtime)
MEMORIZATION_EXTRAS = ("sandbox", "text")


def docs_location() -> str:
    """Where the docs/*.md files named in help texts are on this machine.

    Wheels ship them as package data (``airlock/docs``); a source checkout has them in ``docs/``.
    """
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(here, "docs"), os.path.join(here, os.pardir, os.pardir, "docs")):
        if os.path.isfile(os.path.join(candidate, "scan.md")):
            return os.path.normpath(candidate)
    return "https://pypi.org/project/model-airlock/ (README)"


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser, with full arguments for ``selected`` (all commands when it is ``"*"``)."""
    from airlock._cli._parser import build_parser as build

    return build(selected)


#: Commands that show progress on a terminal (stderr), which --quiet turns off.
QUIET = frozenset({"scan", "hash"})


def _wants_json(args: Sequence[str]) -> bool:
    for index, arg in enumerate(args):
        if arg == "--format" and index + 1 < len(args) and args[index + 1] == "json":
            return True
        if arg == "--format=json":
            return True
    return False


class _Failure:
    __slots__ = ("code", "kind", "message")

    def __init__(self, kind: str, message: str, code: int) -> None:
        self.kind = kind
        self.message = message
        self.code = code


def _report(name: str, failure: _Failure, as_json: bool) -> int:
    """One line on stderr; with --format json also a JSON error object on stdout."""
    prefix = f"airlock {name}" if name else "airlock"
    label = {"usage": "usage error: ", "error": "error: "}.get(failure.kind, "")
    print(f"{prefix}: {label}{_escaped(failure.message)}", file=sys.stderr)
    if as_json:
        import json

        doc = {
            "error": {"command": name or None, "kind": failure.kind, "message": failure.message},
            "exit_code": failure.code,
        }
        # ASCII: a message may quote hostile text, and JSON leaves DEL, C1 controls (CSI, OSC to a
        # UTF-8 terminal) and bidi overrides raw
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=True) + "\n")
    return failure.code


def _missing(name: str, extras: Sequence[str]) -> _Failure:
    from airlock._cli._extras import install_hint

    noun = "extra" if len(extras) == 1 else "extras"
    names = ", ".join(repr(e) for e in extras)
    return _Failure("missing-extra", f"needs the {names} {noun}, not installed: {install_hint(extras)}", 2)


def main(argv: Sequence[str] | None = None, *, started: Callable[[], None] | None = None) -> int:
    """Run one command. Exit codes: as the command documents; 2 for usage and airlock errors and
    for a missing extra; 130 when interrupted (Ctrl-C).

    Only :class:`AirlockError`, a missing optional extra and Ctrl-C are caught: anything else is a
    bug and keeps its traceback.

    ``started``: called once the command line is parsed (its modules imported), just before the
    command runs.
    """
    _exit.quick = False
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == ["--version"]:
        # answered before any parser is built: the version is what scripts probe most often
        print(f"airlock {__version__}")
        return 0
    as_json = _wants_json(args_list)
    entries = {entry.name: entry for entry in COMMANDS}
    selected = args_list[0] if args_list and args_list[0] in entries else None
    name = selected or ""
    if selected == "probe" and "--memorization" in args_list[1:]:
        # the memorization audit: a command line of its own (a model, not a URL) under probe's name
        from airlock._cli._extras import missing_extras

        missing = missing_extras(MEMORIZATION_EXTRAS)
        if missing:
            return _report("probe --memorization", _missing("probe --memorization", missing), as_json)
        from airlock.probe.memorization import main as memorization

        return memorization([arg for arg in args_list[1:] if arg != "--memorization"])
    try:
        args: argparse.Namespace | None = None
        if selected is not None:
            entry = entries[selected]
            if entry.extras:
                from airlock._cli._extras import missing_extras

                missing = missing_extras(entry.extras)
                if missing:
                    return _report(name, _missing(name, missing), as_json)
            # A command may read its most common command lines itself (``airlock scan PATH``):
            # argparse, gettext and locale cost a scan of one checkpoint a twentieth of its time.
            # It answers None for anything else, and argparse parses that as always.
            parse_common = getattr(entry.load(), "parse_common", None)
            if parse_common is not None:
                args = parse_common(args_list)
        if args is None:
            from airlock._cli._parser import ArgumentError

            parser = build_parser(selected)
            try:
                args = parser.parse_args(args_list)
            except SystemExit as exc:  # --help and --version exit 0
                return int(exc.code) if isinstance(exc.code, int) else 2
            except ArgumentError as exc:
                exc.parser.print_usage(sys.stderr)
                return _report(name, _Failure("usage", str(exc), 2), as_json)
            if getattr(args, "_command", None) is None:
                parser.print_help(sys.stderr)
                return 2
        command: Command = args._command
        from airlock import _progress

        _progress.configure(enabled=sys.stderr.isatty() and not getattr(args, "quiet", False))
        if started is not None:
            started()
        code = command.run(args)
        _exit.quick = bool(getattr(command, "quick_exit", False))
        return code
    except UsageError as exc:
        return _report(name, _Failure("usage", str(exc), 2), as_json)
    except AirlockError as exc:
        return _report(name, _Failure("error", str(exc), 2), as_json)
    except ModuleNotFoundError as exc:
        from airlock._cli._extras import extra_for

        extra = extra_for(exc)
        if extra is None:
            raise  # not an optional piece: a bug, keep the traceback
        return _report(name, _missing(name, [extra]), as_json)
    except KeyboardInterrupt:
        from airlock import _progress

        _progress.clear()
        return _report(name, _Failure("interrupted", "interrupted", EXIT_INTERRUPTED), as_json)


def _escaped(text: str) -> str:
    """An error message made safe for a terminal: messages may quote hostile input (a sandboxed
    job's error text, a file name), so control and invisible characters are escaped, line by line."""
    return "\n".join(line if line.isprintable() else repr(line)[1:-1] for line in text.split("\n"))


def _started() -> None:
    """The start-up imports are done: collect from now on, but never again walk what they made."""
    gc.enable()
    gc.freeze()


def _absolute_path_only() -> None:
    """Drop the relative entries of PATH (empty, ``.``, ``bin``) for this process: they name the
    current directory -- a model's folder -- and every program the command or a library looks up
    by name (``bwrap``; ``gcc``/``objdump`` that ``ctypes.util.find_library`` runs when the
    loader's cache lacks a library) would otherwise be taken from there (outside review 19)."""
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    kept = [entry for entry in entries if os.path.isabs(entry)]
    if kept != entries:
        os.environ["PATH"] = os.pathsep.join(kept)


def entry_point() -> None:
    _absolute_path_only()
    # Start-up is mostly imports: tens of thousands of long-lived objects and no garbage worth a
    # collection, yet the collector would walk them again and again (a tenth of a small scan's
    # time). It is off until the command runs; then they are frozen out of every later collection.
    gc.disable()
    try:
        code = main(started=_started)
    finally:
        gc.enable()
    if code == EXIT_INTERRUPTED:
        # Worker threads (hashing) may still be reading; do not wait for them at exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if _exit.quick:
        _leave_now(code)
    sys.exit(code)


def _leave_now(code: int) -> None:
    """Leave with ``code`` without tearing the interpreter down (freeing every module and object
    one by one: a twentieth of a scan of 2,000 small files), when a command that wrote all it
    had to say asked for it (``quick_exit``) and nothing else is left to do at exit: no exit
    handler registered (``atexit``: coverage, logging, weakref finalizers, a library's), no other
    thread alive, and stdout and stderr flushed. Anything else returns, and the interpreter exits
    as usual (a flush that failed is retried and reported there, exit status 120)."""
    import atexit

    handlers = getattr(atexit, "_ncallbacks", None)
    if handlers is None or handlers() != 0:
        return
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() != 1:
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            return
    os._exit(code)
