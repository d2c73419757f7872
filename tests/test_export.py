"""`python -m analysis.export`: ONNX files whose probabilities match PyTorch's, with their metadata, used by
`analysis.predict` with no PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnx", reason="the onnx extra: pip install 'cxr-tune[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'cxr-tune[onnx]'")
torch = pytest.importorskip("torch")

from analysis import export, predict  # noqa: E402
from analysis.inference import loading  # noqa: E402
from cxrmodels.data.preprocess import PreprocessConfig  # noqa: E402
from cxrmodels.train.checkpoint import load_model, save_checkpoint  # noqa: E402
from cxrmodels.train.config import TrialConfig  # noqa: E402
from cxrmodels.train.loop import build_model, predict_proba  # noqa: E402
from tests.test_predict import _write_png  # noqa: E402

# A process in which `import torch` fails, as on a machine without PyTorch.
NO_TORCH = """import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTorch())
from analysis import predict
"""
SIZE = 48
ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path, backbone: str, task: str, **extra) -> Path:
    torch.manual_seed(0)
    cfg = TrialConfig(task=task, backbone=backbone, image_size=SIZE, device="cpu")
    model = build_model(cfg)
    names = ["NORMAL", "PNEUMONIA"] if task == "binary" else ["NORMAL", "BACTERIAL", "VIRAL"]
    return save_checkpoint(
        path,
        {
            "format": "cxrmodels.checkpoint/1",
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "class_names": names,
            "preprocess": PreprocessConfig(size=SIZE).to_dict(),
            **extra,
        },
    )


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["custom_cnn", "resnet10t"])
def test_onnx_probabilities_equal_pytorch_and_carry_the_metadata(tmp_path, backbone) -> None:
    points = {"f1": {"threshold": 0.4, "rule": "F1-best on validation"}}
    ckpt = _checkpoint(
        tmp_path / "m.pt", backbone, "multiclass", threshold=0.4, temperature=1.5, tta=2, operating_points=points
    )
    out = tmp_path / "m.onnx"
    assert export.main([str(ckpt), "--onnx", str(out)]) == 0
    model, _ = load_model(ckpt)
    images = np.random.default_rng(1).integers(0, 256, (5, SIZE, SIZE), dtype=np.uint8)
    expected = predict_proba(model, images, tta=2)  # the checkpoint's two views, averaged inside the graph
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (images, images[:1]):  # a dynamic batch axis
        got = session.run([loading.OUTPUT_NAME], {loading.INPUT_NAME: batch})[0]
        assert got.shape == (len(batch), 3)
        np.testing.assert_allclose(got, expected[: len(batch)], atol=1e-4)
    assert expected.std(axis=0).max() > 1e-4  # the images give different outputs: the comparison means something
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["format"] == loading.ONNX_FORMAT and json.loads(meta["tta"]) == 2
    assert json.loads(meta["class_names"]) == ["NORMAL", "BACTERIAL", "VIRAL"]
    assert json.loads(meta["threshold"]) == 0.4 and json.loads(meta["temperature"]) == 1.5
    assert json.loads(meta["operating_points"]) == points
    assert PreprocessConfig.from_dict(json.loads(meta["preprocess"])) == PreprocessConfig(size=SIZE)
    assert json.loads(meta["config"])["backbone"] == backbone


@pytest.mark.slow
def test_predict_uses_the_onnx_file_like_the_checkpoint_without_pytorch(tmp_path, capsys) -> None:
    folder = tmp_path / "xrays"
    for i, name in enumerate(["NORMAL/a.png", "NORMAL/b.png", "PNEUMONIA/c_bacteria_1.png", "PNEUMONIA/d_virus_2.png"]):
        _write_png(folder / name, i)
    ckpt = _checkpoint(tmp_path / "m.pt", "custom_cnn", "binary", threshold=0.45, temperature=1.3)
    onnx_path = tmp_path / "m.onnx"
    assert export.main([str(ckpt), "--onnx", str(onnx_path)]) == 0
    assert predict.main(["--model", str(ckpt), str(folder), "--csv", str(tmp_path / "pt.csv")]) == 0
    # a deployment without PyTorch: the same command in a process where importing torch fails
    code = NO_TORCH + (
        f"rc = predict.main(['--model', {str(onnx_path)!r}, {str(folder)!r}, '--csv', "
        f"{str(tmp_path / 'onnx.csv')!r}])\nassert 'torch' not in sys.modules\nsys.exit(rc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr
    assert "threshold 0.45" in run.stdout and "T = 1.30" in run.stdout
    a, b = pd.read_csv(tmp_path / "pt.csv"), pd.read_csv(tmp_path / "onnx.csv")
    np.testing.assert_allclose(a["p_pneumonia"], b["p_pneumonia"], atol=1e-4)
    assert a["decision"].tolist() == b["decision"].tolist() and a["path"].tolist() == b["path"].tolist()
    assert predict.main(["--model", str(onnx_path), str(folder), "--tta", "2"]) == 2  # its views are in the graph
    assert "export it again with python -m analysis.export --tta 2" in capsys.readouterr().err


def test_onnx_problems_are_one_line_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert predict.main(["--model", str(bad), str(tmp_path)]) == 2
    assert "cannot load ONNX model" in capsys.readouterr().err
    assert export.main([str(tmp_path / "missing.pt"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
