"""Tables as Markdown (best marked with ∴, as in the paper), CSV (full precision), LaTeX (best in
\\textbf), their p-values, and the one-page offline HTML report."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Sequence

from mr2ct.report.runs import RunRecord
from mr2ct.report.tables import Cell, Row, Table, formatted

BEST_MARK = "∴"
NO_VALUE = "–"
NO_RUNS = "no runs"


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def runs_text(row: Row, table: Table) -> str:
    """How many runs each column group averages ('3', or '3 / 1' when groups differ)."""
    if not row.has_runs:
        return NO_RUNS
    per_group = [max(row.cells[i * len(table.metrics) + j].runs for j in range(len(table.metrics))) for i in range(len(table.groups))]
    return str(per_group[0]) if len(set(per_group)) <= 1 and per_group else " / ".join(map(str, per_group))


def cell_text(cell: Cell, digits: int, mark: str) -> str:
    if cell.value is None:
        return NO_VALUE
    text = formatted(cell.value, digits)
    return f"{mark}{text}" if cell.best else text


# ---------------------------------------------------------------------------------------------- Markdown
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def column_header(table: Table) -> list[str]:
    multi = len(table.groups) > 1
    return [f"{m.label} {arrow(m.higher_is_better)}" + (f" ({g.label})" if multi else "") for g, m in table.columns]


def to_markdown(table: Table) -> str:
    header = ["Method", *column_header(table), "runs"]
    if len(table.groups) == 1:
        header[0] = f"Method (test set {table.groups[0].label})"
    body = [
        [row.label, *(cell_text(c, m.digits, BEST_MARK + " ") for c, (_, m) in zip(row.cells, table.columns)), runs_text(row, table)]
        for row in table.rows
    ]
    parts = [f"### {table.title}", "", markdown_table(header, body), ""]
    if table.note:
        parts += [f"{table.note} {BEST_MARK} marks the best value per column (ties at the printed precision marked together).", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- CSV
def csv_columns(table: Table) -> list[str]:
    return [f"{g.key}/{m.key}" for g, m in table.columns]


def key_columns(table: Table) -> list[str]:
    """The row-key fields of any row (method, registration, inference settings), in first-seen order."""
    return list(dict.fromkeys(field for row in table.rows for field, _ in row.key))


def to_csv(table: Table) -> str:
    """Full-precision values, each row's key fields (empty where a setting does not apply to the method),
    'runs' and the columns where the row holds a best value."""
    out = io.StringIO()
    writer = csv.writer(out)
    keys = key_columns(table)
    writer.writerow(["row", *keys, *csv_columns(table), "runs", "best"])
    for row in table.rows:
        fields = dict(row.key)
        settings = ["" if fields.get(k) is None else str(fields[k]) for k in keys]
        values = ["" if c.value is None else repr(c.value) for c in row.cells]
        best = ";".join(name for name, c in zip(csv_columns(table), row.cells) if c.best)
        writer.writerow([row.label, *settings, *values, runs_text(row, table), best])
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- LaTeX
LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                 "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                 "η": r"$\eta$", "–": "--", "↑": r"$\uparrow$", "↓": r"$\downarrow$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    columns = len(table.columns)
    lines = [
        r"\begin{table}[ht]", r"\centering", f"\\caption{{{latex_escape(table.title)}}}",
        f"\\begin{{tabular}}{{l{'c' * columns}r}}", r"\hline",
    ]
    if table.groups:
        spans = [f"\\multicolumn{{{len(table.metrics)}}}{{c}}{{{latex_escape(g.label)}}}" for g in table.groups]
        lines.append(" & ".join(["", *spans, ""]) + r" \\")
    metric_cells = [latex_escape(f"{m.label} {arrow(m.higher_is_better)}") for _, m in table.columns]
    lines += [" & ".join(["Method", *metric_cells, "runs"]) + r" \\", r"\hline"]
    for row in table.rows:
        cells = []
        for cell, (_, metric) in zip(row.cells, table.columns):
            text = latex_escape(cell_text(cell, metric.digits, ""))
            cells.append(f"\\textbf{{{text}}}" if cell.best else text)
        lines.append(" & ".join([latex_escape(row.label), *cells, latex_escape(runs_text(row, table))]) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- p-values
PVALUE_COLUMNS = ["column", "metric", "reference_row", "other_row", "n", "mean_difference", "statistic", "p_value", "note"]


def pvalue_rows(table: Table) -> list[list[str]]:
    rows = []
    for test in table.pvalues:
        result = test.result
        numbers = ["", "", "", ""] if result is None else [
            str(result.n), repr(result.mean_difference), repr(result.statistic), repr(result.pvalue)]
        rows.append([test.group.key, test.metric.key, test.reference_row, test.other_row, *numbers, test.note])
    return rows


def pvalues_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(PVALUE_COLUMNS)
    writer.writerows(pvalue_rows(table))
    return out.getvalue()


def format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def pvalues_markdown(table: Table) -> str:
    body = [
        [t.group.label, t.metric.label, t.reference_row, t.other_row,
         "" if t.result is None else str(t.result.n), "" if t.result is None else format_p(t.result.pvalue), t.note]
        for t in table.pvalues
    ]
    text = markdown_table(["column", "metric", "row", "compared with", "pairs", "p", "note"], body) if body else "No comparisons (no pair of rows with values)."
    return f"### p-values: {table.title}\n\nPaired two-sided t-tests of {table.comparisons}.\n\n{text}\n"


# ---------------------------------------------------------------------------------------------- runs not included
def not_included_markdown(runs: Sequence[RunRecord]) -> str:
    if not runs:
        return "### Runs not included\n\nNone: every run found was complete.\n"
    body = [[r.name, r.status, str(r.summary.get("model")), str(r.summary.get("registration")), (r.reason or "").splitlines()[0] if r.reason else ""] for r in runs]
    return "### Runs not included\n\n" + markdown_table(["run", "status", "model", "registration", "reason"], body) + "\n"


# ---------------------------------------------------------------------------------------------- HTML
def html_table(table: Table) -> str:
    head = "".join(f"<th colspan='{len(table.metrics)}'>{html.escape(g.label)}</th>" for g in table.groups)
    metric_head = "".join(f"<th>{html.escape(m.label)} {arrow(m.higher_is_better)}</th>" for _, m in table.columns)
    lines = [f"<h2 id='{table.name}'>{html.escape(table.title)}</h2>", "<table>",
             f"<tr><th></th>{head}<th></th></tr>", f"<tr><th>Method</th>{metric_head}<th>runs</th></tr>"]
    for row in table.rows:
        cells = "".join(
            f"<td class='best'>{html.escape(cell_text(c, m.digits, BEST_MARK + ' '))}</td>" if c.best
            else f"<td>{html.escape(cell_text(c, m.digits, ''))}</td>"
            for c, (_, m) in zip(row.cells, table.columns)
        )
        lines.append(f"<tr><th>{html.escape(row.label)}</th>{cells}<td>{html.escape(runs_text(row, table))}</td></tr>")
    lines.append("</table>")
    if table.note:
        lines.append(f"<p class='note'>{html.escape(table.note)}</p>")
    if table.pvalues:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in (
                t.group.label, t.metric.label, t.reference_row, t.other_row,
                "" if t.result is None else str(t.result.n), "" if t.result is None else format_p(t.result.pvalue), t.note)) + "</tr>"
            for t in table.pvalues
        )
        lines.append(f"<details><summary>paired t-tests: {html.escape(table.comparisons)}</summary><table>"
                     "<tr><th>column</th><th>metric</th><th>row</th><th>compared with</th><th>pairs</th><th>p</th><th>note</th></tr>"
                     f"{rows}</table></details>")
    return "\n".join(lines)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}tr>th:first-child{text-align:left}
td.best{font-weight:bold}.note{color:#555;font-size:90%}figure{margin:1em 0}img{max-width:100%}"""


