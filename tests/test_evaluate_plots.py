"""Each plot writes a readable PNG from the evaluation tables (content is checked by eye; shape and errors here)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from analysis.scoring import plots
from cxrmodels.evaluate import binary_report, multiclass_report, select_examples
from cxrmodels.explain import overlay
from cxrmodels.train.outputs import plot_learning_curves


def _png_ok(path) -> np.ndarray:
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


@pytest.fixture
def binary_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    p = np.clip(0.35 * y + 0.65 * rng.random(80), 0, 1)
    return y, p


def test_pr_and_roc_plots(tmp_path, binary_data):
    y, p = binary_data
    report = binary_report(y[:40], p[:40], y[40:], p[40:])
    pr = plots.plot_pr_curve(
        y[40:], p[40:], report["test_sweep"], tmp_path / "sub" / "pr.png", chosen_threshold=report["threshold"]
    )
    _png_ok(pr)
    _png_ok(plots.plot_roc_curve(y[40:], p[40:], tmp_path / "roc.png", chosen_threshold=report["threshold"]))
    # Degenerate inputs still draw (a collapsed model must be shown, not crash the report).
    flat = np.full(10, 0.01)
    rep = binary_report(np.r_[np.zeros(5), np.ones(5)].astype(int), flat, np.zeros(10, int), flat)
    _png_ok(plots.plot_pr_curve(np.zeros(10, int), flat, rep["test_sweep"], tmp_path / "pr0.png", 0.5))
    _png_ok(plots.plot_roc_curve(np.zeros(10, int), flat, tmp_path / "roc0.png"))


def test_confusion_matrix_plot(tmp_path):
    names = ("NORMAL", "BACTERIAL", "VIRAL")
    y = np.array([0, 0, 1, 1, 0, 1])
    probs = np.eye(3)[[0, 1, 1, 0, 0, 1]]
    rep = multiclass_report(y, probs, names)  # VIRAL absent: a NaN row
    _png_ok(plots.plot_confusion_matrix(rep["confusion"], rep["confusion_normalised"], tmp_path / "cm.png"))


def test_gradcam_grid_plot(tmp_path):
    names = ("NORMAL", "PNEUMONIA")
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.8, 0.9, 0.3, 0.2])
    ex = select_examples(y, np.stack([1 - p1, p1], 1), names, n_wrong=2)
    rng = np.random.default_rng(1)
    imgs = [overlay(rng.integers(0, 255, (32, 32), dtype=np.uint8), rng.random((32, 32))) for _ in range(len(ex))]
    _png_ok(plots.plot_gradcam_grid(imgs, ex, tmp_path / "cam.png"))
    with pytest.raises(ValueError, match="images for"):
        plots.plot_gradcam_grid(imgs[:-1], ex, tmp_path / "bad.png")


def test_learning_curves_plot(tmp_path):
    rows = []
    for run in ("a", "b", "c"):
        for epoch in range(1, 6):
            rows.append(
                {
                    "run": run,
                    "epoch": epoch,
                    "train_loss": 1 / epoch,
                    "val_loss": 1.2 / epoch,
                    "train_accuracy": 1 - 0.5 / epoch,
                    "val_accuracy": 0.7,
                }
            )
    history = pd.DataFrame(rows)
    _png_ok(plot_learning_curves(history, tmp_path / "lc.png", highlight=["b"]))
    # A single run without a run column, and without accuracy columns.
    _png_ok(
        plot_learning_curves(
            history[history.run == "a"].drop(columns=["run", "val_accuracy", "train_accuracy"]), tmp_path / "lc1.png"
        )
    )
