"""The two classification heads of the studies, on top of a backbone's feature map."""

from __future__ import annotations

import torch
from torch import nn

HEAD_DEFAULT_HIDDEN = {"gap": 1024, "flatten": 128}


def keras_init_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every conv/linear layer: Keras' defaults, which both studies had.

    PyTorch's default (kaiming_uniform with a=sqrt(5), weight variance 1/(3 fan_in)) shrinks activations about 6x per
    conv+ReLU layer; in study B's 4-conv network without BatchNorm the gradient then all but vanishes and training
    sits at ln(num_classes). Initialising as Keras did is both the faithful reproduction and what makes it train.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def build_head(kind: str, in_features: int, num_outputs: int, *, hidden: int | None, dropout: float) -> nn.Sequential:
    """Study A's ``gap`` (GAP -> Dense(1024, ReLU) -> Dropout -> Dense) or study B's ``flatten`` (Flatten ->
    Dense(128, ReLU) -> Dropout -> Dense). The pooling/flatten lives in the head so the backbone stays unpooled.
    """
    if kind not in HEAD_DEFAULT_HIDDEN:
        raise ValueError(f"unknown head {kind!r}; valid heads: {', '.join(HEAD_DEFAULT_HIDDEN)}")
    hidden = hidden or HEAD_DEFAULT_HIDDEN[kind]
    reduce = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if kind == "gap" else nn.Flatten()
    return keras_init_(
        nn.Sequential(
            reduce,
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )
    )


class InputNorm(nn.Module):
    """Grayscale [0, 1] input -> the backbone's expected channels and mean/std.

    Kept inside the model so a checkpoint can never be used with the wrong normalisation, and so augmentation can
    hand over plain [0, 1] images. With ``in_chans=3`` the gray channel is replicated; with 1 the backbone's
    pretrained mean/std are averaged over channels (timm sums the pretrained first conv's RGB weights to match).
    ``per_image=True`` standardises each image by its own mean and standard deviation instead, so a change of
    exposure or contrast between acquisitions (any x -> a x + b, a > 0) does not reach the backbone.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], in_chans: int, per_image: bool = False) -> None:
        super().__init__()
        self.per_image = per_image
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        if in_chans == 1:
            mean_t, std_t = mean_t.mean().reshape(1), std_t.mean().reshape(1)
        elif mean_t.numel() != in_chans:
            mean_t, std_t = mean_t.mean().expand(in_chans).clone(), std_t.mean().expand(in_chans).clone()
        self.in_chans = in_chans
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.shape[1] == 1 and self.in_chans > 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        if self.per_image:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        return (x - self.mean) / self.std
