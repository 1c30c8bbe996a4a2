"""YOLOX: anchor-free decoupled head, its loss (SimOTA), the YOLOX YAMLs and the yolov5*-decoupled-af YAMLs."""
from __future__ import annotations

import math
from copy import deepcopy

import pytest
import torch
from torchvision.ops import box_iou

import models.heads.yolox as yolox_head
import utils.boxes as boxes
import utils.losses as losses
from models.common import C3DW, DWSConv
from models.heads import YOLOXHead
from models.heads.base import EpochState
from models.yolo import DetectionModel, load_cfg
from utils.boxes import decode_yolox, encode_yolox, non_max_suppression, xywh2xyxy
from utils.losses import YOLOXLoss, pad_targets

AF_CFGS = ["yolox-nano.yaml", "yolox-tiny.yaml", "yolox-s.yaml", "yolov5n-decoupled-af.yaml",
           "yolov5s-decoupled-af.yaml"]
# YOLOX README at nc=80: parameters, GFLOPs (thop MACs x 2) and the input size they are quoted at
PUBLISHED = {"yolox-nano.yaml": (0.91e6, 1.08, 416), "yolox-tiny.yaml": (5.06e6, 6.45, 416),
             "yolox-s.yaml": (8.97e6, 26.8, 640)}
HYP = {"box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0}
NO_MOSAIC = EpochState(epoch=0, epochs=1, mosaic=False)  # YOLOX's L1 term is on


def _decode(crit: YOLOXLoss, raw) -> torch.Tensor:
    """(B, N, 4) cxcywh boxes from the loss's own flattened cells and strides, with the shared coder."""
    pred = crit.flatten(raw)
    cell, stride = crit.cells(raw)
    return torch.cat(decode_yolox(pred[..., 0:2], pred[..., 2:4], cell, stride), -1)


def tiny_model(nc: int = 2, width: float = 0.125) -> DetectionModel:
    cfg, _ = load_cfg("yolov5n-decoupled-af.yaml")
    cfg.update(nc=nc, width_multiple=width)
    return DetectionModel(cfg)


def random_targets(gen: torch.Generator, counts: list[int], nc: int) -> torch.Tensor:
    """(M, 6) normalised targets, rows of the images interleaved (not sorted by image)."""
    img = torch.cat([torch.full((n,), float(b)) for b, n in enumerate(counts)])
    m = img.shape[0]
    cls = torch.randint(0, nc, (m,), generator=gen).float()
    wh = torch.rand(m, 2, generator=gen) * 0.4 + 0.05
    xy = torch.rand(m, 2, generator=gen) * (1 - wh) + wh / 2
    t = torch.cat((img[:, None], cls[:, None], xy, wh), 1)
    return t[torch.randperm(m, generator=gen)]


# ---------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("nc", [1, 80])
@pytest.mark.parametrize("cfg", AF_CFGS)
def test_build_and_forward_non_square(cfg, nc):
    model = DetectionModel(cfg, nc=nc)
    assert isinstance(model.head, YOLOXHead) and model.stride.tolist() == [8, 16, 32]
    x = torch.rand(1, 3, 128, 160)
    raw = model.train()(x)
    assert [tuple(r.shape) for r in raw] == [(1, 1, 128 // s, 160 // s, nc + 5) for s in (8, 16, 32)]
    with torch.no_grad():
        y, raw_eval = model.eval()(x)
    assert y.shape == (1, sum((128 // s) * (160 // s) for s in (8, 16, 32)), nc + 5)
    assert torch.isfinite(y).all() and ((y[..., 4:] >= 0) & (y[..., 4:] <= 1)).all()
    assert [r.shape for r in raw_eval] == [r.shape for r in raw]


@pytest.mark.parametrize("cfg", sorted(PUBLISHED))
def test_params_and_gflops_match_yolox(cfg):
    params, gflops, imgsz = PUBLISHED[cfg]
    info = DetectionModel(cfg, nc=80).info(imgsz)
    assert abs(info["parameters"] / params - 1) < 0.01, info
    assert abs(info["gflops"] / gflops - 1) < 0.05, info  # thop versions differ slightly (Nano: +3%)


def test_yolox_widths_follow_the_reference():
    nano, s = DetectionModel("yolox-nano.yaml"), DetectionModel("yolox-s.yaml")
    assert {lvl.stem.conv.out_channels for lvl in nano.head.m} == {64}  # int(256 * 0.25)
    assert {lvl.stem.conv.out_channels for lvl in s.head.m} == {128}
    assert isinstance(nano.head.m[0].cls_convs[0], DWSConv) and isinstance(nano.model[4], C3DW)
    assert nano.model[0].conv.conv.kernel_size == (3, 3)  # Focus stem k=3
    assert [pool.kernel_size for pool in s.model[8].m] == [5, 9, 13]
    assert [len(s.model[i].m) for i in (2, 4, 6, 9, 13, 17, 20, 23)] == [1, 3, 3, 1, 1, 1, 1, 1]


def test_head_args_are_checked():
    cfg, _ = load_cfg("yolov5n-decoupled-af.yaml")
    cfg["head"][-1][3] = ["nc", 256]  # optional arguments left out take their defaults; ch stays last
    head = DetectionModel(cfg).head
    assert head.depthwise is False and head.assigner == "simota"
    cfg["head"][-1][3] = ["nc", 256, "yes"]
    with pytest.raises(ValueError, match="depthwise"):
        DetectionModel(cfg)
    cfg["head"][-1][3] = ["nc", 256, False, "hungarian"]
    with pytest.raises(ValueError, match=r"row 24 \(YOLOXHead\).*assigner 'hungarian' not known"):
        DetectionModel(cfg)


def test_bias_priors_and_layout():
    model = tiny_model(nc=3)
    prior = -math.log((1 - 0.01) / 0.01)
    for lvl in model.head.m:
        assert torch.allclose(lvl.cls_preds.bias, torch.full_like(lvl.cls_preds.bias, prior))
        assert torch.allclose(lvl.obj_preds.bias, torch.full_like(lvl.obj_preds.bias, prior))
        with torch.no_grad():
            for conv in (lvl.cls_preds, lvl.reg_preds, lvl.obj_preds):
                conv.weight.zero_()
            lvl.reg_preds.bias.copy_(torch.tensor([0.5, 0.25, 0.0, math.log(2)]))
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 64, 96))[0]  # (1, 8*12 + 4*6 + 2*3, 8)
    # level 0, cell (row 1, col 2): centre ((2 + 0.5) * 8, (1 + 0.25) * 8), wh (8, 16); probabilities 0.01
    torch.testing.assert_close(y[0, 1 * 12 + 2], torch.tensor([20.0, 10.0, 8.0, 16.0] + [0.01] * 4))
    # level 2 (stride 32), cell (0, 1)
    torch.testing.assert_close(y[0, 96 + 24 + 1, :4], torch.tensor([48.0, 8.0, 32.0, 64.0]))


def test_export_mode_returns_only_decoded_and_grids_follow_size():
    model = tiny_model(nc=2).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
        g64 = model.head._grid._grids[0]
        model(torch.rand(1, 3, 64, 64))
        assert model.head._grid._grids[0] is g64  # cached while the size holds
        y, _ = model(torch.rand(1, 3, 96, 128))
        assert model.head._grid._grids[0].shape[2:4] == (12, 16) and y[..., 0].max() > 100
        model.set_export()
        out = model(torch.rand(1, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 64 + 16 + 4, 7)


def test_fuse_keeps_outputs_with_depthwise_blocks():
    model = DetectionModel("yolox-nano.yaml", nc=3).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        y0 = model(x)[0]
        y1 = deepcopy(model).fuse()(x)[0]
    assert (y0 - y1).abs().max() < 1e-3


def test_weights_transfer_between_head_variants():
    """Backbone and neck from yolov5n; the decoupled anchor-based head's stem and branches too."""
    af = DetectionModel("yolov5n-decoupled-af.yaml").state_dict()
    for src_cfg in ("yolov5n.yaml", "yolov5n-decoupled.yaml"):
        src = DetectionModel(src_cfg).state_dict()
        body = [k for k in src if not k.startswith("model.24.")]
        assert all(k in af and af[k].shape == src[k].shape for k in body)
    src = DetectionModel("yolov5n-decoupled.yaml").state_dict()
    branches = [k for k in src if k.startswith("model.24.m.") and "_preds" not in k]
    assert branches and all(af[k].shape == src[k].shape for k in branches)


# ---------------------------------------------------------------------------------------------------- coder
def test_coder_round_trip_and_shared_by_head_and_loss():
    assert yolox_head.decode_yolox is losses.yolox.decode_yolox is boxes.decode_yolox
    g = torch.Generator().manual_seed(0)
    cell = torch.randint(0, 20, (50, 2)).float()
    stride = torch.tensor([8.0, 16.0, 32.0]).repeat_interleave(torch.tensor([20, 20, 10]))[:, None]
    t_xy, t_wh = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g)
    xy, wh = decode_yolox(t_xy, t_wh, cell, stride)
    torch.testing.assert_close(xy, (t_xy + cell) * stride)
    e_xy, e_wh = encode_yolox(xy, wh, cell, stride)
    torch.testing.assert_close(e_xy, t_xy, atol=1e-4, rtol=0)
    torch.testing.assert_close(e_wh, t_wh, atol=1e-4, rtol=0)

    model = tiny_model(nc=3)
    raw = model.train()(torch.rand(2, 3, 64, 96))
    crit = model.criterion(HYP)
    with torch.no_grad():
        torch.testing.assert_close(_decode(crit, raw), model.head.decode(raw)[..., :4])  # same cells, strides


# ---------------------------------------------------------------------------------------------------- loss
def test_pad_targets_scatters_like_a_loop():
    g = torch.Generator().manual_seed(1)
    counts = [3, 0, 5, 1]
    t = random_targets(g, counts, nc=4)
    gt = pad_targets(t, 4, img_w=96, img_h=64)
    assert gt.boxes.shape == (4, 5, 4) and gt.mask.sum(1).tolist() == counts
    for b in range(4):
        rows = t[t[:, 0] == b]  # the stable order of the input
        n = rows.shape[0]
        torch.testing.assert_close(gt.boxes[b, :n], rows[:, 2:] * torch.tensor([96.0, 64, 96, 64]))
        assert gt.labels[b, :n].tolist() == rows[:, 1].long().tolist()
    empty = pad_targets(torch.zeros(0, 6), 3, 64, 64)
    assert empty.boxes.shape == (3, 1, 4) and not empty.mask.any()
    with pytest.raises(ValueError, match="image index"):
        pad_targets(torch.tensor([[5.0, 0, 0.5, 0.5, 0.1, 0.1]]), 2, 64, 64)


def reference_terms(crit: YOLOXLoss, raw, targets, img_w, img_h):
    """YOLOX's get_losses written out per positive, on the criterion's own assignment."""
    pred = crit.flatten(raw)
    cell, stride = crit.cells(raw)
    pred_box = _decode(crit, raw)
    gt = pad_targets(targets, pred.shape[0], img_w, img_h)
    res = crit.assign(pred, pred_box, cell, stride, gt)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    l_iou = l_cls = l_l1 = 0.0
    for b, n in res.fg_mask.nonzero().tolist():
        k = int(res.assigned_gt[b, n])
        gbox = gt.boxes[b, k]
        iou = float(box_iou(xywh2xyxy(pred_box[b, n][None]), xywh2xyxy(gbox[None])))
        l_iou += 1 - iou ** 2
        target = torch.zeros(crit.nc)
        target[gt.labels[b, k]] = float(res.matched_iou[b, n])
        l_cls += float(bce(pred[b, n, 5:], target, reduction="sum"))
        s, c = float(stride[n]), cell[n]
        l1_target = torch.cat((gbox[:2] / s - c, torch.log(gbox[2:] / s + 1e-8)))
        l_l1 += float((pred[b, n, :4] - l1_target).abs().sum())
    l_obj = float(bce(pred[..., 4], res.fg_mask.float(), reduction="sum"))
    num_fg = max(int(res.num_fg), 1)
    return torch.tensor([5 * l_iou, l_obj, l_cls, l_l1]) / num_fg, int(res.num_fg)


def test_loss_terms_match_per_positive_reference():
    torch.manual_seed(0)
    model = tiny_model(nc=3)
    g = torch.Generator().manual_seed(2)
    targets = random_targets(g, [4, 0, 2], nc=3)
    crit = model.criterion(HYP)
    crit.on_epoch(NO_MOSAIC)
    with torch.no_grad():
        raw = model.train()(torch.rand(3, 3, 64, 96))
        total, items = crit(raw, targets)
        expected, num_fg = reference_terms(crit, raw, targets, 96, 64)
    assert num_fg >= 6  # every gt got at least one positive
    torch.testing.assert_close(items, expected / losses.YOLOX_NOMINAL_BATCH, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(total, items.sum() * 3)


def test_empty_images_give_finite_losses_and_zero_box_terms():
    model = tiny_model(nc=2)
    crit = model.criterion(HYP)
    crit.on_epoch(NO_MOSAIC)
    raw = model.train()(torch.rand(2, 3, 64, 64))
    total, items = crit(raw, torch.zeros(0, 6))
    assert torch.isfinite(total) and items[1] > 0
    assert items[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # one empty image beside one with objects
    raw = model(torch.rand(2, 3, 64, 64))
    total, items = crit(raw, torch.tensor([[1, 0, 0.5, 0.5, 0.3, 0.3]]))
    assert torch.isfinite(total) and (items > 0).all()


def test_l1_switched_on_by_close_mosaic():
    model = tiny_model(nc=2)
    crit = model.criterion(HYP)
    targets = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.4], [1, 0, 0.6, 0.3, 0.2, 0.2]])
    with torch.no_grad():
        raw = model.train()(torch.rand(2, 3, 64, 64))
        _, before = crit(raw, targets)
        crit.on_epoch(NO_MOSAIC)
        _, after = crit(raw, targets)
    assert before[3] == 0 and after[3] > 0
    torch.testing.assert_close(before[:3], after[:3])
    assert tuple(crit.loss_names) == ("iou", "obj", "cls", "l1")


def test_center_only_rule_from_hyp():
    model = tiny_model(nc=2)
    crit = model.criterion({**HYP, "simota_center_only": True})
    assert crit.assigner.keywords == {"center_only": True}  # the radius defaults to 1.5 with it (checked below)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.8, 0.8]])  # a big box: many cells inside it
    with torch.no_grad():
        raw = model.train()(torch.rand(1, 3, 64, 64))
        pred = crit.flatten(raw)
        cell, stride = crit.cells(raw)
        res = crit.assign(pred, _decode(crit, raw), cell, stride, pad_targets(targets, 1, 64, 64))
    centres = (cell + 0.5) * stride
    fg = res.fg_mask[0]
    assert fg.any()
    assert ((centres[fg] - 32).abs() < 1.5 * stride[fg]).all()


def test_criterion_rejects_wrong_raw_layout():
    crit = tiny_model(nc=2).criterion(HYP)
    with pytest.raises(ValueError, match="level 0"):
        crit([torch.zeros(1, 3, 8, 8, 7)] * 3, torch.zeros(0, 6))


# ---------------------------------------------------------------------------------------------------- overfit
def shapes_batch(size: int = 64):
    """4 tiny images: red (class 0) and blue (class 1) rectangles on grey; the last image is empty."""
    objs = {0: [(0, 16, 12, 44, 36), (1, 40, 40, 60, 58)], 1: [(1, 8, 30, 30, 60)], 2: [(0, 30, 4, 62, 28)], 3: []}
    imgs = torch.full((4, 3, size, size), 0.5)
    rows = []
    for b, boxes_b in objs.items():
        for c, x1, y1, x2, y2 in boxes_b:
            imgs[b, :, y1:y2, x1:x2] = torch.tensor([1.0, 0.1, 0.1] if c == 0 else [0.1, 0.1, 1.0])[:, None, None]
            rows.append([b, c, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size])
    return imgs, torch.tensor(rows)


def test_tiny_overfit_finds_the_boxes():
    torch.manual_seed(0)
    imgs, targets = shapes_batch()
    model = tiny_model(nc=2).train()
    crit = model.criterion(HYP)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(150):
        loss, _ = crit(model(imgs), targets)
        if step == 0:
            first = float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # train-mode forward: BN running statistics lag behind 150 steps
        final, _ = crit(model(imgs), targets)
        dets = non_max_suppression(model.head.decode(model(imgs)), conf_thres=0.3, iou_thres=0.5)
    assert first / float(final) > 8
    for b, det in enumerate(dets):
        gt = targets[targets[:, 0] == b]
        assert det.shape[0] == gt.shape[0], (b, det)  # every box found once; nothing on the empty image
        if gt.shape[0]:
            iou = box_iou(xywh2xyxy(gt[:, 2:] * 64), det[:, :4])
            best = iou.argmax(1)
            assert (iou.max(1).values > 0.7).all() and (det[best, 5] == gt[:, 1]).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter
def test_onnx_export_runs_at_other_sizes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny_model(nc=2).eval().set_export()
    path = tmp_path / "af.onnx"
    torch.onnx.export(model, torch.rand(1, 3, 64, 96), path, dynamo=False, opset_version=12,
                      input_names=["images"], output_names=["output0"], dynamic_axes={"images": {2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path))
    x = torch.rand(1, 3, 128, 64)  # another size: the grids are built inside the graph
    with torch.no_grad():
        expected = model(x)
    y = session.run(None, {"images": x.numpy()})[0]
    assert y.shape == (1, 16 * 8 + 8 * 4 + 4 * 2, 7)
    assert abs(y - expected.numpy()).max() < 1e-4
