"""Building blocks of the IMP family (SuperGlue-style, Conv1d on [B, D, N] tensors).

Module and parameter names follow the released imp-release checkpoints (layout:
``test_imp_model.official_layout``) so their state dicts load strictly. Every block takes an optional token mask
``[B, N]`` (True = real token) so that padded batches give the same numbers as the unpadded images.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Mask = Optional[torch.Tensor]


class MaskedInstanceNorm1d(nn.Module):
    """InstanceNorm1d (no affine, eps 1e-3 as released) whose statistics ignore padded tokens."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: Mask = None) -> torch.Tensor:
        if mask is None:
            return F.instance_norm(x, eps=self.eps)
        m = mask[:, None, :].to(x.dtype)
        n = m.sum(-1, keepdim=True).clamp(min=1)
        mean = (x * m).sum(-1, keepdim=True) / n
        var = (((x - mean) * m) ** 2).sum(-1, keepdim=True) / n
        return (x - mean) / torch.sqrt(var + self.eps)


#: rows per block of the blocked softmax and explicit attention: a 256 x 2048 float block (2 MB) stays in cache
ROW_BLOCK = 256


def softmax_(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, in place (inference only: no autograd through in-place ops), one block of
    ``ROW_BLOCK`` rows at a time: the block is copied to a small buffer and ``torch.softmax`` writes it back, so the
    matrix is read and written once and no second N x M buffer is allocated (input and output never alias). On one
    CPU thread, the 2049 x 2049 assignment matrix of a head: 8 ms with four whole-matrix passes (max, exp, sum,
    divide), 3-4 ms this way. Off the CPU (where the blocks only add kernel launches) one ``torch.softmax``."""
    if not x.is_contiguous() or x.device.type != "cpu":
        return x.copy_(torch.softmax(x, dim=-1))
    rows = x.view(-1, x.shape[-1])
    tmp = x.new_empty(min(ROW_BLOCK, rows.shape[0]), rows.shape[1])
    for s in range(0, rows.shape[0], ROW_BLOCK):
        block = rows[s:s + ROW_BLOCK]
        t = tmp[:len(block)]
        t.copy_(block)
        torch.softmax(t, dim=-1, out=block)
    return x


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: Mask = None
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inference attention that also returns the probabilities, one block of ``ROW_BLOCK`` queries at a time:
    scores into a cache-sized buffer, ``torch.softmax`` from there into the probability matrix, the message from
    the block while it is still in cache. Same numbers as the whole-matrix product; on one CPU thread at 2048
    tokens (d 64) 15-16 ms per attention against 20 for the whole-matrix version (the fused
    ``scaled_dot_product_attention``, which returns no probabilities: 13)."""
    b, h, n, d = q.shape
    m = k.shape[2]
    q = (q * (1.0 / math.sqrt(d))).reshape(b * h, n, d)
    kt = k.reshape(b * h, m, d).transpose(1, 2)
    v = v.contiguous().view(b * h, m, -1)
    prob = q.new_empty(b * h, n, m)
    msg = q.new_empty(b * h, n, v.shape[-1])
    tmp = q.new_empty(min(ROW_BLOCK, n), m)
    lowest = torch.finfo(q.dtype).min
    for bh in range(b * h):
        drop = None if key_mask is None else ~key_mask[bh // h]
        for s in range(0, n, ROW_BLOCK):
            e = min(s + ROW_BLOCK, n)
            t = tmp[:e - s]
            torch.mm(q[bh, s:e], kt[bh], out=t)
            if drop is not None:
                t.masked_fill_(drop, lowest)
            torch.softmax(t, dim=-1, out=prob[bh, s:e])
            torch.mm(prob[bh, s:e], v[bh], out=msg[bh, s:e])
    return msg.view(b, h, n, -1), prob.view(b, h, n, m)


def bmv(mats: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    """[B, N, M] x [B, M] -> [B, N]. On the CPU one ``mv`` per batch element: CPU ``bmm`` / ``einsum`` of a batch of
    matrices with a batch of vectors takes a generic path, 10-30x slower (two 1025 x 1025 matrices, one thread:
    2.5 ms against 0.25 ms). On a GPU one batched product (:func:`bmv_batched`): a kernel launch per batch element
    made a CUDA training step launch-bound (H200, batch 16, 1024 keypoints: 12240 ``mv`` calls per step, 147 ms
    of GPU work in a 0.7 s step). Differentiable."""
    if mats.device.type != "cpu":
        return bmv_batched(mats, vecs)
    if torch.is_grad_enabled() and (mats.requires_grad or vecs.requires_grad):
        return _LoopedMV.apply(mats, vecs)
    return _looped_mv(mats, vecs)


def _looped_mv(mats: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.mv(m, x) for m, x in zip(mats, vecs)])


class _LoopedMV(torch.autograd.Function):
    """The CPU loop of :func:`bmv` with its own backward. Left to autograd, the loop's backward undid each
    ``select`` of the batch into a zero-filled tensor of the whole batch and stacked those (a profiled step, batch
    8, 1024 keypoints, gradients through all 20 scalings: ``fill_`` and ``cat`` 6.3 of 18.9 s). Here the matrices'
    gradient is one batched outer product and the vectors' one ``mv`` per element."""

    @staticmethod
    def forward(ctx, mats: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(mats, vecs)
        return _looped_mv(mats, vecs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        mats, vecs = ctx.saved_tensors
        grad_mats = grad.unsqueeze(-1) * vecs.unsqueeze(-2) if ctx.needs_input_grad[0] else None
        grad_vecs = _looped_mv(mats.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return grad_mats, grad_vecs


def bmv_batched(mats: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    """:func:`bmv` as one batched matrix product (the GPU path)."""
    return torch.matmul(mats, vecs.unsqueeze(-1)).squeeze(-1)


class Conv1x1(nn.Conv1d):
    """``nn.Conv1d(kernel_size=1)`` (same parameters and state-dict keys) computed as one matrix product: the CPU
    convolution path (``slow_conv2d``) was a quarter of a training step."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = torch.matmul(self.weight[:, :, 0], x)
        return y if self.bias is None else y + self.bias[:, None]


class MLP(nn.Sequential):
    """Conv1d(k=1) layers with norm + ReLU in between: indices 0, 3, 6, ... hold the weights."""

    def __init__(self, channels: Sequence[int], norm: str = "in"):
        layers: List[nn.Module] = []
        for i in range(1, len(channels)):
            last = Conv1x1(channels[i - 1], channels[i])
            layers.append(last)
            if i < len(channels) - 1:
                layers.append(nn.BatchNorm1d(channels[i]) if norm == "bn" else MaskedInstanceNorm1d())
                layers.append(nn.ReLU())
        super().__init__(*layers)
        assert last.bias is not None  # built with bias=True
        nn.init.constant_(last.bias, 0.0)

    def forward(self, x: torch.Tensor, mask: Mask = None) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, mask) if isinstance(layer, MaskedInstanceNorm1d) else layer(x)
        return x


def normalize_keypoints(kpts: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """SuperGlue normalization ``(k - size/2) / (0.7 max(w, h))``; ``image_size`` is [B, 2] (w, h)."""
    size = image_size.to(kpts)
    center = size / 2
    scale = size.max(-1).values * 0.7
    return (kpts - center[:, None, :]) / scale[:, None, None]


class KeypointEncoder(nn.Module):
    """MLP on (x, y, score), added to the descriptor."""

    def __init__(self, feature_dim: int, layers: Sequence[int], norm: str = "in"):
        super().__init__()
        self.encoder = MLP([3] + list(layers) + [feature_dim], norm)

    def forward(self, kpts: torch.Tensor, scores: torch.Tensor, mask: Mask = None) -> torch.Tensor:
        inputs = torch.cat([kpts.transpose(1, 2), scores.unsqueeze(1)], dim=1)
        return self.encoder(inputs, mask)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, D, N] -> [B, H, N, D/H] with SuperGlue's dim-major layout (channel c = d * H + h)."""
    b, d, n = x.shape
    return x.view(b, d // num_heads, num_heads, n).permute(0, 2, 3, 1)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, D/H] -> [B, D, N] (inverse of ``split_heads``)."""
    b, h, n, dh = x.shape
    return x.permute(0, 3, 1, 2).reshape(b, dh * h, n)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: Mask = None,
              need_prob: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Softmax attention on [B, H, N, d] tensors; returns (message, prob or None).

    Without ``need_prob`` this is ``F.scaled_dot_product_attention`` (fused kernels); with it the explicit
    product, whose probabilities attention sharing and EIMP's pooling reuse.
    """
    attn_mask = None if key_mask is None else key_mask[:, None, None, :]
    if not need_prob:
        # contiguous inputs: the fused CPU kernel; the permuted views of ``split_heads`` fall back to the math path
        # (one layer at 2048 tokens, d 64, one thread: 44 ms permuted, 15 ms contiguous)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), None
    if q.device.type == "cpu" and not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        return explicit_attention(q, k, v, key_mask)  # CPU inference: blocked, cache-sized
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2))  # training (autograd), GPUs
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    prob = torch.softmax(scores, dim=-1)
    return torch.matmul(prob, v), prob


class MultiHeadedAttention(nn.Module):
    def __init__(self, num_heads: int, d_model: int):
        super().__init__()
        assert d_model % num_heads == 0
        self.num_heads = num_heads
        self.merge = Conv1x1(d_model, d_model)
        self.proj = nn.ModuleList([Conv1x1(d_model, d_model) for _ in range(3)])

    def forward(self, x: torch.Tensor, source: torch.Tensor, key_mask: Mask = None, need_prob: bool = False):
        q, k, v = (split_heads(layer(t), self.num_heads) for layer, t in zip(self.proj, (x, source, source)))
        msg, prob = attention(q, k, v, key_mask, need_prob)
        return self.merge(merge_heads(msg)), prob


class AttentionalPropagation(nn.Module):
    """``x + MLP([x, MHA(x, source)])``: one self or cross layer computing its own attention."""

    shared = False

    def __init__(self, feature_dim: int, num_heads: int, norm: str = "in"):
        super().__init__()
        self.attn = MultiHeadedAttention(num_heads, feature_dim)
        self.mlp = MLP([feature_dim * 2, feature_dim * 2, feature_dim], norm)

    def forward(self, x: torch.Tensor, source: torch.Tensor, x_mask: Mask = None, source_mask: Mask = None,
                prob: Optional[torch.Tensor] = None, need_prob: bool = False):
        message, prob = self.attn(x, source, source_mask, need_prob)
        return self.mlp(torch.cat([x, message], dim=1), x_mask), prob


class SharedAttentionalPropagation(nn.Module):
    """A layer that reuses the attention probabilities of the previous layer of its type (no Q/K projections)."""

    shared = True

    def __init__(self, feature_dim: int, num_heads: int, norm: str = "in"):
        super().__init__()
        self.num_heads = num_heads
        self.proj = Conv1x1(feature_dim, feature_dim)
        self.merge = Conv1x1(feature_dim, feature_dim)
        self.mlp = MLP([feature_dim * 2, feature_dim * 2, feature_dim], norm)

    def forward(self, x: torch.Tensor, source: torch.Tensor, x_mask: Mask = None, source_mask: Mask = None,
                prob: Optional[torch.Tensor] = None, need_prob: bool = False):
        if prob is None:
            raise RuntimeError("a shared attention layer needs the previous layer's attention probabilities")
        v = split_heads(self.proj(source), self.num_heads)
        message = self.merge(merge_heads(torch.matmul(prob, v)))
        return self.mlp(torch.cat([x, message], dim=1), x_mask), prob


class AttentionalGNN(nn.Module):
    """``layers`` = alternating self/cross layers; ``sharing[L]`` marks the layers that reuse attention."""

    def __init__(self, feature_dim: int, num_heads: int, n_iterations: int, sharing: Sequence[bool],
                 norm: str = "in"):
        super().__init__()
        self.layers = nn.ModuleList(
            [(SharedAttentionalPropagation if sharing[L] else AttentionalPropagation)(feature_dim, num_heads, norm)
             for L in range(2 * n_iterations)]
        )
