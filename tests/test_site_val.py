"""Selection that sees the site (issue 28, item 1): ``search.run --site-val FOLDER`` and ``--stress-val`` score every
trial on a second set at every epoch, beside validation, and the search may select on it (``site_auc``,
``stress_auc``, ``worst_auc``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrmodels.data.stress import STRESS_KINDS, stress_images
from cxrmodels.data.synthetic import write_synthetic_folder
from search import config as sc
from search import run
from search.datasets import build_datasets
from search.experiment import SearchConfigError
from tests.conftest import TINY_SEARCH


def search_config(tmp_path: Path, **settings) -> sc.SearchConfig:
    raw = sc.apply_overrides(sc.load_preset("smoke"), {"synthetic_n": 80, "cache_dir": str(tmp_path / "cache")})
    return sc.validate(sc.apply_overrides(raw, settings))


def test_stress_images_change_every_image_by_one_seeded_acquisition_change() -> None:
    rng = np.random.default_rng(0)
    images = (rng.random((25, 48, 48)) * 200 + 20).astype(np.uint8)
    stressed, kinds = stress_images(images, seed=3)
    again, _ = stress_images(images, seed=3)
    assert stressed.dtype == np.uint8 and stressed.shape == images.shape
    assert np.array_equal(stressed, again)  # the same stressed set for every trial
    assert sorted(set(kinds)) == sorted(STRESS_KINDS) and all(kinds.count(k) == 5 for k in STRESS_KINDS)
    changed = np.abs(stressed.astype(int) - images).mean(axis=(1, 2))
    assert (changed > 1).all(), dict(zip(kinds, changed.round(1), strict=True))
    with pytest.raises(ValueError, match="uint8"):
        stress_images(images.astype(np.float32))


def test_site_and_stress_sets_reach_every_trial(tmp_path: Path) -> None:
    site = write_synthetic_folder(tmp_path / "site", 40, seed=7)
    cfg = search_config(tmp_path, site_val=str(site), stress_val=True, objective="worst_auc")
    data = build_datasets(cfg, str(tmp_path), "exp")[cfg.image_sizes[0]].train_data()  # as a trial reads it
    site_x, site_y = data.scored["site"]
    stress_x, stress_y = data.scored["stress"]
    assert len(site_x) == 40 and set(site_y) == {0, 1} and site_x.shape[1:] == data.val_x.shape[1:]
    assert stress_x.shape == data.val_x.shape and not np.array_equal(stress_x, data.val_x)
    assert np.array_equal(stress_y, (data.val_y != 0).astype(int))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"objective": "site_auc"}, "objective site_auc needs the set it is scored on: give --site-val"),
        ({"objective": "worst_auc"}, "give --site-val or --stress-val"),
        ({"objective": "site_accuracy"}, "must be a reported metric"),
        ({"site_val": "/no/such/site"}, "--site-val /no/such/site: no such file or folder"),
    ],
)
def test_site_settings_are_checked_before_any_work(tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(SearchConfigError, match=message):
        search_config(tmp_path, **settings)


def test_a_site_folder_the_auroc_cannot_use_is_refused_in_one_sentence(tmp_path: Path) -> None:
    site = write_synthetic_folder(tmp_path / "site", 30, seed=7)
    for image in (site / "train" / "PNEUMONIA").iterdir():
        image.unlink()
    cfg = search_config(tmp_path, site_val=str(site))
    with pytest.raises(SearchConfigError, match=r"all \d+ readable image\(s\) are NORMAL; a site AUROC needs"):
        build_datasets(cfg, str(tmp_path), "exp")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(next((site / "train" / "NORMAL").iterdir()).read_bytes())
    with pytest.raises(SearchConfigError, match=f"--site-val {flat}: "):
        build_datasets(search_config(tmp_path, site_val=str(flat)), str(tmp_path), "exp")


def test_a_site_folder_holding_training_images_is_refused(tmp_path: Path) -> None:
    data = write_synthetic_folder(tmp_path / "data", 60, seed=1)
    site = write_synthetic_folder(tmp_path / "site", 30, seed=2)
    shared = next((data / "train" / "PNEUMONIA").iterdir())
    (site / "train" / "PNEUMONIA" / "copy.png").write_bytes(shared.read_bytes())
    cfg = search_config(tmp_path, data=str(data), site_val=str(site), synthetic_n=None)
    with pytest.raises(SearchConfigError, match="byte-identical to images of the experiment"):
        build_datasets(cfg, str(tmp_path), "exp")


@pytest.mark.ray
@pytest.mark.slow
def test_site_columns_reach_results_and_the_objective_selects_on_them(tmp_path: Path, capsys) -> None:
    import ray

    site = write_synthetic_folder(tmp_path / "site", 40, seed=7)
    argv = [*TINY_SEARCH, "--storage-path", str(tmp_path), "--name", "site", "--cache-dir", str(tmp_path / "c")]
    argv += ["--site-val", str(site), "--stress-val", "--objective", "worst_auc"]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        code = run.main(argv)
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tmp_path / "site"
    results = pd.read_csv(experiment / "results.csv")
    for column in ("best_epoch_val_auc", "best_epoch_site_auc", "best_epoch_stress_auc", "best_epoch_worst_auc"):
        assert results[column].notna().all(), column
    assert np.allclose(results["best_objective"], results["best_epoch_worst_auc"])
    progress = pd.concat(pd.read_csv(p) for p in experiment.glob("trial_*/progress.csv"))
    lowest = progress[["val_binary_auc", "site_auc", "stress_auc"]].min(axis=1)
    assert np.allclose(progress["worst_auc"], lowest)
    from search.experiment import SearchConfig
    from search.tuner import build_reporter

    reporter = build_reporter(SearchConfig.load(experiment))  # the progress table shows the site beside the objective
    assert reporter._metric_columns["site_auc"] == "last_site_auc"
    assert f"site_val: {site}" in (experiment / "search_config.yaml").read_text()


def test_signal_table_ranks_signals_by_how_well_they_predict_the_site() -> None:
    from bench.selection_signals import signal_table

    site = np.array([0.70, 0.80, 0.90, 0.95, 0.85])
    signals = pd.DataFrame(
        {
            "trial_id": list("abcde"),
            "val_auc": [0.99, 0.98, 0.97, 0.96, 0.95],  # the reverse of the site's order but for one: picks the worst
            "val_binary_auc": site + 0.01,  # the site's own order: picks the best
            "stress_auc": [0.5, 0.6, 0.8, 0.7, 0.9],
            "site_auc": site,
        }
    )
    table = signal_table(signals)
    assert table["val_binary_auc"]["spearman"] == 1.0 and table["val_binary_auc"]["regret"] == 0.0
    assert table["val_auc"]["picked_trial"] == "a" and table["val_auc"]["regret"] == pytest.approx(0.25)
    assert table["val_auc"]["spearman"] < 0 < table["stress_auc"]["spearman"] < 1
    assert table["trials"] == 5 and table["best_site_auc"] == 0.95
