"""Per-modality auto-encoders of the paper's Table 3, with sizes derived from the input shape.

Which one a modality gets follows from its shape, not its name: a vector per utterance (the
paper's acoustic functionals, face action units summarised over a clip) gets the MLP
auto-encoder, a sequence (the paper's face frames and words, acoustic frames) the Transformer
+ convolution one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from emomatch.errors import ConfigError
from emomatch.model.convmm import conv_stack

#: (kernel, stride, padding, channels) of the paper's convolutional down-sampling stacks
VISUAL_CONVS: tuple[tuple[int, int, int, int], ...] = ((4, 2, 1, 16), (5, 2, 1, 64), (3, 3, 1, 32))
LEXICAL_CONVS: tuple[tuple[int, int, int, int], ...] = ((4, 2, 1, 64), (4, 3, 1, 4))
#: the down-sampling stack of a sequence modality: the paper's for visual and lexical; acoustic
#: frames (tens of LLDs over hundreds of frames) are shaped like words (few positions' worth of
#: detail per dimension), so they take the lexical stack
SEQUENCE_CONVS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "acoustic": LEXICAL_CONVS,
    "visual": VISUAL_CONVS,
    "lexical": LEXICAL_CONVS,
}


def heads_for(width: int, asked: int) -> int:
    """Largest head count <= ``asked`` that divides ``width``.

    The paper asks for 4 heads on its 342-wide visual features, which standard multi-head
    attention refuses; this rule gives 3 there and 4 for 1024 or 384.
    """
    for h in range(min(asked, width), 0, -1):
        if width % h == 0:
            return h
    return 1


def mlp(sizes: Sequence[int], last_activation: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU between them; ``dropout`` after each hidden ReLU."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        hidden = i < len(sizes) - 2
        if hidden or last_activation:
            layers.append(nn.ReLU())
        if hidden and dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class VectorDAE(nn.Module):
    """MLP auto-encoder for one vector per utterance (the paper's acoustic functionals:
    1582 -> 512 -> 256 -> 128 and back)."""

    def __init__(self, dim: int, hidden: Sequence[int], latent: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = mlp([dim, *hidden, latent], dropout=dropout)
        self.decoder = mlp([latent, *reversed(hidden), dim])

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)


#: the name the paper's acoustic auto-encoder had before any vector modality could use it
AcousticDAE = VectorDAE


def _transformer(
    width: int, heads: int, layers: int, ffn: int, dropout: float, norm_first: bool
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=width,
        nhead=heads,
        dim_feedforward=ffn,
        dropout=dropout,
        batch_first=True,
        norm_first=norm_first,
    )
    # A pre-norm stack adds every block's output to an un-normalised residual stream, so its
    # output grows with depth: a final LayerNorm closes it, as in pre-norm Transformers since
    # Xiong et al. (2020). A post-norm stack already ends in a LayerNorm.
    final = nn.LayerNorm(width) if norm_first else None
    return nn.TransformerEncoder(layer, num_layers=layers, norm=final, enable_nested_tensor=False)


PositionalKind = Literal["sinusoidal", "learned", "none"]


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """Vaswani et al. (2017): PE[t, 2i] = sin(t / 10000^(2i/dim)), PE[t, 2i+1] = cos(same)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * freq)
    # An odd width has one more sine column than cosine columns.
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


class PositionalEncoding(nn.Module):
    """Adds a position code to a (batch, time, dim) sequence before self-attention, which is
    otherwise blind to order (it is permutation-equivariant).

    Not scaled: the inputs are z-normalised (variance 1 per dimension) and a sinusoid has
    variance 1/2, so code and content have comparable norms, the same ratio Vaswani et al. get
    by multiplying their embeddings (initialised with variance 1/dim) by sqrt(dim). Scaling the
    code up would drown the features, scaling it down would hide the order.
    """

    def __init__(self, kind: PositionalKind, max_len: int, dim: int) -> None:
        super().__init__()
        self.kind = kind
        self.table: torch.Tensor | None
        if kind == "sinusoidal":
            # Saved although it is a function of the shape: a checkpoint of order-blind blocks
            # (made before the code existed, or with `none`) then fails to load into a model
            # that adds it, instead of silently scoring with inputs it never saw.
            self.register_buffer("table", sinusoidal_table(max_len, dim))
        elif kind == "learned":
            # BERT's initialisation: the code starts small against unit-variance features and
            # grows as far as training finds it useful.
            self.table = nn.Parameter(torch.empty(max_len, dim))
            nn.init.trunc_normal_(self.table, std=0.02)
        elif kind == "none":
            self.table = None
        else:
            raise ConfigError(
                f"unknown positional encoding {kind!r}; known: sinusoidal, learned, none"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return x
        return x + self.table[: x.shape[1]].to(x.dtype)


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions. A length-0 row keeps position 0 open so attention stays finite;
    callers zero that row's output anyway."""
    positions = torch.arange(max_len, device=lengths.device)[None, :]
    return positions >= lengths.clamp(min=1)[:, None]


def _packed_attention(
    layer: nn.TransformerEncoderLayer, h: torch.Tensor, index: torch.Tensor, pad: torch.Tensor
) -> torch.Tensor:
    """The layer's self-attention on packed tokens ``h`` (valid positions only, N x D): the
    projections run on the N tokens, only the score matrix needs the (batch, time) layout."""
    attn = layer.self_attn
    b, t = pad.shape
    d = h.shape[1]
    heads = attn.num_heads
    # A row with no valid position would give NaN scores (and NaN gradients through them):
    # let it see its first position, as padding_mask does.
    keys = ~pad
    keys[:, 0] |= ~keys.any(1)
    qkv = nn.functional.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    full = qkv.new_zeros(b * t, 3 * d).index_copy_(0, index, qkv)  # in place: no clone
    q, k, v = full.view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = nn.functional.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=keys[:, None, None, :],
        dropout_p=attn.dropout if layer.training else 0.0,
    )
    out = out.transpose(1, 2).reshape(b * t, d).index_select(0, index)
    return attn.out_proj(out)


