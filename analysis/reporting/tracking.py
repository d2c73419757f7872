"""``analysis.report --mlflow``: the report, its model cards and its retrained models as one MLflow run.

The run goes to the MLflow experiment named after the search, in the search's tracking store (``mlflow_uri`` of
its settings, else ``mlflow.db`` in the experiment folder; ``--mlflow-uri`` overrides), so the trials and the
retrained models sit side by side in ``mlflow ui``. Logged: the winners and retraining settings as parameters,
the mean of every numeric figure of the retrained runs (test, external) as metrics, the whole report folder as
artifacts, and each task's best model (and ensemble) with MLflow's PyTorch flavour in its ``pt2`` format
(``torch.export``: loading runs no pickled code). ``mlflow.pytorch.load_model`` gives back a module already in
evaluation mode that maps float images (batch, 1, S, S) in [0, 1], preprocessed as in the report, to logits.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.reporting.build import ReportResult
from search.tracking import ensure_experiment, tracking_uri

log = logging.getLogger(__name__)

# the model's Python dependencies, stated rather than inferred (inference imports and runs the model code)
PIP_REQUIREMENTS = ("torch", "timm", "numpy", "cxr-tune")


def run_metrics(runs: pd.DataFrame, prefix: str) -> dict[str, float]:
    """The mean over runs of every numeric, finite column of runs.csv, keyed ``<prefix>/<column>``."""
    metrics = {}
    for column in runs.select_dtypes("number").columns:
        if column in ("winner", "seed", "fold"):
            continue
        value = float(runs[column].mean())
        if math.isfinite(value):
            metrics[f"{prefix}/{column.replace(':', '/')}"] = value  # external sets: "<set>:<metric>"
    return metrics


def log_report(exp: Any, out: Path, result: ReportResult, uri: str | None = None) -> str:
    """Log the finished report in ``out`` to MLflow; returns the MLflow run id."""
    import mlflow
    import mlflow.pytorch

    from cxrmodels.train.checkpoint import load_model

    uri = uri or tracking_uri(exp.config, exp.path)
    experiment_id = ensure_experiment(uri, exp.path.name, exp.path)
    mlflow.set_tracking_uri(uri)
    tags = {"cxr_tune.kind": "report", "cxr_tune.experiment": str(exp.path)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"report {out.name}", tags=tags) as run:
        mlflow.log_params(
            {
                "winners": ",".join(map(str, result.winners["trial_id"])),
                "objective": exp.objective,
                "report_folder": str(out.resolve()),
            }
        )
        for sub, rt in result.retrains.items():
            task = rt.task
            mlflow.log_params({f"{task}/seeds": len(rt.seeds), f"{task}/tta": rt.tta})
            mlflow.log_metrics(run_metrics(rt.runs, task))
            models = {f"{task}_model": out / sub / "best_model.pt"}
            if rt.ensemble:
                models[f"{task}_ensemble"] = rt.ensemble.model_file
            for name, path in models.items():
                model, checkpoint = load_model(path)
                size = checkpoint.preprocess.size
                example = np.zeros((2, 1, size, size), dtype=np.float32)  # floats in [0, 1]; the batch is dynamic
                # "pt2" (torch.export): loading it back runs no pickled code, as with the checkpoints themselves
                mlflow.pytorch.log_model(
                    model,
                    name=name,
                    input_example=example,
                    serialization_format="pt2",
                    pip_requirements=list(PIP_REQUIREMENTS),
                )
        mlflow.log_artifacts(str(out), artifact_path="report")
    log.info("report logged to MLflow: experiment %s, run %s (%s)", exp.path.name, run.info.run_id, uri)
    return run.info.run_id
