"""``airlock doctor``: which sandbox layers are active on this host, and whether a level can run."""

from __future__ import annotations

import argparse
import json
import sys

from airlock._doctor import check_loaders, render_text, to_json
from airlock.sandbox import SandboxLevel, SandboxPolicy, doctor
from airlock.sandbox._kernel import UNSAFE_NO_LANDLOCK_ENV
from airlock.sandbox._layers import unsafe_no_landlock

__all__ = ["COMMAND"]


class DoctorCommand:
    name = "doctor"
    help = "show which sandbox layers work on this host (for airlock run)"
    description = (
        "Probe every sandbox layer (namespaces via bubblewrap, unprivileged uid, seccomp filters, "
        "Landlock, rlimits, cgroups, wall-clock kill) and say whether the chosen level can run. "
        "Also lists the loader versions the sandbox would run (torch, onnxruntime, transformers, gguf, "
        "jinja2, ...) with warnings for releases that have known load-time vulnerabilities. "
        "Exit 0 when every layer the level needs is active, 2 otherwise."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--level",
            choices=[level.value for level in SandboxLevel],
            default=SandboxLevel.STANDARD.value,
            help="isolation level to check (standard: namespaces, uid, seccomp, rlimits; strict: plus Landlock and cgroups)",
        )
        parser.add_argument(
            "--format", choices=["text", "json"], default="text", help="output format (default text)"
        )

    def run(self, args: argparse.Namespace) -> int:
        report = doctor(SandboxPolicy(level=SandboxLevel(args.level)))
        loaders = check_loaders()  # versions and known load-time advisories (airlock._doctor)
        if unsafe_no_landlock():
            print(
                f"airlock: WARNING: Landlock is DISABLED by {UNSAFE_NO_LANDLOCK_ENV}=1 "
                "(unsafe: for tests and diagnosis only)",
                file=sys.stderr,
            )
        if args.format == "json":
            layers = [
                {
                    "name": s.name,
                    "active": s.active,
                    "required": s.required,
                    "blocks": s.blocks,
                    "detail": s.detail,
                }
                for s in report.layers
            ]
            print(
                json.dumps(
                    {
                        "level": report.level.value,
                        "ok": report.ok,
                        "missing": list(report.missing),
                        "layers": layers,
                        "loaders": to_json(loaders),
                    },
                    indent=2,
                )
            )
        else:
            for s in report.layers:
                state = "active " if s.active else "MISSING"
                need = "required" if s.required else "optional"
                print(f"{state}  {s.name:<17} {need}  {s.detail}")
                print(f"{'':28}blocks: {s.blocks}")
            verdict = "can run" if report.ok else f"CANNOT run (missing {', '.join(report.missing)})"
            print(f"level {report.level.value}: {verdict}")
            print("\n".join(render_text(loaders)))
        return 0 if report.ok else 2


COMMAND = DoctorCommand()
