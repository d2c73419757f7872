"""Tune's OptunaSearch, told only what trials really gave (imports Ray and Optuna: used where a search is built).

- Every finite per-epoch score is reported to the Optuna trial as an intermediate value; a NaN (a failed trial's
  last report) is not.
- A trial that ends on a finite score is COMPLETE with its **last** score. Tune calls ``on_trial_complete`` with the
  last result also when ASHA stops a trial, so the stopped trials inform TPE too.
- A trial that ends without one (``failed``: a diverged loss, out-of-memory) is FAIL, with no value, so no
  placeholder enters the sampler's model. Tune's own OptunaSearch would pass the NaN to ``study.tell``, which
  only logs a warning.
- A trial the study already holds as finished is left as it is. The study lives in a journal file or a database
  that outlives the driver: a driver killed (SIGKILL, a lost head node) after telling the study a trial's outcome
  but before Tune saved its own state has Tune rerun that trial's last epochs on ``--resume``, and Optuna refuses
  to update a finished trial (``UpdateFinishedTrialError``, which would end the resumed search).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TrialOptunaSearch(OptunaSearch):
    def _finished_in_study(self) -> set[str]:
        """Trials whose outcome the study held before this driver told it (set on first use: searchers pickled by an
        older version lack it)."""
        return self.__dict__.setdefault("_told_before_resume", set())

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not _finite(result.get(self.metric)) or trial_id in self._finished_in_study():
            return
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.warning(
                "trial %s: the Optuna study already holds its outcome (told before the driver stopped); "
                "the study keeps it while Tune reruns the trial's last epochs",
                trial_id,
            )
            self._finished_in_study().add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._finished_in_study():
            self._completed_trials.add(trial_id)
            return
        if result is not None and not _finite(result.get(self.metric)):
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)
