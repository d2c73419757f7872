"""Faults injected into trials through ``CXR_FAULT_HOOK=tests.reliability.faults:inject`` (see search/trainable.py).

Which fault a trial gets depends on the order in which trials first reach the hook (claimed atomically as files in
``$CXR_FAULT_DIR``, so across worker processes), so a search of 4 trials has one healthy trial and one of each
fault, whatever configurations the searcher proposes (Optuna's trial ids are random).
Faults strike before the second epoch, after one normal epoch has been reported and checkpointed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FAULTS = {0: None, 1: "nan", 2: "oom", 3: "exception"}


def fault_of(trial_id: str) -> str | None:
    """The fault of a trial: its claim index in $CXR_FAULT_DIR (claiming the next free one on first sight)."""
    folder = Path(os.environ["CXR_FAULT_DIR"])
    for claim in sorted(folder.glob("*.claim")):
        if claim.read_text() == trial_id:
            return FAULTS[int(claim.stem) % len(FAULTS)]
    for i in range(1000):
        try:
            fd = os.open(folder / f"{i:04d}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(trial_id)
        return FAULTS[i % len(FAULTS)]
    raise RuntimeError("no claim left")


def inject(trainer: Any, trial_id: str) -> None:
    if trainer.epoch != 1:
        return
    fault = fault_of(trial_id)
    if fault == "nan":  # poison one weight: the loss turns NaN and the loop's own check must catch it
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))
    elif fault == "oom":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
    elif fault == "exception":
        raise RuntimeError("injected failure (tests/reliability/faults.py)")


def freeze_constant(trainer: Any, trial_id: str) -> None:
    """The first trial to claim becomes a constant model: its last layer's weights zeroed and its learning rate 0,
    so every image gets the same output (collapse by construction); the other trials train normally."""
    if fault_of(trial_id) is not None or Path(os.environ["CXR_FAULT_DIR"], "0000.claim").read_text() != trial_id:
        return
    last = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
    for group in trainer.optimizer.param_groups:
        group["lr"] = 0.0
