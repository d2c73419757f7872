"""Tune's OptunaSearch, told only what trials really gave (imports Ray and Optuna: used where a search is built).

- Every finite per-epoch score is reported to the Optuna trial as an intermediate value; a NaN (a failed trial's
  last report) is not.
- A trial that ends on a finite score is COMPLETE with its **last** score. Tune calls ``on_trial_complete`` with the
  last result also when ASHA stops a trial, so the stopped trials inform TPE too.
- A trial that ends without one (``failed``: a diverged loss, out-of-memory) is FAIL, with no value, so no
  placeholder enters the sampler's model. Tune's own OptunaSearch would pass the NaN to ``study.tell``, which
  only logs a warning.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search.optuna import OptunaSearch


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TrialOptunaSearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if _finite(result.get(self.metric)):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result is not None and not _finite(result.get(self.metric)):
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)
