"""Render a report :class:`~edgekd.report.document.Document` as one self-contained HTML page.

Everything is inline (CSS in a ``<style>`` element, figures as base64 ``data:`` URIs), with no
script and no external reference, so the file opens from disk, from an e-mail attachment or a
CI artifact, offline, in any browser.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from edgekd.report.document import Block, Bullets, Code, Document, Figure, Paragraph, Section, Table, Verdict

_NUM = ' class="num"'
_STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --stripe: #f6f8fa; --accent: #0969da;
        --pass: #1a7f37; --pass-bg: #dafbe1; --fail: #cf222e; --fail-bg: #ffebe9; --warn-bg: #fff8c5; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 28px; margin: 0 0 8px; }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
p, ul { margin: 8px 0; }
a { color: var(--accent); text-decoration: none; }
nav { margin: 12px 0 4px; font-size: 14px; }
nav a { margin-right: 14px; white-space: nowrap; }
.table-wrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 14px; min-width: 40%; }
th, td { padding: 5px 10px; border: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--stripe); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.pass { color: var(--pass); font-weight: 600; }
td.fail { color: var(--fail); font-weight: 600; }
.verdict { display: flex; align-items: center; gap: 12px; margin: 10px 0; }
.badge { display: inline-block; padding: 3px 12px; border-radius: 14px; font-weight: 700; letter-spacing: .04em; }
.badge.pass { color: var(--pass); background: var(--pass-bg); border: 1px solid var(--pass); }
.badge.fail { color: var(--fail); background: var(--fail-bg); border: 1px solid var(--fail); }
.badge.other { color: var(--muted); background: var(--stripe); border: 1px solid var(--line); }
.figures { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 8px 0; flex: 0 1 calc(50% - 9px); min-width: 360px; }
figure:last-child:nth-child(odd) { flex: 1 1 100%; }
figure img { display: block; width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figure:last-child:nth-child(odd) img { max-width: 900px; margin: 0 auto; }
figure:last-child:nth-child(odd) figcaption { max-width: 900px; margin: 4px auto 0; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
ul.warning li { background: var(--warn-bg); padding: 4px 8px; margin: 4px 0; list-style: none; border-radius: 4px; }
ul.warning { padding-left: 0; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--stripe); padding: 12px; border-radius: 6px; overflow-x: auto; font-size: 13px; }
.muted { color: var(--muted); }
"""


def render_html(document: Document, base_dir: Path) -> str:
    """The document as one HTML page; figure files are read from ``base_dir`` and embedded."""
    nav = " ".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>' for s in document.sections)
    body = [f"<h1>{escape(document.title)}</h1>", *[_block(b, base_dir) for b in document.intro],
            f"<nav>{nav}</nav>", *[_section(s, base_dir) for s in document.sections]]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(document.title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


def _section(section: Section, base_dir: Path) -> str:
    parts, figures = [f'<section id="{section.anchor}">', f"<h2>{escape(section.title)}</h2>"], []
    for block in section.blocks:
        if isinstance(block, Figure):
            figures.append(_block(block, base_dir))
            continue
        if figures:
            parts.append('<div class="figures">' + "".join(figures) + "</div>")
            figures = []
        parts.append(_block(block, base_dir))
    if figures:
        parts.append('<div class="figures">' + "".join(figures) + "</div>")
    return "\n".join(parts + ["</section>"])


def _block(block: Block, base_dir: Path) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        items = "".join(f"<li>{'⚠ ' if block.tone == 'warning' else ''}{escape(item)}</li>" for item in block.items)
        return f'<ul class="{escape(block.tone)}">{items}</ul>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        data = base64.b64encode((base_dir / block.file).read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(block.caption)}">'
                f"<figcaption>{escape(block.caption)}</figcaption></figure>")
    if isinstance(block, Verdict):
        tone = block.verdict if block.verdict in ("pass", "fail") else "other"
        return (f'<p class="verdict"><strong>{escape(block.label)}</strong>'
                f'<span class="badge {tone}">{escape(block.verdict.upper())}</span>'
                f'<span class="muted">{escape(block.note)}</span></p>')
    if isinstance(block, Code):
        return (f"<details><summary>{escape(block.title)}</summary>"
                f"<pre><code>{escape(block.text)}</code></pre></details>")
    raise TypeError(f"unknown block {type(block).__name__}")


def _table(table: Table) -> str:
    numeric = [table.numeric(i) for i in range(len(table.headers))]
    head = "".join(f"<th{_NUM if num else ''}>{escape(h)}</th>" for h, num in zip(table.headers, numeric, strict=True))
    rows = "".join("<tr>" + "".join(f"<td{_cell_class(cell, num)}>{escape(cell)}</td>"
                                    for cell, num in zip(row, numeric, strict=True)) + "</tr>"
                   for row in table.rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _cell_class(cell: str, numeric: bool) -> str:
    if cell.lower() in ("pass", "fail"):
        return f' class="{cell.lower()}"'
    return _NUM if numeric else ""
