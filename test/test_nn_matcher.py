"""The nn matcher (one distance matrix per query block, concatenated references, best neighbour only without a
ratio test) gives the matches of the previous implementation (two distance matrices, top-2, references padded to
the largest) and of a float64 brute force, on random descriptors with unequal and empty references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imp_core.matching.base import create_matcher
from imp_core.types import Features, Matches


def rand_feats(rng, n, dim=64, unit=True):
    d = rng.standard_normal((n, dim)).astype(np.float32)
    if unit and n:
        d /= np.linalg.norm(d, axis=1, keepdims=True)
    return Features(rng.uniform(0, 400, (n, 2)).astype(np.float32), d, np.ones(n, np.float32), (640, 480), "xfeat")


def previous_nn(query, refs, mutual=True, ratio=None, dist=None, chunk_size=2048):
    """The implementation this replaces (commit 8ffa0cc): references padded into one (k, M, D) batch, a distance
    matrix per direction per block, top-2 in both directions."""
    sizes = [len(r) for r in refs]
    k, m, n0, dim = len(refs), max(sizes), len(query), query.descriptors.shape[1]
    if m == 0:
        return [Matches.empty() for _ in refs]
    R = torch.zeros((k, m, dim))
    for i, r in enumerate(refs):
        R[i, : len(r)] = torch.from_numpy(np.ascontiguousarray(r.descriptors, np.float32))
    pad = torch.arange(m)[None, :] >= torch.tensor(sizes)[:, None]
    rn = (R * R).sum(-1).masked_fill_(pad, float("inf"))
    q = torch.from_numpy(np.ascontiguousarray(query.descriptors, np.float32))
    qn = (q * q).sum(-1)
    k2, rt = min(2, m), R.transpose(1, 2)
    row_d = torch.full((k, n0, 2), float("inf"))
    row_i = torch.zeros((k, n0, 2), dtype=torch.long)
    col_d = torch.full((k, 2, m), float("inf"))
    col_i = torch.zeros((k, 2, m), dtype=torch.long)
    step = max(1, min(chunk_size, (1 << 24) // (k * m)))
    for a in range(0, n0, step):
        b = min(a + step, n0)
        qc = q[a:b]
        vals, idx = torch.topk(torch.baddbmm(rn[:, None, :], qc[None].expand(k, -1, -1), rt, alpha=-2), k2, dim=2,
                               largest=False)
        row_d[:, a:b, :k2], row_i[:, a:b, :k2] = vals + qn[None, a:b, None], idx
        vals, idx = torch.topk(torch.baddbmm(qn[None, None, a:b], R, qc.t()[None].expand(k, -1, -1), alpha=-2),
                               min(2, b - a), dim=2, largest=False)
        vals = vals.transpose(1, 2) + rn[:, None, :]
        best, order = torch.topk(torch.cat([col_d, vals], 1), 2, dim=1, largest=False)
        col_d, col_i = best, torch.cat([col_i, idx.transpose(1, 2) + a], 1).gather(1, order)
    row_d.clamp_min_(0)
    col_d.clamp_min_(0)
    row_s = (qn[None, :] + rn.gather(1, row_i[..., 0]) - row_d[..., 0]) / 2

    def passes(d):
        ok = torch.ones(len(d), dtype=torch.bool)
        if ratio is not None:
            ok &= d[:, 0] < (float(ratio) ** 2) * d[:, 1]
        if dist is not None:
            ok &= d[:, 0] <= float(dist) ** 2
        return ok

    out = []
    for i, n in enumerate(sizes):
        if not n:
            out.append(Matches.empty())
            continue
        ok0, nn0 = passes(row_d[i]), row_i[i, :, 0]
        if mutual:
            ok0 &= passes(col_d[i, :, :n].t())[nn0] & (col_i[i, 0, :n][nn0] == torch.arange(n0))
        i0 = torch.nonzero(ok0)[:, 0]
        out.append(Matches(torch.stack([i0, nn0[i0]], 1).numpy(), row_s[i][i0].numpy()))
    return out


def brute_force(query, ref, mutual=True, ratio=None, dist=None):
    """float64 reference; also returns the query rows / reference columns whose best two distances are within
    1e-5 (a float32 computation may order them either way)."""
    q = query.descriptors.astype(np.float64)
    r = ref.descriptors.astype(np.float64)
    d2 = (q * q).sum(1)[:, None] + (r * r).sum(1)[None] - 2 * q @ r.T
    srow, scol = np.sort(d2, 1), np.sort(d2, 0)
    nn0, nn1 = d2.argmin(1), d2.argmin(0)
    ok = np.ones(len(q), bool)
    second_row = srow[:, 1] if r.shape[0] > 1 else np.full(len(q), np.inf)
    second_col = scol[1] if q.shape[0] > 1 else np.full(len(r), np.inf)
    if ratio is not None:
        ok &= srow[:, 0] < ratio ** 2 * second_row
    if dist is not None:
        ok &= srow[:, 0] <= dist ** 2
    if mutual:
        okc = np.ones(len(r), bool)
        if ratio is not None:
            okc &= scol[0] < ratio ** 2 * second_col
        if dist is not None:
            okc &= scol[0] <= dist ** 2
        ok &= okc[nn0] & (nn1[nn0] == np.arange(len(q)))
    near_row = second_row - srow[:, 0] < 1e-5
    near_col = second_col - scol[0] < 1e-5
    ambiguous = near_row | near_col[nn0]
    if ratio is not None:  # a ratio or distance test decided within rounding
        ambiguous |= np.abs(srow[:, 0] - ratio ** 2 * second_row) < 1e-5
    if dist is not None:
        ambiguous |= np.abs(srow[:, 0] - dist ** 2) < 1e-5
    i0 = np.nonzero(ok)[0]
    return np.stack([i0, nn0[i0]], 1), ambiguous


def same_matches(a, b, ambiguous=None):
    """Equal index pairs, ignoring query rows flagged ambiguous."""
    sa = {tuple(x) for x in a}
    sb = {tuple(x) for x in b}
    diff = sa ^ sb
    if ambiguous is not None:
        diff = {x for x in diff if not ambiguous[x[0]]}
    return not diff


CONFS = [
    {},  # mutual NN, no test: the real-time path (best neighbour only, numpy reductions)
    {"ratio_threshold": 0.9},
    {"distance_threshold": 1.0},
    {"ratio_threshold": 0.95, "distance_threshold": 1.1},
    {"mutual": False},
    {"mutual": False, "ratio_threshold": 0.8},
]


@pytest.mark.parametrize("conf", CONFS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "mutual")
@pytest.mark.parametrize("block_elements", [1 << 21, 5000])  # one block / many blocks of query rows
def test_same_matches_as_before_unequal_and_empty_references(conf, block_elements):
    rng = np.random.default_rng(7)
    query = rand_feats(rng, 700)
    sizes = [600, 0, 1, 2, 900, 37]  # unequal sizes, an empty and tiny references: the old code padded them
    refs = [rand_feats(rng, n) for n in sizes]
    # plant true correspondences so that mutual matches exist in every non-trivial reference
    for r in refs:
        if len(r) > 10:
            j = rng.choice(len(query), len(r) // 2, replace=False)
            r.descriptors[: len(j)] = query.descriptors[j] + 0.05 * rng.standard_normal((len(j), 64))
    matcher = create_matcher({"name": "nn", "device": "cpu", "block_elements": block_elements, **conf})
    new = matcher.match_many(query, refs)
    old = previous_nn(query, refs, mutual=conf.get("mutual", True), ratio=conf.get("ratio_threshold"),
                      dist=conf.get("distance_threshold"))
    assert [len(m) for m in new] == [len(m) for m in old]
    total = 0
    for r, a, b in zip(refs, new, old):
        assert np.array_equal(a.indices, b.indices)  # same pairs, same order (ascending query index)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        assert a.indices.dtype == np.int64
        assert a.scores.dtype == np.float32
        if len(r):
            ref, amb = brute_force(query, r, conf.get("mutual", True), conf.get("ratio_threshold"),
                                   conf.get("distance_threshold"))
            assert amb.mean() < 0.01
            assert same_matches(a.indices, ref, amb)
        total += len(a)
    assert total > 500  # planted correspondences were found
    # one reference at a time (`match`) gives the same as the batch
    for r, a in zip(refs, new):
        assert np.array_equal(matcher.match(query, r).indices, a.indices)


def test_same_matches_at_localization_size_and_buffer_reuse():
    """2048 queries x 6 references of up to 2048 (a tracking frame); a second call reuses the block buffer."""
    rng = np.random.default_rng(3)
    query = rand_feats(rng, 2048)
    refs = [rand_feats(rng, n) for n in (2048, 1500, 2048, 800, 1999, 2048)]
    for r in refs:
        j = rng.choice(2048, len(r) // 3, replace=False)
        r.descriptors[: len(j)] = query.descriptors[j] + 0.1 * rng.standard_normal((len(j), 64))
    matcher = create_matcher({"name": "nn", "device": "cpu"})
    first = matcher.match_many(query, refs)
    buf = matcher._buffer
    again = matcher.match_many(query, refs)
    assert matcher._buffer is buf
    old = previous_nn(query, refs)
    for a, b, c in zip(first, again, old):
        assert np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.indices, c.indices)
        assert len(a) > 300


def test_ties_keep_one_to_one_matches():
    """Duplicated reference descriptors and queries: mutual matches stay one-to-one."""
    rng = np.random.default_rng(1)
    q = rand_feats(rng, 50)
    q.descriptors[10] = q.descriptors[11]  # two identical queries
    r = rand_feats(rng, 40)
    r.descriptors[:20] = q.descriptors[:20]
    m = create_matcher({"name": "nn", "device": "cpu"}).match(q, r)
    assert len(np.unique(m.indices[:, 0])) == len(m)
    assert len(np.unique(m.indices[:, 1])) == len(m)
    pairs = {tuple(x) for x in m.indices}
    assert pairs >= {(i, i) for i in range(20) if i not in (10, 11)}
    assert len(pairs & {(10, 10), (11, 10)}) == 1  # both queries' nearest is reference 10: one of them matches


def test_float16_descriptors_and_non_unit_norms():
    """fp16 map descriptors (widened here) and non-normalized descriptors give the float64 matches."""
    rng = np.random.default_rng(5)
    query = rand_feats(rng, 300, unit=False)
    ref = rand_feats(rng, 250, unit=False)
    ref.descriptors[:100] = query.descriptors[:100] + 0.05 * rng.standard_normal((100, 64))
    ref16 = Features(ref.keypoints, ref.descriptors.astype(np.float16), ref.scores, ref.image_size, ref.kind)
    m = create_matcher({"name": "nn", "device": "cpu"}).match(query, ref16)
    ref32 = Features(ref.keypoints, ref16.descriptors.astype(np.float32), ref.scores, ref.image_size, ref.kind)
    expect, amb = brute_force(query, ref32)
    assert same_matches(m.indices, expect, amb)
    assert len(m) >= 95
