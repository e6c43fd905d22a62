"""The formatting both reports share (results/report.md and results/report/index.html + summary.md).

One way to write a number, an interval, a token's text and a table, so that the Markdown and the
HTML say the same thing the same way: `fmt` (a cell), `ci` (a value with its 95% interval),
`shown` / `visible` (token text), `md_table`, and `labelled`, which marks predicted columns
"(predicted)" in every table header (report_tables.PREDICTED names them).
"""
from __future__ import annotations

import math

import polars as pl


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals, missing values as an em dash."""
    if missing(v):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def num(v) -> float:
    return math.nan if v is None else float(v)


def ci(v, lo, hi, digits: int = 3) -> str:
    """A value with its 95% interval: "0.540 (95% CI 0.510–0.570)"; the value alone without an interval."""
    if missing(v):
        return "—"
    if missing(lo) or missing(hi):
        return fmt(v, digits)
    return f"{fmt(v, digits)} (95% CI {fmt(lo, digits)}–{fmt(hi, digits)})"


def shown(text: str | None) -> str:
    """A token's text as a plot or table label: quoted, whitespace and control characters visible."""
    if text is None:
        return "<unmapped>"
    return '"' + "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text) + '"'


def visible(text: str | None) -> str:
    """Token text for the page: whitespace kept, control characters written as escapes, newline as ⏎."""
    if text is None:
        return ""
    return "".join(ch if ch.isprintable() else "⏎" if ch == "\n" else repr(ch)[1:-1] for ch in text)


def md_cell(v) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")


def md_table(df: pl.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.select(cols).iter_rows():
        lines.append("| " + " | ".join(md_cell(v) for v in row) + " |")
    return "\n".join(lines)


def labelled(df: pl.DataFrame, columns: list[str], predicted) -> tuple[pl.DataFrame, list[str]]:
    """`df` with its `predicted` columns renamed "<name> (predicted)", and `columns` to match."""
    names = {c: f"{c} (predicted)" for c in predicted if c in df.columns}
    return df.rename(names), [names.get(c, c) for c in columns]
