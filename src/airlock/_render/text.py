"""Text for people: one block per file that is not clean, then a summary line."""

from __future__ import annotations

from airlock._render import printable as _safe
from airlock._render import shown_name as _name
from airlock.results import Report, Severity, Verdict


def render(report: Report) -> str:
    lines: list[str] = []
    for option in report.unsafe_options:
        lines.append(f"WARNING: insecure option in force: {option}")
    if report.integrity:
        lines.append(f"integrity: {_safe(report.integrity)}")
    if report.allowances:
        lines.append(f"note: extra allowances in force: {', '.join(map(_safe, report.allowances))}")
    for file in report.files:
        fmt = f" [{_safe(file.format)}]" if file.format else ""
        blob = f" (blob {_name(file.blob)})" if file.blob else ""
        lines.append(f"{file.verdict.value:<10} {_name(file.path)}{fmt}{blob}")
        for finding in file.findings:
            if finding.severity is Severity.INFO:
                continue  # never weighs on a verdict; the JSON and SARIF reports keep them
            where = ""
            if finding.location.members:
                where += " in " + " > ".join(map(_name, finding.location.members))
            if finding.location.offset is not None:
                where += f" @ byte {finding.location.offset}"
            count = f" (x{finding.count})" if finding.count > 1 else ""
            lines.append(f"  {finding.severity.value:<10} {finding.rule}{where}{count}")
            lines.append(f"             {_safe(finding.message)}")
            if finding.evidence:
                lines.append(f"             would run: {_safe(finding.evidence)}")
    for skipped in report.skipped:
        lines.append(f"{'SKIPPED':<10} {_name(skipped.path)}: {_safe(skipped.reason)}")
    counts: dict[Verdict, int] = {}
    for file in report.files:
        counts[file.verdict] = counts.get(file.verdict, 0) + 1
    summary = (
        ", ".join(f"{counts[v]} {v.value.lower()}" for v in Verdict if v in counts) or "no files analysed"
    )
    lines.append(
        f"verdict: {report.verdict.value} ({summary}; {len(report.skipped)} skipped) "
        f"exit code {report.exit_code}"
    )
    return "\n".join(lines) + "\n"
