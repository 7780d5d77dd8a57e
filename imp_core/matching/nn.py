"""Nearest-neighbour descriptor matching (``nn``): mutual check, optional Lowe ratio and distance thresholds.

Distances are Euclidean, from fused matmuls (``|a|^2 + |b|^2 - 2 a.b``); the query side is processed in blocks of
at most ``chunk_size`` rows and ~16M distances, so 8k x 8k needs ~64 MB per block, and the best two neighbours of
each reference are merged across blocks. The ratio test (``d1 < ratio * d2``) and ``distance_threshold`` apply in
both directions, as in hloc. Scores are the descriptor similarities ``a.b`` (cosine for unit descriptors).
``match_many`` matches one query against k references with one matmul over the stacked references.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..types import Features, Matches
from ..features.base import resolve_device
from .base import MATCHERS, Matcher


@MATCHERS.register("nn")
class NearestNeighborMatcher(Matcher):
    default_conf: Dict[str, Any] = {
        "mutual": True,
        "ratio_threshold": None,
        "distance_threshold": None,
        "chunk_size": 2048,
    }

    def _init(self, conf: Dict[str, Any]) -> None:
        self.device = resolve_device(conf["device"])
        r = conf["ratio_threshold"]
        if r is not None and not 0 < float(r) <= 1:
            raise ValueError(f"nn matcher: conf 'ratio_threshold' must be in (0, 1] or None, got {r!r}")
        d = conf["distance_threshold"]
        if d is not None and float(d) <= 0:
            raise ValueError(f"nn matcher: conf 'distance_threshold' must be > 0 or None, got {d!r}")
        if int(conf["chunk_size"]) < 1:
            raise ValueError(f"nn matcher: conf 'chunk_size' must be >= 1, got {conf['chunk_size']!r}")

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

    def _match_segments(self, query: Features, refs: List[Features]) -> List[Matches]:
        """Match ``query`` against each of ``refs``: references padded into one (k, M, D) batch, batched matmuls per
        block of query rows, best two neighbours kept in both directions."""
        import torch

        dim = query.descriptors.shape[1]
        for i, r in enumerate(refs):
            if len(r) and r.descriptors.shape[1] != dim:
                raise ValueError(f"nn matcher: descriptor dimension mismatch, query {dim} vs reference {i} "
                                 f"{r.descriptors.shape[1]}")
        sizes = [len(r) for r in refs]
        k, m, n0 = len(refs), max(sizes), len(query)
        if m == 0:
            return [Matches.empty() for _ in refs]
        dev = self.device
        with torch.inference_mode():
            R = torch.zeros((k, m, dim), dtype=torch.float32)
            for i, r in enumerate(refs):
                R[i, : len(r)] = torch.from_numpy(np.ascontiguousarray(r.descriptors, np.float32))
            R = R.to(dev)
            pad = torch.arange(m)[None, :] >= torch.tensor(sizes)[:, None]  # (k, M) True on padding
            rn = (R * R).sum(-1).masked_fill_(pad.to(dev), float("inf"))  # padding is infinitely far
            q = torch.from_numpy(np.ascontiguousarray(query.descriptors, np.float32)).to(dev)
            qn = (q * q).sum(-1)
            k2 = min(2, m)
            rt = R.transpose(1, 2)
            row_d = torch.full((k, n0, 2), float("inf"), device=dev)
            row_i = torch.zeros((k, n0, 2), dtype=torch.long, device=dev)
            col_d = torch.full((k, 2, m), float("inf"), device=dev)
            col_i = torch.zeros((k, 2, m), dtype=torch.long, device=dev)
            # at most chunk_size query rows and ~16M distances (64 MB) per block
            step = max(1, min(int(self.conf["chunk_size"]), (1 << 24) // (k * m)))
            for a in range(0, n0, step):
                b = min(a + step, n0)
                qc = q[a:b]
                # |q - r|^2 - |q|^2 for the rows, |q - r|^2 - |r|^2 for the columns: fused add + matmul, and
                # reductions along the contiguous last axis (fast) in both directions
                vals, idx = torch.topk(torch.baddbmm(rn[:, None, :], qc[None].expand(k, -1, -1), rt, alpha=-2),
                                       k2, dim=2, largest=False)
                row_d[:, a:b, :k2], row_i[:, a:b, :k2] = vals + qn[None, a:b, None], idx
                vals, idx = torch.topk(torch.baddbmm(qn[None, None, a:b], R, qc.t()[None].expand(k, -1, -1),
                                                     alpha=-2), min(2, b - a), dim=2, largest=False)
                vals = vals.transpose(1, 2) + rn[:, None, :]
                best, order = torch.topk(torch.cat([col_d, vals], 1), 2, dim=1, largest=False)
                col_d, col_i = best, torch.cat([col_i, idx.transpose(1, 2) + a], 1).gather(1, order)
            row_d.clamp_min_(0)
            col_d.clamp_min_(0)
            # similarity of the nearest reference: (|q|^2 + |r|^2 - d^2) / 2
            row_s = (qn[None, :] + rn.gather(1, row_i[..., 0]) - row_d[..., 0]) / 2
            return [
                self._select(row_d[i], row_i[i], row_s[i], col_d[i, :, :n], col_i[i, :, :n]) if n else Matches.empty()
                for i, n in enumerate(sizes)
            ]

    def _select(self, row_d, row_i, row_s, col_d, col_i) -> Matches:
        """Apply ratio / distance tests in both directions and the mutual check; distances are squared here."""
        import torch

        ratio, dist = self.conf["ratio_threshold"], self.conf["distance_threshold"]

        def passes(d):  # d: (n, 2) squared distances to the best two
            ok = torch.ones(len(d), dtype=torch.bool, device=d.device)
            if ratio is not None:
                ok &= d[:, 0] < (float(ratio) ** 2) * d[:, 1]  # inf second neighbour always passes
            if dist is not None:
                ok &= d[:, 0] <= float(dist) ** 2
            return ok

        ok0 = passes(row_d)
        nn0 = row_i[:, 0]
        if self.conf["mutual"]:
            ok1 = passes(col_d.t())
            nn1 = col_i[0]
            ok0 &= ok1[nn0] & (nn1[nn0] == torch.arange(len(nn0), device=nn0.device))
        i0 = torch.nonzero(ok0)[:, 0]
        indices = torch.stack([i0, nn0[i0]], 1).cpu().numpy()
        return Matches(indices, row_s[i0].float().cpu().numpy())
