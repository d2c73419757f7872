"""Where an Optuna search keeps its study, so that it outlives the driver and can be browsed.

By default the study is Optuna's journal file ``optuna_study.log`` in the experiment folder: no server, readable by
``optuna.load_study`` and ``optuna-dashboard``. ``optuna_storage`` in the search settings (``--optuna-storage``)
names another home: an RDB URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``) that a team shares, or
another journal file path. Each search gets a unique study name (``<experiment name>-<8 hex digits>``), saved in
``search_config.yaml`` so that ``--resume`` continues the same study and :func:`load_study` finds it.

An experiment folder on object storage (``s3://``, ``gs://``) cannot hold a journal file; there the study lives in
the searcher's memory (and Tune's searcher checkpoint) unless ``optuna_storage`` names a database or a local file.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.experiment import CONFIG_FILE, STUDY_FILE, SearchConfig, is_uri

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


def is_rdb_url(storage: str) -> bool:
    """An SQLAlchemy URL such as ``sqlite:///study.db`` or ``postgresql+psycopg2://user@host/db``."""
    scheme = storage.split("://", 1)[0].split("+", 1)[0] if is_uri(storage) else ""
    return scheme in RDB_SCHEMES


def storage_problems(storage: Any) -> list[str]:
    """What is wrong with an ``optuna_storage`` setting (for ``search.config.validate``)."""
    if storage is None:
        return []
    if not isinstance(storage, str) or not storage.strip():
        return [
            f"optuna_storage {storage!r} must be an RDB URL (sqlite:///..., postgresql://..., mysql://...) or a "
            "journal file path"
        ]
    if is_uri(storage) and not is_rdb_url(storage):
        schemes = ", ".join(RDB_SCHEMES)
        return [
            f"optuna_storage {storage!r}: not a scheme Optuna's RDB storage takes ({schemes}); a journal file "
            "must be a local or mounted path"
        ]
    return []


def new_study_name(experiment_name: str) -> str:
    """Unique even in a database that many teams' searches share."""
    return f"{experiment_name}-{uuid.uuid4().hex[:8]}"


def storage_location(cfg: SearchConfig) -> str | None:
    """The study's storage as a URL or a journal path; None when it can only live in memory (object storage)."""
    if cfg.optuna_storage:
        storage = str(cfg.optuna_storage)
        return storage if is_rdb_url(storage) else str(Path(storage).expanduser().resolve())
    root = str(cfg.storage_path or "")
    if is_uri(root) or not cfg.name:
        return None
    return str(Path(root) / str(cfg.name) / STUDY_FILE)


def open_storage(location: str) -> Any:
    """Optuna's storage object for a location from :func:`storage_location`."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if is_rdb_url(location):
        return optuna.storages.RDBStorage(location)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(location))


def searcher_storage(cfg: SearchConfig) -> tuple[Any, str | None]:
    """(storage object or None, study name) for ``OptunaSearch``; logs where the study goes."""
    location = storage_location(cfg)
    if location is None or not cfg.study_name:
        logger.info(
            "the Optuna study lives in memory only (experiment on %s); give --optuna-storage to keep it",
            cfg.storage_path,
        )
        return None, None
    logger.info("Optuna study %s in %s", cfg.study_name, location)
    return open_storage(location), str(cfg.study_name)


def load_study(experiment: str | Path) -> optuna.Study:
    """The Optuna study of a finished or running search, from its experiment folder (trials, parameters, values)."""
    import optuna

    folder = Path(experiment).expanduser()
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE} there (is it an experiment folder?)")
    cfg = SearchConfig.load(folder)
    if cfg.searcher == "grid" or not cfg.study_name:
        raise ValueError(
            f"{folder}: this search kept no Optuna study (searcher {cfg.searcher!r}, "
            "or written before studies were stored)"
        )
    cfg = cfg.replace(storage_path=str(folder.parent), name=folder.name)  # the folder may have moved
    location = storage_location(cfg)
    if location is None:
        raise ValueError(f"{folder}: the study lived in memory only (the experiment is on object storage)")
    return optuna.load_study(study_name=str(cfg.study_name), storage=open_storage(location))
