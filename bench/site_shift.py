"""A saved model at the second hospital: each way of moving its decision to the site, scored on the ``report`` half.

    python -m bench.site_shift reports/kermany-cpu/retrain_multiclass/best_model.pt ... [--draws 20]

The site is ``../shared/data/chest_xray_external`` split by ``chest_xray_external_halves.csv``: every method learns
from the ``site`` half only (its images, or its labels for recalibration) and is scored once on the ``report``
half, which nothing is fitted, chosen or adapted on. Per model, on the report half:

- as trained: the validation threshold and temperature;
- without labels: ``bn`` (AdaBN on the site half's images), ``prior`` (EM prevalence on them), ``align``
  (prediction alignment of the threshold to their score distribution), and combinations;
- with labels: the threshold and temperature chosen on N labelled site images (patients drawn until N images;
  ``--draws`` draws each, mean and std), N = 25, 50, 100 and all 155.

Binary accuracy, normal recall (specificity), sensitivity and AUROC, and 3-class accuracy for a 3-class model (the
one decision rule). Writes bench/results/site_shift.json. It uses the same functions as ``analysis.adapt`` and
``analysis.calibrate``.

    python -m bench.site_shift --experiment experiments/kermany-cpu      # which selection signal sees the site

measures, over the trials of a search, how well each selection signal (clean validation AUROC, stress validation
AUROC) predicts AUROC on the ``site`` half (Spearman's rho, and the site AUROC of the trial each would pick);
:mod:`bench.selection_signals`. Models and ``--experiment`` may be given together.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from analysis.site.compare import site_figures as scores
from bench.benchlib import machine, write_result
from bench.site_halves import EXTERNAL, HALVES, write_halves

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "site_shift.json"
LABEL_COUNTS = (25, 50, 100)


def decided(raw: np.ndarray, checkpoint: Any) -> np.ndarray:
    from analysis.inference.loading import calibrated

    return calibrated(raw, checkpoint)[0]


#: Each label-free method alone, and the combinations worth knowing.
LABEL_FREE = (("bn",), ("prior",), ("align",), ("bn", "prior"), ("prior", "align"), ("bn", "align"))


def label_free(model: Any, checkpoint: Any, site: Any, report: Any, tta: int) -> dict[str, dict]:
    """Each of :data:`LABEL_FREE`, learnt on the site half's images and scored on the report half."""
    from analysis.site.adapt import adapt_to_site
    from analysis.site.data import raw_probabilities

    out = {}
    site_raw, report_raw = (raw_probabilities(model, s, tta=tta, device="cpu", batch_size=32) for s in (site, report))
    for methods in LABEL_FREE:
        try:
            found = adapt_to_site(model, checkpoint, site.x, methods, source="site", tta=tta, raw=site_raw)
        except ValueError as err:  # a network without BN
            print(f"  {'+'.join(methods)}: {err}")
            continue
        ckpt = found.checkpoint
        raw = report_raw
        if "bn" in methods:  # another network: predict again
            raw = raw_probabilities(found.model, report, tta=tta, device="cpu", batch_size=32)
        out["+".join(methods)] = scores(report.labels, decided(raw, ckpt), ckpt.class_names, float(ckpt.threshold))
    return out


def with_labels(checkpoint: Any, site: Any, site_raw: np.ndarray, report: Any, report_raw: np.ndarray, draws: int):
    tta = checkpoint.tta
    """Recalibration on N labelled site images (several patient draws each), scored on the report half."""
    from analysis.site.recalibrate import patient_draw, recalibrate

    rng = np.random.default_rng(0)
    out = {}
    for n in (*LABEL_COUNTS, len(site.items)):
        rows = []
        for _ in range(draws if n < len(site.items) else 1):
            mask = patient_draw(site.patients, rng, n) if n < len(site.items) else np.ones(len(site.items), bool)
            labels = [lab for lab, m in zip(site.labels, mask, strict=True) if m]
            try:
                found = recalibrate(checkpoint, labels, site_raw[mask], site.patients[mask], source="site", tta=tta,
                                    estimates=False)  # fmt: skip
                new = found.checkpoint
            except ValueError:  # a draw of one class
                continue
            rows.append(scores(report.labels, decided(report_raw, new), new.class_names, float(new.threshold)))
        out[f"{n} labels"] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"draws": len(rows)}
        out[f"{n} labels"].update({f"{k}_std": float(np.std([r[k] for r in rows])) for k in rows[0]})
    return out


