"""Render a report :class:`~edgekd.report.document.Document` as Markdown (GitHub flavour)."""

from __future__ import annotations

from edgekd.report.document import Block, Bullets, Code, Document, Figure, Paragraph, Table, Verdict


def render_markdown(document: Document) -> str:
    """The document as Markdown; figures are linked by their file names (kept beside the report)."""
    lines = [f"# {document.title}", ""]
    for block in document.intro:
        lines += [*_block(block), ""]
    for section in document.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += [*_block(block), ""]
    return "\n".join(lines).rstrip() + "\n"


def _block(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Bullets):
        mark = "- ⚠ " if block.tone == "warning" else "- "
        return [mark + item for item in block.items]
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return [f"![{block.caption}]({block.file})", "", f"*{block.caption}*"]
    if isinstance(block, Verdict):
        return [f"{block.label}: **{block.verdict.upper()}**" + (f" {block.note}" if block.note else "")]
    if isinstance(block, Code):
        return [f"**{block.title}**", "", f"```{block.language}", block.text.rstrip(), "```"]
    raise TypeError(f"unknown block {type(block).__name__}")


def _table(table: Table) -> list[str]:
    align = ["---:" if table.numeric(i) else "---" for i in range(len(table.headers))]
    escaped = [[cell.replace("|", "\\|") for cell in row] for row in table.rows]
    return ["| " + " | ".join(table.headers) + " |", "|" + "|".join(align) + "|",
            *["| " + " | ".join(row) + " |" for row in escaped]]
