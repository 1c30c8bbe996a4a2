"""AutoAnchor (YOLOv5 v7.0's rule): check how well anchors fit the labels and refit them with k-means
plus a genetic refinement when the best possible recall is low.

Shape shorthand: L labels, k anchors in all (nl * na).
"""
from __future__ import annotations

import numpy as np

from utils import LOGGER

PREFIX = "AutoAnchor: "


def _ratio_metric(anchors: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """(L, k): for each label and anchor, the worse of the w and h ratios (min(r, 1/r)), 1 = perfect."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1 / r).min(2)


def anchor_stats(anchors: np.ndarray, wh: np.ndarray, thr: float) -> tuple[float, float]:
    """(best possible recall, anchors above threshold per label) for anchor_t ``thr``."""
    x = _ratio_metric(anchors, wh)
    best = x.max(1)
    return float((best > 1 / thr).mean()), float((x > 1 / thr).sum(1).mean())


def _fitness(anchors: np.ndarray, wh: np.ndarray, thr: float) -> float:
    best = _ratio_metric(anchors, wh).max(1)
    return float((best * (best > 1 / thr)).mean())


def kmean_anchors(wh0: np.ndarray, n: int, thr: float = 4.0, gen: int = 1000, seed: int = 0) -> np.ndarray:
    """n anchors (n, 2) sorted by area: k-means on whitened wh, then ``gen`` generations of mutation."""
    from scipy.cluster.vq import kmeans

    rng = np.random.default_rng(seed)
    small = int((wh0 < 3.0).any(1).sum())
    if small:
        LOGGER.warning(f"{PREFIX}{small} of {len(wh0)} labels are smaller than 3 pixels")
    wh = wh0[(wh0 >= 2.0).any(1)].astype(np.float64)
    if len(wh) < n:
        raise ValueError(f"{PREFIX}{len(wh)} usable labels for {n} anchors: not enough labels to fit anchors")
    s = wh.std(0) + 1e-9
    k, _ = kmeans(wh / s, n, iter=30, seed=seed)
    k = k * s
    if len(k) != n:  # k-means collapsed clusters
        LOGGER.warning(f"{PREFIX}k-means found {len(k)} of {n} anchors, using random anchors")
        k = np.sort(rng.random((n, 2)) * wh.max(0), 0)
    f = _fitness(k, wh, thr)
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1).all():
            v = ((rng.random(k.shape) < 0.9) * rng.random() * rng.standard_normal(k.shape) * 0.1 + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = _fitness(kg, wh, thr)
        if fg > f:
            f, k = fg, kg
    return k[np.argsort(k.prod(1))].astype(np.float32)


def check_anchors(wh: np.ndarray, anchors_px: np.ndarray, thr: float = 4.0, gen: int = 1000) -> np.ndarray | None:
    """Refit ``anchors_px`` (nl, na, 2) to the labels if their best possible recall is <= 0.98.

    Returns new anchors (nl, na, 2) in pixels, smallest first, or None to keep the current ones.
    """
    flat = anchors_px.reshape(-1, 2)
    bpr, aat = anchor_stats(flat, wh, thr)
    msg = f"{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr > 0.98:
        LOGGER.info(msg + "Current anchors are a good fit to dataset")
        return None
    LOGGER.info(msg + "Anchors are a poor fit to dataset, attempting to improve...")
    new = kmean_anchors(wh, len(flat), thr, gen)
    new_bpr, _ = anchor_stats(new, wh, thr)
    if new_bpr <= bpr:
        LOGGER.info(f"{PREFIX}new anchors ({new_bpr:.3f} BPR) are no better, keeping the original anchors")
        return None
    LOGGER.info(f"{PREFIX}new anchors ({new_bpr:.3f} BPR): " + ", ".join(f"{w:.0f},{h:.0f}" for w, h in new))
    return new.reshape(anchors_px.shape)
