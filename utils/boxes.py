"""Box formats, grids and the box coders shared by heads and losses.

Shape shorthand:
    B: batch size      N: predictions per image      M: boxes
    na: anchors per level   ny, nx: feature map height and width
Box formats follow torchvision.ops.box_convert: ``xyxy`` corners, ``cxcywh`` centre and size
(YOLO files call it ``xywh``); a trailing ``n`` means normalised by image width and height.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert


def make_grid(nx: int, ny: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Cell indices ``(ny, nx, 2)`` holding ``(x, y)`` of each cell's top-left corner in grid units."""
    y = torch.arange(ny, device=device, dtype=dtype)
    x = torch.arange(nx, device=device, dtype=dtype)
    yv, xv = torch.meshgrid(y, x, indexing="ij")
    return torch.stack((xv, yv), dim=-1)


def flat_cells(shapes: list[tuple[int, int]], strides: list[float], device: torch.device | None = None
               ) -> tuple[Tensor, Tensor]:
    """The cells of several levels flattened level by level (a dense head's prediction order): cell indices
    ``(N, 2)`` (x, y in grid units, ``make_grid``) and each cell's stride ``(N, 1)``; ``shapes`` are (ny, nx)."""
    cells = torch.cat([make_grid(nx, ny, device).view(-1, 2) for ny, nx in shapes])
    stride = torch.cat([torch.full((ny * nx, 1), float(s), device=device) for (ny, nx), s in zip(shapes, strides)])
    return cells, stride


