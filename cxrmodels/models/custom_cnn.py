"""Study B's network 1: the small from-scratch CNN, kept layer-for-layer so its results can be reproduced."""

from __future__ import annotations

import torch
from torch import nn

from cxrmodels.models.heads import keras_init_


def _conv_block(in_chans: int, width: int) -> nn.Sequential:
    """Conv2D(3x3, 'valid' padding, ReLU) -> MaxPool(2x2), as in the Keras original."""
    return nn.Sequential(nn.Conv2d(in_chans, width, kernel_size=3), nn.ReLU(inplace=True), nn.MaxPool2d(2))


class CustomCNN(nn.Module):
    """4 x [Conv(32, 3x3, valid) -> ReLU -> MaxPool 2x2]; the Flatten -> Dense(128) -> Dense(out) part is the head.

    Exposes the slice of timm's model API the rest of the code uses (``num_features``, ``forward_features``,
    ``group_matcher``, ``pretrained_cfg``), so freezing and heads treat it like any timm backbone. Rescaling(1/255)
    is the model's input normalisation with mean 0 / std 1 on [0, 1] inputs.
    """

    def __init__(self, in_chans: int = 3, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        chans = [in_chans] + [width] * depth
        self.blocks = keras_init_(nn.Sequential(*[_conv_block(chans[i], chans[i + 1]) for i in range(depth)]))
        self.num_features = width
        self.pretrained_cfg = {"mean": (0.0,) * in_chans, "std": (1.0,) * in_chans, "architecture": "custom_cnn"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        return {"stem": r"^blocks\.0", "blocks": r"^blocks\.(\d+)"}
