"""The sequence auto-encoders' strided convolutions as matrix products, for the CPU.

At the paper's lexical shape the stack maps a 22 x 1024 word sequence to 64 channels of 11 x 512
and back. oneDNN runs these 1- and 4-channel ends badly on CPU, mostly in the backward pass (the
lexical stack took 29 % of a training step for 4 % of its FLOPs), reorders the 64-channel
tensors between memory formats (an extra copy at every reorder) and keeps several of them alive
at once. Here each thin layer (see ``MM_MAX_CHANNELS``) is one matrix product on channels-last
(batch, height, width, channel) tensors, with the same parameters and the same function as
``nn.Conv2d`` / ``nn.ConvTranspose2d``:

- a convolution multiplies the k x k windows of its input (a strided view, copied one batch
  chunk at a time) by the weight: exactly the convolution's multiply-adds;
- a transposed convolution multiplies each input position by the whole weight and adds the
  k x k results into the output at stride s: exactly its multiply-adds too.

``FlopCounterMode`` counts the same FLOPs as for the stock layers (its convolution formulas are
these two products). A ReLU after a layer is applied inside it and its output is what the
backward pass keeps, as ``nn.ReLU`` does; the backward pass works one batch chunk at a time, so
besides the layer's input and output only chunk-sized buffers are alive (at batch 128 the
stock layers held four 176 MB tensors at once in the lexical backward pass). The wider layers
stay on oneDNN, channels-last throughout. Measured in docs/benchmarks.md (training step).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

#: about what the temporaries of one batch chunk may take together (bytes)
CHUNK_BYTES = 16 * 2**20


def _windows(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """(B, H, W, C) -> view (B, Ho, Wo, k, k, C) of the k x k windows at stride s."""
    return x.unfold(1, k, s).unfold(2, k, s).permute(0, 1, 2, 4, 5, 3)


def _pad_hw(x: torch.Tensor, p: int) -> torch.Tensor:
    return nn.functional.pad(x, (0, 0, p, p, p, p)) if p else x


def _tap(i: int, s: int, p: int, n_in: int, n_out: int) -> tuple[slice, slice]:
    """Kernel offset ``i`` sends input position a to output position s * a + i - p: the input
    positions that land inside [0, n_out) and the strided output positions they land on."""
    lo = max(0, -((i - p) // s))
    hi = min(n_in, (n_out - 1 + p - i) // s + 1)
    if hi <= lo:
        return slice(0, 0), slice(0, 0)
    start = s * lo + i - p
    return slice(lo, hi), slice(start, start + s * (hi - lo - 1) + 1, s)


def _add_taps(out: torch.Tensor, y: torch.Tensor, s: int, p: int) -> None:
    """out (B, Ho, Wo, C) += every tap of y (B, H, W, k, k, C) at stride s, offset -p: the
    adjoint of reading k x k windows (a convolution's input gradient, a transposed
    convolution's output)."""
    _, h, w, k, _, _ = y.shape
    _, ho, wo, _ = out.shape
    for i in range(k):
        rows_in, rows_out = _tap(i, s, p, h, ho)
        if rows_in.stop == 0:
            continue
        for j in range(k):
            cols_in, cols_out = _tap(j, s, p, w, wo)
            if cols_in.stop == 0:
                continue
            out[:, rows_out, cols_out] += y[:, rows_in, cols_in, i, j]


def _chunks(batch: int, bytes_per_row: int) -> list[slice]:
    rows = max(1, CHUNK_BYTES // max(1, bytes_per_row))
    return [slice(i, min(batch, i + rows)) for i in range(0, batch, rows)]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _grad_buffers(
    ctx: Any, x: torch.Tensor, weight: torch.Tensor, gw_shape: tuple[int, int], cout: int
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The input gradient (if asked for) and the weight and bias gradients, which the batch
    chunks add into at least in float32."""
    acc = torch.promote_types(weight.dtype, torch.float32)
    gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
    gw = torch.zeros(gw_shape, dtype=acc, device=x.device)
    gb = torch.zeros(cout, dtype=acc, device=x.device)
    return gx, gw, gb


def _grad_result(
    ctx: Any,
    gx: torch.Tensor | None,
    gw: torch.Tensor,
    gb: torch.Tensor,
    weight: torch.Tensor,
    has_bias: bool,
) -> tuple[torch.Tensor | None, ...]:
    """backward's return value; ``gw`` is (A, k, k, B) for a weight of shape (A, B, k, k)."""
    gw_out = gw.permute(0, 3, 1, 2).to(weight.dtype) if ctx.needs_input_grad[1] else None
    gb_out = gb.to(weight.dtype) if has_bias and ctx.needs_input_grad[2] else None
    return gx, gw_out, gb_out, None, None, None, None


class _Conv(torch.autograd.Function):
    """``relu?(conv2d(x, weight, bias, stride, padding))`` on channels-last x (B, H, W, C)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
        relu: bool,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        b, h, w, c = x.shape
        cout, _, k, _ = weight.shape
        s, p = stride, padding
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        # (Cout, kh, kw, Cin): the order of a window's values in _windows
        wm = weight.permute(0, 2, 3, 1).reshape(cout, k * k * c).to(dtype)
        bm = None if bias is None else bias.to(dtype)
        out = x.new_empty((b, ho, wo, cout), dtype=dtype)
        with torch.autocast(x.device.type, enabled=False):
            for rows in _chunks(b, ho * wo * (k * k * c + cout) * x.element_size()):
                patches = _windows(_pad_hw(x[rows].to(dtype), p), k, s).reshape(-1, k * k * c)
                o = out[rows].view(-1, cout)
                if bm is None:
                    torch.mm(patches, wm.t(), out=o)
                else:
                    torch.addmm(bm, patches, wm.t(), out=o)
        if relu:
            out.relu_()
        ctx.save_for_backward(x, weight, out if relu else None)
        ctx.conf = (s, p, relu, dtype, bias is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, out = ctx.saved_tensors
        s, p, relu, dtype, has_bias = ctx.conf
        b, h, w, c = x.shape
        cout, _, k, _ = weight.shape
        _, ho, wo, _ = grad.shape
        wm = weight.permute(0, 2, 3, 1).reshape(cout, k * k * c).to(dtype)
        need_w = ctx.needs_input_grad[1]
        gx, gw, gb = _grad_buffers(ctx, x, weight, (cout, k * k * c), cout)
        with torch.autocast(x.device.type, enabled=False):
            row_bytes = 2 * ho * wo * (k * k * c + cout) * x.element_size()
            for rows in _chunks(b, row_bytes):
                g = grad[rows].to(dtype)
                if relu:
                    g = torch.ops.aten.threshold_backward(g, out[rows], 0)  # as nn.ReLU's
                g2 = g.reshape(-1, cout)
                patches = _windows(_pad_hw(x[rows].to(dtype), p), k, s).reshape(-1, k * k * c)
                if need_w:
                    gw.add_(g2.t().mm(patches))
                if has_bias:
                    gb.add_(g2.sum(0))
                if gx is None:
                    continue
                gxc = gx[rows]
                gxc.zero_()
                _add_taps(gxc, g2.mm(wm).view(-1, ho, wo, k, k, c), s, p)
        return _grad_result(ctx, gx, gw.view(cout, k, k, c), gb, weight, has_bias)


class _ConvTranspose(torch.autograd.Function):
    """``relu?(conv_transpose2d(x, weight, bias, stride, padding))`` on channels-last x."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
        relu: bool,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        b, h, w, cin = x.shape
        _, cout, k, _ = weight.shape
        s, p = stride, padding
        hf, wf = (h - 1) * s + k, (w - 1) * s + k  # before cropping the padding
        ho, wo = hf - 2 * p, wf - 2 * p
        # (Cin, kh, kw, Cout): each input position's k x k x Cout contribution
        wm = weight.permute(0, 2, 3, 1).reshape(cin, k * k * cout).to(dtype)
        out = x.new_empty((b, ho, wo, cout), dtype=dtype)
        with torch.autocast(x.device.type, enabled=False):
            row_bytes = h * w * k * k * cout * x.element_size()
            for rows in _chunks(b, row_bytes):
                y = x[rows].to(dtype).reshape(-1, cin).mm(wm).view(-1, h, w, k, k, cout)
                o = out[rows]
                if bias is None:
                    o.zero_()
                else:
                    o.copy_(bias.to(dtype).expand_as(o))
                _add_taps(o, y, s, p)
        if relu:
            out.relu_()
        ctx.save_for_backward(x, weight, out if relu else None)
        ctx.conf = (s, p, relu, dtype, bias is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, out = ctx.saved_tensors
        s, p, relu, dtype, has_bias = ctx.conf
        b, h, w, cin = x.shape
        _, cout, k, _ = weight.shape
        wm = weight.permute(0, 2, 3, 1).reshape(cin, k * k * cout).to(dtype)
        need_w = ctx.needs_input_grad[1]
        gx, gw, gb = _grad_buffers(ctx, x, weight, (cin, k * k * cout), cout)
        ho, wo = grad.shape[1:3]
        with torch.autocast(x.device.type, enabled=False):
            row_bytes = (h * w * k * k + 2 * ho * wo) * cout * x.element_size()
            for rows in _chunks(b, row_bytes):
                g = grad[rows].to(dtype)
                if relu:
                    g = torch.ops.aten.threshold_backward(g, out[rows], 0)  # as nn.ReLU's
                if has_bias:
                    gb.add_(g.sum((0, 1, 2)))
                # the adjoint of adding at stride s: read the k x k windows at stride s
                gy = _windows(_pad_hw(g, p), k, s).reshape(-1, k * k * cout)
                if need_w:
                    gw.add_(x[rows].to(dtype).reshape(-1, cin).t().mm(gy))
                if gx is not None:
                    if gx.dtype == dtype:  # straight into the gradient, no copy
                        torch.mm(gy, wm.t(), out=gx[rows].view(-1, cin))
                    else:
                        gx[rows] = gy.mm(wm.t()).view(-1, h, w, cin)
        return _grad_result(ctx, gx, gw.view(cin, k, k, cout), gb, weight, has_bias)


def _square(v: Any) -> int:
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a != b:
        raise ValueError(f"only square kernels, strides and paddings, got {v}")
    return int(a)


#: convolutions with at most this many input channels and transposed ones with at most this
#: many input or output channels run as matrix products; the others (the lexical 64 -> 4
#: convolution, most visual layers) run faster as oneDNN's own channels-last kernels once
#: their gradients arrive channels-last too (_NHWCGrad)
MM_MAX_CHANNELS = 4


class _NHWCGrad(torch.autograd.Function):
    """Identity whose backward hands on a (B, H, W, C)-contiguous gradient: a layer's output is
    read back in another order (the encoder flattens C, H, W), and a channels-last oneDNN
    backward given a gradient in another format copies its 64-channel input to match."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def conv_layer(
    layer: nn.Module, x: torch.Tensor, relu: bool, matmul: bool | None = None
) -> torch.Tensor:
    """``layer`` (a ``Conv2d`` or ``ConvTranspose2d``), then a ReLU if ``relu``, on channels-last
    ``x`` (B, H, W, C); returns (B, Ho, Wo, Cout). ``matmul``: as matrix products (default: on
    CPU, see ``MM_MAX_CHANNELS``), else the layer's own kernels (oneDNN on CPU, cuDNN on CUDA)
    on the channels-last view."""
    if not isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
        raise TypeError(f"not a convolution: {layer}")
    if layer.groups != 1 or _square(layer.dilation) != 1 or layer.padding_mode != "zeros":
        raise ValueError(f"unsupported convolution: {layer}")
    if isinstance(layer, nn.ConvTranspose2d) and _square(layer.output_padding) != 0:
        raise ValueError(f"unsupported convolution: {layer}")
    if matmul is None:
        thin = layer.in_channels
        if isinstance(layer, nn.ConvTranspose2d):
            thin = min(thin, layer.out_channels)
        # the products were measured against oneDNN; other devices' kernels do not need them.
        # Under CPU autocast every layer takes them: oneDNN's bf16 weight gradient of a
        # transposed convolution whose padding hides some taps (the visual decoder's 32 -> 64
        # on a 1 x 1 grid) left those taps uninitialised (NaN or garbage) in torch 2.13.
        cpu = x.device.type == "cpu"
        matmul = cpu and (thin <= MM_MAX_CHANNELS or torch.is_autocast_enabled("cpu"))
    if not matmul:
        # (B, C, H, W) view of channels-last memory: oneDNN keeps that format throughout
        y = layer(x.contiguous().permute(0, 3, 1, 2))
        if relu:
            y = nn.functional.relu(y, inplace=True)
        return _NHWCGrad.apply(y.permute(0, 2, 3, 1))  # type: ignore[no-any-return]
    fn = _ConvTranspose if isinstance(layer, nn.ConvTranspose2d) else _Conv
    out = fn.apply(
        x.contiguous(),
        layer.weight,
        layer.bias,
        _square(layer.stride),
        _square(layer.padding),
        relu,
        _compute_dtype(x),
    )
    return out  # type: ignore[no-any-return]


def conv_stack(stack: nn.Sequential, x: torch.Tensor, matmul: bool | None = None) -> torch.Tensor:
    """``stack`` (convolutions, each optionally followed by ``nn.ReLU``) on channels-last x
    (B, H, W, C): the same function as ``stack`` on the NCHW view of x."""
    layers = list(stack)
    i = 0
    while i < len(layers):
        relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
        x = conv_layer(layers[i], x, relu, matmul)
        i += 2 if relu else 1
    return x
