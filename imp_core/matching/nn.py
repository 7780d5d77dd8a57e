"""Nearest-neighbour descriptor matching (``nn``): mutual check, optional Lowe ratio and distance thresholds.

One query is matched against k references at once (``match_many``; ``match`` is the case k = 1): the references'
descriptors are concatenated (no padding to the largest one) and, per block of query rows, one fused matmul gives
``-|q - r|^2 / 2 = q.r - |q|^2/2 - |r|^2/2`` for every reference at once. That single matrix serves both
directions: the best reference keypoint of each query row (per reference segment, a reduction along the contiguous
axis) and the best query keypoint of each reference column (merged across blocks; on CPU only its value, since a
row is its column's mutual match exactly when its best value is the column's best). Only the best neighbour is kept
unless a ratio test needs the second. Blocks hold at most ``chunk_size`` rows and ``block_elements`` distances
(8 MiB by default, so a block stays in the CPU caches), and the block buffer is kept between calls (no fresh
allocation, hence no page faults, per frame). The ratio test (``d1 < ratio * d2``) and ``distance_threshold``
apply in both directions, as in hloc. Scores are the descriptor similarities ``q.r`` (cosine for unit
descriptors). A matcher instance keeps its block buffer: use one instance per thread.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np

from ..device import resolve_device
from ..types import Features, Matches
from .base import MATCHERS, Matcher

if TYPE_CHECKING:
    import torch


@MATCHERS.register("nn")
class NearestNeighborMatcher(Matcher):
    default_conf: Dict[str, Any] = {
        "mutual": True,
        "ratio_threshold": None,
        "distance_threshold": None,
        "chunk_size": 2048,  # query rows per block at most
        "block_elements": 1 << 21,  # distances per block at most (2M float32 = 8 MiB)
    }

    def _init(self, conf: Dict[str, Any]) -> None:
        self.device = resolve_device(conf["device"])
        r = conf["ratio_threshold"]
        if r is not None and not 0 < float(r) <= 1:
            raise ValueError(f"nn matcher: conf 'ratio_threshold' must be in (0, 1] or None, got {r!r}")
        d = conf["distance_threshold"]
        if d is not None and float(d) <= 0:
            raise ValueError(f"nn matcher: conf 'distance_threshold' must be > 0 or None, got {d!r}")
        for key in ("chunk_size", "block_elements"):
            if int(conf[key]) < 1:
                raise ValueError(f"nn matcher: conf {key!r} must be >= 1, got {conf[key]!r}")
        # the block buffer, reused between calls (grown when a larger block is needed)
        self._buffer: Optional[torch.Tensor] = None

    def _match(self, f0: Features, f1: Features, context: Dict[str, Any]) -> Matches:
        return self._match_segments(f0, [f1])[0]

    def match_many(self, query: Features, refs: Sequence[Features],
                   contexts: Optional[Sequence[Optional[Dict[str, Any]]]] = None) -> List[Matches]:
        self.check_features(query)
        for r in refs:
            self.check_features(r)
        if len(refs) == 0:
            return []
        if len(query) == 0:
            return [Matches.empty() for _ in refs]
        return self._match_segments(query, list(refs))

    def _block(self, rows: int, cols: int):
        """A (rows, cols) view of the reused block buffer."""
        import torch

        need = rows * cols
        if self._buffer is None or self._buffer.numel() < need:
            self._buffer = torch.empty(need, dtype=torch.float32, device=self.device)
        return self._buffer[:need].view(rows, cols)

    def _match_segments(self, query: Features, refs: List[Features]) -> List[Matches]:
        """Match ``query`` against each of ``refs`` (their descriptors concatenated, one matrix per query block)."""
        import torch

        dim = query.descriptors.shape[1]
        for i, r in enumerate(refs):
            if len(r) and r.descriptors.shape[1] != dim:
                raise ValueError(f"nn matcher: descriptor dimension mismatch, query {dim} vs reference {i} "
                                 f"{r.descriptors.shape[1]}")
        sizes = [len(r) for r in refs]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total, n0 = int(offsets[-1]), len(query)
        if total == 0:
            return [Matches.empty() for _ in refs]
        with torch.inference_mode():
            R = torch.from_numpy(np.concatenate([np.asarray(r.descriptors, np.float32).reshape(-1, dim)
                                                 for r in refs])).to(self.device)
            q = torch.from_numpy(np.ascontiguousarray(query.descriptors, np.float32)).to(self.device)
            rn = (R * R).sum(-1)
            qn = (q * q).sum(-1)
            # [q, |q|^2, 1] . [r, -1/2, -|r|^2/2] = q.r - |q|^2/2 - |r|^2/2 = -|q - r|^2 / 2: one fused matmul gives
            # the (negated, halved) squared distances for both directions, larger is nearer
            qa = torch.cat([q, qn[:, None], torch.ones_like(qn)[:, None]], 1)
            rat = torch.cat([R, torch.full_like(rn, -0.5)[:, None], (-0.5 * rn)[:, None]], 1).t()
            step = max(1, min(int(self.conf["chunk_size"]), int(self.conf["block_elements"]) // total))
            blocks = ((a, min(a + step, n0)) for a in range(0, n0, step))
            if self.conf["ratio_threshold"] is None and self.device == "cpu":
                row_v, row_i, col_v, col_i = self._best_cpu(qa, rat, blocks, offsets)
            else:
                row_v, row_i, col_v, col_i = self._best_topk(qa, rat, blocks, offsets)
            # squared distances, clamped at 0 against rounding
            row_d = (-2 * row_v).clamp_min_(0)
            col_d = (-2 * col_v).clamp_min_(0) if col_v is not None else None
            ratio, dist = self.conf["ratio_threshold"], self.conf["distance_threshold"]
            out = []
            for s, n in enumerate(sizes):
                if not n:
                    out.append(Matches.empty())
                    continue
                o0, o1 = int(offsets[s]), int(offsets[s + 1])
                ok = self._passes(row_d[s], ratio, dist)
                nn0 = row_i[s, :, 0]
                if col_d is not None:  # mutual
                    ok &= self._passes(col_d[:, o0:o1].t(), ratio, dist)[nn0]
                    if col_i is not None:
                        ok &= col_i[0, o0:o1][nn0] == torch.arange(n0, device=nn0.device)
                    else:  # the row's best value is its column's best value; on an exact tie the first row wins
                        ok &= row_v[s, :, 0] >= col_v[0, o0 + nn0]
                i0 = torch.nonzero(ok)[:, 0]
                j0 = nn0[i0]
                sim = (qn[i0] + rn[o0 + j0] - row_d[s, i0, 0]) / 2
                idx = torch.stack([i0, j0], 1).cpu().numpy()
                sim = sim.float().cpu().numpy()
                if col_d is not None and col_i is None and len(idx):
                    first = np.sort(np.unique(idx[:, 1], return_index=True)[1])
                    idx, sim = idx[first], sim[first]
                out.append(Matches(idx, sim))
            return out

    def _best_cpu(self, qa, rat, blocks, offsets):
        """Best reference of each query row per reference (value, index) and best value of each reference column:
        one matmul into the reused block buffer per block, reductions on its numpy view (torch's indexed max
        reductions are 3-25x slower on CPU). Columns need no index: the mutual check compares values."""
        import torch

        n0, total = len(qa), int(offsets[-1])
        row_v = np.full((len(offsets) - 1, n0), -np.inf, np.float32)
        row_i = np.zeros((len(offsets) - 1, n0), np.int64)
        col_v = np.full(total, -np.inf, np.float32) if self.conf["mutual"] else None
        for a, b in blocks:
            blk = torch.mm(qa[a:b], rat, out=self._block(b - a, total)).numpy()
            rows = np.arange(b - a)
            for s in range(len(offsets) - 1):
                o0, o1 = int(offsets[s]), int(offsets[s + 1])
                if o1 > o0:
                    seg = blk[:, o0:o1]
                    j = seg.argmax(axis=1)
                    row_i[s, a:b], row_v[s, a:b] = j, seg[rows, j]
            if col_v is not None:
                np.maximum(col_v, blk.max(axis=0), out=col_v)
        t = torch.from_numpy
        return (t(row_v)[..., None], t(row_i)[..., None], t(col_v)[None] if col_v is not None else None, None)

    def _best_topk(self, qa, rat, blocks, offsets):
        """As ``_best_cpu`` with torch reductions (any device), and the best two when a ratio test needs them."""
        import torch

        dev = qa.device
        k2 = 2 if self.conf["ratio_threshold"] is not None else 1
        n0, total, k = len(qa), int(offsets[-1]), len(offsets) - 1
        row_v = torch.full((k, n0, k2), -float("inf"), device=dev)
        row_i = torch.zeros((k, n0, k2), dtype=torch.long, device=dev)
        mutual = bool(self.conf["mutual"])
        col_v = torch.full((k2, total), -float("inf"), device=dev) if mutual else None
        col_i = torch.zeros((k2, total), dtype=torch.long, device=dev) if mutual else None
        for a, b in blocks:
            blk = torch.mm(qa[a:b], rat, out=self._block(b - a, total))
            for s in range(k):
                o0, o1 = int(offsets[s]), int(offsets[s + 1])
                kk = min(k2, o1 - o0)
                if kk:
                    row_v[s, a:b, :kk], row_i[s, a:b, :kk] = torch.topk(blk[:, o0:o1], kk, dim=1)
            if mutual:
                v, i = torch.topk(blk, min(k2, b - a), dim=0)
                col_v, order = torch.topk(torch.cat([col_v, v], 0), k2, dim=0)
                col_i = torch.cat([col_i, i + a], 0).gather(0, order)
        return row_v, row_i, col_v, col_i

    @staticmethod
    def _passes(d, ratio, dist):
        """Ratio / distance tests on (n, k2) squared distances to the best k2 neighbours."""
        import torch

        ok = torch.ones(len(d), dtype=torch.bool, device=d.device)
        if ratio is not None and d.shape[1] > 1:
            ok &= d[:, 0] < (float(ratio) ** 2) * d[:, 1]  # an inf second neighbour always passes
        if dist is not None:
            ok &= d[:, 0] <= float(dist) ** 2
        return ok
