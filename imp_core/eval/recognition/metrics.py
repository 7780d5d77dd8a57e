"""Recognition quality: mean IoU over instances (confusion accumulated over a set of images) and top-1
instance accuracy (the best recognized instance is present in the ground truth)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np


@dataclass
class RecognitionScore:
    num_classes: int
    min_area: float = 0.005  # a ground-truth instance counts as present above this image fraction
    confusion: np.ndarray = field(init=False)
    top1_hits: int = 0
    top1_total: int = 0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray, instances: Sequence[Tuple[int, float]]) -> None:
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
        g = np.clip(gt.reshape(-1).astype(np.int64), 0, self.num_classes - 1)
        p = np.clip(pred.reshape(-1).astype(np.int64), 0, self.num_classes - 1)
        self.confusion += np.bincount(g * self.num_classes + p, minlength=self.num_classes ** 2).reshape(
            self.num_classes, self.num_classes)
        ids, cnt = np.unique(g[g > 0], return_counts=True)
        present = set(ids[cnt >= self.min_area * g.size].tolist())
        if present:
            self.top1_total += 1
            self.top1_hits += int(bool(instances) and int(instances[0][0]) in present)

    def iou(self) -> Dict[int, float]:
        """IoU per instance id that occurs in the ground truth (background excluded)."""
        c = self.confusion
        tp = np.diag(c)
        gt, pr = c.sum(1), c.sum(0)
        return {i: float(tp[i] / (gt[i] + pr[i] - tp[i])) for i in range(1, self.num_classes) if gt[i] > 0}

    def summary(self) -> Dict[str, float]:
        ious: List[float] = list(self.iou().values())
        c = self.confusion
        return {
            "mIoU": float(np.mean(ious)) if ious else 0.0,
            "top1": self.top1_hits / self.top1_total if self.top1_total else 0.0,
            "pixel_acc": float(np.trace(c) / max(1, c.sum())),
            "images": int(self.top1_total),
            "instances": len(ious),
        }
