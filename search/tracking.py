"""MLflow tracking of a search and of its report (off by default; ``--mlflow``, the ``mlflow`` extra).

The embedded default needs no server: an SQLite file ``mlflow.db`` in the experiment folder, with the artifacts in
``mlartifacts/`` beside it. ``--mlflow-uri`` names a team's tracking server (``http://...``, ``databricks``) or
another database instead. Both the search and ``analysis.report --mlflow`` log to the MLflow experiment named after
the search, so one ``mlflow ui --backend-store-uri sqlite:///<experiment>/mlflow.db`` shows every trial and the
retrained models side by side. The trials are logged by Ray Tune's own ``MLflowLoggerCallback``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from search.experiment import MLFLOW_ARTIFACTS, MLFLOW_DB, SearchConfig, is_uri

INSTALL_HINT = "pip install 'cxr-tune[mlflow]'"


def add_mlflow_args(parser: Any, logs: str, default_store: str) -> None:
    """``--mlflow`` and ``--mlflow-uri`` (which implies it), for the search and the report alike. ``--mlflow``
    defaults to None, so that an unset flag leaves the preset's ``mlflow`` setting alone."""
    parser.add_argument(
        "--mlflow",
        action="store_true",
        default=None,
        help=f"log {logs} to MLflow: {default_store} (needs cxr-tune[mlflow])",
    )
    parser.add_argument(
        "--mlflow-uri", metavar="URI", default=None, help="MLflow tracking server or database (implies --mlflow)"
    )


def mlflow_requested(args: Any) -> bool:
    return bool(args.mlflow) or args.mlflow_uri is not None


def tracking_problems(cfg: SearchConfig) -> list[str]:
    """What keeps the MLflow settings from working (for ``search.config.validate``)."""
    if not cfg.mlflow:
        return []
    if importlib.util.find_spec("mlflow") is None:
        return [f"mlflow tracking needs the mlflow package: {INSTALL_HINT}"]
    uri = cfg.mlflow_uri
    if uri is not None and (not isinstance(uri, str) or not uri.strip()):
        return [f"mlflow_uri {uri!r} must be a tracking URI (sqlite:///..., http://host:5000, databricks)"]
    if uri is None and is_uri(str(cfg.storage_path or "")):
        return [
            "mlflow tracking with the experiment on object storage needs a tracking server: --mlflow-uri "
            "http://host:5000 (the embedded default is an SQLite file in a local experiment folder)"
        ]
    return []


def tracking_uri(cfg: SearchConfig, experiment_dir: str | Path) -> str:
    """The settings' ``mlflow_uri``, else the SQLite file in the experiment folder."""
    if cfg.mlflow_uri:
        return str(cfg.mlflow_uri)
    return f"sqlite:///{Path(experiment_dir).expanduser().resolve() / MLFLOW_DB}"


def ensure_experiment(uri: str, name: str, experiment_dir: str | Path) -> str:
    """The MLflow experiment ``name`` at ``uri`` (created with its artifacts in the experiment folder when the
    store is the embedded one); returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///") and uri.endswith(MLFLOW_DB):
        artifacts = (Path(experiment_dir).expanduser().resolve() / MLFLOW_ARTIFACTS).as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def search_callback(cfg: SearchConfig, storage: str, name: str) -> Any:
    """Tune's MLflow callback: one MLflow run per trial, its parameters, and every epoch's metrics."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    experiment_dir = Path(storage) / name
    uri = tracking_uri(cfg, experiment_dir)
    ensure_experiment(uri, name, experiment_dir)
    return MLflowLoggerCallback(
        tracking_uri=uri,
        experiment_name=name,
        tags={"cxr_tune.kind": "trial", "cxr_tune.experiment": str(experiment_dir)},
    )
