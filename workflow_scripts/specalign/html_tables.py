"""The page's HTML tables: a data table with its predicted columns marked, and the samples side by side.

A table shows the columns asked for that exist, each predicted one (report_tables.PREDICTED)
shaded and headed "<name> (predicted)"; token text keeps its whitespace (monospace). The samples
table puts the draft's and the target's answers side by side with the disagreeing tokens marked.
"""
from __future__ import annotations

import html
from typing import Mapping, Sequence

import polars as pl

from .divergence import Divergence
from .report_format import fmt, shown, visible
from .report_tables import PREDICTED

MAX_SAMPLES = 24         # samples per run in the side-by-side table


def html_table(df: pl.DataFrame, columns: Sequence[str], predicted: Sequence[str] = PREDICTED,
               names: Mapping[str, str] | None = None, mono: Sequence[str] = ()) -> str:
    """A table of `columns` (those present), predicted columns marked in header and cells; `mono`
    columns are token text (whitespace kept, monospace). Wide tables scroll inside their box."""
    cols = [c for c in columns if c in df.columns]
    if not df.height or not cols:
        return "<p><em>no rows</em></p>"
    names = dict(names or {})

    def head(c):
        n = html.escape(names.get(c, c))
        return f'<th class="pred">{n} (predicted)</th>' if c in predicted else f"<th>{n}</th>"

    out = ['<div class="scroll"><table>', "<tr>" + "".join(head(c) for c in cols) + "</tr>"]
    for row in df.select(cols).iter_rows(named=True):
        cells = []
        for c in cols:
            v = html.escape(visible(row[c]) if c in mono and isinstance(row[c], str) else fmt(row[c]))
            cls = "pred" if c in predicted else "tok" if c in mono else ""
            cells.append(f'<td class="{cls}">{v}</td>' if cls else f"<td>{v}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table></div>"])


def _tokens_html(ids: Sequence[int], text: Mapping[int, str], marks: Sequence[tuple[str, str] | None]) -> str:
    out = []
    for t, m in zip(ids, marks):
        piece = html.escape(visible(text.get(t, "<unmapped>")) if t >= 0 else "<unmapped>")
        if m is None:
            out.append(piece)
        else:
            cls, title = m
            out.append(f'<mark class="{cls}" title="{html.escape(title)}">{piece}</mark>')
    return "".join(out)


def samples_html(d: Divergence, manifest: pl.DataFrame | None, max_samples: int = MAX_SAMPLES) -> str:
    """Draft and target answers side by side. Target: tokens the draft, given the target's own
    prefix, would NOT have proposed (teacher-forced mismatch; hover: what it proposed). Draft (its
    free-running answer in target ids): tokens that differ from the target's at the same position."""
    refs = {}
    if manifest is not None and "reference" in manifest.columns:
        refs = dict(zip(manifest["sample_id"].to_list(), manifest["reference"].to_list()))
    first = {s: p for s, p in zip(d.first["sample_id"], d.first["first_divergence"])}
    sids = sorted(set(d.targets) | set(d.drafts))[:max_samples]
    per = {sid: part.sort("position") for (sid,), part in d.scores.group_by("sample_id")} if d.scores.height else {}
    rows = ['<div class="scroll"><table class="samples">', "<tr><th>sample</th><th>first divergence (free-running)</th>"
            "<th>target answer (teacher-forced mismatches marked)</th>"
            "<th>draft answer, free-running (positional differences marked)</th><th>reference</th></tr>"]
    for sid in sids:
        tgt = list(d.targets.get(sid, []))
        drf = list(d.drafts.get(sid, []))
        sc = per.get(sid)
        tmarks: list = [None] * len(tgt)
        if sc is not None:
            for pos, match, proposed in zip(sc["position"], sc["match"], sc["draft_token"]):
                if pos < len(tmarks) and not match:
                    tmarks[pos] = ("tf", f"teacher-forced: draft proposed {shown(d.text.get(proposed))}")
        dmarks = []
        for i, t in enumerate(drf):
            if t < 0:
                dmarks.append(("unmapped", "no target id for this draft token"))
            elif i >= len(tgt) or tgt[i] != t:
                other = shown(d.text.get(tgt[i])) if i < len(tgt) else "nothing (target answer ended)"
                dmarks.append(("pos", f"position {i}: target has {other}"))
            else:
                dmarks.append(None)
        fd = first.get(sid)
        rows.append(f"<tr><td>{html.escape(sid)}</td><td>{'identical' if fd is None else fd}</td>"
                    f'<td class="tok">{_tokens_html(tgt, d.text, tmarks)}</td>'
                    f'<td class="tok">{_tokens_html(drf, d.text, dmarks)}</td>'
                    f"<td>{html.escape(str(refs.get(sid, '') or ''))}</td></tr>")
    rows.append("</table></div>")
    more = len(set(d.targets) | set(d.drafts)) - len(sids)
    note = f"<p><em>{more} more samples not shown.</em></p>" if more > 0 else ""
    return "\n".join(rows) + note
