"""GM / IMP / EIMP: one SuperGlue-style model with a matching head after every self+cross iteration.

- ``gm``: 15 iterations, every layer computes its own attention (the re-trained SuperGlue baseline).
- ``imp``: attention sharing: iterations 3, 5, ..., 13 reuse the attention probabilities of the previous
  iteration (those layers have only a value projection and a merge).
- ``eimp``: ``imp`` + adaptive pooling: after each sharing iteration, tokens that are neither matchable
  (assignment row/column mass >= threshold) nor receive above-median attention are pruned. Conf ``pooling``:
  ``"remove"`` (default; the iterative path and speed): pruned tokens are removed physically, so later layers run
  on fewer tokens. ``"mask"`` (the released non-iterative ``produce_matches``): every token stays a query and in
  the InstanceNorm statistics; pruned tokens are only masked as attention keys and left out of the assignment.

The forward pass is split into small steps (``encode``, ``iterate``, ``assign``, ``pool``, ``matches``) that
``iterative.py`` drives with pose checks in between; ``forward`` runs all iterations for training.
Parameter names equal the released checkpoints of Xue et al., CVPR 2023 (``feixue94/imp-release``); the key/shape
layout is pinned by ``test/test_imp_model.py::official_layout``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ...config import merge
from .layers import AttentionalGNN, Conv1x1, KeypointEncoder, bmv, normalize_keypoints
from .sinkhorn import ASSIGNMENTS, mutual_matches, scores_with_room_for_dustbin

VARIANTS = ("gm", "imp", "eimp")
POOLING = ("remove", "mask")


def sharing_pattern(n_iterations: int) -> List[bool]:
    """Released pattern ``[F, F]*2 + [F, F, T, T]*21`` (per attentional layer), truncated to 2 * n_iterations."""
    return ([False, False] * 2 + [False, False, True, True] * 21)[: 2 * n_iterations]


@dataclass
class MatchState:
    """Token state during inference. ``ids*`` map current tokens to the original keypoint indices."""

    desc0: torch.Tensor  # [B, D, N0']
    desc1: torch.Tensor  # [B, D, N1']
    mask0: Optional[torch.Tensor]  # [B, N0'] bool or None (all valid)
    mask1: Optional[torch.Tensor]
    ids0: torch.Tensor  # [B, N0'] long
    ids1: torch.Tensor
    n0: int  # original number of keypoints (padded size)
    n1: int
    probs: Dict[str, torch.Tensor] = field(default_factory=dict)  # "00", "11", "01", "10" [B, H, Nq, Nk]
    # pooling "mask": tokens not pruned [B, N'] (None = all real tokens); they alone are attention keys and enter
    # the assignment, while every real token (``mask*``) stays a query and counts in the InstanceNorm statistics
    keep0: Optional[torch.Tensor] = None
    keep1: Optional[torch.Tensor] = None

    @property
    def keys0(self) -> Optional[torch.Tensor]:
        """Tokens of image 0 that are attention keys and take part in the assignment."""
        return self.mask0 if self.keep0 is None else self.keep0

    @property
    def keys1(self) -> Optional[torch.Tensor]:
        return self.mask1 if self.keep1 is None else self.keep1

    def tokens(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Number of tokens per batch element for each image (real and not pruned)."""
        def count(mask, x):
            return torch.full((x.shape[0],), x.shape[-1], device=x.device) if mask is None else mask.sum(1)
        return count(self.keys0, self.desc0), count(self.keys1, self.desc1)


