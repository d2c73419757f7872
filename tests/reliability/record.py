"""One JSON record per reliability case, rendered into docs/reliability.md by ``tests/reliability/make_report.py``.

Each test calls :func:`record` after its assertions passed, so a record exists only for a case that behaved as the
row says. An ordinary test run changes no tracked file: the records are written only when ``CXR_UPDATE_RECORDS=1``
is set, by the one command that regenerates them and the page

    CXR_UPDATE_RECORDS=1 python -m pytest tests/test_reliability_*.py && python tests/reliability/make_report.py

Records carry no timings, and pytest's temporary folders are written as ``<tmp>``, so a rerun rewrites them
identically.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

RECORDS = Path(__file__).resolve().parent / "records"
UPDATE_ENV = "CXR_UPDATE_RECORDS"
_PYTEST_TMP = re.compile(r"/\S*?/pytest-of-[^/]+/pytest-\d+/")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def record(area: str, case: str, injected: str, outcome: str, test: str) -> None:
    """``area``: the table the row goes in; ``case``: the input or fault; ``injected``: how the test made it;
    ``outcome``: what the system did (asserted by ``test``)."""
    if os.environ.get(UPDATE_ENV) != "1":
        return
    RECORDS.mkdir(exist_ok=True)
    row = {
        "area": area,
        "case": case,
        "injected": injected,
        "outcome": _PYTEST_TMP.sub("<tmp>/", outcome),
        "test": test,
    }
    (RECORDS / f"{_slug(area)}--{_slug(case)}.json").write_text(json.dumps(row, indent=1, ensure_ascii=False) + "\n")
