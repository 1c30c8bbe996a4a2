"""YOLOv10's end-to-end head (V10Head), its loss (V10Loss) and the NMS-free selection (utils.boxes.topk_detections).
The figures against Ultralytics' own code come from bench/crosscheck_v10.py (not run here)."""
from __future__ import annotations

import csv
import math
from copy import deepcopy

import pytest
import torch
from test_heads import small, targets_for  # tests/ is on sys.path under pytest

from models.heads import HEADS
from models.heads.v10 import V10Head
from models.yolo import DetectionModel, load_cfg
from utils.boxes import topk_detections
from utils.losses.v10 import V10Output


def tiny() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(small(load_cfg("yolov8n-v10head.yaml")[0]))


def test_yolov8n_v10head_is_yolov8n_when_deployed():
    assert HEADS["V10Head"] is V10Head
    model = DetectionModel("yolov8n-v10head.yaml")
    assert sum(p.numel() for p in model.parameters()) == 4_054_848  # Ultralytics' yolov8n.yaml + end2end: True
    assert model.deploy_params() == 3_157_200 == sum(p.numel() for p in DetectionModel("yolov8n.yaml").parameters())
    head = deepcopy(model).fuse().head
    assert head.cv2 is None and head.cv3 is None
    assert not any(k.startswith(("cv2.", "cv3.")) for k in head.state_dict())


def test_one2one_branch_sends_no_gradient_into_the_neck():
    model = tiny().train()
    out = model(torch.rand(2, 3, 64, 64))
    assert isinstance(out, V10Output)
    sum(p.sum() for p in out.one2one).backward()
    head = model.head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.one2one_cv3.parameters())
    assert all(p.grad is None for m in model.model[:-1] for p in m.parameters())  # detached: the neck learns nothing
    model.zero_grad(set_to_none=True)
    sum(p.sum() for p in model(torch.rand(2, 3, 64, 64)).one2many).backward()
    assert model.model[-2].cv1.conv.weight.grad.abs().sum() > 0  # the one-to-many branch trains the neck


