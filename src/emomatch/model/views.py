"""Views of a batch for consistency training: the clean inputs perturbed (feature noise,
modalities dropped) so that a prediction must hold under what the corpus varies in."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def drop_modalities(
    inputs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    p: float,
    generator: torch.Generator,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each modality a row has is made absent (length 0, the ``data.missing: mask`` path) with
    probability ``p``; a row whose draw took every modality it had keeps the one that drew the
    highest number (uniform among them), so no row is left with nothing to classify from."""
    present = torch.stack([n > 0 for _, n in inputs.values()], 1)
    draw = torch.rand(present.shape, generator=generator).to(present.device)
    drop = (draw < p) & present
    emptied = present.any(1) & ~(present & ~drop).any(1)
    kept = torch.where(present, draw, -1.0).argmax(1)
    columns = torch.arange(present.shape[1], device=present.device)
    drop &= ~(emptied[:, None] & (columns == kept[:, None]))
    return {m: (x, n.masked_fill(drop[:, i], 0)) for i, (m, (x, n)) in enumerate(inputs.items())}


def noisy(
    inputs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    std: float,
    generator: torch.Generator,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Gaussian noise of ``std`` added to every (z-normalised) feature; lengths unchanged."""
    if std <= 0:
        return dict(inputs)
    out = {}
    for m, (x, n) in inputs.items():
        draw = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        out[m] = (x + std * draw, n)
    return out
