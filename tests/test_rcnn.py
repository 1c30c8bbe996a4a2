"""Faster R-CNN (torchvision) as a YAML head, and torchvision trunks / FPN as rows (models/heads/rcnn.py,
models/tv.py): exact parameter counts against torchvision's own builders, torchvision's state_dicts loading into
the rows with the same outputs, the common eval layout, the loss items, val.py on a checkpoint."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

import val
from models.heads.rcnn import FasterRCNNHead
from models.tv import IMAGENET_MEAN, IMAGENET_STD, TVTrunk, is_torchvision_detector, torchvision_to_rows
from models.yolo import DetectionModel, load_cfg
from utils.boxes import postprocess
from utils.io.checkpoint import load_checkpoint, save_checkpoint, transfer_weights
from utils.losses.tv import RCNN_ITEM_SCALE

MNV3 = "faster-rcnn-mnv3-fpn.yaml"


def _targets(batch: int) -> torch.Tensor:
    """Two boxes per image, [image, class, cx, cy, w, h] normalised."""
    return torch.cat([torch.tensor([[i, i % 3, 0.5, 0.5, 0.4, 0.3], [i, 1, 0.25, 0.3, 0.2, 0.25]])
                      for i in range(batch)])


@pytest.mark.parametrize("cfg, builder", [(MNV3, fasterrcnn_mobilenet_v3_large_fpn),
                                          ("faster-rcnn-r50-fpn.yaml", fasterrcnn_resnet50_fpn)])
def test_parameter_counts_equal_torchvision(cfg, builder):
    ours = DetectionModel(cfg, nc=90)
    ref = builder(weights=None, weights_backbone=None, num_classes=91)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert ours.deploy_params() == sum(p.numel() for p in ref.parameters())


def test_training_step_gives_named_finite_losses():
    torch.manual_seed(0)
    model = DetectionModel(MNV3, nc=3).train()
    crit = model.criterion({}, 96)
    assert crit.loss_names == ("rpn_obj", "rpn_box", "roi_cls", "roi_box")
    targets = _targets(2)
    out = model(torch.rand(2, 3, 96, 96), targets)
    total, items = crit(out, targets)
    assert items.shape == (4,) and torch.isfinite(items).all() and bool((items > 0).all())
    # items are torchvision's terms / RCNN_ITEM_SCALE; total = their sum x batch (YOLOv5's reduction)
    assert math.isclose(float(items[2]) * RCNN_ITEM_SCALE, float(out.losses["loss_classifier"]), rel_tol=1e-6)
    assert math.isclose(float(total), float(items.sum()) * 2, rel_tol=1e-6)
    total.backward()
    assert model.head.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert model.model[0].body["0"][0].weight.grad is not None  # the trunk trains (no weights: all stages)


def test_zero_area_targets_are_dropped_and_counted(caplog):
    model = DetectionModel(MNV3, nc=3).train()
    targets = torch.cat((_targets(1), torch.tensor([[0, 2, 0.5, 0.5, 0.0, 0.2]])))
    total, items = model.criterion({}, 64)(model(torch.rand(1, 3, 64, 64), targets), targets)
    assert torch.isfinite(total) and "dropped 1 zero-area target boxes" in caplog.text


def test_decode_lays_out_detections_in_the_common_layout():
    head = DetectionModel(MNV3, nc=4).head
    raw = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 8.0, 8.0]]),
            "scores": torch.tensor([0.9, 0.3]), "labels": torch.tensor([3, 1])},  # torchvision's 1..nc
           {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    y = head.decode(raw)
    assert y.shape == (2, head.detections_per_img, 9)
    torch.testing.assert_close(y[0, 0], torch.tensor([20.0, 40.0, 20.0, 40.0, 1.0, 0.0, 0.0, 0.9, 0.0]))
    assert y[0, 2:].abs().sum() == 0 and y[1].abs().sum() == 0  # padding rows score 0
    dets = postprocess(y, suppressed=True, conf_thres=0.001)
    expected = torch.tensor([[10.0, 20.0, 30.0, 60.0, 0.9, 2.0], [0.0, 0.0, 8.0, 8.0, 0.3, 0.0]])
    torch.testing.assert_close(dets[0], expected)
    assert dets[1].shape == (0, 6)


def _randomised_torchvision_model(nc: int) -> torch.nn.Module:
    """torchvision's mobilenet Faster R-CNN with BatchNorm statistics measured on random images (not the identity)."""
    torch.manual_seed(0)
    tv = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=nc + 1).train()
    with torch.no_grad():
        for _ in range(2):
            tv.backbone(torch.rand(2, 3, 96, 96))
    return tv.eval()


