"""The GFL head family (NanoDet-Plus): its box coder, its criterion, the training-only AGM (gradients into the
trunk before detach_epoch and not after, absent from the exported file), assigners swapped by one YAML argument,
and nanodet-plus-m's size against NanoDet's published figures."""
from __future__ import annotations

import csv
import math
from copy import deepcopy

import numpy as np
import pytest
import torch
from test_heads import targets_for  # noqa: E402  (tests/ is on sys.path under pytest)

from models.heads.base import EpochState
from models.heads.gfl import GFLHead, GFLOutput
from models.yolo import DetectionModel, load_cfg
from utils.boxes import bbox2distance, distance2bbox, gfl_decode, integral

NANODET_PLUS_M_PARAMS = 1.17e6  # NanoDet README "Benchmarks", nc=80 (deploy model)
# NanoDet's own modules (RangiLyu/nanodet be9b4a9, config/nanodet-plus-m_320.yml, built outside the repo):
# ShuffleNetV2 1.0x 776,420 + GhostPAN 282,048 + NanoDetPlusHead 139,456 at nc=80; 1,186,346 with BN folded
NANODET_PLUS_M_REFERENCE_CODE = 1_197_924


def tiny_gfl(aux_from: int | None = 10, assigner: str = "dsl", detach_epoch: int = 1, nc: int = 3) -> dict:
    cfg, _ = load_cfg("yolov5n-gfl.yaml")
    cfg = {**cfg, "nc": nc, "width_multiple": 0.125, "depth_multiple": 0.33}
    cfg["head"][-1][3] = ["nc", 32, 1, 3, 7, aux_from, assigner, detach_epoch]
    return cfg


def test_integral_decode_of_a_hand_made_distribution():
    reg_max = 7
    logits = torch.full((1, 4, reg_max + 1), -1e4)
    logits[0, 0, 3] = 0  # left: all mass on bin 3
    logits[0, 1, 2] = logits[0, 1, 4] = 0  # top: half on 2, half on 4 -> 3
    logits[0, 2, 0] = 0  # right: 0
    logits[0, 3, 7] = 0  # bottom: reg_max
    dist = integral(logits.view(1, -1), reg_max)
    torch.testing.assert_close(dist, torch.tensor([[3.0, 3.0, 0.0, 7.0]]))
    box = gfl_decode(logits.view(1, -1), torch.tensor([[80.0, 40.0]]), 16.0, reg_max)
    torch.testing.assert_close(box, torch.tensor([[80 - 48.0, 40 - 48.0, 80 + 0.0, 40 + 112.0]]))


def test_distance_coder_round_trip_and_clamp():
    points = torch.tensor([[10.0, 20.0], [5.0, 5.0]])
    boxes = torch.tensor([[2.0, 4.0, 30.0, 21.0], [0.0, 0.0, 100.0, 6.0]])
    torch.testing.assert_close(distance2bbox(points, bbox2distance(points, boxes)), boxes)
    clamped = bbox2distance(points, boxes, reg_max=7)
    assert float(clamped.max()) == pytest.approx(6.9) and float(clamped.min()) >= 0


def test_gfl_yaml_builds_with_agm_training_only():
    model = DetectionModel(tiny_gfl())
    head = model.head
    assert isinstance(head, GFLHead) and head.aux_neck is not None and head.aux_head is not None
    aux = sum(p.numel() for n in head.train_only if getattr(head, n) is not None for p in getattr(head, n).parameters())
    assert aux > 0 and model.deploy_params() == sum(p.numel() for p in model.parameters()) - aux
    # the AGM's neck is a copy with its own weights: same values at build time, separate tensors
    neck_first = model.model[10]
    copy_first = head.aux_neck[0]
    assert copy_first.i == 10 and copy_first.f == neck_first.f
    assert copy_first.conv.weight is not neck_first.conv.weight
    torch.testing.assert_close(copy_first.conv.weight, neck_first.conv.weight)


def _trunk_grad_from_agm(model: DetectionModel, epoch: int) -> tuple[float, float]:
    """|grad| that the AGM's loss terms alone send into a backbone row and into the main neck."""
    crit = model.criterion({}, 64)
    for c in (model, crit):
        c.on_epoch(EpochState(epoch, 20, mosaic=True))
    model.train()
    model.zero_grad()
    imgs, targets = torch.rand(2, 3, 64, 64), targets_for(2)
    out = model(imgs, targets)
    assert isinstance(out, GFLOutput) and out.aux is not None
    total, _ = crit(GFLOutput([m.detach() for m in out.main], out.aux), targets)  # the main head's graph cut
    total.backward()
    grads = (model.model[4].cv1.conv.weight.grad, model.model[17].cv1.conv.weight.grad)
    return tuple(0.0 if g is None else float(g.abs().sum()) for g in grads)


