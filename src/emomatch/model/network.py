"""The full model: one auto-encoder per modality in use and a classifier on their latents."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from emomatch.config import ModelConfig
from emomatch.domain import MODALITIES
from emomatch.errors import ConfigError
from emomatch.model.autoencoders import SEQUENCE_CONVS, SequenceDAE, VectorDAE, mlp

#: A batch of inputs: modality -> (features, valid lengths)
Inputs = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ModelOutput:
    latents: dict[str, torch.Tensor]
    logits: torch.Tensor
    reconstructions: dict[str, torch.Tensor] = field(default_factory=dict)
    #: modality -> which rows have it (length > 0)
    present: dict[str, torch.Tensor] = field(default_factory=dict)


def autoencoder(modality: str, shape: tuple[int, ...], cfg: ModelConfig) -> VectorDAE | SequenceDAE:
    """The auto-encoder a modality's feature shape calls for: ``[D]`` -> the MLP one with the
    modality's ``<modality>_hidden`` layers, ``[T, D]`` -> the Transformer + convolution one with
    the modality's convolution stack and ``<modality>_hidden`` layers after it (the paper's
    Table 3 when acoustic is a vector and visual and lexical are sequences)."""
    hidden: list[int] = getattr(cfg, f"{modality}_hidden")
    if len(shape) == 1:
        return VectorDAE(shape[0], hidden, cfg.latent_dim, dropout=cfg.mlp_dropout)
    if len(shape) == 2:
        return SequenceDAE(
            max_len=shape[0],
            dim=shape[1],
            convs=SEQUENCE_CONVS[modality],
            hidden=hidden,
            latent=cfg.latent_dim,
            heads=cfg.heads,
            layers=cfg.transformer_layers,
            feedforward=cfg.feedforward_dim,
            dropout=cfg.dropout,
            norm_first=cfg.norm_first,
            positional=cfg.positional,
        )
    raise ConfigError(
        f"{modality} features must be vectors [D] or sequences [T, D], got shape {list(shape)}"
    )


class EmotionModel(nn.Module):
    """Auto-encoders for any subset of A, V, L and an MLP classifier on [z_a; z_v; z_l].

    ``recompute``: while training, keep only each auto-encoder's inputs for the backward pass
    and run its encoder and decoder forward again there (activation checkpointing). The
    auto-encoders' activations are nearly all of a step's memory at the paper's dims (~3.1 GB of
    saved tensors at batch 128 + 128 in fp32); recomputed, the training process peaked at
    2.7 GB instead of 4.7 GB for 46 % more step time (docs/benchmarks.md). The random state is
    replayed, so dropout draws the same masks and the gradients are the same.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        num_classes: int,
        cfg: ModelConfig,
        recompute: bool = False,
    ) -> None:
        super().__init__()
        self.recompute = recompute
        # A fixed order makes the concatenation independent of how the caller listed them.
        self.modalities = [m for m in MODALITIES if m in shapes]
        if not self.modalities:
            raise ConfigError("the model needs at least one modality")
        self.daes = nn.ModuleDict()
        for m in self.modalities:
            self.daes[m] = autoencoder(m, tuple(shapes[m]), cfg)
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.classifier = mlp(
            [cfg.latent_dim * len(self.modalities), *cfg.classifier_hidden, num_classes],
            dropout=cfg.mlp_dropout,
        )

    def dae(self, modality: str) -> VectorDAE | SequenceDAE:
        return cast(VectorDAE | SequenceDAE, self.daes[modality])

    def _run(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *args: torch.Tensor
    ) -> torch.Tensor:
        if self.recompute and self.training and torch.is_grad_enabled():
            out = checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True)
            return cast(torch.Tensor, out)
        return fn(*args)

    def encode(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """Latents; a row without a modality (length 0) gets a zero latent for it, so the
        classifier sees the same input whatever its padding held."""
        latents = {}
        for m in self.modalities:
            x, lengths = inputs[m]
            # Attention over an all-padding row gives NaN: let it see one (zero) step.
            z = self._run(self.dae(m).encode, self.input_dropout(x), lengths.clamp(min=1))
            latents[m] = z * (lengths > 0).to(z.dtype)[:, None]
        return latents

    def classify(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(torch.cat([latents[m] for m in self.modalities], dim=1))

    def forward(self, inputs: Inputs, reconstruct: bool = True) -> ModelOutput:
        latents = self.encode(inputs)
        out = ModelOutput(
            latents=latents,
            logits=self.classify(latents),
            present={m: inputs[m][1] > 0 for m in self.modalities},
        )
        if reconstruct:
            out.reconstructions = {
                m: self._run(self.dae(m).decode, latents[m], inputs[m][1].clamp(min=1))
                for m in self.modalities
            }
        return out
