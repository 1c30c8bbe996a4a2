"""Detection metrics with YOLOv5 v7.0's definitions: prediction matching, AP per class (COCO 101-point
interpolation), the confusion matrix and the fitness used to pick best.pt.

Shape shorthand:
    n: detections      m: ground-truth labels      t: IoU thresholds (10 for mAP50-95)
    nc: classes        k: classes present in the labels
Detections are rows ``[x1, y1, x2, y2, conf, cls]`` and labels rows ``[cls, x1, y1, x2, y2]``, both ``xyxy``
in the same pixel space. Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

Names = Union[dict, Sequence[str], None]

IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, 10).tolist())  # mAP50-95


def _greedy_unique(pairs: np.ndarray, resort: bool) -> np.ndarray:
    """Keep each detection's best-IoU label, then one detection per label.

    ``pairs`` (p, 3) rows ``[label, detection, iou]``. After the first step the rows are ordered by detection
    index; with ``resort`` False (YOLOv5's ``process_batch``) each label then keeps its lowest-index (highest
    conf, as NMS sorts) detection, with ``resort`` True (YOLOv5's confusion matrix) its highest-IoU one.
    """
    if pairs.shape[0] < 2:
        return pairs
    pairs = pairs[np.argsort(-pairs[:, 2], kind="stable")]
    pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]
    if resort:
        pairs = pairs[np.argsort(-pairs[:, 2], kind="stable")]
    return pairs[np.unique(pairs[:, 0], return_index=True)[1]]


def match_predictions(detections: Tensor, labels: Tensor, iouv: Tensor) -> Tensor:
    """Which detections (n, 6) are true positives at each IoU threshold of ``iouv`` (t,) -> bool (n, t).

    YOLOv5 v7.0 ``process_batch``: a pair counts if IoU >= threshold and the classes agree; each detection
    keeps its best-IoU label and each label keeps one detection (the first in the NMS order).
    """
    n, t = detections.shape[0], iouv.shape[0]
    correct = np.zeros((n, t), dtype=bool)
    if n and labels.shape[0]:
        iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float())  # (m, n)
        same_cls = labels[:, 0:1] == detections[:, 5]  # (m, n)
        for k in range(t):
            li, di = torch.where((iou >= iouv[k]) & same_cls)
            if li.numel():
                pairs = torch.stack((li.to(iou.dtype), di.to(iou.dtype), iou[li, di]), 1).cpu().numpy()
                pairs = _greedy_unique(pairs, resort=False)
                correct[pairs[:, 1].astype(int), k] = True
    return torch.from_numpy(correct).to(iouv.device)


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box filter over a fraction ``f`` of the points (odd width), edges padded with the end values."""
    nf = round(len(y) * f * 2) // 2 + 1
    pad = np.ones(nf // 2)
    yp = np.concatenate((pad * y[0], y, pad * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray,
               close_at_full_recall: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one PR curve: precision envelope, sampled at 101 recall points, trapezoid integral.

    The curve starts at (recall 0, precision 1). ``close_at_full_recall`` (YOLOv5 v7.0) ends it at
    (recall 1, precision 0), so a class whose recall stops at R < 1 gains a triangle of about
    (1 - R) * P_last / 2; False ends it at the last recall reached with precision 0 beyond it, as COCOeval
    does. Returns (ap, mpre, mrec).
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    if close_at_full_recall:
        y = np.interp(x, mrec, mpre)
    else:
        y = np.interp(x, mrec[:-1], mpre[:-1])
        y[x > mrec[-2] + 1e-9] = 0.0
    ap = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)
    return ap, mpre, mrec


@dataclass
class APResult:
    """Per seen class (k,): P, R, F1 at the mean-F1-best confidence, AP (k, t), and counts derived from them."""
    tp: np.ndarray
    fp: np.ndarray
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    ap: np.ndarray
    classes: np.ndarray

    @property
    def ap50(self) -> np.ndarray:
        return self.ap[:, 0] if self.ap.size else np.zeros(0)

    @property
    def ap_mean(self) -> np.ndarray:
        return self.ap.mean(1) if self.ap.size else np.zeros(0)

    def mean_results(self) -> tuple[float, float, float, float]:
        """(mP, mR, mAP50, mAP50-95) over the seen classes; zeros when there are none."""
        if not len(self.classes):
            return 0.0, 0.0, 0.0, 0.0
        return float(self.p.mean()), float(self.r.mean()), float(self.ap50.mean()), float(self.ap_mean.mean())


def _names_dict(names: Names) -> dict[int, str]:
    if names is None:
        return {}
    return dict(names) if isinstance(names, dict) else dict(enumerate(names))


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 plot: bool = False, save_dir: str | Path = ".", names: Names = None,
                 close_at_full_recall: bool = True, eps: float = 1e-16) -> APResult:
    """YOLOv5 v7.0 ``ap_per_class`` over a whole dataset.

    tp (n, t) bool, conf (n,), pred_cls (n,) of all detections; target_cls (m,) of all labels. Classes are
    those present in ``target_cls``. P/R curves are sampled at 1000 confidences; P, R and F1 are reported
    at the confidence maximising the box-smoothed (fraction 0.1) mean F1. ``close_at_full_recall``: see
    ``compute_ap`` (True = YOLOv5 v7.0; False = COCOeval's end of the curve).
    """
    tp, conf, pred_cls = np.asarray(tp, dtype=float), np.asarray(conf), np.asarray(pred_cls)
    if tp.ndim == 1:
        tp = tp[:, None]
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_labels = np.unique(np.asarray(target_cls), return_counts=True)
    k, t = classes.shape[0], tp.shape[1]
    px, curves = np.linspace(0, 1, 1000), []
    ap, p, r = np.zeros((k, t)), np.zeros((k, 1000)), np.zeros((k, 1000))
    for ci, c in enumerate(classes):
        i = pred_cls == c
        if not i.any():
            curves.append(np.zeros(1000))
            continue
        tpc = tp[i].cumsum(0)  # (n_c, t)
        fpc = (1 - tp[i]).cumsum(0)
        recall = tpc / (n_labels[ci] + eps)
        precision = tpc / (tpc + fpc)
        r[ci] = np.interp(-px, -conf[i], recall[:, 0], left=0)  # conf decreases along the curve
        p[ci] = np.interp(-px, -conf[i], precision[:, 0], left=1)
        for j in range(t):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j], close_at_full_recall)
            if j == 0:
                curves.append(np.interp(px, mrec, mpre))
    f1 = 2 * p * r / (p + r + eps)
    if plot:
        seen = {int(c): _names_dict(names).get(int(c), str(int(c))) for c in classes}
        _plot_curves(Path(save_dir), px, curves, ap, p, r, f1, seen)
    best = int(smooth(f1.mean(0), 0.1).argmax()) if k else 0
    p, r, f1 = p[:, best], r[:, best], f1[:, best]
    tp_n = (r * n_labels).round()
    fp_n = (tp_n / (p + eps) - tp_n).round()
    return APResult(tp=tp_n, fp=fp_n, p=p, r=r, f1=f1, ap=ap, classes=classes.astype(int))