def test_agm_trains_the_trunk_before_detach_epoch_and_not_after():
    torch.manual_seed(0)
    model = DetectionModel(tiny_gfl(detach_epoch=1))
    before = _trunk_grad_from_agm(model, epoch=0)
    after = _trunk_grad_from_agm(model, epoch=1)
    assert before[0] > 0 and before[1] > 0  # backbone (through the copied neck) and the main neck
    assert after == (0.0, 0.0)
    assert any(float(p.grad.abs().sum()) > 0 for p in model.head.aux_head.parameters() if p.grad is not None)


def test_criterion_names_and_finite_terms_without_agm():
    torch.manual_seed(0)
    model = DetectionModel(tiny_gfl(aux_from=None))
    assert model.head.aux_head is None and model.deploy_params() == sum(p.numel() for p in model.parameters())
    crit = model.criterion({}, 64)
    assert crit.loss_names == ("qfl", "dfl", "giou")
    model.train()
    loss, items = crit(model(torch.rand(2, 3, 64, 64)), targets_for(2))
    assert torch.isfinite(loss) and (items > 0).all()
    loss.backward()


def test_criterion_with_no_targets_is_finite():
    model = DetectionModel(tiny_gfl()).train()
    crit = model.criterion({}, 64)
    loss, items = crit(model(torch.rand(2, 3, 64, 64)), torch.zeros((0, 6)))
    assert torch.isfinite(loss) and items[0] > 0 and items[1] == 0 and items[2] == 0
    loss.backward()


@pytest.mark.parametrize("assigner", ["simota", "center"])
def test_gfl_head_takes_other_assigners(assigner):
    torch.manual_seed(0)
    model = DetectionModel(tiny_gfl(assigner=assigner)).train()
    crit = model.criterion({}, 64)
    loss, items = crit(model(torch.rand(2, 3, 64, 64)), targets_for(2))
    assert torch.isfinite(loss) and items[2] > 0  # positives were found: a GIoU term


def test_yolox_head_takes_dsl(tmp_path):
    cfg, _ = load_cfg("yolov5n-decoupled-af.yaml")
    cfg = {**cfg, "nc": 3, "width_multiple": 0.125, "depth_multiple": 0.33}
    cfg["head"][-1][3] = ["nc", 256, False, "dsl"]
    model = DetectionModel(cfg).train()
    crit = model.criterion({}, 64)
    loss, items = crit(model(torch.rand(2, 3, 64, 64)), targets_for(2))
    assert torch.isfinite(loss) and items[0] > 0


def test_nanodet_plus_m_size_against_the_published_figures():
    model = DetectionModel("nanodet-plus-m.yaml")
    deployed = model.deploy_params()
    assert deployed == NANODET_PLUS_M_REFERENCE_CODE  # +2.4% over the published 1.17M, as NanoDet's own code
    fused = sum(p.numel() for p in deepcopy(model).fuse().parameters())
    assert abs(fused - NANODET_PLUS_M_PARAMS) / NANODET_PLUS_M_PARAMS < 0.02, fused  # the deployed inference model
    assert sum(p.numel() for p in model.parameters()) > deployed  # the AGM trains, and is not deployed
    assert model.stride.tolist() == [8, 16, 32, 64]


def test_exported_nanodet_holds_no_agm_parameter(tmp_path):
    import onnx

    import export
    from utils.io.checkpoint import save_checkpoint
    cfg, _ = load_cfg("nanodet-plus-m.yaml")
    model = DetectionModel({**cfg, "nc": 3})
    save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml, "names": model.names},
                    tmp_path / "m.pt")
    files = export.run(tmp_path / "m.pt", include=["onnx"], imgsz=[64, 64])
    onnx_file, diff = files["onnx"]
    assert diff < 1e-3
    inits = sum(int(np.prod(t.dims)) for t in onnx.load(str(onnx_file)).graph.initializer)
    head = model.head
    aux = sum(p.numel() for n in head.train_only if getattr(head, n) is not None for p in getattr(head, n).parameters())
    deployed = sum(p.numel() for p in deepcopy(model).fuse().parameters())
    assert inits <= deployed + 64 < aux  # every exported weight is a deployed one; no AGM weight is there


def test_gfl_trains_through_train_py(tmp_path, tiny_data):
    import yaml

    import train
    path = tmp_path / "gfl.yaml"
    path.write_text(yaml.safe_dump(tiny_gfl(detach_epoch=1, nc=8)))
    rc = train.main(["--cfg", str(path), "--data", str(tiny_data), "--epochs", "2", "--imgsz", "64", "--batch-size",
                     "4", "--workers", "0", "--noplots", "--project", str(tmp_path), "--name", "exp"])
    assert rc == 0
    rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(open(tmp_path / "exp" / "results.csv"))]
    assert len(rows) == 2
    for name in ("qfl", "dfl", "giou", "aux_qfl", "aux_dfl", "aux_giou"):
        assert math.isfinite(float(rows[-1][f"train/{name}_loss"]))
    assert math.isnan(float(rows[-1]["val/qfl_loss"]))  # declared unavailable (the AGM assigns)