def _same_detections(a: dict, b: dict, tol: float) -> bool:
    """Equal sets of (box, score, label): near-tied scores may come in another order."""
    if len(a["boxes"]) != len(b["boxes"]):
        return False
    if not len(a["boxes"]):
        return True
    cost = ((a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1) + (a["scores"][:, None] - b["scores"][None]).abs()
            + 1e3 * (a["labels"][:, None] != b["labels"][None]))
    return bool(cost.amin(1).max() < tol) and bool(cost.amin(0).max() < tol)


def test_torchvision_state_dict_loads_with_the_same_outputs(tmp_path):
    """A torchvision detector's state_dict saved locally (as its published .pth files are) loads into the YAML
    model the way train.py --weights loads it, and both give the same detections in eval."""
    tv = _randomised_torchvision_model(nc=3)
    path = tmp_path / "fasterrcnn.pth"
    torch.save(tv.state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "state_dict" and is_torchvision_detector(ckpt["model"])
    model = DetectionModel(MNV3, nc=3)
    sd, report = transfer_weights(torchvision_to_rows(ckpt["model"], model.model), {}, model.state_dict(), model.yaml)
    assert report.transferred == len(model.state_dict()) and not report.fresh
    model.load_state_dict(sd)
    model.eval()
    x = torch.rand(2, 3, 96, 96)
    tv.transform = GeneralizedRCNNTransform(96, 96, list(IMAGENET_MEAN), list(IMAGENET_STD))  # identity resize
    for m in (tv.roi_heads, model.head.roi_heads):
        m.detections_per_img = 10_000  # no cut among tied scores
    with torch.no_grad():
        ref = tv(list(x))
        _, ours = model(x)
    assert sum(len(r["boxes"]) for r in ref) > 0
    assert all(_same_detections(r, o, 1e-4) for r, o in zip(ref, ours))


def test_other_class_count_transfers_all_but_the_predictor():
    tv = _randomised_torchvision_model(nc=90)
    model = DetectionModel(MNV3, nc=3)
    sd = torchvision_to_rows(tv.state_dict(), model.model)
    _, report = transfer_weights(sd, {}, model.state_dict(), model.yaml)
    assert report.transferred == len(model.state_dict()) - 4  # cls_score and bbox_pred weight + bias
    assert report.partial == [2]


@pytest.mark.parametrize("name, trainable", [("resnet18", 2), ("resnet18", 5), ("mobilenet_v3_large", 3)])
def test_trunk_freezes_what_torchvision_freezes(name, trainable):
    net = getattr(torchvision.models, name)(weights=None)
    if name.startswith("resnet"):
        ref = _resnet_fpn_extractor(net, trainable).body
    else:
        ref = _mobilenet_extractor(net, True, trainable).body
    frozen_ref = {f"body.{n}" for n, p in ref.named_parameters() if not p.requires_grad}
    trunk = TVTrunk(3, name, [1, 2, 3, 4] if name.startswith("resnet") else [4, 5], trainable)
    assert set(trunk.frozen) == frozen_ref and (trainable == 5) == (not frozen_ref)
    model = DetectionModel({"nc": 2, "backbone": [[-1, 1, "TVTrunk", [name, None, trainable]]],
                            "head": [[-1, 1, "TVFPN", [64, "pool"]], [-1, 1, "FasterRCNNHead", [2]]]})
    assert model.frozen_parameters() == {f"model.0.{n}" for n in frozen_ref}


def test_pretrained_trunk_rebuilds_from_a_checkpoint_without_its_file(tmp_path):
    """A trunk given local ImageNet weights uses FrozenBatchNorm2d (torchvision's rule); the checkpoint rebuilds the
    same model when the weights file is gone."""
    weights = tmp_path / "resnet18.pth"
    src = torchvision.models.resnet18(weights=None)
    torch.save(src.state_dict(), weights)
    cfg = {"nc": 2, "backbone": [[-1, 1, "TVTrunk", ["resnet18", [2, 3, 4], None, str(weights)]]],
           "head": [[-1, 1, "TVFPN", [64, "none"]], [-1, 1, "YOLOXHead", [2, 64]]]}
    model = DetectionModel(cfg).eval()
    trunk = model.model[0]
    assert isinstance(trunk.body.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert "layer4.1.conv2.weight" in trunk.weights_report.loaded and not trunk.weights_report.mismatched
    torch.testing.assert_close(trunk.body.conv1.weight, src.conv1.weight)
    assert len(trunk.frozen) > 0  # pretrained: the top 3 stages train
    save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml, "names": {0: "a", 1: "b"}},
                    tmp_path / "m.pt")
    weights.unlink()
    again = DetectionModel.from_checkpoint(load_checkpoint(tmp_path / "m.pt")).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], model(x)[0])


