"""Assignment heads: IMP's probability-space Sinkhorn with a dustbin, SuperGlue's log-space OT, dual softmax,
and mutual-threshold match extraction. All take optional token masks ``[B, N]`` (True = real token)."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

from .layers import bmv, softmax_

Mask = Optional[torch.Tensor]


def _valid_aug(mask: Mask, b: int, n: int, device) -> torch.Tensor:
    """[B, n+1] bool: real tokens plus the dustbin."""
    m = torch.ones(b, n, dtype=torch.bool, device=device) if mask is None else mask
    return torch.cat([m, torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1)


def augment_with_dustbin(scores: torch.Tensor, bin_score: torch.Tensor, in_room: bool = False) -> torch.Tensor:
    """[B, N, M] -> [B, N+1, M+1] with the scalar ``bin_score`` on the last row, column and corner (one write into
    a preallocated tensor; differentiable in both inputs). ``in_room``: ``scores`` is already the [B, N+1, M+1]
    tensor of :func:`scores_with_room_for_dustbin` (scores in its top-left), which gets the dustbin in place."""
    if in_room:
        out = scores
        n, m = out.shape[1] - 1, out.shape[2] - 1
    else:
        b, n, m = scores.shape
        out = scores.new_empty(b, n + 1, m + 1)
        out[:, :n, :m] = scores
    out[:, n, :] = bin_score.to(out.dtype)
    out[:, :n, m] = bin_score.to(out.dtype)
    return out


def scores_with_room_for_dustbin(md0: torch.Tensor, md1: torch.Tensor, scale: float) -> torch.Tensor:
    """Inference: a [B, N+1, M+1] tensor holding the scores ``scale * md0^T md1`` (``md*`` [B, D, N]) in its
    top-left, for ``sinkhorn_probability(..., in_room=True)`` to add the dustbin in place. On one CPU thread at 2048
    keypoints the copy this saves, with the page faults of a fresh 16 MB tensor, was about 10 ms per head."""
    b, _, n = md0.shape
    m = md1.shape[2]
    buf = md0.new_empty(b, n + 1, m + 1)
    torch.bmm((md0 * scale).transpose(1, 2), md1, out=buf[:, :n, :m])
    return buf


def sinkhorn_probability(scores: torch.Tensor, bin_score: torch.Tensor, iterations: int = 20,
                         mask0: Mask = None, mask1: Mask = None, grad_iterations: Optional[int] = None,
                         in_room: bool = False) -> torch.Tensor:
    """IMP's ``sink_algorithm``: softmax over rows, then ``iterations`` Sinkhorn scalings in probability space.

    Marginals are 1 per keypoint and N+1 (resp. M+1) for the dustbins, as released; padded tokens get 0.
    Returns the [B, N+1, M+1] assignment probabilities (not log).

    ``grad_iterations`` (training speed-up, None = all): the scalings before the last ``grad_iterations`` run
    without autograd (their result is the same; gradients flow through the softmax, the last scalings and the
    final product). Backpropagating through all 20 scalings was 3/4 of a CPU training step.
    ``in_room``: ``scores`` is the [B, N+1, M+1] tensor of :func:`scores_with_room_for_dustbin` (``IMPModel.assign``
    at inference), made the assignment in place.
    """
    s = augment_with_dustbin(scores, bin_score, in_room)
    b, n, m = s.shape[0], s.shape[1] - 1, s.shape[2] - 1
    v0, v1 = _valid_aug(mask0, b, n, s.device), _valid_aug(mask1, b, m, s.device)
    inference = not (torch.is_grad_enabled() and s.requires_grad)  # then ``s`` is ours to overwrite
    if mask0 is None and mask1 is None:
        # inference: softmax in place, no second N x M buffer
        p = softmax_(s) if inference else s.softmax(dim=-1)
    else:
        valid = v0[:, :, None] & v1[:, None, :]
        if inference:
            p = softmax_(s.masked_fill_(~valid, torch.finfo(s.dtype).min)).mul_(valid)
        else:
            p = s.masked_fill(~valid, torch.finfo(s.dtype).min).softmax(dim=-1) * valid
    n_real = v0[:, :-1].sum(-1, keepdim=True).to(s.dtype)
    m_real = v1[:, :-1].sum(-1, keepdim=True).to(s.dtype)
    r = torch.cat([v0[:, :-1].to(s.dtype), n_real + 1], dim=1)
    c = torch.cat([v1[:, :-1].to(s.dtype), m_real + 1], dim=1)
    u = torch.ones_like(r)
    v = torch.ones_like(c)
    training = torch.is_grad_enabled() and p.requires_grad
    n_free = iterations  # scalings without autograd: all at inference, in training all but the last grad_iterations
    if training:
        n_free = 0 if grad_iterations is None else max(0, iterations - int(grad_iterations))
    pt = p.transpose(1, 2)
    for it in range(iterations):  # matrix-vector products per batch element (bmv): no N x M temporaries
        with torch.set_grad_enabled(training and it >= n_free):
            u = r / (bmv(p, v) + 1e-8)
            v = c / (bmv(pt, u) + 1e-8)
    if not training:  # inference: scale in place (no third N x M tensor)
        return p.mul_(u[:, :, None]).mul_(v[:, None, :])
    return p * u[:, :, None] * v[:, None, :]


def dual_softmax(scores: torch.Tensor, bin_score: torch.Tensor, mask0: Mask = None, mask1: Mask = None
                 ) -> torch.Tensor:
    """``exp(log_softmax(S, -1) + log_softmax(S, 1))`` on the dustbin-augmented scores."""
    b, n, m = scores.shape
    s = augment_with_dustbin(scores, bin_score)
    valid = _valid_aug(mask0, b, n, s.device)[:, :, None] & _valid_aug(mask1, b, m, s.device)[:, None, :]
    s = s.masked_fill(~valid, torch.finfo(s.dtype).min)
    return torch.exp(s.log_softmax(-1) + s.log_softmax(1)) * valid


def log_optimal_transport(scores: torch.Tensor, bin_score: torch.Tensor, iterations: int = 100,
                          mask0: Mask = None, mask1: Mask = None) -> torch.Tensor:
    """SuperGlue's log-space optimal transport (for SuperGlue weights loaded into GM); returns probabilities."""
    if mask0 is not None or mask1 is not None:
        raise ValueError("log-space OT (SuperGlue weights) does not support padded batches; match pairs one by one")
    b, n, m = scores.shape
    one = scores.new_tensor(1)
    ms, ns = (m * one).to(scores), (n * one).to(scores)
    couplings = augment_with_dustbin(scores, bin_score)
    norm = -(ms + ns).log()
    # SuperGlue's log_optimal_transport: the dustbin row absorbs up to M (column count) matches, the dustbin
    # column up to N (row count)
    log_mu = torch.cat([norm.expand(n), ms.log()[None] + norm])
    log_nu = torch.cat([norm.expand(m), ns.log()[None] + norm])
    log_mu, log_nu = log_mu[None].expand(b, -1), log_nu[None].expand(b, -1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iterations):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return (couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm).exp()


