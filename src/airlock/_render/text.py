"""Text for people: one block per file that is not clean, then a summary line."""

from __future__ import annotations

from airlock.results import Report, Severity, Verdict


def render(report: Report) -> str:
    lines: list[str] = []
    for option in report.unsafe_options:
        lines.append(f"WARNING: insecure option in force: {option}")
    if report.integrity:
        lines.append(f"integrity: {report.integrity}")
    if report.allowances:
        lines.append(f"note: extra allowances in force: {', '.join(report.allowances)}")
    for file in report.files:
        fmt = f" [{file.format}]" if file.format else ""
        blob = f" (blob {file.blob})" if file.blob else ""
        lines.append(f"{file.verdict.value:<10} {file.path}{fmt}{blob}")
        for finding in file.findings:
            if finding.severity is Severity.INFO:
                continue  # never weighs on a verdict; the JSON and SARIF reports keep them
            where = ""
            if finding.location.members:
                where += " in " + " > ".join(finding.location.members)
            if finding.location.offset is not None:
                where += f" @ byte {finding.location.offset}"
            count = f" (x{finding.count})" if finding.count > 1 else ""
            lines.append(f"  {finding.severity.value:<10} {finding.rule}{where}{count}")
            lines.append(f"             {finding.message}")
            if finding.evidence:
                lines.append(f"             would run: {finding.evidence}")
    for skipped in report.skipped:
        lines.append(f"{'SKIPPED':<10} {skipped.path}: {skipped.reason}")
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