def fitness(x: np.ndarray) -> np.ndarray:
    """Model fitness per row of ``[P, R, mAP50, mAP50-95, ...]`` (r, >=4) -> (r,): 0.1 mAP50 + 0.9 mAP50-95."""
    w = np.array([0.0, 0.0, 0.1, 0.9])
    return (np.asarray(x, dtype=float).reshape(-1, np.shape(x)[-1])[:, :4] * w).sum(1)


class ConfusionMatrix:
    """(nc + 1, nc + 1) counts, rows = predicted class, columns = true class; index nc is background.

    YOLOv5 v7.0 rules: detections with conf > ``conf`` are matched to labels by IoU > ``iou_thres`` regardless
    of class, greedily and uniquely by IoU. An unmatched label counts as (background, class); an unmatched
    detection as (class, background) -- YOLOv5 v7.0 forgets these when an image has no match at all.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres

    def process_batch(self, detections: Tensor | None, labels: Tensor) -> None:
        """One image: detections (n, 6) or None, labels (m, 5) ``[cls, x1, y1, x2, y2]`` (or (m,) classes
        when ``detections`` is None)."""
        if labels.ndim == 1 and labels.numel() == 0:
            labels = labels.reshape(0, 5)
        if detections is None:
            gt_cls = (labels[:, 0] if labels.ndim == 2 else labels).long().cpu().numpy()
            np.add.at(self.matrix, (self.nc, gt_cls), 1)
            return
        if labels.ndim != 2 or labels.shape[1] != 5:
            raise ValueError(f"ConfusionMatrix.process_batch: labels of shape {tuple(labels.shape)} are not "
                             "(m, 5) [cls, x1, y1, x2, y2]")
        gt_cls = labels[:, 0].long().cpu().numpy()
        detections = detections[detections[:, 4] > self.conf]
        det_cls = detections[:, 5].long().cpu().numpy()
        pairs = np.zeros((0, 3))
        if len(gt_cls) and len(det_cls):
            iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float())
            li, di = torch.where(iou > self.iou_thres)
            pairs = torch.stack((li.to(iou.dtype), di.to(iou.dtype), iou[li, di]), 1).cpu().numpy()
            pairs = _greedy_unique(pairs, resort=True)
        m_gt, m_det = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
        np.add.at(self.matrix, (det_cls[m_det], gt_cls[m_gt]), 1)
        np.add.at(self.matrix, (self.nc, np.delete(gt_cls, m_gt)), 1)
        np.add.at(self.matrix, (np.delete(det_cls, m_det), self.nc), 1)

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class (nc,): true positives (diagonal) and false positives (row sum minus diagonal)."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def plot(self, save_dir: str | Path = ".", names: Names = None, normalize: bool = True) -> Path:
        """Write ``confusion_matrix.png`` (column-normalised unless ``normalize`` is False); returns its path."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        array = self.matrix / ((self.matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else 1)
        array[array < 0.005] = np.nan  # leave near-zero cells blank
        nd = _names_dict(names)
        ticks = 0 < self.nc < 99 and len(nd) >= self.nc
        labels = [nd[i] for i in range(self.nc)] + ["background"] if ticks else []
        fig = Figure(figsize=(12, 9), tight_layout=True)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        im = ax.imshow(array, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
        fig.colorbar(im, ax=ax)
        if self.nc < 30:
            for (i, j), v in np.ndenumerate(array):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center", fontsize=8)
        if labels:
            ax.set_xticks(range(self.nc + 1), labels, rotation=90)
            ax.set_yticks(range(self.nc + 1), labels)
        ax.set_xlabel("True")
        ax.set_ylabel("Predicted")
        ax.set_title("Confusion Matrix")
        path = Path(save_dir) / "confusion_matrix.png"
        fig.savefig(path, dpi=250)
        return path


def _new_axes(figsize=(9, 6)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, tight_layout=True)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _plot_curves(save_dir: Path, px: np.ndarray, curves: list, ap: np.ndarray, p: np.ndarray, r: np.ndarray,
                 f1: np.ndarray, names: dict[int, str]) -> None:
    """PR_curve.png, F1_curve.png, P_curve.png and R_curve.png as YOLOv5 draws them."""
    save_dir.mkdir(parents=True, exist_ok=True)
    _plot_pr(save_dir / "PR_curve.png", px, curves, ap, list(names.values()))
    for y, ylabel, fname in ((f1, "F1", "F1_curve.png"), (p, "Precision", "P_curve.png"),
                             (r, "Recall", "R_curve.png")):
        _plot_metric_conf(save_dir / fname, px, y, list(names.values()), ylabel)


def _plot_pr(path: Path, px: np.ndarray, curves: list, ap: np.ndarray, names: list[str]) -> None:
    fig, ax = _new_axes()
    py = np.stack(curves, 1) if curves else np.zeros((len(px), 0))  # (1000, k)
    per_class = 0 < len(names) < 21
    for i in range(py.shape[1]):
        label = f"{names[i]} {ap[i, 0]:.3f}" if per_class else None
        ax.plot(px, py[:, i], linewidth=1, label=label, color=None if per_class else "grey")
    if py.shape[1]:
        ax.plot(px, py.mean(1), linewidth=3, color="blue", label=f"all classes {ap[:, 0].mean():.3f} mAP@0.5")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title("Precision-Recall Curve")
    fig.savefig(path, dpi=250)


def _plot_metric_conf(path: Path, px: np.ndarray, y: np.ndarray, names: list[str], ylabel: str) -> None:
    fig, ax = _new_axes()
    per_class = 0 < len(names) < 21
    for i in range(y.shape[0]):
        ax.plot(px, y[i], linewidth=1, label=names[i] if per_class else None, color=None if per_class else "grey")
    if y.shape[0]:
        ym = smooth(y.mean(0), 0.05)
        ax.plot(px, ym, linewidth=3, color="blue", label=f"all classes {ym.max():.2f} at {px[ym.argmax()]:.3f}")
    ax.set_xlabel("Confidence")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title(f"{ylabel}-Confidence Curve")
    fig.savefig(path, dpi=250)
