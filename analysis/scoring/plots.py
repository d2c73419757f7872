"""The report's figures: DataFrames / arrays in, one PNG out, its path returned.

Generic on purpose: the report driver (and a notebook) pass whatever run, split or model they want to show. Every
function uses matplotlib's Agg backend (no display needed on a cluster node) and closes its figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from cxrmodels.evaluate import roc_auc  # noqa: E402

PathLike = str | Path


def _save(fig: plt.Figure, path: PathLike) -> Path:
    """Write the PNG (creating its folder) and free the figure: long report runs draw hundreds of them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _point_labels(sweep: pd.DataFrame) -> list[tuple[str, float, float]]:
    """One label per distinct (recall, precision) point: thresholds that classify alike share a point, and
    seventeen labels printed on top of each other are unreadable. "0.10-0.25: F1 0.807"."""
    groups: dict[tuple[float, float], list] = {}
    for row in sweep.itertuples(index=False):
        groups.setdefault((round(row.recall, 9), round(row.precision, 9)), []).append(row)
    labels = []
    for (recall, precision), rows in groups.items():
        lo, hi = rows[0].threshold, rows[-1].threshold
        span = f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}"
        labels.append((f"{span}: F1 {rows[0].f1:.3f}", recall, precision))
    return labels


def _place_labels(
    ax: plt.Axes, labels: list[tuple[str, float, float]], char_w: float = 0.0125, line_h: float = 0.036
) -> None:
    """Each label beside its point where it overlaps no label already placed (right, left, then below or above);
    a point with no free place keeps its colour only (threshold_sweep.csv has every threshold)."""
    boxes: list[tuple[float, float, float, float]] = []
    for text, x, y in labels:
        w = len(text) * char_w
        for x0, y0 in (
            (x + 0.012, y + 0.008),
            (x - 0.012 - w, y + 0.008),
            (x - w / 2, y - 0.012 - line_h),
            (x - w / 2, y + 0.02),
            (x + 0.012, y - line_h),
            (x - 0.012 - w, y - line_h),
        ):
            box = (x0, y0, x0 + w, y0 + line_h)
            inside = box[0] >= -0.01 and box[2] <= 1.02 and box[1] >= -0.01 and box[3] <= 1.05
            if inside and not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in boxes):
                boxes.append(box)
                ax.text(x0, y0, text, fontsize=7, va="bottom")
                break


def _ring_chosen(ax: plt.Axes, sweep: pd.DataFrame, threshold: float) -> None:
    """Ring the sweep point of the threshold chosen on validation, its F1 in the legend."""
    hit = sweep.loc[np.isclose(sweep["threshold"], threshold)]
    if hit.empty:
        return
    r = hit.iloc[0]
    ax.scatter(
        [r["recall"]],
        [r["precision"]],
        s=220,
        facecolors="none",
        edgecolors="red",
        lw=2,
        zorder=5,
        label=f"chosen {threshold:.2f} (F1 {r['f1']:.3f})",
    )


def plot_pr_curve(
    y_true: Sequence[int] | np.ndarray,
    p_pneumonia: Sequence[float] | np.ndarray,
    sweep: pd.DataFrame,
    path: PathLike,
    chosen_threshold: float | None = None,
    title: str = "Precision-recall (PNEUMONIA positive)",
) -> Path:
    """The full PR curve, each sweep threshold as a point annotated with its threshold and F1, the chosen one ringed.

    ``sweep`` is a :func:`cxrmodels.evaluate.threshold_sweep` table on the same data as ``y_true``/``p_pneumonia``
    (typically the test set, with ``chosen_threshold`` chosen on validation). Thresholds at which nothing is
    predicted positive have no defined precision and are drawn hollow.
    """
    y = np.asarray(y_true)
    fig, ax = plt.subplots(figsize=(7, 6))
    if len(np.unique(y)) == 2:
        precision, recall, _ = precision_recall_curve(y, np.asarray(p_pneumonia, dtype=float))
        ax.plot(recall, precision, color="0.6", lw=1.2, label="PR curve")
        ax.axhline(y.mean(), color="0.8", ls=":", lw=1, label=f"prevalence {y.mean():.2f}")
    defined = ~sweep["no_positive_predictions"].astype(bool) if "no_positive_predictions" in sweep else None
    sc = ax.scatter(
        sweep["recall"],
        sweep["precision"],
        c=sweep["f1"],
        cmap="viridis",
        vmin=0,
        vmax=1,
        s=30,
        zorder=3,
        label="thresholds 0.10-0.90",
    )
    if defined is not None and (~defined).any():
        ax.scatter(
            sweep.loc[~defined, "recall"],
            sweep.loc[~defined, "precision"],
            facecolors="white",
            edgecolors="k",
            s=30,
            zorder=4,
            label="no positive prediction",
        )
    _place_labels(ax, _point_labels(sweep))
    if chosen_threshold is not None:
        _ring_chosen(ax, sweep, chosen_threshold)
    fig.colorbar(sc, ax=ax, label="F1")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(-0.02, 1.02), ylim=(-0.02, 1.05), title=title)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_roc_curve(
    y_true: Sequence[int] | np.ndarray,
    p_pneumonia: Sequence[float] | np.ndarray,
    path: PathLike,
    chosen_threshold: float | None = None,
    title: str = "ROC (PNEUMONIA positive)",
) -> Path:
    """ROC curve with its AUC in the legend, the chance diagonal, and the chosen threshold's operating point."""
    y = np.asarray(y_true)
    p = np.asarray(p_pneumonia, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 6))
    auc = roc_auc(y, p)
    if not np.isnan(auc):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.8, label=f"AUC = {auc:.3f}")
    else:
        ax.text(0.5, 0.5, "one class only: ROC undefined", ha="center")
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=1, label="chance")
    if chosen_threshold is not None and not np.isnan(auc):
        pred = p >= chosen_threshold
        tpr_t = (pred & (y == 1)).sum() / max((y == 1).sum(), 1)
        fpr_t = (pred & (y == 0)).sum() / max((y == 0).sum(), 1)
        ax.scatter([fpr_t], [tpr_t], color="red", zorder=3, label=f"threshold {chosen_threshold:.2f}")
    ax.set(
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        title=title,
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: PathLike, *, bins: int = 15, title: str = "reliability"
) -> Path:
    """Reliability diagram: per confidence bin, the accuracy of the top class against its mean probability, one
    line per ``label -> (y, probs)``, the diagonal for perfect calibration, and the images per bin below."""
    from cxrmodels.evaluate.calibration import reliability_table

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=1, label="perfectly calibrated")
    width = 1.0 / bins / max(len(curves), 1)
    for i, (label, (y, probs)) in enumerate(curves.items()):
        table = reliability_table(y, probs, bins)
        used = table["count"] > 0
        ax.plot(table.loc[used, "confidence"], table.loc[used, "accuracy"], marker="o", lw=1.5, label=label)
        hist.bar(table["low"] + (i + 0.5) * width, table["count"], width=width, label=label)
    ax.set(ylabel="accuracy of the top class", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="confidence (probability of the top class)", ylabel="images")
    fig.tight_layout()
    return _save(fig, path)


