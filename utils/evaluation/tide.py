"""TIDE error breakdown (Bolya et al., ECCV 2020): how much AP50 each kind of detection error costs.

Every detection that is not a true positive at IoU ``t_f`` gets one error type, tested in this order (that of the
authors' toolbox) on its IoU with the image's labels:
    Loc   best same-class IoU in [t_b, t_f)                  fixed: a true positive of that label
    Cls   best other-class IoU >= t_f                        fixed: relabelled to that label's class, true positive
    Dupe  IoU >= t_f with a same-class label that a higher-confidence detection matched      fixed: removed
    Bkg   IoU <= t_b with every label                        fixed: removed
    Both  anything else (wrong class and IoU in (t_b, t_f))  fixed: removed
A Cls or Loc fix whose label is already matched, or that a higher-confidence error of the same type fixes, is
removed instead (it would be a duplicate; the authors' ``tidecv`` also lets a Cls error block a Loc fix of the
same label and vice versa, which moves Cls and Loc by a few tenths of a point). A label that nothing matched and no
Cls or Loc error points at is Missed (fixed: dropped from the label count). An error type's dAP is AP50 with only
that type fixed minus AP50 as is (the paper's oracle, not progressive; negative values are kept, not clipped to 0).
FP: every false positive removed; FN: every unmatched label dropped (perfect recall at the same precision).

True positives are ``match_predictions`` at ``t_f`` (val.py's matching) and AP is ``ap_per_class`` (mean over the
classes with labels), so with ``close_at_full_recall`` True the base AP50 is val.py's mAP50. The default, False,
ends each PR curve at the last recall reached as COCOeval and TIDE do: a perfect arm scores 1 (not 0.995) and the
recall a detector never reaches earns nothing, so Missed and FN are not half hidden.

Shape shorthand (per image): n detections (n, 6) [x1, y1, x2, y2, conf, cls]; m labels (m, 5) [cls, x1, y1, x2,
y2]; both xyxy in the same pixel space. N, M: all images' detections and labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from utils.evaluation.metrics import ap_per_class, match_predictions

T_F, T_B = 0.5, 0.1  # the paper's foreground and background IoU thresholds
ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Missed")
_TP, _CLS, _LOC, _BOTH, _DUPE, _BKG = range(6)  # detection codes; ERRORS[code - 1] names an error


@dataclass(frozen=True)
class TideResult:
    """AP50 as is; dAP per error type (ERRORS order) and for all FP / all FN; detections (labels for Missed) per
    error type."""
    ap50: float
    dap: dict[str, float]
    dap_fp: float
    dap_fn: float
    counts: dict[str, int]


@dataclass(frozen=True)
class _Matched:
    """All images: detections' conf, cls, code (N,) and target label (N,, -1 for none, global index); labels'
    cls and whether a detection matched them (M,)."""
    conf: np.ndarray
    cls: np.ndarray
    code: np.ndarray
    target: np.ndarray
    gt_cls: np.ndarray
    gt_used: np.ndarray


def _classify_image(pred: Tensor, labels: Tensor, t_f: float, t_b: float) -> tuple[np.ndarray, ...]:
    """One image, detections sorted by conf -> code (n,), target label (n,) (-1 for none), label matched (m,)."""
    n, m = pred.shape[0], labels.shape[0]
    code, target, used = np.full(n, _BKG), np.full(n, -1), np.zeros(m, dtype=bool)
    if n == 0 or m == 0:
        return code, target, used
    tp = match_predictions(pred, labels, torch.tensor([t_f]))[:, 0].numpy()
    iou = box_iou(labels[:, 1:5].float(), pred[:, :4].float()).numpy()  # (m, n)
    same = (labels[:, 0:1] == pred[:, 5]).numpy()  # (m, n)
    iou_same, iou_other = np.where(same, iou, -1.0), np.where(same, -1.0, iou)
    best_same, best_other = iou_same.argmax(0), iou_other.argmax(0)  # (n,)
    used[best_same[tp]] = True  # a true positive matched its best same-class label
    cols = np.arange(n)
    same_max, other_max = iou_same[best_same, cols], iou_other[best_other, cols]
    used_max = np.where(used[:, None], iou_same, -1.0).max(0)
    code = np.select([tp, (same_max >= t_b) & (same_max < t_f), other_max >= t_f, used_max >= t_f,
                      iou.max(0) <= t_b], [_TP, _LOC, _CLS, _DUPE, _BKG], default=_BOTH)
    target = np.where(code == _LOC, best_same, np.where(code == _CLS, best_other, -1))
    return code, target, used


def _match_all(predictions: Sequence[Tensor], labels: Sequence[Tensor], t_f: float, t_b: float) -> _Matched:
    if len(predictions) != len(labels):
        raise ValueError(f"tide_errors: {len(predictions)} prediction tensors but {len(labels)} label tensors")
    parts, offset = [], 0
    for pred, lab in zip(predictions, labels):
        pred, lab = pred.detach().cpu().reshape(-1, 6), lab.detach().cpu().reshape(-1, 5)
        pred = pred[torch.argsort(-pred[:, 4], stable=True)]
        code, target, used = _classify_image(pred, lab, t_f, t_b)
        parts.append((pred[:, 4].numpy(), pred[:, 5].numpy(), code, np.where(target >= 0, target + offset, -1),
                      lab[:, 0].numpy(), used))
        offset += lab.shape[0]
    cat = [np.concatenate(col) for col in zip(*parts)] if parts else [np.zeros(0)] * 6
    return _Matched(cat[0].astype(float), cat[1].astype(int), cat[2].astype(int), cat[3].astype(int),
                    cat[4].astype(int), cat[5].astype(bool))


def _map50(conf: np.ndarray, cls: np.ndarray, tp: np.ndarray, gt_cls: np.ndarray, close: bool) -> float:
    return ap_per_class(tp[:, None], conf, cls, gt_cls, close_at_full_recall=close).mean_results()[2]


def _fix_relabel(d: _Matched, code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cls / Loc fix -> (keep (N,), tp (N,), cls (N,)): the highest-conf error per free label becomes its true
    positive, the other errors of this type are removed."""
    tp, cls = d.code == _TP, d.cls.copy()
    err = np.flatnonzero((d.code == code) & (d.target >= 0))
    free = err[~d.gt_used[d.target[err]]]
    free = free[np.argsort(-d.conf[free], kind="stable")]
    win = free[np.unique(d.target[free], return_index=True)[1]]
    tp[win], cls[win] = True, d.gt_cls[d.target[win]]
    keep = d.code != code
    keep[win] = True
    return keep, tp, cls


