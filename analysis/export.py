"""Take a model out of PyTorch: an ONNX file that runs in ONNX Runtime with no PyTorch installed.

    python -m analysis.export MODEL.pt --onnx OUT.onnx [--tta N] [--opset 20]

MODEL is any checkpoint ``analysis.predict`` reads (a search trial's, ``python -m cxrmodels.train``'s, the report's
``best_model.pt`` or ``ensemble.pt``). The graph takes ``image``: uint8 (batch, S, S), images already preprocessed
by ``cxrmodels.data.preprocess`` with the settings in the metadata; the batch axis is dynamic. Inside it scales to
[0, 1], applies the model's own input normalisation, averages the probabilities of the test-time views (the
checkpoint's, or ``--tta``) and returns ``probabilities`` (batch, classes), the same numbers as
``predict_proba``. The metadata (``metadata_props``, JSON strings) holds the class names, the preprocessing, the
decision threshold and the operating points chosen on validation, the calibration temperature (calibrated
probabilities are ``softmax(log p / T)``), the views averaged and the training settings.
``analysis.predict --model OUT.onnx`` uses it the way it uses a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrmodels.train.checkpoint import MODEL_FORMAT, ModelCheckpoint

ONNX_FORMAT = "cxr-tune.onnx/1"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
OPSET = 20  # AffineGrid, which the test-time views need, is in opset 20


def export_onnx(model_path: str | Path, out: str | Path, *, tta: int | None = None, opset: int = OPSET) -> Path:
    """Write ``out`` from the checkpoint at ``model_path``; returns the path written."""
    import torch
    from torch import nn

    from analysis.predict import decision_views, load_predictor
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


def warn_tta_mismatch(model_path: str, tta: int) -> None:
    """The decision settings fitted for another number of views, named on stderr before exporting."""
    from analysis.predict import load_predictor, tta_mismatch

    mismatch = tta_mismatch(load_predictor(model_path, "cpu")[1], tta)
    if mismatch:
        print(mismatch, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint (.pt) saved by training, the search or the report")
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--tta",
        type=int,
        default=None,
        metavar="N",
        help="test-time views averaged inside the graph (default: the checkpoint's, which its "
        "threshold was chosen with, else 1)",
    )
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.predict import CheckpointError

    try:
        import onnx  # noqa: F401 - the extra, checked before any work
    except ImportError:
        print("error: ONNX export needs the onnx extra: pip install 'cxr-tune[onnx]'", file=sys.stderr)
        return 2
    try:
        if args.tta is not None:
            warn_tta_mismatch(args.model, args.tta)
        path = export_onnx(args.model, args.onnx, tta=args.tta, opset=args.opset)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"ONNX model written to {path} ({path.stat().st_size / 1e6:.1f} MB); use it with "
        f"python -m analysis.predict --model {path} IMAGES..."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
