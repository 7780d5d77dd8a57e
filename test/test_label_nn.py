"""label_nn (LBR's NNML) against a plain reference written out here: mutual NN within each shared label, then
mutual NN among the keypoints left, float64, one label at a time."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.matching.base import create_matcher
from imp_core.types import Features


def _reference(d0, d1, l0, l1, min_sim):
    d0 = d0 / np.linalg.norm(d0, axis=1, keepdims=True)
    d1 = d1 / np.linalg.norm(d1, axis=1, keepdims=True)

    def mnn(a, b):
        if not len(a) or not len(b):
            return set()
        s = d0[a].astype(np.float64) @ d1[b].astype(np.float64).T
        out = set()
        for i in range(len(a)):
            j = int(np.argmax(s[i]))
            if int(np.argmax(s[:, j])) == i and s[i, j] >= min_sim:
                out.add((int(a[i]), int(b[j])))
        return out

    pairs = set()
    if l0 is not None and l1 is not None:
        for lab in set(l0[l0 > 0].tolist()) & set(l1[l1 > 0].tolist()):
            pairs |= mnn(np.nonzero(l0 == lab)[0], np.nonzero(l1 == lab)[0])
    used0, used1 = {p[0] for p in pairs}, {p[1] for p in pairs}
    pairs |= mnn(np.array([i for i in range(len(d0)) if i not in used0], int),
                 np.array([j for j in range(len(d1)) if j not in used1], int))
    return pairs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_sim", [0.0, 0.6])
def test_label_nn_equals_reference(seed, min_sim):
    rng = np.random.default_rng(seed)
    n0, n1 = 300 + 50 * seed, 260
    d0 = rng.normal(size=(n0, 32)).astype(np.float32)
    d1 = np.concatenate([d0[:150] + 0.4 * rng.normal(size=(150, 32)), rng.normal(size=(n1 - 150, 32))]).astype(
        np.float32)
    l0 = rng.integers(0, 6, n0)
    l1 = np.concatenate([np.where(rng.random(150) < 0.8, l0[:150], rng.integers(0, 6, 150)), rng.integers(0, 9, 110)])
    labels1 = None if seed == 3 else l1  # no labels on one side: plain mutual NN
    f0 = Features(rng.random((n0, 2)) * 100, d0, np.ones(n0), (100, 100), labels=l0)
    f1 = Features(rng.random((n1, 2)) * 100, d1, np.ones(n1), (100, 100), labels=labels1)
    m = create_matcher({"name": "label_nn", "min_similarity": min_sim}).match(f0, f1)
    got = set(map(tuple, m.indices.tolist()))
    assert got == _reference(d0, d1, l0, labels1, min_sim)
    assert len(got) == len(m.indices)
    assert (m.scores >= min_sim).all()
