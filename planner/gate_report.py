"""Machine-readable renderings of a ``GateReport``: JUnit XML, Markdown, and their atomic writers.

JUnit XML: one ``<testsuite name="edgeplan gate">`` with one ``<testcase>`` per check (``classname``
``edgeplan.gate.<target>``, ``name`` the check's id). A failed check has a ``<failure>`` whose message
states value, limit and margin; an ``uncertain``/``inconclusive`` check that passes (non-strict) carries
its warning in ``<system-out>`` so that CI viewers show it without failing the build. The XML is built
with ``xml.etree`` (escaping is the library's job, not ours).

Markdown: a heading with the verdict and a table (check, value, limit, margin, source, status), then the
warnings and how each value was obtained. ``append_step_summary`` appends it to the file named by
``$GITHUB_STEP_SUMMARY`` (GitHub Actions renders that file on the run's summary page; appending is the
documented protocol, so that several steps can contribute).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from edgeplan.hardware_profiles.atomic import atomic_write_text
from edgeplan.planner.gate import Check, GateReport

__all__ = ["format_value", "to_junit_xml", "to_markdown", "write_junit", "write_markdown", "append_step_summary"]

_STATUS_MD = {"pass": "pass", "fail": "**FAIL**", "uncertain": "uncertain", "inconclusive": "inconclusive"}


def format_value(x: float | None, unit: str) -> str:
    """``12.3 ms``, ``4.56 MB``, ``97.2%`` (accuracy: unit ""), ``+3.1%``."""
    if x is None:
        return "-"
    if unit == "":
        return f"{100 * x:.2f}%"
    if unit == "%":
        return f"{x:+.1f}%"
    return f"{x:.4g} {unit}"


def format_margin(c: Check) -> str:
    m = c.margin
    if m is None:
        return "-"
    if c.unit == "":
        return f"{100 * m:+.2f} pts"
    if c.unit == "%":
        return f"{m:+.1f} pts"
    return f"{m:+.4g} {c.unit} ({c.margin_pct:+.0f}%)"


def _limit(c: Check) -> str:
    shown = f"{c.limit:g}%" if c.unit == "%" else format_value(c.limit, c.unit)
    return f"{c.comparison} {shown}"


def to_junit_xml(report: GateReport) -> str:
    checks = report.checks
    failures = sum(1 for c in checks if not c.passed(report.strict))
    suite = ET.Element("testsuite", {
        "name": "edgeplan gate", "tests": str(len(checks)), "failures": str(failures), "errors": "0",
        "skipped": "0",
    })
    props = ET.SubElement(suite, "properties")
    for k, v in (("model", report.model), ("onnx_path", report.onnx_path), ("target", report.target or ""),
                 ("strict", str(report.strict).lower())):
        ET.SubElement(props, "property", {"name": k, "value": v})
    cls = f"edgeplan.gate.{report.target or 'none'}"
    for c in checks:
        tc = ET.SubElement(suite, "testcase", {"classname": cls, "name": c.id, "time": "0"})
        text = (f"{c.title}: {format_value(c.value, c.unit)} {_limit(c)}, margin {format_margin(c)}, "
                f"{c.status} ({c.source}: {c.method})" + (f"; {c.note}" if c.note else ""))
        if not c.passed(report.strict):
            f = ET.SubElement(tc, "failure", {"message": f"{c.title}: {format_value(c.value, c.unit)}, "
                                                         f"limit {_limit(c)}: {c.status}", "type": c.status})
            f.text = text
        else:
            ET.SubElement(tc, "system-out").text = text
    root = ET.Element("testsuites", {"name": "edgeplan gate", "tests": str(len(checks)),
                                     "failures": str(failures), "errors": "0"})
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: GateReport) -> str:
    verdict = "passed" if report.passed else "FAILED"
    icon = "✅" if report.passed else "❌"
    lines = [f"### {icon} edgeplan gate {verdict}: `{report.model}`" + (f" on `{report.target}`" if report.target else ""),
             "", "| check | value | limit | margin | source | status |", "|---|---:|---:|---:|---|---|"]
    for c in report.checks:
        status = _STATUS_MD.get(c.status, c.status)
        if c.status in ("uncertain", "inconclusive"):
            status += " (fails: --strict)" if report.strict else " (passes, warning)"
        lines.append(f"| {_md_cell(c.title)} | {format_value(c.value, c.unit)} | {_limit(c)} | {format_margin(c)} "
                     f"| {c.source} | {status} |")
    if report.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {_md_cell(w)}" for w in report.warnings]
    lines += ["", "<details><summary>How each value was obtained</summary>", ""]
    lines += [f"- **{_md_cell(c.title)}**: {_md_cell(c.method)}" + (f" ({_md_cell(c.note)})" if c.note else "")
              for c in report.checks]
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_junit(report: GateReport, path: str | Path) -> Path:
    return atomic_write_text(path, to_junit_xml(report))


def write_markdown(report: GateReport, path: str | Path) -> Path:
    return atomic_write_text(path, to_markdown(report))


def append_step_summary(report: GateReport, env: dict[str, str] | None = None) -> Path | None:
    """Append the Markdown summary to ``$GITHUB_STEP_SUMMARY`` when it is set; returns the file or None."""
    target = (env if env is not None else os.environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    p = Path(target)
    with p.open("a", encoding="utf-8") as f:
        f.write(to_markdown(report) + "\n")
    return p
