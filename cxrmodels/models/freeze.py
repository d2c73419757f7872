"""Freezing the backbone and unfreezing its last stages, with one generic rule for every backbone.

The stages come from the backbone's own ``group_matcher(coarse=True)`` (timm's convention, also implemented by
``CustomCNN``), so "the last N blocks" means the same thing for a ResNet, a DenseNet or the small CNN without
per-architecture layer indices like Keras' "from layer 540 on".
"""

from __future__ import annotations

import logging

from timm.models import group_parameters
from torch import nn

logger = logging.getLogger(__name__)


def backbone_stages(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone grouped by stage, input side first.

    A trailing group made only of normalisation layers (timm's final ``norm`` after the last stage) is merged into
    the last stage, so unfreezing one block also unfreezes the norm right after it.
    """
    if not hasattr(backbone, "group_matcher"):
        return [[name] for name, _ in backbone.named_parameters()]
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    stages = [list(names) for _, names in sorted(groups.items())]
    if len(stages) > 1 and all(_is_norm_param(backbone, name) for name in stages[-1]):
        stages[-2].extend(stages.pop())
    return stages


def _is_norm_param(root: nn.Module, param_name: str) -> bool:
    owner = root.get_submodule(param_name.rpartition(".")[0])
    return isinstance(owner, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm)


def set_trainable(model: nn.Module, finetune_blocks: int) -> dict[str, int]:
    """Head always trainable; of the backbone, the last ``finetune_blocks`` stages (-1: all, 0: none).

    Returns and logs the trainable / total parameter counts.
    """
    backbone: nn.Module = model.backbone
    for p in model.parameters():
        p.requires_grad_(True)
    stages = backbone_stages(backbone)
    if finetune_blocks != -1:
        keep = set() if finetune_blocks == 0 else {n for stage in stages[-finetune_blocks:] for n in stage}
        for name, p in backbone.named_parameters():
            p.requires_grad_(name in keep)
    counts = trainable_counts(model)
    logger.info(
        "trainable parameters: %s of %s (backbone stages unfrozen: %s of %d)",
        f"{counts['trainable_params']:,}",
        f"{counts['total_params']:,}",
        "all" if finetune_blocks == -1 else min(finetune_blocks, len(stages)),
        len(stages),
    )
    return counts


def freeze_backbone(model: nn.Module) -> dict[str, int]:
    """Only the head trains (transfer learning's first phase)."""
    return set_trainable(model, 0)


def trainable_counts(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total}
