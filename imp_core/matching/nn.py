"""Nearest-neighbour descriptor matching (``nn``): mutual check, optional Lowe ratio and distance thresholds.

Distances are Euclidean, computed from one matmul per block (``|a|^2 + |b|^2 - 2 a.b``); the query side is
processed in chunks of ``chunk_size`` rows so that 8k x 8k fits in little memory, and column-wise nearest
neighbours are merged across chunks. The ratio test (``d1 < ratio * d2``) and ``distance_threshold`` apply in
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
        """Match ``query`` against each of ``refs`` (stacked into one matrix)."""
        import torch

        dim = query.descriptors.shape[1]
        for i, r in enumerate(refs):
            if len(r) and r.descriptors.shape[1] != dim:
                raise ValueError(f"nn matcher: descriptor dimension mismatch, query {dim} vs reference {i} "
                                 f"{r.descriptors.shape[1]}")
        sizes = [len(r) for r in refs]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        with torch.inference_mode():
            q = torch.from_numpy(np.ascontiguousarray(query.descriptors, np.float32)).to(self.device)
            R = torch.from_numpy(np.concatenate([r.descriptors.reshape(len(r), dim) for r in refs]).astype(
                np.float32)).to(self.device)
            qn, rn = (q * q).sum(1), (R * R).sum(1)
            n0 = len(q)
            # per segment: row-wise best two (query -> ref) and column-wise best two (ref -> query)
            row_d = [torch.full((n0, 2), float("inf"), device=self.device) for _ in refs]
            row_i = [torch.zeros((n0, 2), dtype=torch.long, device=self.device) for _ in refs]
            row_s = [torch.zeros(n0, device=self.device) for _ in refs]
            col_d = torch.full((2, len(R)), float("inf"), device=self.device)
            col_i = torch.zeros((2, len(R)), dtype=torch.long, device=self.device)
            step = int(self.conf["chunk_size"])
            for a in range(0, n0, step):
                b = min(a + step, n0)
                sim = q[a:b] @ R.t()
                d2 = (qn[a:b, None] + rn[None, :] - 2 * sim).clamp_min_(0)
                for k, (s0, s1) in enumerate(zip(bounds[:-1], bounds[1:])):
                    if s1 == s0:
                        continue
                    kk = min(2, s1 - s0)
                    vals, idx = torch.topk(d2[:, s0:s1], kk, dim=1, largest=False)
                    row_d[k][a:b, :kk] = vals
                    row_i[k][a:b, :kk] = idx
                    row_s[k][a:b] = sim[:, s0:s1].gather(1, idx[:, :1])[:, 0]
                kk = min(2, b - a)
                vals, idx = torch.topk(d2, kk, dim=0, largest=False)
                cand_d = torch.cat([col_d, vals])
                cand_i = torch.cat([col_i, idx + a])
                best, order = torch.topk(cand_d, 2, dim=0, largest=False)
                col_d, col_i = best, cand_i.gather(0, order)
            out = []
            for k, (s0, s1) in enumerate(zip(bounds[:-1], bounds[1:])):
                if s1 == s0:
                    out.append(Matches.empty())
                    continue
                out.append(self._select(row_d[k], row_i[k], row_s[k], col_d[:, s0:s1], col_i[:, s0:s1]))
        return out

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
