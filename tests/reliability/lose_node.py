"""A Tune callback that removes the worker node a trial reports from after its first epoch (test_reliability_node).

Top-level in an importable module, so Tune pickles it by reference; the cluster lives in module state, not in the
callback (a Cluster holds locks and cannot be pickled).
"""

from __future__ import annotations

from ray.tune import Callback

STATE: dict = {}  # cluster, workers (node id -> Node), removed (trial id, node id)


class RemoveNodeAfterFirstEpoch(Callback):
    """Picks the first trial that reports epoch 1 from a worker node; removes that node at the start of Tune's next
    loop step after Tune has registered that epoch's checkpoint, while the trial runs epoch 2."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        workers = STATE.get("workers", {})
        if STATE.get("target") is None and result.get("epoch") == 1 and result.get("node_id") in workers:
            STATE["target"] = (trial.trial_id, result["node_id"])

    def on_step_begin(self, iteration, trials, **info):
        if STATE.get("target") is None or STATE.get("removed") is not None:
            return
        trial = next(t for t in trials if t.trial_id == STATE["target"][0])
        if trial.checkpoint is not None:  # Tune has registered the epoch-1 checkpoint (saved asynchronously)
            STATE["removed"] = STATE["target"]
            STATE["cluster"].remove_node(STATE["workers"][STATE["removed"][1]])
