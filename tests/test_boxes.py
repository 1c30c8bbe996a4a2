"""Box formats, letterbox mapping, IoU variants and NMS."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou, complete_box_iou, distance_box_iou, generalized_box_iou

from utils import boxes
from utils.boxes import (
    bbox_iou,
    clip_boxes,
    non_max_suppression,
    scale_boxes,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)


def _rand_xyxy(n: int, seed: int = 0, size: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat((xy, xy + wh), 1)


# ------------------------------------------------------------------------------------------ formats
def test_format_conversions_known_values_torch_and_numpy():
    xywh = [[50.0, 40.0, 20.0, 10.0]]
    xyxy = [[40.0, 35.0, 60.0, 45.0]]
    for kind in (torch.tensor, np.array):
        a = kind(xywh)
        b = xywh2xyxy(a)
        assert type(b) is type(a) and np.allclose(np.asarray(b), xyxy)
        assert np.allclose(np.asarray(xyxy2xywh(b)), xywh)
        assert np.allclose(np.asarray(a), xywh)  # inputs untouched


def test_normalised_round_trip_and_padding():
    xywhn = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.1, 0.1]])
    px = xywhn2xyxy(xywhn, w=200, h=100, padw=10, padh=5)
    assert torch.allclose(px[0], torch.tensor([80.0 + 10, 30.0 + 5, 120.0 + 10, 70.0 + 5]))
    back = xyxy2xywhn(px - torch.tensor([10.0, 5, 10, 5]), w=200, h=100)
    assert torch.allclose(back, xywhn, atol=1e-6)
    spill = torch.tensor([[-10.0, -10.0, 50.0, 50.0]])
    assert torch.allclose(xyxy2xywhn(spill, w=100, h=100, clip=True), torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert spill[0, 0] == -10  # clip=True works on a copy
    n = xywhn2xyxy(xywhn.numpy(), w=200, h=100)
    assert isinstance(n, np.ndarray) and np.allclose(xyxy2xywhn(n, w=200, h=100), xywhn.numpy())


def test_clip_boxes():
    t = torch.tensor([[-5.0, -5.0, 700.0, 300.0]])
    clip_boxes(t, (240, 640))  # (h, w)
    assert t.tolist() == [[0.0, 0.0, 640.0, 240.0]]
    a = np.array([[-5.0, 10.0, 700.0, 300.0]])
    clip_boxes(a, (240, 640, 3))
    assert a.tolist() == [[0.0, 10.0, 640.0, 240.0]]


@pytest.mark.parametrize("img0, img1", [((480, 640), (640, 640)), ((300, 600), (320, 320)), ((600, 300), (416, 256))])
def test_scale_boxes_inverts_the_letterbox(img0, img1):
    gain = min(img1[0] / img0[0], img1[1] / img0[1])
    padw, padh = (img1[1] - img0[1] * gain) / 2, (img1[0] - img0[0] * gain) / 2
    orig = torch.tensor([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, img0[1], img0[0]]])
    letterboxed = orig * gain + torch.tensor([padw, padh, padw, padh])
    back = scale_boxes(img1, letterboxed.clone(), img0)
    assert torch.allclose(back, orig, atol=1e-4)
    back2 = scale_boxes(img1, letterboxed.clone(), img0, ratio_pad=((gain, gain), (padw, padh)))
    assert torch.allclose(back2, orig, atol=1e-4)
    spill = scale_boxes(img1, torch.tensor([[-50.0, -50.0, 5000.0, 5000.0]]), img0)
    assert spill.tolist() == [[0.0, 0.0, img0[1], img0[0]]]  # clipped to the original image


# ------------------------------------------------------------------------------------------ IoU
def test_bbox_iou_matches_torchvision_variants():
    b1, b2 = _rand_xyxy(64, 1), _rand_xyxy(64, 2)
    b2[:8] = b1[:8] + 2.0  # some strongly overlapping pairs
    for kwargs, ref in (({}, box_iou), ({"GIoU": True}, generalized_box_iou), ({"DIoU": True}, distance_box_iou),
                        ({"CIoU": True}, complete_box_iou)):
        ours = bbox_iou(b1, b2, xywh=False, **kwargs)
        assert ours.shape == (64, 1)
        assert torch.allclose(ours.squeeze(1), ref(b1, b2).diagonal(), atol=1e-4), kwargs
        ours_xywh = bbox_iou(xyxy2xywh(b1), xyxy2xywh(b2), xywh=True, **kwargs)
        assert torch.allclose(ours_xywh, ours, atol=1e-4), kwargs


def test_bbox_iou_broadcast_and_gradient():
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    others = torch.tensor([[10.0, 10.0, 20.0, 20.0], [15.0, 10.0, 25.0, 20.0], [100.0, 100, 110, 110]])
    iou = bbox_iou(box, others, xywh=False)
    assert torch.allclose(iou.squeeze(1), torch.tensor([1.0, 1 / 3, 0.0]), atol=1e-5)
    ciou = bbox_iou(box, others, xywh=False, CIoU=True)
    assert ciou[0] == pytest.approx(1.0, abs=1e-5) and ciou[2] < 0  # far apart: CIoU goes negative
    pred = torch.tensor([[12.0, 11.0, 6.0, 9.0]], requires_grad=True)  # xywh
    loss = (1 - bbox_iou(pred, torch.tensor([[15.0, 15.0, 10.0, 10.0]]), CIoU=True)).sum()
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert pred.grad[0, 0] < 0 and pred.grad[0, 1] < 0  # moving the centre towards the target lowers the loss


# ------------------------------------------------------------------------------------------ NMS
def _pred(rows: list[list[float]], nc: int) -> torch.Tensor:
    """rows [cx, cy, w, h, obj, cls0, cls1, ...] -> (1, N, 5 + nc)."""
    t = torch.tensor(rows, dtype=torch.float32)
    assert t.shape[1] == 5 + nc
    return t[None]


def _reference_nms(dets: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy per-class NMS written the slow, obvious way; dets (n, 6) [xyxy, conf, cls]."""
    keep = []
    for c in np.unique(dets[:, 5]):
        d = dets[dets[:, 5] == c]
        d = d[np.argsort(-d[:, 4], kind="stable")]
        alive = np.ones(len(d), bool)
        for i in range(len(d)):
            if not alive[i]:
                continue
            keep.append(d[i])
            ious = box_iou(torch.tensor(d[i:i + 1, :4]), torch.tensor(d[:, :4]))[0].numpy()
            alive &= ~((ious > iou_thres) & (np.arange(len(d)) > i))
    out = np.array(keep).reshape(-1, 6)
    return out[np.argsort(-out[:, 4], kind="stable")]