def test_val_py_scores_a_faster_rcnn_checkpoint(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = DetectionModel(MNV3, nc=8)
    w = save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml,
                         "names": {i: str(i) for i in range(8)}}, tmp_path / "frcnn.pt")
    r = val.run(data=str(tiny_data), weights=str(w), batch_size=4, imgsz=64, workers=0, project=tmp_path,
                plots=True)
    assert all(0.0 <= v <= 1.0 for v in r.metrics()) and r.maps.shape == (8,)
    assert (tmp_path / "exp" / "confusion_matrix.png").is_file()


def test_bad_rows_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown option 'box_score_tresh' \\(did you mean 'box_score_thresh'"):
        FasterRCNNHead(3, None, None, {"box_score_tresh": 0.1}, [64, 64])
    with pytest.raises(ValueError, match="2 anchor size lists .* for 3 input levels"):
        FasterRCNNHead(3, [[32], [64]], None, None, [64, 64, 64])
    with pytest.raises(ValueError, match="same width"):
        FasterRCNNHead(3, None, None, None, [64, 128])
    with pytest.raises(ValueError, match="unknown trunk 'resnet5'"):
        TVTrunk(3, "resnet5")
    with pytest.raises(ValueError, match="returned must be increasing stage indices in 1..4"):
        TVTrunk(3, "resnet18", [0, 1])
    cfg, _ = load_cfg(MNV3)
    cfg["head"][-1][3] = ["nc", None, None, {"rpn_batch": 3}]
    with pytest.raises(ValueError, match="row 2 \\(FasterRCNNHead\\).*unknown option 'rpn_batch'"):
        DetectionModel(cfg)


def test_onnx_export_is_static_and_a_dynamic_request_is_refused(tmp_path):
    import export
    torch.manual_seed(0)
    model = DetectionModel(MNV3, nc=3)
    w = save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml,
                         "names": {0: "a", 1: "b", 2: "c"}}, tmp_path / "frcnn.pt")
    assert export.main(["--weights", str(w), "--include", "onnx", "--dynamic"]) == 2
    f, diff = export.run(w, include=["onnx"], imgsz=[96, 64], batch_size=2)["onnx"]
    assert f.is_file() and diff < 1e-3