def one_model(path: str, halves: Path, draws: int) -> dict[str, Any]:
    from analysis.site.adapt import model_val_quantiles
    from analysis.site.data import load_site_model, raw_probabilities, read_site

    model, checkpoint = load_site_model(path, "cpu")
    if not checkpoint.info.get("val_score_quantiles"):  # once per model, not once per method that aligns
        quantiles = model_val_quantiles(model, checkpoint, None, batch_size=32, device="cpu", tta=checkpoint.tta)
        checkpoint = checkpoint.replace(info={**checkpoint.info, "val_score_quantiles": quantiles})
    site = read_site(str(halves / "site"), "site", checkpoint.preprocess, labelled=True)
    report = read_site(str(halves / "report"), "report", checkpoint.preprocess, labelled=True)
    tta = checkpoint.tta
    site_raw = raw_probabilities(model, site, tta=tta, device="cpu", batch_size=32)
    report_raw = raw_probabilities(model, report, tta=tta, device="cpu", batch_size=32)
    result = {"as trained": scores(report.labels, decided(report_raw, checkpoint), checkpoint.class_names,
                                   float(checkpoint.threshold))}  # fmt: skip
    result.update(label_free(model, checkpoint, site, report, tta))
    result.update(with_labels(checkpoint, site, site_raw, report, report_raw, draws))
    return {"model": path, "backbone": checkpoint.config.backbone, "tta": tta, "methods": result}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="saved models (.pt)")
    parser.add_argument("--experiment", help="a search's experiment folder: rank-correlate its selection signals")
    parser.add_argument("--draws", type=int, default=20, help="patient draws per label count (default 20)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not args.models and not args.experiment:
        parser.error("give saved models, --experiment, or both")
    with tempfile.TemporaryDirectory() as tmp:
        write_halves(Path(tmp), EXTERNAL, HALVES)
        result = {"halves": str(HALVES), "draws": args.draws, "models": [], "machine": machine()}
        for m in args.models:  # printed and written as it goes: a long run keeps what it finished
            result["models"].append(one_model(m, Path(tmp), args.draws))
            print_model(result["models"][-1])
            write_result(result, args.out)
        if args.experiment:
            result["selection"] = selection_signals(args.experiment, str(Path(tmp) / "site"))
    write_result(result, args.out)
    return result


def print_model(m: dict[str, Any]) -> None:
    print(m["model"])
    for method, figures in m["methods"].items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if not k.endswith("_std") and k != "draws")
        print(f"  {method:>12}: {shown}", flush=True)


def selection_signals(experiment: str, site_folder: str) -> dict[str, Any]:
    from bench.selection_signals import SIGNALS, signal_table, trial_signals

    print(f"selection signals over the trials of {experiment}, against AUROC on the site half:")
    signals = trial_signals(experiment, site_folder)
    table = signal_table(signals)
    for signal in SIGNALS:
        t = table[signal]
        print(f"  {signal:>15}: Spearman {t['spearman']:+.3f} (p {t['p_value']:.3f}); picks {t['picked_trial']}, "
              f"site AUROC {t['picked_site_auc']:.4f} (best {table['best_site_auc']:.4f})")  # fmt: skip
    return {"experiment": experiment, "table": table, "trials": signals.to_dict(orient="records")}


if __name__ == "__main__":
    main()
