"""Take a model out of PyTorch: an ONNX file that runs in ONNX Runtime with no PyTorch installed
(``python -m analysis.export``).

MODEL is any checkpoint ``analysis.predict`` reads (a search trial's, ``python -m cxrmodels.train``'s, the report's
``best_model.pt`` or ``ensemble.pt``). The graph takes ``image``: uint8 (batch, S, S), images already preprocessed
by ``cxrmodels.data.preprocess`` with the settings in the metadata; the batch axis is dynamic. Inside it scales to
[0, 1], applies the model's own input normalisation, averages the probabilities of the test-time views (the
checkpoint's, or ``--tta``) and returns ``probabilities`` (batch, classes), the same numbers as
``predict_proba``. The metadata (``metadata_props``, JSON strings) holds the class names, the preprocessing, the
decision threshold and the operating points chosen on validation, the calibration temperature (calibrated
probabilities are ``softmax(log p / T)``), the views averaged and the training settings.
``analysis.predict --model OUT.onnx`` reads it through :class:`analysis.inference.loading.OnnxModel`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis.inference.loading import (
    INPUT_NAME,
    ONNX_FORMAT,
    OUTPUT_NAME,
    decision_views,
    load_predictor,
    tta_mismatch,
)
from cxrmodels.train.checkpoint import ModelCheckpoint

OPSET = 20  # AffineGrid, which the test-time views need, is in opset 20


def export_onnx(model_path: str | Path, out: str | Path, *, tta: int | None = None, opset: int = OPSET) -> Path:
    """Write ``out`` from the checkpoint at ``model_path``; returns the path written."""
    import torch
    from torch import nn

    from cxrmodels.data.augment import TTA_VIEWS, to_float, tta_view
    from cxrmodels.train.loop import probabilities

    model, checkpoint = load_predictor(str(model_path), "cpu")
    views = int(tta if tta is not None else checkpoint.tta)
    if not 1 <= views <= len(TTA_VIEWS):
        raise ValueError(f"--tta must be 1 (off) to {len(TTA_VIEWS)} views, got {views}")

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = to_float(image)
            return torch.stack([probabilities(self.model(tta_view(x, v))) for v in range(views)]).mean(0)

    size = checkpoint.preprocess.size
    example = torch.zeros((2, size, size), dtype=torch.uint8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # torch.export-based exporter (the maintained one, the default from torch 2.9), the batch axis dynamic
    torch.onnx.export(
        Exported().eval(),
        (example,),
        str(out),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    fitted = {"decision_tta": decision_views(checkpoint)} if views != decision_views(checkpoint) else {}
    _write_metadata(out, checkpoint.replace(tta=views, info={**checkpoint.info, **fitted}), str(model_path))
    return out


def _write_metadata(path: Path, checkpoint: ModelCheckpoint, source: str) -> None:
    """The checkpoint's settings (``ModelCheckpoint.metadata``), each key a JSON string."""
    import onnx

    proto = onnx.load(str(path))
    entries = {
        "format": ONNX_FORMAT,
        "source": source,
        **{key: json.dumps(value) for key, value in checkpoint.metadata().items()},
    }
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (
        "chest X-ray classifier from cxr-tune: input 'image' uint8 (batch, S, S) preprocessed as in "
        "the 'preprocess' metadata; output 'probabilities' (batch, classes) in 'class_names' order"
    )
    onnx.save(proto, str(path))


def warn_tta_mismatch(model_path: str, tta: int) -> None:
    """The decision settings fitted for another number of views, named on stderr before exporting."""
    mismatch = tta_mismatch(load_predictor(model_path, "cpu")[1], tta)
    if mismatch:
        print(mismatch, file=sys.stderr)
