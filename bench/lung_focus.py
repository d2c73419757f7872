"""What keeps a model on the lungs? Each model's site figures and where its Grad-CAM heat sits.

    python -m bench.lung_focus --npz bench/results/robustness_ablation_lite0_128px_occlude.npz \\
        none_s0=MODELS/none_s0.pt occlude_s0=MODELS/occlude_s0.pt [--size 128]

For models trained by ``bench.robustness_ablation --save-models`` (the same recipe with and without border masking
and random erasing), two measurements:

- **site figures**: the threshold chosen on validation (the F1 rule, on the npz's validation probabilities with its
  test-time views), scored on the ``site`` and the ``report`` halves of chest_xray_external (the npz's external
  probabilities, matched by path to ``chest_xray_external_halves.csv``): binary accuracy, normal recall, AUROC and,
  for 3-class models, 3-class accuracy;
- **border heat**: Grad-CAM of the predicted class on the ``site`` half's images (no label used), the share of
  each map's heat in the outer band (``--band`` of each side: where markers, collimation edges and text sit) against
  the band's share of the image area; over all images and over the misclassified ones.

Nothing is fitted on either half. Writes bench/results/lung_focus.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from bench.benchlib import machine, write_result
from bench.site_halves import EXTERNAL, HALVES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "lung_focus.json"


def border_share(heat: np.ndarray, band: float) -> np.ndarray:
    """Per map (n, S, S): the share of its heat within ``band`` of any edge (NaN for an all-zero map)."""
    n, h, w = heat.shape
    bh, bw = max(1, int(round(band * h))), max(1, int(round(band * w)))
    inner = heat[:, bh : h - bh, bw : w - bw].sum(axis=(1, 2))
    total = heat.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1 - inner / total, np.nan)


def site_figures_of(npz: dict, key: str, y_val: np.ndarray, names: list[str], labels: pd.DataFrame, views: int) -> dict:
    """The validation-chosen threshold, scored on each half."""
    from analysis.site.compare import site_figures
    from cxrmodels.evaluate import choose_threshold, pneumonia_probability, threshold_sweep

    p_val = npz[f"{key}_val_tta{views}"]
    y_bin = (y_val != names.index("NORMAL")).astype(int)
    threshold = choose_threshold(threshold_sweep(y_bin, pneumonia_probability(p_val, names)))
    probs = npz[f"{key}_external_tta{views}"]
    out = {}
    for half in ("site", "report"):
        rows = labels.index[labels["half"] == half]
        out[half] = site_figures(list(labels.loc[rows, "label"]), probs[rows], names, threshold)
    return out


def external_labels(paths: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Each external image's half (``chest_xray_external_halves.csv``) and label, in the npz's order."""
    halves = pd.read_csv(HALVES).set_index("path")
    rel = [str(Path(p).resolve().relative_to(EXTERNAL.resolve())) for p in paths]
    return pd.DataFrame({"path": rel, "half": halves.loc[rel, "half"].to_numpy(), "label": labels})


def heat_of(path: str, images: np.ndarray, band: float) -> dict:
    from cxrmodels.explain.gradcam import grad_cam_images
    from cxrmodels.train.checkpoint import load_model
    from cxrmodels.train.loop import predict_proba

    model, checkpoint = load_model(path)
    heat = grad_cam_images(model, images)
    share = border_share(heat, band)
    predicted = predict_proba(model, images).argmax(1)
    return {"border_heat_mean": float(np.nanmean(share)), "border_heat_median": float(np.nanmedian(share)),
            "predicted": predicted, "share": share, "names": list(checkpoint.class_names)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="KEY=MODEL.pt", help="npz key (variant_sSEED) = saved model")
    parser.add_argument("--npz", required=True, help="bench.robustness_ablation's probabilities (with paths)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--task", default="multiclass", choices=["binary", "multiclass"])
    parser.add_argument("--tta", type=int, default=8)
    parser.add_argument("--band", type=float, default=0.15)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    from bench.robustness_ablation import load_arrays

    npz = dict(np.load(args.npz, allow_pickle=False))
    loaded = load_arrays(argparse.Namespace(data=str(EXTERNAL.parent / "chest_xray"), external=str(EXTERNAL),
                                            size=args.size, task=args.task, save_models=None))  # fmt: skip
    names = list(loaded["class_names"])
    labels = external_labels(npz["external_paths"], list(loaded["arrays"]["external"][1]))
    site_x = loaded["arrays"]["external"][0][labels.index[labels["half"] == "site"]]
    site_y = labels.loc[labels["half"] == "site", "label"].to_numpy()
    result = {"npz": args.npz, "band": args.band, "band_area": 1 - (1 - 2 * args.band) ** 2, "models": {}}
    for spec in args.models:
        key, path = spec.split("=", 1)
        figures = site_figures_of(npz, key, loaded["arrays"]["val"][1], names, labels, args.tta)
        heat = heat_of(path, site_x, args.band)
        wrong = np.array([heat["names"][p] for p in heat["predicted"]]) != site_y
        if len(names) == 2:
            wrong = (heat["predicted"] == names.index("NORMAL")) != (site_y == "NORMAL")
        result["models"][key] = {"model": path, **figures, "border_heat_mean": heat["border_heat_mean"],
                                 "border_heat_median": heat["border_heat_median"],
                                 "border_heat_misclassified": float(np.nanmean(heat["share"][wrong]))}  # fmt: skip
        print(key, {k: v for k, v in result["models"][key].items() if k != "model"}, flush=True)
    result["machine"] = machine()
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
