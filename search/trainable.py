"""The Tune trainable: one trial = one :class:`cxrmodels.train.loop.Trainer`, one report per epoch.

Thin on purpose (Ray's mnist_pytorch shape): build the config, the data and the Trainer, resume from Tune's
checkpoint if there is one, then ``run_epoch()`` / ``tune.report()`` until the Trainer says it is done.

Checkpoints. Every epoch reports a checkpoint folder (Tune's ``<trial>/checkpoint_NNNNNN/``) with

- ``trainer_state.pt``: ``Trainer.state_dict()`` (model, optimizer, LR plateau, early stopping, RNG): what
  ``--resume`` needs to continue the trial exactly where it stopped;
- ``model.pt``: ``Trainer.checkpoint(current=True)``, a ``ModelCheckpoint`` with this epoch's weights (config,
  class names, preprocessing, history, plus ``objective``/``objective_value`` in its ``info``): what analysis loads
  with ``cxrmodels.train.checkpoint.load_model``;
- ``metrics.json``: that epoch's metrics.

Every result also carries ``score``: what Tune's metric, ASHA, Optuna and checkpoint retention rank by. It is the
objective itself (``val_auc`` by default: threshold-free and continuous, chosen by measurement, see docs/search.md),
collapsed epochs included, so two trials at the same epoch never tie at a placeholder and ASHA's rung cutoffs are
real values. Collapse (``val_collapsed``: near-constant output or validation AUROC near 0.5) is reported beside it;
the results table and the analysis never make a collapsed trial a winner. An epoch whose objective is not finite
(a failed trial) scores NaN: ASHA's cutoffs skip NaN (``nanpercentile``) and
:class:`search.optuna_searcher.TrialOptunaSearch` never passes it to Optuna.

The run keeps ``CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="score")``: Tune keeps the single
best checkpoint by score **and never deletes the latest one**, so at most two folders per trial exist on
disk, the best one is there for analysis and the latest one for resume. Checkpointing only on ``is_best`` would be
cheaper but would make a resumed trial repeat (and re-report) every epoch after its best one.

Failures. A loss that turns NaN/inf (``NonFiniteLossError``) or a CUDA out-of-memory ends the trial cleanly: one last
report with ``failed=1``, ``failure_reason`` and a NaN score, so ASHA's cutoffs ignore it, Optuna records the trial
as FAIL (no made-up value) and the search goes on. Any other
exception propagates: Tune marks the trial ERROR (retried ``max_failures`` times from its last checkpoint), Optuna
records it as FAIL, and the results table shows the exception.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrmodels.io import plain
from search.datasets import TrialArrays
from search.experiment import METRICS_FILE, MODEL_FILE, SCORE, TRAINER_STATE, score_of, trial_dict

logger = logging.getLogger(__name__)


def _metric(value: Any) -> Any:
    """Built-in scalars for Tune's loggers and JSON (booleans as 0/1); non-finite floats are kept (the loop flags
    them)."""
    value = plain(value)
    return int(value) if isinstance(value, bool) else value


def _report(metrics: Mapping[str, Any], checkpoint_dir: str | None = None) -> None:
    from ray import tune

    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    tune.report(dict(metrics), checkpoint=checkpoint)


def _save_epoch_checkpoint(folder: str, trainer: Any, objective: str, metrics: Mapping[str, Any]) -> None:
    """The trainer state (for --resume) and the model with **this epoch's** weights, so the model in a checkpoint is
    the one that scored the checkpoint's metrics (Tune keeps the checkpoint with the best objective; the Trainer's own
    best weights, by the same objective, stay in the trainer state)."""
    from cxrmodels.train.checkpoint import save_checkpoint

    save_checkpoint(os.path.join(folder, TRAINER_STATE), trainer.state_dict())
    trainer.checkpoint(current=True, objective=objective, objective_value=float(metrics[objective])).save(
        os.path.join(folder, MODEL_FILE)
    )
    Path(folder, METRICS_FILE).write_text(json.dumps(dict(metrics), default=str, indent=1))


def _restore(trainer: Any) -> bool:
    """Load the trainer state from Tune's latest checkpoint of this trial, if any (a resumed or retried trial)."""
    from ray import tune

    from cxrmodels.train.checkpoint import load_checkpoint

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        if not os.path.exists(os.path.join(folder, TRAINER_STATE)):  # emptied by search.recovery: start afresh
            logger.warning("checkpoint %s holds no trainer state; starting the trial from epoch 1", checkpoint.path)
            return False
        state = load_checkpoint(os.path.join(folder, TRAINER_STATE))
    trainer.load_state_dict(state)
    logger.info("resumed from checkpoint after epoch %s", getattr(trainer, "epoch", "?"))
    return True


