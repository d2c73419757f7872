"""The whole analysis of one experiment in one go: leaderboard, winners, search plots, retraining with seeds (or
folds), threshold study chosen on validation and reported on test, 3-class report, Grad-CAM, and a report.

    python -m analysis.report EXPERIMENT --out DIR [--top-k 3] [--seeds 3] [--folds] [--epochs N] [--task T|both]
                                                   [--no-ray] [--device cpu] [--allow-collapsed] [--external PATH]

Writes ``DIR/report.md`` and a self-contained ``DIR/report.html`` (images embedded as base64) next to every CSV
and PNG they show. The retrained best model is ``DIR/retrain/best_model.pt`` (with its validation-chosen
threshold): ``python -m analysis.predict --model DIR/retrain/best_model.pt IMAGES...``. ``--task both`` retrains the
winners twice, as binary and as 3-class models, into ``DIR/retrain_binary/`` and ``DIR/retrain_multiclass/``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import importlib.util
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.cli import check_retrain_args, guarded, open_experiment
from analysis.experiment import Experiment
from analysis.leaderboard import build_leaderboard, select_winners, top_table, winner_rule
from analysis.model_card import settings_table, write_model_cards
from analysis.results import ModelResult, ReportResult, RetrainResult, RetrainSettings
from analysis.retrain import add_retrain_args, retrain_and_evaluate
from analysis.search_plots import write_search_plots
from cxrmodels.evaluate import DECISION_RULE
from cxrmodels.evaluate.calibration import ECE_BINS
from search.experiment import CONFIG_PREFIX, PARAM_COLUMNS
from search.tracking import INSTALL_HINT, add_mlflow_args, mlflow_requested

log = logging.getLogger(__name__)

#: SPEC.md's reported numbers, on other data and splits: context, not a like-for-like comparison.
ANCHORS: tuple[dict[str, str], ...] = (
    {
        "source": "Study A, VGG16 (Keras)",
        "data / split": "251 images, 3 classes, ~51 test images",
        "metric": "accuracy / F1 (weighted)",
        "value": "0.9804 / 0.9804",
    },
    {
        "source": "Study A, DenseNet121 (Keras)",
        "data / split": "251 images, 3 classes, ~51 test images",
        "metric": "accuracy / F1 (weighted)",
        "value": "0.8824 / 0.8864",
    },
    {
        "source": "Study B, fine-tuned ResNet152V2",
        "data / split": "Kermany, own split; threshold chosen on TEST",
        "metric": "binary best F1 @ threshold",
        "value": "0.8946 @ 0.90",
    },
    {
        "source": "Study B, from-scratch CNN, 3-class",
        "data / split": "Kermany, own split",
        "metric": "3-class validation accuracy",
        "value": "0.8114",
    },
    {
        "source": "Kermany et al. 2018 (InceptionV3)",
        "data / split": "Kaggle test split, 624 images",
        "metric": "accuracy / sensitivity / specificity / AUC",
        "value": "0.928 / 0.932 / 0.901 / 0.968",
    },
)


# ------------------------------------------------------------------------------------------------ the document


@dataclass
class Report:
    """Blocks of a report (headings, text, tables, images) rendered to Markdown and to self-contained HTML."""

    out: Path
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame, index: bool = False) -> None:
        self.blocks.append(("table", df.reset_index() if index else df))

    def image(self, path: Path, caption: str) -> None:
        if path is not None and Path(path).is_file():
            self.blocks.append(("img", (Path(path), caption)))

    def markdown(self) -> str:
        lines: list[str] = []
        for kind, val in self.blocks:
            if kind == "h":
                lines += [f"{'#' * val[0]} {val[1]}", ""]
            elif kind == "p":
                lines += [val, ""]
            elif kind == "table":
                lines += [markdown_table(val), ""]
            elif kind == "img":
                lines += [f"![{val[1]}]({val[0].relative_to(self.out).as_posix()})", ""]
        return "\n".join(lines)

    def html(self, title: str) -> str:
        """One self-contained page: a small stylesheet, a table of contents, tables that scroll inside their own
        box, and the PNGs embedded, so that the file can be mailed."""
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>"
        ]
        toc = [(i, v[0], v[1]) for i, (k, v) in enumerate(self.blocks) if k == "h" and v[0] in (2, 3)]
        for i, (kind, val) in enumerate(self.blocks):
            if kind == "h":
                parts.append(f"<h{val[0]} id='s{i}'>{html.escape(val[1])}</h{val[0]}>")
                if val[0] == 1 and toc and i < toc[0][0]:
                    parts.append(
                        "<nav><b>Contents</b><ul>"
                        + "".join(
                            f"<li class='l{level}'><a href='#s{j}'>{html.escape(text)}</a></li>"
                            for j, level, text in toc
                        )
                        + "</ul></nav>"
                    )
            elif kind == "p":
                parts.append(f"<p>{html.escape(val)}</p>")
            elif kind == "table":
                # a named column axis (crosstabs, pivots) would render as an extra, empty leading column
                cells = val.apply(lambda column: column.map(_html_cell)).rename_axis(columns=None)
                parts.append(f"<div class='table'>{cells.to_html(index=False, border=0)}</div>")
            elif kind == "img":
                data = base64.b64encode(val[0].read_bytes()).decode()
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(val[1])}'>"
                    f"<figcaption>{html.escape(val[1])}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)


#: The report page's stylesheet: a readable measure, tables that scroll in their own box, a compact contents list.
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:auto;padding:1em 1.5em;line-height:1.45;"
    "color:#222}h1{font-size:1.7em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}"
    "div.table{overflow-x:auto;max-width:100%;margin:.6em 0}table{border-collapse:collapse;font-size:12.5px}"
    "td,th{border:1px solid #d0d0d0;padding:3px 7px;white-space:nowrap;text-align:right}"
    "th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}img{max-width:100%;height:auto}"
    "figure{margin:1em 0}figcaption{color:#555;font-size:13px}nav{background:#f7f7f7;padding:.5em 1em;"
    "font-size:14px}nav ul{margin:.3em 0;padding-left:1.2em}nav li.l3{margin-left:1.2em;font-size:13px}"
)


def _html_cell(v: Any) -> str:
    """A table cell for the page: blank for a missing value (never <NA> or nan), floats to 4 significant digits."""
    if v is None or v is pd.NA or (isinstance(v, float | np.floating) and np.isnan(v)):
        return ""
    return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return "" if v is None or v is pd.NA else str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' ``to_markdown`` needs tabulate, which the project does not depend on)."""
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


