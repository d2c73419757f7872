"""A saved model, ready to predict: a PyTorch checkpoint (``weights_only``: no code runs) or an ONNX file in ONNX
Runtime, with its settings; its probabilities calibrated as it was; and the test-time views its decision settings
were fitted with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cxrmodels.train.checkpoint import MODEL_FORMAT, ModelCheckpoint


class CheckpointError(RuntimeError):
    """The model checkpoint is missing or unusable (the CLI turns this into exit code 2)."""


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
        model = OnnxModel(path, device)
    except ImportError:
        raise CheckpointError(f"{path}: an ONNX model needs ONNX Runtime: pip install 'cxr-tune[onnx]'") from None
    except Exception as err:  # noqa: BLE001 - not a usable model file, whatever the reason: one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load ONNX model {path}: {reason[:300]}") from err
    return model, model.checkpoint


def calibrated(probs: np.ndarray, checkpoint: ModelCheckpoint) -> tuple[np.ndarray, str]:
    """The probabilities rescaled by the checkpoint's temperature (fitted on validation by analysis.report, or on a
    site's labels by analysis.calibrate) and, for a model adapted to a site (analysis.adapt), reweighted to the
    site's estimated prevalence; and a phrase saying which probabilities these are."""
    from cxrmodels.evaluate.calibration import apply_temperature, reweight_prior

    t = checkpoint.temperature
    if t is None:
        phrase = "probabilities as the model outputs them (not calibrated)"
    else:
        probs = apply_temperature(probs, float(t), checkpoint.class_names)
        phrase = f"probabilities calibrated by temperature scaling (T = {float(t):.2f})"
    weights = checkpoint.prior_weights
    if weights:
        probs = reweight_prior(probs, [weights[name] for name in checkpoint.class_names])
        prior = (checkpoint.info.get("site_adaptation") or {}).get("prior_site") or {}
        shown = ", ".join(f"{name} {prior[name]:.2f}" for name in checkpoint.class_names if name in prior)
        phrase += f", reweighted to the site's estimated prevalence ({shown or 'see the model info'})"
    return probs, phrase


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


ONNX_FORMAT = "cxr-tune.onnx/1"


INPUT_NAME = "image"


OUTPUT_NAME = "probabilities"


class OnnxModel:
    """An exported model in ONNX Runtime (no PyTorch): ``predict(images)`` gives the class probabilities."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != ONNX_FORMAT:
            raise ValueError(f"{path} is not an ONNX model written by analysis.export (no '{ONNX_FORMAT}' metadata)")
        stored = {key: json.loads(value) for key, value in meta.items() if key not in ("format", "source")}
        self.checkpoint = ModelCheckpoint.from_payload({**stored, "format": MODEL_FORMAT})

    def predict(self, images: Any, batch_size: int = 64) -> Any:
        import numpy as np

        images = np.ascontiguousarray(images, dtype=np.uint8)
        blocks = [
            self.session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0]
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(blocks) if blocks else np.zeros((0, len(self.checkpoint.class_names)))
