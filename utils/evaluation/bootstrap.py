"""Paired bootstrap over validation images: how much of a difference in mAP between two arms is test-set luck.

Both arms are scored on the same images. One resample draws ``i`` images with replacement; an image drawn k times
contributes its detections and its labels k times, and the same draw serves both arms. Over ``n_boot`` resamples the
percentile interval of ``mAP(B) - mAP(A)`` measures the test-set noise of the difference (Efron & Tibshirani 1993,
ch. 13), next to the training noise that the seed interval of ``stats.py`` measures.

Matching is done once per image (``match_predictions`` at the 10 IoU thresholds). A resample is then a count per
image, and each class's AP is computed for a block of resamples at once from its detections, sorted once by
confidence, with the image counts as weights. The result equals ``ap_per_class`` on the physically resampled set
(exactly when no two different detections share a confidence): a true positive drawn k times adds one point for its
first copy and one for its last, since the copies in between lie on the flat stretch of the precision envelope.

Shape shorthand:
    i: images      n: detections (all images)      m: labels (all images)      t: IoU thresholds (10)
    nc: classes    r: resamples    q: points on one class's PR curve (its detections, +1 per true positive)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from utils.evaluation.metrics import IOU_THRESHOLDS, match_predictions

_RECALL_POINTS = np.linspace(0, 1, 101)  # compute_ap's 101-point sampling
_BLOCK_ELEMENTS = 2_000_000  # resamples x curve points per array in one block (16 MB of float64)


def _cat(xs: Sequence, dtype: type, width: int | None = None) -> np.ndarray:
    """Concatenate per-image tensors or arrays into one array, (total,) or (total, width)."""
    shape = (-1,) if width is None else (-1, width)
    arrays = [(x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)).astype(dtype).reshape(shape)
              for x in xs]
    return np.concatenate(arrays) if arrays else np.zeros((0,) if width is None else (0, width), dtype)


@dataclass(frozen=True)
class ImageStats:
    """One arm's matched detections on a validation set, with the image each row came from.

    tp (n, t) bool, conf (n,), pred_cls (n,) int, image (n,) int; target_cls (m,) int, target_image (m,) int;
    n_images counts images without detections or labels too.
    """
    tp: np.ndarray
    conf: np.ndarray
    pred_cls: np.ndarray
    image: np.ndarray
    target_cls: np.ndarray
    target_image: np.ndarray
    n_images: int

    @classmethod
    def from_per_image(cls, correct: Sequence, conf: Sequence, pred_cls: Sequence,
                       target_cls: Sequence) -> ImageStats:
        """From per-image lists as val.py's ``_Stats`` holds them: correct (n_i, t), conf (n_i,), pred_cls (n_i,),
        target_cls (m_i,), tensors or arrays."""
        if not len(correct) == len(conf) == len(pred_cls) == len(target_cls):
            raise ValueError(f"ImageStats.from_per_image: per-image lists differ in length: correct {len(correct)}, "
                             f"conf {len(conf)}, pred_cls {len(pred_cls)}, target_cls {len(target_cls)}")
        n_det, n_gt = [len(c) for c in conf], [len(c) for c in target_cls]
        bad = next((i for i, (c, k) in enumerate(zip(correct, n_det)) if len(c) != k), None)
        if bad is not None:
            raise ValueError(f"ImageStats.from_per_image: image {bad} has {len(correct[bad])} rows in correct but "
                             f"{n_det[bad]} in conf")
        t = next((c.shape[1] for c in correct if c.ndim == 2), len(IOU_THRESHOLDS))
        return cls(tp=_cat(correct, bool, t), conf=_cat(conf, float), pred_cls=_cat(pred_cls, int),
                   image=np.repeat(np.arange(len(conf)), n_det), target_cls=_cat(target_cls, int),
                   target_image=np.repeat(np.arange(len(target_cls)), n_gt), n_images=len(conf))

    def gt_count(self, nc: int) -> np.ndarray:
        """Labels per image and class (i, nc)."""
        counts = np.zeros((self.n_images, nc))
        np.add.at(counts, (self.target_image, self.target_cls), 1)
        return counts


def match_images(predictions: Sequence[Tensor], labels: Sequence[Tensor],
                 iouv: Sequence[float] = IOU_THRESHOLDS) -> ImageStats:
    """Match each image's detections (n_i, 6) to its labels (m_i, 5) as val.py does -> ImageStats."""
    if len(predictions) != len(labels):
        raise ValueError(f"match_images: {len(predictions)} prediction tensors but {len(labels)} label tensors")
    iou_t = torch.as_tensor(iouv, dtype=torch.float32)
    correct = [match_predictions(p.cpu(), l.cpu().reshape(-1, 5), iou_t) for p, l in zip(predictions, labels)]
    return ImageStats.from_per_image(correct, [p[:, 4].cpu() for p in predictions],
                                     [p[:, 5].cpu() for p in predictions],
                                     [l.cpu().reshape(-1, 5)[:, 0] for l in labels])