# ------------------------------------------------------------------------------------------------ Grad-CAM


def write_gradcam(winner: ModelResult, arrays, path: Path, n_wrong: int = 2) -> Path | None:
    """Test-set Grad-CAM of a winner's saved model: per class its most confident correct image and worst misses,
    by the model's one decision (its validation threshold on its calibrated, test-time-augmented probabilities)."""
    from analysis.plots import plot_gradcam_grid
    from cxrmodels.evaluate import select_examples
    from cxrmodels.evaluate.calibration import apply_temperature
    from cxrmodels.evaluate.decision import DEFAULT_THRESHOLD
    from cxrmodels.explain import grad_cam_images, overlay
    from cxrmodels.train.checkpoint import load_model
    from cxrmodels.train.loop import predict_proba

    model, checkpoint = load_model(winner.files["model"])
    x, y = arrays.x["test"], arrays.y["test"]
    if not len(x):
        return None
    names = list(checkpoint.class_names)
    probs = predict_proba(model, x, tta=checkpoint.tta)
    if checkpoint.temperature is not None:  # the probabilities its threshold was chosen on
        probs = apply_temperature(probs, float(checkpoint.temperature), names)
    threshold = checkpoint.threshold if checkpoint.threshold is not None else DEFAULT_THRESHOLD
    examples = select_examples(y, probs, names, n_wrong=n_wrong, threshold=threshold)
    if examples.empty:
        return None
    idx = examples["index"].to_numpy()
    maps = grad_cam_images(model, x[idx], [names.index(p) for p in examples["pred"]])
    images = [overlay(x[i], m) for i, m in zip(idx, maps, strict=True)]
    return plot_gradcam_grid(
        images, examples, path, title=f"winner {winner.winner} ({winner.trial_id}): Grad-CAM on test images"
    )


# ------------------------------------------------------------------------------------------------ sections


def build_results_table(winners: Sequence[ModelResult]) -> pd.DataFrame:
    """One row per winner, mean ± std over its runs of the headline test metrics."""
    keys = (
        "threshold",
        "val_f1",
        "test_accuracy",
        "test_sensitivity",
        "test_specificity",
        "test_precision",
        "test_f1",
        "test_auc",
        "test_collapsed",
        "test_accuracy_3class",
        "test_macro_f1_3class",
    )
    rows = []
    for w in winners:
        s = w.summary
        rows.append(
            {
                "winner": w.winner,
                "trial": w.trial_id,
                "runs": int(s["n"].max()),
                **{k: s.loc[k, "mean_std"] for k in keys if k in s.index},
            }
        )
    return pd.DataFrame(rows)


