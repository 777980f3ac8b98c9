"""Analysis: the symbolic pickle machine, policy, template analysis and findings."""

from __future__ import annotations

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from airlock._formats.base import Issue
    from airlock.limits import Limits


def analyse_template(name: str, text: str, limits: Limits, offset: int | None = None) -> list[Issue]:
    """Findings for one Jinja template (see ``_analysis.template``).

    The entry point is here so that jinja2 is imported only when a scan meets a template: most
    scans never do, and the import would otherwise be paid at every start-up.
    """
    from airlock._analysis.template import analyse_template as analyse

    return analyse(name, text, limits, offset)