def resample_counts(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each image is drawn in each of ``n_boot`` resamples with replacement -> (r, i) int."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n_boot, n_images))
    flat = draws + np.arange(n_boot)[:, None] * n_images
    return np.bincount(flat.ravel(), minlength=n_boot * n_images).reshape(n_boot, n_images)


def _interp_rows(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp(x, xp[k], fp[k])`` for every row k: x (p,), xp and fp (r, q) with xp non-decreasing -> (r, p)."""
    r, q = xp.shape
    query = torch.from_numpy(np.tile(x, (r, 1)))
    j = torch.searchsorted(torch.from_numpy(np.ascontiguousarray(xp)), query, right=True).numpy() - 1
    j = np.clip(j, 0, q - 1)  # last index with xp <= x
    j1 = np.minimum(j + 1, q - 1)
    x0, x1 = np.take_along_axis(xp, j, 1), np.take_along_axis(xp, j1, 1)
    y0, y1 = np.take_along_axis(fp, j, 1), np.take_along_axis(fp, j1, 1)
    dx = x1 - x0
    slope = np.divide(y1 - y0, dx, out=np.zeros_like(dx), where=dx > 0)
    return slope * (x - x0) + y0


def _ap_rows(recall: np.ndarray, precision: np.ndarray, close_at_full_recall: bool) -> np.ndarray:
    """``compute_ap`` for every row of recall and precision (r, q) -> AP (r,)."""
    r = recall.shape[0]
    mrec = np.concatenate((np.zeros((r, 1)), recall, np.ones((r, 1))), 1)
    mpre = np.concatenate((np.ones((r, 1)), precision, np.zeros((r, 1))), 1)
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre, 1), 1), 1)
    x = _RECALL_POINTS
    if close_at_full_recall:
        y = _interp_rows(x, mrec, mpre)
    else:
        y = _interp_rows(x, mrec[:, :-1], mpre[:, :-1])
        y[x[None] > mrec[:, -2:-1] + 1e-9] = 0.0
    return ((y[:, 1:] + y[:, :-1]) * np.diff(x)).sum(1) / 2


def _curve_points(tp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of a class's PR curve for its sorted detections' tp (n_c, t): a detection that is a true positive at
    any threshold gives two points (its first copy, then the rest), any other one -> (source (q,), first (q,))."""
    two = tp.any(1)
    source = np.repeat(np.arange(tp.shape[0]), 1 + two)
    first = np.zeros(source.shape[0], dtype=bool)
    first[np.cumsum(1 + two)[two] - 2] = True
    return source, first


def _class_ap(tp: np.ndarray, weights: np.ndarray, n_gt: np.ndarray, close_at_full_recall: bool,
              eps: float = 1e-16) -> np.ndarray:
    """AP (r, t) of one class from its curve points' tp (q, t), their weights (r, q) and its label counts (r,).

    At each threshold only the true positives, the point just before each and the last point are kept: a false
    positive followed by another one lies at the same recall with lower precision, so it moves neither the
    envelope nor the interpolation.
    """
    r = weights.shape[0]
    cw = weights.cumsum(1)
    ap = np.zeros((r, tp.shape[1]))
    for k in range(tp.shape[1]):
        hit = tp[:, k]
        hits, kept = np.flatnonzero(hit), np.flatnonzero(hit | np.append(hit[1:], True))
        ctp = np.concatenate((np.zeros((r, 1)), weights[:, hits].cumsum(1)), 1)
        ctp = ctp[:, np.searchsorted(hits, kept, side="right")]  # (r, kept)
        cwk = cw[:, kept]
        recall = ctp / (n_gt[:, None] + eps)
        precision = np.divide(ctp, cwk, out=np.ones_like(ctp), where=cwk > 0)  # no weight yet: the (0, 1) start
        ap[:, k] = _ap_rows(recall, precision, close_at_full_recall)
    return ap


def map_per_threshold(stats: ImageStats, counts: np.ndarray, close_at_full_recall: bool = True) -> np.ndarray:
    """mAP at each IoU threshold (r, t) of ``stats`` on resamples given as image counts (r, i).

    As ``ap_per_class``: the mean over the classes with labels in the resample, 0 where there are none.
    """
    counts = np.asarray(counts, dtype=float).reshape(-1, stats.n_images)
    nc = int(max(stats.target_cls.max(initial=-1), stats.pred_cls.max(initial=-1))) + 1
    n_gt = counts @ stats.gt_count(nc)  # (r, nc)
    r, t = counts.shape[0], stats.tp.shape[1]
    ap = np.zeros((r, nc, t))
    order = np.argsort(-stats.conf, kind="stable")
    for c in range(nc):
        det = order[stats.pred_cls[order] == c]
        if not det.size or not (n_gt[:, c] > 0).any():
            continue
        source, first = _curve_points(stats.tp[det])
        tp, image, second = stats.tp[det[source]], stats.image[det[source]], np.roll(first, 1)
        block = max(1, _BLOCK_ELEMENTS // source.shape[0])
        for s in range(0, r, block):
            w = counts[s:s + block, image]  # (rb, q)
            w = np.where(first, np.minimum(w, 1), w - np.minimum(w, 1) * second)
            ap[s:s + block, c] = _class_ap(tp, w, n_gt[s:s + block, c], close_at_full_recall)
    seen = n_gt > 0
    return (ap * seen[..., None]).sum(1) / np.maximum(seen.sum(1), 1)[:, None]


@dataclass(frozen=True)
class Interval:
    """A difference B - A on the full set and the percentile interval of its resampled values."""
    diff: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of B - A. ``a``/``b``: full-set (mAP50, mAP50-95); ``diffs`` (r, 2) the resampled
    differences of (mAP50, mAP50-95)."""
    map50: Interval
    map: Interval
    a: tuple[float, float]
    b: tuple[float, float]
    diffs: np.ndarray
    n_boot: int
    seed: int
    level: float


def _check_pair(a: ImageStats, b: ImageStats) -> None:
    if a.n_images != b.n_images:
        raise ValueError(f"paired_bootstrap: arm A has {a.n_images} images, arm B {b.n_images}; both arms must be "
                         "scored on the same validation set")
    if not (np.array_equal(a.target_cls, b.target_cls) and np.array_equal(a.target_image, b.target_image)):
        raise ValueError(f"paired_bootstrap: the arms' labels differ (A {len(a.target_cls)}, B {len(b.target_cls)} "
                         "labels); both arms must be scored on the same validation set")
    if a.tp.shape[1] != b.tp.shape[1]:
        raise ValueError(f"paired_bootstrap: arm A has {a.tp.shape[1]} IoU thresholds, arm B {b.tp.shape[1]}")


def paired_bootstrap(a: ImageStats, b: ImageStats, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                     close_at_full_recall: bool = True) -> BootstrapResult:
    """Percentile interval (``level``) of mAP(B) - mAP(A), for mAP50 and mAP50-95, over ``n_boot`` resamples of
    the validation images, the same resamples for both arms. ``close_at_full_recall``: as in ``compute_ap``
    (True: val.py's figures)."""
    _check_pair(a, b)
    full = np.ones((1, a.n_images))
    fa, fb = (map_per_threshold(s, full, close_at_full_recall)[0] for s in (a, b))
    counts = resample_counts(a.n_images, n_boot, seed)
    d = map_per_threshold(b, counts, close_at_full_recall) - map_per_threshold(a, counts, close_at_full_recall)
    diffs = np.stack((d[:, 0], d.mean(1)), 1)  # (r, 2) mAP50, mAP50-95
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail], axis=0)
    full_diff = (fb[0] - fa[0], fb.mean() - fa.mean())
    iv = [Interval(float(full_diff[k]), float(low[k]), float(high[k])) for k in range(2)]
    return BootstrapResult(map50=iv[0], map=iv[1], a=(float(fa[0]), float(fa.mean())),
                           b=(float(fb[0]), float(fb.mean())), diffs=diffs, n_boot=n_boot, seed=seed, level=level)