def test_nms_class_aware_agnostic_and_conf():
    p = _pred([[50, 50, 20, 20, 0.9, 0.9, 0.1],     # class 0, conf 0.81
               [52, 50, 20, 20, 0.8, 0.1, 0.9],     # overlaps, class 1, conf 0.72
               [51, 51, 20, 20, 0.7, 0.9, 0.1],     # overlaps the first, same class: suppressed
               [150, 150, 10, 10, 0.3, 0.9, 0.1],   # conf 0.27 > 0.25: kept
               [200, 200, 10, 10, 0.3, 0.5, 0.1],   # conf 0.15: dropped
               [250, 250, 10, 10, 0.2, 1.0, 1.0]], nc=2)  # obj 0.2 < 0.25: dropped before the product
    out = non_max_suppression(p, conf_thres=0.25, iou_thres=0.45)[0]
    assert out.shape == (3, 6)
    assert torch.allclose(out[:, 4], torch.tensor([0.81, 0.72, 0.27])) and out[:, 5].tolist() == [0, 1, 0]
    assert torch.allclose(out[0, :4], torch.tensor([40.0, 40.0, 60.0, 60.0]))  # xyxy
    agn = non_max_suppression(p, conf_thres=0.25, iou_thres=0.45, agnostic=True)[0]
    assert agn[:, 4].tolist() == pytest.approx([0.81, 0.27])
    only1 = non_max_suppression(p, conf_thres=0.25, classes=[1])[0]
    assert only1[:, 5].tolist() == [1]
    assert non_max_suppression(p, conf_thres=0.25, max_det=1)[0].shape == (1, 6)
    assert non_max_suppression((p, ["raw"]), conf_thres=0.25)[0].shape == (3, 6)  # model eval output