class FlatCells:
    """A dense loss's flattened prior points (``flat_cells``), cached per feature-map sizes and device: ``points`` of
    ``(N, 2)`` and strides ``(N, 1)``. ``kind``: 'index' (cell indices, grid units: YOLOX), 'centre' (cell + 0.5,
    grid units: YOLOv8) or 'corner' (each cell's top-left corner in pixels: NanoDet, RTMDet)."""

    KINDS = ("index", "centre", "corner")

    def __init__(self, strides: list[float], kind: str = "index"):
        if kind not in self.KINDS:
            raise ValueError(f"FlatCells: kind {kind!r}, expected one of {self.KINDS}")
        self.strides, self.kind = list(strides), kind
        self._cache: tuple | None = None  # (key, points, stride)

    def __call__(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        """maps: per-level outputs with (ny, nx) at dims 2-3 -> (points (N, 2), stride (N, 1))."""
        shapes = tuple(tuple(p.shape[2:4]) for p in maps)
        key = (shapes, maps[0].device)
        if self._cache is None or self._cache[0] != key:
            cells, stride = flat_cells(shapes, self.strides, maps[0].device)
            points = {"index": cells, "centre": cells + 0.5, "corner": cells * stride}[self.kind]
            self._cache = (key, points, stride)
        return self._cache[1], self._cache[2]


class GridCache:
    """Per-level cell grids ``(1, 1, ny, nx, 2)`` (``make_grid``) for a head: cached, rebuilt when a level's
    feature size, device or dtype changes, and built afresh inside the traced graph when exporting."""

    def __init__(self, nl: int):
        self.nl = nl
        self.clear()

    def clear(self) -> None:
        self._grids: list[Tensor | None] = [None] * self.nl

    def __call__(self, i: int, nx: int, ny: int, like: Tensor, export: bool = False) -> Tensor:
        g = self._grids[i]
        if export or g is None or g.shape[2:4] != (ny, nx) or g.device != like.device or g.dtype != like.dtype:
            g = make_grid(nx, ny, like.device, like.dtype).view(1, 1, ny, nx, 2)
            if not export:
                self._grids[i] = g
        return g


def decode_yolov5(t_xy: Tensor, t_wh: Tensor, cell_xy: Tensor | float, anchor_wh: Tensor) -> tuple[Tensor, Tensor]:
    """YOLOv5's anchor box coder: raw logits -> box centre and size, in the units of ``cell_xy`` and
    ``anchor_wh`` (grid units for the loss, pixels after multiplying by the stride).

    xy = 2 * sigmoid(t_xy) - 0.5 + cell, wh = (2 * sigmoid(t_wh))^2 * anchor.
    """
    xy = t_xy.sigmoid() * 2.0 - 0.5 + cell_xy
    wh = (t_wh.sigmoid() * 2.0) ** 2 * anchor_wh
    return xy, wh


def decode_yolox(t_xy: Tensor, t_wh: Tensor, cell_xy: Tensor | float,
                 stride: Tensor | float) -> tuple[Tensor, Tensor]:
    """YOLOX's anchor-free box coder: raw outputs -> box centre and size in pixels.

    xy = (t_xy + cell) * stride (an unbounded offset from the cell's top-left corner, no sigmoid),
    wh = exp(t_wh) * stride. ``cell_xy`` holds grid indices, broadcastable to ``t_xy``; ``stride`` too.
    """
    return (t_xy + cell_xy) * stride, t_wh.exp() * stride


def encode_yolox(xy: Tensor, wh: Tensor, cell_xy: Tensor | float, stride: Tensor | float,
                 eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Inverse of ``decode_yolox`` (YOLOX's L1 target): t_xy = xy / stride - cell, t_wh = log(wh / stride + eps)."""
    return xy / stride - cell_xy, torch.log(wh / stride + eps)


# ---------------------------------------------------------------------------------------------
# Box formats. Every function takes a torch tensor or a numpy array (..., 4) and returns the same kind.
# ---------------------------------------------------------------------------------------------
Boxes = Union[Tensor, np.ndarray]


def integral(dist_logits: Tensor, reg_max: int, project: Tensor | None = None) -> Tensor:
    """GFL's integral: ``(..., 4 * (reg_max + 1))`` logits, per box side a distribution over the bins
    0..reg_max -> ``(..., 4)`` its expectation (softmax, then the mean bin), in bins. ``project`` ``(reg_max + 1,)``
    holds the bin values when a head keeps them as a (frozen) weight, as YOLOv8's DFL does; default 0..reg_max."""
    bins = dist_logits.reshape(*dist_logits.shape[:-1], 4, reg_max + 1).softmax(-1)
    if project is None:
        project = torch.arange(reg_max + 1, device=dist_logits.device, dtype=bins.dtype)
    return bins @ project.to(bins.dtype)


def distance2bbox(points: Tensor, distance: Tensor) -> Tensor:
    """Points ``(..., 2)`` [x, y] and distances ``(..., 4)`` [left, top, right, bottom] -> ``xyxy`` boxes."""
    return torch.cat((points - distance[..., :2], points + distance[..., 2:]), -1)


def bbox2distance(points: Tensor, boxes: Tensor, reg_max: float | None = None, eps: float = 0.1) -> Tensor:
    """The inverse of ``distance2bbox``: ``xyxy`` boxes seen from points -> [left, top, right, bottom], clamped
    to ``[0, reg_max - eps]`` when ``reg_max`` is given (GFL's DFL targets, in bins)."""
    d = torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), -1)
    return d if reg_max is None else d.clamp(min=0, max=reg_max - eps)


def gfl_decode(dist_logits: Tensor, points: Tensor, stride: Tensor | float, reg_max: int) -> Tensor:
    """The GFL head's box coder (loss and eval alike): ``(..., 4 * (reg_max + 1))`` logits at prior points
    ``(..., 2)`` px -> ``xyxy`` px; each side's distance = ``integral`` x stride, so a box reaches at most
    ``reg_max`` strides from its point."""
    return distance2bbox(points, integral(dist_logits, reg_max) * stride)


def decode_distance(reg: Tensor, points: Tensor, stride: Tensor | float, exp: bool = False) -> Tensor:
    """RTMDet's box coder (loss and eval alike): ``(..., 4)`` raw [left, top, right, bottom] at prior points
    ``(..., 2)`` px -> ``xyxy`` px; each side's distance = raw x stride (``exp``: exp(raw) x stride)."""
    return distance2bbox(points, (reg.exp() if exp else reg) * stride)


def encode_distance(boxes: Tensor, points: Tensor, stride: Tensor | float, exp: bool = False) -> Tensor:
    """The inverse of ``decode_distance``: ``xyxy`` boxes seen from points -> raw distances (log with ``exp``)."""
    d = bbox2distance(points, boxes) / stride
    return d.log() if exp else d


def _clone(x: Boxes) -> Boxes:
    return x.clone() if isinstance(x, Tensor) else np.copy(x)


def xywh2xyxy(x: Boxes) -> Boxes:
    """``cxcywh`` -> ``xyxy`` (..., 4)."""
    if isinstance(x, Tensor):
        return box_convert(x, "cxcywh", "xyxy")
    y = np.copy(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy2xywh(x: Boxes) -> Boxes:
    """``xyxy`` -> ``cxcywh`` (..., 4)."""
    if isinstance(x, Tensor):
        return box_convert(x, "xyxy", "cxcywh")
    y = np.copy(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywhn2xyxy(x: Boxes, w: float = 640, h: float = 640, padw: float = 0, padh: float = 0) -> Boxes:
    """Normalised ``cxcywh`` -> ``xyxy`` pixels in an image ``w`` x ``h`` placed at offset (padw, padh)."""
    y = xywh2xyxy(x)
    y[..., [0, 2]] = y[..., [0, 2]] * w + padw
    y[..., [1, 3]] = y[..., [1, 3]] * h + padh
    return y


def xyxy2xywhn(x: Boxes, w: float = 640, h: float = 640, clip: bool = False, eps: float = 0.0) -> Boxes:
    """``xyxy`` pixels -> normalised ``cxcywh``; ``clip`` first clips the boxes to the image less ``eps``."""
    if clip:
        x = clip_boxes(_clone(x), (h - eps, w - eps))
    y = xyxy2xywh(x)
    y[..., [0, 2]] = y[..., [0, 2]] / w
    y[..., [1, 3]] = y[..., [1, 3]] / h
    return y


def clip_boxes(boxes: Boxes, shape: tuple[int, ...]) -> Boxes:
    """Clip ``xyxy`` boxes in place to an image of ``shape`` (h, w, ...); returns them too."""
    h, w = shape[:2]
    if isinstance(boxes, Tensor):
        boxes[..., 0].clamp_(0, w)
        boxes[..., 1].clamp_(0, h)
        boxes[..., 2].clamp_(0, w)
        boxes[..., 3].clamp_(0, h)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


def scale_boxes(img1_shape: tuple[int, ...], boxes: Boxes, img0_shape: tuple[int, ...],
                ratio_pad: tuple | None = None) -> Boxes:
    """Map ``xyxy`` boxes from a letterboxed image ``img1_shape`` (h, w) back to the original ``img0_shape``
    (h, w, ...), in place, and clip them. ``ratio_pad = ((gain_h, gain_w), (padw, padh))`` as the dataloader's
    shapes give it (``(h / h0, w / w0)``: the two differ by the rounding of the resized size) or the letterbox
    returned it (``(r, r)``); without it the gain and the centred padding are recomputed from the two shapes."""
    if ratio_pad is None:
        gain_h = gain_w = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = (img1_shape[1] - img0_shape[1] * gain_w) / 2, (img1_shape[0] - img0_shape[0] * gain_h) / 2
    else:
        (gain_h, gain_w), pad = ratio_pad
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., [0, 2]] /= gain_w
    boxes[..., [1, 3]] /= gain_h
    return clip_boxes(boxes, img0_shape)


# ---------------------------------------------------------------------------------------------
# Paired IoU variants (what torchvision.ops lacks: CIoU in YOLOv5's exact form, broadcastable pairs)
# ---------------------------------------------------------------------------------------------
def _corners(box: Tensor, xywh: bool, eps: float) -> tuple[Tensor, ...]:
    """(x1, y1, x2, y2, w, h) of ``box`` (..., 4), each (..., 1)."""
    if xywh:
        x, y, w, h = box.chunk(4, -1)
        x1, x2, y1, y2 = x - w / 2, x + w / 2, y - h / 2, y + h / 2
        return x1, y1, x2, y2, w, h
    x1, y1, x2, y2 = box.chunk(4, -1)
    return x1, y1, x2, y2, x2 - x1, (y2 - y1).clamp(eps)


def bbox_iou(box1: Tensor, box2: Tensor, xywh: bool = True, GIoU: bool = False, DIoU: bool = False,
             CIoU: bool = False, eps: float = 1e-7) -> Tensor:
    """Element-wise IoU (or GIoU / DIoU / CIoU) of broadcastable box tensors (..., 4) -> (..., 1).

    CIoU = IoU - rho^2 / c^2 - alpha * v with v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2 and
    alpha = v / (v - IoU + 1 + eps) held constant (no gradient), as YOLOv5's box loss uses it.
    """
    b1_x1, b1_y1, b1_x2, b1_y2, w1, h1 = _corners(box1, xywh, eps)
    b2_x1, b2_y1, b2_x2, b2_y2, w2, h2 = _corners(box2, xywh, eps)
    inter = ((torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0)
             * (torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)).clamp(0))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (GIoU or DIoU or CIoU):
        return iou
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box width
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    if GIoU and not (DIoU or CIoU):
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw ** 2 + ch ** 2 + eps  # squared diagonal of the enclosing box
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    if not CIoU:
        return iou - rho2 / c2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


# ---------------------------------------------------------------------------------------------
# Non-maximum suppression over the common head layout (B, N, 4 + 1 + nc)
# ---------------------------------------------------------------------------------------------
MAX_NMS = 30000  # most candidates per image handed to torchvision's NMS


def _candidates(x: Tensor, conf_thres: float, multi_label: bool) -> Tensor:
    """One image's rows (N', 4 + 1 + nc) that passed the objectness threshold -> (n, 6) [xyxy, conf, cls]."""
    box = xywh2xyxy(x[:, :4])
    scores = x[:, 5:] * x[:, 4:5]  # conf = obj * cls, (N', nc)
    if multi_label:
        i, j = (scores > conf_thres).nonzero(as_tuple=True)
        return torch.cat((box[i], scores[i, j, None], j[:, None].to(x.dtype)), 1)
    conf, j = scores.max(1, keepdim=True)
    keep = conf.view(-1) > conf_thres
    return torch.cat((box, conf, j.to(x.dtype)), 1)[keep]


def postprocess(prediction: Tensor, suppressed: bool, conf_thres: float = 0.25, iou_thres: float = 0.45,
                classes: list[int] | None = None, agnostic: bool = False, multi_label: bool = False,
                max_det: int = 300) -> list[Tensor]:
    """Decoded predictions -> per image (n, 6) [x1, y1, x2, y2, conf, cls]: YOLOv5's NMS, or for a model whose
    head already suppressed its detections (``suppressed``; see models/heads/base.py) the same thresholds,
    class filter and ``max_det`` without NMS."""
    if not suppressed:
        return non_max_suppression(prediction, conf_thres, iou_thres, classes, agnostic, multi_label, max_det)
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
    nc = prediction.shape[2] - 5
    cls_filter = None if classes is None else torch.as_tensor(classes, device=prediction.device)
    output = []
    for x in prediction:
        x = _candidates(x[x[:, 4] > conf_thres], conf_thres, multi_label and nc > 1)
        if cls_filter is not None:
            x = x[(x[:, 5:6] == cls_filter).any(1)]
        output.append(x[x[:, 4].argsort(descending=True)[:max_det]])
    return output


def _top_index(x: Tensor, k: int) -> Tensor:
    """(B, K) indices of the K largest of each row of ``x`` (B, n), largest first, equal values in index order: a
    stable sort (``torch.topk`` and an unstable sort leave their order open), and in an ONNX export TopK (which
    orders equal values by index; the exporter has no stable sort)."""
    if torch.onnx.is_in_onnx_export():
        return x.topk(k, dim=1).indices
    return x.sort(dim=1, descending=True, stable=True).indices[:, :k]


def topk_detections(pred: Tensor, max_det: int = 300) -> tuple[Tensor, Tensor]:
    """NMS-free selection of a one-to-one head's decoded predictions (YOLOv10; Ultralytics' end-to-end
    ``Detect.postprocess``): per image the K = min(max_det, N) predictions of best class score, then the K best
    (prediction, class) pairs among them. ``pred`` (B, N, 5 + nc) [cxcywh, obj, class probabilities] -> rows
    (B, max_det, 5 + nc) [cxcywh, obj, the pair's score at its class and 0 elsewhere], best first, padding rows (when
    N < max_det) all 0; and (B, max_det) the index of each row's prediction (-1 for padding). A prediction may give
    two rows (two classes); a (prediction, class) pair gives one. Equal scores are taken in index order (Ultralytics'
    ``topk`` leaves their order open). Traceable with dynamic shapes: max_det zero rows are appended, so that K is
    always max_det, and the rows past N are zeroed by a mask computed from the data."""
    nc = pred.shape[2] - 5
    real = torch.ones_like(pred[..., 4]).sum(1, keepdim=True)  # (B, 1) N, from the data: dynamic in an export
    pred = torch.cat((pred, torch.zeros_like(pred[:, :1]).expand(-1, max_det, -1)), 1)  # (B, N + max_det, 5 + nc)
    scores = pred[..., 5:]
    top = _top_index(scores.amax(-1), max_det)  # (B, K) predictions of best class score
    pair_scores = scores.gather(1, top[..., None].expand(-1, -1, nc)).flatten(1)  # (B, K x nc)
    pair = _top_index(pair_scores, max_det)  # (B, K)
    pair_scores = pair_scores.gather(1, pair)
    index = top.gather(1, torch.div(pair, nc, rounding_mode="floor"))  # (B, K)
    rows = pred.gather(1, index[..., None].expand(-1, -1, 5))  # (B, K, 5) cxcywh, obj
    cls = torch.zeros_like(pred[:, :max_det, 5:]).scatter_(2, (pair % nc)[..., None], pair_scores[..., None])
    keep = torch.arange(max_det, device=pred.device)[None] < real  # (B, K): min(max_det, N) pairs, as Ultralytics
    return torch.cat((rows, cls), 2) * keep[..., None], torch.where(keep, index, -1)


def non_max_suppression(prediction: Tensor | tuple | list, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        classes: list[int] | None = None, agnostic: bool = False, multi_label: bool = False,
                        max_det: int = 300) -> list[Tensor]:
    """YOLOv5 v7.0 NMS on decoded predictions (B, N, 4 + 1 + nc) [cxcywh px, obj, cls probs] ->
    per image (n, 6) [x1, y1, x2, y2, conf, cls], sorted by conf, n <= max_det.

    Candidates need obj > conf_thres and then obj * cls > conf_thres; ``multi_label`` keeps every such
    (box, class) pair (only when nc > 1); NMS is per class unless ``agnostic``; at most MAX_NMS candidates
    (highest conf) enter NMS. Classes are kept apart by torchvision's ``batched_nms`` (exact for any image
    size; YOLOv5's 7680 px class offset gives the same result below 7680 px). No time limit: the result
    never depends on machine speed.
    """
    if isinstance(prediction, (list, tuple)):  # a model's eval output (decoded, raw)
        prediction = prediction[0]
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"non_max_suppression: conf_thres={conf_thres} is outside [0, 1]")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"non_max_suppression: iou_thres={iou_thres} is outside [0, 1]")
    if prediction.ndim != 3 or prediction.shape[2] < 6:
        raise ValueError(f"non_max_suppression: prediction of shape {tuple(prediction.shape)} is not "
                         "(B, N, 4 + 1 + nc) with nc >= 1")
    nc = prediction.shape[2] - 5
    multi_label = multi_label and nc > 1
    cls_filter = None if classes is None else torch.as_tensor(classes, device=prediction.device)
    output = []
    for x in prediction:  # one image, (N, 5 + nc)
        x = _candidates(x[x[:, 4] > conf_thres], conf_thres, multi_label)  # (n, 6)
        if cls_filter is not None:
            x = x[(x[:, 5:6] == cls_filter).any(1)]
        x = x[x[:, 4].argsort(descending=True)[:MAX_NMS]]
        idxs = torch.zeros_like(x[:, 5]) if agnostic else x[:, 5]
        keep = batched_nms(x[:, :4].float(), x[:, 4].float(), idxs.long(), iou_thres)[:max_det]
        output.append(x[keep])
    return output