def to_html(title: str, sources: Sequence[str], tables: Sequence[Table], not_included: Sequence[RunRecord],
            figures: Sequence[Path], out_dir: Path) -> str:
    """One static page: tables, p-values, runs left out and figures (image paths relative to out_dir)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p>Runs from: " + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources) + "</p>",
             "<ul>" + "".join(f"<li><a href='#{t.name}'>{html.escape(t.title)}</a></li>" for t in tables) + "</ul>"]
    parts += [html_table(t) for t in tables]
    parts.append("<h2>Runs not included</h2>")
    if not_included:
        parts.append("<table><tr><th>run</th><th>status</th><th>model</th><th>registration</th><th>reason</th></tr>" + "".join(
            f"<tr><td>{html.escape(r.name)}</td><td>{r.status}</td><td>{html.escape(str(r.summary.get('model')))}</td>"
            f"<td>{html.escape(str(r.summary.get('registration')))}</td><td>{html.escape((r.reason or '').splitlines()[0] if r.reason else '')}</td></tr>"
            for r in not_included) + "</table>")
    else:
        parts.append("<p>None: every run found was complete.</p>")
    if figures:
        parts.append("<h2>Figures</h2>")
        for path in figures:
            relative = Path(path).relative_to(out_dir).as_posix()
            parts.append(f"<figure><img src='{html.escape(relative)}' alt='{html.escape(path.stem)}'>"
                         f"<figcaption>{html.escape(path.stem)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_text(text: str, path: Path) -> Path:
    """Write atomically (a reader never sees half a table)."""
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