def compact_tokens(desc: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Physically drop tokens with ``keep`` False (kept ones stay in order; batches re-padded to the longest)."""
    counts = keep.sum(1)
    n_new = int(counts.max())
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n_new]
    desc = desc.gather(2, order[:, None, :].expand(-1, desc.shape[1], -1))
    ids = ids.gather(1, order)
    mask = torch.arange(n_new, device=desc.device)[None] < counts[:, None]
    return desc, ids, (None if bool(mask.all()) else mask)


def attention_received(prob: torch.Tensor, query_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """[B, H, Nq, Nk] attention -> [B, Nk]: summed over heads and over the real queries."""
    if query_mask is None:
        return prob.sum(dim=(1, 2))
    summed = prob[:, 0] if prob.shape[1] == 1 else prob.sum(1)  # [B, Nq, Nk] (one head: no copy)
    return bmv(summed.transpose(1, 2), query_mask.to(prob.dtype))


class IMPModel(nn.Module):
    default_conf: Dict[str, Any] = {
        "variant": "imp",  # gm | imp | eimp
        "descriptor_dim": 256,  # model width (= the features' descriptor dim in the released models)
        # features' descriptor dim when it differs from the width: a linear ``input_proj`` maps the descriptors to
        # ``descriptor_dim`` first (None = equal, no projection: the released layout)
        "input_dim": None,
        "keypoint_encoder": [32, 64, 128, 256],
        "n_layers": 15,  # self+cross iterations
        "num_heads": 4,
        "norm": "in",  # 'in' (released IMP) or 'bn' (SuperGlue weights)
        "assignment": "sinkhorn",  # sinkhorn (IMP) | dual_softmax | log_ot (SuperGlue)
        "sinkhorn_iterations": 20,
        "sinkhorn_grad_iterations": None,  # training only: backpropagate through the last k scalings (None = all)
        "match_threshold": 0.2,
        "n_min_tokens": 256,  # EIMP: never pool an image with this many tokens or fewer
        "pool_threshold": 0.1,  # EIMP: assignment mass for a token to count as matchable
        "first_it_to_update": 2,
        "pooling": "remove",  # EIMP inference: "remove" (physical, fast) | "mask" (released produce_matches)
    }

    def __init__(self, conf: Optional[Mapping[str, Any]] = None):
        super().__init__()
        self.conf = c = merge(self.default_conf, conf, where="IMPModel")
        if c["variant"] not in VARIANTS:
            raise ValueError(f"IMPModel variant must be one of {VARIANTS}, got {c['variant']!r}")
        if c["assignment"] not in ASSIGNMENTS:
            raise ValueError(f"IMPModel assignment must be one of {sorted(ASSIGNMENTS)}, got {c['assignment']!r}")
        if c["pooling"] not in POOLING:
            raise ValueError(f"IMPModel pooling must be one of {POOLING}, got {c['pooling']!r}")
        d, n = int(c["descriptor_dim"]), int(c["n_layers"])
        self.sharing = sharing_pattern(n) if c["variant"] != "gm" else [False] * (2 * n)
        if c["input_dim"] is not None and int(c["input_dim"]) != d:
            self.input_proj: Optional[Conv1x1] = Conv1x1(int(c["input_dim"]), d)
        else:
            self.input_proj = None
        self.kenc = KeypointEncoder(d, c["keypoint_encoder"], c["norm"])
        self.gnn = AttentionalGNN(d, int(c["num_heads"]), n, self.sharing, c["norm"])
        self.final_proj = nn.ModuleList([Conv1x1(d, d) for _ in range(n)])
        self.register_parameter("bin_score", nn.Parameter(torch.tensor(1.0)))

    @property
    def n_layers(self) -> int:
        return int(self.conf["n_layers"])

    @property
    def descriptor_dim(self) -> int:
        """The model width (attention and matching heads)."""
        return int(self.conf["descriptor_dim"])

    @property
    def input_dim(self) -> int:
        """The descriptor dimension the model reads (the width unless ``input_proj`` maps it)."""
        return int(self.conf["input_dim"] or self.conf["descriptor_dim"])

    def shared_iteration(self, i: int) -> bool:
        return self.sharing[2 * i]

    def pools_after(self, i: int) -> bool:
        """Whether EIMP pools after iteration ``i``: sharing iterations from ``first_it_to_update`` on, not the last
        (whatever this model's variant; calibration asks it of the weights)."""
        return self.shared_iteration(i) and i >= self.conf["first_it_to_update"] and i < self.n_layers - 1

    def pooling_iteration(self, i: int) -> bool:
        """Whether this model pools after iteration ``i`` (EIMP only)."""
        return self.conf["variant"] == "eimp" and self.pools_after(i)

    def _needs_prob(self, i: int) -> bool:
        return i + 1 < self.n_layers and self.shared_iteration(i + 1)

    # ---- steps -------------------------------------------------------------------------------------------
    def encode(self, data: Mapping[str, torch.Tensor]) -> MatchState:
        """``data``: keypoints{0,1} [B,N,2] px, scores{0,1} [B,N], descriptors{0,1} [B,N,D], image_size{0,1}
        [B,2] (w,h), optional mask{0,1} [B,N] bool."""
        d0, d1 = data["descriptors0"], data["descriptors1"]
        for k, d in (("descriptors0", d0), ("descriptors1", d1)):
            if d.shape[-1] != self.input_dim:
                raise ValueError(f"{k} have dimension {d.shape[-1]} but the model expects {self.input_dim} "
                                 "(256 for SuperPoint weights, 128 for SIFT weights)")
        m0, m1 = data.get("mask0"), data.get("mask1")
        k0 = normalize_keypoints(data["keypoints0"], data["image_size0"])
        k1 = normalize_keypoints(data["keypoints1"], data["image_size1"])
        d0, d1 = d0.transpose(1, 2), d1.transpose(1, 2)
        if self.input_proj is not None:
            d0, d1 = self.input_proj(d0), self.input_proj(d1)
        desc0 = d0 + self.kenc(k0, data["scores0"], m0)
        desc1 = d1 + self.kenc(k1, data["scores1"], m1)
        b, n0, n1 = d0.shape[0], d0.shape[2], d1.shape[2]
        ar0 = torch.arange(n0, device=d0.device)[None].expand(b, -1)
        ar1 = torch.arange(n1, device=d1.device)[None].expand(b, -1)
        return MatchState(desc0, desc1, m0, m1, ar0, ar1, n0, n1)

    def iterate(self, st: MatchState, i: int) -> MatchState:
        """One self + one cross layer (both directions share the layer weights).

        Queries and InstanceNorm statistics use the real tokens (``mask*``), keys the unpruned ones (``keys*``).
        The released ``produce_matches`` also drops the cross-layer key mask at iteration 3; it is not copied
        because no token is pruned before the end of iteration 3 (the first sharing iteration), so it changes
        nothing.
        """
        need = self._needs_prob(i)
        self_layer, cross_layer = self.gnn.layers[2 * i], self.gnn.layers[2 * i + 1]
        p = st.probs
        k0, k1 = st.keys0, st.keys1
        delta0, p00 = self_layer(st.desc0, st.desc0, st.mask0, k0, p.get("00"), need)
        delta1, p11 = self_layer(st.desc1, st.desc1, st.mask1, k1, p.get("11"), need)
        st.desc0, st.desc1 = st.desc0 + delta0, st.desc1 + delta1
        delta0, p01 = cross_layer(st.desc0, st.desc1, st.mask0, k1, p.get("01"), need)
        delta1, p10 = cross_layer(st.desc1, st.desc0, st.mask1, k0, p.get("10"), need)
        st.desc0, st.desc1 = st.desc0 + delta0, st.desc1 + delta1
        keep = need or self.shared_iteration(i)
        st.probs = {"00": p00, "11": p11, "01": p01, "10": p10} if keep else {}
        return st

    def assign(self, st: MatchState, i: int, iterations: Optional[int] = None) -> torch.Tensor:
        """Assignment probabilities [B, N0'+1, N1'+1] from the head of iteration ``i`` (``iterations``: Sinkhorn
        scalings, default the conf's ``sinkhorn_iterations``)."""
        md0, md1 = self.final_proj[i](st.desc0), self.final_proj[i](st.desc1)
        name = self.conf["assignment"]
        kwargs: Dict[str, Any] = {}
        if name == "sinkhorn" and md0.dtype == torch.float32 and not torch.is_grad_enabled():
            scores = scores_with_room_for_dustbin(md0, md1, self.descriptor_dim ** -0.5)  # inference: no N x M copy
            kwargs["in_room"] = True
        else:  # the assignment runs in float32 (also under autocast): fp16 Sinkhorn marginals overflow easily
            scores = torch.einsum("bdn,bdm->bnm", md0, md1).float() / self.descriptor_dim ** 0.5
        if name != "dual_softmax":
            kwargs["iterations"] = int(self.conf["sinkhorn_iterations"] if iterations is None else iterations)
        if name == "sinkhorn" and self.training and self.conf["sinkhorn_grad_iterations"] is not None:
            kwargs["grad_iterations"] = int(self.conf["sinkhorn_grad_iterations"])
        # and without autocast: under CUDA fp16 autocast the Sinkhorn products ran in half precision, the 1e-8 guard
        # of its divisions vanished and every iteration's probabilities were NaN (H200, 2026-12-04)
        with torch.autocast(device_type=scores.device.type, enabled=False):
            return ASSIGNMENTS[name](scores, self.bin_score.float(), mask0=st.keys0, mask1=st.keys1, **kwargs)

    def matches(self, st: MatchState, prob: torch.Tensor, threshold: Optional[float] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mutual matches in original keypoint indices: matches0 [B, N0] (-1 = none), scores0 [B, N0]."""
        th = self.conf["match_threshold"] if threshold is None else threshold
        m0, s0 = mutual_matches(prob, th)
        b = m0.shape[0]
        full_m = torch.full((b, st.n0), -1, dtype=torch.long, device=m0.device)
        full_s = torch.zeros((b, st.n0), dtype=s0.dtype, device=s0.device)
        mapped = torch.where(m0 >= 0, st.ids1.gather(1, m0.clamp(min=0)), torch.full_like(m0, -1))
        full_m.scatter_(1, st.ids0, mapped)
        full_s.scatter_(1, st.ids0, s0)
        return full_m, full_s

    def pool(self, st: MatchState, prob: torch.Tensor, threshold: Union[None, float, Sequence[float]] = None,
             count_dustbin: bool = False, n_min_tokens: Optional[int] = None) -> bool:
        """EIMP adaptive pooling (threshold per batch element or shared); returns True when tokens were pruned.

        ``pooling`` "remove" gathers the kept tokens; "mask" only marks them (``keep*``). An image with
        ``n_min_tokens`` (default: the conf's) tokens or fewer is not pooled; ``count_dustbin``: the released
        iterative evaluation (``AdaGMN.pool``) compares N + 1 (the assignment's row count, dustbin included);
        ``produce_matches`` and the default compare N.
        """
        th = self.conf["pool_threshold"] if threshold is None else threshold
        th = [float(th)] * prob.shape[0] if isinstance(th, (int, float)) else [float(t) for t in th]
        p = prob[:, :-1, :-1]
        n_min = int(self.conf["n_min_tokens"] if n_min_tokens is None else n_min_tokens) - int(bool(count_dustbin))
        keep0 = self._keep(p.sum(2), st.probs["00"], st.probs["10"], st.keys0, st.mask0, st.mask1, th, n_min)
        keep1 = self._keep(p.sum(1), st.probs["11"], st.probs["01"], st.keys1, st.mask1, st.mask0, th, n_min)
        for side, keep in (("0", keep0), ("1", keep1)):
            if keep is None:
                continue
            if self.conf["pooling"] == "mask":
                setattr(st, f"keep{side}", keep)
            else:
                desc, ids, mask = compact_tokens(getattr(st, f"desc{side}"), getattr(st, f"ids{side}"), keep)
                setattr(st, f"desc{side}", desc)
                setattr(st, f"ids{side}", ids)
                setattr(st, f"mask{side}", mask)
        changed = keep0 is not None or keep1 is not None
        if changed:
            st.probs = {}
        return changed

    def _keep(self, mass: torch.Tensor, prob_self: torch.Tensor, prob_cross: torch.Tensor,
              mask: Optional[torch.Tensor], query_self: Optional[torch.Tensor], query_cross: Optional[torch.Tensor],
              th: Sequence[float], n_min: int) -> Optional[torch.Tensor]:
        """Tokens to keep for one image: matchable ones plus those with above-median attention (self or cross).

        ``prob_self`` / ``prob_cross`` are [B, H, Nq, N] with this image's tokens as keys; a token's attention is
        the sum over heads and over the real queries (``query_*``; padding of a batch does not vote). ``mask``:
        this image's current tokens (kept and real); an image with ``n_min`` of them or fewer is not pooled.
        Returns None if no batch element changes.
        """
        valid = torch.ones_like(mass, dtype=torch.bool) if mask is None else mask
        imp_self = attention_received(prob_self, query_self)
        imp_cross = attention_received(prob_cross, query_cross)
        keep = valid.clone()
        changed = False
        for b in range(mass.shape[0]):
            n = int(valid[b].sum())
            if n <= n_min:
                continue
            matchable = (mass[b] >= th[b]) & valid[b]
            if not bool(matchable.any()):
                continue
            k = matchable.clone()
            for imp in (imp_self[b], imp_cross[b]):
                k |= (imp >= torch.median(imp[matchable])) & valid[b]
            if int(k.sum()) < n:
                keep[b] = k
                changed = True
        return keep if changed else None

    # ---- full passes -------------------------------------------------------------------------------------
    def forward(self, data: Mapping[str, torch.Tensor]) -> List[torch.Tensor]:
        """Training pass: assignment probabilities after every iteration (no pooling: EIMP trains as IMP)."""
        st = self.encode(data)
        out = []
        for i in range(self.n_layers):
            st = self.iterate(st, i)
            out.append(self.assign(st, i))
        return out

    @torch.no_grad()
    def match(self, data: Mapping[str, torch.Tensor], threshold: Optional[float] = None) -> Dict[str, Any]:
        """All iterations without pose checks (EIMP pools with the default threshold; with ``pooling: mask`` this is
        the released ``AdaGMN.produce_matches``)."""
        st = self.encode(data)
        prob = None
        for i in range(self.n_layers):
            st = self.iterate(st, i)
            if self.pooling_iteration(i) or i == self.n_layers - 1:
                prob = self.assign(st, i)
                if self.pooling_iteration(i):
                    self.pool(st, prob)
        assert prob is not None  # set at the last iteration (n_layers >= 1)
        m0, s0 = self.matches(st, prob, threshold)
        t0, t1 = st.tokens()
        return {"matches0": m0, "scores0": s0, "tokens0": t0, "tokens1": t1}
