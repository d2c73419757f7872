"""Classify chest X-rays with a trained checkpoint: probabilities, thresholded decision, optional Grad-CAM.

    python -m analysis.predict --model best.pt IMAGE_OR_FOLDER... [--threshold T] [--gradcam-dir DIR] [--csv OUT]

Each image is decoded and preprocessed with the checkpoint's own preprocessing parameters (the same pixels the
model was trained on). The decision threshold on P(PNEUMONIA) is ``--threshold``, else the one stored in the
checkpoint (chosen on validation by the analysis), else 0.5. A folder in a labelled layout (Kaggle
NORMAL/PNEUMONIA, or class folders) also gets accuracy and a confusion matrix. Unreadable images are reported with
the reason and skipped; a checkpoint that cannot be loaded is a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from cxrmodels.train.checkpoint import ModelCheckpoint

from analysis.cli import UsageError, check_tta, guarded
from cxrmodels.data.records import NORMAL, PNEUMONIA, task_labels
from cxrmodels.evaluate import DECISION_RULE, binary_metrics, decision_names, multiclass_report, pneumonia_probability
from cxrmodels.evaluate.decision import DEFAULT_THRESHOLD
from cxrmodels.progress import bar

log = logging.getLogger("analysis.predict")


@dataclass(frozen=True)
class Item:
    """One image to classify; ``label`` is known when it came from a labelled folder layout."""

    path: Path
    label: str | None = None


class CheckpointError(RuntimeError):
    """The model checkpoint is missing or unusable (the CLI turns this into exit code 2)."""


# ----------------------------------------------------------------------------------------------- inputs


def _unlabelled_images(folder: Path, skipped: list[tuple[str, str]]) -> list[Item]:
    from cxrmodels.data.sources import iter_image_files

    return [Item(p) for p in iter_image_files(folder, skipped)]


def collect_items(inputs: Sequence[str]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Files as given; folders through the data engineer's layout detection, so labels come for free.

    A folder with sub-folders is read as a labelled layout (Kaggle or class folders); when its folders are not
    class names, or it has none, its images are classified without labels.
    """
    from cxrmodels.data.sources import load_records

    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_file():
            items.append(Item(path))
        elif path.is_dir():
            has_subdirs = any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
            if not has_subdirs:
                items += _unlabelled_images(path, skipped)
                continue
            try:
                result = load_records(path)
            except ValueError as err:
                log.warning("%s: not a labelled layout (%s); classifying its images without labels", path, err)
                items += _unlabelled_images(path, skipped)
                continue
            items += [Item(Path(r.path), r.label) for r in result.records]
            skipped += result.skipped
        else:
            skipped.append((text, "no such file or folder"))
    return items, skipped


# ----------------------------------------------------------------------------------------------- the model


