"""Per-dimension z-normalization whose statistics travel with the model's weights."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """Holds mean/std per feature dimension of each modality as buffers (saved in checkpoints).

    Statistics are fitted on the training split only, over valid positions only; padded
    positions stay exactly zero after normalization.
    """

    def __init__(self, dims: Mapping[str, int]) -> None:
        super().__init__()
        self.modalities = list(dims)
        for m, d in dims.items():
            self.register_buffer(f"{m}_mean", torch.zeros(d))
            self.register_buffer(f"{m}_std", torch.ones(d))

    def set_stats(self, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for m in self.modalities:
            mean, std = stats[m]
            getattr(self, f"{m}_mean").copy_(torch.as_tensor(mean, dtype=torch.float32))
            getattr(self, f"{m}_std").copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, modality: str, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mean = getattr(self, f"{modality}_mean")
        std = getattr(self, f"{modality}_std")
        out = (x - mean) / std
        if x.dim() == 3:
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
            out = out * valid[:, :, None]
        return out
