"""What Screenline's two training recipes share (train.py, train_detector.py).

The category keys in the order of every model's category output (the contract's, and
xraygen's `CATEGORY_KEYS`), the repository root, the log line, the counterfeit AUROC and the
SHA-256 a manifest pins.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CATEGORY_KEYS = [
    "agri_inputs", "food", "medicine", "cosmetics", "medical_devices", "electronics",
    "auto_parts", "decoration", "explosive_precursors", "childrens_products",
    "apparel_footwear", "bags_leather", "tobacco", "ppe", "publications", "other",
]


def log(msg: str) -> None:
    print(f"[train] {msg}", flush=True)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U), ties averaged."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
