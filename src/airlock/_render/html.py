"""``--format html``: one self-contained page to open in a browser (no script, no external resource).

Every string that comes from a scanned file (paths, callables, evidence, messages) is escaped with
:func:`html.escape`, after control, format (bidi) and line-break characters and the bytes of a name
that is not UTF-8 are written as escapes as in the text report (``airlock._render.printable``;
names with ``shown_name``): a right-to-left override cannot reorder a name on the page, and the page
is always UTF-8 (an undecodable name made ``-o page.html`` fail, outside review 27). The page carries a Content-Security-Policy that forbids scripts and remote
loads, so even a rendering bug could not make a model's bytes run in the reader's browser.
"""

from __future__ import annotations

from html import escape

from airlock import __version__
from airlock._render import printable, shown_name
from airlock.results import Report, Severity, Verdict

__all__ = ["render"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#1b1b1b}
h1{font-size:1.4em}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
code{font:12px/1.3 ui-monospace,monospace;word-break:break-all}
.v{font-weight:600;white-space:nowrap}.MALICIOUS{color:#b00020}.ERROR{color:#b05a00}
.SUSPICIOUS{color:#7a6a00}.CLEAN{color:#1b7a1b}.SKIPPED{color:#666}
.warn{background:#fff3cd;padding:.4em .6em;border-radius:4px}
"""


def _e(text: str) -> str:
    """A string from the scanned files, for the page."""
    return escape(printable(text))


def _name(text: str) -> str:
    """A path or member name, for the page: one shown text per name."""
    return escape(shown_name(text))


def _v(value: str) -> str:
    return f'<span class="v {escape(value)}">{escape(value)}</span>'


def render(report: Report) -> str:
    verdict = report.verdict.value
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>airlock scan: {escape(verdict)}</title><style>{_CSS}</style></head><body>",
        f"<h1>airlock scan: {_v(verdict)} (exit code {report.exit_code})</h1>",
        "<p>Scanned: " + ", ".join(f"<code>{_name(r)}</code>" for r in report.all_roots) + "</p>",
    ]
    for option in report.unsafe_options:
        parts.append(f'<p class="warn">WARNING: insecure option in force: <code>{escape(option)}</code></p>')
    if report.integrity:
        parts.append(f"<p>Integrity: {_e(report.integrity)}</p>")
    if report.allowances:
        allowed = ", ".join(f"<code>{_e(a)}</code>" for a in report.allowances)
        parts.append(f"<p>Extra allowances in force: {allowed}</p>")
    counts: dict[Verdict, int] = {}
    for file in report.files:
        counts[file.verdict] = counts.get(file.verdict, 0) + 1
    summary = (
        ", ".join(f"{counts[v]} {v.value.lower()}" for v in Verdict if v in counts) or "no files analysed"
    )
    parts.append(f"<p>{escape(summary)}; {len(report.skipped)} skipped.</p>")
    parts.append("<table><tr><th>verdict</th><th>file</th><th>format</th><th>findings</th></tr>")
    for file in report.files:
        rows = []
        for finding in file.findings:
            if finding.severity is Severity.INFO:
                continue
            where = " > ".join(map(shown_name, finding.location.members))
            loc = (f" in <code>{escape(where)}</code>" if where else "") + (
                f" @ byte {finding.location.offset}" if finding.location.offset is not None else ""
            )
            count = f" (x{finding.count})" if finding.count > 1 else ""
            line = f"{_v(finding.severity.value)} <code>{escape(finding.rule)}</code>{loc}{count}<br>{_e(finding.message)}"
            if finding.evidence:
                line += f"<br>would run: <code>{_e(finding.evidence)}</code>"
            rows.append(f"<div>{line}</div>")
        parts.append(
            f"<tr><td>{_v(file.verdict.value)}</td><td><code>{_name(file.path)}</code></td>"
            f"<td>{_e(file.format or '')}</td><td>{''.join(rows)}</td></tr>"
        )
    for skipped in report.skipped:
        parts.append(
            f"<tr><td>{_v('SKIPPED')}</td><td><code>{_name(skipped.path)}</code></td><td></td>"
            f"<td>{_e(skipped.reason)}</td></tr>"
        )
    parts.append("</table>")
    parts.append(f"<p><small>airlock {escape(__version__)}: nothing in these files was executed.</small></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
