"""A run's report: markdown and a static HTML page from the figures a pipeline produced.

Every success rate is shown with its episode count and Wilson 95% interval; nothing is
computed here that the run did not measure.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from vla_rft.checkpoint import atomic_write_text


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def eval_table_rows(res: dict[str, Any]) -> list[list[str]]:
    rows = []
    for task, r in res["per_task"].items():
        lo, hi = r["ci95"]
        rows.append([task, _pct(r["success_rate"]), f"[{_pct(lo)}, {_pct(hi)}]", str(r["episodes"]), f"{r['mean_length']:.1f}"])
    return rows


def write_report(path_stem: Path, title: str, sections: list[tuple[str, str | list[list[str]], list[str] | None]]) -> list[Path]:
    """Write ``<stem>.md`` and ``<stem>.html``; a section is (heading, text or table rows, table header)."""
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content, header in sections:
        md += [f"## {heading}", ""]
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, str):
            md += [content, ""]
            body.append(f"<pre>{html.escape(content)}</pre>")
        else:
            assert header is not None
            md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(r) + " |" for r in content]
            md.append("")
            cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in content)
            body.append(f"<table><tr>{cells}</tr>{trs}</table>")
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .6em}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    md_path, html_path = path_stem.with_suffix(".md"), path_stem.with_suffix(".html")
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, page)
    return [md_path, html_path]
