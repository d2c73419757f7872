"""A :class:`~analysis.reporting.document.Document` rendered as GitHub Markdown and as one self-contained HTML page.

Both renderers walk the same blocks, so ``report.md`` and ``report.html`` have the same content. The page's
structure and style are Jinja2 templates beside this module (``templates/report.html.j2``, ``templates/report.css``):
change them there, not here.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.reporting.document import Block, Document


def _md_cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return "" if v is None or v is pd.NA else str(v).replace("|", "\\|").replace("\n", " ")


def _html_cell(v: Any) -> str:
    """A table cell for the page: blank for a missing value (never <NA> or nan), floats to 4 significant digits."""
    if v is None or v is pd.NA or (isinstance(v, float | np.floating) and np.isnan(v)):
        return ""
    return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' ``to_markdown`` needs tabulate, which the project does not depend on)."""
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def html_table(df: pd.DataFrame) -> str:
    # a named column axis (crosstabs, pivots) would render as an extra, empty leading column
    cells = df.apply(lambda column: column.map(_html_cell)).rename_axis(columns=None)
    return cells.to_html(index=False, border=0)


def to_markdown(doc: Document, base: Path) -> str:
    """The document as Markdown; images are linked relative to ``base`` (the folder the file is written to)."""
    lines: list[str] = []
    for b in doc.blocks:
        if b.kind == "h":
            lines += [f"{'#' * b.level} {b.text}", ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "table":
            lines += [markdown_table(b.table), ""]
        elif b.kind == "img":
            lines += [f"![{b.text}]({b.path.relative_to(base).as_posix()})", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class HtmlBlock:
    """A block as the page template reads it: the table rendered, the image read and encoded."""

    kind: str
    text: str
    level: int
    anchor: str
    html: str = ""
    data: str = ""


def _html_block(i: int, b: Block) -> HtmlBlock:
    table = html_table(b.table) if b.kind == "table" else ""
    data = base64.b64encode(b.path.read_bytes()).decode() if b.kind == "img" else ""
    return HtmlBlock(b.kind, b.text, b.level, f"s{i}", table, data)


def to_html(doc: Document, title: str) -> str:
    """The document as one page that can be mailed: the template ``report.html.j2``, the PNGs embedded. The
    contents list (every level-2 and level-3 heading) follows the title when the title comes first."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("analysis.reporting", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    blocks = [_html_block(i, b) for i, b in enumerate(doc.blocks)]
    contents = [b for b in blocks if b.kind == "h" and b.level in (2, 3)]
    first = next((b for b in blocks if b.kind == "h" and b.level == 1), None)
    after = first.anchor if first is not None and contents and blocks.index(first) < blocks.index(contents[0]) else ""
    return env.get_template("report.html.j2").render(
        title=title, blocks=blocks, contents=contents, contents_after=after
    )