def build_anchor_table(winners: Sequence[ModelResult], data_label: str) -> pd.DataFrame:
    rows = [dict(a) for a in ANCHORS]
    if winners:
        s = winners[0].summary["mean_std"]
        label = f"This report, winner 1 ({winners[0].trial_id})"
        split = f"{data_label}; threshold chosen on validation"
        rows.append(
            {
                "source": label,
                "data / split": split,
                "metric": "binary F1 @ threshold (test)",
                "value": f"{s['test_f1']} @ {s['threshold']}",
            }
        )
        rows.append(
            {
                "source": label,
                "data / split": split,
                "metric": "accuracy / sensitivity / specificity / AUC",
                "value": " / ".join(
                    s[k] for k in ("test_accuracy", "test_sensitivity", "test_specificity", "test_auc")
                ),
            }
        )
        if "test_accuracy_3class" in s:
            rows.append(
                {
                    "source": label,
                    "data / split": split,
                    "metric": "3-class accuracy / macro-F1 (test)",
                    "value": f"{s['test_accuracy_3class']} / {s['test_macro_f1_3class']}",
                }
            )
    return pd.DataFrame(rows)


#: Headline figures compared between the internal test split and each external set (keys of the run summaries).
EXTERNAL_METRICS: tuple[str, ...] = (
    "test_accuracy",
    "test_sensitivity",
    "test_specificity",
    "test_precision",
    "test_f1",
    "test_auc",
    "test_accuracy_3class",
    "test_macro_f1_3class",
    "test_recall_NORMAL",
    "test_recall_BACTERIAL",
    "test_recall_VIRAL",
)
#: An accuracy or AUROC lower by this much on an external set is called out in the report as "will not transfer".
NOTABLE_DROP = 0.05


def external_comparison(internal: pd.DataFrame, external: pd.DataFrame) -> pd.DataFrame:
    """Internal test beside external, mean ± std over the runs, and the drop (internal mean minus external mean)."""
    rows = [
        {
            "metric": key.removeprefix("test_"),
            "internal test": internal.loc[key, "mean_std"],
            "external": external.loc[key, "mean_std"],
            "drop": round(float(internal.loc[key, "mean"]) - float(external.loc[key, "mean"]), 3),
        }
        for key in EXTERNAL_METRICS
        if key in internal.index and key in external.index
    ]
    return pd.DataFrame(rows)


def write_external_section(rep: Report, winner: ModelResult) -> None:
    """Each external set of one winner: the comparison table and, in plain words, what a large drop means."""
    for name, ext in winner.external.items():
        table = external_comparison(winner.summary, ext.summary)
        rep.p(
            f"External validation on {name} ({ext.path}, {ext.images} images): the same runs, at the "
            "threshold each chose on validation. Nothing was fitted on this set (no weights, threshold, "
            "calibration or early stopping). drop = internal mean minus external mean."
        )
        if ext.skipped:
            rep.p(
                f"{ext.skipped} file(s) of {name} could not be used and were left out; each is listed with its "
                f"reason in {Path(str(ext.skipped_file)).name}."
            )
        rep.table(table)
        big = table[table["metric"].isin(("accuracy", "auc", "accuracy_3class")) & (table["drop"] >= NOTABLE_DROP)]
        if len(big):
            rep.p(
                f"The {', '.join(big['metric'])} drop by {', '.join(f'{d:.3f}' for d in big['drop'])} on {name}: "
                "these models will not transfer as they are to X-rays acquired like these. Treat the internal "
                "figures as an upper bound for such data."
            )


def split_sizes(exp: Experiment) -> pd.DataFrame:
    return pd.crosstab(exp.manifest["label"], exp.manifest["split"], margins=True, margins_name="total")


