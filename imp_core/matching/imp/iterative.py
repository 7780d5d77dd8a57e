"""Iterative inference: match after checkpoint iterations, check the pose, stop when it is stable (IMP §3).

Two modes (``IterativeMatcher(mode=...)``, matcher conf ``iterative_mode``):

``"localization"`` (default, ours). For each batch element (one query against one reference):
1. after a checkpoint iteration (default every iteration from the third on, 2, 3, ..., n - 2, counting from 0;
   ``default_checkpoints``) take mutual matches with ``checkpoint_threshold`` (0.1);
   with >= ``min_matches`` estimate a pose (essential matrix for pairs, PnP for localization);
2. if the pose agrees with the previous checkpoint's pose, or is confident on its own (at least ``stop_inliers``
   RANSAC inliers and an inlier ratio of at least ``stop_inlier_ratio``; not where the geometry says
   ``single_pose_stop`` is False: a query of unknown focal length, whose PnP checks estimate the focal length too),
   the element stops: its output is the RANSAC inliers of that pose and its tokens leave the batch (later layers
   run on the remaining references only);
3. EIMP pools after sharing iterations with threshold ``2 * pool_threshold * inlier_ratio`` of the last pose
   (``0.2 * inlier_ratio`` with the released ``pool_threshold`` 0.1; weights trained here carry a calibrated one,
   see ``training/calibrate.py``), or ``pool_threshold`` without a pose; each element keeps its own tokens, the
   batch is re-padded to the longest;
4. elements that never stop take the matches of the last iteration with ``match_threshold`` (0.2).
Elements without geometry never stop early. Checkpoint heads may run fewer Sinkhorn scalings
(``checkpoint_iterations``; the matcher's default 5): their matches only feed RANSAC, and the scalings are most of
a head's cost (EIMP pools on the same assignment at a checkpoint that is also a pooling iteration); the last
iteration's head runs the model's ``sinkhorn_iterations``.

``"released"``: ``imp-release`` ``eval/matching.py: matching_iterative_uncertainty`` (EIMP; IMP and GM as
``matching_iterative``, which is the same without pooling), per element:
1. checkpoints 3, 5, ..., 13 **and the last iteration** (``valid_its = [3, 5, 7, 9, 11, 13, 14]``): mutual matches
   with ``checkpoint_threshold`` (0.1); below ``min_matches`` (25) the previous pose is forgotten and nothing
   else happens at this checkpoint (no pose, no pooling, no stop);
2. the pose of ``ReleasedPairGeometry`` (failure = no pose, inlier ratio 0); the element stops when this pose and
   the previous checkpoint's pose both exist and agree (max of rotation and translation-direction angles <= 1.5
   degrees), also at the last iteration; it returns the matches whose released inlier mask is True (RANSAC
   outliers included, cheirality failures of RANSAC inliers excluded) with the iteration count it + 1;
3. EIMP pools (physically, as released) with threshold ``0.2 * inlier_ratio``, or 0.2 when the ratio is 0 (no
   pose), and compares N + 1 (dustbin row included) with 256 (``AdaGMN.pool``'s default argument: the released
   loop does not pass the model's ``n_min_tokens``; ``released_n_min_tokens`` here); the tokens reported for an
   element that stops are the ones before this checkpoint's pooling;
4. elements that never stop take the matches of the last iteration with ``match_threshold`` (0.2) and no pose.
Elements without geometry behave as released when no pose can be estimated (pooling at 0.2, never stop).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .geometry import PairGeometry, PnPGeometry, PoseEstimate, ReleasedPairGeometry
from .model import IMPModel, MatchState

Geometry = Union[PairGeometry, PnPGeometry, ReleasedPairGeometry]
MODES = ("localization", "released")


@dataclass
class PairResult:
    matches: np.ndarray  # (M, 2) int64 original keypoint indices
    scores: np.ndarray  # (M,) float32
    info: Dict[str, Any] = field(default_factory=dict)
    pose: Optional[PoseEstimate] = None


def default_checkpoints(model: IMPModel, mode: str = "released") -> List[int]:
    """Iterations after which IMP checks the pose. ``released``: the sharing iterations and the last one;
    ``localization``: every iteration from the third (index 2) on, and the last one (never checked: it matches)."""
    n = model.n_layers
    if mode == "localization":
        return list(range(min(2, n - 1), n))
    its = [i for i in range(n) if model.shared_iteration(i)] if model.conf["variant"] != "gm" else \
        list(range(3, n - 1, 2))
    return sorted(set(its + [n - 1]))


def estimate(geo: Geometry, kpts0: np.ndarray, kpts1: np.ndarray, idx: np.ndarray) -> Optional[PoseEstimate]:
    if isinstance(geo, PnPGeometry):
        return geo.estimate(kpts0[idx[:, 0]], idx[:, 1])
    return geo.estimate(kpts0[idx[:, 0]], kpts1[idx[:, 1]])


def select_batch(st: MatchState, rows: torch.Tensor) -> MatchState:
    """Keep only the batch elements ``rows`` (tokens are left-aligned, so padding can be trimmed)."""
    def take(desc, ids, mask):
        desc, ids = desc[rows], ids[rows]
        if mask is None:
            return desc, ids, None
        mask = mask[rows]
        n = int(mask.sum(1).max())
        desc, ids, mask = desc[..., :n], ids[:, :n], mask[:, :n]
        return desc, ids, (None if bool(mask.all()) else mask)

    n0 = st.desc0.shape[-1] if st.mask0 is None else int(st.mask0[rows].sum(1).max())
    n1 = st.desc1.shape[-1] if st.mask1 is None else int(st.mask1[rows].sum(1).max())
    st.keep0 = None if st.keep0 is None else st.keep0[rows][:, :n0]  # pooling "mask": prune marks
    st.keep1 = None if st.keep1 is None else st.keep1[rows][:, :n1]
    st.desc0, st.ids0, st.mask0 = take(st.desc0, st.ids0, st.mask0)
    st.desc1, st.ids1, st.mask1 = take(st.desc1, st.ids1, st.mask1)
    n = {"0": st.desc0.shape[-1], "1": st.desc1.shape[-1]}
    st.probs = {k: p[rows][:, :, :n[k[0]], :n[k[1]]] for k, p in st.probs.items()}  # key "qk": query, key image
    return st


class IterativeMatcher:
    """Drives ``IMPModel`` step by step with pose checks, early stop and (EIMP) physical pruning."""

    def __init__(self, model: IMPModel, checkpoints: Optional[Sequence[int]] = None, early_stop: bool = True,
                 checkpoint_threshold: float = 0.1, match_threshold: float = 0.2, min_matches: int = 25,
                 return_inliers: bool = True, mode: str = "localization", released_pool_ratio: float = 0.2,
                 released_n_min_tokens: int = 256, stop_inliers: Optional[int] = None,
                 stop_inlier_ratio: float = 1.0, checkpoint_iterations: Optional[int] = None):
        if mode not in MODES:
            raise ValueError(f"IterativeMatcher mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.released_pool_ratio = released_pool_ratio
        self.released_n_min_tokens = released_n_min_tokens
        self.model = model
        self.checkpoints = set(default_checkpoints(model, mode) if checkpoints is None else checkpoints)
        self.stop_inliers = stop_inliers  # localization mode: a pose this well supported stops on its own
        self.stop_inlier_ratio = stop_inlier_ratio
        self.checkpoint_iterations = checkpoint_iterations  # localization mode: Sinkhorn scalings of checkpoint heads
        self.early_stop = early_stop
        self.checkpoint_threshold = checkpoint_threshold
        self.match_threshold = match_threshold
        self.min_matches = min_matches
        self.return_inliers = return_inliers

    @torch.no_grad()
    def run(self, data: Dict[str, torch.Tensor], geometries: Sequence[Optional[Geometry]],
            kpts0: Sequence[np.ndarray], kpts1: Sequence[np.ndarray]) -> List[PairResult]:
        if self.mode == "released":
            return self._run_released(data, geometries, kpts0, kpts1)
        model = self.model
        st = model.encode(data)
        batch = st.desc0.shape[0]
        active = list(range(batch))  # original batch index of each current row
        results: List[Optional[PairResult]] = [None] * batch
        prev: List[Optional[PoseEstimate]] = [None] * batch
        ratio: List[Optional[float]] = [None] * batch
        pooled = [0] * batch

        def finish(row: int, i: int, m0: torch.Tensor, s0: torch.Tensor, stopped: bool,
                   pose: Optional[PoseEstimate]) -> None:
            b = active[row]
            idx, sc = _row_pairs(m0, s0, row)
            if stopped and pose is not None and self.return_inliers:
                idx, sc = idx[pose.inliers], sc[pose.inliers]
            t0, t1 = st.tokens()
            results[b] = PairResult(idx, sc, {
                "iterations": i + 1, "early_stop": stopped, "tokens0": int(t0[row]), "tokens1": int(t1[row]),
                "pooling_steps": pooled[b]}, pose)

        for i in range(model.n_layers):
            st = model.iterate(st, i)
            last = i == model.n_layers - 1
            check = self.early_stop and i in self.checkpoints and not last
            pool = model.pooling_iteration(i)
            if not (last or check or pool):
                continue
            prob = model.assign(st, i, None if last or not check else self.checkpoint_iterations)
            if last:
                m0, s0 = model.matches(st, prob, self.match_threshold)
                for row in range(len(active)):
                    finish(row, i, m0, s0, False, prev[active[row]])
                break
            done: List[int] = []
            if check:
                m0, s0 = model.matches(st, prob, self.checkpoint_threshold)
                for row, b in enumerate(active):
                    geo = geometries[b]
                    if geo is None:
                        continue
                    idx, _ = _row_pairs(m0, s0, row)
                    pose = None
                    if len(idx) >= self.min_matches:
                        pose = estimate(geo, kpts0[b], kpts1[b], idx)
                    ratio[b] = None if pose is None else pose.inlier_ratio
                    prev_pose = prev[b]
                    if pose is not None and ((geo.single_pose_stop and self.confident(pose)) or
                                             (prev_pose is not None and geo.agree(prev_pose, pose))):
                        finish(row, i, m0, s0, True, pose)
                        done.append(row)
                    prev[b] = pose
            if pool and len(done) < len(active):  # (pooling for pairs that all stopped here would be wasted)
                th = float(model.conf["pool_threshold"])
                ths = [th if (ratio_b := ratio[b]) is None else 2 * th * ratio_b for b in active]
                _pool_counted(model, st, prob, ths, active, pooled)
            if done:
                st, active = _drop_done(st, active, done)
                if not active:
                    break
        return [r for r in results]  # type: ignore[misc]

    def confident(self, pose: PoseEstimate) -> bool:
        """Whether a pose stops its element without a second, agreeing pose (localization mode)."""
        return (self.stop_inliers is not None and int(pose.inliers.sum()) >= self.stop_inliers
                and pose.inlier_ratio >= self.stop_inlier_ratio)

    def _run_released(self, data: Dict[str, torch.Tensor], geometries: Sequence[Optional[Geometry]],
                      kpts0: Sequence[np.ndarray], kpts1: Sequence[np.ndarray]) -> List[PairResult]:
        """``matching_iterative_uncertainty`` per batch element (see the module docstring)."""
        model = self.model
        n_layers = model.n_layers
        st = model.encode(data)
        batch = st.desc0.shape[0]
        active = list(range(batch))
        results: List[Optional[PairResult]] = [None] * batch
        prev: List[Optional[PoseEstimate]] = [None] * batch
        pooled = [0] * batch

        def finish(row: int, i: int, idx: np.ndarray, sc: np.ndarray, pose: Optional[PoseEstimate]) -> None:
            t0, t1 = st.tokens()
            b = active[row]
            results[b] = PairResult(idx, sc, {
                "iterations": i + 1, "early_stop": pose is not None and i < n_layers - 1,
                "pose_stop": pose is not None, "tokens0": int(t0[row]), "tokens1": int(t1[row]),
                "pooling_steps": pooled[b]}, pose)

        for i in range(n_layers):
            st = model.iterate(st, i)
            last = i == n_layers - 1
            check = self.early_stop and i in self.checkpoints
            pool = model.pooling_iteration(i)
            if not (last or check or pool):
                continue
            prob = model.assign(st, i)
            done: List[int] = []
            ths: List[float] = [float(model.conf["pool_threshold"])] * len(active)
            if check:
                m0, s0 = model.matches(st, prob, self.checkpoint_threshold)
                for row, b in enumerate(active):
                    idx, sc = _row_pairs(m0, s0, row)
                    if len(idx) < self.min_matches:
                        prev[b] = None  # released: forget the last pose, no pooling, no stop
                        ths[row] = float("inf")
                        continue
                    if len(idx) == 0:  # released: `continue` with the last pose kept (min_matches 0 only)
                        ths[row] = float("inf")
                        continue
                    geo = geometries[b]
                    pose = None if geo is None else estimate(geo, kpts0[b], kpts1[b], idx)
                    ratio = 0.0 if pose is None else float(pose.inliers.sum()) / len(idx)
                    ths[row] = self.released_pool_ratio * (ratio if ratio != 0 else 1.0)
                    prev_pose = prev[b]
                    stop = pose is not None and prev_pose is not None and geo is not None and geo.agree(prev_pose, pose)
                    prev[b] = pose
                    if stop:
                        assert pose is not None
                        finish(row, i, idx[pose.inliers], sc[pose.inliers], pose)
                        done.append(row)
            if last:
                m0, s0 = model.matches(st, prob, self.match_threshold)
                for row, b in enumerate(active):
                    if row not in done:
                        finish(row, i, *_row_pairs(m0, s0, row), None)
                break
            if pool:
                _pool_counted(model, st, prob, ths, active, pooled, count_dustbin=True,
                              n_min_tokens=self.released_n_min_tokens)
            if done:
                st, active = _drop_done(st, active, done)
                if not active:
                    break
        return [r for r in results]  # type: ignore[misc]


def _row_pairs(m0: torch.Tensor, s0: torch.Tensor, row: int) -> Tuple[np.ndarray, np.ndarray]:
    """Matches of batch row ``row`` as (M, 2) index pairs and their (M,) scores."""
    m, s = m0[row].cpu().numpy(), s0[row].float().cpu().numpy()
    idx0 = np.flatnonzero(m >= 0)
    return np.stack([idx0, m[idx0]], 1).astype(np.int64), s[idx0].astype(np.float32)


def _pool_counted(model, st, prob, ths, active: List[int], pooled: List[int], **kw) -> None:
    """EIMP pooling of the batch; counts, per pair, the pooling steps that removed tokens."""
    before = [int(a) + int(b) for a, b in zip(*st.tokens())]
    if model.pool(st, prob, ths, **kw):
        after = [int(a) + int(b) for a, b in zip(*st.tokens())]
        for row, b in enumerate(active):
            pooled[b] += int(after[row] < before[row])


def _drop_done(st, active: List[int], done) -> Tuple[Any, List[int]]:
    """Remove the pairs that stopped (rows ``done``) from the batch state."""
    keep = [r for r in range(len(active)) if r not in done]
    if not keep:
        return st, []
    return select_batch(st, torch.tensor(keep, device=st.desc0.device)), [active[r] for r in keep]
