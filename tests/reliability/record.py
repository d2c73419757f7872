"""One JSON record per reliability case, rendered into docs/reliability.md by ``tests/reliability/make_report.py``.

Each test calls :func:`record` after its assertions passed, so a record exists only for a case that behaved as the
row says. Records carry no timings, so re-running the tests rewrites them identically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RECORDS = Path(__file__).resolve().parent / "records"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def record(area: str, case: str, injected: str, outcome: str, test: str) -> None:
    """``area``: the table the row goes in; ``case``: the input or fault; ``injected``: how the test made it;
    ``outcome``: what the system did (asserted by ``test``)."""
    RECORDS.mkdir(exist_ok=True)
    row = {"area": area, "case": case, "injected": injected, "outcome": outcome, "test": test}
    (RECORDS / f"{_slug(area)}--{_slug(case)}.json").write_text(json.dumps(row, indent=1, ensure_ascii=False) + "\n")