def _set_threads() -> None:
    """Use the CPUs Tune gave this trial, not every core of the node (trials share a node)."""
    import ray
    import torch

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:  # noqa: BLE001 - outside Ray (a direct call in a test)
        cpus = 1
    torch.set_num_threads(max(1, int(cpus)))


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


FAULT_HOOK_ENV = "CXR_FAULT_HOOK"


def _fault_hook() -> Any:
    """Test-only fault injection: ``CXR_FAULT_HOOK=module:function`` names a callable run as ``fn(trainer,
    trial_id)`` before every epoch, inside the same error handling as the epoch (so a NaN it plants, or an exception
    it raises, takes the real failure path). Monkeypatching cannot reach Ray workers; an environment variable set
    before Ray starts does. Unset (always, outside tests) it costs nothing."""
    spec = os.environ.get(FAULT_HOOK_ENV)
    if not spec:
        return None
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def train_cxr(
    config: dict[str, Any],
    *,
    base: Mapping[str, Any],
    datasets: Mapping[int, TrialArrays],
    objective: str,
) -> None:
    """One trial. ``config`` holds the sampled keys, ``base`` the constant ones, ``datasets`` the train/val rows of
    the image cache per image size (put in the object store once by ``tune.with_parameters``; never the test split),
    read here into memory or batch by batch (:meth:`search.datasets.TrialArrays.train_data`)."""
    import ray

    from cxrmodels.train.config import TrialConfig, metric_mode
    from cxrmodels.train.loop import NonFiniteLossError, Trainer
    from search.results import best_so_far

    entered = time.perf_counter()
    _set_threads()
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # memory maps: only read
    cfg = TrialConfig.from_dict(trial_dict(base, config))
    data = datasets[cfg.image_size].train_data()  # its split, read from the cache here (never the test split)
    trainer = Trainer(cfg, data)
    _restore(trainer)
    node_id = ray.get_runtime_context().get_node_id()
    startup_s = round(time.perf_counter() - entered, 3)  # reading its split, building the model: reported per epoch

    fault_hook = _fault_hook()
    while not trainer.done:
        try:
            if fault_hook is not None:
                fault_hook(trainer, ray.tune.get_context().get_trial_id())
            metrics = trainer.run_epoch()
        except Exception as exc:  # noqa: BLE001 - only the two "bad configuration" failures end cleanly
            if not (isinstance(exc, NonFiniteLossError) or _is_oom(exc)):
                raise
            _report_failure(trainer, exc, objective, node_id)
            return
        metrics = {key: _metric(value) for key, value in metrics.items()}
        metrics[SCORE] = score_of(metrics.get(objective))
        metrics.pop("done", None)  # Tune's reserved key; "finished" says the same
        metrics.update(
            failed=0, failure_reason="", finished=int(bool(trainer.done)), node_id=node_id, startup_s=startup_s
        )
        metrics.update(best_so_far(trainer.history, objective, metric_mode(objective), cfg.keep_weights))
        if trainer.rolled_back:
            # The best epoch's weights (by the objective) are back: they are not the weights that scored this
            # epoch, and a finished trial needs no resume state, so this last epoch is reported without checkpoint.
            _report(metrics)
            break
        with tempfile.TemporaryDirectory(prefix="cxr-ckpt-") as folder:
            _save_epoch_checkpoint(folder, trainer, objective, metrics)
            _report(metrics, folder)


def _report_failure(trainer: Any, exc: BaseException, objective: str, node_id: str) -> None:
    """End the trial with a flagged, finite result, and give the GPU memory back before the actor goes."""
    reason = f"{type(exc).__name__}: {exc}".strip()[:500]
    logger.warning("trial failed: %s", reason)
    epoch = int(getattr(trainer, "epoch", 0)) + 1
    del trainer
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
    _report(
        {
            "epoch": epoch,
            objective: math.nan,
            SCORE: math.nan,
            "failed": 1,
            "failure_reason": reason,
            "finished": 1,
            "node_id": node_id,
        }
    )