def test_nms_multi_label_and_empty():
    p = _pred([[50, 50, 20, 20, 0.9, 0.8, 0.7, 0.01]], nc=3)
    single = non_max_suppression(p, conf_thres=0.25, multi_label=False)[0]
    multi = non_max_suppression(p, conf_thres=0.25, multi_label=True)[0]
    assert single[:, 5].tolist() == [0] and sorted(multi[:, 5].tolist()) == [0, 1]
    assert torch.allclose(multi[:, 4], torch.tensor([0.72, 0.63]))
    empty = non_max_suppression(torch.zeros(2, 10, 8), conf_thres=0.25)
    assert len(empty) == 2 and all(e.shape == (0, 6) for e in empty)
    with pytest.raises(ValueError, match="conf_thres=1.5"):
        non_max_suppression(p, conf_thres=1.5)
    with pytest.raises(ValueError, match="not"):
        non_max_suppression(torch.zeros(1, 10, 5))


def test_nms_matches_reference_on_random_batch():
    g = torch.Generator().manual_seed(0)
    b, n, nc = 3, 400, 4
    xy = torch.rand(b, n, 2, generator=g) * 200
    wh = torch.rand(b, n, 2, generator=g) * 40 + 4
    obj = torch.rand(b, n, 1, generator=g)
    cls = torch.rand(b, n, nc, generator=g)
    pred = torch.cat((xy, wh, obj, cls), 2)
    for multi_label in (False, True):
        out = non_max_suppression(pred, conf_thres=0.1, iou_thres=0.5, multi_label=multi_label, max_det=10000)
        for i in range(b):
            x = pred[i][pred[i, :, 4] > 0.1]
            scores = x[:, 5:] * x[:, 4:5]
            box = xywh2xyxy(x[:, :4])
            if multi_label:
                r, c = (scores > 0.1).nonzero(as_tuple=True)
                cand = torch.cat((box[r], scores[r, c, None], c[:, None].float()), 1)
            else:
                conf, c = scores.max(1, keepdim=True)
                cand = torch.cat((box, conf, c.float()), 1)[conf[:, 0] > 0.1]
            ref = _reference_nms(cand.numpy().astype(np.float64), 0.5)
            assert out[i].shape == ref.shape, (multi_label, i)
            assert np.allclose(out[i].numpy(), ref, atol=1e-4), (multi_label, i)


def test_nms_candidate_cap(monkeypatch):
    monkeypatch.setattr(boxes, "MAX_NMS", 5)
    far = [[i * 50.0 + 10, 10, 8, 8, 0.5 + i / 100, 1.0] for i in range(20)]  # 20 separate boxes, rising conf
    out = non_max_suppression(_pred(far, nc=1), conf_thres=0.25)[0]
    assert out.shape == (5, 6) and out[:, 4].min() == pytest.approx(0.5 + 15 / 100)


def test_flat_cells_kinds_and_cache():
    """The losses' shared prior points: index / centre / corner of the same cells, cached until a size changes."""
    from utils.boxes import FlatCells

    maps = [torch.zeros(1, 3, 2, 3), torch.zeros(1, 3, 1, 2)]  # (ny, nx) 2x3 at stride 8, 1x2 at stride 16
    index, stride = FlatCells([8, 16])(maps)
    assert index.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1], [0, 0], [1, 0]]
    assert stride.squeeze(1).tolist() == [8] * 6 + [16] * 2
    assert torch.equal(FlatCells([8, 16], "centre")(maps)[0], index + 0.5)
    corner = FlatCells([8, 16], "corner")
    points, _ = corner(maps)
    assert torch.equal(points, index * stride) and corner(maps)[0] is points  # cached: the same tensor
    assert corner([torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 2, 2)])[0].shape == (20, 2)  # a new size rebuilds
    with pytest.raises(ValueError, match="kind"):
        FlatCells([8], "middle")
