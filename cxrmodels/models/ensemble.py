"""Several trained models used as one (the report's ensemble of the retrained runs)."""

from __future__ import annotations

import torch
from torch import nn


class EnsembleModel(nn.Module):
    """Several models of one task and preprocessing used as one: the mean of their class probabilities, returned as
    logits of that mean (binary: one logit; 3-class: log-probabilities), so every caller that turns logits into
    probabilities gets the averaged ones."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [m(x).float() for m in self.members]
        if logits[0].shape[1] == 1:
            p = torch.stack([torch.sigmoid(z) for z in logits]).mean(0).clamp(1e-7, 1 - 1e-7)
            return torch.log(p) - torch.log1p(-p)
        return torch.stack([torch.softmax(z, 1) for z in logits]).mean(0).clamp_min(1e-12).log()
