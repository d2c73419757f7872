"""Evaluation a clinician can trust: one decision per image, temperature scaling that cannot reorder P(pneumonia),
overlap with the experiment refused, and bad input to any analysis command answered in one paragraph, exit 2."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cxrmodels.data.records import BINARY_CLASSES, CLASSES, NORMAL
from cxrmodels.evaluate import binary_metrics, decide, multiclass_report, pneumonia_probability, roc_auc
from cxrmodels.evaluate.calibration import apply_temperature, fit_temperature

# ----------------------------------------------------------------------------------------- one decision per image


def _random_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    logits = rng.normal(0, rng.uniform(0.1, 4), size=(n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(30))
def test_decisions_never_contradict(seed: int) -> None:
    """Random probabilities and thresholds: NORMAL exactly when P(pneumonia) < threshold, a pneumonia decision is
    the likelier subtype, and the 3-class confusion matrix agrees cell for cell with the binary one."""
    rng = np.random.default_rng(seed)
    probs, threshold = _random_probs(rng, 200, 3), float(rng.uniform(0.05, 0.95))
    names = list(CLASSES)
    decided = decide(probs, names, threshold)
    p_pneumonia = pneumonia_probability(probs, names)
    assert ((decided == names.index(NORMAL)) == (p_pneumonia < threshold)).all()
    subtype = np.where(probs[:, 1] >= probs[:, 2], 1, 2)
    assert (decided[p_pneumonia >= threshold] == subtype[p_pneumonia >= threshold]).all()
    y = rng.integers(0, 3, 200)
    three = multiclass_report(y, probs, names, threshold)["confusion"].to_numpy()
    two = binary_metrics((y != 0).astype(int), p_pneumonia, threshold)
    assert three[0, 0] == two["tn"] and three[0, 1:].sum() == two["fp"]
    assert three[1:, 0].sum() == two["fn"] and three[1:, 1:].sum() == two["tp"]


def test_binary_decision_is_the_threshold() -> None:
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    assert decide(probs, BINARY_CLASSES, 0.5).tolist() == [0, 1, 1]
    assert decide(probs, BINARY_CLASSES, 0.9).tolist() == [0, 0, 0]


def test_predict_table_has_one_decision(tmp_path: Path) -> None:
    """The issue's case: P(NORMAL) 0.337 is the arg-max, yet P(pneumonia) 0.663 is over the threshold: the one
    decision is the likelier pneumonia subtype, never NORMAL beside BACTERIAL."""
    from analysis.inference.images import Item
    from analysis.inference.predict import prediction_table

    probs = np.array([[0.337, 0.333, 0.330], [0.9, 0.05, 0.05], [0.1, 0.3, 0.6]])
    items = [Item(tmp_path / f"{i}.png") for i in range(3)]
    table = prediction_table(items, probs, CLASSES, threshold=0.45)
    assert table["decision"].tolist() == ["BACTERIAL", "NORMAL", "VIRAL"]
    assert "predicted_class" not in table.columns


# ------------------------------------------------------------------------------------------- temperature scaling


def test_temperature_cannot_reorder_p_normal_the_issues_example() -> None:
    logits = np.array([[0.0, 1.0, 1.0], [0.0, 1.7, -10.0]])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert probs[0, 0] > probs[1, 0]  # 0.155 vs 0.154
    plain = apply_temperature(probs, 2.0)  # one softmax over all classes reorders them (0.233 vs 0.299)
    assert plain[0, 0] < plain[1, 0]
    staged = apply_temperature(probs, 2.0, CLASSES)
    assert staged[0, 0] > staged[1, 0]
    assert np.allclose(staged.sum(axis=1), 1.0)


@pytest.mark.parametrize("seed", range(10))
def test_temperature_never_changes_a_binary_ranking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs, y = _random_probs(rng, 300, 3), rng.integers(0, 3, 300)
    t = float(np.exp(rng.uniform(np.log(0.2), np.log(5))))
    scaled = apply_temperature(probs, t, CLASSES)
    before, after = pneumonia_probability(probs, CLASSES), pneumonia_probability(scaled, CLASSES)
    order = np.sign(before[:, None] - before[None, :]) * np.sign(after[:, None] - after[None, :])
    assert (order >= 0).all()  # no pair of images changes order
    assert roc_auc((y != 0).astype(int), before) == pytest.approx(roc_auc((y != 0).astype(int), after), abs=1e-9)
    assert (scaled[:, 1:].argmax(axis=1) == probs[:, 1:].argmax(axis=1)).all()
    binary = _random_probs(rng, 300, 2)
    assert (np.argsort(binary[:, 1]) == np.argsort(apply_temperature(binary, t)[:, 1])).all()


def test_temperature_fit_on_three_classes_recovers_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true = _random_probs(rng, 4000, 3)  # calibrated by construction: each label drawn from its probabilities
    y = np.array([rng.choice(3, p=p) for p in true])
    sharp = apply_temperature(true, 0.5, CLASSES)  # an over-confident model
    t = fit_temperature(y, sharp, CLASSES)
    assert 1.5 < t < 2.5


# ---------------------------------------------------------------------------------------- overlap and bad input


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.random.default_rng(seed).random((40, 40)) * 255).astype(np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def fake_experiment(tmp_path: Path) -> Path:
    """An experiment folder over a class-folder data set, without running a search: the settings, the split
    manifest and an empty results table are all the checks before retraining read."""
    from cxrmodels.data.sources import load_records
    from search.cli import build_config, build_parser

    data = tmp_path / "data"
    for i in range(9):
        _png(data / ("NORMAL", "BACTERIA", "VIRUS")[i % 3] / f"img{i}.png", i)
    args = build_parser().parse_args(["--smoke-test", "--data", str(data), "--cache-dir", str(tmp_path / "cache")])
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "search_config.yaml").write_text(build_config(args).dump())
    records = load_records(str(data)).records
    manifest = pd.DataFrame(
        {
            "path": [r.path for r in records],
            "label": [r.label for r in records],
            "patient": [r.patient for r in records],
            "split": [("train", "val", "test")[i % 3] for i in range(len(records))],
            "fold": 0,
            "view": "",
            "modality": "",
        }
    )
    manifest.to_csv(exp / "split_manifest.csv", index=False)
    (exp / "results.csv").write_text("trial_id,status,best_objective\n")
    return exp


@pytest.fixture
def site_folder(tmp_path: Path, fake_experiment: Path) -> Path:
    """A labelled folder of new images, one of which is a renamed copy of an experiment image."""
    site = tmp_path / "site"
    for i in range(4):
        _png(site / ("NORMAL", "BACTERIA")[i % 2] / f"new{i}.png", 100 + i)
    shutil.copy(tmp_path / "data" / "BACTERIA" / "img1.png", site / "BACTERIA" / "renamed.png")
    return site


def test_report_refuses_an_external_set_that_shares_an_image(fake_experiment, site_folder, tmp_path, capsys):
    from analysis import report

    code = report.main([str(fake_experiment), "--out", str(tmp_path / "rep"), "--external", str(site_folder)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "1 image(s) are byte-identical" in err and "renamed.png" in err and "--allow-overlap" in err
    assert not (tmp_path / "rep").exists()  # refused before any work


def test_predict_refuses_labelled_images_the_experiment_holds(fake_experiment, site_folder, tmp_path, capsys):
    from analysis import predict
    from tests.test_predict import _save_tiny_checkpoint

    ckpt = _save_tiny_checkpoint(tmp_path / "m.pt", "multiclass")
    args = ["--model", str(ckpt), str(site_folder), "--experiment", str(fake_experiment)]
    assert predict.main(args) == 2
    assert "renamed.png" in capsys.readouterr().err
    assert predict.main([*args, "--allow-overlap"]) == 0
    assert "scored anyway" in capsys.readouterr().err
    shutil.move(site_folder / "BACTERIA" / "renamed.png", tmp_path / "elsewhere.png")
    assert predict.main(args) == 0


def test_find_overlap_names_the_split(fake_experiment, site_folder) -> None:
    from analysis.reading.experiment import Experiment
    from cxrmodels.data.overlap import find_overlap, source_fingerprint

    seen = Experiment(fake_experiment).seen_images()
    found = find_overlap(source_fingerprint(str(site_folder)), seen)
    manifest = pd.read_csv(fake_experiment / "split_manifest.csv")
    copied = manifest.loc[manifest["path"].str.endswith("img1.png"), "split"].iloc[0]
    assert len(found.images) == 1 and found.images["split"].iloc[0] == copied
    assert found.images["seen_path"].iloc[0].endswith("img1.png")


def _site_folders(root: Path) -> dict[str, str]:
    """Site folders for analysis.calibrate's bad input: labelled, empty, plain (no labels), one class only."""
    from cxrmodels.data.synthetic import write_synthetic_folder

    site = write_synthetic_folder(root / "site", 12, seed=5)
    (root / "empty").mkdir()
    plain = root / "plain"
    plain.mkdir()
    normals = root / "normals" / "NORMAL"
    normals.mkdir(parents=True)
    for i, image in enumerate(sorted(site.rglob("*.png"))[:4]):
        (plain / f"{i}.png").write_bytes(image.read_bytes())  # no sub-folders: classified without labels
    for i, image in enumerate(sorted(site.rglob("NORMAL/*"))[:3]):
        (normals / f"{i}{image.suffix}").write_bytes(image.read_bytes())
    return {"SITE": str(site), "EMPTY": str(root / "empty"), "PLAIN": str(plain), "NORMALS": str(root / "normals")}


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "/no/such/folder", "--out", "OUT"],
        ["retrain", "/no/such/folder", "--out", "OUT"],
        ["leaderboard", "/no/such/folder"],
        ["search_plots", "/no/such/folder", "--out", "OUT"],
        ["report", "EXP", "--out", "OUT", "--tta", "16"],
        ["report", "EXP", "--out", "OUT", "--external", "/no/such/site"],
        ["report", "EXP", "--out", "OUT", "--seeds", "0"],
        ["retrain", "EXP", "--out", "OUT", "--top-k", "0"],
        ["predict", "--model", "/no/such/model.pt", "IMG"],
        ["predict", "--model", "MODEL", "IMG", "--tta", "16"],
        ["export", "/no/such/model.pt", "--onnx", "OUT/m.onnx"],
        ["calibrate", "/no/such/model.pt", "--labelled", "SITE", "--out", "OUT/m.pt"],
        ["calibrate", "MODEL", "--labelled", "/no/such/site", "--out", "OUT/m.pt"],
        ["calibrate", "MODEL", "--labelled", "EMPTY", "--out", "OUT/m.pt"],
        ["calibrate", "MODEL", "--labelled", "PLAIN", "--out", "OUT/m.pt"],
        ["calibrate", "MODEL", "--labelled", "NORMALS", "--out", "OUT/m.pt"],
        ["calibrate", "MODEL", "--labelled", "SITE", "--out", "OUT"],
        ["calibrate", "OUT/m.onnx", "--labelled", "SITE", "--out", "OUT/m.pt"],
    ],
)
def test_analysis_commands_answer_bad_input_with_exit_2(argv, fake_experiment, tmp_path, capsys) -> None:
    from tests.test_predict import _save_tiny_checkpoint

    module = importlib.import_module(f"analysis.{argv[0]}")
    model = _save_tiny_checkpoint(tmp_path / "m.pt", "binary")
    subs = {"EXP": str(fake_experiment), "OUT": str(tmp_path / "out"), "MODEL": str(model), "IMG": str(tmp_path)}
    subs.update(_site_folders(tmp_path))
    (tmp_path / "out").mkdir()
    if argv[0] == "export":
        pytest.importorskip("onnx")
    code = module.main([subs.get(a, a.replace("OUT", subs["OUT"])) for a in argv[1:]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err


# ----------------------------------------------------------------------------------------------- search flags


def test_grid_presets_refuse_the_space_flags(capsys) -> None:
    from search import run

    assert run.main(["--preset", "study-b-grid", "--data", "synthetic", "--backbones", "resnet18"]) == 2
    assert "--backbones" in capsys.readouterr().err


def test_resume_refuses_flags_it_would_ignore(tmp_path, capsys) -> None:
    from search import run

    assert run.main(["--resume", str(tmp_path), "--time-budget-s", "60", "--no-dashboard"]) == 2
    assert "--time-budget-s would be ignored" in capsys.readouterr().err


def test_relative_data_is_saved_absolute(tmp_path, monkeypatch) -> None:
    from search.cli import build_config, build_parser

    (tmp_path / "xrays").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = build_config(build_parser().parse_args(["--data", "xrays", "--cache-dir", "cache"]))
    assert cfg.data == str(tmp_path / "xrays") and cfg.cache_dir == str(tmp_path / "cache")


# --------------------------------------------------------------------------------------------- the benchmarks


@pytest.mark.parametrize("name", [m.name for m in pkgutil.iter_modules([str(Path(__file__).parents[1] / "bench")])])
def test_every_benchmark_imports_and_parses_help(name: str, capsys) -> None:
    module = importlib.import_module(f"bench.{name}")
    if not hasattr(module, "main"):
        assert name in ("benchlib", "selection_signals"), f"bench.{name} has no main()"  # helpers of the others
        return
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0 and "usage" in capsys.readouterr().out
