"""Progress bars for the long steps a user waits on (the cache build, retraining, prediction over a folder).

tqdm, quiet when stderr is not a terminal (``disable=None``), so logs and CI stay clean; ``CXR_PROGRESS=1``
forces the bars on and ``CXR_PROGRESS=0`` off. The bars write to stderr: stdout stays the command's result.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

ENV = "CXR_PROGRESS"


def enabled() -> bool | None:
    """tqdm's ``disable`` value: None = on only on a terminal, as tqdm decides; forced by ``CXR_PROGRESS``."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return False
    if setting in ("0", "false", "no", "off"):
        return True
    return None


def active() -> bool:
    """Whether bars are shown: forced by ``CXR_PROGRESS``, else when stderr is a terminal."""
    disable = enabled()
    return not disable if disable is not None else sys.stderr.isatty()


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    position: int | None = None,
    leave: bool = True,
    quiet: bool = False,
) -> Any:
    """A tqdm bar with the house settings: rate and ETA, stderr, redrawn at most once a second; never shown when
    ``quiet`` (a part of a larger step that has its own bar)."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        position=position,
        leave=leave,
        disable=True if quiet else enabled(),
        mininterval=1.0,
        dynamic_ncols=True,
    )
