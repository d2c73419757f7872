"""A saved model's decision moved to a site (analysis.site): on probabilities with an injected site shift (the
site's normals score like pneumonia, and the site has another prevalence), recalibration on the site's labels
restores normal recall, meets a requested specificity there, and estimates its worth only on images it did not
choose on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.scoring.operating_points import Requirement
from analysis.site.recalibrate import (
    SiteLabels,
    f1_rule,
    figures,
    label_curve,
    out_of_bag,
    patient_draw,
    recalibrate,
    summarise_draws,
)
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.train.checkpoint import ModelCheckpoint
from cxrmodels.train.config import TrialConfig


def shifted_site(n_patients: int = 120, pneumonia: float = 0.6, shift: float = 2.5, seed: int = 0):
    """Labels (1-3 images per patient), the patients, and a binary model's raw probabilities whose logits separate
    the classes (AUROC about 0.95) but sit ``shift`` higher at this site: at 0.5 most normals read as pneumonia."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 4, n_patients)
    sick = rng.random(n_patients) < pneumonia
    labels = np.repeat(np.where(sick, "BACTERIAL", "NORMAL"), per)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per)
    logit = np.where(labels == "NORMAL", -1.2, 1.2) * 2 + rng.normal(0, 1.3, len(labels)) + shift
    p = 1 / (1 + np.exp(-logit))
    return labels.tolist(), patients, np.stack([1 - p, p], 1)


def checkpoint(threshold: float = 0.5, temperature: float | None = 1.0) -> ModelCheckpoint:
    cfg = TrialConfig(task="binary", backbone="custom_cnn", image_size=48, device="cpu")
    return ModelCheckpoint(cfg, ("NORMAL", "PNEUMONIA"), PreprocessConfig(size=48), threshold=threshold,
                           temperature=temperature, info={"decision_tta": 1})  # fmt: skip


def test_recalibration_restores_normal_recall_and_meets_a_site_specificity() -> None:
    labels, patients, raw = shifted_site()
    res = recalibrate(checkpoint(), labels, raw, patients, source="site", tta=2,
                      requirements=[Requirement(min_specificity=0.9)], draws=30)  # fmt: skip
    before, after = res.before_after.iloc[0], res.before_after.iloc[1]
    assert before["specificity"] < 0.6 and after["specificity"] > before["specificity"] + 0.2
    assert after["accuracy"] > before["accuracy"] and res.checkpoint.threshold > 0.5
    point = res.checkpoint.operating_points["specificity>=0.9"]
    y = np.array([label != "NORMAL" for label in labels], dtype=int)
    p_site = 1 / (1 + np.exp(-np.log(raw[:, 1] / raw[:, 0]) / res.checkpoint.temperature))
    assert figures(y, p_site, point["threshold"])["specificity"] >= 0.9 and point["site_specificity"] >= 0.9
    site = res.checkpoint.info["site_labels"]
    assert site["labels_read"] and site["images"] == len(labels) and site["patients"] == 120
    assert res.checkpoint.tta == 2 and "decision_tta" not in res.checkpoint.info
    assert res.checkpoint.info["threshold_chosen_on"] == "site labels"


def test_estimates_score_only_patients_they_did_not_choose_on() -> None:
    labels, patients, raw = shifted_site(seed=1)
    site = SiteLabels(np.array([lab != "NORMAL" for lab in labels], dtype=int), raw[:, 1], patients)
    rng = np.random.default_rng(0)
    for n in (25, 50, 100):
        mask = patient_draw(site.patients, rng, n)
        assert mask.sum() >= n and set(patients[mask]).isdisjoint(patients[~mask])  # whole patients only
    curve = label_curve(site, f1_rule, draws=8)
    assert sorted(curve["labelled"].unique()) == [25, 50, 100] and (curve["images_drawn"] >= curve["labelled"]).all()
    oob = out_of_bag(site, f1_rule, draws=25)
    assert 20 <= len(oob) <= 25 and oob["specificity"].between(0, 1).all()
    summary = summarise_draws(curve, by=["labelled"])
    assert (summary["accuracy_low"] <= summary["accuracy_mean"]).all() and (summary["draws"] == 8).all()


