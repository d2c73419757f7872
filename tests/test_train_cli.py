"""``python -m cxrmodels.train`` in-process: the run folder, and bad configuration as a short error, exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cxrmodels.train.__main__ import main

pytest.importorskip("cxrmodels.data.dataset", reason="the data pipeline's prepare() is not there yet")


@pytest.mark.slow
def test_smoke_run_writes_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(
        [
            "--data",
            "synthetic",
            "--smoke-test",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--task",
            "multiclass",
            "--lr",
            "0.002",
            "--no-pretrained",
        ]
    )
    assert rc == 0
    for name in ("config.json", "metrics.csv", "learning_curves.png", "best.pt", "skipped_files.csv"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "multiclass" and config["lr"] == 0.002 and config["epochs"] == 2
    assert config["class_names"] == ["NORMAL", "BACTERIAL", "VIRAL"] and config["preprocess"]["size"] == 48
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_recall_VIRAL" in rows[0]
    assert "epoch   2/2" in capsys.readouterr().out and config["data"] == "synthetic"

    # The checkpoint works in analysis.predict (it used to fail on an extra preprocessing key).
    from analysis import predict
    from cxrmodels.data.synthetic import write_synthetic_folder

    folder = write_synthetic_folder(tmp_path / "xrays", 12, seed=3, jpeg_every=0)
    assert predict.main(["--model", str(out / "best.pt"), str(folder), "--csv", str(tmp_path / "p.csv")]) == 0
    assert "3-class" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "-1"], "'lr'"),
        (["--backbone", "resnet19"], "valid choices"),
        (["--set", "learning_rate=0.1"], "unknown config key"),
        (["--set", "oops"], "KEY=VALUE"),
    ],
)
def test_bad_config_is_one_paragraph_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["--data", "synthetic", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_missing_data_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), "--smoke-test"])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