def write_search_sections(
    rep: Report, exp: Experiment, board: pd.DataFrame, search_files: dict[str, Path], settings: RetrainSettings
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


def build_report(exp: Experiment, out: Path, settings: RetrainSettings) -> ReportResult:
    """Run every step and write report.md / report.html (and model_card.md); returns what was computed."""
    t0 = time.perf_counter()
    rep = Report(out)
    winners = select_winners(exp.results, settings.top_k, exp.mode, settings.allow_collapsed)
    board = build_leaderboard(exp, winners)
    board.to_csv(out / "leaderboard.csv", index=False)
    result = ReportResult(
        winners=winners, leaderboard=board, search_files={}, timings={"leaderboard": time.perf_counter() - t0}
    )
    t = time.perf_counter()
    result.search_files = write_search_plots(exp, out / "search", list(winners["trial_id"]))
    result.timings["search_plots"] = time.perf_counter() - t
    data_label = write_search_sections(rep, exp, board, result.search_files, settings)
    if winners.empty:
        rep.p(
            "No eligible trial: every trial failed or collapsed. Nothing was retrained. "
            "Re-run with --allow-collapsed to analyse collapsed trials anyway (they will be flagged)."
        )
    for task, sub in retrain_folders(settings.task) if not winners.empty else []:
        result.retrains[sub] = retrain_section(rep, exp, out / sub, winners, settings, task, data_label, result.timings)
    result.timings["total_before_writing"] = time.perf_counter() - t0
    rep.h("Timings (seconds)")
    rep.table(pd.DataFrame({"step": list(result.timings), "seconds": [round(v, 1) for v in result.timings.values()]}))
    (out / "report.md").write_text(rep.markdown())
    if result.retrains:  # model_card.md beside the report, and the same cards at the end of report.html
        cards = write_model_cards(
            lambda: Report(out),
            exp,
            result.retrains,
            {
                "preprocessing": preprocessing_table(exp),
                "split_sizes": split_sizes(exp),
                "anchors": pd.DataFrame(ANCHORS),
            },
        )
        (out / "model_card.md").write_text(cards.markdown())
        rep.blocks.extend(cards.blocks)
    (out / "report.html").write_text(rep.html(f"Analysis of {exp.path.name}"))
    return result


def retrain_section(
    rep: Report,
    exp: Experiment,
    out: Path,
    winners: pd.DataFrame,
    settings: RetrainSettings,
    task: str | None,
    data_label: str,
    timings: dict[str, float],
) -> RetrainResult:
    """One task's retraining, its Grad-CAM figures and its sections of the report."""
    t = time.perf_counter()
    rt = retrain_and_evaluate(exp, out, winners, settings, task)
    suffix = "" if out.name == "retrain" else f" ({rt.task})"
    timings["retrain_evaluate" + suffix] = time.perf_counter() - t
    t = time.perf_counter()
    for w in rt.winners:
        w.files["gradcam"] = write_gradcam(w, rt.arrays[w.size], out / f"winner_{w.winner}" / "gradcam.png")
    timings["gradcam" + suffix] = time.perf_counter() - t
    write_retrain_sections(rep, rt, data_label)
    return rt


def retrain_folders(task: str | None) -> list[tuple[str | None, str]]:
    """(task, output sub-folder) of each retraining: ``retrain/`` for one task (None: the experiment's), and
    ``retrain_binary/`` + ``retrain_multiclass/`` for ``--task both``."""
    if task == "both":
        return [("binary", "retrain_binary"), ("multiclass", "retrain_multiclass")]
    return [(task, "retrain")]


def write_retrain_sections(rep: Report, rt: RetrainResult, data_label: str) -> None:
    how = (
        f"patient-grouped {len(rt.folds)}-fold cross-validation over train+val (manifest fold column), "
        f"seed {rt.seeds[0]}+fold"
        if rt.folds
        else f"seeds {rt.seeds} on the saved train split"
    )
    rep.h(f"Retrained winners: {'binary' if rt.task == 'binary' else '3-class'} models")
    rep.p(
        f"Each winner retrained from scratch ({how}), task {rt.task}, the validation split for early stopping "
        f"and the kept epoch (the best by the search's objective) and for choosing the threshold (F1-best of "
        f"0.10..0.90 by 0.05 on validation, ties to the threshold nearest 0.5); the test split scored once per run "
        f"at that threshold, with one decision per image ({DECISION_RULE}). Figures are mean ± std over runs. "
        f"{len(rt.runs)} runs in {rt.wall_s:.0f} s ({'Ray tasks' if rt.used_ray else 'sequential'}). "
        + (
            f"Every prediction averages {rt.tta} test-time views (small shifts and zooms)."
            if rt.tta > 1
            else "No test-time augmentation."
        )
    )
    rep.table(build_results_table(rt.models))
    rep.h("Beside the published anchors")
    rep.p(
        "Different data, splits and protocols: the anchors are context, not a like-for-like comparison. Study B "
        "chose its threshold on the test set; here it is chosen on validation."
    )
    rep.table(build_anchor_table(rt.winners, data_label))
    for w in rt.winners:
        write_winner_section(rep, w)
    if rt.ensemble:
        write_ensemble_section(rep, rt.ensemble, rt.seeds)


#: The threshold-sweep columns the report shows (threshold_sweep.csv has them all, with their std).
SWEEP_SHOWN: tuple[str, ...] = (
    "threshold", "val_f1_mean", "test_precision_mean", "test_recall_mean", "test_specificity_mean", "test_f1_mean",
    "test_f1_std", "runs_choosing",
)  # fmt: skip


def write_winner_section(rep: Report, w: ModelResult) -> None:
    """One winner: its saved model and configuration, its figures, sweep, external sets, calibration, operating
    points, intervals and plots."""
    rep.h(f"Winner {w.winner}: trial {w.trial_id}", 3)
    shown = {k: w.config[k] for k in PARAM_COLUMNS if k in w.config}
    rep.p(
        f"Saved model (the run best on validation): winner_{w.winner}/{w.files['model'].name}, "
        f"threshold {w.threshold:.2f}. Its configuration:"
    )
    rep.table(settings_table(shown))
    rep.table(w.summary.reset_index()[["metric", "mean_std", "min", "max", "n"]])
    sweep = pd.read_csv(w.files["threshold_sweep"])
    rep.p("Threshold sweep (mean over runs; threshold_sweep.csv has the std of every column):")
    rep.table(sweep[list(SWEEP_SHOWN)].round(3))
    if "per_class" in w.files:
        rep.p("3-class per-class metrics on test (mean ± std over runs):")
        rep.table(pd.read_csv(w.files["per_class"]))
    write_external_section(rep, w)
    write_calibration_section(rep, w)
    write_operating_section(rep, w)
    write_intervals_section(rep, w, "the saved model (the run best on validation)")
    rep.image(
        w.files["pr_curve"],
        "Test precision-recall, every threshold marked with its F1; ringed: the "
        "threshold chosen on validation (representative run)",
    )
    rep.image(w.files["roc_curve"], "Test ROC with AUC (representative run)")
    rep.image(w.files["confusion_png"], "Test confusion matrix, counts and row-normalised (representative run)")
    if w.files.get("gradcam"):
        rep.image(w.files["gradcam"], "Grad-CAM on test images: per class a correct one and the worst misses")
    from cxrmodels.train.outputs import plot_learning_curves

    curves = plot_learning_curves(
        w.history.assign(
            run=lambda d: "seed" + d["seed"].astype(str) + d["fold"].map(lambda f: "" if f < 0 else f"/fold{f}")
        ),
        w.files["model"].parent / "retrain_curves.png",
        title=f"winner {w.winner}: retraining runs",
    )
    rep.image(curves, "Learning curves of the retraining runs")


def write_ensemble_section(rep: Report, ens: ModelResult, seeds: Sequence[int]) -> None:
    threshold = ens.threshold
    rep.h(f"Ensemble: the {ens.members} retrained runs as one model", 3)
    rep.p(
        f"The mean of the class probabilities of every run above at winner 1's image size (trials "
        f"{ens.trial_id.replace('+', ', ')}; seeds {list(seeds)}), scored like a single model: the threshold "
        f"({threshold:.2f}) chosen on validation from the averaged predictions, test and external sets only scored. "
        f"Saved as {ens.files['model'].parent.name}/model.pt; python -m analysis.predict --model accepts it. "
        "One ensemble, so no ± here: the ± of the rows above is the spread over single runs."
    )
    rep.table(ens.summary.reset_index()[["metric", "mean"]].rename(columns={"mean": "value"}))
    if "per_class" in ens.files:
        rep.table(pd.read_csv(ens.files["per_class"]))
    rep.image(ens.files["pr_curve"], "Ensemble: test precision-recall; ringed: the threshold chosen on validation")
    rep.image(ens.files["confusion_png"], "Ensemble: test confusion matrix, counts and row-normalised")
    write_external_section(rep, ens)
    write_calibration_section(rep, ens)
    write_operating_section(rep, ens)
    write_intervals_section(rep, ens, "the ensemble")


def write_intervals_section(rep: Report, winner: ModelResult, what: str) -> None:
    """The headline figures of one saved model with 95% bootstrap intervals, test and external side by side."""
    table = winner.intervals
    if table is None or table.empty:
        return
    rep.p(
        f"95% bootstrap intervals of {what}: value [low, high] over 2,000 resamples of the patients (all X-rays of "
        "a patient drawn together), at the threshold chosen on validation. They say how much a figure could move on "
        "another test set drawn like this one, for this one model; the mean ± std above says how much it moves "
        "between trainings."
    )
    rep.table(table.reset_index())


def write_operating_section(rep: Report, winner: ModelResult) -> None:
    """The requested operating points: the validation-chosen threshold and what each set achieved at it."""
    op = winner.operating
    if not op:
        return
    rep.p(
        "Operating points you asked for (--min-sensitivity / --min-specificity): each run's threshold chosen on its "
        "validation predictions, over every distinct score, to meet the floor with the best other figure; the test "
        "and external rows show what was actually achieved there (mean and std over runs). Study B's F1-best "
        "threshold above stays the default decision; the saved model stores both (analysis.predict "
        "--operating-point NAME)."
    )
    for message in op.unmet:
        rep.p(f"Not met on validation: {message}")
    if len(op.table):
        cols = [
            "threshold_mean",
            "sensitivity_mean",
            "sensitivity_std",
            "specificity_mean",
            "specificity_std",
            "accuracy_mean",
            "precision_mean",
        ]
        rep.table(op.table[cols].reset_index().round(3))


def write_calibration_section(rep: Report, winner: ModelResult) -> None:
    """ECE before and after temperature scaling on every held-out set, and the reliability diagram."""
    table = winner.calibration
    if table is None:
        rep.p("Probabilities are the models' own (--no-calibration): no temperature scaling.")
        return
    t = table["temperature_mean"].iloc[0]
    rep.p(
        f"Calibration: temperature scaling, one temperature per run fitted on that run's validation predictions "
        f"(mean T = {t:.2f}; T > 1 softens over-confident probabilities). T divides the NORMAL-vs-pneumonia log-odds "
        "and, for a 3-class model, the subtype log-odds separately, so no P(pneumonia) ranking (binary AUROC) and no "
        "choice of subtype can change; the threshold is chosen on the calibrated probabilities. Every "
        "figure above, and the saved model's threshold, use the calibrated probabilities; the saved model stores "
        f"its T and analysis.predict applies it. ECE = expected calibration error, {ECE_BINS} equal-width bins of the "
        "top class's probability (lower is better); the test and external rows were never used to fit T."
    )
    shown = table.reset_index()[["set", "ece_before_mean", "ece_after_mean", "ece_before_std", "ece_after_std"]]
    rep.table(shown.round(4))
    rep.image(
        winner.files["reliability"], "Reliability on test before and after temperature scaling (representative run)"
    )


def preprocessing_table(exp) -> pd.DataFrame:
    """Every preprocessing parameter in force, one column per searched image size."""
    sizes = sorted({int(v) for v in exp.results.get(f"{CONFIG_PREFIX}image_size", []) if v == v})
    configs = {
        f"{size} px": {**(c := exp.preprocess_config(size)).to_dict(), "tile_grid": c.effective_tile_grid}
        for size in sizes
    }
    table = pd.DataFrame(configs).drop(index="size", errors="ignore")
    return table.rename_axis("parameter").reset_index().astype(str)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="experiment folder written by python -m search.run")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the report and its files")
    add_retrain_args(parser, allow_both=True)
    add_mlflow_args(
        parser,
        "the report, model cards and retrained models",
        "beside the search's trials, in its "
        "store (its --mlflow-uri, else mlflow.db in the experiment folder) unless --mlflow-uri",
    )
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cxrmodels.evaluate.binary").setLevel(logging.WARNING)
    tracked = mlflow_requested(args)
    if tracked and importlib.util.find_spec("mlflow") is None:
        print(f"error: --mlflow needs the mlflow package: {INSTALL_HINT}", file=sys.stderr)
        return 2
    exp = open_experiment(args.experiment)
    check_retrain_args(args, exp)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = build_report(exp, args.out, RetrainSettings.from_args(args))
    if tracked:
        from analysis.tracking import log_report

        print(f"logged to MLflow: run {log_report(exp, args.out, result, args.mlflow_uri)}")
    print(
        f"report written to {args.out / 'report.md'} and {args.out / 'report.html'} "
        f"in {time.perf_counter() - start:.1f} s; winners {list(result.winners['trial_id'])}"
    )
    for sub, rt in result.retrains.items():
        print(f"retrained best {rt.task} model: {args.out / sub / 'best_model.pt'}")
        if rt.ensemble:
            print(f"ensemble of {rt.ensemble.members} {rt.task} runs: {rt.ensemble.model_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
