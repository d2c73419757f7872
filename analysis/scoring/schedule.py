"""Where the runs execute: Ray tasks (``num_cpus``/``num_gpus`` each) when the machine has more than one CPU or a
GPU, else one after another, with one progress bar over the runs and one per run over its epochs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from analysis.reading.experiment import SplitArrays
from analysis.scoring.externals import ExternalSet
from analysis.scoring.runs import RunSpec, run_name, train_run
from cxrmodels.progress import active as progress_active
from cxrmodels.progress import bar

log = logging.getLogger(__name__)


def should_use_ray(no_ray: bool) -> bool:
    """Ray only pays off with something to run in parallel: more than one CPU or any GPU."""
    if no_ray:
        return False
    import torch

    return (os.cpu_count() or 1) > 1 or torch.cuda.is_available()


class RunBars:
    """One bar over the runs, and one per run over its epochs (drawn when the run reports its first epoch)."""

    def __init__(self, specs: Sequence[RunSpec]) -> None:
        self.specs = list(specs)
        self.overall = bar(total=len(specs), desc="retraining", unit="run")
        self.runs: dict[int, Any] = {}
        self.done: set[int] = set()

    def epoch(self, index: int, epoch: int, epochs: int) -> None:
        if index in self.done:  # a late message of a finished run
            return
        if index not in self.runs:
            self.runs[index] = bar(
                total=epochs,
                desc=f"  {run_name(self.specs[index])}",
                unit="epoch",
                position=len(self.runs) + 1,
                leave=False,
            )
        self.runs[index].update(epoch - self.runs[index].n)

    def finished(self, index: int, result: dict[str, Any]) -> None:
        self.done.add(index)
        if index in self.runs:
            self.runs.pop(index).close()
        self.overall.update()
        log.info(
            "retrained %s: %d epoch(s) in %.0f s", run_name(self.specs[index]), result["epochs_run"], result["time_s"]
        )

    def close(self) -> None:
        for run in self.runs.values():
            run.close()
        self.overall.close()


class QueueReporter:
    """``train_run``'s ``report`` inside a Ray task: epochs go to the driver through a Ray queue."""

    def __init__(self, queue: Any, index: int) -> None:
        self.queue, self.index = queue, index

    def __call__(self, epoch: int, epochs: int) -> None:
        self.queue.put_nowait((self.index, epoch, epochs))


def run_all(
    specs: Sequence[RunSpec],
    arrays_by_size: dict[int, SplitArrays],
    use_ray: bool,
    cpus_per_run: int = 1,
    gpus_per_run: float = 0.0,
    externals: Sequence[ExternalSet] = (),
) -> list[dict[str, Any]]:
    """All runs, on Ray tasks (``num_cpus``/``num_gpus`` each) or one after another, with progress bars."""
    ext = {size: {e.name: e.by_size[size].images for e in externals} for size in arrays_by_size}
    bars = RunBars(specs)
    try:
        if not use_ray:
            results = []
            for i, s in enumerate(specs):
                z = int(s.config["image_size"])
                results.append(train_run(s, arrays_by_size[z], None, ext[z], lambda e, n, i=i: bars.epoch(i, e, n)))
                bars.finished(i, results[-1])
            return results
        return _run_on_ray(specs, arrays_by_size, ext, cpus_per_run, gpus_per_run, bars)
    finally:
        bars.close()


def _run_on_ray(
    specs: Sequence[RunSpec],
    arrays_by_size: dict[int, SplitArrays],
    ext: dict[int, Any],
    cpus_per_run: int,
    gpus_per_run: float,
    bars: RunBars,
) -> list[dict[str, Any]]:
    import ray
    from ray.util.queue import Queue

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        refs = {size: ray.put(a) for size, a in arrays_by_size.items()}
        ext_refs = {size: ray.put(e) for size, e in ext.items()}
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(train_run)
        log.info("retraining %d run(s) on Ray (%s CPU, %s GPU each)", len(specs), cpus_per_run, gpus_per_run)
        queue = Queue(actor_options={"num_cpus": 0}) if progress_active() else None
        reporters = [QueueReporter(queue, i) if queue is not None else None for i in range(len(specs))]
        sizes = [int(s.config["image_size"]) for s in specs]
        futures = [
            task.remote(s, refs[z], cpus_per_run, ext_refs[z], r)
            for s, z, r in zip(specs, sizes, reporters, strict=True)
        ]
        index = {ref: i for i, ref in enumerate(futures)}
        results: list[dict[str, Any]] = [{} for _ in futures]
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            while queue is not None and not queue.empty():
                bars.epoch(*queue.get_nowait())
            for ref in done:  # each result fetched once, in the order of the specs
                results[index[ref]] = ray.get(ref)
                bars.finished(index[ref], results[index[ref]])
        return results
    finally:
        if started:
            ray.shutdown()
