"""Classify chest X-rays with a saved model: probabilities, the one decision at the model's threshold, a summary
for labelled images, optional Grad-CAM (``python -m analysis.predict``).

Each image is decoded and preprocessed with the checkpoint's own preprocessing parameters (the same pixels the
model was trained on). The decision threshold on P(PNEUMONIA) is ``--threshold``, else the one stored in the
checkpoint (chosen on validation by the analysis), else 0.5. A folder in a labelled layout (Kaggle
NORMAL/PNEUMONIA, or class folders) also gets accuracy and a confusion matrix. Unreadable images are reported with
the reason and skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from analysis.cli import open_experiment, refuse_overlap
from analysis.inference.images import Item, collect_items, load_images
from analysis.inference.loading import CheckpointError, calibrated, tta_mismatch
from cxrmodels.data.records import NORMAL, PNEUMONIA, task_labels
from cxrmodels.evaluate import DECISION_RULE, binary_metrics, decision_names, multiclass_report, pneumonia_probability
from cxrmodels.evaluate.decision import DEFAULT_THRESHOLD
from cxrmodels.progress import bar
from cxrmodels.train.checkpoint import ModelCheckpoint


def resolve_threshold(
    cli_threshold: float | None, checkpoint: ModelCheckpoint, operating_point: str | None = None
) -> tuple[float, str]:
    """(threshold, where it came from): the command line, else the named operating point stored in the checkpoint
    (analysis.report --min-sensitivity / --min-specificity), else its validation choice, else 0.5."""
    if cli_threshold is not None:
        return float(cli_threshold), "--threshold"
    if operating_point is not None:
        points = checkpoint.operating_points
        if operating_point not in points:
            raise CheckpointError(
                f"--operating-point {operating_point!r}: the checkpoint has "
                f"{', '.join(map(repr, points)) or 'no operating points'} (analysis.report "
                "--min-sensitivity S or --min-specificity S stores more)"
            )
        point = points[operating_point]
        return float(point["threshold"]), f"operating point {operating_point}: {point.get('rule', '')}".strip()
    stored = checkpoint.threshold
    if stored is not None:
        return float(stored), "checkpoint"
    return DEFAULT_THRESHOLD, "default"


def predict_all(model, x: np.ndarray, *, batch_size: int, device: str, tta: int) -> np.ndarray:
    """``predict_proba`` (or the ONNX session) in blocks of images, so a large folder shows its progress."""
    if hasattr(model, "session"):  # analysis.export.OnnxModel: the views are inside its graph
        if tta != model.checkpoint.tta:
            raise CheckpointError(
                f"this ONNX model averages {model.checkpoint.tta} view(s) inside its graph; export it "
                f"again with python -m analysis.export --tta {tta}"
            )

        def block_probs(block: np.ndarray) -> np.ndarray:
            return model.predict(block, batch_size)
    else:
        from cxrmodels.train.loop import predict_proba

        def block_probs(block: np.ndarray) -> np.ndarray:
            return predict_proba(model, block, batch_size=batch_size, device=device, tta=tta)

    probs, block = [], max(batch_size, 256)
    with bar(total=len(x), desc="predicting", unit="img") as shown:
        for start in range(0, len(x), block):
            probs.append(block_probs(x[start : start + block]))
            shown.update(len(probs[-1]))
    return np.concatenate(probs)


def prediction_table(
    items: Sequence[Item], probs: np.ndarray, class_names: Sequence[str], threshold: float
) -> pd.DataFrame:
    """One row per image: P(class) columns, P(PNEUMONIA), and the one decision at the threshold
    (:func:`cxrmodels.evaluate.decide`: NORMAL below it; above it PNEUMONIA, or the likelier subtype of a 3-class
    model)."""
    names = list(class_names)
    p_pneu = pneumonia_probability(probs, names)
    table = pd.DataFrame(
        {"image": [i.path.name for i in items], "path": [str(i.path) for i in items], "label": [i.label for i in items]}
    )
    for k, name in enumerate(names):
        table[f"p_{name}"] = probs[:, k]
    table["p_pneumonia"] = p_pneu
    table["decision"] = decision_names(probs, names, threshold) if len(probs) else []
    return table


def _redundant_columns(table: pd.DataFrame, class_names: Sequence[str]) -> list[str]:
    """Columns the terminal view leaves out (the CSV keeps them all, for a stable schema)."""
    drop = ["path"]
    if table["label"].isna().all():
        drop.append("label")
    if PNEUMONIA in class_names:  # binary: p_pneumonia repeats p_PNEUMONIA
        drop.append("p_pneumonia")
    return drop


def labelled_summary(
    table: pd.DataFrame, probs: np.ndarray, class_names: Sequence[str], threshold: float
) -> str | None:
    """Accuracy and confusion for the labelled images: 3-class when the labels have subtypes and the model too,
    else NORMAL vs PNEUMONIA at the threshold."""
    mask = table["label"].notna().to_numpy()
    if not mask.any():
        return None
    labels = table.loc[mask, "label"].tolist()
    names = list(class_names)
    lines = [f"{int(mask.sum())} labelled image(s)"]
    if len(names) == 3 and PNEUMONIA not in labels:
        rep = multiclass_report(task_labels(labels, "multiclass"), probs[mask], names, threshold)
        lines += [
            f"3-class accuracy (at threshold {threshold:.2f}): {rep['accuracy']:.3f}   macro-F1: {rep['macro_f1']:.3f}",
            "confusion matrix (rows true, columns predicted):",
            rep["confusion"].to_string(),
        ]
        if rep["collapsed"]:
            lines.append("WARNING: every image is predicted as the same class (majority-class collapse?)")
    y = task_labels(labels, "binary")
    m = binary_metrics(y, table.loc[mask, "p_pneumonia"].to_numpy(), threshold)
    cm = pd.DataFrame(
        [[m["tn"], m["fp"]], [m["fn"], m["tp"]]],
        index=pd.Index([NORMAL, PNEUMONIA], name="true"),
        columns=pd.Index([NORMAL, PNEUMONIA], name="predicted"),
    )
    lines += [
        f"NORMAL vs PNEUMONIA at threshold {threshold:.2f}: accuracy {m['accuracy']:.3f}, "
        f"sensitivity {m['recall']:.3f}, specificity {m['specificity']:.3f}, precision {m['precision']:.3f}, "
        f"F1 {m['f1']:.3f}",
        "confusion matrix (rows true, columns predicted):",
        cm.to_string(),
    ]
    return "\n".join(lines)


def write_gradcams(
    model, x: np.ndarray, table: pd.DataFrame, class_names: Sequence[str], out_dir: Path, device: str
) -> list[Path]:
    """One overlay PNG per image, explaining the decision that was printed (thresholded for binary models)."""
    from cxrmodels.explain import grad_cam_images, overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(class_names)
    targets = [names.index(d) for d in table["decision"]]
    maps = grad_cam_images(model, x, targets, device=device)
    written: list[Path] = []
    used: set[str] = set()
    for i, image_name in enumerate(table["image"]):
        stem = unique = Path(image_name).stem
        k = 1
        while unique in used:  # same file name in two class folders
            k += 1
            unique = f"{stem}_{k}"
        used.add(unique)
        path = out_dir / f"{unique}_gradcam.png"
        cv2.imwrite(str(path), cv2.cvtColor(overlay(x[i], maps[i]), cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def check_overlap(args: argparse.Namespace, checkpoint: ModelCheckpoint, items: Sequence[Item]) -> None:
    """Labelled images that the model's experiment holds are refused (unless --allow-overlap): scores on them
    would overstate the model. The experiment is --experiment, else the folder the checkpoint records."""
    from cxrmodels.data.overlap import file_fingerprint, find_overlap

    recorded = checkpoint.info.get("experiment")
    folder = args.experiment or (Path(recorded) if recorded and Path(recorded).is_dir() else None)
    labelled = [str(i.path) for i in items if i.label is not None]
    if folder is None or not labelled:
        return
    found = find_overlap(file_fingerprint(labelled), open_experiment(folder).seen_images())
    refuse_overlap(found, f"the labelled images (experiment {folder})", args.allow_overlap)


def classify(args: argparse.Namespace, model, checkpoint: ModelCheckpoint, device: str, adapt=None) -> int:
    """Read, predict, print (and write) the table and, for labelled images, the scores. ``adapt`` (``predict
    --adapt``): called as ``adapt(model, checkpoint, x, tta)`` on the images read, it returns the model and
    checkpoint to predict with (moved to these images without their labels, or as they were)."""
    items, skipped = collect_items(args.inputs)
    check_overlap(args, checkpoint, items)
    items, x, unreadable = load_images(items, checkpoint.preprocess)
    for path, reason in [*skipped, *unreadable]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not items:
        print("error: no readable images to classify", file=sys.stderr)
        return 1
    tta = int(args.tta if args.tta is not None else checkpoint.tta)
    mismatch = tta_mismatch(checkpoint, tta)
    if mismatch:
        print(mismatch, file=sys.stderr)
    if adapt is not None:
        model, checkpoint = adapt(model, checkpoint, x, tta)
    threshold, source = resolve_threshold(args.threshold, checkpoint, args.operating_point)
    probs, calibration = calibrated(
        predict_all(model, x, batch_size=args.batch_size, device=device, tta=tta), checkpoint
    )
    table = prediction_table(items, probs, checkpoint.class_names, threshold)
    print(
        f"model {args.model} ({', '.join(checkpoint.class_names)}); threshold {threshold:.2f} on P(PNEUMONIA) "
        f"({source}); "
        + (f"test-time augmentation: {tta} views averaged" if tta > 1 else "no test-time augmentation")
        + f"; {calibration}; {DECISION_RULE}"
    )
    shown = table.drop(columns=_redundant_columns(table, checkpoint.class_names))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = labelled_summary(table, probs, checkpoint.class_names, threshold)
    if summary:
        print(summary)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.assign(threshold=threshold).to_csv(args.csv, index=False)
        print(f"predictions written to {args.csv}")
    write_requested_gradcams(args, model, x, table, checkpoint.class_names, device)
    return 0


def write_requested_gradcams(args, model, x: np.ndarray, table: pd.DataFrame, class_names, device: str) -> None:
    if args.gradcam_dir is None:
        return
    if hasattr(model, "members"):
        print("no Grad-CAM for an ensemble: a heat map explains one network; run predict with a member's model.pt")
    elif hasattr(model, "session"):
        print("no Grad-CAM from an ONNX model: it needs the network's gradients; run predict with the .pt checkpoint")
    else:
        written = write_gradcams(model, x, table, class_names, args.gradcam_dir, device)
        print(f"{len(written)} Grad-CAM overlay(s) written to {args.gradcam_dir}")