def is_onnx(path: str) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def load_predictor(path: str, device: str):
    """(model, ModelCheckpoint) through ``cxrmodels.train.checkpoint.load_model`` (``weights_only=True``: no code
    runs), or an ONNX Runtime session for a ``.onnx`` file from ``analysis.export`` (no PyTorch needed) with the
    checkpoint's settings from its metadata."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if is_onnx(path):
        return _load_onnx(p, device)
    from cxrmodels.train.checkpoint import load_model

    try:
        return load_model(p, device)
    except Exception as err:  # any failure here means "not a usable checkpoint"; say which and why in one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: {reason[:300]}") from err


def _load_onnx(path: Path, device: str):
    try:
        from analysis.export import OnnxModel

        model = OnnxModel(path, device)
    except ImportError:
        raise CheckpointError(f"{path}: an ONNX model needs ONNX Runtime: pip install 'cxr-tune[onnx]'") from None
    except Exception as err:  # noqa: BLE001 - not a usable model file, whatever the reason: one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load ONNX model {path}: {reason[:300]}") from err
    return model, model.checkpoint


def calibrated(probs: np.ndarray, checkpoint: ModelCheckpoint) -> tuple[np.ndarray, str]:
    """The probabilities rescaled by the checkpoint's temperature (fitted on validation by analysis.report), and
    a phrase saying which probabilities these are."""
    from cxrmodels.evaluate.calibration import apply_temperature

    t = checkpoint.temperature
    if t is None:
        return probs, "probabilities as the model outputs them (not calibrated)"
    return apply_temperature(
        probs, float(t), checkpoint.class_names
    ), f"probabilities calibrated by temperature scaling (T = {float(t):.2f})"


def decision_views(checkpoint: ModelCheckpoint) -> int:
    """The test-time views the checkpoint's threshold, temperature and operating points were fitted with (an ONNX
    export with other views records the original under ``decision_tta``)."""
    return int(checkpoint.info.get("decision_tta", checkpoint.tta))


def tta_mismatch(checkpoint: ModelCheckpoint, tta: int) -> str | None:
    """A warning naming the decision settings fitted for another number of test-time views; None when they match
    (or there is nothing fitted)."""
    fitted = decision_views(checkpoint)
    figures = []
    if checkpoint.threshold is not None:
        figures.append(f"threshold {float(checkpoint.threshold):.2f}")
    if checkpoint.temperature is not None:
        figures.append(f"temperature T = {float(checkpoint.temperature):.2f}")
    figures += [f"operating point {k!r} ({float(v['threshold']):.2f})" for k, v in checkpoint.operating_points.items()]
    if tta == fitted or not figures:
        return None
    return (
        f"warning: the {', '.join(figures)} were fitted on validation with {fitted} test-time view(s); with {tta} "
        f"view(s) the probabilities shift, and they are applied unchanged. To refit them for {tta} views, run "
        f"python -m analysis.report EXPERIMENT --out DIR --tta {tta}."
    )


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


def load_images(items: Sequence[Item], cfg) -> tuple[list[Item], np.ndarray, list[tuple[str, str]]]:
    """Decode + preprocess each image; unreadable ones go to the skipped list with the reason."""
    from cxrmodels.data.decode import UnreadableImage, decode_image
    from cxrmodels.data.preprocess import preprocess

    kept: list[Item] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for item in bar(items, desc="reading", unit="img"):
        try:
            arrays.append(preprocess(decode_image(item.path), cfg))
            kept.append(item)
        except (UnreadableImage, ValueError, OSError) as err:
            skipped.append((str(item.path), str(err) or type(err).__name__))
    x = np.stack(arrays) if arrays else np.zeros((0, cfg.size, cfg.size), np.uint8)
    return kept, x, skipped


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


# ----------------------------------------------------------------------------------------------- outputs


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


# ----------------------------------------------------------------------------------------------- CLI


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be strictly between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint (.pt) saved by training or the analysis, or an "
        ".onnx file from analysis.export (runs without PyTorch)",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders (Kaggle NORMAL/PNEUMONIA or class folders give labels)",
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="decision threshold on P(PNEUMONIA) (default: the checkpoint's, else 0.5)",
    )
    parser.add_argument(
        "--operating-point",
        default=None,
        metavar="NAME",
        help="decide at a threshold stored in the checkpoint: 'f1' (the default decision) or one the "
        "report was asked for, e.g. 'sensitivity>=0.95'",
    )
    parser.add_argument("--gradcam-dir", type=Path, default=None, help="write one Grad-CAM overlay PNG per image")
    parser.add_argument("--csv", type=Path, default=None, help="write the per-image predictions to this CSV")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--tta",
        type=int,
        default=None,
        metavar="N",
        help="test-time augmentation: average N fixed views (1 = off; default: the checkpoint's, which "
        "its threshold was chosen with, else 1)",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        default=None,
        help="the search's experiment folder, to refuse labelled images it trained, validated or tested on "
        "(default: the one the report's models record, where it exists)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="score labelled images even where they are byte-identical to the experiment's",
    )
    return parser


def _device(model: str, device: str) -> str:
    """The torch device for a checkpoint; an ONNX model picks its ONNX Runtime provider from the name alone."""
    if is_onnx(model):
        return device
    from cxrmodels.train.loop import resolve_device

    return str(resolve_device(device))


def check_overlap(args: argparse.Namespace, checkpoint: ModelCheckpoint, items: Sequence[Item]) -> None:
    """Labelled images that the model's experiment holds are refused (unless --allow-overlap): scores on them
    would overstate the model. The experiment is --experiment, else the folder the checkpoint records."""
    from analysis.cli import open_experiment, refuse_overlap
    from cxrmodels.data.overlap import file_fingerprint, find_overlap

    recorded = checkpoint.info.get("experiment")
    folder = args.experiment or (Path(recorded) if recorded and Path(recorded).is_dir() else None)
    labelled = [str(i.path) for i in items if i.label is not None]
    if folder is None or not labelled:
        return
    found = find_overlap(file_fingerprint(labelled), open_experiment(folder).seen_images())
    refuse_overlap(found, f"the labelled images (experiment {folder})", args.allow_overlap)


def classify(args: argparse.Namespace, model, checkpoint: ModelCheckpoint, device: str) -> int:
    """Read, predict, print (and write) the table and, for labelled images, the scores."""
    threshold, source = resolve_threshold(args.threshold, checkpoint, args.operating_point)
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


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not is_onnx(args.model):  # an ONNX model checks its own views (they are in its graph)
        check_tta(args.tta)
    device = _device(args.model, args.device)
    try:
        model, checkpoint = load_predictor(args.model, device)
        return classify(args, model, checkpoint, device)
    except CheckpointError as err:
        raise UsageError(str(err)) from None


if __name__ == "__main__":
    sys.exit(main())
