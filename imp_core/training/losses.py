"""Losses: IMP's matching NLL at every iteration, and (option) a pose loss from a weighted eight-point E.

Matching (``GraphLoss``): ``L = -mean log P_ij`` over ground-truth matches
``- (mean log P_i,dust over unmatched rows + mean log P_dust,j over unmatched columns) / 2``, per pair then
averaged over the batch and over iterations. Ignored keypoints (-2) take no part.

Pose (our addition; the released code has none, the paper describes pose supervision): at each iteration every
keypoint of image 0 proposes its best partner j* with weight P_ij*; a weighted eight-point algorithm (OANet
style: smallest eigenvector of A^T W A in normalized camera coordinates) gives E_hat, differentiable through the
weights; the loss is the symmetric epipolar distance of the ground-truth matches under E_hat, clamped at
``margin`` (OANet's geometric loss).
"""
from __future__ import annotations

from typing import Dict, List

import torch

from .correspondences import UNMATCHED


def matching_nll(prob: torch.Tensor, gt0: torch.Tensor, gt1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """NLL of one iteration's assignment [B, N+1, M+1] given labels gt0 [B, N], gt1 [B, M].

    Per pair: the mean -log P of its ground-truth matches (when it has any) plus half the sum of the mean -log P
    of its unmatched rows' and columns' dustbin entries (those it has); averaged over the batch. Only the entries
    the loss reads are gathered and logged: a per-pair loop over the whole matrix cost a zero-filled batch-sized
    gradient per pair and term in the backward pass (``fill_`` was 20 % of a profiled CPU training step)."""
    prob = prob.float()
    n = prob.shape[1] - 1

    def masked_mean(logp: torch.Tensor, mask: torch.Tensor):
        count = mask.sum(1)
        return (logp * mask).sum(1) / count.clamp(min=1), count > 0

    def log(x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.clamp(min=eps))

    matched = gt0 >= 0
    at_gt = torch.gather(prob[:, :n], 2, gt0.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    m, has_m = masked_mean(log(at_gt), matched)
    u0, has_u0 = masked_mean(log(prob[:, :n, -1]), gt0 == UNMATCHED)
    u1, has_u1 = masked_mean(log(prob[:, -1, :-1]), gt1 == UNMATCHED)
    zero = prob.new_zeros(())
    per_pair = -(torch.where(has_m, m, zero) + (torch.where(has_u0, u0, zero) + torch.where(has_u1, u1, zero)) / 2)
    return per_pair.mean()


def _normalize(kpts: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """[B, N, 2] pixels -> [B, N, 3] normalized homogeneous coordinates."""
    ones = torch.ones_like(kpts[..., :1])
    return torch.cat([kpts, ones], -1) @ torch.linalg.inv(K).transpose(1, 2)


def weighted_eight_point(x0: torch.Tensor, x1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """E [B, 3, 3] minimizing sum_i w_i (x1_i^T E x0_i)^2 with ||E|| = 1 (x*: [B, N, 3] normalized coords)."""
    A = (x1[..., :, None] * x0[..., None, :]).flatten(-2)  # [B, N, 9], row-major E
    M = A.transpose(1, 2) @ (A * w[..., None])
    _, vecs = torch.linalg.eigh(M.double())
    return vecs[..., 0].to(x0.dtype).reshape(-1, 3, 3)


def symmetric_epipolar(E: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Symmetric epipolar distance [B, N] of normalized correspondences."""
    Ex0 = x0 @ E.transpose(1, 2)
    Etx1 = x1 @ E
    num = (x1 * Ex0).sum(-1) ** 2
    return num * (1 / (Ex0[..., :2].pow(2).sum(-1) + 1e-9) + 1 / (Etx1[..., :2].pow(2).sum(-1) + 1e-9))


def pose_loss(prob: torch.Tensor, data: Dict[str, torch.Tensor], margin: float = 0.1) -> torch.Tensor:
    x0 = _normalize(data["keypoints0"], data["K0"])
    x1 = _normalize(data["keypoints1"], data["K1"])
    p = prob[:, :-1, :-1].float()
    w, j = p.max(2)
    E = weighted_eight_point(x0, torch.gather(x1, 1, j[..., None].expand(-1, -1, 3)), w)
    losses = []
    for i in range(prob.shape[0]):
        g = data["gt0"][i]
        m = g >= 0
        if int(m.sum()) < 8:
            continue
        d = symmetric_epipolar(E[i:i + 1], x0[i:i + 1, m], x1[i:i + 1, g[m]])
        losses.append(d.clamp(max=margin).mean())
    return torch.stack(losses).mean() if losses else prob.new_zeros(())


def total_loss(probs: List[torch.Tensor], data: Dict[str, torch.Tensor], pose_weight: float = 0.0,
               pose_margin: float = 0.1) -> Dict[str, torch.Tensor]:
    """Average over iterations of the matching NLL (+ ``pose_weight`` x pose loss)."""
    match = torch.stack([matching_nll(p, data["gt0"], data["gt1"]) for p in probs]).mean()
    out = {"match": match, "loss": match}
    if pose_weight > 0:
        pose = torch.stack([pose_loss(p, data, pose_margin) for p in probs]).mean()
        out["pose"] = pose
        out["loss"] = match + pose_weight * pose
    return out