def test_training_losses_and_gradients_equal_torchvision_on_the_same_batch():
    """Our targets -> torchvision's, the letterboxed batch as torchvision's ImageList: the four losses of a training
    step equal those of torchvision's own model (same weights, same random sampling), and so do the gradients of
    every weight (ours pass RoIAlign's matmul backward: the same sums in another order)."""
    torch.manual_seed(0)
    tv = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=4,
                                           box_batch_size_per_image=64).train()  # the YAML's one change
    tv.transform = GeneralizedRCNNTransform(96, 96, list(IMAGENET_MEAN), list(IMAGENET_STD))
    model = DetectionModel(MNV3, nc=3)
    model.load_state_dict(torchvision_to_rows(tv.state_dict(), model.model))
    x, targets = torch.rand(2, 3, 96, 96), _targets(2)
    tv_targets = []
    for i in range(2):
        t = targets[targets[:, 0] == i]
        xy, wh = t[:, 2:4] * 96, t[:, 4:6] * 96
        tv_targets.append({"boxes": torch.cat((xy - wh / 2, xy + wh / 2), 1), "labels": t[:, 1].long() + 1})
    images, tv_targets = tv.transform(list(x), tv_targets)  # draws from the RNG in training: before the seed
    torch.manual_seed(1)
    features = tv.backbone(images.tensors)
    proposals, ref = tv.rpn(images, features, tv_targets)
    ref = {**ref, **tv.roi_heads(features, proposals, images.image_sizes, tv_targets)[1]}
    torch.manual_seed(1)
    ours = model.train()(x, targets).losses
    assert set(ours) == set(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)
    sum(ours.values()).backward()
    sum(ref.values()).backward()
    ref_grads = torchvision_to_rows({k: p.grad for k, p in tv.named_parameters() if p.grad is not None}, model.model)
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(ref_grads) and len(grads) > 50
    for k, g in grads.items():
        torch.testing.assert_close(g, ref_grads[k], rtol=1e-4, atol=1e-6, msg=k)


def test_results_png_marks_an_unavailable_validation_loss(tmp_path):
    from utils.evaluation.plots import plot_results

    csv_file = tmp_path / "results.csv"
    csv_file.write_text("epoch,train/roi_cls_loss,metrics/mAP_0.5,val/roi_cls_loss\n0,0.1,0.2,nan\n1,0.09,0.3,nan\n")
    out = plot_results(csv_file)
    assert out.stat().st_size > 1000  # drawn: the NaN panel says "not available" instead of failing or staying blank


def test_backend_auto_keeps_pytorch_for_faster_rcnn(tmp_path, monkeypatch, caplog):
    """The head's cpu_runtime flag: ONNX Runtime is slower than PyTorch for this model, so 'auto' exports nothing."""
    import logging

    from models import runtime
    from utils.data.check_image import check_image
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = DetectionModel(MNV3, nc=3)
    w = save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml,
                         "names": {0: "a", 1: "b", 2: "c"}}, tmp_path / "frcnn.pt")
    with caplog.at_level(logging.INFO, logger="headzoo"):
        b = runtime.runtime_backend(w, torch.device("cpu"), backend="auto", imgsz=(64, 64), images=check_image)
    assert b.fmt == "pytorch" and "runs faster as PyTorch" in caplog.text
    assert not (tmp_path / "cache").exists()


