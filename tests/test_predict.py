"""`python -m analysis.predict` end to end on a tiny checkpoint and synthetic PNGs written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis import predict

SIZE = 48


def _save_tiny_checkpoint(
    path: Path, task: str, *, threshold: float | None = None, logit: float = 1.0, temperature: float | None = None
) -> Path:
    """A custom_cnn checkpoint in the models engineer's format, its last layer set to a constant logit so the
    predictions are known: binary P(PNEUMONIA) = sigmoid(logit); multiclass favours the last class (VIRAL)."""
    checkpoint = pytest.importorskip("cxrmodels.train.checkpoint", reason="checkpoint API not there yet")
    loop = pytest.importorskip("cxrmodels.train.loop", reason="training loop not there yet")
    config = pytest.importorskip("cxrmodels.train.config", reason="TrialConfig not there yet")
    preprocess = pytest.importorskip("cxrmodels.data.preprocess", reason="preprocessing not there yet")
    if not hasattr(checkpoint, "save_checkpoint") or not hasattr(checkpoint, "load_model"):
        pytest.skip("save_checkpoint/load_model not there yet")
    torch.manual_seed(0)
    cfg = config.TrialConfig(task=task, backbone="custom_cnn", image_size=SIZE, device="cpu")
    model = loop.build_model(cfg)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1e-3)  # keep a tiny gradient path for Grad-CAM, but a fixed decision
        last.bias.copy_(
            torch.linspace(-logit, logit, last.bias.numel())
            if last.bias.numel() > 1
            else torch.full_like(last.bias, logit)
        )
    names = ["NORMAL", "PNEUMONIA"] if task == "binary" else ["NORMAL", "BACTERIAL", "VIRAL"]
    payload = {
        "format": getattr(loop, "CHECKPOINT_FORMAT", "cxrmodels.checkpoint/1"),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "class_names": names,
        "preprocess": preprocess.PreprocessConfig(size=SIZE).to_dict(),
    }
    if threshold is not None:
        payload["threshold"] = threshold
    if temperature is not None:
        payload["temperature"] = temperature
    return checkpoint.save_checkpoint(path, payload)


def _write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = (rng.random((40, 48)) * 200).astype(np.uint8)
    img[10:20, 12:30] = 255
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def kaggle_folder(tmp_path: Path) -> Path:
    root = tmp_path / "chest_xray"
    _write_png(root / "NORMAL" / "IM-0001-0001.png", 1)
    _write_png(root / "NORMAL" / "IM-0002-0001.png", 2)
    _write_png(root / "PNEUMONIA" / "person1_bacteria_1.png", 3)
    _write_png(root / "PNEUMONIA" / "person2_virus_2.png", 4)
    (root / "PNEUMONIA" / "person3_virus_9.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


def test_predict_binary_folder_csv_and_gradcam(tmp_path, kaggle_folder, capsys):
    ckpt = _save_tiny_checkpoint(tmp_path / "binary.pt", "binary", logit=1.0)  # P(PNEUMONIA) = 0.731 everywhere
    single = tmp_path / "loose" / "scan.png"
    _write_png(single, 5)
    out_csv = tmp_path / "out" / "pred.csv"
    cams = tmp_path / "cams"
    rc = predict.main(
        ["--model", str(ckpt), str(kaggle_folder), str(single), "--csv", str(out_csv), "--gradcam-dir", str(cams)]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "person3_virus_9.png" in err and "skipped" in err  # the broken file, by name, with a reason
    assert "threshold 0.50" in out and "(default)" in out
    assert "accuracy 0.500" in out and "sensitivity 1.000" in out and "specificity 0.000" in out
    table = pd.read_csv(out_csv)
    assert len(table) == 5
    assert np.allclose(table["p_pneumonia"], 1 / (1 + np.exp(-1.0)), atol=0.01)
    assert np.allclose(table["p_NORMAL"] + table["p_PNEUMONIA"], 1.0)
    assert (table["decision"] == "PNEUMONIA").all()
    assert table["label"].isna().sum() == 1  # the loose file has no label
    pngs = sorted(cams.glob("*.png"))
    assert len(pngs) == 5
    img = cv2.imread(str(pngs[0]))
    assert img.shape == (SIZE, SIZE, 3)


def test_predict_shows_progress_on_request_and_keeps_stdout_clean(tmp_path, kaggle_folder, capsys, monkeypatch):
    ckpt = _save_tiny_checkpoint(tmp_path / "binary.pt", "binary", logit=1.0)
    assert predict.main(["--model", str(ckpt), str(kaggle_folder)]) == 0
    quiet = capsys.readouterr()
    assert "reading" not in quiet.err and "predicting" not in quiet.err  # no terminal: no bars
    monkeypatch.setenv("CXR_PROGRESS", "1")
    assert predict.main(["--model", str(ckpt), str(kaggle_folder)]) == 0
    shown = capsys.readouterr()
    assert "reading" in shown.err and "5/5" in shown.err and "predicting" in shown.err and "4/4" in shown.err
    assert shown.out == quiet.out  # the bars go to stderr only


def test_predict_threshold_from_checkpoint_and_override(tmp_path, kaggle_folder, capsys):
    ckpt = _save_tiny_checkpoint(tmp_path / "binary.pt", "binary", threshold=0.8, logit=1.0)
    out_csv = tmp_path / "p.csv"
    assert predict.main(["--model", str(ckpt), str(kaggle_folder / "NORMAL"), "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "threshold 0.80" in out and "(checkpoint)" in out
    assert (pd.read_csv(out_csv)["decision"] == "NORMAL").all()  # 0.731 < 0.80
    assert (
        predict.main(["--model", str(ckpt), str(kaggle_folder / "NORMAL"), "--csv", str(out_csv), "--threshold", "0.7"])
        == 0
    )
    assert (pd.read_csv(out_csv)["decision"] == "PNEUMONIA").all()  # 0.731 >= 0.70
    with pytest.raises(SystemExit) as exc:
        predict.main(["--model", str(ckpt), str(kaggle_folder), "--threshold", "1.5"])
    assert exc.value.code == 2


def test_predict_applies_the_checkpoints_temperature_and_says_so(tmp_path, kaggle_folder, capsys):
    """P(PNEUMONIA) = sigmoid(1.0) = 0.731 raw; the report's temperature 2 makes it sigmoid(0.5) = 0.622, and the
    stored threshold (chosen on the calibrated probabilities) decides on that."""
    ckpt = _save_tiny_checkpoint(tmp_path / "cal.pt", "binary", threshold=0.7, logit=1.0, temperature=2.0)
    out_csv = tmp_path / "p.csv"
    assert predict.main(["--model", str(ckpt), str(kaggle_folder / "NORMAL"), "--csv", str(out_csv)]) == 0
    assert "probabilities calibrated by temperature scaling (T = 2.00)" in capsys.readouterr().out
    table = pd.read_csv(out_csv)
    np.testing.assert_allclose(table["p_pneumonia"], 1 / (1 + np.exp(-0.5)), atol=2e-3)
    assert (table["decision"] == "NORMAL").all()  # 0.622 < 0.70; uncalibrated 0.731 would have said PNEUMONIA
    # a stored operating point decides instead of the F1-best threshold; an unknown name is a one-line error
    payload = torch.load(ckpt, weights_only=True)
    payload["operating_points"] = {"f1": {"threshold": 0.7}, "sensitivity>=0.95": {"threshold": 0.6, "rule": "r"}}
    torch.save(payload, ckpt)
    assert (
        predict.main(
            [
                "--model",
                str(ckpt),
                str(kaggle_folder / "NORMAL"),
                "--csv",
                str(out_csv),
                "--operating-point",
                "sensitivity>=0.95",
            ]
        )
        == 0
    )
    assert "operating point sensitivity>=0.95" in capsys.readouterr().out
    assert (pd.read_csv(out_csv)["decision"] == "PNEUMONIA").all()  # 0.622 >= 0.60
    assert predict.main(["--model", str(ckpt), str(kaggle_folder), "--operating-point", "specificity>=0.9"]) == 2
    assert "the checkpoint has 'f1', 'sensitivity>=0.95'" in capsys.readouterr().err
    raw = _save_tiny_checkpoint(tmp_path / "raw.pt", "binary", logit=1.0)
    assert predict.main(["--model", str(raw), str(kaggle_folder / "NORMAL")]) == 0
    assert "not calibrated" in capsys.readouterr().out


def test_predict_multiclass_reports_three_class_confusion(tmp_path, kaggle_folder, capsys):
    ckpt = _save_tiny_checkpoint(tmp_path / "three.pt", "multiclass", logit=3.0)  # always VIRAL
    assert predict.main(["--model", str(ckpt), str(kaggle_folder)]) == 0
    out = capsys.readouterr().out
    assert "3-class accuracy (at threshold 0.50): 0.250" in out  # 1 viral of 4 readable images
    assert "majority-class collapse" in out
    assert "BACTERIAL" in out and "VIRAL" in out


@pytest.mark.parametrize("content", [None, b"this is not a checkpoint"])
def test_predict_bad_checkpoint_is_one_line_exit_2(tmp_path, kaggle_folder, capsys, content):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    assert predict.main(["--model", str(path), str(kaggle_folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(path) in err and len(err.splitlines()) == 1


def test_predict_test_time_augmentation(tmp_path, kaggle_folder, capsys):
    ckpt = _save_tiny_checkpoint(tmp_path / "binary.pt", "binary", logit=1.0)
    assert predict.main(["--model", str(ckpt), str(kaggle_folder), "--tta", "3"]) == 0
    assert "test-time augmentation: 3 views averaged" in capsys.readouterr().out
    assert predict.main(["--model", str(ckpt), str(kaggle_folder), "--tta", "99"]) == 2
    assert "--tta" in capsys.readouterr().err
