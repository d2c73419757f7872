"""The report's first sections: the experiment's settings, preprocessing, split sizes, leaderboard and search plots."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from analysis.reading.experiment import Experiment
from analysis.reading.leaderboard import top_table, winner_rule
from analysis.reporting.document import Document
from analysis.reporting.model_card import settings_table
from analysis.scoring.results import RetrainSettings
from search.experiment import CONFIG_PREFIX


def split_sizes(exp: Experiment) -> pd.DataFrame:
    return pd.crosstab(exp.manifest["label"], exp.manifest["split"], margins=True, margins_name="total")


def write_search_sections(
    rep: Document, exp: Experiment, board: pd.DataFrame, search_files: dict[str, Path], settings: RetrainSettings
) -> str:
    """The header, split sizes, leaderboard and search plots; returns the data label the anchor table uses."""
    cfg = exp.config
    data_label = f"data {cfg.data} (n={len(exp.manifest)}, split seed {exp.split_config().seed})"
    rep.h(f"Analysis of experiment {exp.path.name}", 1)
    rep.table(
        settings_table(
            {
                "experiment folder": exp.path,
                "task": exp.task,
                "objective": f"{exp.objective} ({exp.mode})",
                "searcher": cfg.searcher,
                "scheduler": cfg.scheduler,
                "trials": len(exp.results),
                "search seed": cfg.seed,
                "data source": cfg.data,
            }
        )
    )
    rep.p("Preprocessing, per searched image size, and the split (read from split_manifest.csv, never re-derived):")
    rep.table(preprocessing_table(exp))
    rep.table(settings_table(dataclasses.asdict(exp.split_config())))
    rep.h("Split sizes")
    rep.table(split_sizes(exp), index=True)
    rep.h("Leaderboard")
    counts = ", ".join(f"{status} {n}" for status, n in board["status"].value_counts().items())
    rep.p(
        f"Trials by status: {counts}; collapsed trials: "
        f"{int(board['collapsed'].astype(str).str.lower().isin(('true', '1')).sum())}. Full table: leaderboard.csv."
    )
    rep.table(top_table(board, max(10, settings.top_k), exp.objective, exp.mode))
    rep.p(winner_rule(settings.top_k, exp.objective, exp.mode, settings.allow_collapsed))
    rep.h("The search")
    captions = {
        "learning_curves": "Train/val loss and accuracy of every trial; winners in colour",
        "optimizer_lr_heatmap": "Best validation score per optimizer x learning-rate decade",
        "parallel_coordinates": "Parallel coordinates of the searched hyperparameters and the objective",
        "param_importance": "Hyperparameter importance: Optuna fANOVA on a study rebuilt from results.csv",
        "asha_rungs": "Trials reaching each ASHA rung, and epochs reached by status",
    }
    for name, caption in captions.items():
        rep.image(search_files[name], caption)
    return data_label


def preprocessing_table(exp) -> pd.DataFrame:
    """Every preprocessing parameter in force, one column per searched image size."""
    sizes = sorted({int(v) for v in exp.results.get(f"{CONFIG_PREFIX}image_size", []) if v == v})
    configs = {
        f"{size} px": {**(c := exp.preprocess_config(size)).to_dict(), "tile_grid": c.effective_tile_grid}
        for size in sizes
    }
    table = pd.DataFrame(configs).drop(index="size", errors="ignore")
    return table.rename_axis("parameter").reset_index().astype(str)
