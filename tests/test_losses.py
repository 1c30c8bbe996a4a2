"""YOLOv5 loss for the anchor-based heads: target assignment against a per-target reference, empty images,
gain scaling, and a tiny overfit that must drive the loss down for both heads."""
from collections import Counter

import pytest
import torch

from models.yolo import DetectionModel, load_cfg
from utils.losses import YOLOv5Loss, build_yolov5_targets

HYP = {"box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0, "cls_pw": 1.0, "obj_pw": 1.0, "fl_gamma": 0.0}


def reference_targets(targets, shapes, anchors, anchor_t, g=0.5):
    """Per-target, per-anchor loops: YOLOv5's rule written out plainly."""
    out = []
    for i, (ny, nx) in enumerate(shapes):
        rows = Counter()
        for t in targets.tolist():
            b, c, x, y, w, h = t
            gx, gy, gw, gh = x * nx, y * ny, w * nx, h * ny
            for a, (aw, ah) in enumerate(anchors[i].tolist()):
                r = max(gw / aw, aw / gw, gh / ah, ah / gh)
                if r >= anchor_t:
                    continue
                cells = [(0, 0)]
                if gx % 1 < g and gx > 1:
                    cells.append((1, 0))
                if gy % 1 < g and gy > 1:
                    cells.append((0, 1))
                if (nx - gx) % 1 < g and nx - gx > 1:
                    cells.append((-1, 0))
                if (ny - gy) % 1 < g and ny - gy > 1:
                    cells.append((0, -1))
                for ox, oy in cells:
                    gi = min(max(int(gx - ox * g), 0), nx - 1)
                    gj = min(max(int(gy - oy * g), 0), ny - 1)
                    rows[(int(b), a, gj, gi, int(c))] += 1
        out.append(rows)
    return out


def random_targets(n, bs, nc, gen):
    xy = torch.rand(n, 2, generator=gen) * 0.9 + 0.05
    wh = torch.rand(n, 2, generator=gen) * 0.4 + 0.01
    b = torch.randint(0, bs, (n, 1), generator=gen).float()
    c = torch.randint(0, nc, (n, 1), generator=gen).float()
    return torch.cat((b, c, xy, wh), 1)


def test_targets_match_reference():
    gen = torch.Generator().manual_seed(0)
    anchors = DetectionModel("yolov5n.yaml", nc=4).head.anchors
    targets = random_targets(40, 3, 4, gen)
    shapes = [(16, 20), (8, 10), (4, 5)]
    ours = build_yolov5_targets(targets, shapes, anchors, 4.0)
    ref = reference_targets(targets, shapes, anchors, 4.0)
    for lvl, rows in zip(ours, ref):
        got = Counter((int(b), int(a), int(j), int(i), int(c)) for b, a, j, i, c in
                      zip(lvl.b, lvl.a, lvl.gj, lvl.gi, lvl.cls))
        assert got == rows
        assert ((lvl.box[:, :2] > -0.5) & (lvl.box[:, :2] < 1.5)).all()


def test_up_to_three_cells_per_anchor():
    anchors = torch.tensor([[[2.0, 2.0]]])
    t = torch.tensor([[0, 0, 0.52 / 1, 0.52, 0.1, 0.1]])  # cell (5, 5) of 10x10, fractional parts 0.2
    (lvl,) = build_yolov5_targets(t, [(10, 10)], anchors, 4.0)
    assert sorted(zip(lvl.gj.tolist(), lvl.gi.tolist())) == [(4, 5), (5, 4), (5, 5)]


def test_empty_targets_give_zero_box_and_cls_loss():
    model = DetectionModel("yolov5n.yaml", nc=3)
    raw = model(torch.rand(2, 3, 64, 64))
    crit = model.criterion(HYP, imgsz=64)
    total, items = crit(raw, torch.zeros((0, 6)))
    assert crit.loss_names == ("box", "obj", "cls")
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
    assert torch.isfinite(total)
    total.backward()


def test_gains_scale_with_levels_classes_and_size():
    anchors = torch.ones(3, 3, 2)
    a, b = YOLOv5Loss(80, anchors, HYP, imgsz=640), YOLOv5Loss(8, anchors, HYP, imgsz=320)
    assert a.box_gain == pytest.approx(0.05) and a.cls_gain == pytest.approx(0.5)
    assert b.cls_gain == pytest.approx(0.5 * 8 / 80) and b.obj_gain == pytest.approx(0.25)


def test_perfect_box_has_near_zero_box_loss():
    anchors = torch.tensor([[[2.0, 2.0]]])
    t = torch.tensor([[0, 0, 0.55, 0.55, 0.2, 0.2]])  # grid 10x10: centre (5.5, 5.5), wh (2, 2) = anchor
    raw = torch.zeros(1, 1, 10, 10, 6, requires_grad=True)  # sigmoid(0)=0.5 -> xy offset 0.5, wh = anchor
    loss = YOLOv5Loss(1, anchors, HYP, imgsz=640)
    _, items = loss([raw], t)
    assert items[0] < 1e-6


def tiny_cfg(head):
    cfg, _ = load_cfg("yolov5n.yaml" if head == "Detect" else "yolov5n-decoupled.yaml")
    cfg["width_multiple"] = 0.125
    return cfg


@pytest.mark.parametrize("head", ["Detect", "DetectDcoupleHead"])
def test_tiny_overfit_loss_falls(head):
    torch.manual_seed(0)
    model = DetectionModel(tiny_cfg(head), nc=2)
    imgs = torch.full((2, 3, 64, 64), 0.1)
    imgs[0, :, 8:40, 8:40] = 0.9    # a bright square, class 0
    imgs[1, 0, 24:56, 16:48] = 0.9  # a red square, class 1
    targets = torch.tensor([[0, 0, 24 / 64, 24 / 64, 0.5, 0.5], [1, 1, 32 / 64, 40 / 64, 0.5, 0.5]])
    crit = model.criterion(HYP, imgsz=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, items = crit(model(imgs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 5
    with torch.no_grad():  # decode the train-mode outputs (BN running stats lag after 60 steps)
        y = model.head.decode(model(imgs))
    best = y[0, (y[0, :, 4] * y[0, :, 5]).argmax()]  # highest class-0 confidence in image 0
    assert abs(best[0] - 24) < 6 and abs(best[1] - 24) < 6 and abs(best[2] - 32) < 10