def _heatmap(ax: plt.Axes, table: pd.DataFrame, fmt: str, vmax: float | None, title: str) -> None:
    values = table.to_numpy(dtype=float)
    im = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Blues", vmin=0, vmax=vmax)
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    for (i, j), v in np.ndenumerate(values):
        text = "–" if np.isnan(v) else (f"{int(v):d}" if fmt == "d" else format(v, fmt))
        ax.text(j, i, text, ha="center", va="center", color="white" if v > 0.6 * (vmax or top) else "black")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    ax.set(xlabel="predicted", ylabel="true", title=title)
    plt.colorbar(im, ax=ax, fraction=0.046)


def plot_confusion_matrix(
    counts: pd.DataFrame, normalised: pd.DataFrame, path: PathLike, title: str = "Confusion matrix"
) -> Path:
    """Counts and row-normalised rates side by side (rows true, columns predicted, class names on both axes).

    Both are the DataFrames of :func:`cxrmodels.evaluate.multiclass_report`; a class absent from the data shows "–".
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    _heatmap(axes[0], counts, "d" if np.issubdtype(counts.to_numpy().dtype, np.integer) else ".0f", None, "counts")
    _heatmap(axes[1], normalised, ".2f", 1.0, "row-normalised (recall on the diagonal)")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_gradcam_grid(
    images: Sequence[np.ndarray], examples: pd.DataFrame, path: PathLike, title: str = "Grad-CAM"
) -> Path:
    """One row per true class: its most confident correct example, then its most confident mistakes.

    ``examples`` is :func:`cxrmodels.evaluate.select_examples` output (columns true, pred, prob_pred, kind), and
    ``images[i]`` is the RGB overlay (:func:`cxrmodels.explain.overlay`) or gray image for ``examples.iloc[i]``.
    Captions say true / predicted / probability; mistakes are framed in red.
    """
    if len(images) != len(examples):
        raise ValueError(f"{len(images)} images for {len(examples)} examples")
    classes = list(dict.fromkeys(examples["true"])) or ["(none)"]
    ncols = max(1, int(examples.groupby("true").size().max()) if len(examples) else 1)
    fig, axes = plt.subplots(
        len(classes), ncols, figsize=(2.6 * ncols, 3.2 * len(classes)), squeeze=False, layout="constrained"
    )  # keeps each row's two-line titles off the row above
    for ax in axes.ravel():
        ax.axis("off")
    col = dict.fromkeys(classes, 0)
    for img, row in zip(images, examples.itertuples(index=False), strict=True):
        r = classes.index(row.true)
        ax = axes[r, col[row.true]]
        col[row.true] += 1
        ax.imshow(img, cmap=None if np.ndim(img) == 3 else "gray")
        wrong = row.kind == "wrong"
        ax.set_title(
            f"true {row.true}\npred {row.pred} ({row.prob_pred:.2f})", fontsize=8, color="red" if wrong else "black"
        )
        if wrong:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color="red", lw=2.5)
    fig.suptitle(title)
    return _save(fig, path)
