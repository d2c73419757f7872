"""The network a :class:`~cxrmodels.train.config.TrialConfig` describes, built from the model registry.

Both the trainer (:mod:`cxrmodels.train.loop`) and a saved checkpoint (:mod:`cxrmodels.train.checkpoint`) build
their network here, so neither imports the other for it.
"""

from __future__ import annotations

from cxrmodels.models.registry import CXRClassifier, create_model
from cxrmodels.train.config import TrialConfig


def build_model(cfg: TrialConfig) -> CXRClassifier:
    return create_model(
        cfg.backbone,
        cfg.num_outputs,
        head=cfg.head,
        head_hidden=cfg.head_hidden,
        dropout=cfg.dropout,
        in_chans=cfg.in_chans,
        pretrained=cfg.pretrained,
        pretrained_path=cfg.pretrained_path,
        image_size=cfg.image_size,
        standardize=cfg.standardize,
    )