def _missed(d: _Matched) -> np.ndarray:
    """Labels (M,) bool that nothing matched and no Cls or Loc error points at."""
    pointed = np.zeros(d.gt_cls.shape[0], dtype=bool)
    pointed[d.target[(d.target >= 0) & np.isin(d.code, (_CLS, _LOC))]] = True
    return ~d.gt_used & ~pointed


def _fixed_ap(d: _Matched, fix: str, close: bool) -> float:
    """AP50 after fixing one error type (an ERRORS name), "FP", "FN", or nothing ("")."""
    keep, tp, cls, gt_keep = np.ones(d.code.shape[0], bool), d.code == _TP, d.cls, np.ones(d.gt_cls.shape[0], bool)
    if fix in ("Cls", "Loc"):
        keep, tp, cls = _fix_relabel(d, _CLS if fix == "Cls" else _LOC)
    elif fix in ("Both", "Dupe", "Bkg"):
        keep = d.code != ERRORS.index(fix) + 1
    elif fix == "Missed":
        gt_keep = ~_missed(d)
    elif fix == "FP":
        keep = d.code == _TP
    elif fix == "FN":
        gt_keep = d.gt_used
    elif fix:
        raise ValueError(f"tide: unknown fix {fix!r}; expected one of {ERRORS + ('FP', 'FN')}")
    return _map50(d.conf[keep], cls[keep], tp[keep], d.gt_cls[gt_keep], close)


def tide_errors(predictions: Sequence[Tensor], labels: Sequence[Tensor], t_f: float = T_F, t_b: float = T_B,
                close_at_full_recall: bool = False) -> TideResult:
    """TIDE breakdown of one arm over a validation set: per image detections (n, 6) and labels (m, 5)."""
    if not 0 <= t_b < t_f <= 1:
        raise ValueError(f"tide_errors: need 0 <= t_b < t_f <= 1, got t_b={t_b}, t_f={t_f}")
    d = _match_all(predictions, labels, t_f, t_b)
    base = _fixed_ap(d, "", close_at_full_recall)
    dap = {e: _fixed_ap(d, e, close_at_full_recall) - base for e in ERRORS}
    counts = {e: int((d.code == k + 1).sum()) for k, e in enumerate(ERRORS[:-1])}
    counts["Missed"] = int(_missed(d).sum())
    return TideResult(ap50=base, dap=dap, dap_fp=_fixed_ap(d, "FP", close_at_full_recall) - base,
                      dap_fn=_fixed_ap(d, "FN", close_at_full_recall) - base, counts=counts)