def _rois(n: int, images: int, h: int, w: int, scale: float, g: torch.Generator) -> torch.Tensor:
    """(n, 5) float64 RoIs in image pixels: partly outside the map, tiny (< 1 cell), and whole-map ones."""
    side = torch.tensor([w / scale, h / scale], dtype=torch.float64)
    xy = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2) * side
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * side * torch.rand(n, 1, generator=g, dtype=torch.float64)
    wh[: n // 10] *= 0.01
    rois = torch.cat((torch.randint(0, images, (n, 1), generator=g).double(), xy, xy + wh), 1)
    rois[-3:, 1:] = torch.tensor([0.0, 0.0, w / scale, h / scale])
    return rois


@pytest.mark.parametrize("h, w, scale, grid", [(5, 5, 1 / 32, 2), (7, 11, 1 / 16, 2), (13, 9, 0.25, 3),
                                               (1, 1, 1 / 32, 2), (20, 20, 1 / 8, 1)])
def test_roi_align_matmul_backward_equals_torchvision(h, w, scale, grid):
    from models.heads.rcnn import _RoIAlignMatmulGrad

    g = torch.Generator().manual_seed(h * w)
    f = torch.randn(3, 6, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(200, 3, h, w, scale, g)
    # 7-cell RoIs (bins of 1 cell) whose outermost sample points fall exactly on the map's limits -1 and H / W,
    # still sampled there (exact in binary for grids 1 and 2)
    far, near = torch.tensor([w, h]) - 6 - (grid - 0.5) / grid, torch.full((2,), -1 - 0.5 / grid)
    rois[:2, 1:3] = torch.stack((far, near)).double() / scale
    rois[:2, 3:] = rois[:2, 1:3] + 7 / scale
    up = torch.randn(200, 6, 7, 7, generator=g, dtype=torch.float64)
    ref = torchvision.ops.roi_align(f, rois, (7, 7), scale, grid)
    (ref_grad,) = torch.autograd.grad((ref * up).sum(), f)
    out = _RoIAlignMatmulGrad.apply(f, rois, (7, 7), scale, grid)
    (grad,) = torch.autograd.grad((out * up).sum(), f)
    assert torch.equal(out, ref)  # torchvision's own forward
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("helpers", [True, False], ids=["helpers", "no-private-helpers"])
def test_roi_pool_is_torchvision_multiscale_roi_align_with_a_faster_backward(helpers, monkeypatch):
    from torchvision.ops import MultiScaleRoIAlign

    from models.heads import rcnn
    from models.heads.rcnn import SEPARABLE_MAX_CELLS, RoIAlignPool

    if not helpers:  # a torchvision without MultiScaleRoIAlign's private helpers: its own path, same figures
        monkeypatch.setattr(rcnn, "_filter_input", None)

    g = torch.Generator().manual_seed(0)
    # level "0" (26x26 = 676 cells) is above the matmul limit (torchvision's backward), "1" and "2" below it
    assert 13 * 13 <= SEPARABLE_MAX_CELLS < 26 * 26
    x = {k: torch.randn(2, 4, s, s, generator=g, dtype=torch.float64, requires_grad=True)
         for k, s in (("0", 26), ("1", 13), ("2", 7))}
    boxes = [_rois(60, 1, 26, 26, 1 / 8, g)[:, 1:].clamp(0, 207) for _ in range(2)]
    boxes = [torch.cat((b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 1)), 1) for b in boxes]
    boxes[1][:5] = torch.tensor([0.0, 0.0, 208.0, 208.0])  # large: mapped to the coarsest level
    shapes = [(208, 208)] * 2
    levels = {"featmap_names": ["0", "1", "2"], "output_size": 7, "sampling_ratio": 2, "canonical_scale": 56}
    ours, theirs = RoIAlignPool(**levels), MultiScaleRoIAlign(**levels)  # boxes of 56+ px reach level "1"
    out, ref = ours(x, boxes, shapes), theirs(x, boxes, shapes)
    assert torch.equal(out, ref)
    up = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * up).sum(), list(x.values()))
    ref_grads = torch.autograd.grad((ref * up).sum(), list(x.values()))
    for a, b in zip(grads, ref_grads):
        assert b.abs().sum() > 0  # every level received RoIs
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # eval: torchvision's path as it is
        assert torch.equal(ours(x, boxes, shapes), theirs(x, boxes, shapes))
