"""A report's content, apart from how it is rendered: headings, paragraphs, tables and images, in order.

The sections of :mod:`analysis.reporting` append blocks to one :class:`Document`; :mod:`analysis.reporting.render`
turns the same blocks into ``report.md`` and ``report.html``, so the two files always say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Block:
    """One block: ``kind`` is ``h`` (``level``, ``text``), ``p`` (``text``), ``table`` (``table``) or ``img``
    (``path``, ``text`` as its caption)."""

    kind: str
    text: str = ""
    level: int = 0
    table: pd.DataFrame | None = None
    path: Path | None = None


@dataclass
class Document:
    """The blocks of a report, in reading order."""

    blocks: list[Block] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block("h", text, level=level))

    def p(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def table(self, df: pd.DataFrame, index: bool = False) -> None:
        self.blocks.append(Block("table", table=df.reset_index() if index else df))

    def image(self, path: Path | None, caption: str) -> None:
        """An image that exists (a plot that was not drawn, e.g. with nothing to show, is left out)."""
        if path is not None and Path(path).is_file():
            self.blocks.append(Block("img", caption, path=Path(path)))

    def extend(self, other: Document) -> None:
        self.blocks.extend(other.blocks)