def mutual_matches(prob: torch.Tensor, threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mutual argmax on the real part of ``prob`` [B, N+1, M+1] with score > threshold.

    Returns ``matches0`` [B, N] (index in image 1 or -1) and ``mscores0`` [B, N] (the assignment probability).
    """
    p = prob[:, :-1, :-1]
    if p.shape[1] == 0 or p.shape[2] == 0:
        z = p.new_zeros(p.shape[0], p.shape[1])
        return z.long() - 1, z
    max0 = p.max(2)
    idx0 = max0.indices
    # row i is mutual when it holds the maximum of its column; with equal maxima in one column the first such row
    # wins, as argmax would. (``p.max(1)`` with indices is a strided reduction, 6x slower than ``amax`` on CPU.)
    col_max = p.amax(1)
    ar = torch.arange(p.shape[1], device=p.device)[None].expand_as(idx0)
    mutual0 = max0.values == col_max.gather(1, idx0)
    first = torch.full_like(col_max, p.shape[1], dtype=torch.long)
    first.scatter_reduce_(1, idx0, torch.where(mutual0, ar, torch.full_like(ar, p.shape[1])), reduce="amin")
    mutual0 &= ar == first.gather(1, idx0)
    mscores0 = torch.where(mutual0, max0.values, torch.zeros_like(max0.values))
    valid0 = mutual0 & (mscores0 > threshold)
    return torch.where(valid0, idx0, torch.full_like(idx0, -1)), mscores0


ASSIGNMENTS: Dict[str, Callable[..., torch.Tensor]] = {
    "sinkhorn": sinkhorn_probability, "dual_softmax": dual_softmax, "log_ot": log_optimal_transport}
