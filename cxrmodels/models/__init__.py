"""Backbone registry (name -> builder, timm underneath), the study B CNN, heads, freezing/unfreezing."""

from cxrmodels.models.registry import (
    CXRClassifier,
    PretrainedWeightsError,
    count_parameters,
    create_model,
    list_backbones,
    pretrained_source,
    register_backbone,
)

__all__ = [
    "CXRClassifier",
    "PretrainedWeightsError",
    "count_parameters",
    "create_model",
    "list_backbones",
    "pretrained_source",
    "register_backbone",
]
