"""A toy model and dataset, just enough for mmengine's Runner (tests that
need real training checkpoints but not FcaFormer)."""
from __future__ import annotations

import torch
from mmengine.model import BaseModel
from torch import nn


class Regressor(BaseModel):
    """A linear model with a squared-error loss."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.linear(inputs).squeeze(1)
        if mode == 'loss':
            return {'loss': ((out - labels)**2).mean()}
        return out


class Toy(torch.utils.data.Dataset):
    """``length`` seeded samples: 4 numbers and their sum."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        x = torch.randn(4, generator=torch.Generator().manual_seed(idx))
        return dict(inputs=x, labels=x.sum())
