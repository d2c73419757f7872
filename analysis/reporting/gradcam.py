"""The report's Grad-CAM figure: where a winner's saved model looks on its most confident correct test images and
its worst misses."""

from __future__ import annotations

from pathlib import Path

from analysis.scoring.results import ModelResult


def write_gradcam(winner: ModelResult, arrays, path: Path, n_wrong: int = 2) -> Path | None:
    """Test-set Grad-CAM of a winner's saved model: per class its most confident correct image and worst misses,
    by the model's one decision (its validation threshold on its calibrated, test-time-augmented probabilities)."""
    from analysis.scoring.plots import plot_gradcam_grid
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
