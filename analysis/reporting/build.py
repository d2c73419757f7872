"""The whole report of one experiment: leaderboard, search plots, retraining per task, Grad-CAM, the sections in
order, and the files ``report.md``, ``report.html`` and ``model_card.md``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.reading.experiment import Experiment
from analysis.reading.leaderboard import build_leaderboard, select_winners
from analysis.reading.search_plots import write_search_plots
from analysis.reporting.anchors import ANCHORS, build_anchor_table
from analysis.reporting.document import Document
from analysis.reporting.gradcam import write_gradcam
from analysis.reporting.model_card import write_model_cards
from analysis.reporting.model_sections import build_results_table, write_ensemble_section, write_winner_section
from analysis.reporting.render import to_html, to_markdown
from analysis.reporting.search_sections import preprocessing_table, split_sizes, write_search_sections
from analysis.reporting.site_section import site_versions_of, write_site_section
from analysis.scoring.pipeline import retrain_and_evaluate
from analysis.scoring.results import RetrainResult, RetrainSettings
from cxrmodels.evaluate import DECISION_RULE


@dataclass
class ReportResult:
    """Everything ``analysis.report`` computed (for tests, timings and MLflow)."""

    winners: pd.DataFrame
    leaderboard: pd.DataFrame
    search_files: dict[str, Path]
    timings: dict[str, float]
    retrains: dict[str, RetrainResult] = field(default_factory=dict)  # by output sub-folder

    @property
    def retrain(self) -> RetrainResult | None:
        """The first (for one task, the only) retraining."""
        return next(iter(self.retrains.values()), None)


def build_report(exp: Experiment, out: Path, settings: RetrainSettings) -> ReportResult:
    """Run every step and write report.md, report.html and model_card.md; returns what was computed. The two
    report files render one document (the model cards at its end), so they say the same thing."""
    t0 = time.perf_counter()
    doc = Document()
    winners = select_winners(exp.results, settings.top_k, exp.mode, settings.allow_collapsed)
    board = build_leaderboard(exp, winners)
    board.to_csv(out / "leaderboard.csv", index=False)
    result = ReportResult(
        winners=winners, leaderboard=board, search_files={}, timings={"leaderboard": time.perf_counter() - t0}
    )
    t = time.perf_counter()
    result.search_files = write_search_plots(exp, out / "search", list(winners["trial_id"]))
    result.timings["search_plots"] = time.perf_counter() - t
    data_label = write_search_sections(doc, exp, board, result.search_files, settings)
    if winners.empty:
        doc.p(
            "No eligible trial: every trial failed or collapsed. Nothing was retrained. "
            "Re-run with --allow-collapsed to analyse collapsed trials anyway (they will be flagged)."
        )
    for task, sub in retrain_folders(settings.task) if not winners.empty else []:
        result.retrains[sub] = retrain_section(doc, exp, out / sub, winners, settings, task, data_label, result.timings)
    result.timings["total_before_writing"] = time.perf_counter() - t0
    doc.h("Timings (seconds)")
    doc.table(pd.DataFrame({"step": list(result.timings), "seconds": [round(v, 1) for v in result.timings.values()]}))
    if result.retrains:  # model_card.md beside the report, and the same cards at the report's end
        context = {
            "preprocessing": preprocessing_table(exp),
            "split_sizes": split_sizes(exp),
            "anchors": pd.DataFrame(ANCHORS),
        }
        cards = write_model_cards(exp, result.retrains, context)
        (out / "model_card.md").write_text(to_markdown(cards, out))
        doc.extend(cards)
    (out / "report.md").write_text(to_markdown(doc, out))
    (out / "report.html").write_text(to_html(doc, f"Analysis of {exp.path.name}"))
    return result


def retrain_section(
    doc: Document,
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
    write_retrain_sections(doc, rt, data_label)
    if settings.site:
        t = time.perf_counter()
        rt.site, rt.site_files = site_versions_of(out, settings)
        write_site_section(doc, rt.task, rt.site, rt.site_files, settings.site)
        timings["site" + suffix] = time.perf_counter() - t
    return rt


def retrain_folders(task: str | None) -> list[tuple[str | None, str]]:
    """(task, output sub-folder) of each retraining: ``retrain/`` for one task (None: the experiment's), and
    ``retrain_binary/`` + ``retrain_multiclass/`` for ``--task both``."""
    if task == "both":
        return [("binary", "retrain_binary"), ("multiclass", "retrain_multiclass")]
    return [(task, "retrain")]


def write_retrain_sections(rep: Document, rt: RetrainResult, data_label: str) -> None:
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