def _feedforward(layer: nn.TransformerEncoderLayer, h: torch.Tensor) -> torch.Tensor:
    return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(h)))))


def run_blocks(stack: nn.TransformerEncoder, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """``stack(x, src_key_padding_mask=pad)`` computed on the valid positions only.

    Every per-token operation (projections, feed-forward, LayerNorm, dropout) runs on the
    packed valid tokens, so padding costs nothing: MELD utterances fill 57 % of 12 word slots
    and 33 % of 24. Same parameters and the same function on valid positions (padded positions
    come out as zeros, where the stock stack leaves values that every caller masks anyway).
    """
    b, t, d = x.shape
    index = (~pad).flatten().nonzero().squeeze(1)
    h = x.reshape(b * t, d).index_select(0, index)
    for block in stack.layers:
        layer: nn.TransformerEncoderLayer = block  # type: ignore[assignment]
        if layer.norm_first:
            h = h + layer.dropout1(_packed_attention(layer, layer.norm1(h), index, pad))
            h = h + _feedforward(layer, layer.norm2(h))
        else:
            h = layer.norm1(h + layer.dropout1(_packed_attention(layer, h, index, pad)))
            h = layer.norm2(h + _feedforward(layer, h))
    if stack.norm is not None:
        h = stack.norm(h)
    # h's dtype, not x's: under CUDA autocast the final LayerNorm returns float32 for 16-bit x
    return h.new_zeros(b * t, d).index_copy_(0, index, h).view(b, t, d)


class SequenceDAE(nn.Module):
    """Transformer + convolution auto-encoder for frame/word sequences (visual, lexical).

    Encoder: Transformer over the valid frames, its T x D output seen as a 1-channel image,
    strided convolutions, flatten, linear layers to the latent. Decoder: linear layers, reshape,
    the mirrored transposed convolutions (cropped/padded to T x D where strides do not land
    exactly), Transformer blocks and a linear output projection. Both Transformers see their
    input plus a position code (``positional``); pre-norm blocks (``norm_first``) end in a
    final LayerNorm. The decoder is
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
        norm_first: bool = True,
        positional: PositionalKind = "sinusoidal",
    ) -> None:
        super().__init__()
        self.max_len, self.dim = max_len, dim
        self.heads = heads_for(dim, heads)
        self.encoder_positions = PositionalEncoding(positional, max_len, dim)
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
        self.decoder_positions = PositionalEncoding(positional, max_len, dim)
        self.decoder_transformer = _transformer(
            dim, self.heads, layers, feedforward, dropout, norm_first
        )
        self.output = nn.Linear(dim, dim)

    def contextualize(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder Transformer over position-coded frames (``pad``: True at padding)."""
        x = self.encoder_positions(x)
        if pad is None:
            return self.encoder_transformer(x)
        return run_blocks(self.encoder_transformer, x, pad)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            lengths = torch.full((x.shape[0],), self.max_len, device=x.device)
        pad = padding_mask(lengths, self.max_len)
        h = self.contextualize(x, pad)
        # Zero the padded positions so the convolutions never see what padding held.
        h = h.masked_fill(pad[:, :, None], 0.0)
        # channels-last (B, T, D, C) throughout: convmm picks each layer's kernel
        h = conv_stack(self.down, h[:, :, :, None]).permute(0, 3, 1, 2)
        return self.encoder_head(h.flatten(1))

    def decode(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.decoder_head(z).view(z.shape[0], *self.grid)
        h = conv_stack(self.up, h.permute(0, 2, 3, 1))[:, :, :, 0]
        t, d = h.shape[1], h.shape[2]
        h = h[:, : self.max_len, : self.dim]
        if t < self.max_len or d < self.dim:
            h = nn.functional.pad(h, (0, max(0, self.dim - d), 0, max(0, self.max_len - t)))
        pad = None if lengths is None else padding_mask(lengths, self.max_len)
        h = self.decoder_positions(h)
        if pad is None:
            h = self.decoder_transformer(h)
        else:
            h = run_blocks(self.decoder_transformer, h, pad)
        return self.output(h)