def test_both_branches_start_equal_and_eval_runs_the_one2one_branch_only():
    model = tiny().eval()
    head = model.head
    for a, b in ((head.cv2, head.one2one_cv2), (head.cv3, head.one2one_cv3)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with torch.no_grad():
        head.cv3[0][-1].bias.fill_(50.0)  # the one-to-many branch would score every cell 1.0
        imgs = torch.rand(2, 3, 64, 64)
        y, _ = model(imgs)
        assert float(y[..., 5:].max()) < 0.5
        stripped = deepcopy(model).deploy()
        torch.testing.assert_close(stripped(imgs)[0], y)


def test_decode_rows_are_final_detections():
    g = torch.Generator().manual_seed(0)
    n, nc = 40, 3
    pred = torch.cat((torch.rand(2, n, 4, generator=g) * 64, torch.ones(2, n, 1), torch.rand(2, n, nc, generator=g)), 2)
    rows, index = topk_detections(pred, max_det=10)
    assert rows.shape == (2, 10, 5 + nc) and index.shape == (2, 10)
    for b in range(2):
        best = pred[b, :, 5:].amax(1).topk(10).indices  # brute force: the 10 best cells, their 30 pairs
        pairs = sorted(((float(pred[b, i, 5 + c]), int(i), c) for i in best for c in range(nc)), reverse=True)[:10]
        score, cls = rows[b, :, 5:].max(1)
        assert [(int(i), int(c)) for i, c in zip(index[b], cls)] == [(i, c) for _, i, c in pairs]
        torch.testing.assert_close(score, torch.tensor([s for s, _, _ in pairs]))
        assert len({(int(i), int(c)) for i, c in zip(index[b], cls)}) == 10  # one row per (cell, class)
        assert ((rows[b, :, 5:] > 0).sum(1) == 1).all() and (rows[b, :, 4] == 1).all()  # one class, the rest 0
        torch.testing.assert_close(rows[b, :, :4], pred[b, index[b], :4])
        assert (score.diff() <= 0).all()  # best first
    rows, index = topk_detections(pred, max_det=300)  # N < max_det: min(max_det, N) pairs, then padding
    assert rows.shape == (2, 300, 5 + nc) and (rows[:, n:] == 0).all() and (index[:, n:] == -1).all()
    assert (rows[:, :n, 5:].amax(-1) > 0).all()
    tied = torch.cat((torch.zeros(1, 6, 5), torch.full((1, 6, 1), 0.5)), 2)
    assert topk_detections(tied, max_det=4)[1].tolist() == [[0, 1, 2, 3]]  # equal scores in index order


def test_head_decode_keeps_max_det_rows_and_postprocess_skips_nms():
    from utils.boxes import postprocess
    model = tiny().eval()
    model.head.max_det = 7
    with torch.no_grad():
        y, _ = model(torch.rand(2, 3, 64, 64))
    assert y.shape == (2, 7, 5 + 3) and model.suppressed  # 84 predictions at 64 px: 7 rows
    dets = postprocess(y, model.suppressed, conf_thres=0.0, multi_label=True)
    assert all(len(d) == 7 for d in dets)  # every row kept: one class per row, no NMS
    with pytest.raises(ValueError, match="max_det must be a positive integer"):
        V10Head(3, max_det=0, ch=(16,))


def test_loss_is_the_v8_loss_per_branch_with_topk_10_and_1():
    model = tiny().train()
    crit = model.criterion({"tal_topk": 13, "v8_box": 15.0}, 64)
    assert crit.loss_names == ("o2m_box", "o2m_cls", "o2m_dfl", "o2o_box", "o2o_cls", "o2o_dfl")
    assert crit.one2many.assigner.keywords == {"topk": 13} and crit.one2one.assigner.keywords == {"topk": 1}
    assert model.criterion({}, 64).one2many.assigner.keywords == {}  # TAL's default topk 10
    imgs, targets = torch.rand(2, 3, 64, 64), targets_for(2)
    out = model(imgs)
    loss, items = crit(out, targets)
    assert items.shape == (6,) and torch.isfinite(items).all() and torch.isclose(loss, items.sum() * 2)
    torch.testing.assert_close(items[:3], crit.one2many(out.one2many, targets)[1])
    torch.testing.assert_close(items[3:], crit.one2one(out.one2one, targets)[1])
    with pytest.raises(TypeError, match="one-to-one branch only"):
        crit(out.one2one, targets)
    assert not model.head.val_loss


def test_train_val_export_smoke(tmp_path, tiny_data):
    import export
    import train
    import val
    rc = train.main(["--cfg", "yolov8n-v10head.yaml", "--data", str(tiny_data), "--epochs", "1", "--imgsz", "64",
                     "--batch-size", "8", "--workers", "0", "--project", str(tmp_path), "--name", "exp"])
    assert rc == 0
    lines = (tmp_path / "exp" / "results.csv").read_text().splitlines()
    rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(lines)]
    assert float(rows[0]["train/o2o_cls_loss"]) > 0 and math.isnan(float(rows[0]["val/o2o_cls_loss"]))
    best = tmp_path / "exp" / "weights" / "best.pt"
    res = val.run(str(tiny_data), weights=str(best), imgsz=64, batch_size=4, workers=0, project=tmp_path, name="val")
    assert 0 <= res.map50 <= 1
    onnx_file, diff = export.run(best, include=["onnx"], imgsz=[64, 64])["onnx"]
    assert diff < 1e-3
    import onnx
    exported = sum(math.prod(t.dims) for t in onnx.load(str(onnx_file)).graph.initializer)
    model = DetectionModel.from_checkpoint(torch.load(best, weights_only=True))
    assert exported <= model.deploy_params() + 16  # the one-to-many branch is not in the file


def test_yolov10n_blocks_and_sizes():
    from models.c2f import PSA, C2fCIB, RepVGGDW, SCDown
    model = DetectionModel("yolov10n.yaml")  # Ultralytics' own build: 2,775,520 and 2,310,624 deployed
    assert sum(p.numel() for p in model.parameters()) == 2_775_520 and model.deploy_params() == 2_310_624
    assert [type(model.model[i]) for i in (5, 7, 10, 20, 22)] == [SCDown, SCDown, PSA, SCDown, C2fCIB]
    x = torch.rand(2, 16, 8, 8)
    assert SCDown(16, 32, 3, 2)(x).shape == (2, 32, 4, 4)
    rep = RepVGGDW(16).eval()
    with torch.no_grad():
        for m in rep.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        y = rep(x)
        rep.reparameterize()
        assert rep.conv1 is None
        torch.testing.assert_close(rep(x), y, rtol=1e-4, atol=1e-5)  # the 3x3 added into the 7x7: one conv
    fused = deepcopy(model).fuse()
    assert sum(p.numel() for p in fused.parameters()) == 2_299_264  # Ultralytics' fused yolov10n