def test_one_class_of_site_labels_is_refused() -> None:
    labels, patients, raw = shifted_site()
    normal = np.array(labels) == "NORMAL"
    with pytest.raises(ValueError, match="NORMAL and pneumonia"):
        recalibrate(checkpoint(), list(np.array(labels)[normal]), raw[normal], patients[normal], source="s", tta=1)


def test_keep_temperature_keeps_it_and_moves_only_the_threshold() -> None:
    labels, patients, raw = shifted_site(seed=2)
    res = recalibrate(checkpoint(temperature=1.7), labels, raw, patients, source="s", tta=1, refit_temperature=False)
    assert res.checkpoint.temperature == 1.7 and res.checkpoint.threshold != 0.5


# ----------------------------------------------------------------------------------------------- without labels


def calibrated_posteriors(n: int, prior: float, source_prior: float, seed: int = 0):
    """Labels drawn at the site's ``prior`` and the posteriors of a model calibrated where pneumonia had
    ``source_prior``: Gaussian class-conditional scores, Bayes' rule at the source prevalence."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(int)
    score = rng.normal(np.where(y == 1, 1.0, -1.0), 1.0)
    likelihood_ratio = np.exp(2.0 * score)  # N(1,1) / N(-1,1)
    odds = likelihood_ratio * source_prior / (1 - source_prior)
    p = odds / (1 + odds)
    return y, np.stack([1 - p, p], 1)


@pytest.mark.parametrize(("site", "source"), [(0.63, 0.74), (0.4, 0.74), (0.8, 0.5)])
def test_em_recovers_the_site_prevalence(site: float, source: float) -> None:
    from cxrmodels.evaluate.calibration import em_prior, reweight_prior

    y, probs = calibrated_posteriors(3000, site, source)
    estimate, iterations = em_prior(probs, np.array([1 - source, source]))
    assert abs(estimate[1] - y.mean()) < 0.05 and iterations < 1000
    moved = reweight_prior(probs, estimate / np.array([1 - source, source]))
    assert abs(moved[:, 1].mean() - estimate[1]) < 1e-6  # at the fixed point the posteriors average to the prior
    assert np.allclose(moved.sum(1), 1.0)


def test_source_prior_comes_from_the_model_or_the_experiment() -> None:
    from analysis.site.adapt import source_prior

    recorded = checkpoint().replace(info={"class_prior": {"NORMAL": 203, "PNEUMONIA": 589}})
    assert source_prior(recorded) == pytest.approx([203 / 792, 589 / 792])
    assert source_prior(checkpoint(), {"NORMAL": 1, "PNEUMONIA": 3}) == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError, match="--experiment"):
        source_prior(checkpoint())


@pytest.fixture(scope="module")
def bn_model(tmp_path_factory):
    """resnet10t (BatchNorm) trained 4 epochs on 240 synthetic X-rays at 48 px, its test split (preprocessed), and
    the model saved as a checkpoint."""
    import torch

    from cxrmodels.data.dataset import prepare
    from cxrmodels.data.records import class_names
    from cxrmodels.train.loop import TrainData, Trainer

    torch.manual_seed(0)
    data = prepare("synthetic:240", PreprocessConfig(size=48), seed=0)
    train = TrainData(*data.arrays("train", "binary"), *data.arrays("val", "binary"), class_names("binary"),
                      data.preprocess.to_dict())  # fmt: skip
    settings = {"backbone": "resnet10t", "optimizer": "adam", "lr": 3e-3, "batch_size": 16, "epochs": 4, "seed": 0}
    settings["dropout"] = 0.2
    cfg = TrialConfig.from_dict(
        {**settings, "task": "binary", "image_size": 48, "early_stopping_patience": 0, "device": "cpu"}
    )
    trainer = Trainer(cfg, train)
    while not trainer.done:
        trainer.run_epoch()
    from cxrmodels.evaluate.calibration import score_quantiles
    from cxrmodels.train.loop import predict_proba

    path = tmp_path_factory.mktemp("bn") / "model.pt"
    quantiles = score_quantiles(predict_proba(trainer.model, data.arrays("val", "binary")[0])[:, 1])
    info = {"class_prior": {"NORMAL": 1, "PNEUMONIA": 1}, "val_score_quantiles": quantiles}
    trainer.checkpoint().replace(threshold=0.5, info=info).save(path)
    return trainer.model, data.arrays("test", "binary"), path


def darker(x: np.ndarray) -> np.ndarray:
    """Another acquisition that preprocessing does not even out: lower contrast and brighter, after CLAHE."""
    return np.clip(x.astype(np.float32) * 0.55 + 90, 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_adabn_recovers_the_ranking_an_intensity_shift_destroys(bn_model) -> None:
    import copy

    from analysis.site.adapt import adapt_batchnorm
    from cxrmodels.evaluate import roc_auc
    from cxrmodels.train.loop import predict_proba

    model, (x, y), _ = bn_model
    clean = roc_auc(y, predict_proba(model, x)[:, 1])
    shifted = roc_auc(y, predict_proba(model, darker(x))[:, 1])
    adapted = copy.deepcopy(model)
    assert adapt_batchnorm(adapted, darker(x)) > 0  # the site's images only: no label is passed
    recovered = roc_auc(y, predict_proba(adapted, darker(x))[:, 1])
    # 40 test images: AdaBN must win back most of what the shift cost (measured: about 3/4 on two seeds)
    assert clean > 0.7 and shifted < clean - 0.15, (clean, shifted)
    assert recovered - shifted > 0.6 * (clean - shifted), (clean, shifted, recovered)


@pytest.mark.slow
def test_adapt_cli_writes_a_model_that_records_what_it_used(bn_model, tmp_path, capsys) -> None:
    from analysis import adapt, predict
    from cxrmodels.data.synthetic import write_synthetic_folder

    _, _, path = bn_model
    site = write_synthetic_folder(tmp_path / "site", 30, seed=9)
    out = tmp_path / "adapted.pt"
    argv = [str(path), "--images", str(site), "--out", str(out), "--method", "bn", "--method", "prior"]
    assert adapt.main(argv) == 0
    from cxrmodels.train.checkpoint import ModelCheckpoint

    adapted = ModelCheckpoint.load(out)
    record = adapted.info["site_adaptation"]
    assert record["labels_read"] is False and record["images"] == 30 and record["methods"] == ["bn", "prior"]
    assert record["bn_layers"] > 0 and set(adapted.prior_weights) == {"NORMAL", "PNEUMONIA"}
    assert predict.main(["--model", str(out), str(site)]) == 0
    assert "reweighted to the site's estimated prevalence" in capsys.readouterr().out
    few = tmp_path / "few" / "NORMAL"
    few.mkdir(parents=True)
    for image in sorted(site.rglob("*.png"))[:5]:
        (few / image.name).write_bytes(image.read_bytes())
    assert adapt.main([str(path), "--images", str(tmp_path / "few"), "--out", str(out)]) == 2
    assert "adapting needs 20" in capsys.readouterr().err


def test_adapt_refuses_bn_for_a_network_without_batchnorm(tmp_path, capsys) -> None:
    from analysis import adapt
    from cxrmodels.data.synthetic import write_synthetic_folder
    from tests.test_predict import _save_tiny_checkpoint  # custom_cnn: no BatchNorm

    model = _save_tiny_checkpoint(tmp_path / "m.pt", "binary")
    site = write_synthetic_folder(tmp_path / "site", 24, seed=3)
    assert adapt.main([model.as_posix(), "--images", str(site), "--out", str(tmp_path / "a.pt"), "--method", "bn"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one sentence, the command's last word
    assert last.startswith("error: ") and "no BatchNorm layer" in last and "--method prior" in last


def test_alignment_restores_the_validation_operating_point_after_an_acquisition_shift() -> None:
    """Prediction alignment: at a site whose acquisition inflates every P(pneumonia) (same class mix), the
    validation threshold calls most normals pneumonia; the aligned one sends the validation share to NORMAL again."""
    from cxrmodels.evaluate import binary_metrics
    from cxrmodels.evaluate.calibration import align_threshold, score_quantiles

    rng = np.random.default_rng(0)

    def scores(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.7).astype(int)
        return y, 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 3 * (y - 0.5) * 2)))

    y_val, p_val = scores(2000)
    y_site, p_site = scores(2000)
    p_site = p_site**0.2  # another detector: every X-ray looks more like pneumonia, the ranking unchanged
    before = binary_metrics(y_site, p_site, 0.5)["specificity"]
    found = align_threshold(score_quantiles(p_val), p_site, 0.5)
    after = binary_metrics(y_site, p_site, found["threshold"])
    target = binary_metrics(y_val, p_val, 0.5)
    assert before < 0.5 and abs(after["specificity"] - target["specificity"]) < 0.05, (before, after, target)
    assert abs(found["normal_share"] - np.mean(p_val < 0.5)) < 0.01


@pytest.mark.slow
def test_site_versions_side_by_side_and_predict_adapt(bn_model, tmp_path, capsys) -> None:
    from analysis import predict, site_versions
    from cxrmodels.data.synthetic import write_synthetic_folder
    from cxrmodels.train.checkpoint import ModelCheckpoint

    _, _, path = bn_model
    site = write_synthetic_folder(tmp_path / "site", 40, seed=21)
    held = write_synthetic_folder(tmp_path / "held", 30, seed=22)
    out = tmp_path / "versions"
    argv = [str(path), "--site", str(site), "--external", str(held), "--out", str(out), "--labels", "25"]
    assert site_versions.main(argv) == 0
    table = pd.read_csv(out / "site_versions.csv")
    assert list(table["version"]) == ["as trained", "adapted (no labels)", "recalibrated"]
    assert (table["images"] == 30).all() and table["auc"].between(0, 1).all()
    recalibrated = ModelCheckpoint.load(out / "model_recalibrated.pt")
    assert 25 <= recalibrated.info["site_labels"]["images"] < 40  # 25 images drawn by whole patients
    adapted = ModelCheckpoint.load(out / "model_adapted.pt")
    assert adapted.info["site_adaptation"]["methods"] == ["align"] and adapted.info["site_adaptation"]["images"] == 40
    capsys.readouterr()
    # the scored images must be held out from the site's own: the same folder twice is refused in one sentence
    argv = [str(path), "--site", str(site), "--external", str(site), "--out", str(out)]
    assert site_versions.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one sentence, the command's last word
    assert last.startswith("error: --external") and "held out" in last
    # predict --adapt: the threshold aligned on the images given, when there are enough
    assert predict.main(["--model", str(path), "--adapt", str(site)]) == 0
    assert "operating point aligned" in capsys.readouterr().out
    few = tmp_path / "few"
    few.mkdir()
    for image in sorted(site.rglob("*.png"))[:5]:
        (few / image.name).write_bytes(image.read_bytes())
    assert predict.main(["--model", str(path), "--adapt", str(few)]) == 0
    assert "not adapted: 5 readable images, adapting needs 20" in capsys.readouterr().err


def test_align_without_a_validation_distribution_says_what_to_give(tmp_path, capsys) -> None:
    from analysis import adapt
    from cxrmodels.data.synthetic import write_synthetic_folder
    from tests.test_predict import _save_tiny_checkpoint

    model = _save_tiny_checkpoint(tmp_path / "m.pt", "binary")
    site = write_synthetic_folder(tmp_path / "site", 24, seed=3)
    assert adapt.main([model.as_posix(), "--images", str(site), "--out", str(tmp_path / "a.pt")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no validation score distribution" in last and "--experiment" in last


def test_site_versions_of_two_best_models_do_not_overwrite_each_other() -> None:
    from analysis.site_versions import output_stems

    models = ["r/retrain_binary/best_model.pt", "r/retrain_multiclass/best_model.pt", "other/site_b.pt"]
    assert output_stems(models) == ["retrain_binary_best_model", "retrain_multiclass_best_model", "site_b"]
