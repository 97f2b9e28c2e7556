"""Per-modality auto-encoders of the paper's Table 3, with sizes derived from the input shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emomatch.errors import ConfigError

#: (kernel, stride, padding, channels) of the paper's convolutional down-sampling stacks
VISUAL_CONVS: tuple[tuple[int, int, int, int], ...] = ((4, 2, 1, 16), (5, 2, 1, 64), (3, 3, 1, 32))
LEXICAL_CONVS: tuple[tuple[int, int, int, int], ...] = ((4, 2, 1, 64), (4, 3, 1, 4))


def heads_for(width: int, asked: int) -> int:
    """Largest head count <= ``asked`` that divides ``width``.

    The paper asks for 4 heads on its 342-wide visual features, which standard multi-head
    attention refuses; this rule gives 3 there and 4 for 1024 or 384.
    """
    for h in range(min(asked, width), 0, -1):
        if width % h == 0:
            return h
    return 1


def mlp(sizes: Sequence[int], last_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AcousticDAE(nn.Module):
    """MLP auto-encoder for utterance-level functionals (1582 -> 512 -> 256 -> 128 and back)."""

    def __init__(self, dim: int, hidden: Sequence[int], latent: int) -> None:
        super().__init__()
        self.encoder = mlp([dim, *hidden, latent])
        self.decoder = mlp([latent, *reversed(hidden), dim])

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)


def _transformer(
    width: int, heads: int, layers: int, ffn: int, dropout: float, norm_first: bool
) -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        d_model=width,
        nhead=heads,
        dim_feedforward=ffn,
        dropout=dropout,
        batch_first=True,
        norm_first=norm_first,
    )
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions. A length-0 row keeps position 0 open so attention stays finite;
    callers zero that row's output anyway."""
    positions = torch.arange(max_len, device=lengths.device)[None, :]
    return positions >= lengths.clamp(min=1)[:, None]


class SequenceDAE(nn.Module):
    """Transformer + convolution auto-encoder for frame/word sequences (visual, lexical).

    Encoder: Transformer over the valid frames, its T x D output seen as a 1-channel image,
    strided convolutions, flatten, linear layers to the latent. Decoder: linear layers, reshape,
    the mirrored transposed convolutions (cropped/padded to T x D where strides do not land
    exactly), Transformer blocks and a linear output projection. The decoder is
    non-autoregressive; its target is the input reversed in time (see losses).
    """

    def __init__(
        self,
        max_len: int,
        dim: int,
        convs: Sequence[tuple[int, int, int, int]],
        hidden: Sequence[int],
        latent: int,
        heads: int,
        layers: int,
        feedforward: int,
        dropout: float,
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        self.max_len, self.dim = max_len, dim
        self.heads = heads_for(dim, heads)
        self.encoder_transformer = _transformer(
            dim, self.heads, layers, feedforward, dropout, norm_first
        )
        down: list[nn.Module] = []
        channels = 1
        for k, s, p, c in convs:
            down += [nn.Conv2d(channels, c, k, s, p), nn.ReLU()]
            channels = c
        self.down = nn.Sequential(*down)
        with torch.no_grad():
            try:
                probe = self.down(torch.zeros(1, 1, max_len, dim))
            except RuntimeError as exc:
                raise ConfigError(
                    f"a {max_len} x {dim} sequence is too small for the convolution stack "
                    f"{list(convs)}: {exc}"
                ) from None
        self.grid = tuple(probe.shape[1:])  # (C, H, W) before flattening
        self.flat_dim = int(probe.numel())
        self.encoder_head = mlp([self.flat_dim, *hidden, latent])
        self.decoder_head = mlp([latent, *reversed(hidden), self.flat_dim], last_activation=True)
        up: list[nn.Module] = []
        chans = [1] + [c for _, _, _, c in convs]
        for i in reversed(range(len(convs))):
            k, s, p, _ = convs[i]
            up.append(nn.ConvTranspose2d(chans[i + 1], chans[i], k, s, p))
            if i > 0:
                up.append(nn.ReLU())
        self.up = nn.Sequential(*up)
        self.decoder_transformer = _transformer(
            dim, self.heads, layers, feedforward, dropout, norm_first
        )
        self.output = nn.Linear(dim, dim)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            lengths = torch.full((x.shape[0],), self.max_len, device=x.device)
        pad = padding_mask(lengths, self.max_len)
        h = self.encoder_transformer(x, src_key_padding_mask=pad)
        # Zero the padded positions so the convolutions never see what padding held.
        h = h.masked_fill(pad[:, :, None], 0.0)
        # channels_last lets oneDNN run these 1-channel-in, many-channel-out convolutions
        # without reordering: about 2.5x faster on CPU, the same numbers.
        h = self.down(h[:, None].contiguous(memory_format=torch.channels_last))
        return self.encoder_head(h.flatten(1))

    def decode(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.decoder_head(z).view(z.shape[0], *self.grid)
        h = self.up(h.contiguous(memory_format=torch.channels_last))[:, 0]
        t, d = h.shape[1], h.shape[2]
        h = h[:, : self.max_len, : self.dim]
        if t < self.max_len or d < self.dim:
            h = nn.functional.pad(h, (0, max(0, self.dim - d), 0, max(0, self.max_len - t)))
        pad = None if lengths is None else padding_mask(lengths, self.max_len)
        h = self.decoder_transformer(h, src_key_padding_mask=pad)
        return self.output(h)
