"""Training pairs from a dump: a fixed number of keypoints per image with U[min, max] ground-truth matches.

As released (``sample_matches_from_offline``): draw the number of ground-truth matches uniformly in
[min_inliers, max_inliers] (capped by what the pair has), fill the rest with keypoints that have no GT partner,
shuffle. Images with fewer keypoints than ``n_keypoints`` are
padded with random keypoints (random position, random unit descriptor, score 0) labelled unmatched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np
import torch

from .correspondences import IGNORE, UNMATCHED
from .dump import read_dump_info


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, path, n_keypoints: int = 1024, min_inliers: int = 32, max_inliers: int = 512,
                 pairs: Optional[Sequence[int]] = None, seed: int = 0, fixed: bool = False):
        self.path = Path(path)
        info = read_dump_info(self.path)
        self.pairs: List[int] = list(range(info["pairs"])) if pairs is None else list(pairs)
        self.n = int(n_keypoints)
        self.min_inliers, self.max_inliers = int(min_inliers), int(max_inliers)
        self.seed = int(seed)
        self.fixed = fixed  # same draw every time (validation)
        self.epoch = 0
        self._h5: Optional[h5py.File] = None
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.pairs)

    def _file(self) -> h5py.File:
        # one handle per process: a DataLoader worker forked after the parent read a pair must not share the parent's
        # HDF5 handle (HDF5 is not fork-safe), and a spawned worker gets the dataset without one (__getstate__)
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def __getstate__(self) -> Dict[str, object]:
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        h5 = self._file()
        k = self.pairs[idx]
        g = h5["pairs"][str(k)]
        rng = np.random.default_rng([self.seed, k, 0 if self.fixed else self.epoch])
        f0, f1 = h5["features"][g.attrs["name0"]], h5["features"][g.attrs["name1"]]
        matches = np.asarray(g["matches"])
        lab0, lab1 = np.asarray(g["labels0"]), np.asarray(g["labels1"])
        n_in = min(len(matches), int(rng.integers(self.min_inliers, self.max_inliers + 1)), self.n)
        chosen = matches[rng.choice(len(matches), n_in, replace=False)] if n_in else np.zeros((0, 2), np.int64)
        sel0 = self._fill(chosen[:, 0], lab0, rng)
        sel1 = self._fill(chosen[:, 1], lab1, rng)
        out = {}
        for s, f, sel, lab, other in (("0", f0, sel0, lab0, sel1), ("1", f1, sel1, lab1, sel0)):
            kp, de, sc, gt = self._gather(f, sel, lab, other, rng)
            out.update({f"keypoints{s}": kp, f"descriptors{s}": de, f"scores{s}": sc, f"gt{s}": gt,
                        f"image_size{s}": torch.tensor(f.attrs["image_size"], dtype=torch.float32)})
        out.update({"K0": torch.from_numpy(np.asarray(g["K0"], np.float32)),
                    "K1": torch.from_numpy(np.asarray(g["K1"], np.float32)),
                    "T_0to1": torch.from_numpy(np.asarray(g["T_0to1"], np.float32))})
        return out

    def _fill(self, chosen: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Chosen indices plus random keypoints without a GT partner up to ``self.n`` (-1 = padding slot),
        shuffled: the number of GT matches is exactly the number drawn."""
        rest = np.flatnonzero(labels < 0)
        extra = rng.choice(rest, min(len(rest), self.n - len(chosen)), replace=False)
        sel = np.concatenate([chosen, extra, np.full(self.n - len(chosen) - len(extra), -1)]).astype(np.int64)
        return sel[rng.permutation(self.n)]

    def _gather(self, f, sel, lab, other_sel, rng):
        real = sel >= 0
        w, h = f.attrs["image_size"]
        kps, desc, sc = np.asarray(f["keypoints"]), np.asarray(f["descriptors"]), np.asarray(f["scores"])
        kp = rng.uniform([0, 0], [w - 1, h - 1], (self.n, 2)).astype(np.float32)
        de = rng.standard_normal((self.n, desc.shape[1])).astype(np.float32)
        de /= np.linalg.norm(de, axis=1, keepdims=True)
        s = np.zeros(self.n, np.float32)
        kp[real], de[real], s[real] = kps[sel[real]], desc[sel[real]], sc[sel[real]]
        # ground truth in the sampled index space
        pos_other = {int(j): p for p, j in enumerate(other_sel) if j >= 0}
        gt = np.full(self.n, UNMATCHED, np.int64)
        for p in np.flatnonzero(real):
            partner = int(lab[sel[p]])
            if partner >= 0:
                gt[p] = pos_other.get(partner, UNMATCHED)
            elif partner == IGNORE:
                gt[p] = IGNORE
        return (torch.from_numpy(kp), torch.from_numpy(de), torch.from_numpy(s), torch.from_numpy(gt))


def split_pairs(n_pairs: int, val_fraction: float, seed: int = 0):
    """Deterministic train / held-out split of pair indices."""
    perm = np.random.default_rng(seed).permutation(n_pairs)
    n_val = max(1, int(round(n_pairs * val_fraction))) if n_pairs > 1 else 0
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())
